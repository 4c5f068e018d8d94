"""upfirdn2d and its wrappers, and conv2d_resample, against naive numpy
implementations, in value and in first and second derivatives; the kernels
against the reference: the CPU kernel everywhere, which runs the per-pixel
code of the CUDA kernel, and the CUDA kernel on GPU machines; and the Python
side of the kernel path, with the reference standing in for the kernel."""

import numpy as np
import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import upfirdn2d

from selfcheck import assert_dropped_after_one_warning, assert_passes_self_check, kernel_device_fixture

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

#----------------------------------------------------------------------------
# Naive numpy implementation, written from the definition: zero insertion,
# padding or cropping, correlation with the flipped filter as a sum of
# shifted copies, and subsampling.

def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)

def _quad(p):
    if np.isscalar(p):
        return p, p, p, p
    return (p[0], p[0], p[1], p[1]) if len(p) == 2 else tuple(p)

def naive_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    x = np.asarray(x, dtype=np.float64)
    f = np.ones([1, 1]) if f is None else np.asarray(f, dtype=np.float64)
    f2 = np.outer(f, f) if f.ndim == 1 else f
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _quad(padding)
    n, c, h, w = x.shape

    u = np.zeros([n, c, h * upy, w * upx])
    u[:, :, ::upy, ::upx] = x
    u = np.pad(u, [(0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    u = u[:, :, max(-py0, 0) : u.shape[2] - max(-py1, 0), max(-px0, 0) : u.shape[3] - max(-px1, 0)]

    k = f2 if flip_filter else f2[::-1, ::-1]
    fh, fw = k.shape
    oh, ow = u.shape[2] - fh + 1, u.shape[3] - fw + 1
    y = np.zeros([n, c, oh, ow])
    for i in range(fh):
        for j in range(fw):
            y += k[i, j] * u[:, :, i : i + oh, j : j + ow]
    return y[:, :, ::downy, ::downx] * gain

#----------------------------------------------------------------------------

def _random_case(seed):
    """Random shapes, factors (per axis or not), paddings (some negative), filters and flags."""
    rng = np.random.default_rng(seed)
    separable = bool(rng.integers(2))
    fh = fw = int(rng.integers(1, 7))
    if not separable:
        fw = int(rng.integers(1, 7))
    f = rng.standard_normal([fw] if separable else [fh, fw]).astype(np.float32)
    up = [int(v) for v in rng.integers(1, 5, size=2)]
    down = [int(v) for v in rng.integers(1, 5, size=2)]
    h, w = (int(v) for v in rng.integers(1, 8, size=2))
    padding = [int(v) for v in rng.integers(-3, 6, size=4)]
    if seed % 3 == 0: # Scalar factors and [x, y] padding as well.
        up, down, padding = up[0], down[0], padding[1::2]
    # Grow the padding until the padded, upsampled image is at least as large as the filter.
    while True:
        px0, px1, py0, py1 = _quad(padding)
        upx, upy = _pair(up)
        if w * upx + px0 + px1 >= fw and h * upy + py0 + py1 >= fh:
            break
        padding = [p + 1 for p in padding]
    x = rng.standard_normal([int(rng.integers(1, 3)), int(rng.integers(1, 4)), h, w])
    return dict(x=x, f=f, up=up, down=down, padding=padding, flip_filter=bool(rng.integers(2)), gain=float(rng.choice([1, 0.5, 3])))

@pytest.mark.parametrize('seed', range(60))
def test_against_naive(seed):
    case = _random_case(seed)
    x, f = case.pop('x'), case.pop('f')
    expected = naive_upfirdn2d(x, f, **case)
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 1e-5)]:
        y = upfirdn2d.upfirdn2d(torch.as_tensor(x, dtype=dtype), torch.as_tensor(f), **case)
        assert y.dtype == dtype
        assert tuple(y.shape) == expected.shape
        np.testing.assert_allclose(y.double().numpy(), expected, rtol=tol, atol=tol * max(1, np.abs(expected).max()))

def test_separable_equals_outer_product():
    f = torch.randn([5], dtype=torch.float64)
    x = torch.randn([2, 3, 9, 7], dtype=torch.float64)
    for kwargs in [dict(up=2), dict(down=[2, 3], padding=[1, 2, -1, 3]), dict(up=[3, 1], down=2, gain=2.5, flip_filter=True)]:
        a = upfirdn2d.upfirdn2d(x, f, **kwargs)
        b = upfirdn2d.upfirdn2d(x, torch.outer(f, f), **kwargs)
        torch.testing.assert_close(a, b)

def test_identity_filter_and_cropping():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, None), x)
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, None, padding=[-1, -2, -2, 0]), x[:, :, 2:, 1:-2])
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, None, down=[2, 3], gain=2), x[:, :, ::3, ::2] * 2)
    y = upfirdn2d.upfirdn2d(x, None, up=2)
    assert y.shape == (2, 3, 10, 12)
    torch.testing.assert_close(y[:, :, ::2, ::2], x)
    assert y.sum() == x.sum()

