"""Kernel Inception Distance (KID), from "Demystifying MMD GANs" (Binkowski
et al. 2018), as the original code and StyleGAN3 compute it: the unbiased
estimate of the squared maximum mean discrepancy between real and generated
Inception features under the cubic polynomial kernel

    k(x, y) = (x . y / D + 1)^3,

averaged over random subsets of equal size m drawn without replacement. Being
unbiased, it is near 0 (and may be negative) for samples of one distribution.
"""

import numpy as np

from . import metric_utils

#----------------------------------------------------------------------------

KID_SEED = 0 # Seed of the subsets compute_kid() draws, so that a network gets the same KID every time.

def kid_from_features(real_features, gen_features, num_subsets, max_subset_size, rng=None):
    """KID (float) of features [N_real, D] and [N_gen, D]: the mean over
    `num_subsets` subsets of m = min(N_real, N_gen, max_subset_size) items of
    each of the unbiased MMD^2 estimate

        (sum_{i != j} k(x_i, x_j) + k(y_i, y_j)) / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.

    `rng` (a numpy Generator or RandomState) draws the subsets; None = numpy's global one, as NVIDIA."""
    if rng is None:
        rng = np.random
    n = real_features.shape[1]
    m = min(min(real_features.shape[0], gen_features.shape[0]), max_subset_size)
    if m < 2:
        raise metric_utils.MetricError(f'KID needs at least 2 real and 2 generated images, got {real_features.shape[0]} and {gen_features.shape[0]}')
    t = 0
    for _subset_idx in range(num_subsets):
        x = gen_features[rng.choice(gen_features.shape[0], m, replace=False)]
        y = real_features[rng.choice(real_features.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)

def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size):
    """KID between the first `max_real` dataset images (None = all) and
    `num_gen` generated images. NaN on ranks other than 0. Raises MetricError,
    before any work, when the dataset has fewer than 2 images."""
    metric_utils.check_real_images(opts, min_items=2, max_items=max_real, what='KID')
    detector_url = metric_utils.inception_url()
    detector_kwargs = dict(return_features=True) # The 2048 pool features, before the classifier.

    real_stats, gen_stats = metric_utils.compute_feature_stats_for_dataset_and_generator(opts=opts, detector_url=detector_url,
        detector_kwargs=detector_kwargs, max_real=max_real, num_gen=num_gen, capture_all=True)
    real_features, gen_features = real_stats.get_all(), gen_stats.get_all()

    if opts.rank != 0:
        return float('nan')
    return kid_from_features(real_features, gen_features, num_subsets=num_subsets, max_subset_size=max_subset_size,
        rng=np.random.default_rng(KID_SEED))

#----------------------------------------------------------------------------
