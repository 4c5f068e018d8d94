"""Pickles crossing both ways between this project and the official codebases.

Official CREPS snapshots (its SynthesisInput a plain class) load here in both modes
with the official pixels; our snapshots load, with our pixels, where only
NVIDIA-shaped dnnlib and torch_utils are importable (tests/official_env.py).
"""

import ast
import copy
import importlib
import io
import pickle

import pytest
import torch

import legacy
from official_env import OFFICIAL_NAMES, make_env, official_coords, run_in_env
from torch_utils import persistence
from torch_utils import render
from training import augment, networks_creps, networks_stylegan2, networks_stylegan3

# Max abs difference allowed between our pixels and the official code's, in [-1, 1] units: float32
# rounding of two orders of summation is 1e-6 here, whatever the CPU's kernels and threads.
TOLERANCE = 2e-5

#----------------------------------------------------------------------------

def latents(z_dim, c_dim, n=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(n) % max(c_dim, 1), max(c_dim, 1)).float()[:, :c_dim]
    return z, c

def discriminator_and_augment(c_dim, img_resolution, img_channels):
    torch.manual_seed(5)
    D = networks_stylegan2.Discriminator(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, channel_base=128, channel_max=16)
    A = augment.AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    return D.eval().requires_grad_(False), A.eval().requires_grad_(False)

def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()

#----------------------------------------------------------------------------
# Official CREPS snapshots, here.

# G_kwargs as the official train.py builds them for --cfg=creps (channel_base and channel_max are
# twice --cbase and --cmax; --map-depth sets the mapping depth; --cond sets c_dim), at small widths.
OFFICIAL_CONFIGS = {
    'uncond-16': dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=16, img_channels=3, channel_base=2 * 256, channel_max=2 * 32,
        mapping_kwargs=dict(num_layers=8)),
    'cond-32-gray': dict(z_dim=8, w_dim=16, c_dim=4, img_resolution=32, img_channels=1, channel_base=2 * 512, channel_max=2 * 16,
        mapping_kwargs=dict(num_layers=2)),
}

OFFICIAL_SNAPSHOT_SCRIPT = '''
import copy, pickle, torch
from training.networks_creps import Generator
inputs = torch.load('inputs.pt')
G_kwargs, lines, (z, c) = inputs['G_kwargs'], inputs['lines'], inputs['latents']
torch.manual_seed(0)
G = Generator(**G_kwargs).train().requires_grad_(False)
with torch.no_grad(): # Weights as after training: no parameter left at its initial constant.
    for p in G.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
G_ema = copy.deepcopy(G)
with torch.no_grad():
    for p in G_ema.parameters():
        p.mul_(0.9)
with open('ours.pkl', 'rb') as f:
    ours = pickle.load(f) # This project's D and augment_pipe, through the official loader.
snapshot = dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='data.zip',
    use_labels=G.c_dim > 0, max_size=None, xflip=False, resolution=G.img_resolution, random_seed=0))
for name, module in [('G', G), ('D', ours['D']), ('G_ema', G_ema), ('augment_pipe', ours['augment_pipe'])]:
    snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
with open('official.pkl', 'wb') as f:
    pickle.dump(snapshot, f)
G_ema = snapshot['G_ema']
out = dict(training_grid=G_ema(z, c, truncation_psi=0.7))
for key, (rows, cols, coords) in lines.items():
    G_ema.synthesis.b4.input.coords = coords # The official mechanism of gen_images.py --scale.
    out[key] = G_ema(z, c, truncation_psi=0.7)[:, :, :len(rows), :len(cols)]
torch.save(out, 'official_out.pt')
'''

def official_lines(img_resolution):
    """Lines the official code renders through its coords buffer: its --scale=2.5 (int(res * 2.5)
    samples, both sides), and a non-square size."""
    lines = dict(official_scale=render.lines_for_size(int(img_resolution * 2.5), int(img_resolution * 2.5)),
        non_square=render.lines_for_size(img_resolution + 5, img_resolution * 2 - 3))
    return {key: (rows, cols, official_coords(rows, cols)) for key, (rows, cols) in lines.items()}