def test_hand_computed_1d():
    # A 1-row image: upsample by 2, pad 1 on the left, convolve with [1, 2], keep every other output.
    x = torch.tensor([[[[1., 10., 100.]]]])
    f = torch.tensor([[1., 2.]])
    # Upsampled: 1 0 10 0 100 0; padded: 0 1 0 10 0 100 0; convolution with [1, 2]
    # (y[i] = 2*u[i] + 1*u[i+1]): 1 2 10 20 100 200; every other one: 1 10 100.
    y = upfirdn2d.upfirdn2d(x, f, up=[2, 1], down=[2, 1], padding=[1, 0, 0, 0])
    torch.testing.assert_close(y, torch.tensor([[[[1., 10., 100.]]]]))
    y = upfirdn2d.upfirdn2d(x, f, up=[2, 1], padding=[1, 0, 0, 0])
    torch.testing.assert_close(y, torch.tensor([[[[1., 2., 10., 20., 100., 200.]]]]))
    y = upfirdn2d.upfirdn2d(x, f, up=[2, 1], padding=[1, 0, 0, 0], flip_filter=True) # Correlation: u[i] + 2*u[i+1].
    torch.testing.assert_close(y, torch.tensor([[[[2., 1., 20., 10., 200., 100.]]]]))

#----------------------------------------------------------------------------

def test_setup_filter():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert upfirdn2d.setup_filter([1] * 8).shape == (8,) # 8 taps or more: separable by default.
    assert upfirdn2d.setup_filter([1] * 8, separable=False).shape == (8, 8)
    assert upfirdn2d.setup_filter([1, 2], separable=True).shape == (2,)
    torch.testing.assert_close(upfirdn2d.setup_filter(None), torch.ones([1, 1]))
    torch.testing.assert_close(upfirdn2d.setup_filter(3.0), torch.ones([1, 1]))
    torch.testing.assert_close(upfirdn2d.setup_filter(3.0, normalize=False), torch.full([1, 1], 9.0))
    torch.testing.assert_close(upfirdn2d.setup_filter([1., 2.], normalize=False, flip_filter=True, gain=4),
        torch.tensor([[4., 2.], [2., 1.]]) * 4)
    sep = upfirdn2d.setup_filter(np.arange(1, 9), normalize=False, gain=4)
    torch.testing.assert_close(sep, torch.arange(1., 9.) * 2) # sqrt(gain) per pass.
    two_d = upfirdn2d.setup_filter(np.arange(6.).reshape(2, 3) + 1)
    assert two_d.shape == (2, 3) and abs(two_d.sum().item() - 1) < 1e-6
    src = torch.tensor([1., 3., 3., 1.])
    upfirdn2d.setup_filter(src)
    torch.testing.assert_close(src, torch.tensor([1., 3., 3., 1.])) # Not modified in place.
    with pytest.raises(ValueError):
        upfirdn2d.setup_filter(torch.ones([2, 2]), separable=True)

