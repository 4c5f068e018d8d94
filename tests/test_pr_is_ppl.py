"""Precision/recall, Inception Score and perceptual path length: the math on
synthetic features, predictions and toy generators with known answers, a
two-process (gloo) run of the sharded distances, and the whole pipelines on a
tiny CREPS generator with small TorchScript detectors loaded through the
CREPS_VGG16 / CREPS_INCEPTION overrides."""

import json
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch

from metrics import inception_score
from metrics import metric_utils
from metrics import perceptual_path_length
from metrics import precision_recall
from metrics.inception_score import is_from_probabilities
from metrics.perceptual_path_length import PPLSampler, lpips_input, ppl_from_distances, slerp
from metrics.precision_recall import compute_distances, precision_recall_from_features
from detectors import save_detector
from numerics import torch_threads

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

#----------------------------------------------------------------------------
# Precision and recall.

def test_compute_distances_equals_cdist():
    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.randn([13, 5], generator=gen), torch.randn([29, 5], generator=gen)
    ref = torch.cdist(rows, cols)
    for col_batch_size in [1, 4, 7, 29, 100]:
        dist = compute_distances(rows, cols, num_gpus=1, rank=0, col_batch_size=col_batch_size)
        assert dist.shape == (13, 29)
        assert torch.allclose(dist, ref, atol=1e-5)

def clusters(n, dim, centre, seed):
    return torch.randn([n, dim], generator=torch.Generator().manual_seed(seed)) + torch.as_tensor(centre, dtype=torch.float32)

def test_pr_identical_distributions():
    real = clusters(600, 2, [0, 0], seed=1)
    assert precision_recall_from_features(real, real, nhood_size=3, row_batch_size=256, col_batch_size=256) == (1.0, 1.0)
    gen = clusters(600, 2, [0, 0], seed=2) # Another draw from the same distribution.
    precision, recall = precision_recall_from_features(real, gen, nhood_size=3, row_batch_size=256, col_batch_size=256)
    assert precision > 0.9 and recall > 0.9

def test_pr_disjoint_clusters():
    real, gen = clusters(300, 4, [0] * 4, seed=1), clusters(300, 4, [50] * 4, seed=2)
    assert precision_recall_from_features(real, gen, nhood_size=3, row_batch_size=128, col_batch_size=64) == (0.0, 0.0)

def test_pr_generator_covers_one_mode():
    # Real: two far-apart modes; generated: only the first. All generated points are
    # realistic (precision 1), and only the real points of the first mode are covered.
    real = torch.cat([clusters(400, 2, [0, 0], seed=1), clusters(400, 2, [100, 0], seed=2)])
    gen = clusters(400, 2, [0, 0], seed=3)
    precision, recall = precision_recall_from_features(real, gen, nhood_size=3, row_batch_size=256, col_batch_size=100)
    assert precision > 0.9
    assert 0.4 < recall <= 0.5

def test_pr_batching_and_float16():
    real, gen = clusters(200, 16, [0] * 16, seed=1), clusters(150, 16, [0.5] * 16, seed=2)
    ref = precision_recall_from_features(real, gen, nhood_size=3, row_batch_size=1000, col_batch_size=1000)
    for row_batch_size, col_batch_size in [(5, 3), (7, 13), (64, 200)]:
        assert precision_recall_from_features(real, gen, nhood_size=3, row_batch_size=row_batch_size, col_batch_size=col_batch_size) == ref
    half = precision_recall_from_features(real.half(), gen.half(), nhood_size=3, row_batch_size=64, col_batch_size=64)
    assert half == pytest.approx(ref, abs=0.03) # A few points near a radius may change sides.

def test_pr_neighbourhood_size_checked():
    real = clusters(3, 2, [0, 0], seed=1)
    with pytest.raises(metric_utils.MetricError, match='neighbourhood size'):
        precision_recall_from_features(real, real, nhood_size=3, row_batch_size=8, col_batch_size=8)

