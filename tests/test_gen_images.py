"""gen_images.py: every option and every bad-input case."""

import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

import gen_images
from torch_utils import render
from training.networks_creps import Generator

from clitest import assert_clean_error, invoke, invoke_ok
from numerics import assert_same_quantized

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

def make_generator(c_dim=0, img_channels=3, seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=img_channels,
        channel_base=512, channel_max=32, biline_channels=8)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim)) # As after training: truncation must matter.
    return G.eval()

def write_pickle(path, data):
    with open(path, 'wb') as f:
        pickle.dump(data, f)
    return str(path)

@pytest.fixture(scope='module')
def pickles(tmp_path_factory):
    root = tmp_path_factory.mktemp('pkl')
    return dict(
        uncond=write_pickle(root / 'g.pkl', {'G_ema': make_generator()}),
        cond=write_pickle(root / 'cond.pkl', {'G_ema': make_generator(c_dim=3)}),
        named=write_pickle(root / 'named.pkl', {'G_ema': make_generator(c_dim=3), 'class_names': ['cat', 'Dog', 'sea lion']}),
        misnamed=write_pickle(root / 'misnamed.pkl', {'G_ema': make_generator(c_dim=3), 'class_names': ['cat', 'dog']}),
        gray=write_pickle(root / 'gray.pkl', {'G_ema': make_generator(img_channels=1)}),
        no_g_ema=write_pickle(root / 'no_g_ema.pkl', {'G': make_generator(), 'D': None}),
        not_dict=write_pickle(root / 'list.pkl', [1, 2, 3]),
        root=root,
    )

def run(args):
    return invoke(gen_images.generate_images, args)

def run_ok(args):
    return invoke_ok(gen_images.generate_images, args)

def load(path):
    return np.asarray(PIL.Image.open(path))

def image(folder, seed):
    """The one image of `seed` in `folder`, whatever the options added to its name."""
    names = [name for name in os.listdir(folder) if name.startswith(f'seed{seed:04d}')]
    assert len(names) == 1, names
    return os.path.join(folder, names[0])

#----------------------------------------------------------------------------

@pytest.mark.numerics
def test_acceptance_scale_size_and_tiles(pickles, tmp_path):
    # The command of the acceptance criteria, as a user runs it: a real process.
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, 'gen_images.py', f'--network={pickles["uncond"]}', '--seeds=0-1', '--scale=2.5', f'--outdir={out}'],
        cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ['seed0000-scale2.5.png', 'seed0001-scale2.5.png']
    assert load(image(out, 0)).shape == (80, 80, 3)
    assert not np.array_equal(load(image(out, 0)), load(image(out, 1)))

    run_ok(['--network', pickles['uncond'], '--seeds=3', '--size=120x40', '--outdir', tmp_path / 'size'])
    assert load(image(tmp_path / 'size', 3)).shape == (40, 120, 3)

    run_ok(['--network', pickles['uncond'], '--seeds=0,1', '--scale=4', '--outdir', tmp_path / 'full'])
    run_ok(['--network', pickles['uncond'], '--seeds=0,1', '--scale=4', '--tile=16', '--outdir', tmp_path / 'tiled'])
    for name in ['seed0000-scale4.png', 'seed0001-scale4.png']:
        full, tiled = load(tmp_path / 'full' / name), load(tmp_path / 'tiled' / name)
        assert full.shape == (128, 128, 3)
        assert_same_quantized(full, tiled) # The pixel stage runs on other shapes per tile.

@pytest.mark.numerics
def test_seeds_are_reproducible_and_batch_independent(pickles, tmp_path):
    run_ok(['--network', pickles['uncond'], '--seeds=0,2,5-7', '--batch=1', '--outdir', tmp_path / 'a'])
    run_ok(['--network', pickles['uncond'], '--seeds=5-7,0,2', '--batch=3', '--outdir', tmp_path / 'b'])
    names = sorted(os.listdir(tmp_path / 'a'))
    assert names == ['seed0000.png', 'seed0002.png', 'seed0005.png', 'seed0006.png', 'seed0007.png']
    for name in names:
        a, b = load(tmp_path / 'a' / name), load(tmp_path / 'b' / name)
        assert_same_quantized(a, b) # Batched matmuls may round differently.

