"""The fused per-pixel stage of bi-line networks (torch_utils/ops/biline_pixels): the CPU kernel
against its step-by-step reference, and the network's fused stage against its layer-by-layer one,
on every configuration the generator tests build, odd sizes and tiles."""

import numpy as np
import pytest
import torch

import legacy
from torch_utils import render
from torch_utils.ops import biline_pixels
from training.networks_creps import Generator

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

TOL = 1e-5 # Relative to the largest magnitude of the reference.

def assert_close(got, expected):
    assert got.shape == expected.shape
    error, scale = (got - expected).abs().max().item(), max(expected.abs().max().item(), 1)
    assert error <= TOL * scale, f'off by {error:.3g} (scale {scale:.3g})'

@pytest.fixture
def kernel():
    if not biline_pixels.kernel_available('cpu'):
        pytest.skip('the biline_pixels CPU kernel did not build here (no compiler?): its warning says why')

@pytest.fixture
def cuda_kernel():
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA GPU (the CUDA kernel of biline_pixels)')
    assert biline_pixels.kernel_available('cuda'), 'the CUDA kernel did not build or failed its self-check: see its warning'

#----------------------------------------------------------------------------
# The op.

def random_program(gen, batch, channels, widths, img_channels, levels):
    """A chain through `widths` per level and a projection, with shared and per-sample weights."""
    randn = lambda *shape: torch.randn(shape, generator=gen)
    program = biline_pixels.Program()
    program.outer(0, dst=0)
    for level in range(1, levels):
        src = 0
        for k, width in enumerate(widths + [channels]):
            dst = 0 if k == len(widths) else 1 + k % 2
            per_sample = k % 2 == 1
            weight = randn(*([batch] if per_sample else []), width, program_width(program, src, channels)) / np.sqrt(width)
            program.dense(weight, randn(width), src, dst, lrelu=(k % 3 != 2), gain=np.sqrt(2) if k % 2 else 1,
                clamp=0.8 if k == 0 else None)
            src = dst
        program.outer(level, dst=0, accumulate=True)
    program.dense(randn(img_channels, channels), randn(img_channels), 0, biline_pixels.IMAGE_BUFFER)
    program.dense(randn(batch, img_channels, channels), randn(img_channels), 0, biline_pixels.IMAGE_BUFFER, accumulate=True, clamp=1.5)
    return program

def program_width(program, buffer, channels):
    """Channels held by `buffer` after the program's steps so far."""
    for kind, index, _src, dst, _acc, _lrelu in reversed(program.steps):
        if dst == buffer:
            return channels if kind == biline_pixels.OUTER else program.weights[index].shape[1]
    return channels

@pytest.mark.parametrize('batch, height, width, channels, rank, widths, img_channels, levels', [
    (1, 1, 1, 4, 1, [6], 1, 1),
    (2, 3, 17, 8, 4, [16, 32, 16], 3, 3),
    (3, 2, 33, 5, 3, [7, 13], 4, 2),   # Row counts that are no multiple of the register blocks.
    (1, 4, 64, 32, 8, [64, 128, 64], 3, 2),
])
def test_kernel_runs_programs_as_the_reference(kernel, batch, height, width, channels, rank, widths, img_channels, levels):
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn([levels, batch, height, channels, rank], generator=gen)
    cols = torch.randn([levels, batch, rank, channels, width], generator=gen)
    program = random_program(gen, batch, channels, widths, img_channels, levels)
    assert_close(biline_pixels.pixels(program, rows, cols, img_channels), biline_pixels.pixels_ref(program, rows, cols, img_channels))

