"""Equivariance metrics: the resampling operators against analytic band-limited
images, the metric on exactly equivariant and on frame-bound toy generators
(StyleGAN3-style input transform and CREPS-style coordinate lines), a real tiny
CREPS generator, and the clear errors."""

import math

import pytest
import torch

from metrics import equivariance as eq
from metrics import metric_utils
from torch_utils import render

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

#----------------------------------------------------------------------------
# A band-limited random field: a sum of plane waves whose frequencies (in cycles
# per image side) stay below a quarter of the sampling rate in every direction.

class Waves(torch.nn.Module):
    def __init__(self, resolution, num_waves=12, max_cycles_per_pixel=0.15, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        direction = torch.randn([num_waves, 2], generator=gen, dtype=torch.float64)
        radius = torch.rand([num_waves, 1], generator=gen, dtype=torch.float64) * max_cycles_per_pixel * resolution
        self.register_buffer('freqs', direction / direction.norm(dim=1, keepdim=True) * radius)
        self.register_buffer('phases', torch.rand([num_waves], generator=gen, dtype=torch.float64))

    def forward(self, x, y):
        """Field at points (x, y) in image sides, any matching shapes; [num_waves, ...] summands."""
        f = self.freqs.reshape([-1, 2] + [1] * x.ndim)
        return torch.sin(2 * math.pi * (f[:, 0] * x + f[:, 1] * y + self.phases.reshape([-1] + [1] * x.ndim)))

def pixel_grid(h, w):
    py, px = torch.meshgrid(eq._pixel_centres(h), eq._pixel_centres(w), indexing='ij')
    return px, py

def analytic_image(waves, h, w, content_mat=None):
    """The field sampled at the pixel centres after moving its content by content_mat: [1, 1, H, W]."""
    px, py = pixel_grid(h, w)
    if content_mat is not None:
        inv = torch.linalg.inv(content_mat)
        px, py = inv[0, 0] * px + inv[0, 1] * py + inv[0, 2], inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]
    return waves(px, py).mean(0)[None, None].to(torch.float32)

def masked_psnr(a, b, mask):
    return eq.psnr_from_sums([((a - b).square() * mask).sum(), mask.sum()])[0]

#----------------------------------------------------------------------------
# Operators.

def test_integer_translate_moves_content_right_and_down():
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    out, mask = eq.integer_translate(x, 2, -1)
    assert torch.equal(out[0, 0, 0:3, 2:5], x[0, 0, 1:4, 0:3])
    assert mask.sum() == 9 and torch.equal(mask[0, 0, 0:3, 2:5], torch.ones(3, 3))
    assert eq.integer_translate(x, 5, 0)[1].sum() == 0

def test_fractional_translate_of_whole_pixels_is_the_integer_shift():
    x = torch.randn(2, 3, 12, 10)
    ref, ref_mask = eq.integer_translate(x, 3, -2)
    out, mask = eq.fractional_translate(x, 3, -2)
    assert (mask <= ref_mask).all() and mask.sum() > 0
    assert torch.allclose(out * mask, ref * mask, atol=1e-6)

@pytest.mark.parametrize('t', [(0.3, -1.7), (2.5, 0.25), (-3.9, 4.1)])
def test_fractional_translate_matches_the_shifted_field(t):
    waves = Waves(32)
    out, mask = eq.fractional_translate(analytic_image(waves, 32, 32), *t)
    target = analytic_image(waves, 32, 32, eq.translation_matrix(t[0] / 32, t[1] / 32))
    assert masked_psnr(out, target, mask) > 50

@pytest.mark.parametrize('angle', [0.3, -2.0, math.pi / 2])
def test_rotate_matches_the_rotated_field(angle):
    waves = Waves(32)
    out, mask = eq.rotate(analytic_image(waves, 32, 32), angle)
    target = analytic_image(waves, 32, 32, eq.rotation_matrix(angle))
    assert mask.sum() > 0.3 * mask.numel()
    assert masked_psnr(out, target, mask) > 55

def test_rotate_direction_and_quarter_turn():
    # Content moves from +x towards +y (right towards down): a quarter turn is rot90 clockwise on screen.
    # White noise is not band-limited, so the band-limiting filter changes it slightly.
    x = torch.randn(1, 2, 16, 16)
    out, mask = eq.rotate(x, math.pi / 2)
    assert ((out - torch.rot90(x, k=-1, dims=[2, 3])) * mask).abs().max() < 0.05
    assert ((out - torch.rot90(x, k=1, dims=[2, 3])) * mask).abs().max() > 1
    assert ((eq.rotate(x, 0.0)[0] - x) * mask).abs().max() < 0.05

