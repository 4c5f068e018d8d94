"""Scale consistency of generators that render at any scale (CREPS): does a
render at scale s, area-downsampled by s, reproduce the render at scale 1?

For a latent w the generator renders the image at scale 1 (the training grid,
`render.lines_for_scale(res, 1)`) and at an integer scale s on the grid of
`render.aligned_fine_lines(res, s)`, whose s x s blocks are centred on the
scale-1 samples; the fine render is average-pooled over those blocks (area
downsampling). A plain linspace grid at round(res * s) samples is not nested in
the scale-1 grid (its block means sit up to a quarter pixel off near the
edges), so it would measure the grids' misalignment, not the generator.

Two metrics:

- `compute_scale_psnr` (sc50k_x2, sc50k_x4): PSNR in dB of the downsampled
  render against the scale-1 render, for images in [-1, 1] (peak-to-peak 2),
  not clamped:

      PSNR = 10 * log10(2^2 / MSE),  MSE = sum of squared differences / number of values,

  the sums pooled over all samples, pixels, channels and processes before the
  ratio is taken (the aggregation of the equivariance metrics), so it is one
  PSNR of the mean squared error, not a mean of per-sample PSNRs: a few
  near-perfect samples cannot dominate it, and it is inf only if every sample
  matches exactly.
- `compute_fid_at_scale` (fid50k_full_x2, fid50k_full_x4): FID against the
  dataset of renders at scale s area-downsampled to the training resolution:
  plain FID (frechet_inception_distance.compute_fid: the same detector, cached
  dataset statistics and latents, sharded over the processes by metric_utils)
  with these renders in place of G(z, c).

Any generator whose synthesis network takes coordinate lines
(`render.supports_lines`) works; others raise ValueError
(equivariance.UnsupportedGeneratorError, also a metric_utils.MetricError, so
that the registry reports it in one line).
"""

import copy

import torch

from torch_utils import render
from . import equivariance
from . import frechet_inception_distance
from . import metric_utils

#----------------------------------------------------------------------------

def check_scale(scale):
    """The scale as an int; only whole scales give fine blocks centred on coarse samples."""
    if isinstance(scale, bool) or not float(scale).is_integer() or scale < 1:
        raise ValueError(f'Scale consistency needs a whole scale >= 1, got {scale!r}')
    return int(scale)

def check_generator(G, what):
    """Raise UnsupportedGeneratorError (a ValueError) unless G renders at arbitrary coordinate
    lines; `what` names the metric."""
    if not render.supports_lines(getattr(G, 'synthesis', None)):
        raise equivariance.UnsupportedGeneratorError(f'Cannot compute {what}: the generator cannot render at other scales '
            '(its synthesis network takes no coordinate lines; CREPS generators can)')

def area_downsample(x, factor):
    """Mean of each factor x factor block of [N, C, H * factor, W * factor]."""
    return torch.nn.functional.avg_pool2d(x, kernel_size=factor, stride=factor) if factor > 1 else x

def scale_lines(resolution, scale, device='cpu'):
    """Row and column coordinates of the scale-`scale` render: the training grid at scale 1,
    else the aligned fine grid."""
    lines = render.lines_for_scale(resolution, 1) if scale == 1 else render.aligned_fine_lines(resolution, scale)
    return tuple(line.to(device) for line in lines)

def render_downsampled(G, ws, scale, G_kwargs={}):
    """Render ws at `scale` and area-downsample it to the training resolution."""
    rows, cols = scale_lines(G.img_resolution, scale, device=ws.device)
    return area_downsample(G.synthesis(ws=ws, rows=rows, cols=cols, **G_kwargs), scale)

def error_sums(G, ws, scale, G_kwargs={}):
    """[sum of squared differences, number of values] (float64) between the scale-1 render of ws
    and its area-downsampled scale-`scale` render."""
    kwargs = dict(noise_mode='const')
    kwargs.update(G_kwargs)
    base = render_downsampled(G, ws, 1, kwargs)
    down = render_downsampled(G, ws, scale, kwargs)
    diff = (down - base).to(torch.float64)
    return torch.stack([diff.square().sum(), torch.tensor(float(diff.numel()), dtype=torch.float64, device=diff.device)])

#----------------------------------------------------------------------------

def compute_scale_psnr(opts, num_samples, scale, batch_size):
    """Scale-consistency PSNR (dB) of opts.G at `scale` over `num_samples` latents.

    Each process renders batches of `batch_size` from metric_utils' shared stream of latents
    (sample k of a global batch goes to process k % num_gpus, the last batch is cut at
    num_samples), so the result does not depend on the process count. Every process returns it.
    """
    scale = check_scale(scale)
    check_generator(opts.G, f'scale consistency at scale {scale}')
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    z_iter = metric_utils.iterate_random_latents(opts=opts, batch_size=batch_size)
    c_iter = metric_utils.iterate_random_labels(opts=opts, batch_size=batch_size)
    progress = opts.progress.sub(tag=f'scale x{scale}', num_items=num_samples)

    sums = torch.zeros([2], dtype=torch.float64, device=opts.device)
    for start in range(0, num_samples, batch_size * opts.num_gpus):
        progress.update(start)
        z, c = next(z_iter), next(c_iter)
        n = equivariance.own_share(num_samples - start, batch_size, opts.num_gpus, opts.rank)
        if n == 0:
            continue
        with torch.no_grad():
            ws = G.mapping(z=z[:n], c=c[:n])
            sums += error_sums(G, ws, scale, opts.G_kwargs).to(opts.device)
    progress.update(num_samples)

    if opts.num_gpus > 1:
        torch.distributed.all_reduce(sums)
    return equivariance.psnr_from_sums(sums)[0]

#----------------------------------------------------------------------------

def compute_fid_at_scale(opts, max_real, num_gen, scale):
    """FID against up to `max_real` dataset images (None = all) of `num_gen` renders of opts.G
    at `scale`, area-downsampled to the training resolution: plain FID (same detector,
    same cached dataset statistics, same latents) with the renders swapped in. NaN on
    ranks other than 0."""
    scale = check_scale(scale)
    check_generator(opts.G, f'FID at scale {scale}')
    G_kwargs = dict(opts.G_kwargs)

    def gen_fn(G, z, c):
        # As plain FID's G(z, c, **G_kwargs), with the coordinate lines of the scale passed to the synthesis.
        rows, cols = scale_lines(G.img_resolution, scale, device=z.device)
        return area_downsample(G(z=z, c=c, rows=rows, cols=cols, **G_kwargs), scale)

    return frechet_inception_distance.compute_fid(opts, max_real=max_real, num_gen=num_gen, gen_fn=gen_fn, gen_key=f'area-downsampled scale {scale}')

#----------------------------------------------------------------------------