def test_truncation(pickles, tmp_path):
    run_ok(['--network', pickles['uncond'], '--seeds=0-1', '--trunc=0', '--outdir', tmp_path / 't0'])
    run_ok(['--network', pickles['uncond'], '--seeds=0', '--trunc=0.5', '--outdir', tmp_path / 't5'])
    run_ok(['--network', pickles['uncond'], '--seeds=0', '--outdir', tmp_path / 't1'])
    # psi = 0 puts every seed at w_avg: identical images.
    assert np.array_equal(load(image(tmp_path / 't0', 0)), load(image(tmp_path / 't0', 1)))
    assert not np.array_equal(load(image(tmp_path / 't5', 0)), load(image(tmp_path / 't1', 0)))

@pytest.mark.numerics
def test_viewport(pickles, tmp_path):
    # The middle of the frame at scale 2 (64 pixels: pixel k at k / 63) is that crop of the full render,
    # with half as many pixels as the frame has (32, not 33 from one end to the other).
    run_ok(['--network', pickles['uncond'], '--seeds=4', '--scale=2', '--outdir', tmp_path / 'full'])
    run_ok(['--network', pickles['uncond'], '--seeds=4', '--scale=2', '--viewport=0.25,0.75,0,1', '--outdir', tmp_path / 'vp'])
    full, half = load(image(tmp_path / 'full', 4)), load(image(tmp_path / 'vp', 4))
    assert half.shape == (64, 32, 3)
    assert_same_quantized(half, full[:, 16:48])
    # Beyond the training domain, with an explicit size.
    run_ok(['--network', pickles['uncond'], '--seeds=4', '--viewport=-1,2,-0.5,1.5', '--size=48x32', '--outdir', tmp_path / 'out'])
    assert load(image(tmp_path / 'out', 4)).shape == (32, 48, 3)

@pytest.mark.numerics
def test_automatic_tiling_gives_same_pixels(pickles, tmp_path, monkeypatch):
    run_ok(['--network', pickles['uncond'], '--seeds=1', '--scale=3', '--outdir', tmp_path / 'one'])
    monkeypatch.setattr(render, 'TILE_BUDGET_BYTES', 20 * 20 * 3 * 4) # Forces 16-pixel tiles.
    result = run_ok(['--network', pickles['uncond'], '--seeds=1', '--scale=3', '--outdir', tmp_path / 'auto'])
    assert 'tiles of 16x16' in result.output
    assert_same_quantized(load(image(tmp_path / 'one', 1)), load(image(tmp_path / 'auto', 1)))

def test_class_noise_mode_precision_device_and_channels(pickles, tmp_path):
    run_ok(['--network', pickles['cond'], '--seeds=0', '--class=0', '--outdir', tmp_path / 'c0'])
    run_ok(['--network', pickles['cond'], '--seeds=0', '--class=2', '--noise-mode=random', '--outdir', tmp_path / 'c2'])
    assert not np.array_equal(load(image(tmp_path / 'c0', 0)), load(image(tmp_path / 'c2', 0)))
    run_ok(['--network', pickles['uncond'], '--seeds=0', '--noise-mode=none', '--device=cpu', '--precision=fp32', '--outdir', tmp_path / 'fp32'])
    run_ok(['--network', pickles['uncond'], '--seeds=0', '--precision=bf16', '--outdir', tmp_path / 'bf16'])
    diff = np.abs(load(image(tmp_path / 'bf16', 0)).astype(int) - load(image(tmp_path / 'fp32', 0)).astype(int))
    assert diff.mean() < 8
    run_ok(['--network', pickles['gray'], '--seeds=0', '--scale=1.5', '--outdir', tmp_path / 'gray'])
    assert load(image(tmp_path / 'gray', 0)).shape == (48, 48)

