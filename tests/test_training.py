"""train.py end to end on the CPU: the artifacts of a run, exact resume after
SIGKILL, two processes against one, and the errors given before anything starts.

Training runs in subprocesses with one CPU thread each: thread pools fighting
over two cores make tiny networks ten times slower, and a fixed thread count
keeps the float arithmetic reproducible.
"""

import glob
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

import legacy
from torch_utils import training_stats
from training import training_loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--cfg=creps', '--gamma=1', '--cbase=256', '--cmax=16', '--biline-channels=8', '--rank=2', '--map-depth=2',
    '--mbstd-group=2', '--grid=4x2', '--metrics=none', '--device=cpu']

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """24 smooth RGB images, each a different mix of waves, drawn at 20x20 and
    turned into a 16x16 dataset ZIP by dataset_tool.py, as a user would."""
    root = tmp_path_factory.mktemp('data')
    (root / 'images').mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:20, 0:20] / 20
    for i in range(24):
        freq, phase = rng.uniform(0.5, 3, [3, 2]), rng.uniform(0, 2 * np.pi, 3)
        img = np.stack([np.sin(2 * np.pi * (freq[k, 0] * x + freq[k, 1] * y) + phase[k]) for k in range(3)], axis=-1)
        PIL.Image.fromarray(np.rint((img + 1) * 127.5).astype(np.uint8)).save(root / 'images' / f'img{i:03d}.png')
    result = subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), f'--source={root / "images"}',
        f'--dest={root / "waves.zip"}', '--resolution=16x16'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return str(root / 'waves.zip')

def train(outdir, *args, wait=True, **env_vars):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', **env_vars)
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), f'--outdir={outdir}', *TINY, *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

def only_run_dir(outdir):
    runs = sorted(glob.glob(os.path.join(outdir, '0*')))
    assert len(runs) == 1, runs
    return runs[0]

def final_state(run_dir):
    return training_loop.load_training_state(training_loop.find_training_state(run_dir))

def assert_states_equal(a, b):
    for net in ['G', 'D', 'G_ema']:
        assert a['networks'][net].keys() == b['networks'][net].keys()
        for name, tensor in a['networks'][net].items():
            assert torch.equal(tensor, b['networks'][net][name]), f'{net}.{name} differs'
    assert a['progress'] == b['progress']

#----------------------------------------------------------------------------