#----------------------------------------------------------------------------
# Inception Score.

def test_is_one_hot_predictions_spread_over_k_classes():
    for k in [1, 5, 10]:
        probs = np.eye(k, dtype=np.float32)[np.arange(k * 20) % k] # Every split holds each class equally often.
        mean, std = is_from_probabilities(probs, num_splits=10 if k > 1 else 4)
        assert mean == pytest.approx(k, rel=1e-5) and std == pytest.approx(0, abs=1e-4)

def test_is_identical_predictions():
    probs = np.tile(np.random.default_rng(0).dirichlet(np.ones(7)), [100, 1]).astype(np.float32)
    mean, std = is_from_probabilities(probs, num_splits=10)
    assert mean == pytest.approx(1, abs=1e-5) and std == pytest.approx(0, abs=1e-5)

def test_is_splits_are_consecutive_parts():
    # The first half predicts class 0, the second class 1: each half scores 1, the whole 2.
    probs = np.eye(2, dtype=np.float32)[np.repeat([0, 1], 50)]
    assert is_from_probabilities(probs, num_splits=2) == pytest.approx((1, 0))
    assert is_from_probabilities(probs, num_splits=1) == pytest.approx((2, 0))
    # Uneven parts: 0..33, 33..66, 66..100.
    mean, std = is_from_probabilities(probs, num_splits=3)
    scores = [1, np.exp(-(17 / 33) * np.log(17 / 33) - (16 / 33) * np.log(16 / 33)), 1]
    assert (mean, std) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-5)

def test_is_matches_definition():
    probs = np.random.default_rng(1).dirichlet(np.full(6, 0.3), size=40)
    ref = []
    for part in np.split(probs, 4):
        marginal = part.mean(axis=0)
        ref.append(np.exp(np.mean([np.sum(p * np.log(p / marginal)) for p in part])))
    assert is_from_probabilities(probs, num_splits=4) == pytest.approx((np.mean(ref), np.std(ref)), rel=1e-10)

def test_is_rejects_non_probabilities():
    inception_score.check_probabilities(np.full([4, 8], 1 / 8))
    with pytest.raises(metric_utils.MetricError, match='class probabilities'):
        inception_score.check_probabilities(np.random.default_rng(0).normal(size=[4, 8]))
    with pytest.raises(metric_utils.MetricError, match='cannot split'):
        is_from_probabilities(np.full([4, 8], 1 / 8), num_splits=10)

#----------------------------------------------------------------------------
# Perceptual path length: the pieces.

