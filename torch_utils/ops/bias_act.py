"""Fused bias, activation, gain and clamp, with first and second derivatives.

Three implementations give the same values and derivatives:
    'ref'   pure PyTorch: any device and dtype, differentiable to any order;
    'cpu'   C++ kernel (bias_act.cpp): float32, float64 and bfloat16;
    'cuda'  CUDA kernel (bias_act.cu): float16, bfloat16, float32 and float64.
The kernels make one pass over memory where the reference makes up to four,
and their backward pass is itself differentiable once more, which is what R1
and path-length regularization need; a third derivative is not supported.
They are built on first use (see torch_utils.custom_ops); when that fails,
or with CREPS_CUSTOM_OPS=0, the reference runs instead.
"""

import dataclasses
import math
import os
from typing import Callable, Optional

import torch

from .. import custom_ops

#----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Activation:
    func:           Callable    # Reference definition: func(x, alpha) -> tensor.
    def_alpha:      float       # Default shape parameter (the lrelu slope; ignored by the others).
    def_gain:       float       # Default output gain.
    cuda_idx:       int         # Id of the activation in the kernels (ActId in bias_act.h).
    ref:            str         # What its derivatives are computed from: 'x' (input), 'y' (output) or '' (neither).
    has_2nd_grad:   bool        # Whether its second derivative is non-zero (almost everywhere).

# Definitions, default parameters and gains as in NVIDIA's StyleGAN2/3. ELU uses
# a fixed scale of 1. The gain sqrt(2) preserves the magnitude of unit-variance
# inputs through relu-like activations.
activation_funcs = {
    'linear':   Activation(func=lambda x, alpha: x,                                         def_alpha=0,    def_gain=1,             cuda_idx=1, ref='',  has_2nd_grad=False),
    'relu':     Activation(func=lambda x, alpha: torch.relu(x),                             def_alpha=0,    def_gain=math.sqrt(2),  cuda_idx=2, ref='y', has_2nd_grad=False),
    'lrelu':    Activation(func=lambda x, alpha: torch.nn.functional.leaky_relu(x, alpha), def_alpha=0.2,  def_gain=math.sqrt(2),  cuda_idx=3, ref='y', has_2nd_grad=False),
    'tanh':     Activation(func=lambda x, alpha: torch.tanh(x),                             def_alpha=0,    def_gain=1,             cuda_idx=4, ref='y', has_2nd_grad=True),
    'sigmoid':  Activation(func=lambda x, alpha: torch.sigmoid(x),                          def_alpha=0,    def_gain=1,             cuda_idx=5, ref='y', has_2nd_grad=True),
    'elu':      Activation(func=lambda x, alpha: torch.nn.functional.elu(x),                def_alpha=0,    def_gain=1,             cuda_idx=6, ref='y', has_2nd_grad=True),
    'selu':     Activation(func=lambda x, alpha: torch.selu(x),                             def_alpha=0,    def_gain=1,             cuda_idx=7, ref='y', has_2nd_grad=True),
    'softplus': Activation(func=lambda x, alpha: torch.nn.functional.softplus(x),           def_alpha=0,    def_gain=1,             cuda_idx=8, ref='y', has_2nd_grad=True),
    'swish':    Activation(func=lambda x, alpha: torch.sigmoid(x) * x,                      def_alpha=0,    def_gain=math.sqrt(2),  cuda_idx=9, ref='x', has_2nd_grad=True),
}

#----------------------------------------------------------------------------

_kernel_dtypes = {
    'cpu':  (torch.float32, torch.float64, torch.bfloat16),
    'cuda': (torch.float16, torch.bfloat16, torch.float32, torch.float64),
}

_plugins = dict() # 'cpu' | 'cuda' => op namespace or None, looked up once per process.

def _load_plugin(device_type):
    # -fno-trapping-math lets the compiler vectorize selects between arithmetic results.
    return custom_ops.try_get_device_plugin('bias_act', device_type, ['bias_act.cpp'], ['bias_act.cu'], extra_cuda_cflags=['--use_fast_math'],
        headers=['bias_act.h'], source_dir=os.path.dirname(__file__), is_python_module=False,
        extra_cflags=['-O3', '-fno-trapping-math'] + custom_ops.cpu_simd_flags())

def _plugin(device_type):
    if device_type not in _plugins:
        plugin = _load_plugin(device_type)
        # The CUDA kernel is checked against the reference on the GPU it runs on (see custom_ops.self_check());
        # the CPU kernel is the one the test suite runs everywhere.
        if plugin is not None and device_type == 'cuda' and not _self_check(plugin, torch.device('cuda')):
            plugin = None
        _plugins[device_type] = plugin
    return _plugins[device_type]