@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 2, 1], [1] * 8, [1, 5, 10, 10, 5, 1]])
@pytest.mark.parametrize('factor', [2, [2, 3], 4])
def test_wrappers(taps, factor):
    f = upfirdn2d.setup_filter(taps)
    fx, fy = (factor, factor) if isinstance(factor, int) else factor
    x = torch.randn([2, 3, 12, 12], dtype=torch.float64)
    fn = f.numpy()

    y = upfirdn2d.filter2d(x, f)
    assert y.shape == x.shape
    fw = fn.shape[-1]
    np.testing.assert_allclose(y.numpy(), naive_upfirdn2d(x.numpy(), fn, padding=[fw // 2, (fw - 1) // 2] * 2), atol=1e-12)
    assert upfirdn2d.filter2d(x, f, padding=[1, -1, 2, 0]).shape == (2, 3, 14, 12)

    y = upfirdn2d.upsample2d(x, f, up=factor)
    assert y.shape == (2, 3, 12 * fy, 12 * fx)
    p = [(fw + fx - 1) // 2, (fw - fx) // 2, (fw + fy - 1) // 2, (fw - fy) // 2]
    np.testing.assert_allclose(y.numpy(), naive_upfirdn2d(x.numpy(), fn, up=factor, padding=p, gain=fx * fy), atol=1e-12)

    y = upfirdn2d.downsample2d(x, f, down=factor, padding=[1, 2], gain=0.5)
    assert y.shape == (2, 3, (12 + 4) // fy, (12 + 2) // fx)
    p = [1 + (fw - fx + 1) // 2, 1 + (fw - fx) // 2, 2 + (fw - fy + 1) // 2, 2 + (fw - fy) // 2]
    np.testing.assert_allclose(y.numpy(), naive_upfirdn2d(x.numpy(), fn, down=factor, padding=p, gain=0.5), atol=1e-12)

def test_wrappers_keep_constant_images():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 16, 16], 0.75)
    # Away from the borders (where zeros come in) a constant stays constant.
    torch.testing.assert_close(upfirdn2d.upsample2d(x, f)[:, :, 2:-2, 2:-2], torch.full([1, 2, 28, 28], 0.75))
    torch.testing.assert_close(upfirdn2d.downsample2d(x, f)[:, :, 1:-1, 1:-1], torch.full([1, 2, 6, 6], 0.75))
    torch.testing.assert_close(upfirdn2d.filter2d(x, f)[:, :, 2:-2, 2:-2], torch.full([1, 2, 12, 12], 0.75))

def test_layouts_and_dtypes():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 5, 8, 8])
    y = upfirdn2d.upsample2d(x, f)
    torch.testing.assert_close(upfirdn2d.upsample2d(x.to(memory_format=torch.channels_last), f), y)
    torch.testing.assert_close(upfirdn2d.upsample2d(x[:, ::2], f), y[:, ::2]) # Non-contiguous input.
    assert upfirdn2d.downsample2d(x.half(), f).dtype == torch.float16
    assert upfirdn2d.downsample2d(x.bfloat16(), f).dtype == torch.bfloat16

def test_impl_argument():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 6, 6])
    assert upfirdn2d.resolve_impl(x) == 'ref' and upfirdn2d.resolve_impl(x, None) == 'ref'
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f, up=2, impl='ref'), upfirdn2d.upfirdn2d(x, f, up=2))
    for bad in ['cuda', 'fast']: # The CUDA kernel does not take CPU tensors.
        with pytest.raises(ValueError, match='impl'):
            upfirdn2d.upfirdn2d(x, f, impl=bad)

def test_bad_arguments():
    x = torch.randn([1, 1, 4, 4])
    f = torch.ones([3, 3])
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, f, up=0)
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(TypeError):
        upfirdn2d.upfirdn2d(x, f, down=1.5)
    with pytest.raises(ValueError, match='smaller than the filter'):
        upfirdn2d.upfirdn2d(x, f, padding=-1)
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x[0], f)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs', [
    dict(f=[1, 3, 3, 1], up=2, padding=[2, 1]),
    dict(f=[1, 3, 3, 1], down=2, padding=[1, 1, 1, 1]),
    dict(f=np.arange(1., 9.), up=[2, 1], down=[1, 3], padding=[3, -1, 0, 4], flip_filter=True, gain=2),
    dict(f=np.random.default_rng(0).random([3, 2]), up=3, down=2, padding=[-2, 1, 0, -1], gain=0.5),
])
def test_first_and_second_derivatives(kwargs):
    kwargs = dict(kwargs)
    taps = kwargs.pop('f')
    f = upfirdn2d.setup_filter(taps, separable=np.ndim(taps) == 1 and len(taps) >= 8)
    x = torch.randn([1, 2, 5, 4], dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, **kwargs)
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x], fast_mode=True)

def test_double_backward_through_a_nonlinearity():
    # As in R1: the gradient with respect to x, with its graph, then its
    # norm differentiated with respect to a weight applied after the op.
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 3, 8, 8], dtype=torch.float64, requires_grad=True)
    w = torch.randn([1, 3, 1, 1], dtype=torch.float64, requires_grad=True)
    def loss(w):
        y = upfirdn2d.downsample2d(x, f) * w
        return torch.tanh(upfirdn2d.upsample2d(y, f)).sum()
    def r1(w):
        grad, = torch.autograd.grad(loss(w), [x], create_graph=True)
        return grad.square().sum()
    assert torch.autograd.gradcheck(r1, [w])

