"""Equivariance metrics EQ-T (integer translation), EQ-T_frac (fractional
translation) and EQ-R (rotation) of "Alias-Free Generative Adversarial
Networks" (Karras et al. 2021, Appendix E), as StyleGAN3 defines them.

For a latent w and an image transformation T, the generator is asked for the
image of the transformed input, G(T^-1 input), and that is compared with the
transformed output T(G(input)), over the pixels where T(G(input)) is known
(a mask). Fractional translations and rotations are applied to the image with
band-limited (Lanczos-windowed sinc) resampling; for rotations both images are
further restricted to the frequencies that survive the rotation in both
directions (the paper's pseudo-rotation R*), so that the comparison measures
aliasing in the generator and not the resampling. The result is a PSNR in dB
for images in [-1, 1] (peak-to-peak 2):

    PSNR = 10 * log10(2^2 / MSE),  MSE = sum of squared errors / number of valid values,

with both sums pooled over all samples, channels and processes before the
ratio is taken, as StyleGAN3 does.

Conventions. The image plane is measured in image sides, centred on the image
centre, x to the right, y down; a 3x3 matrix `mat` acting on homogeneous
(x, y, 1) moves image content: the transformed image at p shows the original
at mat^-1 p. A translation t = (tx, ty) moves content right and down by
tx * W, ty * H pixels. Random translations are drawn uniformly in
[-translate_max, translate_max] image sides per axis (integer ones rounded to
whole pixels), rotation angles uniformly in [-rotate_max * pi, rotate_max * pi],
one draw per batch.

How a generator is asked for G(T^-1 input), found by duck typing:

- StyleGAN3: `G.synthesis.input.transform` is a 3x3 buffer applied to the
  coordinates of the Fourier input (the output at p is a function of
  transform @ p). It is set to mat^-1 for the transformed render, and restored
  afterwards.
- CREPS (an any-scale line generator, `render.supports_lines(G.synthesis)`):
  pixel (i, j) is a function of the row coordinate rows[i] and the column
  coordinate cols[j] only, with the training grid
  `render.lines_for_scale(G.img_resolution, 1)` at scale 1 (one pixel = its
  spacing, 1 / (res - 1)). Translating the output by (tx, ty) pixels means
  rendering pixel (i, j) at the coordinates of pixel (i - ty, j - tx): the
  lines are `rows - ty * spacing` and `cols - tx * spacing`. This is continuous
  and exact, so an exactly equivariant generator scores float precision.
  EQ-R is undefined for CREPS and raises ValueError: a rotation of the plane
  by an angle a gives each pixel the coordinates (x cos a - y sin a,
  x sin a + y cos a), each of which mixes the row and the column of the
  pixel, whereas the network reads the row coordinate only through the row
  Fourier features sin(2 pi f y) and the column coordinate only through the
  column features (separate weights), and combines the two lines by an outer
  product. No choice of row and column lines expresses such a rotation; the
  only rotation they can express is by pi (both lines reversed), which is not
  the metric. A quarter turn would swap the row and the column branches, which
  have different weights.
- Anything else (StyleGAN2: no continuous input) raises ValueError.

The errors are UnsupportedGeneratorError: a ValueError, and a
metric_utils.MetricError so that the registry reports them in one line.
"""

import contextlib
import copy
import math

import torch
import torch.fft

from torch_utils import render
from torch_utils.ops import upfirdn2d
from . import metric_utils

#----------------------------------------------------------------------------

class UnsupportedGeneratorError(metric_utils.MetricError, ValueError):
    """A metric that has no meaning for the given generator. A ValueError, and a MetricError
    so that the registry reports it as a one-line error."""

#----------------------------------------------------------------------------
# Kernels.

def sinc(x):
    """Normalized sinc, sin(pi x) / (pi x), with sinc(0) = 1."""
    return torch.special.sinc(x)

