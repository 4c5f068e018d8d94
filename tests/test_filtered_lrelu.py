"""filtered_lrelu against a direct composition written with numpy and scipy
(bias, zero insertion, padding, FIR filter, leaky ReLU times gain, clamp, FIR
filter, subsampling), in value and in first and second derivatives; the
kernels against the reference: the CPU kernels everywhere, which run the
per-pixel code of the CUDA kernels, and the CUDA kernels on GPU machines; and
the Python side of the kernel path, with reference computations standing in
for the kernels."""

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops import filtered_lrelu
from torch_utils.ops import upfirdn2d

from selfcheck import assert_dropped_after_one_warning, assert_passes_self_check, kernel_device_fixture
from test_upfirdn2d import ReferenceKernel

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

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
# The kernel path on CPU: reference computations stand in for the CUDA
# kernels, which tests what surrounds them (the filters' adjoints, the saved
# derivative of the activation, bias gradients, layouts) and the self-check.

class ReferenceFusedKernel:
    """A plugin whose bias_upsample_lrelu op is computed by reference ops, plus `error`."""
    def __init__(self, error=0.0):
        self.error = error

    def bias_upsample_lrelu(self, x, b, fu, up, px0, px1, py0, py1, flip, up_gain, slope, gain, clamp, write_grad): # pylint: disable=missing-function-docstring
        x = x if b is None else x + b.reshape(1, -1, 1, 1)
        v = upfirdn2d._upfirdn2d_ref(x, fu, up, up, 1, 1, px0, px1, py0, py1, flip, up_gain)
        dy_dv = torch.where(v > 0, 1.0, slope).to(v.dtype) * gain
        y = v * dy_dv
        if clamp >= 0:
            dy_dv = dy_dv * (y.abs() <= clamp)
            y = y.clamp(-clamp, clamp)
        layout = lambda t: t.contiguous(memory_format=bias_act._memory_format(x))
        return layout(y + self.error), (layout(dy_dv) if write_grad else x.new_empty([0]))

def _padding4(kwargs):
    return dict(kwargs, padding=upfirdn2d._parse_padding(kwargs['padding']))

@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('channels_last', [False, True])
def test_kernel_path_matches_ref(case, channels_last):
    x, b, fu, fd, kwargs = _make(case, seed=7)
    kwargs = _padding4(kwargs)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    b.requires_grad_(True)
    y = filtered_lrelu._filtered_lrelu_kernel(x, fu, fd, b, plugins=(ReferenceFusedKernel(), ReferenceKernel()), **kwargs)
    y_ref = filtered_lrelu._filtered_lrelu_ref(x, fu, fd, b, **kwargs)
    # The kernel path expands a separable fu to 2D in float32, which rounds.
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    dy = torch.randn(y.shape, dtype=y.dtype)
    torch.testing.assert_close(torch.autograd.grad(y, [x, b], dy), torch.autograd.grad(y_ref, [x, b], dy), rtol=1e-6, atol=1e-6)

@pytest.mark.parametrize('case', [CASES[1], CASES[2], CASES[4]])
def test_kernel_path_derivatives(case):
    # Second derivatives as well: the backward pass is made of differentiable kernel passes.
    x, b, fu, fd, kwargs = _make(case, seed=3)
    kwargs = _padding4(kwargs)
    kwargs['clamp'] = None if kwargs['clamp'] is None else 1e3
    x = x[:1, :2].clone().requires_grad_(True)
    b = b[:2].clone().requires_grad_(True)
    plugins = (ReferenceFusedKernel(), ReferenceKernel())
    func = lambda x, b: filtered_lrelu._filtered_lrelu_kernel(x, fu, fd, b, plugins=plugins, **kwargs)
    assert torch.autograd.gradcheck(func, (x, b))
    assert torch.autograd.gradgradcheck(func, (x, b))

def test_self_check_passes_correct_kernels(monkeypatch):
    monkeypatch.setattr(custom_ops, '_checked', {}) # Forgets the self-checks run so far (each runs once per process).
    assert_passes_self_check(lambda: filtered_lrelu._self_check((ReferenceFusedKernel(), ReferenceKernel()), torch.device('cpu')))