#----------------------------------------------------------------------------
# conv2d_resample: each of its paths against the naive composition it stands for.

def naive_conv2d(x, w, groups=1, flip_weight=True):
    """Valid grouped correlation with w (convolution when not flip_weight), as a sum of shifted copies."""
    w = np.asarray(w, dtype=np.float64)
    w = w if flip_weight else w[:, :, ::-1, ::-1]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    y = np.zeros([n, o, h - kh + 1, wd - kw + 1])
    for g in range(groups):
        xs = x[:, g * cg : (g + 1) * cg]
        for a in range(kh):
            for b in range(kw):
                patch = xs[:, :, a : a + y.shape[2], b : b + y.shape[3]] # [n, cg, oh, ow]
                y[:, g * og : (g + 1) * og] += np.einsum('oc,nchw->nohw', w[g * og : (g + 1) * og, :, a, b], patch)
    return y

def naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """Upsample with f (padding applied there), convolve, downsample with f."""
    fw = 1 if f is None else f.shape[-1]
    fh = 1 if f is None else f.shape[0]
    px0, px1, py0, py1 = _quad(padding)
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1, py0, py1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    x = naive_upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    x = naive_conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = naive_upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x

CONV_CASES = [
    # (kernel, up, down, padding, groups): every path of conv2d_resample.
    (3, 1, 2, 1, 1),        # strided conv after the filter (the discriminator's conv1)
    (1, 1, 2, 0, 1),        # 1x1 on the downsampled image (the discriminator's skip)
    (3, 2, 1, 1, 1),        # transposed conv (the generator's upsampling conv)
    (1, 2, 1, 0, 1),        # 1x1 before upsampling
    (3, 2, 2, 1, 1),        # up and down
    (3, 1, 1, 1, 1),        # plain conv2d with its own padding
    (3, 1, 1, [0, 2, 1, -1], 1), # asymmetric and negative padding
    (1, 1, 1, 0, 1),
    (3, 2, 1, [2, 0, -1, 1], 2),
    (2, 3, 1, [0, 1], 3),
    (3, 1, 3, [1, 2], 3),
    (4, 2, 1, -1, 1),       # crop common to both sides, taken by the transposed conv
    (1, 3, 2, [1, 0, 0, 1], 1),
]

@pytest.mark.parametrize('case', CONV_CASES)
@pytest.mark.parametrize('flip_weight', [True, False])
@pytest.mark.parametrize('flip_filter', [False, True])
@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 2, 4, 2, 5, 1, 1, 3]])
def test_conv2d_resample_against_naive(case, flip_weight, flip_filter, taps):
    k, up, down, padding, groups = case
    rng = np.random.default_rng(k * 100 + up * 10 + down)
    f = upfirdn2d.setup_filter(taps, separable=len(taps) >= 8)
    x = rng.standard_normal([2, 3 * groups, 9, 8])
    w = rng.standard_normal([2 * groups, 3, k, k])
    expected = naive_conv2d_resample(x, w, f.numpy(), up, down, padding, groups, flip_weight, flip_filter)
    y = conv2d_resample.conv2d_resample(torch.as_tensor(x), torch.as_tensor(w), f=f, up=up, down=down, padding=padding,
        groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
    assert tuple(y.shape) == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-10, atol=1e-10 * max(1, np.abs(expected).max()))

def test_conv2d_resample_same_padding_sizes():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 4, 16, 16])
    w = torch.randn([5, 4, 3, 3])
    assert conv2d_resample.conv2d_resample(x, w, f, padding=1).shape == (2, 5, 16, 16)
    assert conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1).shape == (2, 5, 32, 32)
    assert conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1).shape == (2, 5, 8, 8)
    assert conv2d_resample.conv2d_resample(x, w[:, :, :1, :1], f, down=2).shape == (2, 5, 8, 8)
    torch.testing.assert_close(conv2d_resample.conv2d_resample(x, w, padding=1), torch.nn.functional.conv2d(x, w, padding=1))
    with pytest.raises(ValueError):
        conv2d_resample.conv2d_resample(x, w.double(), f)
    with pytest.raises(ValueError):
        conv2d_resample.conv2d_resample(x, w, f, up=0)

