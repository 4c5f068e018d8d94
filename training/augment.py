"""ADA: the augmentation pipeline of "Training Generative Adversarial Networks
with Limited Data" (Karras et al., 2020), its presets, and its p controller.

The discriminator sees every image, real or generated, through `AugmentPipe`.
Each augmentation is applied to each image independently with probability
`p * multiplier`, where `p` is the overall strength (a buffer adjusted during
training by `adjust_p`) and the multiplier is the constructor argument of the
same name (0 = never, 1 = with probability p). The arguments, their defaults,
the random distributions, the order of the steps, `debug_percentile` and the
presets are those of NVIDIA's StyleGAN2-ADA/StyleGAN3 `AugmentPipe`, so
training configurations carry over unchanged.

The steps, in order:
  1. pixel blitting: x-flip, rotations by multiples of 90 degrees, integer
     translation;
  2. general geometric transformations: isotropic scaling, rotation (before
     and after the anisotropic scaling), anisotropic scaling, fractional
     translation;
  3. color transformations: brightness, contrast, luma flip, hue rotation,
     saturation;
  4. image-space filtering: random gains of four frequency bands;
  5. corruptions: additive Gaussian noise, cutout.
Steps 1 and 2 compose into one inverse affine map per image, with the
distributions and the composition order of NVIDIA's pipeline. Step 2 is
executed as there: mirror padding, 2x upsampling with an orthogonal wavelet
lowpass (sym6), bilinear sampling (grid_sample_gradfix), and 2x downsampling
with the flipped filter, so that an identity map reproduces the input (to
float rounding). Step 1 moves pixel centers onto pixel centers and is
executed exactly, by indexing, with the image extended by mirroring
(integer translation brings in mirrored content), and step 2 then resamples
its result. This is the one deliberate difference from NVIDIA's pipeline,
which resamples the composed map: there flips and quarter turns go through
the filters too, and since sym6 is not symmetric they come out altered
(measured on [-1, 1] images with a 1/f spectrum, an x-flip that way is off
by 0.02 rms and up to 0.1), which D could learn to tell apart. The map and
the mirrored content are the same.

Channels: 3 (RGB) is the layout the color transformations are defined for.
With 1 channel (grayscale) the geometric, filtering and corruption steps work
as for RGB; of the color steps, brightness, contrast and luma flip act on the
single channel as they act on a gray RGB pixel (luma flip negates it), and
hue and saturation, which leave gray pixels unchanged, are skipped (they draw
no random numbers). With 4 channels the color steps transform RGB and leave
the fourth channel (alpha) alone. Other channel counts work as long as no
color step is enabled.

Everything is differentiable w.r.t. the images to any order (R1 through the
augmentation needs the second order): the sampling goes through
torch_utils.ops.grid_sample_gradfix, the filters through upfirdn2d and conv2d.
"""

import math

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------
# Lowpass filters of orthogonal wavelets (reconstruction order, sum sqrt(2)).
# sym2 is Daubechies' 4-tap filter, (1 -+ sqrt(3), 3 -+ sqrt(3)) / (4 sqrt(2));
# sym6 is the 12-tap least-asymmetric filter. Orthogonality of their even
# shifts makes 2x upsampling followed by 2x downsampling with the flipped
# filter an identity, which the geometric step relies on.

_s3 = math.sqrt(3)
wavelets = {
    'sym2': [(1 - _s3) / (4 * math.sqrt(2)), (3 - _s3) / (4 * math.sqrt(2)), (3 + _s3) / (4 * math.sqrt(2)), (1 + _s3) / (4 * math.sqrt(2))],
    'sym6': [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633, 0.4910559419267466, 0.787641141030194,
             0.3379294217276218, -0.07263752278646252, -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148],
}

#----------------------------------------------------------------------------
# Presets of StyleGAN2-ADA's --augpipe: b = blit, g = geom, c = color,
# f = filter, n = noise, c (last) = cutout. StyleGAN3 and train.py use 'bgc'.