def test_wrong_kernel_falls_back_to_ref(monkeypatch):
    # A fused kernel that builds but computes wrong results: one warning naming the op, then the reference.
    monkeypatch.setattr(custom_ops, '_checked', {})
    monkeypatch.setattr(filtered_lrelu, '_plugins', {})
    monkeypatch.setattr(upfirdn2d, '_plugin', lambda device_type: ReferenceKernel())
    monkeypatch.setattr(custom_ops, 'try_get_plugin', lambda *args, **kwargs: ReferenceFusedKernel(error=1e-2))
    check = filtered_lrelu._self_check
    monkeypatch.setattr(filtered_lrelu, '_self_check', lambda plugins, device: check(plugins, torch.device('cpu')))
    assert_dropped_after_one_warning(lambda: filtered_lrelu._plugin('cpu'), 'filtered_lrelu (cpu)')

def test_resolve_impl_on_cpu():
    x = torch.zeros([1, 2, 4, 4])
    assert filtered_lrelu.resolve_impl(x) == 'ref' and filtered_lrelu.resolve_impl(x, None) == 'ref'
    with pytest.raises(ValueError, match="impl='cuda'"):
        filtered_lrelu.resolve_impl(x, 'cuda')

#----------------------------------------------------------------------------
# The kernels against the reference: the CPU kernels wherever a C++ compiler
# is, the CUDA kernels on GPU machines.

kernel_device = kernel_device_fixture(filtered_lrelu._plugin)

# The dtypes the kernels take, and their tolerance (see _compare_with_ref()).
# float64 is limited by the float32 taps of a separable fu expanded to 2D.
DTYPES = [(torch.float64, 1e-6), (torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 2e-2)]

def _compare_with_ref(x, b, fu, fd, dtype, tol, **kwargs):
    """The kernels in dtype against the reference in float64 on the same
    (dtype-rounded) inputs: the value within tol of its largest magnitude,
    the gradients with respect to x and b by the norm of their error. Where
    rounding puts a pixel on the other side of 0 or of the clamp, its gradient
    differs by a leaky ReLU's step (rare, but the large shapes have millions
    of pixels); one such pixel moves the norm by less than 1e-3."""
    gen = torch.Generator().manual_seed(0)
    x = x.to(dtype).detach().requires_grad_(True)
    b = b.to(dtype).detach().requires_grad_(True)
    y = filtered_lrelu.filtered_lrelu(x, fu, fd, b, impl=x.device.type, **kwargs)
    assert y.dtype == dtype and y.is_contiguous(memory_format=bias_act._memory_format(x))
    dy = torch.randn(y.shape, generator=gen).to(device=x.device, dtype=dtype)
    got = [y, *torch.autograd.grad(y, [x, b], dy)]
    x_ref = x.detach().double().requires_grad_(True)
    b_ref = b.detach().double().requires_grad_(True)
    y_ref = filtered_lrelu.filtered_lrelu(x_ref, fu, fd, b_ref, impl='ref', **kwargs)
    expected = [y_ref, *torch.autograd.grad(y_ref, [x_ref, b_ref], dy.double())]
    names = ['y'] if dtype == torch.bfloat16 else ['y', 'dx', 'db']
    for name, a, e in zip(names, got, expected):
        assert a.dtype == dtype and a.shape == e.shape, name
        if name == 'y':
            error, bound = (a.double() - e).abs().max().item(), tol * max(1, e.abs().max().item())
        else:
            error, bound = (a.double() - e).norm().item(), max(tol, 2e-3) * e.norm().item()
        assert error <= bound, (name, error, bound, kwargs)

def _random_cases(count):
    """CASES, then random filters, factors, paddings (some negative), gains, slopes and clamps."""
    rng = np.random.default_rng(0)
    cases = list(CASES)
    while len(cases) < count:
        up, down = (int(v) for v in rng.integers(1, 4, size=2))
        case = ([None, 4, 6, 12][rng.integers(4)], [None, 3, 8, 12][rng.integers(4)], bool(rng.integers(2)), up, down,
            [int(v) for v in rng.integers(-1, 12, size=4)], float(rng.choice([1, np.sqrt(2)])), float(rng.choice([0.2, 0, 1])),
            [None, 0.5, 256][rng.integers(3)], bool(rng.integers(2)))
        x, _, fu, fd, kwargs = _make(case)
        out_w, out_h = filtered_lrelu._output_size(x, fu, fd, up, down, upfirdn2d._parse_padding(kwargs['padding']))
        if out_w >= 1 and out_h >= 1:
            cases.append(case)
    return cases

