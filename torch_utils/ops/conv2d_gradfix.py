"""`conv2d` and `conv_transpose2d` with derivatives of any order, and a switch
that skips the weight gradient.

`conv2d(...)` and `conv_transpose2d(...)` give the values of the
torch.nn.functional functions of the same names, through custom autograd
functions whose backward passes are built from the same two functions again:

  - y = conv(x, w) is bilinear in (x, w). The gradient w.r.t. x is the adjoint
    convolution of grad_y with w (a transposed convolution for a plain one,
    and a plain one for a transposed one), i.e. this op again, with the output
    padding that restores the shape of x;
  - the gradient w.r.t. w, gw(grad_y, x), comes from PyTorch's own
    convolution_backward kernel, wrapped in a second function whose
    derivatives are, from <gw(grad_y, x), v> = <grad_y, conv(x, v)>: conv(x, v)
    w.r.t. grad_y, and the adjoint convolution of grad_y with v w.r.t. x;
  - the gradient w.r.t. the bias is grad_y summed over batch and space.

So every derivative is again a convolution of this module, differentiable as
far as one likes, and each of them consults `weight_gradients_disabled` when
it runs. Inside `with no_weight_gradients():` no gradient w.r.t. any weight
is computed (the weights get None): R1 and path-length regularization
differentiate w.r.t. the images or latents only, and this skips the work.
The flag is read when the backward pass runs, so the autograd.grad() call
has to be inside the `with` block; the forward pass may be anywhere.

Device choice: unlike NVIDIA's module, which uses its custom path on CUDA
only (and on PyTorch >= 1.11 not at all), this one uses it on every device
(CPU included) while `enabled` is True, its default; with `enabled` False, or
with gradient recording off, the plain torch.nn.functional ops run. The
names and signatures are those of NVIDIA's StyleGAN2-ADA/3 `conv2d_gradfix`,
which network source embedded in their pickles calls.
"""

import contextlib
from typing import NamedTuple, Tuple

import torch

#----------------------------------------------------------------------------

# Use the custom autograd functions (True) or plain torch.nn.functional (False).
enabled = True

# While True, backward passes compute no gradient w.r.t. the weights.
weight_gradients_disabled = False

@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Within the block, the weights get no gradient (when `disable`)."""
    global weight_gradients_disabled # pylint: disable=global-statement
    old = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = old

#----------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): # pylint: disable=redefined-builtin
    """As torch.nn.functional.conv2d."""
    if not _use_custom(input, weight, bias):
        return torch.nn.functional.conv2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    cfg = _make_config(False, weight, stride, padding, 0, dilation, groups)
    return _Conv.apply(input, weight, bias, cfg)

def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1): # pylint: disable=redefined-builtin
    """As torch.nn.functional.conv_transpose2d."""
    if not _use_custom(input, weight, bias):
        return torch.nn.functional.conv_transpose2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
            output_padding=output_padding, groups=groups, dilation=dilation)
    cfg = _make_config(True, weight, stride, padding, output_padding, dilation, groups)
    return _Conv.apply(input, weight, bias, cfg)

#----------------------------------------------------------------------------

class _Config(NamedTuple):
    transposed:     bool
    weight_shape:   Tuple[int, ...]
    stride:         Tuple[int, int]
    padding:        Tuple[int, int]
    output_padding: Tuple[int, int]
    dilation:       Tuple[int, int]
    groups:         int

def _use_custom(input, weight, bias): # pylint: disable=redefined-builtin
    if not enabled or not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in (input, weight, bias))

def _pair(x, name):
    xs = tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    if len(xs) != 2 or not all(isinstance(v, int) for v in xs):
        raise ValueError(f'{name} must be an int or a pair of ints, got {x!r}')
    return xs

def _make_config(transposed, weight, stride, padding, output_padding, dilation, groups):
    if isinstance(padding, str):
        raise ValueError(f'conv2d_gradfix does not support padding={padding!r}; give numbers')
    cfg = _Config(transposed=bool(transposed), weight_shape=tuple(weight.shape), stride=_pair(stride, 'stride'),
        padding=_pair(padding, 'padding'), output_padding=_pair(output_padding, 'output_padding'),
        dilation=_pair(dilation, 'dilation'), groups=int(groups))
    if len(cfg.weight_shape) != 4:
        raise ValueError(f'weight must be 4-dimensional, got shape {list(weight.shape)}')
    if cfg.groups < 1 or min(cfg.stride) < 1 or min(cfg.dilation) < 1 or min(cfg.padding) < 0:
        raise ValueError(f'invalid convolution arguments: {cfg}')
    if not cfg.transposed and cfg.output_padding != (0, 0):
        raise ValueError('output_padding applies to conv_transpose2d only')
    return cfg

def _forward(x, w, b, cfg):
    """The convolution that `cfg` describes, by torch.nn.functional."""
    if cfg.transposed:
        return torch.nn.functional.conv_transpose2d(input=x, weight=w, bias=b, stride=cfg.stride, padding=cfg.padding,
            output_padding=cfg.output_padding, groups=cfg.groups, dilation=cfg.dilation)
    return torch.nn.functional.conv2d(input=x, weight=w, bias=b, stride=cfg.stride, padding=cfg.padding,
        dilation=cfg.dilation, groups=cfg.groups)

def _adjoint(y, w, cfg, x_shape):
    """The adjoint convolution of `y` with `w`, shaped as x: the gradient w.r.t. x
    of <y, conv(x, w)> (differentiable when recording)."""
    if cfg.transposed:
        # A plain convolution. With an output padding of stride or more (allowed
        # where it stays under the dilation) it yields rows and columns past the
        # end of x, which belong to no element of x; they are cut off.
        x = _apply(y, w, cfg._replace(transposed=False, output_padding=(0, 0)))
        if tuple(x.shape[2:]) != tuple(x_shape[2:]):
            x = x[:, :, :x_shape[2], :x_shape[3]]
        return x
    # A transposed convolution of y has spatial size
    # (y - 1) * stride - 2 * padding + dilation * (k - 1) + 1 + output_padding;
    # the output padding makes up what the forward stride left off x.
    op = tuple(x_shape[i + 2] - ((y.shape[i + 2] - 1) * cfg.stride[i] - 2 * cfg.padding[i]
        + cfg.dilation[i] * (cfg.weight_shape[i + 2] - 1) + 1) for i in range(2))
    return _apply(y, w, cfg._replace(transposed=True, output_padding=op))

def _apply(x, w, cfg):
    """This module's convolution without bias (differentiable when recording)."""
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return _Conv.apply(x, w, None, cfg)
    return _forward(x, w, None, cfg)

