"""conv2d_gradfix: values as torch.nn.functional, first and second derivatives
(gradcheck, gradgradcheck, and against torch's own autograd), and
no_weight_gradients."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix

# (N, C_in, C_out, H, W, k, stride, padding, dilation, groups, output_padding)
CONFIGS = [
    (2, 3, 4, 5, 4, (3, 3), 1, 1, 1, 1, 0),
    (1, 4, 6, 5, 6, (3, 2), 2, 0, 1, 2, 1),
    (2, 2, 3, 4, 3, (1, 1), 1, 0, 1, 1, 0),
    (1, 6, 6, 5, 4, (3, 3), (2, 1), (1, 2), (2, 1), 3, (1, 0)),
    (1, 4, 2, 4, 4, (2, 2), 3, 1, 1, 2, (2, 0)),
    (1, 3, 3, 5, 5, (3, 3), 1, 2, 2, 3, (1, 1)),
]
IDS = [f'cfg{i}' for i in range(len(CONFIGS))]

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

def _weight_shape(transposed, cin, cout, k, groups):
    return [cin, cout // groups, *k] if transposed else [cout, cin // groups, *k]

def _case(cfg, transposed, dtype=torch.float64, seed=0):
    n, cin, cout, h, w, k, stride, padding, dilation, groups, output_padding = cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([n, cin, h, w], generator=g, dtype=dtype)
    wt = torch.randn(_weight_shape(transposed, cin, cout, k, groups), generator=g, dtype=dtype)
    b = torch.randn([cout], generator=g, dtype=dtype)
    if transposed:
        kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
        return x, wt, b, kw, conv2d_gradfix.conv_transpose2d, F.conv_transpose2d
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, wt, b, kw, conv2d_gradfix.conv2d, F.conv2d

#----------------------------------------------------------------------------

@pytest.mark.parametrize('transposed', [False, True])
@pytest.mark.parametrize('cfg', CONFIGS, ids=IDS)
def test_values(cfg, transposed):
    x, w, b, kw, op, ref = _case(cfg, transposed, dtype=torch.float32)
    for bias in [None, b]:
        expected = ref(x, w, bias, **kw)
        torch.testing.assert_close(op(x, w, bias, **kw), expected)
        # Through the custom autograd function.
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = op(xr, wr, bias, **kw)
        assert type(y.grad_fn).__name__ == '_ConvBackward'
        torch.testing.assert_close(y, expected)

def test_positional_and_int_arguments():
    x = torch.randn([2, 4, 9, 9], requires_grad=True)
    w = torch.randn([4, 2, 3, 3], requires_grad=True)
    torch.testing.assert_close(conv2d_gradfix.conv2d(x, w, None, 2, 1, 1, 2), F.conv2d(x, w, None, 2, 1, 1, 2))
    torch.testing.assert_close(conv2d_gradfix.conv_transpose2d(x, w, None, 2, 1, 1, 2, 1),
        F.conv_transpose2d(x, w, None, 2, 1, 1, 2, 1))

#----------------------------------------------------------------------------

@pytest.mark.parametrize('transposed', [False, True])
@pytest.mark.parametrize('cfg', CONFIGS, ids=IDS)
def test_gradcheck(cfg, transposed):
    x, w, b, kw, op, _ref = _case(cfg, transposed)
    inputs = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_())
    func = lambda x, w, b: op(x, w, b, **kw)
    assert torch.autograd.gradcheck(func, inputs)
    assert torch.autograd.gradgradcheck(func, inputs)

@pytest.mark.parametrize('transposed', [False, True])
@pytest.mark.parametrize('cfg', CONFIGS, ids=IDS)
def test_derivatives_match_torch(cfg, transposed):
    """First derivatives, and an R1-like second derivative, equal those of torch's own ops."""
    x, w, b, kw, op, ref = _case(cfg, transposed)
    results = []
    for f in [op, ref]:
        xs, ws, bs = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
        y = f(xs, ws, bs, **kw)
        gy = torch.sin(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)
        gx, gw, gb = torch.autograd.grad(y, [xs, ws, bs], gy, create_graph=True)
        # A second derivative through every first one, w.r.t. everything.
        loss = gx.square().sum() + (gw * gw.detach().cos()).sum() + (y * gy).square().sum()
        hs = torch.autograd.grad(loss, [xs, ws, bs])
        results.append([y, gx, gw, gb, *hs])
    for actual, expected in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('transposed', [False, True])
def test_no_weight_gradients(transposed):
    x, w, b, kw, op, ref = _case(CONFIGS[1], transposed)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref(xr, wr, b, **kw).square().sum().backward()

    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled
        op(xs, ws, b, **kw).square().sum().backward()
    assert not conv2d_gradfix.weight_gradients_disabled
    assert ws.grad is None
    torch.testing.assert_close(xs.grad, xr.grad)

    # disable=False leaves the weight gradient on.
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    with conv2d_gradfix.no_weight_gradients(disable=False):
        op(xs, ws, b, **kw).square().sum().backward()
    torch.testing.assert_close(ws.grad, wr.grad)

def test_no_weight_gradients_r1_pattern():
    """As in R1: input gradient with create_graph inside the block, the penalty's
    backward outside it, which reaches the weights through the input gradient."""
    x, w, b, kw, op, ref = _case(CONFIGS[0], False)
    grads = []
    for f, ctx in [(ref, False), (op, True)]:
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        with conv2d_gradfix.no_weight_gradients(ctx):
            y = torch.tanh(f(xs, ws, b, **kw))
            gx, = torch.autograd.grad(y.sum(), [xs], create_graph=True)
        gx.square().sum().backward()
        grads.append(ws.grad)
    torch.testing.assert_close(grads[1], grads[0])

def test_flag_restored_on_error():
    with pytest.raises(RuntimeError):
        with conv2d_gradfix.no_weight_gradients():
            raise RuntimeError('boom')
    assert not conv2d_gradfix.weight_gradients_disabled

def test_disabled_uses_plain_ops(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', False)
    x = torch.randn([1, 2, 5, 5], requires_grad=True)
    w = torch.randn([3, 2, 3, 3], requires_grad=True)
    y = conv2d_gradfix.conv2d(x, w, padding=1)
    assert 'Convolution' in type(y.grad_fn).__name__
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1))

#----------------------------------------------------------------------------
