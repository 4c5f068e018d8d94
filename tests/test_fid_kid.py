"""FID and KID: the formulas against closed forms and brute force, KID's
unbiasedness, and the dataset-size checks that come before any work."""

import numpy as np
import PIL.Image
import pytest
import scipy.linalg

import dnnlib
from metrics import frechet_inception_distance as fid_module
from metrics import kernel_inception_distance as kid_module
from metrics import metric_utils

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

#----------------------------------------------------------------------------

def random_cov(rng, dim, rank=None):
    a = rng.standard_normal([dim, rank or dim])
    return a @ a.T / dim

def nvidia_fid(mu1, sigma1, mu2, sigma2):
    """StyleGAN3's expression, with scipy's general matrix square root."""
    s = scipy.linalg.sqrtm(sigma2 @ sigma1)
    return float(np.real(np.square(mu2 - mu1).sum() + np.trace(sigma2 + sigma1 - s * 2)))

def test_fid_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(64), random_cov(rng, 64)
    assert abs(fid_module.fid_from_stats(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)

def test_fid_of_one_dimensional_gaussians():
    # FID of N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    fid = fid_module.fid_from_stats(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[0.25]]))
    assert fid == pytest.approx(3.0 ** 2 + (2 - 0.5) ** 2, rel=1e-12)

def test_fid_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    s1, s2 = rng.uniform(0.1, 3, 32), rng.uniform(0.1, 3, 32)
    expected = np.square(mu1 - mu2).sum() + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid_module.fid_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)

@pytest.mark.parametrize('rank', [None, 5])
def test_fid_matches_nvidias_sqrtm_expression(rank):
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(48), rng.standard_normal(48)
    sigma1, sigma2 = random_cov(rng, 48, rank), random_cov(rng, 48, rank)
    expected = nvidia_fid(mu1, sigma1, mu2, sigma2)
    assert fid_module.fid_from_stats(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6, abs=1e-6)

def test_fid_from_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    real, gen = metric_utils.FeatureStats(capture_mean_cov=True), metric_utils.FeatureStats(capture_mean_cov=True)
    real.append(rng.normal(0.0, 1.0, [20000, 4]))
    gen.append(rng.normal(0.5, 2.0, [20000, 4]))
    expected = 4 * 0.5 ** 2 + 4 * (1 - 2) ** 2
    assert fid_module.fid_from_stats(*real.get_mean_cov(), *gen.get_mean_cov()) == pytest.approx(expected, rel=0.05)

#----------------------------------------------------------------------------

def polynomial_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1) ** 3

def brute_force_mmd2(x, y):
    """Unbiased MMD^2 with the cubic kernel, written out term by term."""
    m = len(x)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off_diagonal = sum(kxx[i, j] + kyy[i, j] for i in range(m) for j in range(m) if i != j)
    return off_diagonal / (m * (m - 1)) - 2 * kxy.sum() / (m * m)

def test_kid_matches_the_unbiased_mmd_by_brute_force():
    rng = np.random.default_rng(4)
    real, gen = rng.standard_normal([12, 6]), rng.standard_normal([12, 6]) + 0.3
    # One subset holding every item: the estimate does not depend on their order.
    kid = kid_module.kid_from_features(real, gen, num_subsets=1, max_subset_size=12, rng=np.random.default_rng(0))
    assert kid == pytest.approx(brute_force_mmd2(gen, real), rel=1e-9)

def test_kid_is_unbiased_on_one_distribution():
    rng = np.random.default_rng(5)
    repeats, n, dim = 300, 20, 8
    kids, biased = [], []
    for _ in range(repeats):
        real, gen = rng.standard_normal([n, dim]), rng.standard_normal([n, dim])
        kids.append(kid_module.kid_from_features(real, gen, num_subsets=1, max_subset_size=n, rng=rng))
        biased.append((polynomial_kernel(gen, gen).mean() + polynomial_kernel(real, real).mean()) - 2 * polynomial_kernel(gen, real).mean())
    stderr = np.std(kids) / np.sqrt(repeats)
    assert abs(np.mean(kids)) < 4 * stderr
    assert np.mean(biased) > 10 * np.std(biased) / np.sqrt(repeats) # The test can tell: the biased estimate is positive.

def test_kid_is_positive_between_different_distributions_and_reproducible():
    rng = np.random.default_rng(6)
    real, gen = rng.standard_normal([200, 8]), rng.standard_normal([200, 8]) * 1.5 + 0.5
    kid = kid_module.kid_from_features(real, gen, num_subsets=10, max_subset_size=100, rng=np.random.default_rng(0))
    assert kid > 0.1
    assert kid == kid_module.kid_from_features(real, gen, num_subsets=10, max_subset_size=100, rng=np.random.default_rng(0))

def test_kid_needs_two_items():
    with pytest.raises(metric_utils.MetricError, match='at least 2'):
        kid_module.kid_from_features(np.zeros([1, 4]), np.zeros([5, 4]), num_subsets=1, max_subset_size=10)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('compute', [
    lambda opts: fid_module.compute_fid(opts, max_real=None, num_gen=10),
    lambda opts: kid_module.compute_kid(opts, max_real=1000000, num_gen=10, num_subsets=10, max_subset_size=1000),
])
def test_too_small_dataset_fails_before_any_work(tmp_path, monkeypatch, compute):
    (tmp_path / 'data').mkdir()
    PIL.Image.new('RGB', (8, 8)).save(tmp_path / 'data' / 'only.png')
    # The detector does not exist: reaching it would be a different error.
    monkeypatch.setenv(metric_utils.INCEPTION_ENV, str(tmp_path / 'no-such-detector.pkl'))
    opts = metric_utils.MetricOptions(G=None, dataset_kwargs=dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset',
        path=str(tmp_path / 'data')), device='cpu')
    with pytest.raises(metric_utils.MetricError, match=r'needs at least 2 real images, but the dataset .*data has 1'):
        compute(opts)

#----------------------------------------------------------------------------
