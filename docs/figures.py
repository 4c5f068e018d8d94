"""The README's figures of the shipped model, reproducible from the repository.

    python docs/figures.py scales --out=docs/scales.png      # one sample at scales 1, 4 and 16, side by side
    python docs/figures.py classes --out=docs/classes.png    # a row of seeds per class, at scale 4
    python docs/figures.py curves --run=CREPS=docs/runs/creps-fmnist32 --run=StyleGAN2=docs/runs/stylegan2-fmnist32
                                                             # FID and KID against training time, from the runs' logs

Each render goes through gen_images.py's own generate(); the renders are shown at one
display size, the smaller ones enlarged with nearest-neighbour so that their pixels show.
The curves come from the files train.py writes into a run folder (stats.jsonl and
metric-<name>.jsonl), which docs/runs/ keeps for the README's runs.
"""

import json
import os
import re
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

SNAPSHOT_KIMG = re.compile(r'network-snapshot-(\d+(?:\.\d+)?)\.pkl')

def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

def training_hours(stats):
    """[(kimg, hours)] at each tick of a run's stats.jsonl lines: the time spent training, without
    maintenance (snapshots and metrics, which a tick reports for the end of the tick before)."""
    points, maintenance = [], 0
    for line in stats:
        maintenance += line['Timing/maintenance_sec']['mean']
        points.append((line['Progress/kimg']['mean'], (line['Timing/total_sec']['mean'] - maintenance) / 3600))
    return points

def training_curve(run_dir, metric):
    """[(kimg, training hours, value)] of metric-<metric>.jsonl in `run_dir`, one per snapshot: the
    snapshot's kimg from its file name, its training time from the tick that ended there. A folder
    with training.json ({"kimg", "training_hours"}) instead of stats.jsonl holds the measurements of
    one finished network (calc_metrics' output), its one point placed by that file."""
    metric_lines = read_jsonl(os.path.join(run_dir, f'metric-{metric}.jsonl'))
    if not os.path.isfile(os.path.join(run_dir, 'stats.jsonl')):
        with open(os.path.join(run_dir, 'training.json')) as f:
            network = json.load(f)
        return [(network['kimg'], network['training_hours'], line['results'][metric]) for line in metric_lines[-1:]]
    ticks = training_hours(read_jsonl(os.path.join(run_dir, 'stats.jsonl')))
    curve = []
    for line in metric_lines:
        kimg = float(SNAPSHOT_KIMG.fullmatch(os.path.basename(line['snapshot_pkl'])).group(1))
        tick_kimg, hours = min(ticks, key=lambda tick: abs(tick[0] - kimg)) # Labels keep whole kimg of six-digit runs.
        curve.append((tick_kimg, hours, line['results'][metric]))
    return curve

@main.command()
@click.option('--run', 'runs', metavar='NAME=DIR', multiple=True, required=True, help='A run folder and its name in the legend (repeatable)')
@click.option('--metrics', 'metric_names', default='fid1k,kid1k', show_default=True, help='One panel per metric, comma-separated')
@click.option('--out', default=os.path.join(REPO, 'docs', 'curves.png'), show_default=True)
def curves(runs, metric_names, out):
    """Each metric of each run against its training time (and kimg, in the legend's table)."""
    import matplotlib # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt # pylint: disable=import-outside-toplevel
    metric_names = metric_names.split(',')
    fig, axes = plt.subplots(1, len(metric_names), figsize=(5.5 * len(metric_names), 4), squeeze=False)
    positive = {metric: True for metric in metric_names}
    for run in runs:
        name, _, run_dir = run.partition('=')
        for ax, metric in zip(axes[0], metric_names):
            curve = training_curve(run_dir, metric)
            last_kimg = curve[-1][0] if curve else 0
            values = [value for _kimg, _hours, value in curve]
            positive[metric] &= all(value > 0 for value in values)
            one_point = len(curve) == 1 # A finished network without its run's curve: drawn as a star.
            ax.plot([hours for _kimg, hours, _value in curve], values, marker='*' if one_point else 'o', markersize=12 if one_point else 6,
                linestyle='none' if one_point else '-', label=f'{name} ({last_kimg:.0f} kimg{", final network" if one_point else ""})')
    for ax, metric in zip(axes[0], metric_names):
        ax.set_xlabel('training time (hours, without snapshots and metrics)')
        ax.set_ylabel(metric)
        ax.set_yscale('log' if positive[metric] else 'linear') # KID, unbiased, can be below 0.
        ax.grid(True, which='both', alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with dnnlib.util.atomic_write(out) as f:
        fig.savefig(f, format='png', dpi=100)
    print(f'Wrote {out}')

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
