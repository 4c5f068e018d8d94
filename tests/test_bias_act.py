"""bias_act: the C++ and CUDA kernels against the pure-PyTorch reference, in
value, first and second derivatives; edge cases; the automatic choice."""

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act
from torch_utils.ops.bias_act import activation_funcs

from selfcheck import assert_dropped_after_one_warning, assert_passes_self_check

ACTS = list(activation_funcs)

# (shape, dim): bias patterns expanded into a row (short, repeated; with
# runs; the innermost dimension), too long to expand (runs of one value; the
# bias itself); a one-element bias; negative dims; and tensors large enough
# to be split among threads.
LAYOUTS = [
    ([7, 5], 1),
    ([3, 6, 4, 5], 1),
    ([2, 3, 130], -1),
    ([2, 17, 40, 50], -3),
    ([4, 6, 40, 50], 1),
    ([2, 33000, 2], 1),
    ([2, 70000], 1),
    ([4, 1, 30], 1),
]

# (gain, clamp): defaults; a gain with a clamp that cuts some outputs (the
# inputs are randn * 2); gain 1 with everything clamped to 0.
SETTINGS = [(None, None), (0.7, 0.5), (1.0, 0)]

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

def _tol(dtype):
    return {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]

def _assert_close(actual, expected, dtype, what):
    """Elementwise, relative to the largest magnitude of the expected tensor."""
    tol = _tol(dtype)
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale, msg=lambda m: f'{what}: {m}')

def _inputs(shape, dim, dtype, device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    b = torch.randn([shape[dim]], generator=g, dtype=torch.float64)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (x, b, dy, r)]

def _derivatives(impl, x, b, dy, r, **kwargs):
    """y; dL/dx and dL/db for L = <y, dy>; and the gradient of <dL/dx, r> with
    respect to x, b and dy (second derivatives, and the backward pass's own
    derivative with respect to dy)."""
    x = x.detach().requires_grad_(True)
    dy = dy.detach().requires_grad_(True)
    inputs = [x] if b is None else [x, b.detach().requires_grad_(True)]
    y = bias_act.bias_act(x, inputs[1] if b is not None else None, impl=impl, **kwargs)
    first = torch.autograd.grad(y, inputs, dy, create_graph=True)
    second = torch.autograd.grad((first[0] * r).sum(), inputs + [dy], materialize_grads=True)
    return [y] + list(first) + list(second)

NAMES = ['y', 'dx', 'db', 'd2x', 'd2b', 'd(dx)/d(dy)']
NAMES_WITHOUT_BIAS = ['y', 'dx', 'd2x', 'd(dx)/d(dy)']

def _compare(impl, x, b, dy, r, dtype, **kwargs):
    got = _derivatives(impl, x, b, dy, r, **kwargs)
    expected = _derivatives('ref', x, b, dy, r, **kwargs)
    for name, a, e in zip(NAMES if b is not None else NAMES_WITHOUT_BIAS, got, expected):
        _assert_close(a, e, dtype, f'{name} ({kwargs})')

#----------------------------------------------------------------------------
# CPU kernel.

@pytest.fixture(scope='module')
def cpu_kernel():
    if not custom_ops.enabled():
        pytest.skip('custom ops disabled by CREPS_CUSTOM_OPS')
    assert bias_act._plugin('cpu') is not None, 'the C++ kernel failed to build; see the warning'

def test_auto_runs_the_cpu_kernel_on_cpu(cpu_kernel):
    for dtype in [torch.float32, torch.float64, torch.bfloat16]:
        x = torch.randn([4, 3], dtype=dtype, requires_grad=True)
        assert bias_act.resolve_impl(x) == 'cpu'
        y = bias_act.bias_act(x, torch.zeros([3], dtype=dtype), act='lrelu')
        assert type(y.grad_fn).__name__ == '_BiasActBackward'
    assert bias_act.resolve_impl(torch.zeros([2], dtype=torch.float16)) == 'ref'
    assert bias_act.resolve_impl(torch.zeros([2]), impl='ref') == 'ref'

@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_cpu_matches_ref(cpu_kernel, act, dtype):
    for shape, dim in LAYOUTS:
        x, b, dy, r = _inputs(shape, dim, dtype)
        for gain, clamp in SETTINGS:
            for bias in [b, None]:
                _compare('cpu', x, bias, dy, r, dtype, dim=dim, act=act, gain=gain, clamp=clamp)

