"""Filtered leaky ReLU: the alias-free nonlinearity of StyleGAN3.

`filtered_lrelu()` runs, for each channel of each image,

    1. add the bias b;
    2. upsample by `up` with the FIR filter fu (gain up**2, which keeps the
       DC level), after padding the upsampled image by `padding`;
    3. leaky ReLU with the given slope, times gain, clamped to [-clamp, +clamp];
    4. filter with fd and downsample by `down`.

Arguments, defaults and results are those of NVIDIA's StyleGAN3 op of the same
name, so that its networks and pickles run unchanged.

Implementations (the `impl` argument):
    'ref'   pure PyTorch, composed of upfirdn2d() and bias_act() in their
            reference implementations: any device and floating dtype,
            differentiable to any order.
    'cuda'  CUDA kernels: one pass (filtered_lrelu.cu) adds the bias,
            upsamples with fu (expanded to 2D when separable) and applies the
            leaky ReLU, gain and clamp, writing the upsampled, activated image
            and, when a gradient will be needed, the activation's derivative
            at each of its pixels (in x's dtype); the downsampling filter is
            then a pass of the upfirdn2d kernel. Backward multiplies the
            incoming gradient by that saved derivative between two upfirdn2d
            kernel passes (the filters' adjoints). The derivative of a leaky
            ReLU is piecewise constant, its own derivative zero almost
            everywhere: kept as a constant, it leaves the backward pass
            differentiable, with the reference's second derivatives (NVIDIA's
            kernel has none). float16, bfloat16, float32 and float64 (filters
            in float32); no gradient with respect to the filters.
    'cpu'   C++ kernels (filtered_lrelu.cpp, upfirdn2d.cpp): the CUDA
            kernels' per-pixel code (filtered_lrelu.h, upfirdn2d.h), compiled
            for the host and run by parallel loops over the output pixels, in
            the same passes, with the same dtypes and derivatives. They are
            there so that the arithmetic of the CUDA kernels is tested on
            every machine, not for speed: on StyleGAN3-like layers at CPU
            sizes (bench/bench_filtered_lrelu.py --device cpu; a 2.5 GHz
            Xeon, AVX-512, torch 2.13, float32) they take 5 to 12 times as
            long as the reference, forward and backward alike (at 1 thread,
            forward: 117 ms against 13 ms for 2x up and down of
            [2, 64, 36, 36] with 12-tap filters; at 2 threads alike).
`resolve_impl()` chooses: the CUDA kernels for CUDA tensors of those dtypes
once both plugins (this op's and upfirdn2d's) have been built (see
torch_utils.custom_ops) and have passed their self-checks against the
reference, else the reference. On CPU, 'auto' is the reference; the CPU
kernels run when asked for by name (impl='cpu'), after the same builds and
self-checks.
"""

import dataclasses
import os
from typing import Optional

import numpy as np
import torch

from .. import custom_ops
from .. import misc
from . import bias_act
from . import upfirdn2d

#----------------------------------------------------------------------------

# 'auto' runs the kernels on upfirdn2d's devices: resolve_impl() makes upfirdn2d's choice.
_auto_devices = upfirdn2d._auto_devices # pylint: disable=protected-access

_plugins = dict() # 'cpu' | 'cuda' => (this op's namespace, upfirdn2d's), or None when unavailable; looked up once per process.

def _plugin(device_type):
    """The op namespaces of this op and upfirdn2d whose kernels run on `device_type`, built and self-checked, or None."""
    if device_type not in _plugins:
        plugins = None
        up_plugin = upfirdn2d._plugin(device_type) # pylint: disable=protected-access
        if up_plugin is not None:
            plugin = custom_ops.try_get_device_plugin('filtered_lrelu', device_type, ['filtered_lrelu.cpp'], ['filtered_lrelu.cu'],
                headers=['filtered_lrelu.h', 'upfirdn2d.h'], source_dir=os.path.dirname(__file__), is_python_module=False,
                extra_cflags=['-O3'] + custom_ops.cpu_simd_flags())
            if plugin is not None and _self_check((plugin, up_plugin), torch.device(device_type)):
                plugins = (plugin, up_plugin)
        _plugins[device_type] = plugins
    return _plugins[device_type]