@pytest.mark.parametrize('dtype, tol', [(torch.float32, TOL), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_cuda_kernel_runs_programs_as_the_reference(cuda_kernel, dtype, tol):
    # Lines and weights in `dtype`, sums in float32: against the float32 reference of the same rounded inputs.
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn([3, 2, 5, 32, 8], generator=gen).to(dtype)
    cols = torch.randn([3, 2, 8, 32, 45], generator=gen).to(dtype)
    program = random_program(gen, 2, 32, [64, 128, 64], 3, 3).to('cpu', dtype)
    expected = biline_pixels.pixels_ref(program, rows, cols, 3)
    got = biline_pixels.pixels(program.to('cuda', dtype), rows.cuda(), cols.cuda(), 3).cpu()
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max() <= tol * max(expected.abs().max().item(), 1)

def test_kernel_refuses_malformed_programs(kernel):
    rows, cols = torch.zeros([1, 1, 2, 4, 2]), torch.zeros([1, 1, 2, 4, 3])
    program = biline_pixels.Program()
    program.outer(0, dst=0)
    program.dense(torch.zeros([3, 5]), torch.zeros([3]), 0, biline_pixels.IMAGE_BUFFER) # 5 inputs, but the buffer holds 4.
    with pytest.raises(RuntimeError, match='inputs'):
        biline_pixels.pixels(program, rows, cols, 3)

#----------------------------------------------------------------------------
# The network.

def tiny_generator(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=32, biline_channels=8)
    args.update(kwargs)
    G = Generator(**args).eval().requires_grad_(False)
    with torch.no_grad(): # Non-trivial biases, so that every term of the computation matters.
        for name, p in G.named_parameters():
            if name.endswith('bias'):
                p.add_(torch.randn_like(p) * 0.1)
    return G

def fused_and_reference(G, n, rows, cols, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(n) % max(G.c_dim, 1), max(G.c_dim, 1)).float()[:, :G.c_dim]
    with torch.no_grad():
        ws = G.mapping(z.to(rows.device), c.to(rows.device))
        row_lines, col_lines = G.synthesis.line_stage(ws, rows, cols)
        return G.synthesis.pixel_stage(ws, row_lines, col_lines), G.synthesis.pixel_stage_ref(ws, row_lines, col_lines)

@pytest.mark.parametrize('config', [ # Those of tests/test_networks_creps.py.
    dict(),
    dict(c_dim=4),
    dict(img_resolution=32, img_channels=1),
    dict(img_resolution=8, rank=4, bandwidth=3),
    dict(img_resolution=32, img_channels=4, biline_channels=12, num_fp16_res=2, architecture='orig'),
])
def test_fused_stage_equals_the_layers(kernel, config):
    G = tiny_generator(**config)
    rows, cols = torch.linspace(0, 1, 7), torch.linspace(-0.5, 1.5, 37) # Odd sizes, beyond the frame.
    fused, reference = fused_and_reference(G, 3, rows, cols)
    assert_close(fused, reference)

def test_shipped_model_at_an_odd_size(kernel):
    G, _names = legacy.load_generator(legacy.DEFAULT_NETWORK)
    fused, reference = fused_and_reference(G.eval(), 2, torch.linspace(0.1, 0.9, 45), torch.linspace(-0.2, 1.2, 53))
    assert_close(fused, reference)

@pytest.mark.parametrize('tile', [5, 16, 33])
def test_tiles_equal_the_full_frame(kernel, tile):
    G = tiny_generator()
    with torch.no_grad():
        ws = G.mapping(torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(3)), None)
        rows, cols = render.lines_for_scale(G.img_resolution, 2.2)
        full = render.render(G.synthesis, ws, rows, cols)
        tiled = render.render(G.synthesis, ws, rows, cols, tile=tile)
    assert_close(tiled, full)

def test_cuda_fused_stage_equals_the_layers(cuda_kernel):
    G = tiny_generator(img_resolution=32, biline_channels=32).cuda()
    fused, reference = fused_and_reference(G, 2, torch.linspace(0, 1, 41).cuda(), torch.linspace(-0.5, 1.5, 70).cuda())
    assert_close(fused, reference)

def test_training_takes_the_layers():
    # With gradients wanted the stage runs layer by layer (the kernel has no backward pass).
    G = tiny_generator().requires_grad_(True)
    img = G(torch.randn([2, G.z_dim]), None)
    assert img.requires_grad
    img.square().sum().backward()
    assert G.synthesis.decoder_last[0].weight.grad.abs().sum() > 0

#----------------------------------------------------------------------------