def lanczos_window(x, a):
    """Lanczos window of half-width a: sinc(x / a) inside |x| < a, zero outside."""
    return torch.where(x.abs() < a, sinc(x / a), torch.zeros_like(x))

def lanczos_kernel(x, a):
    """Lanczos-windowed sinc interpolation kernel of half-width a."""
    return sinc(x) * lanczos_window(x, a)

#----------------------------------------------------------------------------
# Image-plane transformations (3x3, homogeneous, moving content; see the module docstring).

def translation_matrix(tx, ty):
    """Moves content by (tx, ty) image sides."""
    mat = torch.eye(3, dtype=torch.float64)
    mat[0, 2], mat[1, 2] = float(tx), float(ty)
    return mat

def rotation_matrix(angle):
    """Rotates content by `angle` radians about the image centre (from +x towards +y)."""
    c, s = math.cos(float(angle)), math.sin(float(angle))
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)

#----------------------------------------------------------------------------
# The operators of Appendix E applied to images. Each returns (image, mask): the
# mask (same shape) is 1 where the transformed image is fully determined by the
# input, 0 elsewhere.

def integer_translate(x, tx, ty):
    """Shift [N, C, H, W] right by tx and down by ty whole pixels (operator T_x, E.1)."""
    _n, _c, h, w = x.shape
    tx, ty = int(tx), int(ty)
    out, mask = torch.zeros_like(x), torch.zeros_like(x)
    if abs(tx) < w and abs(ty) < h:
        dst = (slice(max(ty, 0), h + min(ty, 0)), slice(max(tx, 0), w + min(tx, 0)))
        src = (slice(max(-ty, 0), h + min(-ty, 0)), slice(max(-tx, 0), w + min(-tx, 0)))
        out[:, :, dst[0], dst[1]] = x[:, :, src[0], src[1]]
        mask[:, :, dst[0], dst[1]] = 1
    return out, mask

def _lanczos_taps(frac, a, device):
    """Taps h[k], k = -(a-1) .. a, of a shift by frac in [0, 1): out[n] = sum_k h[k] x[n - k]
    reproduces x at n - frac; normalized so that a constant image keeps its value."""
    k = torch.arange(-(a - 1), a + 1, dtype=torch.float64)
    taps = lanczos_kernel(k - frac, a)
    return (taps / taps.sum()).to(device=device, dtype=torch.float32)

def fractional_translate(x, tx, ty, a=3):
    """Shift [N, C, H, W] right by tx and down by ty pixels, any real amounts, by separable
    Lanczos-a interpolation (operator T_x, E.2).

    With t = i + f (i = floor(t)), out[n] = sum_k h_f[k] x[n - i - k] for k = -(a-1) .. a: a
    convolution with the taps, shifted by i, done by upfirdn2d with the padding that realizes
    the shift (negative padding crops). Valid where every tap reads an input pixel:
    n in [i + a, W - 1 + i - (a - 1)].
    """
    _n, _c, h, w = x.shape
    tx, ty = float(tx), float(ty)
    ix, iy = math.floor(tx), math.floor(ty)
    b = a - 1
    fx = _lanczos_taps(tx - ix, a, x.device).reshape(1, -1)
    fy = _lanczos_taps(ty - iy, a, x.device).reshape(-1, 1)
    out = upfirdn2d.upfirdn2d(x, fx, padding=[a + ix, b - ix, 0, 0])
    out = upfirdn2d.upfirdn2d(out, fy, padding=[0, 0, a + iy, b - iy])
    mask = torch.zeros_like(x)
    x0, x1 = max(ix + a, 0), min(w + ix - b, w)
    y0, y1 = max(iy + a, 0), min(h + iy - b, h)
    if x0 < x1 and y0 < y1:
        mask[:, :, y0:y1, x0:x1] = 1
    return out, mask

#----------------------------------------------------------------------------
# Band-limited affine resampling (rotation, E.3).

