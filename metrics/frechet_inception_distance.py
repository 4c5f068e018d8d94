"""Frechet Inception Distance (FID), from "GANs trained by a two time-scale
update rule converge to a local Nash equilibrium" (Heusel et al. 2017), as
the original TTUR code and StyleGAN3 compute it: the Frechet distance between
Gaussians fitted to the 2048 Inception pool features of real and generated
images,

    FID = |mu_r - mu_g|^2 + trace(S_r + S_g - 2 (S_g S_r)^(1/2)),

with population covariances (divided by N).

The trace of the matrix square root is computed as the sum of the square
roots of the eigenvalues of S_r^(1/2) S_g S_r^(1/2), a symmetric positive
semi-definite matrix with the same eigenvalues as S_g S_r. This is the same
number as NVIDIA's trace(real(scipy.linalg.sqrtm(S_g S_r))) (measured: 1e-15
relative on full-rank 2048x2048 covariances; the tests compare the two on
smaller ones), exact for singular covariances (few images), where sqrtm warns
and drifts, and 3 s instead of 40 s on a 2-core CPU.
"""

import numpy as np

from . import metric_utils

#----------------------------------------------------------------------------

def fid_from_stats(mu_real, sigma_real, mu_gen, sigma_gen):
    """FID (float) of two feature distributions given by their means [D] and covariances [D, D]."""
    mu_real, sigma_real, mu_gen, sigma_gen = (np.asarray(x, dtype=np.float64) for x in (mu_real, sigma_real, mu_gen, sigma_gen))
    m = np.square(mu_gen - mu_real).sum()
    return float(m + np.trace(sigma_gen) + np.trace(sigma_real) - 2 * trace_sqrt_product(sigma_gen, sigma_real))

def _psd_sqrt(sigma):
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    eigval, eigvec = np.linalg.eigh((sigma + sigma.T) / 2)
    return (eigvec * np.sqrt(np.clip(eigval, 0, None))) @ eigvec.T

def trace_sqrt_product(sigma_a, sigma_b):
    """trace((sigma_a sigma_b)^(1/2)) for covariance matrices: the sum of the square
    roots of the eigenvalues of sigma_b^(1/2) sigma_a sigma_b^(1/2), which are those
    of sigma_a sigma_b (rounding makes the smallest ones slightly negative: taken as 0)."""
    root_b = _psd_sqrt(sigma_b)
    product = root_b @ sigma_a @ root_b
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum())

def compute_fid(opts, max_real, num_gen, gen_fn=None, gen_key=None):
    """FID between the first `max_real` dataset images (None = all) and
    `num_gen` generated images. `gen_fn` as compute_feature_stats_for_generator(),
    `gen_key` as compute_feature_stats_for_dataset_and_generator().
    NaN on ranks other than 0. Raises MetricError, before any work, when the
    dataset has fewer than 2 images (no covariance)."""
    metric_utils.check_real_images(opts, min_items=2, max_items=max_real, what='FID')
    detector_url = metric_utils.inception_url()
    detector_kwargs = dict(return_features=True) # The 2048 pool features, before the classifier.

    real_stats, gen_stats = metric_utils.compute_feature_stats_for_dataset_and_generator(opts=opts, detector_url=detector_url,
        detector_kwargs=detector_kwargs, max_real=max_real, num_gen=num_gen, gen_fn=gen_fn, gen_key=gen_key, capture_mean_cov=True)
    mu_real, sigma_real = real_stats.get_mean_cov()
    mu_gen, sigma_gen = gen_stats.get_mean_cov()

    if opts.rank != 0:
        return float('nan')
    return fid_from_stats(mu_real, sigma_real, mu_gen, sigma_gen)

#----------------------------------------------------------------------------
