"""The README's figures of the shipped model, reproducible from the repository.

    python docs/figures.py scales --out=docs/scales.png      # one sample at scales 1, 4 and 16, side by side
    python docs/figures.py classes --out=docs/classes.png    # a row of seeds per class, at scale 4

Each render goes through gen_images.py's own generate(); the renders are shown at one
display size, the smaller ones enlarged with nearest-neighbour so that their pixels show.
"""

import os
import sys

import click
import numpy as np
import PIL.Image
import PIL.ImageDraw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import dnnlib # pylint: disable=wrong-import-position
import gen_images # pylint: disable=wrong-import-position
import legacy # pylint: disable=wrong-import-position
from torch_utils import cli # pylint: disable=wrong-import-position
from torch_utils import render # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

def render_at(G, seed, class_idx, scale):
    """uint8 [H, W, C] of one seed at `scale`, through gen_images.generate."""
    z = cli.seed_latents(G, [seed], 'cpu')
    c = cli.class_labels(G, None if class_idx is None else str(class_idx), 1, 'cpu')
    return gen_images.generate(G, z, c, lines=render.lines_for_scale(G.img_resolution, scale))[0]

def to_rgb(img, side):
    """An image enlarged (nearest) to side x side, as RGB."""
    mode = 'L' if img.shape[2] == 1 else 'RGB'
    pil = PIL.Image.fromarray(img[:, :, 0] if mode == 'L' else img, mode)
    return pil.resize((side, side), PIL.Image.NEAREST).convert('RGB')

def save(image, path):
    with dnnlib.util.atomic_write(path) as f:
        image.save(f, format='PNG')
    print(f'Wrote {path}')

@click.group()
def main():
    """Figures of the shipped model for the README."""

@main.command()
@click.option('--seed', type=int, default=3, show_default=True)
@click.option('--class', 'class_idx', type=int, default=9, show_default=True, help='Class index')
@click.option('--out', default=os.path.join(REPO, 'docs', 'scales.png'), show_default=True)
def scales(seed, class_idx, out):
    """One sample at scales 1, 4 and 16 (32, 128 and 512 pixels), each shown at 512x512."""
    G, _names = legacy.load_generator(legacy.DEFAULT_NETWORK)
    side, pad, label = 512, 8, 24
    canvas = PIL.Image.new('RGB', (3 * side + 4 * pad, side + 2 * pad + label), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(canvas)
    for i, scale in enumerate([1, 4, 16]):
        img = render_at(G, seed, class_idx, scale)
        x = pad + i * (side + pad)
        canvas.paste(to_rgb(img, side), (x, pad))
        draw.text((x, side + pad + 4), f'scale {scale}: {img.shape[1]}x{img.shape[0]} pixels', fill=(0, 0, 0))
    save(canvas, out)

@main.command()
@click.option('--seeds', type=cli.IntRange(), default='0-7', show_default=True)
@click.option('--scale', type=float, default=4, show_default=True)
@click.option('--out', default=os.path.join(REPO, 'docs', 'classes.png'), show_default=True)
def classes(seeds, scale, out):
    """A row of seeds per class."""
    G, _names = legacy.load_generator(legacy.DEFAULT_NETWORK)
    rows = [np.concatenate([render_at(G, seed, k, scale) for seed in seeds], axis=1) for k in range(G.c_dim)]
    grid = np.concatenate(rows, axis=0)
    save(PIL.Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid), out)

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