def _centred_positions(radius, up):
    """Positions k / up, |k| < radius * up, in FFT order (zero first), for circular convolution."""
    n = radius * up - 1
    pos = torch.arange(-n, n + 1, dtype=torch.float64) / up
    return torch.fft.ifftshift(pos)

def _circular_convolve(f, g):
    return torch.fft.ifftn(torch.fft.fftn(f) * torch.fft.fftn(g)).real

def affine_bandlimit_filter(mat, a=3, support=None, up=4, cutoff_in=1, cutoff_out=1, design_radius=64):
    """2D FIR filter for resampling an image under the linear part of `mat` without aliasing.

    The ideal filter keeps the frequencies representable both on the input pixel grid
    (a box of half-width cutoff_in / 2 cycles per pixel) and on the output grid (the
    same box, turned by mat): in space, the convolution of sinc(x) sinc(y) with
    sinc(x') sinc(y'), (x', y') = mat (x, y). It is windowed by the convolution of the
    two matching separable Lanczos-a windows, so its support is at most 2a pixels each
    way. Both convolutions are evaluated on a grid of step 1 / up pixels, wide enough
    (design_radius) for the circular FFT convolution not to wrap.

    Returns a float32 [K, K] filter, K = 2 * support * up - 1 (support defaults to 2a
    input pixels), to be applied with zero-insertion upsampling by `up`: each of its
    up x up polyphase components sums to 1, so every upsampled pixel is a weighted
    average of input pixels and a constant image keeps its value.
    """
    support = 2 * a if support is None else support
    assert a <= support < design_radius
    lin = torch.as_tensor(mat, dtype=torch.float64)[:2, :2]
    pos = _centred_positions(design_radius, up)
    yi, xi = torch.meshgrid(pos, pos, indexing='ij')
    xo = lin[0, 0] * xi + lin[0, 1] * yi
    yo = lin[1, 0] * xi + lin[1, 1] * yi

    ideal = _circular_convolve(sinc(xi * cutoff_in) * sinc(yi * cutoff_in), sinc(xo * cutoff_out) * sinc(yo * cutoff_out))
    window = _circular_convolve(lanczos_window(xi, a) * lanczos_window(yi, a), lanczos_window(xo, a) * lanczos_window(yo, a))
    f = torch.fft.fftshift(ideal * window) # Zero position back in the middle.

    centre, keep = design_radius * up - 1, support * up - 1
    f = f[centre - keep : centre + keep + 1, centre - keep : centre + keep + 1]

    # Normalize each polyphase component (taps that land on input pixels for one upsampled phase).
    phase = (torch.arange(f.shape[0]) - keep) % up
    for py in range(up):
        for px in range(up):
            sel = (phase[:, None] == py) & (phase[None, :] == px)
            f = torch.where(sel, f / f[sel].sum(), f)
    return f.to(torch.float32)

def _pixel_centres(size):
    """Centres of `size` pixels along one axis in image sides, image centre at 0."""
    return (torch.arange(size, dtype=torch.float64) + 0.5) / size - 0.5