_BLIT   = dict(xflip=1, rotate90=1, xint=1)
_GEOM   = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR  = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
_FILTER = dict(imgfilter=1)
_NOISE  = dict(noise=1)
_CUTOUT = dict(cutout=1)

AUGMENT_PRESETS = {
    'blit':     dict(_BLIT),
    'geom':     dict(_GEOM),
    'color':    dict(_COLOR),
    'filter':   dict(_FILTER),
    'noise':    dict(_NOISE),
    'cutout':   dict(_CUTOUT),
    'bg':       dict(**_BLIT, **_GEOM),
    'bgc':      dict(**_BLIT, **_GEOM, **_COLOR),
    'bgcf':     dict(**_BLIT, **_GEOM, **_COLOR, **_FILTER),
    'bgcfn':    dict(**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE),
    'bgcfnc':   dict(**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE, **_CUTOUT),
}

#----------------------------------------------------------------------------

def adjust_p(p, sign_mean, target, batch_size_images, interval_batches, ada_kimg):
    """One step of the ADA controller: the new augmentation strength.

    The overfitting heuristic r_t = E[sign(D(real))] rises as D grows
    confident on the training images. Every `interval_batches` batches, p
    moves by sign(r_t - target) times the step below, so that it could go
    from 0 to 1 in `ada_kimg` thousand images, and never drops below 0 (it
    has no upper bound: probabilities p * multiplier saturate at 1 anyway).
    This is StyleGAN2-ADA's rule.

    Args:
        p:                  Current strength: a float, or a tensor (such as
                            AugmentPipe.p) for a tensor result.
        sign_mean:          r_t, the mean of sign(D(real images)) over the
                            interval, in [-1, 1]. NaN (no statistics yet)
                            leaves p unchanged.
        target:             Target value of r_t (StyleGAN2-ADA: 0.6).
        batch_size_images:  Images per training batch, all processes together.
        interval_batches:   Batches between two adjustments (StyleGAN2-ADA: 4).
        ada_kimg:           Thousands of images over which p can move by 1
                            (StyleGAN2-ADA: 500; StyleGAN3: 100).

    Returns:
        max(p + sign(r_t - target) * batch_size_images * interval_batches
        / (ada_kimg * 1000), 0), a float or a tensor like `p`.
    """
    if not ada_kimg > 0:
        raise ValueError(f'ada_kimg must be positive, got {ada_kimg}')
    sign_mean = float(sign_mean)
    if math.isnan(sign_mean):
        return p
    adjust = float(np.sign(sign_mean - target)) * (batch_size_images * interval_batches) / (ada_kimg * 1000)
    if isinstance(p, torch.Tensor):
        return (p + adjust).clamp(min=0)
    return max(float(p) + adjust, 0.0)

#----------------------------------------------------------------------------
# Batches of homogeneous matrices, [N, k, k] float32. Entries are Python
# numbers or [N] tensors.

def _matrix(rows, n, device):
    entries = [e if isinstance(e, torch.Tensor) else misc.constant(float(e), shape=[n], dtype=torch.float32, device=device)
        for row in rows for e in row]
    return torch.stack(entries, dim=-1).reshape(n, len(rows), len(rows[0]))

def _translate2d(tx, ty, n, device):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n, device)

def _scale2d(sx, sy, n, device):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n, device)

def _rotate2d(theta, n, device): # theta > 0 turns the x axis toward the y axis (which points down).
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], n, device)

def _color_affine(A, b=None):
    """[N, 4, 4] from a [N, 3, 3] linear part and an optional [N, 3] offset."""
    M = torch.zeros(A.shape[0], 4, 4, device=A.device)
    M[:, :3, :3] = A
    if b is not None:
        M[:, :3, 3] = b
    M[:, 3, 3] = 1
    return M

#----------------------------------------------------------------------------
# Mirror extension ("reflect": the edge pixel is not repeated), for any
# distance from the image, unlike torch's reflect padding.

def _mirror_index(k, n):
    """Map integer positions `k` (a tensor) to [0, n) by mirroring at the ends."""
    if n == 1:
        return torch.zeros_like(k)
    period = 2 * (n - 1)
    k = torch.remainder(k, period)
    return torch.where(k < n, k, period - k)