def test_slerp():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn([5, 8], generator=gen, dtype=torch.float64), torch.randn([5, 8], generator=gen, dtype=torch.float64)
    unit_a, unit_b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    angle = torch.acos((unit_a * unit_b).sum(dim=1))
    assert torch.allclose(slerp(a, b, torch.zeros([5, 1], dtype=torch.float64)), unit_a)
    assert torch.allclose(slerp(a, b, torch.ones([5, 1], dtype=torch.float64)), unit_b)
    t = torch.rand([5, 1], generator=gen, dtype=torch.float64)
    d = slerp(a, b, t)
    assert torch.allclose(d.norm(dim=1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(torch.acos((d * unit_a).sum(dim=1).clamp(-1, 1)), t[:, 0] * angle) # Constant angular speed.
    assert torch.allclose(torch.acos((d * unit_b).sum(dim=1).clamp(-1, 1)), (1 - t[:, 0]) * angle)

def test_lpips_input():
    img = torch.rand([2, 1, 512, 512]) * 2 - 1
    out = lpips_input(img)
    assert out.shape == (2, 3, 256, 256) # Grayscale to RGB, 512 -> 256 by 2x2 means.
    assert torch.allclose(out[:, 0], (img.reshape(2, 256, 2, 256, 2).mean([2, 4]) + 1) * 127.5, atol=1e-4)
    # The face crop: rows 3/8..7/8 and columns 2/8..6/8, then the factor of the uncropped image.
    img = torch.rand([1, 3, 512, 512]) * 2 - 1
    out = lpips_input(img, crop=True)
    assert out.shape == (1, 3, 128, 128)
    assert torch.allclose(out, (img[:, :, 192:448, 128:384].reshape(1, 3, 128, 2, 128, 2).mean([3, 5]) + 1) * 127.5, atol=1e-4)
    img = torch.rand([1, 3, 16, 16]) * 2 - 1
    assert torch.equal(lpips_input(img, crop=True), (img[:, :, 6:14, 4:12] + 1) * (255 / 2))
    with pytest.raises(metric_utils.MetricError, match='square'):
        lpips_input(torch.zeros([1, 3, 16, 24]), crop=True)

def test_ppl_outlier_filter():
    dist = np.concatenate([np.arange(1, 199, dtype=np.float32), [0, 1e9]])
    # 200 sorted values 0, 1, ..., 198, 1e9: the 1st percentile lies at position 1.99, rounded
    # down to the sample 1; the 99th at 197.01, rounded up to the sample 198.
    assert ppl_from_distances(dist) == pytest.approx(np.arange(1, 199).mean())
    assert ppl_from_distances(np.full(10, 3.5, dtype=np.float32)) == 3.5

#----------------------------------------------------------------------------
# Perceptual path length of toy generators with known answers, under a toy
# LPIPS detector: the pixels themselves, so the distance is the squared L2
# distance of the images in [0, 255].

class ToyMapping(torch.nn.Module):
    """w = z (times truncation_psi), broadcast to num_ws."""
    def __init__(self, num_ws):
        super().__init__()
        self.num_ws = num_ws
        self.calls = []
    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None):
        self.calls.append(dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff))
        return (z * truncation_psi).unsqueeze(1).repeat([1, self.num_ws, 1])

class LinearSynthesis(torch.nn.Module):
    """img = (M w of the first ws) as [C, H, W]; M = 0 gives a constant image."""
    def __init__(self, matrix, img_channels, img_resolution):
        super().__init__()
        self.register_buffer('matrix', matrix)
        self.shape = [img_channels, img_resolution, img_resolution]
        self.calls = []
    def forward(self, ws, noise_mode='random', force_fp32=False, **kwargs):
        self.calls.append(dict(noise_mode=noise_mode, force_fp32=force_fp32, **kwargs))
        return (ws[:, 0] @ self.matrix.t().to(ws.dtype)).reshape([-1] + self.shape)

class ToyGenerator(torch.nn.Module):
    def __init__(self, matrix, z_dim=6, img_channels=1, img_resolution=4, num_ws=3):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, 0, z_dim, num_ws
        self.img_channels, self.img_resolution = img_channels, img_resolution
        self.mapping = ToyMapping(num_ws)
        self.synthesis = LinearSynthesis(matrix, img_channels, img_resolution)

def pixel_distance(img, resize_images=True, return_lpips=False):
    assert resize_images is False and return_lpips is True
    return img.flatten(1)

