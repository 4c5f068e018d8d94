"""Path options expand `~` and $VARIABLES in every command, as real processes: a shell leaves
`--dest=~/x.zip` unexpanded, and a folder named `~` in the working folder is a trap
(`rm -rf ~` to clean it up deletes the home folder)."""

import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from training.networks_creps import Generator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path):
    """An empty home folder, a working folder beside it, and a tiny network pickle at ~/g.pkl."""
    (tmp_path / 'home').mkdir()
    (tmp_path / 'cwd').mkdir()
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256, channel_max=16, biline_channels=8).eval()
    with open(tmp_path / 'home' / 'g.pkl', 'wb') as f:
        pickle.dump({'G_ema': G}, f)
    return tmp_path

def run(home, script, *args):
    env = dict(os.environ, HOME=str(home / 'home'), OUTROOT=str(home / 'home' / 'var'), OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=home / 'cwd', env=env,
        capture_output=True, text=True, timeout=300)
    assert not (home / 'cwd' / '~').exists() and not (home / 'cwd' / '$OUTROOT').exists()
    return result

def test_dataset_and_training_paths(home):
    src = home / 'home' / 'photos'
    src.mkdir()
    for i in range(4):
        PIL.Image.fromarray(np.full([16, 16, 3], 40 * i, dtype=np.uint8)).save(src / f'{i}.png')
    result = run(home, 'dataset_tool.py', '--source=~/photos', '--dest=~/datasets/photos.zip')
    assert result.returncode == 0, result.stderr
    assert (home / 'home' / 'datasets' / 'photos.zip').is_file()
    result = run(home, 'train.py', '--outdir=$OUTROOT/runs', '--cfg=creps', '--data=~/datasets/photos.zip', '--gpus=1', '--batch=4',
        '--gamma=1', '--metrics=none', '--dry-run')
    assert result.returncode == 0, result.stderr
    assert f'Output directory:    {home / "home" / "var" / "runs"}{os.sep}00000-creps-photos' in result.stdout
    result = run(home, 'train.py', '--outdir=~/runs', '--cfg=creps', '--data=~/datasets/photos.zip', '--gpus=1', '--batch=4',
        '--gamma=1', '--metrics=none', '--resume=~/nothing-here.pkl', '--dry-run')
    assert result.returncode != 0 and str(home / 'home' / 'nothing-here.pkl') in result.stderr

def test_generation_and_network_paths(home):
    result = run(home, 'gen_images.py', '--network=~/g.pkl', '--seeds=0', '--outdir=~/out')
    assert result.returncode == 0, result.stderr
    assert (home / 'home' / 'out' / 'seed0000.png').is_file()
    result = run(home, 'gen_video.py', '--network=~/g.pkl', '--seeds=0-1', '--w-frames=2', '--output=$OUTROOT/lerp.mp4')
    assert result.returncode == 0, result.stderr
    assert (home / 'home' / 'var' / 'lerp.mp4').is_file()
    result = run(home, 'legacy.py', 'export', '--network=~/g.pkl', '--dest=~/g.safetensors')
    assert result.returncode == 0, result.stderr
    assert (home / 'home' / 'g.safetensors').is_file()
    for script, args in [('calc_metrics.py', ['--metrics=fid1k_full', '--data=~/none.zip']), ('viewer.py', []), ('gen_images.py', ['--seeds=0', '--outdir=~/o'])]:
        result = run(home, script, '--network=~/missing.pkl', *args)
        assert result.returncode != 0 and f'{home / "home" / "missing.pkl"}: no such file' in result.stderr, (script, result.stderr)

#----------------------------------------------------------------------------