def _self_check(plugins, device):
    """Whether the kernels of `plugins` match the reference on `device`, in
    value and in the gradients with respect to x and b (see custom_ops.self_check())."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 6, 5], generator=gen).to(device)
    b = torch.randn([3], generator=gen).to(device)
    fu = torch.rand([8], generator=gen).to(device) # Separable, expanded to 2D by the kernel.
    fd = torch.rand([3, 4], generator=gen).to(device)
    args = dict(up=2, down=2, padding=(3, 2, 1, 4), gain=1.5, slope=0.3, clamp=1.0, flip_filter=False)
    def run(fn, dtype): # float64 makes the reference exact (no TF32 convolutions).
        xg, bg = x.to(dtype).requires_grad_(True), b.to(dtype).requires_grad_(True)
        y = fn(xg, bg)
        return [y, *torch.autograd.grad(y.square().sum(), [xg, bg])]
    return custom_ops.self_check(f'filtered_lrelu ({device.type})', lambda: run(lambda x, b: _filtered_lrelu_kernel(x, fu, fd, b, plugins=plugins, **args), torch.float32),
        lambda: run(lambda x, b: _filtered_lrelu_ref(x, fu, fd, b, **args), torch.float64))

def resolve_impl(x, impl='auto', fu=None, fd=None):
    """Returns the implementation that filtered_lrelu(x, fu, fd, ..., impl=impl) runs: 'ref', 'cpu' or 'cuda'.

    'auto' (or None) picks the kernels of x's device, if it is one of
    `_auto_devices`, for a dtype they support, unless a filter needs a
    gradient, and when their plugins are available (built and self-checked);
    otherwise 'ref'. Explicit kernels that are unavailable also give 'ref'.
    """
    # pylint: disable=protected-access
    usable = not (upfirdn2d._differentiates(fu) or upfirdn2d._differentiates(fd))
    return upfirdn2d._choose_impl(x, impl, usable=usable, requirement='filters that need no gradient', plugin=_plugin)

#----------------------------------------------------------------------------

def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False, impl='auto'):
    """Bias, upsampling, leaky ReLU, clamping and downsampling (see the module docstring).

    Args:
        x:           Input [batch_size, num_channels, in_height, in_width], floating point.
        fu:          Upsampling filter from upfirdn2d.setup_filter() or a float32
                     tensor: [filter_height, filter_width], [filter_taps]
                     (separable), or None (identity).
        fd:          Downsampling filter, likewise.
        b:           Bias [num_channels] with the dtype and device of x, or None.
        up:          Integer upsampling factor (the same along x and y).
        down:        Integer downsampling factor (the same along x and y).
        padding:     Padding of the upsampled image, before the upsampling filter:
                     an int, [x, y] or [x_before, x_after, y_before, y_after].
        gain:        Scale of the leaky ReLU's output.
        slope:       Slope of the leaky ReLU for negative inputs.
        clamp:       Clamp the scaled leaky ReLU's output to [-clamp, +clamp], or None.
        flip_filter: False: convolution with the filters; True: correlation.
        impl:        'auto', 'ref', 'cpu' or 'cuda' (see resolve_impl()).

    Returns:
        [batch_size, num_channels, out_height, out_width] in x's dtype, with
        out_width = (in_width * up + pad_x0 + pad_x1 - (fu_width - 1) - (fd_width - 1) + (down - 1)) // down
        and likewise for the height.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('x must be a 4D tensor [batch_size, num_channels, height, width]')
    # pylint: disable=protected-access
    up = upfirdn2d._as_int(up, 'up')
    down = upfirdn2d._as_int(down, 'down')
    if up < 1 or down < 1:
        raise ValueError(f'up and down must be at least 1, got up={up}, down={down}')
    padding = upfirdn2d._parse_padding(padding)
    if gain < 0 or slope < 0 or (clamp is not None and clamp < 0):
        raise ValueError(f'gain, slope and clamp must be non-negative, got gain={gain}, slope={slope}, clamp={clamp}')
    out_w, out_h = _output_size(x, fu, fd, up, down, padding)
    if out_w < 1 or out_h < 1:
        raise ValueError(f'The output would be empty ({out_h}x{out_w})')
    args = dict(up=up, down=down, padding=padding, gain=float(gain), slope=float(slope), clamp=None if clamp is None else float(clamp), flip_filter=bool(flip_filter))
    impl = resolve_impl(x, impl, fu, fd)
    if impl == 'ref':
        return _filtered_lrelu_ref(x, fu, fd, b, **args)
    return _filtered_lrelu_kernel(x, fu, fd, b, plugins=_plugin(impl), **args)