def linear_generator(seed=0, z_dim=6, img_channels=1, img_resolution=4):
    matrix = torch.randn([img_channels * img_resolution ** 2, z_dim], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return ToyGenerator(matrix, z_dim=z_dim, img_channels=img_channels, img_resolution=img_resolution)

def toy_latents(n, z_dim, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z0, z1 = torch.randn([2, n, z_dim], generator=gen, dtype=torch.float64)
    return z0, z1, torch.rand([n], generator=gen, dtype=torch.float64), torch.zeros([n, 0], dtype=torch.float64)

def test_ppl_constant_generator_is_zero():
    G = ToyGenerator(torch.zeros([16, 6], dtype=torch.float64))
    for space in ['w', 'z']:
        sampler = PPLSampler(G, {}, epsilon=1e-4, space=space, sampling='full', crop=False, vgg16=pixel_distance)
        dist = sampler(*toy_latents(8, G.z_dim))
        assert torch.equal(dist, torch.zeros(8, dtype=torch.float64))
        assert ppl_from_distances(dist.numpy()) == 0

@pytest.mark.parametrize('sampling', ['end', 'full'])
def test_ppl_linear_generator_w(sampling):
    # Lerp in W: the two images differ by epsilon * M (w1 - w0), so the distance is
    # 127.5^2 |M (w1 - w0)|^2 at every t, times 3 for the grayscale image repeated to RGB.
    G = linear_generator()
    sampler = PPLSampler(G, {}, epsilon=1e-4, space='w', sampling=sampling, crop=False, vgg16=pixel_distance)
    z0, z1, t, c = toy_latents(50, G.z_dim)
    dist = sampler(z0, z1, t, c) # 'end' ignores t.
    expected = 3 * 127.5 ** 2 * ((z1 - z0) @ G.synthesis.matrix.t()).square().sum(dim=1)
    assert torch.allclose(dist, expected, rtol=1e-6)

@pytest.mark.parametrize('sampling', ['end', 'full'])
def test_ppl_linear_generator_z(sampling):
    # Slerp in Z moves at constant angular speed: with the image equal to w = z (M = identity),
    # the distance tends to 127.5^2 angle(z0, z1)^2 as epsilon -> 0, at every t (times 3 for RGB).
    G = ToyGenerator(torch.eye(16, dtype=torch.float64), z_dim=16, img_channels=1, img_resolution=4)
    sampler = PPLSampler(G, {}, epsilon=1e-6, space='z', sampling=sampling, crop=False, vgg16=pixel_distance)
    z0, z1, t, c = toy_latents(50, G.z_dim)
    dist = sampler(z0, z1, t, c)
    angle = torch.acos((z0 * z1).sum(dim=1) / (z0.norm(dim=1) * z1.norm(dim=1)))
    assert torch.allclose(dist, 3 * 127.5 ** 2 * angle.square(), rtol=1e-5)

def test_ppl_sampler_calls_and_copies():
    G = linear_generator()
    G.synthesis.register_buffer('noise_const', torch.zeros([4]))
    sampler = PPLSampler(G, dict(truncation_psi=0.5, extra=1), epsilon=1e-4, space='w', sampling='end', crop=False, vgg16=pixel_distance)
    sampler.randomize_noise(torch.Generator().manual_seed(0))
    sampler(*toy_latents(3, G.z_dim))
    # Truncation goes to the mapping, the rest to the synthesis with constant noise in float32.
    assert sampler.G.mapping.calls == [dict(truncation_psi=0.5, truncation_cutoff=None)]
    assert sampler.G.synthesis.calls == [dict(noise_mode='const', force_fp32=True, extra=1)]
    # The noise buffers of the copy are redrawn; the caller's generator is left alone.
    assert not torch.equal(sampler.G.synthesis.noise_const, torch.zeros([4]))
    assert torch.equal(G.synthesis.noise_const, torch.zeros([4])) and G.mapping.calls == []

#----------------------------------------------------------------------------
# The pipelines: compute_pr, compute_is and compute_ppl through MetricOptions,
# on a tiny CREPS generator and a tiny folder dataset, with small TorchScript
# detectors that take the standard arguments.

class TinyVGG(torch.nn.Module):
    """VGG16-like detector: features of a fixed random conv net; LPIPS features
    are unit-normalized over channels and scaled by 1/sqrt(positions)."""
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, img, return_features: bool = False, resize_images: bool = True, return_lpips: bool = False):
        x = img.to(torch.float32) / 127.5 - 1
        if resize_images:
            x = torch.nn.functional.interpolate(x, size=[8, 8], mode='area')
        x = torch.relu(self.conv(x))
        if return_lpips:
            x = x / (x.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()
            return x.flatten(1) / math.sqrt(x.shape[2] * x.shape[3])
        return x.mean(dim=[2, 3])

class TinyInception(torch.nn.Module):
    """Inception-like detector: softmax over 10 classes of linear logits of pooled
    features. The output bias strongly favours class 0, so the score is about 1
    unless the bias is left out as the reference does."""
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16, 10)
        with torch.no_grad():
            self.fc.weight.mul_(300)
            self.fc.bias.zero_()
            self.fc.bias[0] = 1000

    def forward(self, img, return_features: bool = False, use_fp16: bool = False, no_output_scaling: bool = False, no_output_bias: bool = False):
        x = torch.relu(self.conv(img.to(torch.float32) / 127.5 - 1)).mean(dim=[2, 3])
        if return_features:
            return x
        logits = x @ self.fc.weight.t()
        if not no_output_bias:
            logits = logits + self.fc.bias
        return torch.softmax(logits, dim=1)

@pytest.fixture(scope='module')
def detectors(tmp_path_factory):
    folder = tmp_path_factory.mktemp('detectors')
    return dict(vgg16=save_detector(TinyVGG(), folder / 'vgg16.pkl'), inception=save_detector(TinyInception(), folder / 'inception.pkl'))

def tiny_generator():
    from training.networks_creps import Generator
    with torch.random.fork_rng():
        torch.manual_seed(0)
        G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=32, biline_channels=8)
    return G.eval().requires_grad_(False)