def _self_check(plugin, device):
    """Whether the kernel of `plugin` matches the reference on `device`, in value and
    gradient, for every activation, with and without clamping (see custom_ops.self_check())."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([3, 5, 4, 2], generator=gen, dtype=torch.float64) * 3
    b = torch.randn([5], generator=gen, dtype=torch.float64)
    def run(fn, dtype):
        results = []
        for i, spec in enumerate(activation_funcs.values()):
            xd, bd = x.to(device, dtype).requires_grad_(True), b.to(device, dtype).requires_grad_(True)
            y = fn(xd, bd, 1, spec, float(spec.def_alpha), float(spec.def_gain), 2.0 if i % 2 else None)
            results += [y, *torch.autograd.grad(y.square().sum(), [xd, bd])]
        return results
    # float64 makes the reference exact; the kernel runs in float32, as networks use it.
    return custom_ops.self_check('bias_act', lambda: run(lambda *args: _run_kernel(plugin, *args), torch.float32),
        lambda: run(_bias_act_ref, torch.float64))

def resolve_impl(x, impl=None):
    """Returns the implementation that bias_act(x, impl=impl) runs: 'ref', 'cpu' or 'cuda'.

    None or 'auto' picks the kernel of x's device when it supports x's dtype
    and its plugin is available, else 'ref'. An explicit kernel that is
    unavailable (its plugin failed, with a warning, or is disabled) also gives 'ref'.
    """
    if impl not in (None, 'auto', 'ref', 'cpu', 'cuda'):
        raise ValueError(f"impl must be None, 'auto', 'ref', 'cpu' or 'cuda', got {impl!r}")
    if impl == 'ref':
        return 'ref'
    device = x.device.type
    if impl in (None, 'auto'):
        if x.dtype not in _kernel_dtypes.get(device, ()):
            return 'ref'
        impl = device
    elif device != impl or x.dtype not in _kernel_dtypes[impl]:
        raise ValueError(f"impl='{impl}' supports {impl} tensors of dtype {', '.join(map(str, _kernel_dtypes[impl]))}; "
            f'got a {device} tensor of dtype {x.dtype}')
    return impl if _plugin(impl) is not None else 'ref'

#----------------------------------------------------------------------------

def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl=None):
    """Fused bias and activation: clamp(act(x + b) * gain).

    Args:
        x:      Input tensor, of any shape.
        b:      Bias: a vector of x.shape[dim] elements with the dtype and device
                of x, or None for no bias.
        dim:    Dimension of x along which b is added; negative counts from the end.
        act:    Activation name, a key of `activation_funcs` ('linear' for none).
        alpha:  Shape parameter of the activation, or None for its default.
        gain:   Scale of the output, or None for the activation's default gain.
        clamp:  Clamp the output to [-clamp, +clamp], or None for no clamping.
                Where an output was clamped its derivatives are zero.
        impl:   'ref', 'cpu', 'cuda', or None / 'auto' to choose (see resolve_impl()).

    Returns:
        A tensor of the shape, dtype and memory format of x; x itself when
        there is nothing to do (no bias, linear, gain 1, no clamp).
    """
    if act not in activation_funcs:
        raise ValueError(f"Unknown activation {act!r}; expected one of {', '.join(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    if clamp is not None:
        clamp = float(clamp)
        if not clamp >= 0:
            raise ValueError(f'clamp must be None or non-negative, got {clamp}')
    if b is not None:
        dim = _check_bias(x, b, dim)
    if b is None and act == 'linear' and gain == 1 and clamp is None:
        return x

    if resolve_impl(x, impl) == 'ref':
        return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)
    return _run_kernel(_plugin(x.device.type), x, b, dim, spec, alpha, gain, clamp)

def _run_kernel(plugin, x, b, dim, spec, alpha, gain, clamp):
    """bias_act() through the kernel of `plugin`, differentiable as the reference."""
    kernel = _Kernel(plugin, dim, spec, alpha, gain, clamp)
    # Made dense outside the autograd functions, so that the copies are part of the graph.
    x = x.contiguous(memory_format=_memory_format(x))
    b = b.contiguous() if b is not None else None
    if torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)):
        return _BiasAct.apply(x, b, kernel)
    return kernel(x, 0, b=b) # Nothing to differentiate: spares the autograd function's overhead.

def _check_bias(x, b, dim):
    """Validates b against x and returns dim as a non-negative index."""
    if not isinstance(b, torch.Tensor) or b.ndim != 1:
        raise ValueError('b must be a 1-D tensor')
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f'dim={dim} is out of range for a tensor of {x.ndim} dimensions')
    dim %= x.ndim
    if b.shape[0] != x.shape[dim]:
        raise ValueError(f'b has {b.shape[0]} elements, x.shape[{dim}] is {x.shape[dim]}')
    if b.dtype != x.dtype or b.device != x.device:
        raise ValueError(f'b ({b.dtype}, {b.device}) must have the dtype and device of x ({x.dtype}, {x.device})')
    return dim

def _bias_act_ref(x, b, dim, spec, alpha, gain, clamp):
    """Reference implementation: standard PyTorch ops, differentiable to any order."""
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x

#----------------------------------------------------------------------------
# Kernels, and their derivatives as two nested autograd functions: _BiasAct's
# backward runs _BiasActGrad, whose own backward gives the second derivative.

def _memory_format(x):
    """The dense layout the kernels run x in: channels-last feature maps stay so, anything else is made contiguous."""
    channels_last = x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format

def _sum_to_bias(dx, dim):
    return dx.sum([i for i in range(dx.ndim) if i != dim])

@dataclasses.dataclass(frozen=True)
class _Kernel:
    plugin:     object              # Op namespace holding bias_act.
    dim:        int                 # Bias dimension, non-negative.
    spec:       Activation          # The activation.
    alpha:      float               # Its shape parameter, resolved.
    gain:       float               # Output gain, resolved.
    clamp:      Optional[float]     # Output bound, or None.

    @property
    def keeps_x(self):
        # Besides the derivatives that read it, the second derivative needs x
        # and b as inputs of _BiasActGrad, to reach them in the graph.
        return self.spec.ref == 'x' or self.spec.has_2nd_grad

    @property
    def keeps_y(self):
        # y also tells where the output was clamped, unless it is recomputed from x.
        return self.spec.ref == 'y' or (self.clamp is not None and self.spec.ref != 'x')

    @property
    def constant_grad(self):
        # Linear without clamp: the derivative is the gain everywhere.
        return self.spec.ref == '' and self.clamp is None

    def __call__(self, x, grad, b=None, xref=None, yref=None, dy=None):
        clamp = -1.0 if self.clamp is None else self.clamp
        return self.plugin.bias_act(x, b, xref, yref, dy, grad, self.dim, self.spec.cuda_idx, self.alpha, self.gain, clamp)

class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, kernel): # pylint: disable=arguments-differ
        y = kernel(x, 0, b=b)
        ctx.kernel = kernel
        ctx.memory_format = _memory_format(x)
        ctx.save_for_backward(x if kernel.keeps_x else None, b if kernel.keeps_x else None, y if kernel.keeps_y else None)
        return y

    @staticmethod
    def backward(ctx, dy): # pylint: disable=arguments-differ
        kernel = ctx.kernel
        x, b, y = ctx.saved_tensors
        if kernel.constant_grad:
            dx = dy * kernel.gain if kernel.gain != 1 else dy
        else:
            dx = _BiasActGrad.apply(dy.contiguous(memory_format=ctx.memory_format), x, b, y, kernel)
        db = _sum_to_bias(dx, kernel.dim) if ctx.needs_input_grad[1] else None
        return dx, db, None

class _BiasActGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, b, y, kernel): # pylint: disable=arguments-differ
        ctx.kernel = kernel
        ctx.memory_format = _memory_format(dy)
        ctx.save_for_backward(dy if kernel.spec.has_2nd_grad else None, x, b, y)
        return kernel(dy, 1, b=b, xref=x, yref=y)

    @staticmethod
    def backward(ctx, d_dx): # pylint: disable=arguments-differ
        kernel = ctx.kernel
        dy, x, b, y = ctx.saved_tensors
        d_dx = d_dx.contiguous(memory_format=ctx.memory_format)
        d_dy = _BiasActGrad.apply(d_dx, x, b, y, kernel) if ctx.needs_input_grad[0] else None
        d_x = d_b = None
        if kernel.spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = kernel(d_dx, 2, b=b, xref=x, yref=y, dy=dy)
            d_b = _sum_to_bias(d_x, kernel.dim) if ctx.needs_input_grad[2] else None
        return d_dy, d_x, d_b, None, None