def _mirror_pad(x, pad):
    """Pad [N, C, H, W] by pad = [left, right, top, bottom] pixels, mirrored."""
    left, right, top, bottom = pad
    H, W = x.shape[2:]
    if max(left, right) < W and max(top, bottom) < H:
        return torch.nn.functional.pad(x, [left, right, top, bottom], mode='reflect')
    cols = _mirror_index(torch.arange(-left, W + right, device=x.device), W)
    rows = _mirror_index(torch.arange(-top, H + bottom, device=x.device), H)
    return x.index_select(3, cols).index_select(2, rows)

#----------------------------------------------------------------------------
# The filter bank of the image-space filtering step: row i is a symmetric FIR
# filter passing the i-th of num_bands octave bands (row 0 the lowest, the
# last row the top octave); the rows sum to a unit impulse, so equal gains on
# all bands leave the image unchanged.

def _octave_filter_bank(lowpass, num_bands=4):
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)          # Quadrature mirror highpass H(-z).
    lo2 = np.convolve(lo, lo[::-1]) / 2             # Half-band lowpass H(z) H(1/z) / 2.
    hi2 = np.convolve(hi, hi[::-1]) / 2             # Its complement: lo2 + hi2 = impulse.
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1
    for band in range(1, num_bands):
        # Stretch the filters built so far by 2 (one octave down), lowpass
        # them, and give the band just vacated at the top to `band`.
        stretched = np.zeros([num_bands, bank.shape[1] * 2 - 1])
        stretched[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in stretched])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start : start + hi2.size] += hi2
    return bank

#----------------------------------------------------------------------------

