"""Rendering an any-scale generator: coordinate lines and tiled rendering.

A line-based synthesis network (CREPS) renders the pixel (i, j) from the row
coordinate rows[i] and the column coordinate cols[j]. The helpers here build the
two coordinate lines for a scale, an explicit size or a viewport, and render an
image tile by tile so that peak memory is set by the tile, not by the image.

The continuous image domain is [0, 1] x [0, 1] (x = columns, y = rows). At
scale 1 a network trained at resolution `res` samples it at linspace(0, 1, res),
both ends included, as the official CREPS release does.

The synthesis network is used through two methods, so that commands and
metrics can render without knowing its class:
`line_stage(ws, rows, cols, precision)` -> per-level line tensors [N, C, H, ...], [N, C, W, ...]
`pixel_stage(ws, row_lines, col_lines, precision)` -> image [N, C, H, W].
"""

import math
import numpy as np
import torch

#----------------------------------------------------------------------------

TILE_BUDGET_BYTES = 256 << 20 # Automatic tiling: largest float32 output tile (batch x pixels x channels) rendered at once.

def supports_lines(synthesis):
    """Can this synthesis network render at arbitrary coordinate lines?"""
    return hasattr(synthesis, 'line_stage') and hasattr(synthesis, 'pixel_stage')

def samples_for_scale(resolution, scale):
    """Number of samples along a side of the full frame at `scale`: round(resolution * scale);
    ValueError where that is less than one pixel."""
    if not scale > 0:
        raise ValueError(f'scale must be positive, got {scale}')
    samples = int(round(resolution * scale))
    if samples < 1:
        raise ValueError(f'scale {scale:g} gives {resolution * scale:.3g} pixels per side at resolution {resolution}, less than one')
    return samples

def lines_for_viewport(resolution, viewport=(0, 1, 0, 1), scale=1.0, size=None):
    """Row and column coordinates (float32 tensors) sampling `viewport` = (x0, x1, y0, y1).

    With `size` = (width, height) the viewport is sampled with exactly that many columns
    and rows, both ends of each range included. Otherwise it is a window into the frame at
    `scale`, which has N = samples_for_scale() pixels across the unit side: round(|x1 - x0| * N)
    columns (and likewise rows) at the frame's pixel spacing 1 / (N - 1), centred on the
    viewport's centre, so that the unit square gives the full frame (linspace(0, 1, N)) and
    the middle half of a 256-pixel frame its 128 middle pixels (not 129 from one end to the other).
    The viewport may extend beyond [0, 1] and may be flipped (x1 < x0).
    """
    x0, x1, y0, y1 = (float(v) for v in viewport)
    width, height = viewport_size(resolution, viewport, scale, size)
    if size is None:
        samples = samples_for_scale(resolution, scale)
        x0, x1 = _centred_span(x0, x1, width, samples)
        y0, y1 = _centred_span(y0, y1, height, samples)
    # torch.linspace in float32, exactly as the official release builds its training grid.
    return torch.linspace(y0, y1, height), torch.linspace(x0, x1, width)

def _centred_span(a, b, count, samples):
    """Ends of `count` samples at the spacing of `samples` across the unit side, centred on
    (a + b) / 2, in the direction from a to b (exactly a and b for the unit side's `samples`)."""
    half = (count - 1) / max(samples - 1, 1) / 2 * (1 if b >= a else -1)
    centre = (a + b) / 2
    return centre - half, centre + half

def viewport_size(resolution, viewport=(0, 1, 0, 1), scale=1.0, size=None):
    """(width, height) in pixels of lines_for_viewport(resolution, viewport, scale, size), without
    building them; ValueError where the viewport is less than one pixel wide or high."""
    if size is not None:
        width, height = (int(v) for v in size)
        if width < 1 or height < 1:
            raise ValueError(f'size must be at least 1x1, got {width}x{height}')
        return width, height
    x0, x1, y0, y1 = (float(v) for v in viewport)
    samples = samples_for_scale(resolution, scale)
    width, height = int(round(abs(x1 - x0) * samples)), int(round(abs(y1 - y0) * samples))
    if width < 1 or height < 1:
        raise ValueError(f'viewport {x0:g},{x1:g},{y0:g},{y1:g} is {abs(x1 - x0) * samples:.3g}x{abs(y1 - y0) * samples:.3g} pixels '
            f'at scale {scale:g}, less than one')
    return width, height

def lines_for_scale(resolution, scale):
    """Row and column coordinates of the full frame at `scale` (any positive float)."""
    return lines_for_viewport(resolution, scale=scale)

def lines_for_size(width, height):
    """Row and column coordinates sampling the full frame with `width` x `height` pixels."""
    return lines_for_viewport(None, size=(width, height))

