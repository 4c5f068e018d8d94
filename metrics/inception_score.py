"""Inception Score (IS) of "Improved Techniques for Training GANs" (Salimans
et al., 2016), computed as in StyleGAN3's `is50k`, which follows the original
TensorFlow implementation (openai/improved-gan).

The generated images are split into `num_splits` parts; for each part the score
is exp(mean over images of KL(p(y|x) || p(y))), with p(y) the mean prediction
of the part. The result is the mean and standard deviation over the parts.

The math lives in `is_from_probabilities`; `compute_is` gathers the Inception
predictions with metric_utils and calls it.
"""

import numpy as np

from . import metric_utils

#----------------------------------------------------------------------------

def is_from_probabilities(probs, num_splits=10):
    """(mean, std) of the Inception Score over `num_splits` consecutive parts of
    `probs` [num_images, num_classes], class probabilities that sum to one per row.

    A zero probability contributes 0 to the KL divergence (the limit of p log p);
    the reference implementation would give NaN there. Otherwise the arithmetic
    is the reference's, in the dtype of `probs`.
    """
    probs = np.asarray(probs)
    assert probs.ndim == 2
    num_images = probs.shape[0]
    if not 1 <= num_splits <= num_images:
        raise metric_utils.MetricError(f'inception score: cannot split {num_images} images into {num_splits} parts')
    scores = []
    for i in range(num_splits):
        part = probs[i * num_images // num_splits : (i + 1) * num_images // num_splits]
        marginal = np.mean(part, axis=0, keepdims=True)
        with np.errstate(divide='ignore', invalid='ignore'): # log(0) in the branch that np.where drops.
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0)
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))

def check_probabilities(probs, atol=1e-3):
    """Raise MetricError unless each row of `probs` is a probability vector: a
    detector that returns features or logits would give a meaningless score."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.min() < 0 or np.abs(probs.sum(axis=1) - 1).max() > atol:
        raise metric_utils.MetricError('inception score: the Inception detector must return class probabilities '
            '(non-negative, summing to one per image) when called without return_features')

#----------------------------------------------------------------------------

def compute_is(opts, num_gen, num_splits):
    """Inception Score (mean, std) of `num_gen` images of opts.G over `num_splits`
    parts; (NaN, NaN) on every rank but 0."""
    if not 1 <= num_splits <= num_gen:
        raise metric_utils.MetricError(f'inception score: cannot split {num_gen} images into {num_splits} parts')
    detector_url = metric_utils.inception_url()
    detector_kwargs = dict(no_output_bias=True) # The original leaves out the bias of the softmax layer.

    gen_probs = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=num_gen).get_all()

    if opts.rank != 0:
        return float('nan'), float('nan')
    check_probabilities(gen_probs)
    return is_from_probabilities(gen_probs, num_splits)

#----------------------------------------------------------------------------