def tiny_dataset(path, num_images=24):
    """A folder of random 16x16 PNGs in NVIDIA's layout; returns the dataset kwargs."""
    rng = np.random.default_rng(0)
    for i in range(num_images):
        file = path / '00000' / f'img{i:08d}.png'
        file.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(rng.integers(0, 256, [16, 16, 3], dtype=np.uint8)).save(file)
    return dict(class_name='training.dataset.ImageFolderDataset', path=str(path))

@pytest.fixture
def metric_opts(tmp_path, detectors, monkeypatch):
    monkeypatch.setenv('CREPS_VGG16', detectors['vgg16'])
    monkeypatch.setenv('CREPS_INCEPTION', detectors['inception'])
    return metric_utils.MetricOptions(G=tiny_generator(), dataset_kwargs=tiny_dataset(tmp_path / 'data'),
        num_gpus=1, rank=0, device=torch.device('cpu'), cache=False)

def test_compute_pr(metric_opts):
    precision, recall = precision_recall.compute_pr(metric_opts, max_real=20, num_gen=20, nhood_size=3, row_batch_size=8, col_batch_size=8)
    assert 0 <= precision <= 1 and 0 <= recall <= 1
    assert precision_recall.compute_pr(metric_opts, max_real=20, num_gen=20, nhood_size=3, row_batch_size=20, col_batch_size=3) == (precision, recall)
    # k neighbours need k + 1 images of each kind.
    with pytest.raises(metric_utils.MetricError, match='at least 4 real images'):
        precision_recall.compute_pr(metric_opts, max_real=3, num_gen=20, nhood_size=3, row_batch_size=8, col_batch_size=8)
    with pytest.raises(metric_utils.MetricError, match='at least 4 generated images'):
        precision_recall.compute_pr(metric_opts, max_real=20, num_gen=3, nhood_size=3, row_batch_size=8, col_batch_size=8)

def test_compute_is(metric_opts):
    mean, std = inception_score.compute_is(metric_opts, num_gen=40, num_splits=4)
    # With the bias (class 0 always) the score would be 1; the reference leaves it out.
    assert 1.3 < mean <= 10 and 0 <= std < mean
    with pytest.raises(metric_utils.MetricError, match='cannot split'):
        inception_score.compute_is(metric_opts, num_gen=5, num_splits=10)

