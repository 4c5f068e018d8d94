"""Generate images from a network pickle, at any scale, size or viewport."""

import os

import click
import numpy as np
import PIL.Image
import torch
import tqdm

import dnnlib
import legacy
from torch_utils import cli
from torch_utils import render
from training.networks_creps import PRECISIONS, default_precision

#----------------------------------------------------------------------------

def save_png(img, path):
    """Write a uint8 HWC array as PNG atomically: a crash never leaves a truncated file at `path`."""
    mode = {1: 'L', 3: 'RGB', 4: 'RGBA'}[img.shape[2]]
    with dnnlib.util.atomic_write(path) as f:
        PIL.Image.fromarray(img[:, :, 0] if mode == 'L' else img, mode).save(f, format='PNG')

def output_name(seed, class_idx=None, truncation_psi=1, noise_mode='const', scale=1, size=None, viewport=None, translate=(0, 0), rotate=0):
    """The file name of a seed's image: NVIDIA's seed%04d.png when only the seed chooses the image,
    else also what else does (class, truncation, noise, scale or size, viewport, translation,
    rotation), so that renders with other options into one folder never overwrite each other."""
    parts = [f'seed{seed:04d}']
    if class_idx is not None:
        parts.append(f'class{class_idx}')
    if truncation_psi != 1:
        parts.append(f'trunc{truncation_psi:g}')
    if noise_mode != 'const':
        parts.append(f'noise-{noise_mode}')
    if size is not None:
        parts.append(f'{size[0]}x{size[1]}')
    elif scale != 1:
        parts.append(f'scale{scale:g}')
    if viewport is not None:
        parts.append('view' + ','.join(f'{v:g}' for v in viewport))
    if tuple(translate) != (0, 0):
        parts.append('translate' + ','.join(f'{v:g}' for v in translate))
    if rotate != 0:
        parts.append(f'rotate{rotate:g}')
    return '-'.join(parts) + '.png'

def generate(G, z, c, truncation_psi=1, noise_mode='const', lines=None, tile=None, precision='fp32', on_tile=None):
    """Images uint8 [N, H, W, C] for latents `z` and labels `c`.

    A line-based network renders at `lines` = (rows, cols) tile by tile (tile=None: one
    pass), each tile converted to uint8 as soon as it is done; `on_tile()` is called
    after each. Other networks render at their training resolution.
    """
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=truncation_psi)
        return render.render_images(G.synthesis, ws, lines, tile=tile, precision=precision, on_tile=on_tile, noise_mode=noise_mode)

def content_transform(translate, rotate):
    """3x3 matrix that moves image content by `translate` (x, y, in image
    widths) after rotating it by `rotate` degrees counter-clockwise."""
    angle = np.deg2rad(rotate)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s, translate[0]], [-s, c, translate[1]], [0, 0, 1]])

def apply_translate_rotate(G, translate, rotate, viewport):
    """Apply --translate/--rotate: through the Fourier input's transform for
    StyleGAN3 (as NVIDIA's gen_images), by shifting the viewport for networks
    that take coordinate lines (translation only); returns the viewport."""
    if translate == (0, 0) and rotate == 0:
        return viewport
    synthesis_input = getattr(G.synthesis, 'input', None)
    if hasattr(synthesis_input, 'transform'):
        # The input samples its features at transform @ p: the inverse moves the content forward.
        synthesis_input.transform.copy_(torch.from_numpy(np.linalg.inv(content_transform(translate, rotate))))
        return viewport
    if render.supports_lines(G.synthesis) and rotate == 0:
        x0, x1, y0, y1 = viewport or (0, 1, 0, 1)
        return (x0 - translate[0], x1 - translate[0], y0 - translate[1], y1 - translate[1])
    what = '--rotate needs a StyleGAN3 network (a row-column network cannot rotate its lines)' if render.supports_lines(G.synthesis) \
        else '--translate and --rotate need a StyleGAN3 or CREPS network'
    raise click.UsageError(f'{type(G).__module__}.{type(G).__name__}: {what}')

#----------------------------------------------------------------------------

