"""Training speed: seconds per thousand images (sec/kimg) of train.py, printed as JSON.

Each configuration trains in a fresh train.py process on a synthetic dataset
of smooth random images for a few ticks; the figures are the means over the
ticks after the first (which carries the start-up), read from the run's
stats.jsonl: sec/kimg, seconds per step and peak resident memory.

    python bench/bench_train.py                      # every config below, one after the other
    python bench/bench_train.py --only demo32 --only stylegan2_demo32 --rounds 2   # their two sec/kimg: the StyleGAN2 baseline's kimg budget
    python bench/bench_train.py --only tiny32
    python bench/bench_train.py --device cuda --gpus 1
    python bench/bench_train.py --baseline 12117d5   # side by side with that commit (a git worktree)
    python bench/bench_train.py --only demo32 --busy 2   # also beside two busy processes: a shared machine

With --baseline, each config also trains with the code of that git revision, checked
out in a temporary worktree, the two alternating (ours, baseline, ours, baseline), and
the report adds the baseline's sec/kimg and the speed-up (baseline sec/kimg / ours). The
baseline trains the config that CONFIGS names for it: for demo32, the tiny config that the
baseline revision's README gave for a CPU run.

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

# name: (resolution, batch, train.py options, kimg per tick, ticks measured, config the --baseline
# revision trains). A tick of a multiple of 4 steps carries its share of the lazy path-length
# regularization (every 4th step).
DEMO32_OPTIONS = ['--cbase=512', '--cmax=32', '--aug=noaug', '--pl-weight=0', '--map-depth=2', '--workers=1']
CONFIGS = {
    # The acceptance config of the training issue: small capacity, everything else default.
    'tiny32': (32, 8, ['--cfg=creps', '--cbase=512', '--cmax=32'], 0.032, 4, 'tiny32'),
    # The recipe of the shipped Fashion-MNIST model (models/creps-fmnist32.md), against the tiny
    # config as the baseline revision would train it: what a CPU user gains, recipe and code together.
    'demo32': (32, 32, ['--cfg=creps', *DEMO32_OPTIONS], 0.128, 3, 'tiny32'),
    # StyleGAN2 with the same options: the baseline of the shipped model, trained for the kimg that
    # cost the same (docs/runs/stylegan2-fmnist32).
    'stylegan2_demo32': (32, 32, ['--cfg=stylegan2', *DEMO32_OPTIONS], 0.128, 3, 'stylegan2_demo32'),
    # The default CREPS config (30.5 M generator parameters), augmentation and regularization on.
    'creps256': (256, 4, ['--cfg=creps'], 0.016, 1, 'creps256'),
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
    resolution, batch, options, tick, ticks, _baseline = CONFIGS[name]
    data = os.path.join(workdir, f'data{resolution}')
    if not os.path.isdir(data):
        os.makedirs(data)
        write_images(data, resolution, count=max(4 * batch, 16))
    outdir = tempfile.mkdtemp(dir=workdir, prefix=f'runs-{name}-')
    cmd = [sys.executable, os.path.join(repo, 'train.py'), f'--outdir={outdir}', f'--data={data}', f'--gpus={gpus}',
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

# Another user's work: a single-threaded loop of matrix products that keeps one core busy.
BUSY_LOOP = 'import numpy as np\na = np.random.rand(384, 384)\nwhile True:\n    a = a @ a\n    a /= np.abs(a).max()'

@contextlib.contextmanager
def busy_processes(count):
    """`count` processes beside the measured run, each keeping a core busy."""
    env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', MKL_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', BUSY_LOOP], env=env) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

def measure(name, device, gpus, workdir, repo, busy):
    """run_config(), quiet and, with `busy` > 0, again beside that many busy processes."""
    quiet = run_config(name, device, gpus, workdir, repo=repo)
    if busy:
        with busy_processes(busy):
            quiet['busy_sec_per_kimg'] = run_config(name, device, gpus, workdir, repo=repo)['sec_per_kimg']
    return quiet

def mean_of(runs, key):
    return round(float(np.mean([r[key] for r in runs])), 2)

@click.command()
@click.option('--only', type=click.Choice(sorted(CONFIGS)), multiple=True, help='Run only these configs (repeatable)')
@click.option('--device', default='cpu', show_default=True, help='Training device')
@click.option('--gpus', type=click.IntRange(min=1), default=1, show_default=True, help='Processes')
@click.option('--baseline', metavar='REV', help='Also train with this git revision, alternating, and report the speed-up')
@click.option('--rounds', type=click.IntRange(min=1), default=1, show_default=True, help='Alternations of ours and the baseline')
@click.option('--busy', type=click.IntRange(min=0), default=0, show_default=True, help='Also measure beside this many busy processes (a shared machine)')
def main(only, device, gpus, baseline, rounds, busy):
    """Measure train.py's sec/kimg for each config; one JSON line per config."""
    with tempfile.TemporaryDirectory() as workdir, (worktree(baseline, workdir) if baseline else contextlib.nullcontext()) as base_repo:
        for name in only or CONFIGS:
            ours, theirs = [], []
            for _ in range(rounds):
                ours.append(measure(name, device, gpus, workdir, REPO, busy))
                if base_repo is not None:
                    theirs.append(measure(CONFIGS[name][-1], device, gpus, workdir, base_repo, busy))
            report = dict(ours[0], sec_per_kimg=mean_of(ours, 'sec_per_kimg'))
            report['sec_per_step'] = round(report['sec_per_kimg'] * report['batch'] / 1000, 3)
            if busy:
                report.update(busy_processes=busy, busy_sec_per_kimg=mean_of(ours, 'busy_sec_per_kimg'))
                report['shared_slowdown'] = round(report['busy_sec_per_kimg'] / report['sec_per_kimg'], 2)
            if theirs:
                report['baseline'] = f'{baseline} {CONFIGS[name][-1]}'
                report['baseline_sec_per_kimg'] = mean_of(theirs, 'sec_per_kimg')
                report['speedup'] = round(report['baseline_sec_per_kimg'] / report['sec_per_kimg'], 2)
                if busy:
                    report['baseline_shared_slowdown'] = round(mean_of(theirs, 'busy_sec_per_kimg') / report['baseline_sec_per_kimg'], 2)
            print(json.dumps(report), flush=True)

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