@pytest.mark.parametrize('case', [(3, 1, 2, 1, 1), (1, 1, 2, 0, 1), (3, 2, 1, 1, 1), (3, 2, 2, [1, 0, 2, 1], 2)])
def test_conv2d_resample_derivatives(case):
    k, up, down, padding, groups = case
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2 * groups, 4, 5], dtype=torch.float64, requires_grad=True)
    w = torch.randn([groups, 2, k, k], dtype=torch.float64, requires_grad=True)
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups)
    assert torch.autograd.gradcheck(fn, [x, w])
    assert torch.autograd.gradgradcheck(fn, [x, w], fast_mode=True)

#----------------------------------------------------------------------------
# The kernel path on CPU: the reference stands in for the CUDA kernel, which
# tests what surrounds the kernel (separable passes, layouts, the adjoint
# passes of the gradients) and the self-check that guards it.

class ReferenceKernel:
    """A plugin whose upfirdn2d op is the reference, plus `error`, in the
    kernel's output layout (that of x)."""
    def __init__(self, error=0.0):
        self.error = error

    def upfirdn2d(self, x, f, *args): # pylint: disable=missing-function-docstring
        y = upfirdn2d._upfirdn2d_ref(x, f, *args) + self.error
        return y.contiguous(memory_format=bias_act._memory_format(x))

@pytest.mark.parametrize('seed', range(0, 60, 3))
def test_kernel_path_against_naive(seed):
    case = _random_case(seed)
    x, f = case.pop('x'), case.pop('f')
    expected = naive_upfirdn2d(x, f, **case)
    x = torch.as_tensor(x)
    if seed % 2:
        x = x.to(memory_format=torch.channels_last)
    y = upfirdn2d._upfirdn2d_kernel(x, torch.as_tensor(f), *upfirdn2d._parse_args(**case), plugin=ReferenceKernel())
    assert y.is_contiguous(memory_format=bias_act._memory_format(x))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6, atol=1e-6 * max(1, np.abs(expected).max()))

@pytest.mark.parametrize('seed', range(1, 60, 6))
def test_kernel_path_derivatives(seed):
    # The gradient is the adjoint pass, computed by the "kernel" again: first and second derivatives.
    case = _random_case(seed)
    x = torch.as_tensor(case.pop('x')).requires_grad_(True)
    f = torch.as_tensor(case.pop('f')).double()
    args = upfirdn2d._parse_args(**case)
    fn = lambda x: upfirdn2d._upfirdn2d_kernel(x, f, *args, plugin=ReferenceKernel())
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])

def test_self_check_passes_a_correct_kernel(monkeypatch):
    monkeypatch.setattr(custom_ops, '_checked', {}) # Forgets the self-checks run so far (each runs once per process).
    assert_passes_self_check(lambda: upfirdn2d._self_check(ReferenceKernel(), torch.device('cpu')))

def test_wrong_kernel_falls_back_to_ref(monkeypatch):
    # A plugin that builds but computes wrong results: one warning naming the op, then the reference.
    monkeypatch.setattr(custom_ops, '_checked', {})
    monkeypatch.setattr(upfirdn2d, '_plugins', {})
    monkeypatch.setattr(custom_ops, 'try_get_plugin', lambda *args, **kwargs: ReferenceKernel(error=1e-2))
    check = upfirdn2d._self_check
    monkeypatch.setattr(upfirdn2d, '_self_check', lambda plugin, device: check(plugin, torch.device('cpu')))
    assert_dropped_after_one_warning(lambda: upfirdn2d._plugin('cpu'), 'upfirdn2d (cpu)')

#----------------------------------------------------------------------------
# The kernels against the reference: the CPU kernel wherever a C++ compiler
# is, the CUDA kernel on GPU machines.

kernel_device = kernel_device_fixture(upfirdn2d._plugin)

# The dtypes the kernels take, and the tolerance relative to the largest
# magnitude: half precision is summed in float32, so one rounding of the result.
DTYPES = [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 1e-2)]

