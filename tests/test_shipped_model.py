"""The model the repository ships (models/creps-fmnist32.safetensors): the default --network of
the scripts, trained on Fashion-MNIST. Its images must look like Fashion-MNIST, which no
untrained network's do."""

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

import gen_images
import gen_video
import legacy
from torch_utils import render
from training.networks_creps import Generator

from clitest import assert_clean_error, invoke, invoke_ok

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def shipped():
    G, class_names = legacy.load_generator(legacy.DEFAULT_NETWORK)
    return G.eval().requires_grad_(False), class_names

def render_class(G, class_idx, seeds, scale=1):
    """Images float [N, H, W] in [0, 255] of class `class_idx`."""
    z = torch.from_numpy(np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])).float()
    c = torch.nn.functional.one_hot(torch.full([len(seeds)], class_idx), G.c_dim).float()
    with torch.no_grad():
        ws = G.mapping(z, c)
        img = G.synthesis(ws, *render.lines_for_viewport(G.img_resolution, (0, 1, 0, 1), scale=scale))
    return (img[:, 0].clamp(-1, 1) * 127.5 + 127.5).numpy()

#----------------------------------------------------------------------------

def test_file_is_small_and_loads_without_any_pickle(shipped):
    assert os.path.getsize(legacy.DEFAULT_NETWORK) <= 10 * 2**20
    with open(legacy.DEFAULT_NETWORK, 'rb') as f:
        assert legacy._is_safetensors(f) # pylint: disable=protected-access # Tensors and JSON only: nothing to execute.
    G, class_names = shipped
    assert type(G) is Generator and (G.img_resolution, G.img_channels, G.c_dim) == (32, 1, 10)
    assert class_names == FASHION_MNIST_CLASSES == legacy.read_class_names(legacy.DEFAULT_NETWORK)
    assert os.path.isfile(os.path.join(REPO, 'models', 'creps-fmnist32.md')) # The model card.

def test_images_look_like_fashion_mnist(shipped):
    """Fashion-MNIST (28x28, padded to 32x32 with black): garments on a black background,
    each class with its own silhouette; trousers are narrower than pullovers and bags."""
    G, class_names = shipped
    seeds = range(16)
    images = {name: render_class(G, i, seeds) for i, name in enumerate(class_names)}
    for name, img in images.items():
        border = np.concatenate([img[:, :3].ravel(), img[:, -3:].ravel(), img[:, :, :3].ravel(), img[:, :, -3:].ravel()])
        assert border.mean() < 12, name # Black padding, as in every training image.
        assert img[:, 10:22, 10:22].mean() > 40, name # Something in the middle.
        assert img.std(axis=0).mean() > 5, name # Seeds give different garments.
    width = {name: (img > 64).mean(axis=(0, 1)).sum() for name, img in images.items()} # Mean lit columns.
    assert width['Trouser'] < 0.8 * min(width['Pullover'], width['Bag'], width['Coat'])
    means = np.stack([img.mean(axis=0) for img in images.values()])
    assert np.abs(means[:, None] - means[None]).mean(axis=(2, 3))[~np.eye(10, dtype=bool)].min() > 5 # The classes differ.

def test_the_stylegan2_baseline_generates_its_classes(tmp_path):
    """The baseline of the model card (docs/runs/stylegan2-fmnist32): a StyleGAN2 G_ema, tensors and
    JSON only, with the class names; gen_images renders its classes by name, at its training size."""
    path = os.path.join(REPO, 'docs', 'runs', 'stylegan2-fmnist32', 'stylegan2-fmnist32.safetensors')
    with open(path, 'rb') as f:
        assert legacy._is_safetensors(f) # pylint: disable=protected-access
    G, class_names = legacy.load_generator(path)
    assert type(G).__module__ == 'training.networks_stylegan2' and (G.img_resolution, G.img_channels) == (32, 1)
    assert class_names == FASHION_MNIST_CLASSES
    invoke_ok(gen_images.generate_images, [f'--network={path}', '--seeds=0-3', '--class=trouser', f'--outdir={tmp_path}'])
    images = np.stack([np.asarray(PIL.Image.open(tmp_path / name), dtype=np.float32) for name in sorted(os.listdir(tmp_path))])
    assert images.shape == (4, 32, 32)
    # Trousers: a lit middle, and narrow (about 7 lit columns; this network's pullovers and bags 12-14).
    assert images[:, :, :3].mean() < 12 and images[:, 4:28, 12:20].mean() > 100 and (images > 64).mean(axis=(0, 1)).sum() < 10

def test_renders_at_any_scale_agree(shipped):
    """Rendered at 4 times its resolution and area-downsampled, the model gives its 32x32 image back (close)."""
    G, _class_names = shipped
    low = render_class(G, 7, [0, 1])
    high = render_class(G, 7, [0, 1], scale=4)
    assert high.shape == (2, 128, 128)
    down = high.reshape(2, 32, 4, 32, 4).mean(axis=(2, 4))
    assert np.abs(down - low).mean() < 8

def test_readme_first_command(tmp_path):
    """The README opens with the command that installs and runs the main job: it needs no file of the user's."""
    readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    command = re.search(r'```bash\n(.*?)\n```', readme, re.S).group(1).strip()
    install, generate = command.split(' && ')
    assert install == 'python3 -m pip install -r requirements.txt' and generate.startswith('python3 gen_images.py ')
    args = shlex.split(generate)[2:]
    assert not any(arg.startswith('--network') for arg in args)
    args = [arg for arg in args if not arg.startswith('--outdir')] + [f'--outdir={tmp_path}']
    result = subprocess.run([sys.executable, 'gen_images.py', *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 8 and all(name.startswith(f'seed{i:04d}-class') for i, name in enumerate(names))
    for name in names:
        img = np.asarray(PIL.Image.open(tmp_path / name))
        assert img.shape == (256, 256) and img[:16].mean() < 12 and img[96:160, 96:160].mean() > 40

def test_class_names_in_help_and_errors(tmp_path):
    listed = ', '.join(f'{i}={name}' for i, name in enumerate(FASHION_MNIST_CLASSES))
    for command in [gen_images.generate_images, gen_video.generate_video]:
        help_text = ''.join(invoke_ok(command, ['--help']).output.split()) # Without the line breaks of click's wrapping.
        assert 'theshippedFashion-MNISTmodel,models/creps-fmnist32.safetensors' in help_text
        assert ''.join(listed.split()) in help_text
    assert_clean_error(invoke(gen_images.generate_images, ['--seeds=0', f'--outdir={tmp_path}']), '--class', listed)
    assert_clean_error(invoke(gen_images.generate_images, ['--seeds=0', '--class=boot', f'--outdir={tmp_path}']), "'boot'", listed)
    invoke_ok(gen_images.generate_images, ['--seeds=3', '--class=ankle boot', f'--outdir={tmp_path / "name"}'])
    invoke_ok(gen_images.generate_images, ['--seeds=3', '--class=9', f'--outdir={tmp_path / "index"}'])
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / 'name' / 'seed0003-class9.png')), np.asarray(PIL.Image.open(tmp_path / 'index' / 'seed0003-class9.png')))

#----------------------------------------------------------------------------