@pytest.mark.parametrize('case', _random_cases(30))
def test_kernel_matches_ref(kernel_device, case):
    x, b, fu, fd, kwargs = _make(case)
    x, b = x.to(kernel_device), b.to(kernel_device)
    fu = None if fu is None else fu.to(kernel_device)
    fd = None if fd is None else fd.to(kernel_device)
    for channels_last in [False, True]:
        xl = x.to(memory_format=torch.channels_last) if channels_last else x
        for dtype, tol in DTYPES:
            _compare_with_ref(xl, b, fu, fd, dtype, tol, **kwargs)

@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('up, down, size', [(2, 2, 36), (1, 2, 52), (2, 1, 20), (4, 2, 16)])
def test_kernel_typical_shapes(kernel_device, channels_last, up, down, size):
    # Like StyleGAN3's layers: separable (or radial, 2D) lowpass filters of 6 taps per factor, wide margins, batches.
    gen = torch.Generator().manual_seed(up * 10 + down)
    fu = filtered_lrelu_filter(6 * up, gen)
    fd = torch.outer(filtered_lrelu_filter(6 * down, gen), filtered_lrelu_filter(6 * down, gen))
    x = torch.randn([4, 48, size, size], generator=gen).to(kernel_device)
    b = torch.randn([48], generator=gen).to(kernel_device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    p = 5 * up + (5 * up) // 2
    kwargs = dict(up=up, down=down, padding=[p, p - 1, p, p - 1], gain=np.sqrt(2), slope=0.2, clamp=256)
    for dtype, tol in DTYPES[1:3]:
        _compare_with_ref(x, b, fu.to(kernel_device), fd.to(kernel_device), dtype, tol, **kwargs)

def filtered_lrelu_filter(taps, gen):
    f = torch.rand([taps], generator=gen, dtype=torch.float64) + 0.5
    return (f / f.sum()).float()

def test_kernel_derivatives(kernel_device):
    # First and second derivatives, in float64; the reference's second derivatives are those of the filters.
    for case in [CASES[1], CASES[2], CASES[4]]:
        x, b, fu, fd, kwargs = _make(case, seed=3)
        kwargs['clamp'] = None if kwargs['clamp'] is None else 1e3 # Clamping's kink is not differentiable.
        x = x[:1, :2].to(kernel_device).requires_grad_(True)
        b = b[:2].to(kernel_device).requires_grad_(True)
        fu = None if fu is None else fu.to(kernel_device)
        fd = None if fd is None else fd.to(kernel_device)
        func = lambda x, b, fu=fu, fd=fd, kwargs=kwargs: filtered_lrelu.filtered_lrelu(x, fu, fd, b, impl=kernel_device, **kwargs)
        assert torch.autograd.gradcheck(func, (x, b))
        assert torch.autograd.gradgradcheck(func, (x, b))

def test_kernel_auto_choice(kernel_device):
    x = torch.randn([1, 2, 6, 6], device=kernel_device)
    fu = _lowpass(4, 0).to(kernel_device)
    auto = kernel_device if kernel_device in filtered_lrelu._auto_devices else 'ref'
    assert filtered_lrelu.resolve_impl(x) == auto and filtered_lrelu.resolve_impl(x, None, fu, fu) == auto
    assert filtered_lrelu.resolve_impl(x, kernel_device, fu, fu) == kernel_device
    assert filtered_lrelu.resolve_impl(x, 'ref') == 'ref'
    fu.requires_grad_(True) # The kernels give no gradient with respect to the filters: the reference does.
    assert filtered_lrelu.resolve_impl(x, 'auto', fu) == 'ref'
    with pytest.raises(ValueError, match=f"impl='{kernel_device}'"):
        filtered_lrelu.filtered_lrelu(x, fu, impl=kernel_device)

#----------------------------------------------------------------------------