def aligned_fine_lines(resolution, factor):
    """Coordinates of a `factor`-times finer grid whose factor x factor blocks are centred on
    the samples of the scale-1 grid, so that average-pooling a render on it by `factor`
    compares with the scale-1 render pixel for pixel (linspace at round(res * factor)
    samples is not nested in the scale-1 grid)."""
    factor = int(factor)
    coarse = np.linspace(0, 1, resolution)
    step = 1 / max(resolution - 1, 1)
    offsets = (np.arange(factor) - (factor - 1) / 2) * (step / factor)
    line = torch.from_numpy((coarse[:, None] + offsets[None, :]).reshape(-1)).to(torch.float32)
    return line, line

#----------------------------------------------------------------------------

def tiles(height, width, tile):
    """(row_start, row_end, col_start, col_end) of each tile, in raster order; tile=None: one tile."""
    th, tw = (height, width) if tile is None else (tile, tile)
    for i in range(0, height, th):
        for j in range(0, width, tw):
            yield i, min(i + th, height), j, min(j + tw, width)

def auto_tile(batch_size, height, width, channels, budget_bytes=None):
    """Tile side that keeps a float32 output tile within `budget_bytes` (default
    TILE_BUDGET_BYTES), None if the whole frame fits."""
    budget_bytes = budget_bytes or TILE_BUDGET_BYTES
    per_pixel = batch_size * channels * 4
    if height * width * per_pixel <= budget_bytes:
        return None
    side = int(math.sqrt(budget_bytes / per_pixel))
    return max(side // 16 * 16, 16)

def render_tiles(synthesis, ws, rows, cols, tile=None, precision='fp32'):
    """Yield (row_start, col_start, image tile [N, C, h, w] float32) covering the image
    at row coordinates `rows` and column coordinates `cols`.

    The coordinate lines go through the line stage once; the pixel stage then runs per
    tile, so memory depends on the tile size. Tiles equal the corresponding region of
    a full-frame render to float tolerance, since every pixel depends only on its own
    row and column.
    """
    rows = torch.as_tensor(rows, dtype=torch.float32, device=ws.device)
    cols = torch.as_tensor(cols, dtype=torch.float32, device=ws.device)
    row_lines, col_lines = synthesis.line_stage(ws, rows, cols, precision=precision)
    for i0, i1, j0, j1 in tiles(rows.shape[0], cols.shape[0], tile):
        img = synthesis.pixel_stage(ws, [r[:, :, i0:i1] for r in row_lines], [c[:, :, j0:j1] for c in col_lines], precision=precision)
        yield i0, j0, img

def quantize(img):
    """Generator output, float [N, C, H, W] in [-1, 1], as uint8 [N, C, H, W],
    rounded as NVIDIA's scripts and metrics round it."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)

def to_uint8(img):
    """Generator output, float [N, C, H, W] in [-1, 1], as a uint8 numpy array [N, H, W, C]."""
    return quantize(img).permute(0, 2, 3, 1).cpu().numpy()

def render_uint8(synthesis, ws, rows, cols, tile=None, precision='fp32', on_tile=None):
    """Images uint8 numpy [N, H, W, C] at coordinate lines `rows`, `cols`, rendered
    tile by tile (see render_tiles); each tile is converted as soon as it is done, so
    the float image never exists whole. `on_tile()` is called after each tile."""
    images = np.empty([ws.shape[0], len(rows), len(cols), synthesis.img_channels], dtype=np.uint8)
    for i, j, img in render_tiles(synthesis, ws, rows, cols, tile=tile, precision=precision):
        images[:, i : i + img.shape[2], j : j + img.shape[3]] = to_uint8(img)
        if on_tile is not None:
            on_tile()
    return images

def render_images(synthesis, ws, lines=None, tile=None, precision='fp32', on_tile=None, **synthesis_kwargs):
    """Images uint8 numpy [N, H, W, C] for `ws`: a line-based network renders at
    `lines` = (rows, cols) tile by tile (see render_uint8); other networks render
    at their training resolution, called with `synthesis_kwargs` (noise_mode, say)."""
    if lines is None:
        return to_uint8(synthesis(ws, **synthesis_kwargs))
    return render_uint8(synthesis, ws, *lines, tile=tile, precision=precision, on_tile=on_tile)

def render(synthesis, ws, rows, cols, tile=None, precision='fp32'):
    """Full image [N, C, H, W] float32, rendered tile by tile (see render_tiles)."""
    out = torch.empty([ws.shape[0], synthesis.img_channels, len(rows), len(cols)], device=ws.device)
    for i0, j0, img in render_tiles(synthesis, ws, rows, cols, tile=tile, precision=precision):
        out[:, :, i0 : i0 + img.shape[2], j0 : j0 + img.shape[3]] = img
    return out

#----------------------------------------------------------------------------