def test_file_names_say_what_chose_the_image(pickles, tmp_path):
    """NVIDIA's names when only the seed chooses the image; otherwise renders with other options into one
    folder each get their own file instead of overwriting each other."""
    for options in [[], ['--scale=2'], ['--scale=2', '--trunc=0.7'], ['--size=40x20', '--viewport=0,1,0.25,0.75'], ['--translate=0.1,0']]:
        run_ok(['--network', pickles['uncond'], '--seeds=3', *options, '--outdir', tmp_path / 'u'])
    run_ok(['--network', pickles['named'], '--seeds=3', '--class=dog', '--outdir', tmp_path / 'c'])
    assert sorted(os.listdir(tmp_path / 'u')) == sorted(['seed0003.png', 'seed0003-scale2.png', 'seed0003-trunc0.7-scale2.png',
        'seed0003-40x20-view0,1,0.25,0.75.png', 'seed0003-translate0.1,0.png'])
    assert os.listdir(tmp_path / 'c') == ['seed0003-class1.png']

def test_network_from_file_url(pickles, tmp_path):
    run_ok(['--network', 'file://' + pickles['uncond'], '--seeds=0', '--outdir', tmp_path])
    assert (tmp_path / 'seed0000.png').is_file()

def test_unreachable_url(tmp_path, monkeypatch):
    # Nothing listens on the discard port of the loopback address: the download fails at once.
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    url = 'http://127.0.0.1:9/networks/g.pkl'
    assert_clean_error(run(['--network', url, '--seeds=0', '--outdir', tmp_path / 'out']), url, str(tmp_path / 'cache'))

def test_no_temporary_files_left(pickles, tmp_path):
    run_ok(['--network', pickles['uncond'], '--seeds=0-2', '--outdir', tmp_path])
    assert sorted(os.listdir(tmp_path)) == ['seed0000.png', 'seed0001.png', 'seed0002.png']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / 'seed0000.png').st_mode & 0o777 == 0o666 & ~umask # Not the temporary file's private mode.

#----------------------------------------------------------------------------

def test_bad_pickles(pickles, tmp_path):
    out = tmp_path / 'out'
    assert_clean_error(run(['--network', tmp_path / 'missing.pkl', '--seeds=0', '--outdir', out]), 'missing.pkl', 'no such file')
    corrupt = tmp_path / 'corrupt.pkl'
    corrupt.write_bytes(os.urandom(1000))
    assert_clean_error(run(['--network', corrupt, '--seeds=0', '--outdir', out]), 'corrupt.pkl')
    truncated = tmp_path / 'truncated.pkl'
    truncated.write_bytes(open(pickles['uncond'], 'rb').read()[:5000])
    assert_clean_error(run(['--network', truncated, '--seeds=0', '--outdir', out]), 'truncated.pkl')
    assert_clean_error(run(['--network', pickles['no_g_ema'], '--seeds=0', '--outdir', out]), "no 'G_ema'", 'no_g_ema.pkl')
    assert_clean_error(run(['--network', pickles['not_dict'], '--seeds=0', '--outdir', out]), 'list.pkl')
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'network-snapshot-000004.pkl').write_bytes(open(pickles['uncond'], 'rb').read())
    assert_clean_error(run(['--network', tmp_path / 'run', '--seeds=0', '--outdir', out]), 'a folder, not a network file',
        f'its newest snapshot is {tmp_path / "run" / "network-snapshot-000004.pkl"}')
    assert not out.exists()

def test_bad_class(pickles, tmp_path):
    assert_clean_error(run(['--network', pickles['uncond'], '--seeds=0', '--class=1', '--outdir', tmp_path]), '--class', 'unconditional')
    assert_clean_error(run(['--network', pickles['cond'], '--seeds=0', '--outdir', tmp_path]), '--class', 'conditional')
    assert_clean_error(run(['--network', pickles['cond'], '--seeds=0', '--class=3', '--outdir', tmp_path]), '--class', 'out of range')

