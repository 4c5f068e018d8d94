"""CREPS generator: shapes, the official computation, and the coordinate property."""

import pytest
import torch

from official_env import import_official_creps
from torch_utils import render
from training.networks_creps import Generator

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

#----------------------------------------------------------------------------

def tiny_generator(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=32, biline_channels=8)
    args.update(kwargs)
    return Generator(**args).eval().requires_grad_(False)

def latents(G, n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(n) % max(G.c_dim, 1), max(G.c_dim, 1)).float()[:, :G.c_dim]
    return z, c

#----------------------------------------------------------------------------

@pytest.mark.parametrize('config', [
    dict(),
    dict(c_dim=4),
    dict(img_resolution=32, img_channels=1),
    dict(img_resolution=8, rank=4, bandwidth=3),
    dict(img_resolution=32, img_channels=4, biline_channels=12, num_fp16_res=2, architecture='orig'),
])
def test_shapes(config):
    G = tiny_generator(**config)
    z, c = latents(G, 3)
    ws = G.mapping(z, c)
    assert ws.shape == (3, G.num_ws, G.w_dim)
    img = G(z, c)
    assert img.shape == (3, G.img_channels, G.img_resolution, G.img_resolution)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    rows, cols = torch.linspace(0, 1, 7), torch.linspace(-0.5, 1.5, 11)
    assert G(z, c, rows=rows, cols=cols).shape == (3, G.img_channels, 7, 11)

def test_parameter_names_and_shapes_match_official_layout():
    # Names and shapes as in the official CREPS release, so its state dicts load.
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=32, img_channels=3, channel_base=2048, channel_max=128, biline_channels=32)
    shapes = {name: tuple(t.shape) for name, t in G.state_dict().items()}
    expected = {
        'mapping.fc0.weight': (512, 512), 'mapping.fc7.bias': (512,), 'mapping.w_avg': (512,),
        'synthesis.b4.input.freqs': (1, 128 // 2 * 8), 'synthesis.b4.input.coords': (1, 32, 2, 1),
        'synthesis.b4.input.weight': (1, 128, 1, 16), 'synthesis.b4.input.affine.weight': (128 * 16, 512),
        'synthesis.b4.fc1.weight': (128, 128), 'synthesis.b4.tores.weight': (32, 128),
        'synthesis.b8.fc0.affine.weight': (128, 512), 'synthesis.b32.fc0.weight': (64, 128), 'synthesis.b32.tores.bias': (32,),
        'synthesis.decoder_8.0.weight': (64, 32), 'synthesis.decoder_32.1.weight': (128, 64), 'synthesis.decoder_32.3.bias': (32,),
        'synthesis.decoder_last.2.weight': (64, 128), 'synthesis.decoder_img.weight': (3, 32),
        'synthesis.block0.fc0.weight': (128, 32), 'synthesis.block0.fc1.weight': (128, 128), 'synthesis.block0.tores.weight': (3, 128),
        'synthesis.block1.fc0.weight': (64, 128), 'synthesis.block1.tores.affine.weight': (64, 512),
    }
    for name, shape in expected.items():
        assert shapes.get(name) == shape, name
    assert G.num_ws == 1 + 1 + 2 * 3 + 1
    assert 'synthesis.b4.fc0.weight' not in shapes and 'synthesis.decoder_4.0.weight' not in shapes

#----------------------------------------------------------------------------
# The official computation: the official-shaped module of tests/official_env.py, on the same weights.

@pytest.mark.parametrize('config', [dict(), dict(img_resolution=32, img_channels=1), dict(c_dim=3, architecture='orig')])
def test_matches_official_computation(config, tmp_path):
    G = tiny_generator(**config)
    # Non-trivial biases and gains so that every term of the computation matters.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('bias'):
                p.add_(torch.randn_like(p) * 0.1)
    official = import_official_creps(tmp_path).Generator(**G.init_kwargs).eval()
    official.load_state_dict(G.state_dict())
    z, c = latents(G, 2)
    ws = G.mapping(z, c)
    ours = G.synthesis(ws)
    theirs = official.synthesis(ws)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()

def test_truncation_moves_toward_w_avg():
    G = tiny_generator()
    G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    z, c = latents(G, 2)
    ws = G.mapping(z, c, truncation_psi=0)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))
    half = G.mapping(z, c, truncation_psi=0.5)
    assert torch.allclose(half, (G.mapping(z, c) + ws) / 2, atol=1e-6)

#----------------------------------------------------------------------------
# The coordinate property: a pixel depends on its own row and column coordinate only.

def test_subset_of_coordinates_gives_those_pixels():
    G = tiny_generator()
    ws = G.mapping(*latents(G, 2))
    rows, cols = render.lines_for_scale(G.img_resolution, 3.3)
    full = render.render(G.synthesis, ws, rows, cols)
    pick_r, pick_c = [0, 5, 17, 52], [3, 4, 40, 41, 52]
    part = G.synthesis(ws, rows[pick_r], cols[pick_c])
    assert (part - full[:, :, pick_r][:, :, :, pick_c]).abs().max() <= 1e-5

