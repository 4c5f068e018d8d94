"""Training speed: seconds per thousand images (sec/kimg) of train.py, printed as JSON.

Each configuration trains in a fresh train.py process on a synthetic dataset
of smooth random images for a few ticks; the figures are the means over the
ticks after the first (which carries the start-up), read from the run's
stats.jsonl: sec/kimg, seconds per step and peak resident memory.

    python bench/bench_train.py                      # tiny 32-px config, then the default 256-px config
    python bench/bench_train.py --only tiny32
    python bench/bench_train.py --device cuda --gpus 1
    python bench/bench_train.py --baseline 12117d5   # side by side with that commit (a git worktree)

With --baseline, each config also trains with the code of that git revision, checked
out in a temporary worktree, the two alternating (ours, baseline, ours, baseline), and
the report adds the baseline's sec/kimg and the speed-up (baseline sec/kimg / ours).

Not a test: timings depend on the machine. Compare ratios within one run.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile

import click
import numpy as np
import PIL.Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (resolution, batch, train.py options, kimg per tick, ticks measured). A tick of a
# multiple of 4 steps carries its share of the lazy path-length regularization (every 4th step).
CONFIGS = {
    # The acceptance config of the training issue: small capacity, everything else default.
    'tiny32': (32, 8, ['--cbase=512', '--cmax=32'], 0.032, 4),
    # The default CREPS config (30.5 M generator parameters), augmentation and regularization on.
    'creps256': (256, 4, [], 0.016, 1),
}

#----------------------------------------------------------------------------

def write_images(folder, resolution, count, seed=0):
    """`count` smooth random RGB images (sums of a few plane waves), as PNGs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:resolution, 0:resolution] / resolution
    for i in range(count):
        freq, phase = rng.uniform(0.5, 4, [3, 3, 2]), rng.uniform(0, 2 * np.pi, [3, 3])
        img = sum(np.sin(2 * np.pi * (freq[:, k, 0, None, None] * x + freq[:, k, 1, None, None] * y) + phase[:, k, None, None]) for k in range(3)) / 3
        PIL.Image.fromarray(np.rint((img.transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)).save(os.path.join(folder, f'{i:04d}.png'))

def run_config(name, device, gpus, workdir, repo=REPO):
    """Train config `name` with the train.py of `repo`; its figures as a dict."""
    resolution, batch, options, tick, ticks = CONFIGS[name]
    data = os.path.join(workdir, f'data{resolution}')
    if not os.path.isdir(data):
        os.makedirs(data)
        write_images(data, resolution, count=max(4 * batch, 16))
    outdir = tempfile.mkdtemp(dir=workdir, prefix=f'runs-{name}-')
    cmd = [sys.executable, os.path.join(repo, 'train.py'), f'--outdir={outdir}', '--cfg=creps', f'--data={data}', f'--gpus={gpus}',
        f'--batch={batch}', '--gamma=1', f'--tick={tick}', f'--kimg={tick * ticks + batch / 1000}', f'--snap={ticks + 1}', '--metrics=none',
        f'--device={device}', '--grid=2x2', *options]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise click.ClickException(f'{name}: train.py failed:\n{result.stderr[-2000:]}')
    run_dir = os.path.join(outdir, sorted(os.listdir(outdir))[-1])
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))][1:] # Tick 0 carries the start-up.
    sec_per_kimg = float(np.mean([s['Timing/sec_per_kimg']['mean'] for s in stats]))
    return dict(config=name, resolution=resolution, batch=batch, options=' '.join(options) or 'defaults', device=device, gpus=gpus,
        ticks=len(stats), sec_per_kimg=round(sec_per_kimg, 2), sec_per_step=round(sec_per_kimg * batch / 1000, 3),
        peak_rss_gb=round(max(s['Resources/cpu_mem_gb']['mean'] for s in stats), 2))

#----------------------------------------------------------------------------

@contextlib.contextmanager
def worktree(revision, workdir):
    """A git worktree of this repository at `revision`, removed afterwards."""
    path = os.path.join(workdir, 'baseline')
    result = subprocess.run(['git', '-C', REPO, 'worktree', 'add', '--detach', path, revision], capture_output=True, text=True)
    if result.returncode != 0:
        raise click.BadParameter(f'cannot check out {revision}: {result.stderr.strip()}', param_hint='--baseline')
    try:
        yield path
    finally:
        subprocess.run(['git', '-C', REPO, 'worktree', 'remove', '--force', path], capture_output=True, check=False)

@click.command()
@click.option('--only', type=click.Choice(sorted(CONFIGS)), multiple=True, help='Run only these configs (repeatable)')
@click.option('--device', default='cpu', show_default=True, help='Training device')
@click.option('--gpus', type=click.IntRange(min=1), default=1, show_default=True, help='Processes')
@click.option('--baseline', metavar='REV', help='Also train with this git revision, alternating, and report the speed-up')
@click.option('--rounds', type=click.IntRange(min=1), default=1, show_default=True, help='Alternations of ours and the baseline')
def main(only, device, gpus, baseline, rounds):
    """Measure train.py's sec/kimg for each config; one JSON line per config."""
    with tempfile.TemporaryDirectory() as workdir, (worktree(baseline, workdir) if baseline else contextlib.nullcontext()) as base_repo:
        for name in only or CONFIGS:
            ours, theirs = [], []
            for _ in range(rounds):
                ours.append(run_config(name, device, gpus, workdir))
                if base_repo is not None:
                    theirs.append(run_config(name, device, gpus, workdir, repo=base_repo))
            report = dict(ours[0], sec_per_kimg=round(float(np.mean([r['sec_per_kimg'] for r in ours])), 2))
            report['sec_per_step'] = round(report['sec_per_kimg'] * report['batch'] / 1000, 3)
            if theirs:
                report['baseline'] = baseline
                report['baseline_sec_per_kimg'] = round(float(np.mean([r['sec_per_kimg'] for r in theirs])), 2)
                report['speedup'] = round(report['baseline_sec_per_kimg'] / report['sec_per_kimg'], 2)
            print(json.dumps(report), flush=True)

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
