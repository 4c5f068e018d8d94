"""Scale-consistency metrics: the aligned fine grid, the PSNR of toy line
generators with known answers (constant, linear, high-frequency) and of a tiny
CREPS generator, FID at scale through a small TorchScript Inception loaded via
CREPS_INCEPTION, two processes (gloo), and the clear errors."""

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch

from metrics import equivariance
from metrics import frechet_inception_distance
from metrics import metric_utils
from metrics import scale_consistency as sc
from torch_utils import render
from detectors import save_detector
from numerics import torch_threads

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

#----------------------------------------------------------------------------
# Toy generators with the duck-typed interface of an any-scale generator:
# pixel (i, j) = fn(ws, rows[i], cols[j]).

def constant_fn(ws, y, x):
    return ws[:, 0, :3, None, None].expand(-1, -1, y.shape[0], x.shape[1])

def linear_fn(ws, y, x):
    a, b, c = (ws[:, 0, k : k + 3, None, None] for k in (0, 3, 6))
    return a * 0.3 * x + b * 0.3 * y + c * 0.1

def high_frequency_fn(ws, y, x):
    # 0.45 cycles per training pixel along x (the spacing is 1/15): averaging over a pixel's width
    # attenuates it by a quarter or more, which is a large error at this amplitude.
    cycles = 0.45 * 15
    return (0.9 * torch.sin(2 * math.pi * cycles * x + ws[:, 0, :3, None, None])).expand(-1, -1, y.shape[0], -1)

class ToyMapping(torch.nn.Module):
    def forward(self, z, c, **_kwargs):
        return z.unsqueeze(1)

class ToyLineSynthesis(torch.nn.Module):
    def __init__(self, fn, resolution):
        super().__init__()
        self.fn, self.img_resolution, self.img_channels = fn, resolution, 3

    def line_stage(self, ws, rows, cols, precision='fp32'):
        return [rows], [cols]

    def pixel_stage(self, ws, row_lines, col_lines, precision='fp32'):
        return self.fn(ws, row_lines[0][:, None], col_lines[0][None, :])

    def forward(self, ws, rows=None, cols=None, noise_mode=None, **_kwargs):
        if rows is None or cols is None:
            rows, cols = render.lines_for_scale(self.img_resolution, 1)
        return self.pixel_stage(ws, *self.line_stage(ws, rows, cols))

class ToyPlainSynthesis(torch.nn.Module):
    """StyleGAN2-like: one fixed resolution."""
    def forward(self, ws, **_kwargs):
        return ws[:, 0, :3, None, None].expand(-1, -1, 16, 16)

class ToyGenerator(torch.nn.Module):
    def __init__(self, fn=None, resolution=16):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = 9, 0, 9, resolution, 3
        self.mapping = ToyMapping()
        self.synthesis = ToyLineSynthesis(fn, resolution) if fn is not None else ToyPlainSynthesis()

    def forward(self, z, c, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c), **synthesis_kwargs)

def tiny_creps():
    from training.networks_creps import Generator # Tests may import training/; metrics/ never does.
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=32, biline_channels=8)
    return G.eval().requires_grad_(False)

def options(G, **kwargs):
    return metric_utils.MetricOptions(G=G, device=torch.device('cpu'), cache=False, **kwargs)

#----------------------------------------------------------------------------
# The grid and the pure parts.

@pytest.mark.parametrize('scale', [2, 3, 4])
def test_fine_blocks_are_centred_on_the_training_grid(scale):
    coarse_rows, coarse_cols = sc.scale_lines(16, 1)
    fine_rows, fine_cols = sc.scale_lines(16, scale)
    assert fine_rows.shape == (16 * scale,) and torch.equal(coarse_rows, render.lines_for_scale(16, 1)[0])
    assert torch.allclose(fine_rows.reshape(16, scale).mean(1), coarse_rows, atol=1e-6)
    assert torch.allclose(fine_cols.reshape(16, scale).mean(1), coarse_cols, atol=1e-6)