def affine_transform(x, mat, a=3, support=None, up=4):
    """Resample [N, C, H, W] so that content moves by `mat` (3x3, image-side units): the
    result at p is x at mat^-1 p, band-limited by affine_bandlimit_filter().

    The image is upsampled by `up` with the filter (an upsampled pixel u, in units of
    1 / up input pixel, sits at input position u / up), then read bilinearly at the
    preimage of every output pixel centre. Valid where every input pixel under the filter
    of both bilinear neighbours exists.
    """
    n, _c, h, w = x.shape
    f = affine_bandlimit_filter(mat, a=a, support=support, up=up).to(x.device)
    keep = f.shape[0] // 2

    # Upsampled image, with `keep` extra upsampled pixels on each side (beyond them it is zero):
    # output index o holds upsampled position u = o - keep.
    pad = [2 * keep, 2 * keep - up + 1] * 2
    y = upfirdn2d.upfirdn2d(x, f, up=up, padding=pad)
    length_y, length_x = y.shape[2], y.shape[3]

    # Preimage of every output pixel centre, in upsampled index units.
    inv = torch.linalg.inv(torch.as_tensor(mat, dtype=torch.float64))
    py, px = torch.meshgrid(_pixel_centres(h), _pixel_centres(w), indexing='ij')
    qx = inv[0, 0] * px + inv[0, 1] * py + inv[0, 2]
    qy = inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]
    ux = ((qx + 0.5) * w - 0.5) * up # Input pixel j sits at u = j * up.
    uy = ((qy + 0.5) * h - 0.5) * up

    # grid_sample with align_corners=True maps -1 and +1 to the first and last index.
    grid = torch.stack([(ux + keep) / (length_x - 1) * 2 - 1, (uy + keep) / (length_y - 1) * 2 - 1], dim=-1)
    grid = grid.to(device=x.device, dtype=x.dtype).unsqueeze(0).expand(n, -1, -1, -1)
    out = torch.nn.functional.grid_sample(y, grid, mode='bilinear', padding_mode='zeros', align_corners=True)

    # The upsampled pixel u reads the input pixels i with |u - i * up| <= keep, i.e. those within
    # support - 1 of u / up; it is exact when they all exist, for both bilinear neighbours of u.
    def inside(u, size):
        return (u.floor() >= keep + 1 - up) & (u.ceil() <= size * up - keep - 1)
    mask = (inside(ux, w) & inside(uy, h)).to(device=x.device, dtype=x.dtype)
    return out, mask.expand_as(out).clone()

def rotate(x, angle, a=3):
    """Rotate content by `angle` radians about the image centre (operator R_a, E.3)."""
    return affine_transform(x, rotation_matrix(angle), a=a, support=2 * a)

def pseudo_rotate(x, angle, a=3):
    """Give x the band limit of an image rotated by `angle` and back, without rotating it
    (operator R*_a, E.3): filter with the band limit of the pixel grid turned by -angle,
    on the input grid (up = 1). Valid where the filter lies inside the image."""
    f = affine_bandlimit_filter(rotation_matrix(-angle), a=a, support=2 * a, up=1).to(x.device)
    out = upfirdn2d.filter2d(x, f)
    c = f.shape[0] // 2
    mask = torch.zeros_like(out)
    mask[:, :, c:-c, c:-c] = 1
    return out, mask

#----------------------------------------------------------------------------
# Asking a generator for the image of a transformed input.

_METRIC_NAMES = dict(eqt_int='EQ-T (integer translation)', eqt_frac='EQ-T_frac (fractional translation)', eqr='EQ-R (rotation)')

def _input_transform(synthesis):
    """The StyleGAN3 user transform buffer of a synthesis network, or None."""
    return getattr(getattr(synthesis, 'input', None), 'transform', None)

@contextlib.contextmanager
def _set_buffer(buffer, value):
    saved = buffer.detach().clone()
    try:
        with torch.no_grad():
            buffer.copy_(value)
        yield
    finally:
        with torch.no_grad():
            buffer.copy_(saved)