@pytest.mark.parametrize('act', ACTS)
def test_cpu_matches_ref_bfloat16(cpu_kernel, act):
    # The kernel rounds once, the reference after every op: compare forward
    # and first derivatives, without clamping, as a value that rounds onto the
    # bound in one and not in the other gets a zero derivative in one only.
    x, b, dy, _ = _inputs([5, 16, 9], 1, torch.bfloat16)
    for gain, clamp in [(None, None), (0.7, None)]:
        kwargs = dict(act=act, gain=gain, clamp=clamp)
        got, expected = [_derivatives(impl, x, b, dy, dy, **kwargs)[:3] for impl in ['cpu', 'ref']]
        for name, a, e in zip(NAMES, got, expected):
            _assert_close(a.float(), e.float(), torch.bfloat16, f'{name} ({kwargs})')

@pytest.mark.parametrize('act', ACTS)
def test_cpu_gradcheck(cpu_kernel, act):
    x, b, _, _ = _inputs([3, 4, 5], 1, torch.float64, seed=1)
    x.requires_grad_(True)
    b.requires_grad_(True)
    for gain, clamp in SETTINGS[:2]:
        fn = lambda x, b: bias_act.bias_act(x, b, act=act, gain=gain, clamp=clamp, impl='cpu')
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))

def test_cpu_channels_last_and_strided_inputs(cpu_kernel):
    x, b, dy, r = _inputs([2, 8, 5, 6], 1, torch.float64)
    x_cl = x.to(memory_format=torch.channels_last)
    assert bias_act.bias_act(x_cl, b, act='lrelu', impl='cpu').is_contiguous(memory_format=torch.channels_last)
    _compare('cpu', x_cl, b, dy, r, torch.float64, act='swish', clamp=1.0)
    # A transposed input is copied in the graph, so the second derivative still reaches it.
    _compare('cpu', x.transpose(2, 3), b, dy.transpose(2, 3), r.transpose(2, 3), torch.float64, act='tanh')

def test_cpu_extreme_and_nan_inputs(cpu_kernel):
    x = torch.tensor([-1e4, -300, -100, -30, -1e-30, 0, 1e-30, 30, 100, 300, 1e4, float('nan')])
    for dtype in [torch.float32, torch.float64]:
        for act in ACTS:
            xd = x.to(dtype).requires_grad_(True)
            y_cpu, y_ref = [bias_act.bias_act(xd, act=act, impl=impl) for impl in ['cpu', 'ref']]
            assert torch.isnan(y_cpu[-1]) and torch.isnan(y_ref[-1]), act
            (dx_cpu,), (dx_ref,) = [torch.autograd.grad(y[:-1].sum(), xd) for y in [y_cpu, y_ref]]
            torch.testing.assert_close(y_cpu[:-1], y_ref[:-1], rtol=1e-6, atol=1e-6, msg=act)
            torch.testing.assert_close(dx_cpu[:-1], dx_ref[:-1], rtol=1e-6, atol=1e-6, msg=act)

def test_cpu_lrelu_alpha(cpu_kernel):
    x, b, dy, r = _inputs([6, 10], 1, torch.float64)
    _compare('cpu', x, b, dy, r, torch.float64, act='lrelu', alpha=0.05, gain=3.0, clamp=2.0)

def test_empty_tensors(cpu_kernel):
    for impl in ['ref', 'cpu']:
        x = torch.zeros([0, 3], requires_grad=True)
        b = torch.zeros([3], requires_grad=True)
        y = bias_act.bias_act(x, b, act='tanh', clamp=1, impl=impl)
        assert y.shape == (0, 3)
        y.sum().backward()
        assert x.grad.shape == (0, 3) and torch.all(b.grad == 0)

#----------------------------------------------------------------------------
# Arguments.

def test_nothing_to_do_returns_input():
    x = torch.randn([3, 4])
    assert bias_act.bias_act(x) is x
    assert bias_act.bias_act(x, gain=1.0) is x

def test_argument_errors():
    x = torch.randn([3, 4])
    with pytest.raises(ValueError, match="Unknown activation 'gelu'"):
        bias_act.bias_act(x, act='gelu')
    with pytest.raises(ValueError, match='clamp'):
        bias_act.bias_act(x, clamp=-1)
    with pytest.raises(ValueError, match='4 elements'):
        bias_act.bias_act(x, torch.zeros([4]), dim=0)
    with pytest.raises(ValueError, match='out of range'):
        bias_act.bias_act(x, torch.zeros([4]), dim=2)
    with pytest.raises(ValueError, match='dtype'):
        bias_act.bias_act(x, torch.zeros([4], dtype=torch.float64))
    with pytest.raises(ValueError, match='impl'):
        bias_act.bias_act(x, act='relu', impl='gpu')
    with pytest.raises(ValueError, match="impl='cuda'"):
        bias_act.bias_act(x, act='relu', impl='cuda')

