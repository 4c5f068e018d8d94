"""2D convolution fused with FIR-filtered upsampling and downsampling.

`conv2d_resample(x, w, f, up, down, padding)` computes, with NVIDIA's
StyleGAN2-ADA/StyleGAN3 semantics and arguments:

    1. upsampling of x by `up` with filter f (upfirdn2d with gain up**2),
       the padding being applied here, once, to the upsampled image;
    2. a valid 2D convolution with the weight w (correlation, as conv2d,
       when flip_weight, else true convolution);
    3. downsampling by `down` with filter f.

The padding given is what the convolution needs (kernel_size // 2 for a
"same" convolution); the padding the filters need to keep the image aligned
is added here. All three steps are linear and shift-invariant, so they are
reordered where that is cheaper (the filter before a strided convolution, a
1x1 convolution on the smaller side, a transposed convolution for upsampling);
the result is the same up to rounding.

Convolutions go through conv2d_gradfix: differentiable twice, as R1
regularization needs, and able to skip weight gradients where only the input
gradient is wanted (no_weight_gradients).
"""

import torch

from .. import misc
from . import conv2d_gradfix
from . import upfirdn2d
from .upfirdn2d import _get_filter_size, _parse_padding

#----------------------------------------------------------------------------

def _get_weight_shape(w):
    with misc.suppress_tracer_warnings(): # Sizes are constants of a traced graph.
        return [int(size) for size in w.shape]

def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d (correlation with w if flip_weight, else convolution), or conv_transpose2d."""
    kh, kw = w.shape[2:]
    if not flip_weight and (kh > 1 or kw > 1):
        w = w.flip([2, 3])
    if transpose:
        return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=groups)

#----------------------------------------------------------------------------

@misc.profiled_function
def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """2D convolution with optional upsampling and downsampling.

    Args:
        x:           Input [batch_size, in_channels, in_height, in_width].
        w:           Weight [out_channels, in_channels // groups, kernel_height,
                     kernel_width], of x's dtype.
        f:           Low-pass filter for the resampling, from
                     upfirdn2d.setup_filter(); None for the identity.
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     Padding of the upsampled image: an int, [x, y] or
                     [x_before, x_after, y_before, y_after].
        groups:      Number of groups of channels (as conv2d).
        flip_weight: True: correlation with w (as conv2d); False: convolution.
        flip_filter: True: correlation with f; False: convolution.

    Returns:
        [batch_size, out_channels, out_height, out_width].
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('x must be a 4D tensor [batch_size, in_channels, height, width]')
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError(f'w must be a 4D tensor of the dtype of x ({x.dtype})')
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2)):
        raise ValueError('f must be None or a 1D or 2D tensor from upfirdn2d.setup_filter()')
    for name, value in [('up', up), ('down', down), ('groups', groups)]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int, got {value!r}')
    out_channels, in_channels_per_group, kh, kw = _get_weight_shape(w)
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Padding for the filters, so that resampling keeps the image centred
    # (as upfirdn2d.upsample2d() and downsample2d() do).
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    pad = [px0, px1, py0, py1]

    # A 1x1 convolution commutes with resampling: run it on the smaller image.
    if kh == 1 and kw == 1 and up == 1 and down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kh == 1 and kw == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)

    # Downsampling: filter (with all the padding), then a strided convolution,
    # which only computes the outputs that are kept.
    if up == 1 and down > 1:
        x = upfirdn2d.upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: a transposed convolution of stride `up` is zero insertion
    # followed by a full convolution, i.e. the zero-inserted image (with its
    # up-1 trailing zeros) padded by kh-1 before and kh-up after, convolved.
    # The filter step takes what remains of the padding; a crop common to both
    # sides goes to the transposed convolution, which then skips those outputs.
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else: # [groups * O/g, I/g, kh, kw] -> [groups * I/g, O/g, kh, kw]
            w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
            w = w.transpose(1, 2).reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)
        px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
        crop_x = max(0, -max(px0, px1))
        crop_y = max(0, -max(py0, py1))
        # conv_transpose2d correlates with the flipped weight: flip_weight inverts.
        x = _conv(x, w, stride=up, padding=[crop_y, crop_x], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d.upfirdn2d(x, f, padding=[px0 + crop_x, px1 + crop_x, py0 + crop_y, py1 + crop_y],
            gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling: conv2d pads by itself when the padding is symmetric and not negative.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d.upfirdn2d(x, None, padding=pad)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)

#----------------------------------------------------------------------------