def test_area_downsample_is_the_block_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(sc.area_downsample(x, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert sc.area_downsample(x, 1) is x

def test_whole_scales_only():
    assert sc.check_scale(2) == 2 and sc.check_scale(4.0) == 4
    for bad in [1.5, 0, -2, True]:
        with pytest.raises(ValueError, match='whole scale'):
            sc.check_scale(bad)

#----------------------------------------------------------------------------
# The PSNR metric.

def scale_psnr(G, scale, num_samples=6, batch_size=4):
    return sc.compute_scale_psnr(options(G), num_samples=num_samples, scale=scale, batch_size=batch_size)

@pytest.mark.parametrize('scale', [2, 4])
def test_constant_generator_is_perfectly_consistent(scale):
    assert scale_psnr(ToyGenerator(constant_fn), scale) > 130 # inf, or float rounding in the pooling.

@pytest.mark.parametrize('scale', [2, 4])
def test_linear_generator_is_preserved_by_area_averaging(scale):
    assert scale_psnr(ToyGenerator(linear_fn), scale) > 100

def test_high_frequency_generator_is_inconsistent():
    assert scale_psnr(ToyGenerator(high_frequency_fn), 2) < 25

def test_psnr_pools_the_squared_error_over_samples():
    G = ToyGenerator(high_frequency_fn)
    ws = G.mapping(torch.from_numpy(next(iter_latents(G, 6))), None)
    base = G.synthesis(ws)
    down = sc.area_downsample(G.synthesis(ws, *sc.scale_lines(16, 2)), 2)
    mse = (down - base).to(torch.float64).square().mean()
    assert scale_psnr(G, 2) == pytest.approx(10 * math.log10(4 / float(mse)), rel=1e-6)

def iter_latents(G, batch_size):
    opts = options(G)
    for z in metric_utils.iterate_random_latents(opts, batch_size):
        yield z.numpy()

def test_creps_generator_gives_a_finite_psnr():
    psnr = scale_psnr(tiny_creps(), 2, num_samples=3, batch_size=2)
    assert math.isfinite(psnr)

def test_generator_without_lines_is_a_clear_error():
    with pytest.raises(ValueError, match='cannot render at other scales'):
        scale_psnr(ToyGenerator(), 2)
    with pytest.raises(ValueError, match='cannot render at other scales'):
        sc.compute_fid_at_scale(options(ToyGenerator()), max_real=None, num_gen=10, scale=2)

#----------------------------------------------------------------------------
# FID at scale, with a small TorchScript Inception stand-in.

class TinyInception(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, img, return_features: bool = False):
        return torch.tanh(self.conv(img.to(torch.float32) / 127.5 - 1)).mean(dim=[2, 3])

@pytest.fixture
def fid_opts(tmp_path, monkeypatch):
    monkeypatch.setenv('CREPS_INCEPTION', save_detector(TinyInception(), tmp_path / 'inception.pkl'))
    rng = np.random.default_rng(0)
    for i in range(12):
        file = tmp_path / 'data' / '00000' / f'img{i:08d}.png'
        file.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(rng.integers(0, 256, [16, 16, 3], dtype=np.uint8)).save(file)
    dataset_kwargs = dict(class_name='training.dataset.ImageFolderDataset', path=str(tmp_path / 'data'))
    return lambda G: options(G, dataset_kwargs=dataset_kwargs)

def test_fid_at_scale_of_a_constant_generator_is_plain_fid(fid_opts):
    # The downsampled renders equal the scale-1 renders, so the features and the FID do too.
    opts = fid_opts(ToyGenerator(constant_fn))
    plain = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=12)
    assert math.isfinite(plain) and plain > 0
    for scale in [2, 4]:
        assert sc.compute_fid_at_scale(opts, max_real=None, num_gen=12, scale=scale) == pytest.approx(plain, rel=1e-6)

def test_fid_at_scale_shares_the_real_features_but_not_the_renders(fid_opts):
    # With a feature cache (the metrics of one calc_metrics call), FID at scale 2 takes the real
    # statistics of plain FID and renders its own images: a generator whose renders depend on the
    # scale gets another FID, the one it gets alone.
    alone = fid_opts(ToyGenerator(high_frequency_fn))
    expected = [frechet_inception_distance.compute_fid(alone, max_real=None, num_gen=12),
        sc.compute_fid_at_scale(alone, max_real=None, num_gen=12, scale=2)]
    assert expected[0] != pytest.approx(expected[1], rel=1e-3)
    opts = fid_opts(ToyGenerator(high_frequency_fn))
    opts.feature_cache = dict()
    shared = [frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=12),
        sc.compute_fid_at_scale(opts, max_real=None, num_gen=12, scale=2)]
    assert shared == pytest.approx(expected, rel=1e-9)
    assert len(opts.feature_cache) == 3 # The reals once; generated images at scales 1 and 2.

def test_fid_at_scale_of_creps(fid_opts):
    fid = sc.compute_fid_at_scale(fid_opts(tiny_creps()), max_real=10, num_gen=8, scale=2)
    assert math.isfinite(fid) and fid >= 0

#----------------------------------------------------------------------------
# Two processes: the PSNRs are all-reduced; scale consistency sees the same
# samples as one process, so it gives the same value.

def _two_process_worker(rank, world_size, init_file, out_dir):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    opts = metric_utils.MetricOptions(G=ToyGenerator(high_frequency_fn), num_gpus=world_size, rank=rank, device=torch.device('cpu'), cache=False)
    psnr = sc.compute_scale_psnr(opts, num_samples=7, scale=2, batch_size=2)
    eqt = equivariance.compute_equivariance_metrics(opts, num_samples=5, batch_size=2, compute_eqt_int=True, compute_eqt_frac=True)
    with open(f'{out_dir}/rank{rank}.json', 'w') as f:
        json.dump(dict(psnr=psnr, eqt=list(eqt)), f)
    torch.distributed.destroy_process_group()

def test_two_processes(tmp_path):
    torch.multiprocessing.spawn(_two_process_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in range(2)]
    assert results[0] == results[1]
    # Each rank renders its samples in batches of other samples than one process does, so an elementwise
    # kernel may take its scalar tail instead of its vector body for a value, an ulp apart (6e-8). Such
    # a value moves the PSNR (10 log10 of 4 / the mean of ~5000 squared errors of ~0.3) by ~1e-10 relative.
    with torch_threads(1):
        single = scale_psnr(ToyGenerator(high_frequency_fn), 2, num_samples=7, batch_size=2)
    assert results[0]['psnr'] == pytest.approx(single, rel=1e-7)
    assert all(math.isfinite(p) for p in results[0]['eqt'])

#----------------------------------------------------------------------------