@pytest.mark.parametrize('tile', [5, 16, 33])
def test_tiled_equals_full_frame(tile):
    G = tiny_generator()
    ws = G.mapping(*latents(G, 2))
    rows, cols = render.lines_for_scale(G.img_resolution, 2.2)
    full = render.render(G.synthesis, ws, rows, cols)
    tiled = render.render(G.synthesis, ws, rows, cols, tile=tile)
    assert full.shape == (2, 3, 35, 35)
    assert (full - tiled).abs().max() <= 1e-5

def test_small_chunks_equal_one_pass():
    # The chunking of the line and pixel stages is an implementation detail: results must not depend on it.
    G = tiny_generator()
    ws = G.mapping(*latents(G, 2))
    ref = G.synthesis(ws)
    G.synthesis.line_chunk, G.synthesis.pixel_chunk = 1, 5
    assert (G.synthesis(ws) - ref).abs().max() <= 1e-5

def test_forward_default_is_the_training_grid():
    G = tiny_generator()
    ws = G.mapping(*latents(G, 1))
    rows, cols = render.lines_for_scale(G.img_resolution, 1)
    assert torch.equal(rows, torch.linspace(0, 1, G.img_resolution))
    assert torch.equal(G.synthesis(ws), render.render(G.synthesis, ws, rows, cols))

def test_non_square_size_and_viewport():
    G = tiny_generator()
    ws = G.mapping(*latents(G, 1))
    rows, cols = render.lines_for_size(width=30, height=9)
    img = render.render(G.synthesis, ws, rows, cols)
    assert img.shape == (1, 3, 9, 30)
    # A viewport centred on a pixel of the scale-2 frame (N = 32 pixels across the unit side)
    # takes round(extent * N) pixels of the frame around it: that crop of the frame.
    full_rows, full_cols = render.lines_for_scale(G.img_resolution, 2)
    step = 1 / (len(full_cols) - 1)
    # Columns: centred on pixel 12, 17 of them; rows: the areas of pixels 10 to 13, centred between two.
    vr, vc = render.lines_for_viewport(G.img_resolution, (4 * step, 20 * step, 9.5 * step, 13.5 * step), scale=2)
    assert (len(vc), len(vr)) == (17, 4) # round(16 / 31 * 32), round(4 / 31 * 32)
    full = render.render(G.synthesis, ws, full_rows, full_cols)
    crop = render.render(G.synthesis, ws, vr, vc)
    assert (crop - full[:, :, 10:14, 4:21]).abs().max() <= 1e-5
    # Beyond the training domain the network still renders finite pixels.
    outside = render.render(G.synthesis, ws, *render.lines_for_viewport(G.img_resolution, (-1, 2, 1, -1), size=(12, 5)))
    assert outside.shape == (1, 3, 5, 12) and torch.isfinite(outside).all()

def test_scale_consistency_on_aligned_grid():
    # Rendered on a grid whose 2x2 blocks are centred on the scale-1 samples, the 2x render,
    # average-pooled, stays close to the 1x render (the generator is continuous in x, y).
    G = tiny_generator(img_resolution=32, bandwidth=2)
    ws = G.mapping(*latents(G, 2))
    base = G.synthesis(ws)
    fine = G.synthesis(ws, *render.aligned_fine_lines(32, 2))
    pooled = torch.nn.functional.avg_pool2d(fine, 2)
    mse = (pooled - base).square().mean() / base.square().mean()
    assert mse < 1e-2

def test_lines_for_scale_count():
    rows, cols = render.lines_for_scale(32, 2.5)
    assert len(rows) == len(cols) == 80 and rows[0] == 0 and rows[-1] == 1
    with pytest.raises(ValueError):
        render.lines_for_scale(32, 0)

#----------------------------------------------------------------------------

def test_gradients_and_double_backward():
    # Training needs gradients w.r.t. parameters and, for path-length regularization, w.r.t. ws twice.
    G = tiny_generator().train().requires_grad_(True)
    z, c = latents(G, 2)
    ws = G.mapping(z, c)
    img = G.synthesis(ws)
    (grad_ws,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    grad_ws.square().sum().backward()
    assert G.synthesis.b8.fc0.weight.grad is not None and torch.isfinite(G.synthesis.b8.fc0.weight.grad).all()
    assert G.synthesis.block1.tores.weight.grad.abs().sum() > 0

@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_reduced_precision_close_to_fp32(precision):
    # fp16 is what CUDA runs for the configured layers; the same code path runs (slowly) on the CPU.
    G = tiny_generator(num_fp16_res=2)
    ws = G.mapping(*latents(G, 2))
    ref = G.synthesis(ws)
    low = G.synthesis(ws, precision=precision)
    assert low.dtype == torch.float32
    assert not torch.equal(low, ref)
    assert (low - ref).abs().mean() < 0.05 * ref.abs().mean()

#----------------------------------------------------------------------------

def test_w_avg_moves_only_with_update_emas():
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8, biline_channels=8, rank=2)
    z = torch.randn([4, 8])
    G.mapping(z, None)
    assert torch.equal(G.mapping.w_avg, torch.zeros(8))
    G.mapping(z, None, update_emas=True)
    assert not torch.equal(G.mapping.w_avg, torch.zeros(8))