@click.command()
@cli.network_option(legacy.DEFAULT_NETWORK)
@click.option('--seeds', type=cli.IntRange(), help="Random seeds, e.g. '0,2,5-9'", required=True)
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@cli.class_option(legacy.read_class_names(legacy.DEFAULT_NETWORK))
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), help='Noise mode (for StyleGAN networks; CREPS has no noise)', default='const', show_default=True)
@click.option('--scale', type=click.FloatRange(min=0, min_open=True), help='Output scale relative to the training resolution, any positive float', default=1, show_default=True)
@click.option('--size', type=cli.Size(), help='Output size WxH; samples the viewport with exactly this many pixels')
@click.option('--viewport', type=cli.FloatTuple(4, '0,1,0,1'), help='Region x0,x1,y0,y1 of the continuous image domain ([0,1] is the training frame; may extend beyond)')
@click.option('--translate', type=cli.FloatTuple(2, '0.1,-0.3'), help='Move the content by x,y image widths (StyleGAN3, CREPS)', default='0,0', show_default=True)
@click.option('--rotate', type=float, help='Rotate the content by this many degrees (StyleGAN3)', default=0, show_default=True)
@click.option('--tile', type=click.IntRange(min=1), help='Render in tiles of this many pixels square [default: automatic for large outputs]')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), help='Images rendered at once', default=1, show_default=True)
@click.option('--precision', type=click.Choice(PRECISIONS), help='Compute precision [default: fp16 mixed on CUDA, fp32 on CPU]')
@click.option('--device', help='Torch device', default=cli.default_device(), show_default=True)
@click.option('--outdir', help='Where to save the output images', metavar='DIR', required=True, callback=cli.expand_path)
@cli.trust_pickle_option
def generate_images(network_pkl, seeds, truncation_psi, class_idx, noise_mode, scale, size, viewport, translate, rotate, tile, batch_size, precision, device, outdir, trust_pickle):
    """Generate images using a pretrained network pickle.

    \b
    # The shipped Fashion-MNIST model at 8 times its 32x32 training resolution:
    python gen_images.py --seeds=0-7 --class=sneaker --scale=8 --outdir=out
    \b
    # 2.5 times the training resolution:
    python gen_images.py --network=g.pkl --seeds=0-3 --scale=2.5 --outdir=out
    \b
    # A 1920x1080 render of a zoomed-in region, in tiles of 512 pixels:
    python gen_images.py --network=g.pkl --seeds=7 --size=1920x1080 --viewport=0.2,0.6,0.3,0.525 --tile=512 --outdir=out
    """
    device = cli.resolve_device(device)
    precision = cli.resolve_precision(precision, device, default_precision(device))

    print(f'Loading network from "{network_pkl}"...')
    with cli.one_line_errors(legacy.NetworkPickleError):
        G, class_names = legacy.load_generator(network_pkl, trust=trust_pickle)
    G = G.eval().requires_grad_(False).to(device)
    if viewport is not None and (viewport[0] == viewport[1] or viewport[2] == viewport[3]):
        raise click.BadParameter(f'{",".join(f"{v:g}" for v in viewport)} is empty: x0 must differ from x1, and y0 from y1', param_hint='--viewport')
    given_viewport = viewport
    viewport = apply_translate_rotate(G, tuple(translate), rotate, viewport)

    lines, num_tiles = None, 1
    if render.supports_lines(G.synthesis):
        width, height = cli.output_size(G.img_resolution, scale=scale, size=size, viewport=viewport)
        cli.check_output_memory(f'--scale={scale:g}' if size is None else f'--size={size[0]}x{size[1]}', min(batch_size, len(seeds)), height, width, G.img_channels)
        lines = render.lines_for_viewport(G.img_resolution, viewport or (0, 1, 0, 1), scale=scale, size=size)
        tile = tile or render.auto_tile(batch_size, height, width, G.img_channels)
        num_tiles = len(list(render.tiles(height, width, tile)))
        print(f'Rendering {width}x{height} pixels' + (f' in {num_tiles} tiles of {tile}x{tile}' if num_tiles > 1 else ''))
    elif scale != 1 or size is not None or viewport is not None or tile is not None:
        raise click.UsageError(f'{type(G).__module__}.{type(G).__name__} renders only at its training resolution: --scale, --size, --viewport and --tile need a CREPS network')

    labels = cli.class_labels(G, class_idx, batch_size, device, class_names)
    class_index = int(labels[0].argmax()) if G.c_dim else None
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as err:
        raise click.BadParameter(f'cannot create folder {outdir!r}: {err.strerror}', param_hint='--outdir')
    with tqdm.tqdm(total=len(seeds) * num_tiles, unit='tile' if num_tiles > 1 else 'img', desc='Generating') as progress:
        for start in range(0, len(seeds), batch_size):
            batch_seeds = seeds[start : start + batch_size]
            images = generate(G, cli.seed_latents(G, batch_seeds, device), labels[:len(batch_seeds)], truncation_psi=truncation_psi,
                noise_mode=noise_mode, lines=lines, tile=tile, precision=precision, on_tile=lambda: progress.update(len(batch_seeds)))
            if lines is None:
                progress.update(len(batch_seeds))
            with cli.one_line_errors(dnnlib.util.OutputError):
                for seed, img in zip(batch_seeds, images):
                    save_png(img, os.path.join(outdir, output_name(seed, class_index, truncation_psi, noise_mode, scale, size, given_viewport, translate, rotate)))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_images() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