def _grad_weight(grad_output, x, cfg):
    """Gradient w.r.t. the weight, by PyTorch's kernel (not differentiable itself)."""
    dummy = grad_output.new_empty(1).expand(cfg.weight_shape) # Read for its shape only.
    return torch.ops.aten.convolution_backward(grad_output, x, dummy, None, list(cfg.stride), list(cfg.padding),
        list(cfg.dilation), cfg.transposed, list(cfg.output_padding), cfg.groups, [False, True, False])[1]

#----------------------------------------------------------------------------

class _Conv(torch.autograd.Function):
    """y = conv(x, w) + b as `cfg` describes."""

    @staticmethod
    def forward(ctx, x, w, b, cfg): # pylint: disable=arguments-differ
        if tuple(w.shape) != cfg.weight_shape:
            raise ValueError(f'weight shape {list(w.shape)} does not match {list(cfg.weight_shape)}')
        ctx.save_for_backward(x, w)
        ctx.cfg = cfg
        return _forward(x, w, b, cfg)

    @staticmethod
    def backward(ctx, dy): # pylint: disable=arguments-differ
        x, w = ctx.saved_tensors
        cfg = ctx.cfg
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _adjoint(dy, w, cfg, x.shape)
            assert dx.shape == x.shape
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            dw = _apply_grad_weight(dy, x, cfg)
        if ctx.needs_input_grad[2]:
            db = dy.sum(dim=[0, 2, 3])
        return dx, dw, db, None

def _apply_grad_weight(dy, x, cfg):
    if torch.is_grad_enabled() and (dy.requires_grad or x.requires_grad):
        return _ConvGradWeight.apply(dy, x, cfg)
    return _grad_weight(dy, x, cfg)

class _ConvGradWeight(torch.autograd.Function):
    """gw = gradient of <dy, conv(x, w)> w.r.t. w, as `cfg` describes."""

    @staticmethod
    def forward(ctx, dy, x, cfg): # pylint: disable=arguments-differ
        ctx.save_for_backward(dy, x)
        ctx.cfg = cfg
        return _grad_weight(dy, x, cfg)

    @staticmethod
    def backward(ctx, v): # pylint: disable=arguments-differ
        dy, x = ctx.saved_tensors
        cfg = ctx.cfg
        d_dy = d_x = None
        if ctx.needs_input_grad[0]:
            d_dy = _apply(x, v, cfg)
            assert d_dy.shape == dy.shape
        if ctx.needs_input_grad[1]:
            d_x = _adjoint(dy, v, cfg, x.shape)
            assert d_x.shape == x.shape
        return d_dy, d_x, None

#----------------------------------------------------------------------------
