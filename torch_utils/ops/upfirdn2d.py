"""Upsampling, FIR filtering and downsampling of batches of 2D images.

`upfirdn2d()` takes each channel of each image through four steps, as
scipy.signal.upfirdn() does in one dimension:

    1. upsample: insert up-1 zeros after every pixel;
    2. pad the upsampled image with zeros (negative padding crops it);
    3. convolve with a 2D FIR filter, keeping only the outputs whose whole
       footprint lies inside the padded image ("valid" convolution);
    4. downsample: keep every down-th pixel, starting with the first.

`filter2d()`, `upsample2d()` and `downsample2d()` choose the padding that keeps
the image aligned and its size the input size, a multiple or a fraction of it.
`setup_filter()` prepares filters for all of them. Arguments, defaults and
results are those of NVIDIA's StyleGAN2-ADA/StyleGAN3 op of the same name.

Filters are either 2D, [filter_height, filter_width], or separable: a 1D
vector of taps applied along x and then along y (the 2D filter being their
outer product). A separable filter gets the square root of the gain in each
of its two passes.

Implementations (the `impl` argument):
    'ref'   pure PyTorch (zero insertion, padding and a depthwise conv2d):
            any device and floating dtype, differentiable to any order with
            respect to x and f (R1 regularization differentiates through it
            twice).
    'cuda'  CUDA kernel (upfirdn2d.cu): one thread per output pixel sums the
            filter taps that meet input samples, skipping the inserted zeros;
            float16, bfloat16, float32 and float64 (half precision sums in
            float32; the filter is taken in float32), contiguous or
            channels_last. A separable filter runs as
            two passes, along x then y, as in the reference. The gradient with
            respect to x is itself an upfirdn2d (down and up swapped, the
            filter flipped, the padding mirrored), computed by the same
            kernel, so the op is differentiable to any order with respect to
            x; it gives no gradient with respect to f.
    'cpu'   C++ kernel (upfirdn2d.cpp): the CUDA kernel's per-pixel code
            (upfirdn2d.h), compiled for the host and run by a parallel loop
            over the output pixels, with the same dtypes, layouts, passes and
            derivatives. It is there so that the arithmetic of the CUDA kernel
            is tested on every machine, not for speed: on StyleGAN-like layers
            at CPU sizes (bench/bench_upfirdn2d.py --device cpu; a 2.5 GHz
            Xeon, AVX-512, torch 2.13, float32) it takes 4 to 20 times as long
            as the reference, whose depthwise convolutions are vectorized (at
            1 thread, forward: 28 ms against 6.3 ms for 4x4 upsampling of
            [2, 64, 32, 32], 77 ms against 13 ms for 12-tap separable
            upsampling of [2, 64, 36, 36]; at 2 threads alike).
`resolve_impl()` chooses: the CUDA kernel for CUDA tensors of those dtypes
once its plugin has been built (see torch_utils.custom_ops) and has passed
its self-check against the reference, else the reference. On CPU, 'auto' is
the reference; the CPU kernel runs when asked for by name (impl='cpu'), after
the same build and self-check.
"""

import dataclasses
import operator
import os

import torch

from .. import custom_ops
from .. import misc
from . import bias_act

#----------------------------------------------------------------------------
# Implementations.

_impls = ('ref', 'cpu', 'cuda')
_kernel_dtypes = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_auto_devices = ('cuda',) # Devices on which 'auto' runs the kernel: not CPU, where it is slower (see the module docstring).

_plugins = dict() # 'cpu' | 'cuda' => op namespace, or None when unavailable; looked up once per process.

def _load_plugin(device_type):
    return custom_ops.try_get_device_plugin('upfirdn2d', device_type, ['upfirdn2d.cpp'], ['upfirdn2d.cu'],
        headers=['upfirdn2d.h'], source_dir=os.path.dirname(__file__), is_python_module=False,
        extra_cflags=['-O3'] + custom_ops.cpu_simd_flags())

def _plugin(device_type):
    """The op namespace whose kernel runs on `device_type`, built and self-checked, or None."""
    if device_type not in _plugins:
        plugin = _load_plugin(device_type)
        _plugins[device_type] = plugin if plugin is not None and _self_check(plugin, torch.device(device_type)) else None
    return _plugins[device_type]