@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """ADA augmentation of [N, C, H, W] images. All augmentations are off by
    default; a multiplier of 1 applies one with probability `p` per image.
    See the module docstring for the steps and the channel layouts."""

    def __init__(self,
        # Pixel blitting.
        xflip           = 0,        # Probability multiplier for x-flip.
        rotate90        = 0,        # Probability multiplier for rotations by 0/90/180/270 degrees.
        xint            = 0,        # Probability multiplier for integer translation.
        xint_max        = 0.125,    # Range of integer translation, relative to the image size.
        # General geometric transformations.
        scale           = 0,        # Probability multiplier for isotropic scaling.
        rotate          = 0,        # Probability multiplier for arbitrary rotation.
        aniso           = 0,        # Probability multiplier for anisotropic scaling.
        xfrac           = 0,        # Probability multiplier for fractional translation.
        scale_std       = 0.2,      # Log2 standard deviation of isotropic scaling.
        rotate_max      = 1,        # Range of arbitrary rotation, 1 = full circle.
        aniso_std       = 0.2,      # Log2 standard deviation of anisotropic scaling.
        xfrac_std       = 0.125,    # Standard deviation of fractional translation, relative to the image size.
        # Color transformations.
        brightness      = 0,        # Probability multiplier for brightness.
        contrast        = 0,        # Probability multiplier for contrast.
        lumaflip        = 0,        # Probability multiplier for luma flip.
        hue             = 0,        # Probability multiplier for hue rotation.
        saturation      = 0,        # Probability multiplier for saturation.
        brightness_std  = 0.2,      # Standard deviation of brightness.
        contrast_std    = 0.5,      # Log2 standard deviation of contrast.
        hue_max         = 1,        # Range of hue rotation, 1 = full circle.
        saturation_std  = 1,        # Log2 standard deviation of saturation.
        # Image-space filtering.
        imgfilter       = 0,        # Probability multiplier for image-space filtering.
        imgfilter_bands = [1,1,1,1],# Probability multipliers of the four frequency bands, lowest first.
        imgfilter_std   = 1,        # Log2 standard deviation of the band gains.
        # Image-space corruptions.
        noise           = 0,        # Probability multiplier for additive RGB noise.
        cutout          = 0,        # Probability multiplier for cutout.
        noise_std       = 0.1,      # Standard deviation of additive RGB noise.
        cutout_size     = 0.5,      # Size of the cutout rectangle, relative to the image size.
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([])) # Overall strength: probabilities are p * multiplier.

        self.xflip, self.rotate90, self.xint, self.xint_max = float(xflip), float(rotate90), float(xint), float(xint_max)
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std, self.rotate_max, self.aniso_std, self.xfrac_std = float(scale_std), float(rotate_max), float(aniso_std), float(xfrac_std)
        self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation = float(brightness), float(contrast), float(lumaflip), float(hue), float(saturation)
        self.brightness_std, self.contrast_std, self.hue_max, self.saturation_std = float(brightness_std), float(contrast_std), float(hue_max), float(saturation_std)
        self.imgfilter, self.imgfilter_bands, self.imgfilter_std = float(imgfilter), [float(b) for b in imgfilter_bands], float(imgfilter_std)
        self.noise, self.cutout, self.noise_std, self.cutout_size = float(noise), float(cutout), float(noise_std), float(cutout_size)

        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(wavelets['sym6']))  # Resampling lowpass of the geometric step.
        self.register_buffer('Hz_fbank', torch.as_tensor(_octave_filter_bank(wavelets['sym2']), dtype=torch.float32)) # [bands, taps]
        if len(self.imgfilter_bands) != self.Hz_fbank.shape[0]:
            raise ValueError(f'imgfilter_bands needs {self.Hz_fbank.shape[0]} entries, got {len(self.imgfilter_bands)}')

    def _multipliers(self):
        return dict(xflip=self.xflip, rotate90=self.rotate90, xint=self.xint, scale=self.scale, rotate=self.rotate,
            aniso=self.aniso, xfrac=self.xfrac, brightness=self.brightness, contrast=self.contrast, lumaflip=self.lumaflip,
            hue=self.hue, saturation=self.saturation, imgfilter=self.imgfilter, noise=self.noise, cutout=self.cutout)

    def extra_repr(self):
        on = [f'{k}={v:g}' for k, v in self._multipliers().items() if v != 0]
        return ', '.join(on) if on else 'no augmentations'

    #------------------------------------------------------------------------

    def forward(self, images, debug_percentile=None):
        """Augment `images` [N, C, H, W] (floating point). Returns a tensor of
        the same shape, dtype and device.

        `debug_percentile` in [0, 1] (for tests and visualization) applies
        every enabled augmentation to every image, whatever p is, with its
        random parameter replaced by that percentile of its distribution
        (0.5 = the median, mostly the identity), as NVIDIA's pipeline does;
        only the values of the additive noise stay random. Unlike there, the
        ends 0 and 1 give finite transformations: 1 picks the last of the
        discrete choices, and normal distributions are cut at +-3.46 sigma.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f'AugmentPipe expects a floating-point tensor [N, C, H, W], got {images!r:.100}')
        if debug_percentile is None and (float(self.p) == 0 or not any(self._multipliers().values())):
            return images # Every probability is zero: nothing can happen.
        N, C, H, W = images.shape
        dev = images.device
        if debug_percentile is not None and not 0 <= float(debug_percentile) <= 1:
            raise ValueError(f'debug_percentile must be in [0, 1], got {debug_percentile}')
        d = None if debug_percentile is None else torch.as_tensor(float(debug_percentile), dtype=torch.float32, device=dev)
        p = self.p.to(device=dev, dtype=torch.float32)

        def chosen(multiplier, shape):
            """Per-image Bernoulli draws with probability multiplier * p."""
            return torch.rand(shape, device=dev) < multiplier * p

        # The debug values: the percentile d of each distribution. Percentile 1
        # picks the last of k choices, and the normal distributions are cut
        # at +-erfinv(1 - 1e-6) = +-3.46 sigma, so that 0 and 1 stay finite.
        def debug_choice(k):
            return torch.clamp(torch.floor(d * k), max=k - 1)
        def normal_percentile(std):
            return torch.erfinv((d * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)) * std

        #---------------------------------------------------------------
        # Geometry. The inverse maps take output pixel positions to input
        # positions, both centered on the image, x to the right and y down.
        # Each transform right-multiplies its inverse, so the forward
        # transforms apply in the order listed. B_inv collects the pixel
        # blitting, G_inv the general transformations; the full map is
        # B_inv @ G_inv (blitting first), as in NVIDIA's pipeline.
        B_inv = None
        G_inv = None
        def then_blit(M):
            nonlocal B_inv
            B_inv = M if B_inv is None else B_inv @ M
        def then(M):
            nonlocal G_inv
            G_inv = M if G_inv is None else G_inv @ M

        if self.xflip > 0:
            i = torch.floor(torch.rand([N], device=dev) * 2)
            i = torch.where(chosen(self.xflip, [N]), i, torch.zeros_like(i))
            if d is not None:
                i = torch.full_like(i, debug_choice(2))
            then_blit(_scale2d(1 - 2 * i, 1, N, dev))

        if self.rotate90 > 0:
            i = torch.floor(torch.rand([N], device=dev) * 4)
            i = torch.where(chosen(self.rotate90, [N]), i, torch.zeros_like(i))
            if d is not None:
                i = torch.full_like(i, debug_choice(4))
            then_blit(_rotate2d(math.pi / 2 * i, N, dev))

        if self.xint > 0:
            t = (torch.rand([N, 2], device=dev) * 2 - 1) * self.xint_max
            t = torch.where(chosen(self.xint, [N, 1]), t, torch.zeros_like(t))
            if d is not None:
                t = torch.full_like(t, (d * 2 - 1) * self.xint_max)
            then_blit(_translate2d(-torch.round(t[:, 0] * W), -torch.round(t[:, 1] * H), N, dev))

        if self.scale > 0:
            s = torch.exp2(torch.randn([N], device=dev) * self.scale_std)
            s = torch.where(chosen(self.scale, [N]), s, torch.ones_like(s))
            if d is not None:
                s = torch.full_like(s, torch.exp2(normal_percentile(self.scale_std)))
            then(_scale2d(1 / s, 1 / s, N, dev))

        # Rotation before and after the anisotropic scaling, each with
        # probability p_rot, so that P(either) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * p).clamp(0, 1))
        if self.rotate > 0:
            theta = (torch.rand([N], device=dev) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand([N], device=dev) < p_rot, theta, torch.zeros_like(theta))
            if d is not None:
                theta = torch.full_like(theta, (d * 2 - 1) * math.pi * self.rotate_max)
            then(_rotate2d(theta, N, dev))

        if self.aniso > 0:
            s = torch.exp2(torch.randn([N], device=dev) * self.aniso_std)
            s = torch.where(chosen(self.aniso, [N]), s, torch.ones_like(s))
            if d is not None:
                s = torch.full_like(s, torch.exp2(normal_percentile(self.aniso_std)))
            then(_scale2d(1 / s, s, N, dev))

        if self.rotate > 0:
            theta = (torch.rand([N], device=dev) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand([N], device=dev) < p_rot, theta, torch.zeros_like(theta))
            if d is not None:
                theta = torch.zeros_like(theta) # The debug rotation is all in the first one.
            then(_rotate2d(theta, N, dev))

        if self.xfrac > 0:
            t = torch.randn([N, 2], device=dev) * self.xfrac_std
            t = torch.where(chosen(self.xfrac, [N, 1]), t, torch.zeros_like(t))
            if d is not None:
                t = torch.full_like(t, normal_percentile(self.xfrac_std))
            then(_translate2d(-t[:, 0] * W, -t[:, 1] * H, N, dev))

        # Blits move pixel centers onto pixel centers and are executed
        # exactly, by indexing; so are the mirrored borders the general
        # transformations read. (NVIDIA's pipeline resamples the blits too,
        # which makes flips and quarter turns slightly inexact: the sym6
        # filter is not symmetric.) Quarter turns of an image whose sides
        # differ in parity move pixel centers by half a pixel: those are
        # resampled with the rest.
        if B_inv is not None and self.rotate90 > 0 and (H - W) % 2 != 0:
            G_inv = B_inv if G_inv is None else B_inv @ G_inv
            B_inv = None
        if G_inv is not None:
            images = self._resample(images, G_inv, B_inv)
        elif B_inv is not None:
            images = _blit(images, B_inv)

        #---------------------------------------------------------------
        # Color: a 4x4 homogeneous matrix per image, acting on (r, g, b, 1);
        # each transform left-multiplies.
        Cm = None
        def then_color(M):
            nonlocal Cm
            Cm = M if Cm is None else M @ Cm
        eye3 = torch.eye(3, device=dev)
        luma = misc.constant(np.ones(3) / np.sqrt(3), dtype=torch.float32, device=dev) # Unit gray axis.
        luma_proj = torch.outer(luma, luma)                                             # Projection onto it.

        if self.brightness > 0:
            b = torch.randn([N], device=dev) * self.brightness_std
            b = torch.where(chosen(self.brightness, [N]), b, torch.zeros_like(b))
            if d is not None:
                b = torch.full_like(b, normal_percentile(self.brightness_std))
            then_color(_color_affine(eye3.expand(N, 3, 3), b[:, None].expand(N, 3)))

        if self.contrast > 0:
            c = torch.exp2(torch.randn([N], device=dev) * self.contrast_std)
            c = torch.where(chosen(self.contrast, [N]), c, torch.ones_like(c))
            if d is not None:
                c = torch.full_like(c, torch.exp2(normal_percentile(self.contrast_std)))
            then_color(_color_affine(eye3 * c[:, None, None]))

        if self.lumaflip > 0:
            i = torch.floor(torch.rand([N, 1, 1], device=dev) * 2)
            i = torch.where(chosen(self.lumaflip, [N, 1, 1]), i, torch.zeros_like(i))
            if d is not None:
                i = torch.full_like(i, debug_choice(2))
            then_color(_color_affine(eye3 - 2 * luma_proj * i)) # Householder reflection across the plane normal to gray.

        if self.hue > 0 and C > 1:
            theta = (torch.rand([N], device=dev) * 2 - 1) * math.pi * self.hue_max
            theta = torch.where(chosen(self.hue, [N]), theta, torch.zeros_like(theta))
            if d is not None:
                theta = torch.full_like(theta, (d * 2 - 1) * math.pi * self.hue_max)
            # Rotation about the gray axis (Rodrigues): c I + s [luma]_x + (1 - c) luma luma^T.
            cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float32, device=dev) / math.sqrt(3)
            c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
            then_color(_color_affine(c * eye3 + s * cross + (1 - c) * luma_proj))

        if self.saturation > 0 and C > 1:
            s = torch.exp2(torch.randn([N, 1, 1], device=dev) * self.saturation_std)
            s = torch.where(chosen(self.saturation, [N, 1, 1]), s, torch.ones_like(s))
            if d is not None:
                s = torch.full_like(s, torch.exp2(normal_percentile(self.saturation_std)))
            then_color(_color_affine(luma_proj + (eye3 - luma_proj) * s)) # Scale the chroma, keep the gray component.

        if Cm is not None:
            images = _apply_color(images, Cm.to(images.dtype))

        #---------------------------------------------------------------
        # Image-space filtering: per image, a gain per frequency band, the
        # gains normalized so that an image with a 1/f power spectrum keeps
        # its expected power.
        if self.imgfilter > 0:
            num_bands = self.Hz_fbank.shape[0]
            expected_power = misc.constant(np.array([10, 1, 1, 1]) / 13, dtype=torch.float32, device=dev)
            g = torch.ones([N, num_bands], device=dev)
            for band, band_strength in enumerate(self.imgfilter_bands):
                t_i = torch.exp2(torch.randn([N], device=dev) * self.imgfilter_std)
                t_i = torch.where(chosen(self.imgfilter * band_strength, [N]), t_i, torch.ones_like(t_i))
                if d is not None:
                    t_i = torch.full_like(t_i, torch.exp2(normal_percentile(self.imgfilter_std)) if band_strength > 0 else 1.0)
                t = torch.ones([N, num_bands], device=dev)
                t = torch.cat([t[:, :band], t_i[:, None], t[:, band + 1:]], dim=1)
                g = g * t / (expected_power * t.square()).sum(dim=1, keepdim=True).sqrt()
            taps = (g @ self.Hz_fbank.to(dev)).to(images.dtype)         # [N, taps]: one symmetric filter per image.
            taps = taps[:, None, :].expand(N, C, -1).reshape(N * C, 1, -1)
            r = taps.shape[2] // 2
            x = _mirror_pad(images.reshape(1, N * C, H, W), [r, r, r, r])
            x = torch.nn.functional.conv2d(x, taps[:, :, None, :], groups=N * C)   # Rows.
            x = torch.nn.functional.conv2d(x, taps[:, :, :, None], groups=N * C)   # Columns.
            images = x.reshape(N, C, H, W)

        #---------------------------------------------------------------
        # Corruptions.
        if self.noise > 0:
            sigma = torch.randn([N, 1, 1, 1], device=dev).abs() * self.noise_std
            sigma = torch.where(chosen(self.noise, [N, 1, 1, 1]), sigma, torch.zeros_like(sigma))
            if d is not None:
                sigma = torch.full_like(sigma, torch.erfinv(d.clamp(max=1 - 1e-6)) * self.noise_std) # Percentile of the half-normal |n|.
            images = images + (torch.randn([N, C, H, W], device=dev) * sigma).to(images.dtype)

        if self.cutout > 0:
            size = torch.full([N, 2], self.cutout_size, device=dev)
            size = torch.where(chosen(self.cutout, [N, 1]), size, torch.zeros_like(size))
            center = torch.rand([N, 2], device=dev)
            if d is not None:
                size = torch.full_like(size, self.cutout_size)
                center = torch.full_like(center, d)
            # Keep the pixels whose centers lie outside the rectangle (in units of the image size).
            x = (torch.arange(W, device=dev) + 0.5) / W
            y = (torch.arange(H, device=dev) + 0.5) / H
            keep_x = (x[None, :] - center[:, 0:1]).abs() >= size[:, 0:1] / 2   # [N, W]
            keep_y = (y[None, :] - center[:, 1:2]).abs() >= size[:, 1:2] / 2   # [N, H]
            keep = keep_y[:, :, None] | keep_x[:, None, :]                      # [N, H, W]
            images = images * keep[:, None].to(images.dtype)

        return images

    #------------------------------------------------------------------------

    def _resample(self, images, G_inv, B_inv=None):
        """Execute the inverse maps B_inv @ G_inv ([N, 3, 3] each; B_inv
        pixel-exact or None) by filtered resampling, as NVIDIA's pipeline."""
        N, C, H, W = images.shape
        dev = images.device
        f = self.Hz_geom.to(dev)
        support = f.shape[0] // 4 # Half-support of the filter, in input pixels (3 for sym6).

        # Extend the image by mirroring, far enough that every output pixel,
        # with the filter support around it, samples from inside the extended
        # image, but by at most size - 1 per side (as much as reflect padding
        # gives). With blits, the extension is taken from the blitted image
        # extended by mirroring before the blit, i.e. mirrored at the borders
        # of the input, as when the composed map is resampled.
        cx, cy = (W - 1) / 2, (H - 1) / 2
        corners = misc.constant([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], dtype=torch.float32, device=dev)
        reach = (G_inv @ corners)[:, :2, :]                                         # [N, xy, corner]
        reach = torch.cat([-reach, reach], dim=1).amax(dim=(0, 2))                  # [left, top, right, bottom]
        need = reach + misc.constant([2 * support - cx, 2 * support - cy] * 2, dtype=torch.float32, device=dev)
        need = need.clamp(min=0).minimum(misc.constant([W - 1, H - 1] * 2, dtype=torch.float32, device=dev))
        left, top, right, bottom = need.ceil().to(torch.int64).tolist()
        if B_inv is None:
            images = torch.nn.functional.pad(images, [left, right, top, bottom], mode='reflect')
        else:
            images = _blit(images, B_inv, [left, right, top, bottom])
        G_inv = _translate2d((left - right) / 2, (top - bottom) / 2, N, dev) @ G_inv # The center moved.

        # Upsample 2x. In centered coordinates a point x of the padded image
        # lies at 2x - 1/2 in the upsampled one: the even-length filter puts
        # the new samples a quarter of an input pixel off the symmetric
        # placement, and the downsampling below (flipped filter) undoes it.
        images = upfirdn2d.upsample2d(images, f, up=2)
        to_up = _translate2d(-0.5, -0.5, N, dev) @ _scale2d(2, 2, N, dev)
        from_up = _scale2d(0.5, 0.5, N, dev) @ _translate2d(0.5, 0.5, N, dev)
        G_inv = to_up @ G_inv @ from_up

        # Sample an output at twice the resolution, with a border of the
        # filter support, in affine_grid's normalized coordinates ([-1, 1]
        # spans the image: x_norm = 2 x / size for centered pixel coordinates).
        out_h, out_w = (H + 2 * support) * 2, (W + 2 * support) * 2
        in_h, in_w = images.shape[2:]
        theta = _scale2d(2 / in_w, 2 / in_h, N, dev) @ G_inv @ _scale2d(out_w / 2, out_h / 2, N, dev)
        grid = torch.nn.functional.affine_grid(theta[:, :2, :].to(images.dtype), [N, C, out_h, out_w], align_corners=False)
        images = grid_sample_gradfix.grid_sample(images, grid)

        # Downsample 2x and crop the border.
        return upfirdn2d.downsample2d(images, f, down=2, padding=-2 * support, flip_filter=True)

