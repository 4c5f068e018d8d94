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
A fused kernel may join it; `resolve_impl()` is the one place that chooses.
"""

import numpy as np
import torch

from .. import misc
from . import bias_act
from . import upfirdn2d

#----------------------------------------------------------------------------

_impls = ('ref',) # Those that exist, in the order 'auto' prefers them when they apply.

def resolve_impl(x, impl='auto'):
    """Returns the implementation that filtered_lrelu(x, ..., impl=impl) runs.

    'auto' (or None) picks the fastest implementation available for x's
    device and dtype; today that is always 'ref'.
    """
    if impl not in (None, 'auto') + _impls:
        raise ValueError(f"impl must be 'auto' or one of {', '.join(repr(name) for name in _impls)}, got {impl!r}")
    _ = x # A kernel would be chosen here by x.device and x.dtype.
    return 'ref'

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
        impl:        'auto' or 'ref' (see resolve_impl()).

    Returns:
        [batch_size, num_channels, out_height, out_width] in x's dtype, with
        out_width = (in_width * up + pad_x0 + pad_x1 - (fu_width - 1) - (fd_width - 1) + (down - 1)) // down
        and likewise for the height.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('x must be a 4D tensor [batch_size, num_channels, height, width]')
    up = upfirdn2d._as_int(up, 'up')
    down = upfirdn2d._as_int(down, 'down')
    if up < 1 or down < 1:
        raise ValueError(f'up and down must be at least 1, got up={up}, down={down}')
    impl = resolve_impl(x, impl)
    return _filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter)

#----------------------------------------------------------------------------

@misc.profiled_function
def _filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None, flip_filter=False):
    """Reference implementation from upfirdn2d() and bias_act(), differentiable to any order."""
    fu_w, fu_h = upfirdn2d._get_filter_size(fu)
    fd_w, fd_h = upfirdn2d._get_filter_size(fd)
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)
    if gain < 0 or slope < 0 or (clamp is not None and clamp < 0):
        raise ValueError(f'gain, slope and clamp must be non-negative, got gain={gain}, slope={slope}, clamp={clamp}')
    batch_size, num_channels, in_h, in_w = x.shape
    with misc.suppress_tracer_warnings(): # Sizes are constants of a traced graph.
        in_h, in_w = int(in_h), int(in_w)
    out_w = (in_w * up + (px0 + px1) - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + (py0 + py1) - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    if out_w < 1 or out_h < 1:
        raise ValueError(f'The output would be empty ({out_h}x{out_w})')
    in_dtype = x.dtype

    x = bias_act.bias_act(x, b, impl='ref')
    x = upfirdn2d.upfirdn2d(x, fu, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter, impl='ref')
    x = bias_act.bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp, impl='ref')
    x = upfirdn2d.upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl='ref')

    misc.assert_shape(x, [batch_size, num_channels, out_h, out_w])
    assert x.dtype == in_dtype
    return x

#----------------------------------------------------------------------------