def _self_check(plugin, device):
    """Whether the kernel of `plugin` matches the reference on `device` (see custom_ops.self_check())."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 7, 6], generator=gen).to(device)
    filters = [torch.rand([4, 3], generator=gen).to(device), torch.rand([5], generator=gen).to(device)]
    # Up, down, negative padding and both filter kinds; float64 makes the reference exact (no TF32 convolutions).
    cases = [dict(up=[2, 1], down=[1, 3], padding=[2, -1, 3, 1], flip_filter=False, gain=2), dict(up=2, down=2, padding=1, flip_filter=True)]
    run = lambda fn, dtype: [fn(x.to(dtype), f, *_parse_args(**case)) for f in filters for case in cases]
    return custom_ops.self_check(f'upfirdn2d ({device.type})', lambda: run(lambda *args: _upfirdn2d_kernel(*args, plugin=plugin), torch.float32),
        lambda: run(_upfirdn2d_ref, torch.float64))

def _differentiates(f):
    """Whether autograd would need the gradient with respect to the filter f, which the kernels do not give."""
    return torch.is_grad_enabled() and isinstance(f, torch.Tensor) and f.requires_grad

def resolve_impl(x, impl='auto', f=None):
    """Returns the implementation that upfirdn2d(x, f, ..., impl=impl) runs: 'ref', 'cpu' or 'cuda'.

    'auto' (or None) picks the kernel of x's device, if it is one of
    `_auto_devices`, for a dtype it supports, unless f needs a gradient, and
    when its plugin is available (built and self-checked); otherwise 'ref'.
    An explicit kernel that is unavailable also gives 'ref'.
    """
    return _choose_impl(x, impl, usable=not _differentiates(f), requirement='a filter that needs no gradient', plugin=_plugin)

def _choose_impl(x, impl, usable, requirement, plugin):
    """The choice of resolve_impl(), shared with filtered_lrelu: `usable` says
    whether the kernels can take the call apart from x's dtype, `requirement`
    says in words what they need, and plugin(device_type) gives their plugin."""
    if impl not in (None, 'auto') + _impls:
        raise ValueError(f"impl must be 'auto' or one of {', '.join(repr(name) for name in _impls)}, got {impl!r}")
    if impl == 'ref':
        return 'ref'
    device = x.device.type
    usable = usable and x.dtype in _kernel_dtypes
    if impl in (None, 'auto'):
        impl = device if device in _auto_devices and usable else 'ref'
    elif impl != device or not usable:
        raise ValueError(f"impl='{impl}' takes {impl} tensors of dtype {', '.join(map(str, _kernel_dtypes))} and {requirement}; "
            f'got a {device} tensor of dtype {x.dtype}')
    return impl if impl != 'ref' and plugin(impl) is not None else 'ref'

#----------------------------------------------------------------------------
# Argument parsing, shared with conv2d_resample (under NVIDIA's names, which
# their other ops import too).

def _as_int(value, what):
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f'{what} must be an int or a list of ints, got {value!r}') from None

def _parse_scaling(scaling):
    """up or down: an int, or [x, y]. Returns (sx, sy), both >= 1."""
    if isinstance(scaling, (list, tuple)):
        if len(scaling) != 2:
            raise ValueError(f'A scaling factor must be an int or [x, y], got {scaling!r}')
        sx, sy = (_as_int(s, 'A scaling factor') for s in scaling)
    else:
        sx = sy = _as_int(scaling, 'A scaling factor')
    if sx < 1 or sy < 1:
        raise ValueError(f'Scaling factors must be at least 1, got {scaling!r}')
    return sx, sy

def _parse_padding(padding):
    """An int, [x, y] or [x_before, x_after, y_before, y_after]. Returns the four."""
    if isinstance(padding, (list, tuple)):
        values = [_as_int(p, 'padding') for p in padding]
        if len(values) == 2:
            return values[0], values[0], values[1], values[1]
        if len(values) == 4:
            return tuple(values)
        raise ValueError(f'padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}')
    p = _as_int(padding, 'padding')
    return p, p, p, p

def _get_filter_size(f):
    """(width, height) of a filter: a 2D [h, w] or separable [taps] tensor, or None (1x1)."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError('A filter must be None or a tensor of 1 (separable) or 2 dimensions')
    with misc.suppress_tracer_warnings(): # Sizes are constants of a traced graph.
        fw, fh = int(f.shape[-1]), int(f.shape[0])
    if fw < 1 or fh < 1:
        raise ValueError(f'Empty filter of shape {list(f.shape)}')
    return fw, fh

def _check_sizes(in_width, in_height, fw, fh, upx, upy, padx0, padx1, pady0, pady1):
    """Raises ValueError for a padded, upsampled image smaller than the filter."""
    padded_w = in_width * upx + padx0 + padx1
    padded_h = in_height * upy + pady0 + pady1
    if padded_w < fw or padded_h < fh:
        raise ValueError(f'The padded, upsampled image ({padded_h}x{padded_w}) is smaller than the filter ({fh}x{fw})')

#----------------------------------------------------------------------------