def test_short_run_writes_every_artifact(dataset, tmp_path):
    result = train(tmp_path / 'runs', f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.04', '--tick=0.02', '--snap=1',
        '--aug=ada', '--workers=1')
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / 'runs')
    assert os.path.basename(run_dir) == '00000-creps-waves-gpus1-batch4-gamma1'
    names = set(os.listdir(run_dir))
    for name in ['training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png']:
        assert name in names
    assert any(name.startswith('events.out.tfevents.') for name in names)
    snapshots = sorted(name for name in names if name.startswith('network-snapshot-'))
    states = sorted(name for name in names if name.startswith('training-state-'))
    grids = sorted(name for name in names if name.startswith('fakes') and name != 'fakes_init.png')
    # Ticks end after the first step (tick 0), 20 images later and at the end: three snapshots of each kind.
    assert snapshots == ['network-snapshot-000000.004.pkl', 'network-snapshot-000000.024.pkl', 'network-snapshot-000000.040.pkl']
    assert len(states) == 3 and len(grids) == 3
    assert not [name for name in names if name.startswith('.tmp-')]

    # The grid is 4x2 images of 16x16.
    assert PIL.Image.open(os.path.join(run_dir, 'fakes_init.png')).size == (64, 32)
    options = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert options['batch_size'] == 4 and options['G_kwargs']['class_name'] == 'training.networks_creps.Generator'
    log = open(os.path.join(run_dir, 'log.txt')).read()
    assert 'tick 2' in log and 'sec/kimg' in log and 'augment' in log and 'Exiting...' in log
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert len(stats) == 3
    for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/signs/real', 'Progress/augment', 'Timing/sec_per_kimg', 'Progress/nonfinite_grads_G']:
        assert key in stats[-1], key
    assert stats[-1]['Progress/nonfinite_grads_G']['mean'] == 0

    with open(os.path.join(run_dir, snapshots[-1]), 'rb') as f:
        snapshot = pickle.load(f)
    assert set(snapshot) == {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs', 'tensor_checksums'}
    assert snapshot['tensor_checksums'] == legacy.tensor_checksums(snapshot)
    assert snapshot['training_set_kwargs']['path'] == dataset
    assert not any(p.requires_grad for p in snapshot['G_ema'].parameters())

    # The snapshot renders at any scale.
    assert PIL.Image.open(os.path.join(run_dir, 'reals.png')).size == (64, 32)
    out = tmp_path / 'out'
    result = subprocess.run([sys.executable, os.path.join(REPO, 'gen_images.py'), f'--network={os.path.join(run_dir, snapshots[-1])}',
        '--seeds=0-1', '--scale=4', f'--outdir={out}', '--device=cpu'], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert PIL.Image.open(out / 'seed0000-scale4.png').size == (64, 64)

def test_help_example_for_the_cpu_runs_as_written(dataset, tmp_path):
    """train.py --help's CPU example, as printed, on a d.zip in the working folder; and progress lines
    within a tick (here at every step: PROGRESS_INTERVAL patched in the process)."""
    help_text = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--help'], capture_output=True, text=True).stdout
    lines = help_text[help_text.index('# A short CREPS run on the CPU'):].splitlines()[1:3]
    command = ' '.join(line.strip().rstrip('\\') for line in lines).split()
    assert command[:2] == ['python', 'train.py'] and '--data=d.zip' in command and '--metrics=none' in command
    images = tmp_path / 'images'
    images.mkdir()
    with zipfile.ZipFile(dataset) as z: # 64 images (the batch is 32): the 24 waves and their flips and rotations.
        pngs = [np.asarray(PIL.Image.open(io.BytesIO(z.read(n)))) for n in sorted(z.namelist()) if n.endswith('.png')]
    for i in range(64):
        PIL.Image.fromarray(np.ascontiguousarray(np.rot90(pngs[i % 24], i // 24))).save(images / f'{i}.png')
    result = subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), f'--source={images}', f'--dest={tmp_path / "d.zip"}'],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    code = (f'import sys; sys.path.insert(0, {REPO!r}); from training import training_loop; training_loop.PROGRESS_INTERVAL = 0; '
        f'sys.argv = ["train.py"] + {command[2:]!r}; import train; train.main()')
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(os.path.join(only_run_dir(tmp_path / 'runs'), 'log.txt')).read()
    assert 'tick 2' in log and re.search(r'\.\.\. kimg [\d.]+ +sec/kimg [\d.]+ +next tick at kimg [\d.]+ in', log), log[-2000:]

def test_conditional_run_keeps_the_class_names(dataset, tmp_path):
    """The class names of the dataset travel in the snapshots, so that gen_images.py takes --class by name."""
    images = tmp_path / 'images'
    with zipfile.ZipFile(dataset) as z:
        for i, name in enumerate(sorted(n for n in z.namelist() if n.endswith('.png'))[:8]):
            (images / ['circles', 'waves'][i % 2]).mkdir(parents=True, exist_ok=True)
            (images / ['circles', 'waves'][i % 2] / f'{i}.png').write_bytes(z.read(name))
    labelled = tmp_path / 'labelled.zip'
    result = subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), f'--source={images}', f'--dest={labelled}',
        '--labels-from-folders'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    result = train(tmp_path / 'runs', f'--data={labelled}', '--cond=1', '--gpus=1', '--batch=4', '--kimg=0.004', '--workers=0')
    assert result.returncode == 0, result.stderr[-3000:]
    snapshot = sorted(glob.glob(os.path.join(only_run_dir(tmp_path / 'runs'), 'network-snapshot-*.pkl')))[-1]
    G, class_names = legacy.load_generator(snapshot)
    assert G.c_dim == 2 and class_names == ['circles', 'waves']
    result = subprocess.run([sys.executable, os.path.join(REPO, 'gen_images.py'), f'--network={snapshot}', '--seeds=0',
        '--class=Waves', f'--outdir={tmp_path / "out"}', '--device=cpu'], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'out' / 'seed0000-class1.png').is_file()

@pytest.mark.numerics
def test_resume_after_sigkill_is_bitwise_exact(dataset, tmp_path):
    args = [f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.06', '--tick=0.012', '--snap=1', '--aug=ada', '--workers=1', '--mirror=1']
    result = train(tmp_path / 'straight', *args)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = final_state(only_run_dir(tmp_path / 'straight'))

    # Kill the same run with SIGKILL some time after its second checkpoint, whatever it is doing.
    proc = train(tmp_path / 'killed', *args, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(glob.glob(str(tmp_path / 'killed' / '*' / 'training-state-*.pt'))) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, 'the run finished before it could be killed: ' + proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_dir = only_run_dir(tmp_path / 'killed')
    assert final_state(killed_dir)['progress']['cur_nimg'] < expected['progress']['cur_nimg']

    result = train(tmp_path / 'killed', *args, f'--resume={killed_dir}')
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_dir = sorted(glob.glob(str(tmp_path / 'killed' / '0*')))[-1]
    assert resumed_dir != killed_dir
    assert_states_equal(final_state(resumed_dir), expected)
    assert float(final_state(resumed_dir)['networks']['augment_pipe']['p']) == float(expected['networks']['augment_pipe']['p'])

def test_ctrl_c_stops_at_the_next_step_with_a_checkpoint(dataset, tmp_path):
    # A long tick, so that the stop falls inside one; a DataLoader worker, which must survive the Ctrl-C.
    args = [f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=100', '--tick=50', '--snap=1', '--aug=noaug', '--workers=1']
    proc = train(tmp_path, *args, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not glob.glob(str(tmp_path / '*' / 'training-state-*.pt')):
        time.sleep(0.05) # Tick 0's checkpoint: training runs.
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT) # As a terminal sends it: to every process of the group.
    _stdout, stderr = proc.communicate(timeout=120)
    stderr = stderr.decode()
    assert proc.returncode == 0, stderr[-3000:]
    assert 'Ctrl-C: stopping at the end of this step' in stderr and 'Traceback' not in stderr
    run_dir = only_run_dir(tmp_path)
    states = training_loop.training_states(run_dir)
    assert len(states) == 2 # Tick 0's and the stop's.
    stopped = training_loop.load_training_state(states[0])['progress']
    assert 0 < stopped['cur_nimg'] < 50000 and stopped['cur_nimg'] % 4 == 0 and stopped['cur_tick'] == 2
    with open(os.path.join(run_dir, 'log.txt')) as f:
        assert 'Aborting: writing a snapshot and a training state to continue from' in f.read()
    assert len(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl'))) == 2

def test_resume_from_a_run_folder_skips_a_damaged_newest_checkpoint(dataset, tmp_path):
    args = [f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.012', '--tick=0.004', '--snap=1', '--aug=noaug', '--workers=0']
    result = train(tmp_path / 'runs', *args)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / 'runs')
    states = training_loop.training_states(run_dir)
    assert len(states) >= 2
    with open(states[0], 'r+b') as f: # As a disk that filled while it was written (older versions had no atomic write).
        f.truncate(100)
    result = train(tmp_path / 'runs', *args, f'--resume={run_dir}', '--kimg=0.016')
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Warning: {states[0]}: not a readable training state' in result.stderr
    assert 'resuming from the checkpoint before it' in result.stderr
    resumed = sorted(glob.glob(str(tmp_path / 'runs' / '0*')))[-1]
    assert resumed != run_dir and final_state(resumed)['progress']['cur_nimg'] == 16

@pytest.mark.numerics
def test_two_processes_match_one(dataset, tmp_path):
    # Per-sample independence (no augmentation, minibatch-std groups of one, no path-length
    # regularization, whose running mean is per process) makes the global batch's gradient
    # independent of how it is split. The mapping's w_avg is a running statistic that each
    # process (and each accumulation round) tracks on its own, as in StyleGAN: not compared.
    args = [f'--data={dataset}', '--batch=8', '--batch-gpu=4', '--kimg=0.04', '--tick=0.04', '--snap=1', '--aug=noaug',
        '--mbstd-group=1', '--pl-weight=0', '--workers=0']
    one = train(tmp_path / 'one', *args, '--gpus=1')
    assert one.returncode == 0, one.stderr[-3000:]
    two = train(tmp_path / 'two', *args, '--gpus=2')
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = final_state(only_run_dir(tmp_path / 'one')), final_state(only_run_dir(tmp_path / 'two'))
    assert len(b['ranks']) == 2
    # Summation order differs between the two runs, and Adam divides each gradient by its own
    # magnitude, so a weight whose gradient is nearly zero can move by up to one step (lr 0.002)
    # differently; typical weights agree to about 1e-6.
    total_diff, count = 0.0, 0
    for net in ['G', 'D', 'G_ema']:
        for name, tensor in a['networks'][net].items():
            if name.endswith('w_avg'):
                continue
            torch.testing.assert_close(b['networks'][net][name], tensor, rtol=0, atol=2e-3, msg=f'{net}.{name}')
            total_diff += (b['networks'][net][name] - tensor).abs().sum().item()
            count += tensor.numel()
    assert total_diff / count < 1e-5
    # The losses, gathered over both processes, are those of the one-process run.
    stats = [[json.loads(line) for line in open(os.path.join(only_run_dir(tmp_path / run), 'stats.jsonl'))] for run in ['one', 'two']]
    for tick_one, tick_two in zip(*stats):
        for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real']:
            assert tick_one[key]['num'] == tick_two[key]['num']
            assert tick_one[key]['mean'] == pytest.approx(tick_two[key]['mean'], rel=1e-5)
    assert a['progress']['cur_nimg'] == b['progress']['cur_nimg'] == 40
    # Training moved the weights after the first checkpoint: the comparison is not vacuous.
    first = training_loop.load_training_state(sorted(glob.glob(os.path.join(only_run_dir(tmp_path / 'one'), 'training-state-*.pt')))[0])
    assert first['progress']['cur_nimg'] == 8
    assert not torch.equal(first['networks']['G']['synthesis.b8.fc0.weight'], a['networks']['G']['synthesis.b8.fc0.weight'])

def test_resume_from_a_network_pickle_fine_tunes_its_weights(dataset, tmp_path):
    result = train(tmp_path / 'base', f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.004', '--aug=noaug', '--workers=0')
    assert result.returncode == 0, result.stderr[-3000:]
    pkl = glob.glob(os.path.join(only_run_dir(tmp_path / 'base'), 'network-snapshot-*.pkl'))[0]
    with open(pkl, 'rb') as f:
        source = pickle.load(f)['G_ema'].state_dict()
    result = train(tmp_path / 'tuned', f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.004', '--aug=noaug', '--workers=0',
        f'--resume={pkl}', '--seed=7')
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / 'tuned')
    assert f'Resuming from "{pkl}"' in open(os.path.join(run_dir, 'log.txt')).read()
    options = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert options['resume_pkl'] == pkl and options['ema_rampup'] is None and options['ada_kimg'] == 100
    # One step later G_ema has moved, but is still almost the pickle's (its half-life is 1250 images),
    # where a fresh init, with weights drawn from N(0, 1), would be off by about 1.
    tuned = final_state(run_dir)['networks']['G_ema']
    name = 'synthesis.b8.fc0.weight'
    assert 0 < (tuned[name] - source[name]).abs().max() < 1e-2

@pytest.mark.parametrize('cfg, module, settings', [
    ('stylegan2', 'networks_stylegan2', dict(G_reg_interval=4, style_mixing_prob=0.9)),
    ('stylegan3-t', 'networks_stylegan3', dict(G_reg_interval=None)),
    ('stylegan3-r', 'networks_stylegan3', dict(G_reg_interval=None, blur_init_sigma=10, use_radial_filters=True)),
])
def test_stylegan_configs_train_and_render(dataset, tmp_path, cfg, module, settings):
    result = train(tmp_path / 'runs', f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.008', '--tick=0.004', '--workers=0',
        f'--cfg={cfg}')
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / 'runs')
    options = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert options['G_kwargs']['class_name'] == f'training.{module}.Generator'
    flat = {**options, **options['loss_kwargs'], **options['G_kwargs']}
    assert {key: flat.get(key) for key in settings} == settings
    snapshot = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1]
    out = tmp_path / 'out'
    result = subprocess.run([sys.executable, os.path.join(REPO, 'gen_images.py'), f'--network={snapshot}', '--seeds=0',
        f'--outdir={out}', '--device=cpu'], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert PIL.Image.open(out / 'seed0000.png').size == (16, 16)

@pytest.mark.numerics
def test_metrics_run_at_snapshots_without_changing_training(dataset, tmp_path):
    args = [f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.008', '--tick=0.004', '--aug=noaug', '--workers=0']
    plain = train(tmp_path / 'plain', *args)
    measured = train(tmp_path / 'measured', *args, '--metrics=sc1k_x2')
    assert plain.returncode == 0 and measured.returncode == 0, measured.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / 'measured')
    lines = [json.loads(line) for line in open(os.path.join(run_dir, 'metric-sc1k_x2.jsonl'))]
    assert [line['snapshot_pkl'] for line in lines] == ['network-snapshot-000000.004.pkl', 'network-snapshot-000000.008.pkl']
    assert all(np.isfinite(line['results']['sc1k_x2']) for line in lines)
    # Metrics draw random numbers of their own; the training run is the same with or without them.
    assert_states_equal(final_state(run_dir), final_state(only_run_dir(tmp_path / 'plain')))

def test_stylegan3_r_fine_tunes_from_its_snapshot(dataset, tmp_path):
    args = [f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.004', '--workers=0', '--aug=noaug', '--cfg=stylegan3-r']
    result = train(tmp_path / 'base', *args)
    assert result.returncode == 0, result.stderr[-3000:]
    pkl = glob.glob(os.path.join(only_run_dir(tmp_path / 'base'), 'network-snapshot-*.pkl'))[0]
    result = train(tmp_path / 'tuned', *args, f'--resume={pkl}')
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'Resuming from "{pkl}"' in open(os.path.join(only_run_dir(tmp_path / 'tuned'), 'log.txt')).read()

@pytest.mark.parametrize('args, message', [
    (['--gpus=2', '--batch=5'], '--batch=5 is not a multiple of --gpus=2'),
    (['--gpus=1', '--batch=4', '--batch-gpu=1'], '--batch-gpu=1 is smaller than --mbstd-group=2'),
    (['--gpus=1', '--batch=32'], 'has 24 images, fewer than the 32'),
    (['--gpus=1', '--batch=4', '--metrics=fid51k'], "unknown metric 'fid51k'"),
    (['--gpus=1', '--batch=4', '--cfg=stylegan4'], '--cfg'),
    (['--gpus=1', '--batch=4', '--resume=/nonexistent/snapshot.pkl'], '/nonexistent/snapshot.pkl: no such file'),
])
def test_bad_options_fail_before_anything_starts(dataset, tmp_path, args, message):
    result = train(tmp_path / 'runs', f'--data={dataset}', *args)
    assert result.returncode != 0
    assert message in result.stderr and 'Traceback' not in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / 'runs')

def test_unreachable_metric_detector_stops_before_training(dataset, tmp_path):
    # Port 9 (discard) refuses at once, like an offline machine, without waiting on a network.
    result = train(tmp_path / 'runs', f'--data={dataset}', '--gpus=1', '--batch=4', '--metrics=fid50k_full',
        CREPS_INCEPTION='http://127.0.0.1:9/inception.pkl', DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
    assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr
    assert 'Cannot download http://127.0.0.1:9/inception.pkl' in result.stderr and '--metrics' in result.stderr
    assert not os.path.exists(tmp_path / 'runs')

def test_bad_data_is_one_line(tmp_path):
    result = train(tmp_path / 'runs', f'--data={tmp_path / "missing.zip"}', '--gpus=1', '--batch=4')
    assert result.returncode != 0 and '--data' in result.stderr and 'Traceback' not in result.stderr, result.stderr
    # Images of two sizes (a ZIP made by hand, not by dataset_tool.py): refused before the run folder exists.
    with zipfile.ZipFile(tmp_path / 'mixed.zip', 'w') as z:
        for i in range(8):
            buf = io.BytesIO()
            PIL.Image.fromarray(np.full([64 if i == 5 else 32] * 2 + [3], i * 20, dtype=np.uint8)).save(buf, format='PNG')
            z.writestr(f'img{i}.png', buf.getvalue())
    result = train(tmp_path / 'runs', f'--data={tmp_path / "mixed.zip"}', '--gpus=1', '--batch=4')
    assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr
    assert f'{tmp_path / "mixed.zip"}/img5.png: image is 64x64 with 3 channel(s) but the dataset\'s first image is 32x32' in result.stderr
    assert not (tmp_path / 'runs').exists()

#----------------------------------------------------------------------------

def test_default_grids_fit_the_device():
    assert training_loop.grid_shape(256, None, 'cuda') == (30, 16) and training_loop.grid_shape(32, None, 'cuda') == (32, 32)
    assert training_loop.grid_shape(256, None, 'cpu') == (8, 8) and training_loop.grid_shape(1024, None, 'cpu') == (7, 4)
    assert training_loop.grid_shape(32, (3, 2), 'cpu') == (3, 2)

def test_snapshot_labels_follow_one_rule_per_run():
    whole = [training_loop.snapshot_label(n, 1, 4) for n in [0, 1008, 2016, 3024, 4000]]
    assert whole == ['000000', '000001', '000002', '000003', '000004']
    # A fractional duration: decimals for every snapshot of the run, so the last (3.4) is not a second 000003.
    assert [training_loop.snapshot_label(n, 1, 3.4) for n in [0, 3000, 3400]] == ['000000.000', '000003.000', '000003.400']
    assert training_loop.snapshot_label(40, 0.02, 0.04) == '000000.040'
    # Stopped by request within a tick: decimals, unless on a whole kimg.
    assert [training_loop.snapshot_label(n, 1, 4, stopped=True) for n in [208, 2000]] == ['000000.208', '000002']

def test_nonfinite_gradients_are_zeroed_and_counted():
    layer = torch.nn.Linear(3, 2)
    before = layer.weight.detach().clone()
    layer.weight.grad = torch.tensor([[float('nan'), 1, 1], [1, float('inf'), 1]])
    layer.bias.grad = torch.tensor([1.0, -float('inf')])
    phase = training_loop._Phase('Gmain', layer, torch.optim.SGD(layer.parameters(), lr=1), interval=1)
    collector = training_stats.Collector(regex='Progress/nonfinite_grads_G')
    training_loop._step(phase, num_gpus=1)
    collector.update()
    assert collector.mean('Progress/nonfinite_grads_G') == 3
    assert torch.isfinite(layer.weight).all() and torch.isfinite(layer.bias).all()
    assert layer.weight[0, 0] == before[0, 0] and layer.weight[0, 1] == before[0, 1] - 1

def test_resume_refuses_changed_settings():
    saved = training_loop.full_options(batch_size=8, total_kimg=10, loss_kwargs=dict(r1_gamma=1, pl_weight=2))
    training_loop.check_resumable(saved, training_loop.full_options(batch_size=8, total_kimg=20, loss_kwargs=dict(r1_gamma=1, pl_weight=2)))
    with pytest.raises(ValueError, match='batch_size = 8, this run has 16'):
        training_loop.check_resumable(saved, training_loop.full_options(batch_size=16, total_kimg=10, loss_kwargs=dict(r1_gamma=1, pl_weight=2)))
    with pytest.raises(training_loop.ResumeMismatch) as err: # The leaf that differs, not the whole dict.
        training_loop.check_resumable(saved, training_loop.full_options(batch_size=8, total_kimg=10, loss_kwargs=dict(r1_gamma=2, pl_weight=2)))
    assert (err.value.key, err.value.saved, err.value.now) == ('loss_kwargs.r1_gamma', 1, 2)

def test_a_continuation_takes_the_runs_options(dataset, tmp_path):
    """--resume=<run folder> alone continues the run with its recorded options; a changed option is named
    as on the command line; without --resume the required options are required."""
    result = train(tmp_path / 'runs', f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=0.008', '--tick=0.004', '--workers=0')
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / 'runs')
    recorded = json.load(open(os.path.join(run_dir, 'command_line.json')))
    assert recorded['batch'] == 4 and recorded['cbase'] == 256 and recorded['grid_size'] == [4, 2] and 'resume' not in recorded
    env = dict(os.environ, OMP_NUM_THREADS='1')
    continue_run = lambda *args: subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), f'--resume={run_dir}', *args],
        env=env, capture_output=True, text=True, timeout=600)
    result = continue_run('--kimg=0.012')
    assert result.returncode == 0, result.stderr[-3000:]
    continued = sorted(glob.glob(os.path.join(tmp_path / 'runs', '0*')))[-1]
    assert continued != run_dir and final_state(continued)['progress']['cur_nimg'] == 12
    options = json.load(open(os.path.join(continued, 'training_options.json')))
    assert options['loss_kwargs']['r1_gamma'] == 1 and options['G_kwargs']['channel_base'] == 512 and options['total_kimg'] == 0.012
    result = continue_run('--gamma=2')
    assert result.returncode != 0 and 'Traceback' not in result.stderr
    assert "Invalid value for --gamma: the run was trained with --gamma=1.0 (loss_kwargs.r1_gamma), this continuation asks for 2.0" in result.stderr
    result = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), f'--outdir={tmp_path}', f'--data={dataset}', '--gpus=1',
        '--batch=4', '--gamma=1'], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "Missing option '--cfg'" in result.stderr and 'Traceback' not in result.stderr

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------

def test_diverging_run_reports_nonfinite_steps_and_stops_with_finite_buffers(dataset, tmp_path):
    # --glr=1e30 makes every generator gradient non-finite from the first steps on.
    result = train(tmp_path / 'runs', f'--data={dataset}', '--gpus=1', '--batch=4', '--kimg=2', '--tick=0.1', '--snap=1',
        '--aug=noaug', '--workers=0', '--glr=1e30')
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('Error:')]
    assert len(errors) == 1 and 'non-finite' in errors[0] and '--glr' in errors[0] and '1e+30' in errors[0], result.stderr
    ticks = [line for line in result.stdout.splitlines() if line.startswith('tick ')]
    assert 'nonfinite G:' in ticks[-1] and int(ticks[-1].split('nonfinite G:')[1].split()[0]) > 0
    assert 'Warning: non-finite gradients' in result.stdout
    run_dir = only_run_dir(tmp_path / 'runs')
    assert errors[0] in open(os.path.join(run_dir, 'log.txt'), encoding='utf-8').read()
    kimg = float(ticks[-1].split()[3])
    assert kimg < 1, 'stopped after 100 steps of the generator loss (0.4 kimg), not at --kimg'
    # The running averages stayed finite: the last snapshot loads and its G_ema is usable.
    snapshots = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))
    G_ema = legacy.load_network(snapshots[-1])
    assert torch.isfinite(G_ema.mapping.w_avg).all()