@pytest.mark.parametrize('space, sampling, crop', [('w', 'end', False), ('z', 'full', True)])
def test_compute_ppl(metric_opts, space, sampling, crop):
    ppl = perceptual_path_length.compute_ppl(metric_opts, num_samples=14, epsilon=1e-4, space=space, sampling=sampling, crop=crop, batch_size=8)
    assert math.isfinite(ppl) and ppl > 0
    # The first 14 samples of iterate_path_samples, measured by hand in the same batches
    # (8, then 8 cut to 6), give the same value; other batch shapes would round differently,
    # and PPL divides the rounding by epsilon^2 = 1e-8.
    vgg16 = metric_utils.get_feature_detector(metric_utils.vgg16_url(), device=torch.device('cpu'))
    sampler = PPLSampler(metric_opts.G, {}, epsilon=1e-4, space=space, sampling=sampling, crop=crop, vgg16=vgg16)
    samples = perceptual_path_length.iterate_path_samples(metric_opts, batch_size=8)
    with torch.no_grad():
        dist = torch.cat([sampler(*next(samples), torch.zeros([8, 0])) for _batch in range(2)])[:14]
    assert ppl == ppl_from_distances(dist.numpy())

#----------------------------------------------------------------------------
# Two processes over gloo: each computes half of the distance column batches
# and half of the PPL samples; rank 0 gets the single-process results, the
# other rank NaN.

def _two_process_worker(rank, world_size, init_file, out_dir, vgg16):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    real, gen = clusters(90, 3, [0] * 3, seed=1), clusters(70, 3, [0.7] * 3, seed=2)
    dist = compute_distances(real, gen, num_gpus=world_size, rank=rank, col_batch_size=8)
    pr = precision_recall_from_features(real, gen, nhood_size=3, row_batch_size=32, col_batch_size=8, num_gpus=world_size, rank=rank)
    os.environ['CREPS_VGG16'] = vgg16
    opts = metric_utils.MetricOptions(G=tiny_generator(), num_gpus=world_size, rank=rank, device=torch.device('cpu'), cache=False)
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=10, epsilon=1e-4, space='w', sampling='full', crop=False, batch_size=3)
    nan_to_none = lambda x: None if math.isnan(x) else x
    with open(f'{out_dir}/rank{rank}.json', 'w') as f:
        json.dump(dict(dist=None if dist is None else dist.tolist(), pr=[nan_to_none(x) for x in pr], ppl=nan_to_none(ppl)), f)
    torch.distributed.destroy_process_group()

def test_two_processes(tmp_path, detectors):
    torch.multiprocessing.spawn(_two_process_worker, args=(2, str(tmp_path / 'init'), str(tmp_path), detectors['vgg16']), nprocs=2)
    results = [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in range(2)]
    real, gen = clusters(90, 3, [0] * 3, seed=1), clusters(70, 3, [0.7] * 3, seed=2)
    assert torch.allclose(torch.tensor(results[0]['dist']), torch.cdist(real, gen), atol=1e-5)
    # The single-process references run with the workers' one thread and batch shapes, so they
    # round alike and must agree exactly: PPL divides rounding differences by epsilon^2 = 1e-8.
    with torch_threads(1):
        assert results[0]['pr'] == list(precision_recall_from_features(real, gen, nhood_size=3, row_batch_size=32, col_batch_size=8))
        # 10 samples: two rounds of 2 x 3, cut to 10, the same samples as one process draws.
        opts = metric_utils.MetricOptions(G=tiny_generator(), device=torch.device('cpu'), cache=False)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('CREPS_VGG16', detectors['vgg16'])
            ppl = perceptual_path_length.compute_ppl(opts, num_samples=10, epsilon=1e-4, space='w', sampling='full', crop=False, batch_size=3)
    assert results[0]['ppl'] == ppl
    assert results[1] == dict(dist=None, pr=[None, None], ppl=None)

#----------------------------------------------------------------------------
