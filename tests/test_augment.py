"""training.augment (ADA pipeline, presets, p controller) and
torch_utils.ops.grid_sample_gradfix."""

import math
import pickle

import numpy as np
import pytest
import torch

from torch_utils import persistence
from torch_utils.ops import grid_sample_gradfix
from training import augment

GROUPS = ['blit', 'geom', 'color', 'filter', 'noise', 'cutout']

def _images(n=4, c=3, h=16, w=16, dtype=torch.float32, seed=123):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand([n, c, h, w], generator=g, dtype=dtype) * 2 - 1)

def _blob(h, w, c=3, cx=12.3, cy=18.7, sigma=4.0):
    """A smooth image, for checks of the resampled transforms."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing='ij')
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))[None, None].repeat(1, c, 1, 1)

#----------------------------------------------------------------------------
# Presets and construction.

def test_presets():
    assert set(augment.AUGMENT_PRESETS) == {'blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc'}
    assert augment.AUGMENT_PRESETS['bgc'] == dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
        brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    assert augment.AUGMENT_PRESETS['bgcfnc'] == dict(augment.AUGMENT_PRESETS['bgc'], imgfilter=1, noise=1, cutout=1)
    for kwargs in augment.AUGMENT_PRESETS.values():
        augment.AugmentPipe(**kwargs)

def test_defaults_and_buffers():
    pipe = augment.AugmentPipe()
    assert (pipe.xint_max, pipe.scale_std, pipe.rotate_max, pipe.aniso_std, pipe.xfrac_std) == (0.125, 0.2, 1, 0.2, 0.125)
    assert (pipe.brightness_std, pipe.contrast_std, pipe.hue_max, pipe.saturation_std) == (0.2, 0.5, 1, 1)
    assert (pipe.imgfilter_bands, pipe.imgfilter_std, pipe.noise_std, pipe.cutout_size) == ([1, 1, 1, 1], 1, 0.1, 0.5)
    state = pipe.state_dict()
    assert state['p'].shape == () and float(state['p']) == 1
    assert set(state) == {'p', 'Hz_geom', 'Hz_fbank'}
    with pytest.raises(ValueError):
        augment.AugmentPipe(imgfilter=1, imgfilter_bands=[1, 1])
    with pytest.raises(ValueError):
        pipe(torch.zeros(3, 8, 8))

def test_filters():
    # The resampling lowpass is orthogonal: unit energy, orthogonal to its even shifts.
    h = np.asarray(augment.wavelets['sym6'])
    assert h.sum() == pytest.approx(math.sqrt(2))
    for k in range(6):
        assert np.dot(h[:h.size - 2 * k], h[2 * k:]) == pytest.approx(float(k == 0), abs=1e-9)
    # The band filters are symmetric and add up to a unit impulse.
    bank = augment.AugmentPipe().Hz_fbank.numpy().astype(np.float64)
    assert bank.shape == (4, 43)
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-7)
    impulse = np.zeros(43); impulse[21] = 1
    np.testing.assert_allclose(bank.sum(axis=0), impulse, atol=1e-6)

#----------------------------------------------------------------------------
# Behaviour of the pipeline.

@pytest.mark.parametrize('preset', list(augment.AUGMENT_PRESETS))
def test_p_zero_is_identity(preset):
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS[preset])
    pipe.p.zero_()
    x = _images()
    assert torch.equal(pipe(x), x)

@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('group', GROUPS)
def test_each_group_changes_images(group, channels):
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS[group])
    pipe.p.fill_(1)
    x = _images(c=channels, h=16, w=12)
    torch.manual_seed(0)
    y = pipe(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert (y - x).abs().amax(dim=(1, 2, 3)).gt(1e-3).sum() >= 2 # Most images change.

@pytest.mark.parametrize('channels', [1, 3, 4])
def test_full_pipeline_shapes_and_dtypes(channels):
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS['bgcfnc'])
    for dtype in (torch.float32, torch.float64):
        for h, w in [(16, 16), (12, 17), (5, 4)]:
            x = _images(n=3, c=channels, h=h, w=w, dtype=dtype)
            for debug_percentile in (None, 0.2, 0.7):
                y = pipe(x, debug_percentile=debug_percentile)
                assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()

def test_determinism():
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS['bgcfnc'])
    pipe.p.fill_(0.7)
    x = _images()
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(pipe(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])

def test_debug_percentile():
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS['bgcf'])
    pipe.p.zero_() # The debug mode ignores p.
    x = _images()
    for q in (0, 0.1, 0.5, 0.8, 1):
        torch.manual_seed(0)
        a = pipe(x, debug_percentile=q)
        torch.manual_seed(1)
        b = pipe(x, debug_percentile=q)
        assert torch.equal(a, b) # No randomness left without noise.
        assert torch.isfinite(a).all()
        # Every image gets the same transformation.
        assert torch.allclose(pipe(x[:1].expand(3, -1, -1, -1), debug_percentile=q), a[:1].expand(3, -1, -1, -1), atol=1e-5)
    assert not torch.allclose(pipe(x, debug_percentile=0.8), x)
    noisy = augment.AugmentPipe(noise=1)
    assert torch.isfinite(noisy(x, debug_percentile=0.9)).all()

def test_blits_are_exact():
    x = _images(h=16, w=16)
    flip = augment.AugmentPipe(xflip=1)
    assert torch.equal(flip(x, debug_percentile=0.75), x.flip(3))
    assert torch.equal(flip(x, debug_percentile=0.25), x)
    rot = augment.AugmentPipe(rotate90=1)
    for k in range(4):
        assert torch.equal(rot(x, debug_percentile=(k + 0.5) / 4), torch.rot90(x, k, dims=[2, 3]))
    # Integer translation by round(0.125 * 16) = 2 pixels right and down;
    # the pixels shifted in are mirrored.
    shift = augment.AugmentPipe(xint=1)
    y = shift(x, debug_percentile=1)
    assert torch.equal(y[:, :, 2:, 2:], x[:, :, :-2, :-2])
    mirror = torch.tensor([2, 1] + list(range(14)))
    assert torch.equal(y, x[:, :, mirror][:, :, :, mirror])
    # Random flips with p = 1 flip about half of the images, each one exactly.
    flip.p.fill_(1)
    torch.manual_seed(0)
    y = flip(x)
    for i in range(len(x)):
        assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(2))

def test_probabilities():
    # Each augmentation hits an image with probability p * multiplier.
    x = torch.ones([4000, 1, 4, 4])
    x[:, :, :, :2] = -1 # Left half dark: a flip is visible.
    torch.manual_seed(0)
    pipe = augment.AugmentPipe(xflip=0.5)
    pipe.p.fill_(0.8)
    flipped = (pipe(x)[:, 0, 0, 0] > 0).float().mean().item()
    assert flipped == pytest.approx(0.8 * 0.5 / 2, abs=0.03) # A chosen image is flipped with probability 1/2.
    pipe = augment.AugmentPipe(cutout=1)
    pipe.p.fill_(0.3)
    cut = (pipe(x) == 0).flatten(1).any(dim=1).float().mean().item()
    assert cut == pytest.approx(0.3, abs=0.03)

def test_resampling_matches_blits():
    # With the general transformations enabled but set to the identity
    # (scale_std = 0), the blits go through the filtered resampling path;
    # the result must still be the blit.
    x = _images(n=2, h=16, w=20)
    for kwargs in [dict(xflip=1), dict(xint=1), dict(xflip=1, rotate90=1, xint=1)]:
        exact = augment.AugmentPipe(**kwargs)
        resampled = augment.AugmentPipe(**kwargs, scale=1, scale_std=0)
        for q in (0.1, 0.3, 0.6, 0.95):
            torch.testing.assert_close(resampled(x, debug_percentile=q), exact(x, debug_percentile=q), atol=1e-4, rtol=0)

def test_general_geometry():
    x = _blob(32, 32)
    # A rotation by 90 degrees resampled vs. the exact quarter turn (same sense).
    rotated = augment.AugmentPipe(rotate=1)(x, debug_percentile=0.75) # theta = (2 * 0.75 - 1) * pi
    torch.testing.assert_close(rotated, augment.AugmentPipe(rotate90=1)(x, debug_percentile=0.3), atol=0.03, rtol=0)
    # Isotropic 2x zoom about the center.
    q = 0.8
    std = 1 / torch.erfinv(torch.tensor(2 * q - 1)).item() # Makes the debug scale exp2(1) = 2.
    zoomed = augment.AugmentPipe(scale=1, scale_std=std)(x, debug_percentile=q)
    c = 15.5
    expected = _blob(32, 32, cx=(12.3 - c) * 2 + c, cy=(18.7 - c) * 2 + c, sigma=8.0)
    torch.testing.assert_close(zoomed, expected, atol=0.02, rtol=0)

def test_color():
    x = _images(c=3)
    gray = x[:, :1]
    q = 0.8
    b = torch.erfinv(torch.tensor(2 * q - 1)).item() * 0.2
    torch.testing.assert_close(augment.AugmentPipe(brightness=1)(x, debug_percentile=q), x + b)
    torch.testing.assert_close(augment.AugmentPipe(brightness=1)(gray, debug_percentile=q), gray + b)
    # Luma flip of a gray image is negation; hue and saturation leave gray alone.
    torch.testing.assert_close(augment.AugmentPipe(lumaflip=1)(gray, debug_percentile=0.75), -gray)
    torch.testing.assert_close(augment.AugmentPipe(hue=1, saturation=1)(gray, debug_percentile=0.9), gray)
    torch.testing.assert_close(augment.AugmentPipe(hue=1, saturation=1)(gray.expand(-1, 3, -1, -1), debug_percentile=0.9),
        gray.expand(-1, 3, -1, -1), atol=1e-5, rtol=0)
    # Hue rotation keeps the gray component; saturation scales the rest.
    hued = augment.AugmentPipe(hue=1)(x, debug_percentile=0.7)
    torch.testing.assert_close(hued.mean(dim=1), x.mean(dim=1), atol=1e-5, rtol=0)
    assert not torch.allclose(hued, x, atol=1e-2)
    # A 1-channel image is augmented as the gray RGB image it stands for.
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS['bgcf'])
    for q in (0.2, 0.7):
        torch.testing.assert_close(pipe(gray, debug_percentile=q), pipe(gray.expand(-1, 3, -1, -1), debug_percentile=q).mean(dim=1, keepdim=True),
            atol=1e-5, rtol=0)
    # RGBA: the alpha channel is left alone by the color transforms.
    rgba = _images(c=4)
    y = augment.AugmentPipe(**augment.AUGMENT_PRESETS['color'])(rgba, debug_percentile=0.8)
    assert torch.equal(y[:, 3], rgba[:, 3])
    torch.testing.assert_close(y[:, :3], augment.AugmentPipe(**augment.AUGMENT_PRESETS['color'])(rgba[:, :3], debug_percentile=0.8))
    with pytest.raises(ValueError):
        augment.AugmentPipe(brightness=1)(_images(c=2), debug_percentile=0.8)
    augment.AugmentPipe(**augment.AUGMENT_PRESETS['bg'])(_images(c=2), debug_percentile=0.8) # No color: any channels.

def test_double_backward_through_bgc():
    # R1 through the augmentation: the gradient of D(augment(x)) w.r.t. x
    # with create_graph, then its squared norm backpropagated into D's weights.
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS['bgc'])
    pipe.p.fill_(1)
    x = _images(n=2, h=16, w=16, dtype=torch.float64).requires_grad_(True)
    w = torch.randn([3, 16, 16], dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def penalty(w, create_graph):
        torch.manual_seed(7) # The same augmentation every call.
        logits = torch.tanh(pipe(x) * w).sum(dim=(1, 2, 3))
        grad, = torch.autograd.grad(logits.sum(), x, create_graph=create_graph)
        return grad.square().sum()

    w_param = w.clone().requires_grad_(True)
    penalty(w_param, create_graph=True).backward()
    assert w_param.grad is not None and torch.isfinite(w_param.grad).all() and w_param.grad.abs().sum() > 0
    # Central differences of the penalty along a few weights.
    eps = 1e-6
    for index in [(0, 3, 4), (1, 8, 8), (2, 15, 0)]:
        e = torch.zeros_like(w); e[index] = eps
        numeric = (penalty(w + e, False) - penalty(w - e, False)) / (2 * eps)
        assert w_param.grad[index].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)

def test_pickle():
    pipe = augment.AugmentPipe(**augment.AUGMENT_PRESETS['bgcfnc'], xint_max=0.25)
    pipe.p.fill_(0.42)
    assert persistence.is_persistent(pipe)
    copy = pickle.loads(pickle.dumps(pipe))
    assert persistence.is_persistent(copy)
    assert float(copy.p) == pytest.approx(0.42) and copy.xint_max == 0.25
    assert copy.init_kwargs == dict(augment.AUGMENT_PRESETS['bgcfnc'], xint_max=0.25)
    x = _images()
    torch.manual_seed(3); a = pipe(x)
    torch.manual_seed(3); b = copy(x)
    assert torch.equal(a, b)

#----------------------------------------------------------------------------
# The ADA controller.

def test_adjust_p_direction_and_clamp():
    step = 64 * 4 / (500 * 1000)
    assert augment.adjust_p(0.5, sign_mean=0.8, target=0.6, batch_size_images=64, interval_batches=4, ada_kimg=500) == pytest.approx(0.5 + step)
    assert augment.adjust_p(0.5, sign_mean=0.2, target=0.6, batch_size_images=64, interval_batches=4, ada_kimg=500) == pytest.approx(0.5 - step)
    assert augment.adjust_p(0.0, sign_mean=-1, target=0.6, batch_size_images=64, interval_batches=4, ada_kimg=500) == 0
    assert augment.adjust_p(0.3, sign_mean=float('nan'), target=0.6, batch_size_images=64, interval_batches=4, ada_kimg=500) == 0.3
    p = torch.tensor(0.001)
    p = augment.adjust_p(p, sign_mean=torch.tensor(0.1), target=0.6, batch_size_images=64, interval_batches=4, ada_kimg=100)
    assert isinstance(p, torch.Tensor) and float(p) == 0
    with pytest.raises(ValueError):
        augment.adjust_p(0.5, 0.5, 0.6, 64, 4, 0)

def test_adjust_p_converges():
    # Augmentation makes D less sure of the reals: r_t falls as p rises.
    # Equilibrium where 0.9 - p = target, i.e. p = 0.3.
    p, history = 0.0, []
    step = 32 * 4 / (10 * 1000)
    for _ in range(400):
        p = augment.adjust_p(p, sign_mean=0.9 - p, target=0.6, batch_size_images=32, interval_batches=4, ada_kimg=10)
        assert p >= 0
        history.append(p)
    assert all(abs(q - 0.3) <= step + 1e-9 for q in history[-100:])
    assert np.mean(history[-100:]) == pytest.approx(0.3, abs=step)

#----------------------------------------------------------------------------
# grid_sample_gradfix.

def _grid(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand([n, h, w, 2], generator=g, dtype=torch.float64) * 2.4 - 1.2 # Partly outside: zeros padding.

def test_grid_sample_matches_torch():
    x = _images(n=2, c=3, h=5, w=7, dtype=torch.float64)
    grid = _grid(2, 4, 6)
    ref = torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    assert torch.equal(grid_sample_gradfix.grid_sample(x, grid), ref)
    assert torch.equal(grid_sample_gradfix.grid_sample(x.requires_grad_(True), grid), ref)

def test_grid_sample_gradcheck():
    x = _images(n=2, c=2, h=4, w=5, dtype=torch.float64).requires_grad_(True)
    grid = _grid(2, 3, 4)
    fn = lambda x: grid_sample_gradfix.grid_sample(x, grid)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    # First-order gradients w.r.t. the grid (away from the kinks at pixel centers) are PyTorch's.
    g = grid.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, g: grid_sample_gradfix.grid_sample(x, g), (x, g))

def test_grid_sample_double_backward_matches_torch():
    x = _images(n=2, c=3, h=6, w=6, dtype=torch.float64).requires_grad_(True)
    grid = _grid(2, 5, 5)
    w = torch.randn([2, 3, 5, 5], dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    results = []
    for sample in (grid_sample_gradfix.grid_sample, lambda x, g: torch.nn.functional.grid_sample(x, g, align_corners=False)):
        grad_x, = torch.autograd.grad(torch.tanh(sample(x, grid) * w).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(grad_x.square().sum(), [x, w]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)

def test_grid_sample_grid_second_order_raises():
    x = _images(n=1, c=1, h=4, w=4, dtype=torch.float64).requires_grad_(True)
    grid = _grid(1, 3, 3).requires_grad_(True)
    grad_x, = torch.autograd.grad(grid_sample_gradfix.grid_sample(x, grid).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='grid'):
        grad_x.sum().backward()

#----------------------------------------------------------------------------