def test_class_by_name(pickles, tmp_path):
    run_ok(['--network', pickles['named'], '--seeds=0', '--class=1', '--outdir', tmp_path / 'index'])
    run_ok(['--network', pickles['named'], '--seeds=0', '--class=dog', '--outdir', tmp_path / 'name'])
    run_ok(['--network', pickles['named'], '--seeds=0', '--class=Sea-Lion', '--outdir', tmp_path / 'other'])
    assert np.array_equal(load(image(tmp_path / 'index', 0)), load(image(tmp_path / 'name', 0)))
    assert not np.array_equal(load(image(tmp_path / 'name', 0)), load(image(tmp_path / 'other', 0)))
    listed = '0=cat, 1=Dog, 2=sea lion'
    assert_clean_error(run(['--network', pickles['named'], '--seeds=0', '--class=emu', '--outdir', tmp_path]), '--class', "'emu'", listed)
    assert_clean_error(run(['--network', pickles['named'], '--seeds=0', '--outdir', tmp_path]), '--class', listed)
    assert_clean_error(run(['--network', pickles['named'], '--seeds=0', '--class=3', '--outdir', tmp_path]), 'out of range', listed)
    # Names that do not fit the network's classes are not used.
    assert_clean_error(run(['--network', pickles['misnamed'], '--seeds=0', '--class=cat', '--outdir', tmp_path]), '--class', 'names no class')
    assert_clean_error(run(['--network', pickles['cond'], '--seeds=0', '--class=-1', '--outdir', tmp_path]), '--class', '0 to 2')

@pytest.mark.parametrize('option, phrase', [
    ('--seeds=a,b', '--seeds'), ('--seeds=5-2', '--seeds'), ('--seeds=', '--seeds'), ('--seeds=-3', '--seeds'),
    ('--size=12x', '--size'), ('--size=0x5', '--size'), ('--size=12x12x3', '--size'),
    ('--viewport=0,1,0', '--viewport'), ('--viewport=0,1,a,1', '--viewport'), ('--viewport=0,1,0,inf', '--viewport'),
    ('--viewport=0.5,0.5,0,1', 'is empty'), ('--viewport=0.5,0.51,0,1', 'is 0.32x32 pixels at scale 1, less than one'),
    ('--scale=0.01', 'scale 0.01 gives 0.32 pixels per side at resolution 32, less than one'),
    ('--scale=0', '--scale'), ('--scale=-1', '--scale'), ('--scale=x', '--scale'),
    ('--tile=0', '--tile'), ('--batch=0', '--batch'), ('--trunc=abc', '--trunc'),
    ('--noise-mode=loud', '--noise-mode'), ('--precision=fp8', '--precision'), ('--precision=fp16', '--precision'),
    ('--device=tpu9', '--device'),
])
def test_bad_options(pickles, tmp_path, option, phrase):
    args = ['--network', pickles['uncond'], '--outdir', tmp_path / 'out', option]
    if not option.startswith('--seeds'):
        args.append('--seeds=0')
    if option == '--precision=fp16' and torch.cuda.is_available():
        pytest.skip('fp16 is valid on this machine: it has CUDA')
    assert_clean_error(run(args), phrase)
    assert not (tmp_path / 'out').exists()

def test_outputs_larger_than_memory_are_refused_before_rendering(pickles, tmp_path):
    assert_clean_error(run(['--network', pickles['uncond'], '--seeds=0', '--scale=100000', '--outdir', tmp_path / 'o']),
        '--scale=100000', '3200000x3200000 pixels need 27.94 TiB of memory', 'available')
    assert_clean_error(run(['--network', pickles['uncond'], '--seeds=0-3', '--batch=4', '--size=200000x200000', '--outdir', tmp_path / 'o']),
        '--size=200000x200000', '4 image(s)')
    assert not (tmp_path / 'o').exists()