def make_renderer(G, G_kwargs={}, metrics=('eqt_int',)):
    """A function render(ws, mat=None) -> images [N, C, H, W] of the input transformed so that
    the output moves by `mat` (None: untransformed), for the generator's mechanism (module
    docstring). Raises UnsupportedGeneratorError (a ValueError) naming the metric when a
    requested metric (keys of _METRIC_NAMES) has no meaning for this generator."""
    synthesis = getattr(G, 'synthesis', None)
    kwargs = dict(noise_mode='const')
    kwargs.update(G_kwargs)
    names = ', '.join(_METRIC_NAMES[m] for m in metrics)

    transform = _input_transform(synthesis)
    if transform is not None:
        def render_transformed(ws, mat=None):
            if mat is None:
                mat = torch.eye(3, dtype=torch.float64)
            inverse = torch.linalg.inv(torch.as_tensor(mat, dtype=torch.float64))
            with _set_buffer(transform, inverse.to(transform.dtype)):
                return synthesis(ws=ws, **kwargs)
        return render_transformed

    if synthesis is not None and render.supports_lines(synthesis):
        if 'eqr' in metrics:
            raise UnsupportedGeneratorError(f'{_METRIC_NAMES["eqr"]} is undefined for this generator: it renders from separate '
                'row and column coordinate lines, through which no rotation of the image plane can be expressed '
                '(only translations); use eqt50k_int / eqt50k_frac')
        base_rows, base_cols = (line.to(torch.float64) for line in render.lines_for_scale(G.img_resolution, 1))
        spacing = [float(line[-1] - line[0]) / max(len(line) - 1, 1) for line in (base_rows, base_cols)] # One pixel.

        def render_lines(ws, mat=None):
            rows, cols = base_rows, base_cols
            if mat is not None:
                mat = torch.as_tensor(mat, dtype=torch.float64)
                if not torch.equal(mat[:2, :2], torch.eye(2, dtype=torch.float64)):
                    raise ValueError('A line-based generator can only be translated')
                tx_pixels, ty_pixels = float(mat[0, 2]) * len(cols), float(mat[1, 2]) * len(rows)
                rows = rows - ty_pixels * spacing[0] # The output moves down: pixel i shows row i - ty.
                cols = cols - tx_pixels * spacing[1]
            rows, cols = (line.to(device=ws.device, dtype=torch.float32) for line in (rows, cols))
            return synthesis(ws=ws, rows=rows, cols=cols, **kwargs)
        return render_lines

    raise UnsupportedGeneratorError(f'Cannot compute {names}: the generator has no continuous input to transform '
        '(no StyleGAN3 synthesis.input.transform, no CREPS coordinate lines; StyleGAN2 has neither)')

#----------------------------------------------------------------------------
# One batch.

def draw_transforms(gen, translate_max=0.125, rotate_max=1):
    """Random parameters of one batch, drawn from the torch.Generator `gen` (always all three,
    so that the stream does not depend on which metrics are computed): (t_int, t_frac, angle),
    translations in image sides (the integer one not yet rounded), the angle in radians."""
    u = torch.rand([5], generator=gen, dtype=torch.float64) * 2 - 1
    return (u[0:2] * translate_max).tolist(), (u[2:4] * translate_max).tolist(), float(u[4]) * rotate_max * math.pi

def batch_error_sums(render_fn, ws, t_int=None, t_frac=None, angle=None):
    """Squared-error and valid-count sums of one batch, float64 [2 * number of metrics], in the
    order EQ-T, EQ-T_frac, EQ-R for those whose parameter is given (not None).

    t_int, t_frac: translations (tx, ty) in image sides; t_int is rounded to whole pixels.
    angle: rotation in radians.
    """
    orig = render_fn(ws)
    _n, _c, h, w = orig.shape
    sums = []
    def add(err, mask):
        sums.extend([(err.square() * mask).to(torch.float64).sum(), mask.to(torch.float64).sum()])

    if t_int is not None:
        ix, iy = round(t_int[0] * w), round(t_int[1] * h)
        img = render_fn(ws, translation_matrix(ix / w, iy / h))
        ref, mask = integer_translate(orig, ix, iy)
        add(ref - img, mask)
    if t_frac is not None:
        img = render_fn(ws, translation_matrix(*t_frac))
        ref, mask = fractional_translate(orig, t_frac[0] * w, t_frac[1] * h)
        add(ref - img, mask)
    if angle is not None:
        img = render_fn(ws, rotation_matrix(angle))
        ref, ref_mask = rotate(orig, angle)
        pseudo, pseudo_mask = pseudo_rotate(img, angle)
        add(ref - pseudo, ref_mask * pseudo_mask)
    return torch.stack(sums)

