"""Fused multiply-add, `fma(a, b, c) = a * b + c`, with broadcasting.

The value is torch.addcmul(c, a, b). The custom autograd function saves only
a and b, and hands each operand a gradient of its own shape, summing over the
dimensions along which it was broadcast:

    d/da = sum(dout * b),   d/db = sum(dout * a),   d/dc = sum(dout).

Those are ordinary differentiable torch expressions (with fma itself for the
products), so derivatives of any order exist. The name and signature are
those of NVIDIA's StyleGAN2-ADA/3 `fma`, which network source embedded in
their pickles calls.
"""

import torch

#----------------------------------------------------------------------------

def fma(a, b, c): # => a * b + c
    """a * b + c, all three broadcast against each other."""
    return _FusedMultiplyAdd.apply(a, b, c)

#----------------------------------------------------------------------------

class _FusedMultiplyAdd(torch.autograd.Function):
    """out = a * b + c."""

    @staticmethod
    def forward(ctx, a, b, c): # pylint: disable=arguments-differ
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, dout): # pylint: disable=arguments-differ
        a, b = ctx.saved_tensors
        da = db = dc = None
        if ctx.needs_input_grad[0]:
            da = _sum_to(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _sum_to(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _sum_to(dout, ctx.c_shape)
        return da, db, dc

#----------------------------------------------------------------------------

def _sum_to(x, shape):
    """Sum `x` over the dimensions that broadcasting `shape` to x.shape added or stretched."""
    shape = torch.Size(shape)
    lead = x.ndim - len(shape)
    assert lead >= 0
    dims = list(range(lead)) + [lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1]
    if dims:
        x = x.sum(dim=dims, keepdim=True)
    return x.reshape(shape)

#----------------------------------------------------------------------------