def test_activation_records():
    assert activation_funcs['lrelu'].def_gain == pytest.approx(2 ** 0.5)
    assert activation_funcs['lrelu'].def_alpha == 0.2
    assert [activation_funcs[a].cuda_idx for a in ACTS] == list(range(1, 10))
    assert {a for a in ACTS if activation_funcs[a].ref == 'x'} == {'swish'}

def test_negative_dim_equals_positive():
    x, b, _, _ = _inputs([2, 3, 4], 2, torch.float64)
    for impl in ['ref', 'auto']:
        torch.testing.assert_close(bias_act.bias_act(x, b, dim=-1, act='elu', impl=impl),
            bias_act.bias_act(x, b, dim=2, act='elu', impl='ref'), rtol=1e-12, atol=1e-12)

#----------------------------------------------------------------------------
# Self-check of a built kernel (runs on the CPU kernel here, on the CUDA one on GPU machines).

class PerturbedPlugin:
    """A plugin whose kernel computes the C++ kernel's result plus `error`."""
    def __init__(self, plugin, error):
        self.plugin = plugin
        self.error = error

    def bias_act(self, *args): # pylint: disable=missing-function-docstring
        return self.plugin.bias_act(*args) + self.error

def test_self_check_passes_the_real_kernel(cpu_kernel, monkeypatch):
    monkeypatch.setattr(custom_ops, '_checked', {}) # Each self-check runs once per process: forget earlier ones.
    assert_passes_self_check(lambda: bias_act._self_check(bias_act._plugin('cpu'), torch.device('cpu')))

def test_wrong_cuda_kernel_falls_back_to_ref(cpu_kernel, monkeypatch):
    # A CUDA plugin that builds but computes wrong results: one warning naming the op, then the reference.
    cpu_plugin = bias_act._plugin('cpu')
    monkeypatch.setattr(custom_ops, '_checked', {})
    monkeypatch.setattr(bias_act, '_plugins', {})
    monkeypatch.setattr(bias_act, '_load_plugin', lambda device_type: PerturbedPlugin(cpu_plugin, 1e-2))
    check = bias_act._self_check
    monkeypatch.setattr(bias_act, '_self_check', lambda plugin, device: check(plugin, torch.device('cpu')))
    assert_dropped_after_one_warning(lambda: bias_act._plugin('cuda'), 'bias_act')
    # A correct one passes.
    monkeypatch.setattr(custom_ops, '_checked', {})
    monkeypatch.setattr(bias_act, '_plugins', {})
    monkeypatch.setattr(bias_act, '_load_plugin', lambda device_type: PerturbedPlugin(cpu_plugin, 0))
    assert bias_act._plugin('cuda') is not None

#----------------------------------------------------------------------------
# CUDA kernel.

@pytest.fixture(scope='module')
def cuda_kernel():
    if not torch.cuda.is_available():
        pytest.skip('CUDA not available: the CUDA kernel is tested on GPU machines only')
    assert bias_act._plugin('cuda') is not None, 'the CUDA kernel failed to build; see the warning'

@pytest.mark.parametrize('act', ACTS)
def test_cuda_matches_ref(cuda_kernel, act):
    for shape, dim in LAYOUTS:
        for dtype in [torch.float16, torch.float32, torch.float64]:
            x, b, dy, r = _inputs(shape, dim, dtype, device='cuda')
            for gain, clamp in SETTINGS[:2]:
                kwargs = dict(dim=dim, act=act, gain=gain, clamp=clamp)
                if dtype == torch.float16:
                    # Half rounds after every op of the reference: forward and first derivatives only.
                    got, expected = [_derivatives(impl, x, b, dy, r, **kwargs)[:3] for impl in ['cuda', 'ref']]
                    for name, a, e in zip(NAMES, got, expected):
                        _assert_close(a.float(), e.float(), dtype, f'{name} ({kwargs})')
                else:
                    _compare('cuda', x, b, dy, r, dtype, **kwargs)

def test_cuda_auto_choice(cuda_kernel):
    x = torch.randn([4, 3], device='cuda', requires_grad=True)
    assert bias_act.resolve_impl(x) == 'cuda'
    y = bias_act.bias_act(x, torch.zeros([3], device='cuda'), act='lrelu')
    assert type(y.grad_fn).__name__ == '_BiasActBackward'