#----------------------------------------------------------------------------

def _blit(images, B_inv, pad=(0, 0, 0, 0)):
    """Execute inverse maps B_inv [N, 3, 3] that move pixel centers onto pixel
    centers (flips, quarter turns, integer shifts) exactly, by indexing. The
    output frame is the input's, extended by pad = [left, right, top, bottom]
    pixels; positions outside the input take the mirrored pixel."""
    N, C, H, W = images.shape
    left, right, top, bottom = pad
    dev = images.device
    cx, cy = (W - 1) / 2, (H - 1) / 2
    y, x = torch.meshgrid(torch.arange(-top, H + bottom, device=dev, dtype=torch.float32) - cy,
        torch.arange(-left, W + right, device=dev, dtype=torch.float32) - cx, indexing='ij')
    out_h, out_w = x.shape
    out_pos = torch.stack([x.flatten(), y.flatten(), torch.ones_like(x.flatten())])   # [3, out_h * out_w]
    in_pos = B_inv[:, :2, :] @ out_pos                                                  # [N, 2, out_h * out_w]
    col = _mirror_index(torch.round(in_pos[:, 0] + cx).to(torch.int64), W)
    row = _mirror_index(torch.round(in_pos[:, 1] + cy).to(torch.int64), H)
    index = (row * W + col)[:, None, :].expand(N, C, out_h * out_w)
    return images.reshape(N, C, H * W).gather(2, index).reshape(N, C, out_h, out_w)

def _apply_color(images, Cm):
    """Apply color matrices Cm [N, 4, 4] (in the images' dtype) to [N, C, H, W]."""
    N, C, H, W = images.shape
    A, b = Cm[:, :3, :3], Cm[:, :3, 3:]
    if C in (3, 4):
        rgb = A @ images[:, :3].reshape(N, 3, H * W) + b
        rgb = rgb.reshape(N, 3, H, W)
        return rgb if C == 3 else torch.cat([rgb, images[:, 3:]], dim=1)
    if C == 1:
        # A gray pixel v is the RGB pixel (v, v, v); map it and read the gray
        # value back as the mean of the channels.
        gain = A.sum(dim=2).mean(dim=1)     # [N]
        offset = b[:, :, 0].mean(dim=1)     # [N]
        return images * gain[:, None, None, None] + offset[:, None, None, None]
    raise ValueError(f'The color augmentations need 1 (L), 3 (RGB) or 4 (RGBA) channels, got {C}')

#----------------------------------------------------------------------------