def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Makes a float32 FIR filter for the functions of this module.

    Args:
        f:           Filter taps: a 2D array [height, width] (non-separable),
                     a 1D array [taps] (separable), a scalar (an impulse), or
                     None (the identity): a tensor, numpy array or list.
        device:      Device of the result.
        normalize:   Divide by the sum of the taps, so that a constant image
                     keeps its value.
        flip_filter: Flip the filter along all its axes.
        gain:        Overall gain of the filter on the signal: a 2D filter is
                     multiplied by gain, each pass of a separable one by sqrt(gain).
        separable:   Return a 1D separable filter (only possible for a 1D f)
                     or a 2D one; None: separable when f is 1D with 8 taps or more.

    Returns:
        A float32 tensor [taps] (separable) or [height, width].
    """
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32, device='cpu') # Made from data on the CPU, then moved.
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f'A filter must have 0, 1 or 2 dimensions and at least one tap, got shape {list(f.shape)}')
    f = f.reshape(1) if f.ndim == 0 else f
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if separable and f.ndim != 1:
        raise ValueError('A 2D filter cannot be made separable')
    if not separable and f.ndim == 1:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)

#----------------------------------------------------------------------------

def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='auto'):
    """Upsamples, pads, filters and downsamples a batch of 2D images (see the module docstring).

    Args:
        x:           Input [batch_size, num_channels, in_height, in_width],
                     floating point.
        f:           Filter from setup_filter(): [filter_height, filter_width],
                     [filter_taps] (separable), or None (identity).
        up:          Upsampling factor: an int or [x, y].
        down:        Downsampling factor: an int or [x, y].
        padding:     Zero padding of the upsampled image, negative to crop:
                     an int, [x, y] or [x_before, x_after, y_before, y_after].
        flip_filter: False: convolution with f; True: correlation with f.
        gain:        Scale of the output (applied to the filter).
        impl:        'auto', 'ref', 'cpu' or 'cuda' (see resolve_impl()).

    Returns:
        [batch_size, num_channels, out_height, out_width], with
        out_width = (in_width * up_x + pad_x0 + pad_x1 - filter_width) // down_x + 1
        and likewise for the height.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('x must be a 4D tensor [batch_size, num_channels, height, width]')
    args = _parse_args(up, down, padding, flip_filter, gain)
    impl = resolve_impl(x, impl, f)
    if impl == 'ref':
        return _upfirdn2d_ref(x, f, *args)
    return _upfirdn2d_kernel(x, f, *args, plugin=_plugin(impl))

def _parse_args(up=1, down=1, padding=0, flip_filter=False, gain=1):
    """The arguments of upfirdn2d() after x and f, in the order that the implementations take them."""
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    return upx, upy, downx, downy, padx0, padx1, pady0, pady1, bool(flip_filter), float(gain)

@misc.profiled_function
def _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
    """Reference implementation from differentiable PyTorch ops."""
    fw, fh = _get_filter_size(f)
    batch_size, num_channels, in_height, in_width = x.shape
    with misc.suppress_tracer_warnings():
        in_height, in_width = int(in_height), int(in_width)
    _check_sizes(in_width, in_height, fw, fh, upx, upy, padx0, padx1, pady0, pady1)

    # 1. Zero insertion: each pixel becomes an up_y x up_x block with the pixel in its top left corner.
    if upx > 1 or upy > 1:
        x = x.reshape(batch_size, num_channels, in_height, 1, in_width, 1)
        x = torch.nn.functional.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(batch_size, num_channels, in_height * upy, in_width * upx)

    # 2. Padding, then cropping (negative amounts): in this order, as a crop
    # may reach into the padding on the other side.
    pad = [padx0, padx1, pady0, pady1]
    if any(p > 0 for p in pad):
        x = torch.nn.functional.pad(x, [max(p, 0) for p in pad])
    if any(p < 0 for p in pad):
        x = torch.nn.functional.pad(x, [min(p, 0) for p in pad])

    # 3 and 4. A valid depthwise correlation, strided to downsample. conv2d
    # correlates, so convolution with f is correlation with f flipped.
    if f is None:
        return x[:, :, ::downy, ::downx] * gain if gain != 1 else x[:, :, ::downy, ::downx]
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        w = (f * gain).expand(num_channels, 1, fh, fw)
        return torch.nn.functional.conv2d(x, w, stride=(downy, downx), groups=num_channels)
    f = f * (gain ** 0.5) if gain != 1 else f
    x = torch.nn.functional.conv2d(x, f.reshape(1, 1, 1, fw).expand(num_channels, 1, 1, fw), stride=(1, downx), groups=num_channels)
    x = torch.nn.functional.conv2d(x, f.reshape(1, 1, fh, 1).expand(num_channels, 1, fh, 1), stride=(downy, 1), groups=num_channels)
    return x