@pytest.mark.parametrize('name', list(OFFICIAL_CONFIGS))
def test_official_creps_snapshot_loads_in_both_modes_with_official_pixels(name, tmp_path):
    G_kwargs = OFFICIAL_CONFIGS[name]
    root = make_env(tmp_path / 'creps', 'creps')
    D, A = discriminator_and_augment(G_kwargs['c_dim'], G_kwargs['img_resolution'], G_kwargs['img_channels'])
    with open(root / 'ours.pkl', 'wb') as f:
        pickle.dump(dict(D=D, augment_pipe=A), f)
    z, c = latents(G_kwargs['z_dim'], G_kwargs['c_dim'])
    lines = official_lines(G_kwargs['img_resolution'])
    torch.save(dict(G_kwargs=G_kwargs, lines=lines, latents=(z, c)), root / 'inputs.pt')
    run_in_env(root, OFFICIAL_SNAPSHOT_SCRIPT)
    official = torch.load(root / 'official_out.pt')
    data_bytes = (root / 'official.pkl').read_bytes()

    # Safe mode: this project's classes, rendering the official pixels at any lines.
    data = legacy.load_network_pkl(io.BytesIO(data_bytes))
    for key, cls in [('G', networks_creps.Generator), ('G_ema', networks_creps.Generator), ('D', networks_stylegan2.Discriminator),
            ('augment_pipe', augment.AugmentPipe)]:
        assert type(data[key]) is cls, key
    G = data['G_ema']
    assert max_diff(data['G'].synthesis.decoder_img.weight, G.synthesis.decoder_img.weight) > 0 # G and G_ema both kept.
    ws = G.mapping(z, c, truncation_psi=0.7)
    assert max_diff(G.synthesis(ws), official['training_grid']) <= TOLERANCE
    for key, (rows, cols, _coords) in lines.items():
        assert max_diff(render.render(G.synthesis, ws, rows, cols, tile=16), official[key]) <= TOLERANCE, key

    # Trusted mode: the embedded official classes, whose plain SynthesisInput reference is ours and honours the official call.
    trusted = legacy.load_network_pkl(io.BytesIO(data_bytes), trust=True)
    G = trusted['G_ema']
    assert type(G).__module__ != networks_creps.__name__ # The official source's module (fresh, or one importing the same text).
    assert type(G.synthesis.b4.input) is networks_creps.SynthesisInput
    assert max_diff(G(z, c, truncation_psi=0.7), official['training_grid']) <= TOLERANCE
    for key, (rows, cols, coords) in lines.items():
        G.synthesis.b4.input.coords = coords
        assert max_diff(G(z, c, truncation_psi=0.7)[:, :, :len(rows), :len(cols)], official[key]) <= TOLERANCE, key

#----------------------------------------------------------------------------
# Our snapshots, in the official codebases.

def our_generators():
    torch.manual_seed(0)
    small = dict(z_dim=8, w_dim=8, img_resolution=16, img_channels=3)
    return dict(
        creps=networks_creps.Generator(c_dim=3, channel_base=256, channel_max=32, biline_channels=8, **small),
        stylegan2=networks_stylegan2.Generator(c_dim=0, channel_base=128, channel_max=16, mapping_kwargs=dict(num_layers=2), **small),
        stylegan3=networks_stylegan3.Generator(c_dim=0, channel_base=512, channel_max=32, num_layers=6, **small),
    )

OUR_SNAPSHOTS_SCRIPT = '''
import pickle, torch
inputs = torch.load('inputs.pt')
out = dict()
for cfg, (z, c) in inputs['latents'].items():
    with open(f'{cfg}.pkl', 'rb') as f:
        data = pickle.load(f) # As NVIDIA's legacy.load_network_pkl unpickles (executing the embedded sources).
    for key in ('G', 'D', 'G_ema'): # NVIDIA's loader asserts the same.
        assert isinstance(data[key], torch.nn.Module), key
    assert isinstance(data['training_set_kwargs'], dict) and isinstance(data['augment_pipe'], torch.nn.Module)
    G = data['G_ema']
    out[cfg] = G(z, c, truncation_psi=0.7, noise_mode='const')
    out[cfg + '-D'] = data['D'](out[cfg], c)
    if cfg == 'creps': # The official CREPS gen_images.py --scale=2: replaces the coords buffer.
        coords = torch.linspace(0, 1, int(G.img_resolution * 2)).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1)
        G.synthesis.b4.input.coords = coords
        out['creps-scale2'] = G(z, c, truncation_psi=0.7, noise_mode='const')
        G.synthesis.b4.input.coords = coords[:, :G.img_resolution * 2 - 7] # Not a power of two.
        out['creps-odd'] = G(z, c, truncation_psi=0.7, noise_mode='const')
    with open(f'{cfg}-back.pkl', 'wb') as f: # Saved again by the official code (as its tools do).
        pickle.dump(data, f)
torch.save(out, 'env_out.pt')
'''

