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
            respect to x (R1 regularization differentiates through it twice).
A fused kernel may join it; `resolve_impl()` is the one place that chooses.
"""

import operator

import torch

from .. import misc

#----------------------------------------------------------------------------
# Implementations.

_impls = ('ref',) # Those that exist, in the order 'auto' prefers them when they apply.

def resolve_impl(x, impl='auto'):
    """Returns the implementation that upfirdn2d(x, ..., impl=impl) runs.

    'auto' (or None) picks the fastest implementation available for x's
    device and dtype; today that is always 'ref'. An explicit name runs that
    implementation.
    """
    if impl not in (None, 'auto') + _impls:
        raise ValueError(f"impl must be 'auto' or one of {', '.join(repr(name) for name in _impls)}, got {impl!r}")
    _ = x # A kernel would be chosen here by x.device and x.dtype, as bias_act.resolve_impl() does.
    return 'ref'

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
    f = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
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
        impl:        'auto' or 'ref' (see resolve_impl()).

    Returns:
        [batch_size, num_channels, out_height, out_width], with
        out_width = (in_width * up_x + pad_x0 + pad_x1 - filter_width) // down_x + 1
        and likewise for the height.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('x must be a 4D tensor [batch_size, num_channels, height, width]')
    impl = resolve_impl(x, impl)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    return _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain)

@misc.profiled_function
def _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
    """Reference implementation from differentiable PyTorch ops."""
    fw, fh = _get_filter_size(f)
    batch_size, num_channels, in_height, in_width = x.shape
    with misc.suppress_tracer_warnings():
        in_height, in_width = int(in_height), int(in_width)
    padded_w = in_width * upx + padx0 + padx1
    padded_h = in_height * upy + pady0 + pady1
    if padded_w < fw or padded_h < fh:
        raise ValueError(f'The padded, upsampled image ({padded_h}x{padded_w}) is smaller than the filter ({fh}x{fw})')

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