#----------------------------------------------------------------------------
# Kernels: one pass per 2D filter, and its derivative.

def _upfirdn2d_kernel(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain, plugin):
    """The kernel of `plugin`; a separable filter runs as two passes, along x then y."""
    fw, fh = _get_filter_size(f)
    _check_sizes(x.shape[3], x.shape[2], fw, fh, upx, upy, padx0, padx1, pady0, pady1)
    f = torch.ones([1, 1], device=x.device) if f is None else f.detach().to(device=x.device, dtype=torch.float32)
    # Made dense outside the autograd function, so that the copy is part of the graph.
    x = x.contiguous(memory_format=bias_act._memory_format(x)) # pylint: disable=protected-access
    if f.ndim == 2:
        return _Upfirdn2d.apply(x, f.contiguous(), _Pass(plugin, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain))
    gain = gain ** 0.5
    x = _Upfirdn2d.apply(x, f.reshape(1, fw), _Pass(plugin, upx, 1, downx, 1, padx0, padx1, 0, 0, flip_filter, gain))
    return _Upfirdn2d.apply(x, f.reshape(fh, 1), _Pass(plugin, 1, upy, 1, downy, 0, 0, pady0, pady1, flip_filter, gain))

@dataclasses.dataclass(frozen=True)
class _Pass:
    """One pass of the kernel: its arguments besides the input and the 2D filter."""
    plugin:         object  # Op namespace holding upfirdn2d.
    upx:            int
    upy:            int
    downx:          int
    downy:          int
    padx0:          int
    padx1:          int
    pady0:          int
    pady1:          int
    flip_filter:    bool
    gain:           float

    def __call__(self, x, f):
        return self.plugin.upfirdn2d(x, f, self.upx, self.upy, self.downx, self.downy,
            self.padx0, self.padx1, self.pady0, self.pady1, self.flip_filter, self.gain)

    def transpose(self, in_w, in_h, out_w, out_h, fw, fh):
        """The pass that computes the gradient with respect to the input (in_h x in_w)
        from that with respect to the output (out_h x out_w): the adjoint of this
        linear map. Input sample i met filter tap i * up + pad0 - o * down of
        output o; upsampling the output gradient by down, padding it by
        fw - 1 - pad0 and downsampling by up brings the same taps together in
        reverse order (hence the flip). The trailing padding makes the result
        in_w wide."""
        return dataclasses.replace(self, upx=self.downx, upy=self.downy, downx=self.upx, downy=self.upy,
            padx0=fw - 1 - self.padx0, padx1=in_w * self.upx - out_w * self.downx + self.padx0 - self.upx + 1,
            pady0=fh - 1 - self.pady0, pady1=in_h * self.upy - out_h * self.downy + self.pady0 - self.upy + 1,
            flip_filter=not self.flip_filter)

class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, p): # pylint: disable=arguments-differ
        y = p(x, f)
        ctx.save_for_backward(f)
        ctx.p = p
        ctx.in_size = x.shape[2:]
        ctx.memory_format = bias_act._memory_format(x) # pylint: disable=protected-access
        return y

    @staticmethod
    def backward(ctx, dy): # pylint: disable=arguments-differ
        f, = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            (in_h, in_w), (out_h, out_w), (fh, fw) = ctx.in_size, dy.shape[2:], f.shape
            # Applying this function again keeps the gradient differentiable.
            dx = _Upfirdn2d.apply(dy.contiguous(memory_format=ctx.memory_format), f, ctx.p.transpose(in_w, in_h, out_w, out_h, fw, fh))
        return dx, None, None

#----------------------------------------------------------------------------

def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='auto'):
    """Filters a batch of 2D images; with padding=0 the output has the input's size.

    `padding` (int, [x, y] or [x0, x1, y0, y1]) is added to that of the output,
    negative to crop. Pixels outside the image are zero. Other arguments as upfirdn2d().
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='auto'):
    """Upsamples a batch of 2D images by `up` (int or [x, y]) with filter f, keeping the
    image's mean level (the gain is multiplied by up_x * up_y); with padding=0
    the output is up times the input's size.

    `padding` (int, [x, y] or [x0, x1, y0, y1]) is added to that of the output,
    negative to crop. Other arguments as upfirdn2d().
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2, pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)

def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='auto'):
    """Downsamples a batch of 2D images by `down` (int or [x, y]) with filter f; with
    padding=0 the output is the input's size divided by down (rounded down).

    `padding` (int, [x, y] or [x0, x1, y0, y1]) pads the input, negative to
    crop. Other arguments as upfirdn2d().
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2, pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------