def own_share(remaining, batch_size, num_gpus, rank):
    """How many of its `batch_size` samples process `rank` keeps from a global batch when only
    `remaining` samples are left: sample k of the global batch belongs to process k % num_gpus."""
    return max(0, min(batch_size, (remaining - rank + num_gpus - 1) // num_gpus))

def psnr_from_sums(sums):
    """PSNRs in dB of images in [-1, 1] from [squared error, count, squared error, count, ...];
    inf for a zero error."""
    sums = torch.as_tensor(sums, dtype=torch.float64).cpu()
    mse = sums[0::2] / sums[1::2]
    return [float(v) for v in 20 * math.log10(2) - 10 * torch.log10(mse)]

#----------------------------------------------------------------------------

def compute_equivariance_metrics(opts, num_samples, batch_size, translate_max=0.125, rotate_max=1, compute_eqt_int=False, compute_eqt_frac=False, compute_eqr=False, seed=0):
    """EQ-T, EQ-T_frac and EQ-R PSNRs (dB) of opts.G over `num_samples` latents.

    Returns the PSNR of the one metric asked for, or a tuple of them in the order EQ-T,
    EQ-T_frac, EQ-R when several are (as StyleGAN3). Each process renders batches of
    `batch_size`, with one random transformation per metric and batch; the latents are
    metric_utils' shared stream (sample k of a global batch goes to process k % num_gpus,
    the last batch is cut at num_samples), the transformations come from a generator seeded
    with `seed`. Every process returns the result.
    """
    metrics = [m for m, on in [('eqt_int', compute_eqt_int), ('eqt_frac', compute_eqt_frac), ('eqr', compute_eqr)] if on]
    if not metrics:
        raise ValueError('compute_equivariance_metrics: ask for at least one of EQ-T, EQ-T_frac, EQ-R')
    make_renderer(opts.G, opts.G_kwargs, metrics) # Unsupported metrics fail before any work.

    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    render_fn = make_renderer(G, opts.G_kwargs, metrics)
    z_iter = metric_utils.iterate_random_latents(opts=opts, batch_size=batch_size)
    c_iter = metric_utils.iterate_random_labels(opts=opts, batch_size=batch_size)
    gen = torch.Generator().manual_seed(seed)
    progress = opts.progress.sub(tag='eq sampling', num_items=num_samples)

    sums = torch.zeros([2 * len(metrics)], dtype=torch.float64, device=opts.device)
    for start in range(0, num_samples, batch_size * opts.num_gpus):
        progress.update(start)
        z, c = next(z_iter), next(c_iter)
        t_int, t_frac, angle = [draw_transforms(gen, translate_max, rotate_max) for _rank in range(opts.num_gpus)][opts.rank]
        with torch.no_grad():
            # Fresh 'const' noise buffers, if any (StyleGAN2/3), every batch.
            for name, buf in G.named_buffers():
                if name.endswith('.noise_const'):
                    buf.copy_(torch.randn(buf.shape, generator=gen).to(buf.device))
        n = own_share(num_samples - start, batch_size, opts.num_gpus, opts.rank)
        if n == 0:
            continue
        with torch.no_grad():
            ws = G.mapping(z=z[:n], c=c[:n])
            sums += batch_error_sums(render_fn, ws,
                t_int=t_int if compute_eqt_int else None,
                t_frac=t_frac if compute_eqt_frac else None,
                angle=angle if compute_eqr else None).to(opts.device)
    progress.update(num_samples)

    if opts.num_gpus > 1:
        torch.distributed.all_reduce(sums)
    psnrs = psnr_from_sums(sums)
    return psnrs[0] if len(psnrs) == 1 else tuple(psnrs)

#----------------------------------------------------------------------------