@pytest.mark.parametrize('codebase', ['stylegan3', 'creps'])
def test_our_snapshots_load_in_official_environment_with_our_pixels(codebase, tmp_path):
    root = make_env(tmp_path / codebase, codebase)
    expected, all_latents = dict(), dict()
    for cfg, G in our_generators().items():
        G = G.eval().requires_grad_(False)
        with torch.no_grad():
            G.mapping.w_avg.copy_(torch.randn(G.w_dim))
        D, A = discriminator_and_augment(G.c_dim, G.img_resolution, G.img_channels)
        snapshot = dict(training_set_kwargs=dict(path='data.zip', use_labels=G.c_dim > 0, resolution=G.img_resolution),
            G=copy.deepcopy(G), D=D, G_ema=G, augment_pipe=A)
        with open(root / f'{cfg}.pkl', 'wb') as f:
            pickle.dump(snapshot, f)
        z, c = latents(G.z_dim, G.c_dim)
        all_latents[cfg] = (z, c)
        expected[cfg] = G(z, c, truncation_psi=0.7, noise_mode='const')
        expected[cfg + '-D'] = D(expected[cfg], c)
        if cfg == 'creps':
            ws = G.mapping(z, c, truncation_psi=0.7)
            expected['creps-scale2'] = render.render(G.synthesis, ws, *render.lines_for_size(32, 32))
            rows = cols = torch.linspace(0, 1, 32)[:25]
            expected['creps-odd'] = render.render(G.synthesis, ws, rows, cols)
    torch.save(dict(latents=all_latents), root / 'inputs.pt')
    run_in_env(root, OUR_SNAPSHOTS_SCRIPT)
    out = torch.load(root / 'env_out.pt')
    assert set(out) == set(expected)
    for key, value in expected.items():
        assert max_diff(out[key], value) <= TOLERANCE, key

    # Pickled again there, they come back here as this project's classes (no code executed); the
    # CREPS one with the coords buffer the official code left, which a call without lines renders.
    for cfg, G in our_generators().items():
        data = legacy.load_network_pkl((root / f'{cfg}-back.pkl').open('rb'))
        assert type(data['G_ema']).__module__ == type(G).__module__ and type(data['G_ema']).__name__ == 'Generator'
        z, c = all_latents[cfg]
        key = 'creps-odd' if cfg == 'creps' else cfg
        assert max_diff(data['G_ema'](z, c, truncation_psi=0.7, noise_mode='const'), expected[key]) <= TOLERANCE, cfg

#----------------------------------------------------------------------------
# What the embedded sources may use.

def embedded_sources():
    """{name: source} of every network module's embedded source and of every module it carries."""
    sources = dict()
    def visit(name, src):
        sources[name] = src
        tree = ast.parse(src)
        carried = next((node.value for node in tree.body if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == '_CARRIED_SOURCES' for t in node.targets)), None)
        for key, value in (ast.literal_eval(carried) if carried is not None else {}).items():
            visit(key, value)
    for name in legacy.NATIVE_MODULES:
        visit(name, persistence.module_source(importlib.import_module(name)))
    return sources

def test_embedded_sources_use_only_what_the_official_codebases_have():
    sources = embedded_sources()
    assert {'training.generator', 'training.networks_creps'} <= set(sources) # Carried by the StyleGAN modules.
    for name, src in sources.items():
        tree = ast.parse(src)
        aliases = dict()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.split('.')[0] in persistence.PROJECT_PACKAGES:
                for alias in node.names:
                    module = f'{node.module}.{alias.name}'
                    assert module in persistence.SHARED_MODULES, f'{name} imports {module}'
                    aliases[alias.asname or alias.name] = module
            elif isinstance(node, ast.Import):
                assert not any(a.name.split('.')[0] in persistence.PROJECT_PACKAGES for a in node.names), f'{name} line {node.lineno}'
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                module = aliases[node.value.id]
                assert node.attr in OFFICIAL_NAMES.get(module, ()), f'{name} uses {module}.{node.attr}, which the official codebases lack'

#----------------------------------------------------------------------------