def _output_size(x, fu, fd, up, down, padding):
    """(out_width, out_height) of filtered_lrelu() with these arguments; padding as four ints."""
    fu_w, fu_h = upfirdn2d._get_filter_size(fu) # pylint: disable=protected-access
    fd_w, fd_h = upfirdn2d._get_filter_size(fd) # pylint: disable=protected-access
    px0, px1, py0, py1 = padding
    with misc.suppress_tracer_warnings(): # Sizes are constants of a traced graph.
        in_h, in_w = int(x.shape[2]), int(x.shape[3])
    out_w = (in_w * up + (px0 + px1) - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + (py0 + py1) - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    return out_w, out_h

#----------------------------------------------------------------------------

@misc.profiled_function
def _filtered_lrelu_ref(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """Reference implementation from upfirdn2d() and bias_act(), differentiable to any order.
    Arguments as filtered_lrelu(), checked, with padding as four ints."""
    out_w, out_h = _output_size(x, fu, fd, up, down, padding)
    batch_size, num_channels = x.shape[:2]
    in_dtype = x.dtype

    x = bias_act.bias_act(x, b, impl='ref')
    x = upfirdn2d.upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter, impl='ref')
    x = bias_act.bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp, impl='ref')
    x = upfirdn2d.upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl='ref')

    misc.assert_shape(x, [batch_size, num_channels, out_h, out_w])
    assert x.dtype == in_dtype
    return x

#----------------------------------------------------------------------------
# Kernels: the fused bias, upsampling and activation pass, then the
# downsampling pass of upfirdn2d.

def _filtered_lrelu_kernel(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, plugins):
    """The kernels of `plugins` (this op's namespace, upfirdn2d's). Arguments as _filtered_lrelu_ref()."""
    # pylint: disable=protected-access
    plugin, up_plugin = plugins
    if b is not None:
        bias_act._check_bias(x, b, 1)
        b = b.contiguous()
    fu = torch.ones([1, 1], device=x.device) if fu is None else fu.detach().to(device=x.device, dtype=torch.float32)
    fu = torch.outer(fu, fu) if fu.ndim == 1 else fu.contiguous() # One 2D pass, to fuse the activation with it.
    # Made dense outside the autograd function, so that the copy is part of the graph.
    x = x.contiguous(memory_format=bias_act._memory_format(x))
    act = _BiasUpsampleLrelu(plugin, upfirdn2d._Pass(up_plugin, up, up, 1, 1, *padding, flip_filter, float(up ** 2)), slope, gain, clamp)
    write_grad = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    y, _ = _BiasUpsampleLreluFn.apply(x, b, fu, act, write_grad)
    return upfirdn2d._upfirdn2d_kernel(y, fd, 1, 1, down, down, 0, 0, 0, 0, flip_filter, 1.0, plugin=up_plugin)

@dataclasses.dataclass(frozen=True)
class _BiasUpsampleLrelu:
    """The fused op of the filtered_lrelu plugin, with its arguments besides x, b and fu."""
    plugin:     object              # Op namespace holding bias_upsample_lrelu.
    up_pass:    upfirdn2d._Pass     # The upsampling filter's pass (up, padding, flip, gain); also gives its adjoint.
    slope:      float
    gain:       float
    clamp:      Optional[float]     # Or None for no clamping.

    def __call__(self, x, b, fu, write_grad):
        p = self.up_pass
        return self.plugin.bias_upsample_lrelu(x, b, fu, p.upx, p.padx0, p.padx1, p.pady0, p.pady1, p.flip_filter, p.gain,
            self.slope, self.gain, -1.0 if self.clamp is None else self.clamp, write_grad)

class _BiasUpsampleLreluFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, act, write_grad): # pylint: disable=arguments-differ
        y, dy_dv = act(x, b, fu, write_grad)
        ctx.mark_non_differentiable(dy_dv)
        ctx.save_for_backward(fu, dy_dv)
        ctx.act = act
        ctx.in_size = x.shape[2:]
        return y, dy_dv

    @staticmethod
    def backward(ctx, dy, _): # pylint: disable=arguments-differ
        fu, dy_dv = ctx.saved_tensors
        (in_h, in_w), (out_h, out_w), (fh, fw) = ctx.in_size, dy.shape[2:], fu.shape
        # The activation's derivative is a constant of the backward pass, and
        # the filter's adjoint an upfirdn2d pass: this stays differentiable.
        dv = (dy * dy_dv).contiguous(memory_format=bias_act._memory_format(dy_dv)) # pylint: disable=protected-access
        dx = upfirdn2d._Upfirdn2d.apply(dv, fu, ctx.act.up_pass.transpose(in_w, in_h, out_w, out_h, fw, fh)) # pylint: disable=protected-access
        db = dx.sum([0, 2, 3]) if ctx.needs_input_grad[1] else None
        return dx, db, None, None, None

#----------------------------------------------------------------------------