def test_bandlimit_filter_keeps_constants():
    f = eq.affine_bandlimit_filter(eq.rotation_matrix(0.7), up=4)
    assert f.shape == (47, 47)
    assert torch.allclose(f.sum(), torch.tensor(16.0), atol=1e-4) # One per polyphase component.
    x = torch.full([1, 1, 20, 20], 0.3)
    out, mask = eq.rotate(x, 0.7)
    assert torch.allclose(out[mask > 0], torch.tensor(0.3), atol=1e-5)
    out, mask = eq.pseudo_rotate(x, 0.7)
    assert torch.allclose(out[mask > 0], torch.tensor(0.3), atol=1e-5)

#----------------------------------------------------------------------------
# Toy generators with the duck-typed interface: mapping(z, c) -> ws [N, 1, z_dim],
# the amplitude of each wave taken from ws.

class ToyMapping(torch.nn.Module):
    def forward(self, z, c, **_kwargs):
        return z.unsqueeze(1)

class ToyGenerator(torch.nn.Module):
    def __init__(self, synthesis, z_dim=12, resolution=32):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, 0, z_dim, resolution, 2
        self.mapping, self.synthesis = ToyMapping(), synthesis

    def forward(self, z, c, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c), **synthesis_kwargs)

def wave_image(waves, ws, x, y):
    """[N, 2, ...]: two channels mixing the waves with weights from ws."""
    s = waves(x, y).to(torch.float32) # [K, ...]
    a = ws[:, 0, :s.shape[0]] / math.sqrt(s.shape[0])
    return torch.stack([torch.einsum('nk,k...->n...', a, s), torch.einsum('nk,k...->n...', a.flip(1), s)], dim=1)

class ToyInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('transform', torch.eye(3))

class TransformSynthesis(torch.nn.Module):
    """StyleGAN3-like: the output at pixel centre p is a band-limited function of transform @ p;
    frame_bound adds a pattern tied to the pixel grid, which no transform moves."""
    def __init__(self, resolution=32, frame_bound=False):
        super().__init__()
        self.input, self.waves, self.resolution, self.frame_bound = ToyInput(), Waves(resolution), resolution, frame_bound

    def forward(self, ws, noise_mode='random', **_kwargs):
        px, py = pixel_grid(self.resolution, self.resolution)
        m = self.input.transform.to(torch.float64)
        img = wave_image(self.waves, ws, m[0, 0] * px + m[0, 1] * py + m[0, 2], m[1, 0] * px + m[1, 1] * py + m[1, 2])
        if self.frame_bound:
            img = img + torch.sin(2 * math.pi * 3 * px).to(torch.float32)
        return img

class LineSynthesis(torch.nn.Module):
    """CREPS-like: pixel (i, j) is a function of rows[i] and cols[j]; frame_bound adds a
    pattern tied to the array index instead of the coordinate."""
    def __init__(self, resolution=32, frame_bound=False):
        super().__init__()
        self.img_resolution, self.img_channels, self.frame_bound = resolution, 2, frame_bound
        self.waves = Waves(resolution)

    def line_stage(self, ws, rows, cols, precision='fp32'):
        return [rows], [cols]

    def pixel_stage(self, ws, row_lines, col_lines, precision='fp32'):
        y, x = torch.meshgrid(row_lines[0].to(torch.float64), col_lines[0].to(torch.float64), indexing='ij')
        img = wave_image(self.waves, ws, x, y)
        if self.frame_bound:
            j = torch.arange(x.shape[1], dtype=torch.float32)
            img = img + torch.sin(2 * math.pi * j / x.shape[1] * 2)
        return img

    def forward(self, ws, rows=None, cols=None, noise_mode=None, **_kwargs):
        if rows is None or cols is None:
            rows, cols = render.lines_for_scale(self.img_resolution, 1)
        return self.pixel_stage(ws, *self.line_stage(ws, rows, cols))

class PlainSynthesis(torch.nn.Module):
    """StyleGAN2-like: nothing to transform."""
    def forward(self, ws, **_kwargs):
        return ws[:, 0, :4].reshape(-1, 1, 2, 2)

def options(G, **kwargs):
    return metric_utils.MetricOptions(G=G, device=torch.device('cpu'), **kwargs)