def test_outdir_that_is_a_file(pickles, tmp_path):
    blocker = tmp_path / 'file.txt'
    blocker.write_text('keep me')
    assert_clean_error(run(['--network', pickles['uncond'], '--seeds=0', '--outdir', blocker]), '--outdir', 'file.txt')
    assert blocker.read_text() == 'keep me'

def test_cuda_requested_without_cuda(pickles, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA, so --device=cuda is valid')
    assert_clean_error(run(['--network', pickles['uncond'], '--seeds=0', '--device=cuda', '--outdir', tmp_path]), '--device', 'CUDA is not available')

#----------------------------------------------------------------------------

class _ShellPayload:
    """Unpickling this runs a shell command: what a malicious 'network pickle' would do."""
    def __init__(self, marker):
        self.marker = marker
    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))

def test_code_in_a_pickle_runs_only_with_trust_pickle(tmp_path):
    marker = tmp_path / 'ran'
    path = write_pickle(tmp_path / 'evil.pkl', {'G_ema': _ShellPayload(marker)})
    assert_clean_error(run(['--network', path, '--seeds=0', '--outdir', tmp_path / 'out']), 'evil.pkl', '--trust-pickle')
    assert not marker.exists()
    run(['--network', path, '--seeds=0', '--outdir', tmp_path / 'out', '--trust-pickle']) # Fails later: os.system returns an int.
    assert marker.exists()

def test_translate_moves_a_creps_image_like_its_viewport(pickles, tmp_path):
    run_ok(['--network', pickles['uncond'], '--seeds=3', '--translate=0.25,-0.5', '--outdir', tmp_path / 'moved'])
    run_ok(['--network', pickles['uncond'], '--seeds=3', '--viewport=-0.25,0.75,0.5,1.5', '--outdir', tmp_path / 'viewport'])
    assert np.array_equal(load(image(tmp_path / 'moved', 3)), load(image(tmp_path / 'viewport', 3)))
    assert_clean_error(run(['--network', pickles['uncond'], '--seeds=3', '--rotate=10', '--outdir', tmp_path / 'r']), '--rotate')

def test_translate_and_rotate_stylegan3(tmp_path):
    from training.networks_stylegan3 import Generator as StyleGAN3Generator
    torch.manual_seed(0)
    G = StyleGAN3Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=512, channel_max=32, num_layers=6)
    path = write_pickle(tmp_path / 'sg3.pkl', {'G_ema': G.eval()})
    images = {}
    for name, args in [('plain', []), ('zero', ['--translate=0,0', '--rotate=0']), ('moved', ['--translate=0.25,0']), ('turned', ['--rotate=90'])]:
        run_ok(['--network', path, '--seeds=1', '--outdir', tmp_path / name, *args])
        images[name] = load(image(tmp_path / name, 1)).astype(np.float64)
    assert np.array_equal(images['plain'], images['zero'])
    # A quarter of the width to the right: the left 3/4 of the original reappears shifted by 4 pixels (roughly:
    # an untrained network is not equivariant), much closer than the unshifted image.
    shifted_error = np.abs(images['moved'][:, 4:] - images['plain'][:, :-4]).mean()
    assert shifted_error < 0.5 * np.abs(images['moved'][:, 4:] - images['plain'][:, 4:]).mean()
    assert not np.array_equal(images['turned'], images['plain'])

def test_translate_needs_a_continuous_input(tmp_path):
    from training.networks_stylegan2 import Generator as StyleGAN2Generator
    G = StyleGAN2Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    path = write_pickle(tmp_path / 'sg2.pkl', {'G_ema': G.eval()})
    assert_clean_error(run(['--network', path, '--seeds=1', '--translate=0.1,0', '--outdir', tmp_path / 'o']), '--translate')
