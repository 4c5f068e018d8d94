"""filtered_lrelu against a direct composition written with numpy and scipy
(bias, zero insertion, padding, FIR filter, leaky ReLU times gain, clamp, FIR
filter, subsampling), in value and in first and second derivatives."""

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import filtered_lrelu

#----------------------------------------------------------------------------

def _quad(p):
    if np.isscalar(p):
        return p, p, p, p
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)

def _fir(img, f, flip_filter, gain):
    f = np.ones([1, 1]) if f is None else np.asarray(f, dtype=np.float64)
    f2 = np.outer(f, f) if f.ndim == 1 else f
    op = scipy.signal.correlate2d if flip_filter else scipy.signal.convolve2d
    return op(img, f2 * gain, mode='valid')

def naive_filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    px0, px1, py0, py1 = _quad(padding)
    if b is not None:
        x = x + np.asarray(b, dtype=np.float64).reshape(1, -1, 1, 1)
    out = []
    for img in x.reshape(n * c, h, w):
        u = np.zeros([h * up, w * up])
        u[::up, ::up] = img
        u = np.pad(u, [[max(py0, 0), max(py1, 0)], [max(px0, 0), max(px1, 0)]])
        u = u[max(-py0, 0):u.shape[0] - max(-py1, 0), max(-px0, 0):u.shape[1] - max(-px1, 0)]
        u = _fir(u, fu, flip_filter, up ** 2)
        u = np.where(u >= 0, u, u * slope) * gain
        if clamp is not None:
            u = np.clip(u, -clamp, clamp)
        u = _fir(u, fd, flip_filter, 1)[::down, ::down]
        out.append(u)
    return np.stack(out).reshape(n, c, *out[0].shape)

def _lowpass(taps, seed):
    f = np.random.RandomState(seed).rand(taps) + 0.5
    return torch.tensor(f / f.sum(), dtype=torch.float32)

CASES = [
    # fu_taps, fd_taps, radial_fd, up, down, padding, gain, slope, clamp, flip_filter
    (None, None, False, 1, 1, 0, np.sqrt(2), 0.2, None, False),
    (12, 12, False, 2, 2, [11, 10, 11, 10], np.sqrt(2), 0.2, 256, False),
    (8, 12, True, 2, 1, [3, 4, 5, 2], np.sqrt(2), 0.2, 0.5, True),
    (6, 8, False, 1, 2, 3, 1.0, 1.0, None, False),
    (12, None, False, 4, 1, [-2, 5, 1, -1], 0.7, 0.1, 1.0, True),
    (None, 4, True, 1, 2, [2, 1], np.sqrt(2), 0.2, None, False),
]

def _make(case, seed=0, dtype=torch.float64):
    fu_taps, fd_taps, radial, up, down, padding, gain, slope, clamp, flip_filter = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([2, 3, 7, 9], generator=gen, dtype=dtype)
    b = torch.randn([3], generator=gen, dtype=dtype)
    fu = None if fu_taps is None else _lowpass(fu_taps, seed + 1)
    fd = None if fd_taps is None else _lowpass(fd_taps, seed + 2)
    if radial and fd is not None:
        fd = torch.outer(fd, _lowpass(fd_taps, seed + 3))
    kwargs = dict(up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter)
    return x, b, fu, fd, kwargs

#----------------------------------------------------------------------------

@pytest.mark.parametrize('case', CASES)
def test_matches_direct_composition(case):
    x, b, fu, fd, kwargs = _make(case)
    y = filtered_lrelu.filtered_lrelu(x, fu=fu, fd=fd, b=b, **kwargs)
    ref = naive_filtered_lrelu(x.numpy(), fu if fu is None else fu.double().numpy(), fd if fd is None else fd.double().numpy(), b.numpy(), **kwargs)
    assert y.dtype == x.dtype
    assert y.shape == ref.shape
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-10)

def test_output_size_formula():
    x = torch.zeros([1, 2, 20, 36])
    fu, fd = _lowpass(12, 0), _lowpass(8, 1)
    y = filtered_lrelu.filtered_lrelu(x, fu=fu, fd=fd, up=2, down=2, padding=[1, 2, 3, 4])
    out_w = (36 * 2 + 3 - 11 - 7 + 1) // 2
    out_h = (20 * 2 + 7 - 11 - 7 + 1) // 2
    assert list(y.shape) == [1, 2, out_h, out_w]

def test_float32_and_default_impl():
    x, b, fu, fd, kwargs = _make(CASES[1], dtype=torch.float32)
    y = filtered_lrelu.filtered_lrelu(x, fu=fu, fd=fd, b=b, impl='auto', **kwargs)
    y_ref = filtered_lrelu.filtered_lrelu(x.double(), fu=fu, fd=fd, b=b.double(), impl='ref', **kwargs)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)

def test_bad_arguments():
    x = torch.zeros([1, 1, 4, 4])
    with pytest.raises(ValueError):
        filtered_lrelu.filtered_lrelu(x, impl='cuda')
    with pytest.raises(ValueError):
        filtered_lrelu.filtered_lrelu(x[0])
    with pytest.raises(ValueError):
        filtered_lrelu.filtered_lrelu(x, up=0)

@pytest.mark.parametrize('case', [CASES[1], CASES[2], CASES[4]])
def test_gradcheck(case):
    x, b, fu, fd, kwargs = _make(case, seed=3)
    kwargs['clamp'] = None if kwargs['clamp'] is None else 1e3 # Clamping's kink is not differentiable.
    fu = None if fu is None else fu.double()
    fd = None if fd is None else fd.double()
    x = x[:1, :2].clone().requires_grad_(True)
    b = b[:2].clone().requires_grad_(True)
    func = lambda x, b: filtered_lrelu.filtered_lrelu(x, fu=fu, fd=fd, b=b, **kwargs)
    assert torch.autograd.gradcheck(func, (x, b))
    assert torch.autograd.gradgradcheck(func, (x, b))

def test_double_backward_through_filters():
    # As in R1 / path length regularization: a gradient of a gradient.
    x, b, fu, fd, kwargs = _make(CASES[1], seed=5)
    x.requires_grad_(True)
    y = filtered_lrelu.filtered_lrelu(x, fu=fu.double(), fd=fd.double(), b=b, **kwargs)
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    assert gg.shape == x.shape and torch.isfinite(gg).all() and gg.abs().sum() > 0

#----------------------------------------------------------------------------