def eq_metrics(G, num_samples=6, batch_size=3, **flags):
    return eq.compute_equivariance_metrics(options(G), num_samples=num_samples, batch_size=batch_size, **flags)

#----------------------------------------------------------------------------
# The metric.

def test_transform_generator_equivariant_scores_high():
    G = ToyGenerator(TransformSynthesis())
    eqt_int, eqt_frac, eqr = eq_metrics(G, compute_eqt_int=True, compute_eqt_frac=True, compute_eqr=True)
    assert eqt_int > 90 # Exact up to float rounding.
    assert eqt_frac > 50 and eqr > 50 # Limited by the Lanczos resampling of the reference.
    assert torch.equal(G.synthesis.input.transform, torch.eye(3)) # Untouched.

def test_transform_generator_frame_bound_scores_low():
    G = ToyGenerator(TransformSynthesis(frame_bound=True))
    psnrs = eq_metrics(G, compute_eqt_int=True, compute_eqt_frac=True, compute_eqr=True)
    assert all(p < 25 for p in psnrs), psnrs

def test_transform_buffer_is_restored_after_each_render():
    G = ToyGenerator(TransformSynthesis())
    render_fn = eq.make_renderer(G, {}, ['eqt_int', 'eqr'])
    G.synthesis.input.transform.copy_(torch.diag(torch.tensor([2.0, 2.0, 1.0])))
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    render_fn(ws, eq.rotation_matrix(0.5))
    assert torch.equal(G.synthesis.input.transform, torch.diag(torch.tensor([2.0, 2.0, 1.0])))

def test_line_generator_translation_sign_and_units():
    # A render translated by (3, -2) pixels equals the untranslated render shifted right 3, up 2.
    G = ToyGenerator(LineSynthesis())
    render_fn = eq.make_renderer(G, {}, ['eqt_int'])
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    ref, mask = eq.integer_translate(render_fn(ws), 3, -2)
    img = render_fn(ws, eq.translation_matrix(3 / 32, -2 / 32))
    assert torch.allclose(img * mask, ref * mask, atol=1e-5)

def test_line_generator_equivariant_scores_high_and_frame_bound_low():
    eqt_int, eqt_frac = eq_metrics(ToyGenerator(LineSynthesis()), compute_eqt_int=True, compute_eqt_frac=True)
    assert eqt_int > 90 and eqt_frac > 50
    eqt_int, eqt_frac = eq_metrics(ToyGenerator(LineSynthesis(frame_bound=True)), compute_eqt_int=True, compute_eqt_frac=True)
    assert eqt_int < 25 and eqt_frac < 25

def test_one_metric_returns_a_float_and_results_are_reproducible():
    G = ToyGenerator(LineSynthesis())
    a = eq_metrics(G, num_samples=5, compute_eqt_frac=True)
    b = eq_metrics(G, num_samples=5, compute_eqt_frac=True)
    assert isinstance(a, float) and a == b

def test_creps_generator_gives_finite_translation_psnrs():
    from training.networks_creps import Generator # Tests may import training/; metrics/ never does.
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=32, biline_channels=8)
    eqt_int, eqt_frac = eq_metrics(G, num_samples=4, batch_size=2, compute_eqt_int=True, compute_eqt_frac=True)
    assert math.isfinite(eqt_int) and math.isfinite(eqt_frac)
    assert eqt_int > 60 # Coordinate lines translate exactly; only float rounding remains.
    with pytest.raises(ValueError, match='EQ-R'):
        eq_metrics(G, compute_eqr=True)

def test_rotation_of_a_line_generator_is_a_clear_error():
    with pytest.raises(ValueError, match=r'EQ-R \(rotation\) is undefined.*row and column') as info:
        eq_metrics(ToyGenerator(LineSynthesis()), compute_eqt_int=True, compute_eqr=True)
    assert isinstance(info.value, metric_utils.MetricError) # The registry's one-line errors.

@pytest.mark.parametrize('flag', ['compute_eqt_int', 'compute_eqt_frac', 'compute_eqr'])
def test_generator_without_a_mechanism_is_a_clear_error(flag):
    with pytest.raises(ValueError, match='no continuous input to transform'):
        eq_metrics(ToyGenerator(PlainSynthesis()), **{flag: True})

def test_no_metric_asked_is_an_error():
    with pytest.raises(ValueError, match='at least one'):
        eq_metrics(ToyGenerator(LineSynthesis()))

#----------------------------------------------------------------------------