def _compare_with_ref(x, f, dtype, tol, **kwargs):
    """The kernel of x's device in dtype against the reference in float64 on
    the same (dtype-rounded) input, in value and in the gradient with respect to x."""
    gen = torch.Generator().manual_seed(0)
    x = x.to(dtype).detach().requires_grad_(True)
    y = upfirdn2d.upfirdn2d(x, f, impl=x.device.type, **kwargs)
    assert y.dtype == dtype and y.is_contiguous(memory_format=bias_act._memory_format(x))
    dy = torch.randn(y.shape, generator=gen).to(device=x.device, dtype=dtype)
    dx, = torch.autograd.grad(y, [x], dy)
    assert dx.dtype == dtype
    x_ref = x.detach().double().requires_grad_(True)
    y_ref = upfirdn2d.upfirdn2d(x_ref, f, impl='ref', **kwargs)
    dx_ref, = torch.autograd.grad(y_ref, [x_ref], dy.double())
    for got, expected in [(y, y_ref), (dx, dx_ref)]:
        assert got.shape == expected.shape
        error = (got.double() - expected).abs().max().item()
        assert error <= tol * max(1, expected.abs().max().item()), (error, dtype, kwargs)

@pytest.mark.parametrize('seed', range(60))
def test_kernel_matches_ref(kernel_device, seed):
    case = _random_case(seed)
    x = torch.as_tensor(case.pop('x'), device=kernel_device)
    f = torch.as_tensor(case.pop('f'), device=kernel_device)
    if seed % 2:
        x = x.to(memory_format=torch.channels_last)
    for dtype, tol in DTYPES:
        _compare_with_ref(x, f, dtype, tol, **case)

# StyleGAN-like layers: filters of 4 (2D) and 12 taps (separable), odd sizes, batches and channels_last.
TYPICAL = [
    ([4, 32, 36, 36], [1, 3, 3, 1], dict(up=2, padding=[2, 1, 2, 1], gain=4)),
    ([4, 32, 36, 36], [1, 3, 3, 1], dict(down=2, padding=[1, 1, 1, 1])),
    ([2, 64, 53, 53], np.hanning(14)[1:-1], dict(up=2, padding=[11, 10, 11, 10], gain=4)),
    ([2, 64, 106, 106], np.hanning(14)[1:-1], dict(down=2, flip_filter=True)),
    ([3, 5, 17, 23], np.arange(1., 6.), dict(up=[1, 3], down=[2, 1], padding=[-1, 2, 0, 3])),
]

@pytest.mark.parametrize('shape, taps, kwargs', TYPICAL)
@pytest.mark.parametrize('channels_last', [False, True])
def test_kernel_typical_shapes(kernel_device, shape, taps, kwargs, channels_last):
    f = upfirdn2d.setup_filter(taps, device=kernel_device, separable=len(taps) >= 8)
    x = torch.randn(shape, device=kernel_device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    for dtype, tol in DTYPES[1:3]:
        _compare_with_ref(x, f, dtype, tol, **kwargs)

def test_kernel_derivatives(kernel_device):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=kernel_device)
    x = torch.randn([2, 3, 6, 5], dtype=torch.float64, device=kernel_device, requires_grad=True)
    for kwargs in [dict(up=2, padding=[2, 1, 2, 1]), dict(down=[2, 3], padding=[0, -1, 3, 1], flip_filter=True, gain=2)]:
        fn = lambda x, kwargs=kwargs: upfirdn2d.upfirdn2d(x, f, impl=kernel_device, **kwargs)
        assert torch.autograd.gradcheck(fn, [x])
        assert torch.autograd.gradgradcheck(fn, [x])

def test_kernel_auto_choice(kernel_device):
    x = torch.randn([1, 2, 6, 6], device=kernel_device)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=kernel_device)
    auto = kernel_device if kernel_device in upfirdn2d._auto_devices else 'ref'
    assert upfirdn2d.resolve_impl(x) == auto and upfirdn2d.resolve_impl(x, None, f) == auto
    assert upfirdn2d.resolve_impl(x, kernel_device, f) == kernel_device
    assert upfirdn2d.resolve_impl(x, 'ref') == 'ref'
    f.requires_grad_(True) # The kernel gives no gradient with respect to f: the reference does.
    assert upfirdn2d.resolve_impl(x, 'auto', f) == 'ref'
    with pytest.raises(ValueError, match=f"impl='{kernel_device}'"):
        upfirdn2d.upfirdn2d(x, f, impl=kernel_device)
    with torch.no_grad():
        assert upfirdn2d.resolve_impl(x, kernel_device, f) == kernel_device

#----------------------------------------------------------------------------
