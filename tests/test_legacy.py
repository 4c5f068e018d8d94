"""legacy: loading network pickles without executing their code, and safetensors export."""

import copy
import io
import os
import pickle

import numpy as np
import pytest
import torch

import dnnlib
import legacy
from torch_utils import persistence
from training.augment import AugmentPipe
from training.networks_creps import Generator
from training.networks_stylegan2 import Discriminator

from clitest import assert_clean_error, invoke, invoke_ok

#----------------------------------------------------------------------------
# Snapshots as the training loop writes them, and ways to tamper with them.

def make_snapshot(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, img_channels=3, channel_base=256, channel_max=16, biline_channels=8)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    D = Discriminator(c_dim=3, img_resolution=16, img_channels=3, channel_base=256, channel_max=16)
    A = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    A.p.copy_(torch.as_tensor(0.5))
    snapshot = dict(training_set_kwargs=dict(path='data.zip', use_labels=True, resolution=16))
    for name, module in [('G', G), ('D', D), ('G_ema', copy.deepcopy(G)), ('augment_pipe', A)]:
        snapshot[name] = copy.deepcopy(module).cpu().eval().requires_grad_(False) # As training_loop does.
    return snapshot

class _Persistent:
    """A persistent object's meta, pickled back as NVIDIA's format does."""
    def __init__(self, meta):
        self.meta = meta
    def __reduce__(self):
        return (persistence._reconstruct_persistent_obj, (self.meta,))

class _MetaUnpickler(pickle.Unpickler):
    """Unpickles without executing embedded source, keeping each persistent object's meta editable."""
    def __init__(self, file):
        super().__init__(file)
        self.objects = []
    def find_class(self, module, name):
        if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
            return lambda meta: self.objects.append(_Persistent(meta)) or self.objects[-1]
        return super().find_class(module, name)

def tamper(data, edit):
    """Re-pickle the pickle bytes `data` after `edit(meta)` on each persistent object's meta."""
    unpickler = _MetaUnpickler(io.BytesIO(data))
    tree = unpickler.load()
    for obj in unpickler.objects:
        edit(obj.meta)
    return pickle.dumps(tree)

def load(data, **kwargs):
    return legacy.load_network_pkl(io.BytesIO(data), source='net.pkl', **kwargs)

def assert_same_networks(loaded, original):
    for key in ['G', 'D', 'G_ema', 'augment_pipe']:
        a, b = loaded[key].state_dict(), original[key].state_dict()
        assert list(a) == list(b) and all(torch.equal(a[name], b[name]) and a[name].dtype == b[name].dtype for name in a), key
        assert [m.training for m in loaded[key].modules()] == [m.training for m in original[key].modules()]
        assert [p.requires_grad for p in loaded[key].parameters()] == [p.requires_grad for p in original[key].parameters()]
        assert loaded[key].init_args == original[key].init_args and loaded[key].init_kwargs == original[key].init_kwargs
    z, c = torch.randn(3, 16), torch.eye(3)
    assert torch.equal(loaded['G_ema'](z, c, truncation_psi=0.7), original['G_ema'](z, c, truncation_psi=0.7))
    img = original['G'](z, c)
    assert torch.equal(loaded['D'](img, c), original['D'](img, c))
    torch.manual_seed(5)
    expected = original['augment_pipe'](img)
    torch.manual_seed(5)
    assert torch.equal(loaded['augment_pipe'](img), expected)

def assert_one_line(err, *phrases):
    message = str(err.value)
    assert '\n' not in message and message.startswith('net.pkl'), message
    for phrase in phrases:
        assert phrase in message, message

@pytest.fixture(scope='module')
def snapshot():
    return make_snapshot()

@pytest.fixture(scope='module')
def snapshot_bytes(snapshot):
    return pickle.dumps(snapshot)

#----------------------------------------------------------------------------

def test_snapshot_loads_as_native_classes(snapshot, snapshot_bytes):
    loaded = load(snapshot_bytes)
    assert type(loaded['G']) is Generator and type(loaded['D']) is Discriminator and type(loaded['augment_pipe']) is AugmentPipe
    assert loaded['training_set_kwargs'] == snapshot['training_set_kwargs']
    assert_same_networks(loaded, snapshot)

def test_shell_command_payload_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))
    data = pickle.dumps({'G_ema': Evil()})
    with pytest.raises(legacy.UntrustedPickleError) as err:
        load(data)
    assert_one_line(err, f'{os.system.__module__}.system', '--trust-pickle', 'trust=True')
    assert not marker.exists()

def test_embedded_source_is_not_executed_unless_trusted(snapshot, snapshot_bytes, tmp_path):
    marker = tmp_path / 'source-ran'
    def edit(meta):
        meta['module_src'] += f'\nimport pathlib as _pathlib\n_pathlib.Path({str(marker)!r}).touch()\n'
    data = tamper(snapshot_bytes, edit)
    loaded = load(data)
    assert not marker.exists()
    assert_same_networks(loaded, snapshot)

    trusted = load(data, trust=True)
    assert marker.exists()
    assert type(trusted['G']).__module__.startswith('_imported_module_')
    assert_same_networks(trusted, snapshot)

def test_unknown_class_and_module_are_refused(snapshot_bytes):
    def rename(meta):
        if meta['class_name'] == 'AugmentPipe':
            meta['class_name'] = 'EvilPipe'
    with pytest.raises(legacy.UntrustedPickleError) as err:
        load(tamper(snapshot_bytes, rename))
    assert_one_line(err, "'EvilPipe'", '--trust-pickle')

    def relocate(meta):
        meta['module_name'] = 'evil.module'
    with pytest.raises(legacy.UntrustedPickleError) as err:
        load(tamper(snapshot_bytes, relocate))
    assert_one_line(err, 'evil.module', '--trust-pickle')

    # A class referred to by name (not through persistence), and builtins that run code.
    for obj, name in [(torch.nn.Linear(2, 2), None), (eval, 'builtins.eval'), (dnnlib.util.open_url, 'dnnlib.util.open_url')]:
        with pytest.raises(legacy.UntrustedPickleError) as err:
            load(pickle.dumps({'G': obj}))
        assert '\n' not in str(err.value) and '--trust-pickle' in str(err.value)
        if name:
            assert name in str(err.value)

def test_tensorflow_era_pickle_is_out_of_scope():
    data = b'\x80\x02}q\x00X\x05\x00\x00\x00G_emaq\x01cdnnlib.tflib.network\nNetwork\nq\x02)\x81q\x03}q\x04bs.'
    for trust in [False, True]:
        with pytest.raises(legacy.NetworkPickleError) as err:
            load(data, trust=trust)
        assert_one_line(err, 'TensorFlow', 'out of scope')

def test_mismatching_tensors_name_class_and_tensor(snapshot_bytes):
    def resize(meta):
        if meta['class_name'] == 'AugmentPipe':
            meta['state']['_buffers']['p'] = torch.zeros(2)
    with pytest.raises(legacy.NetworkPickleError) as err:
        load(tamper(snapshot_bytes, resize))
    assert_one_line(err, 'training.augment.AugmentPipe', "'p'", '[2]')

    def drop(meta):
        if meta['class_name'] == 'MappingNetwork':
            meta['state']['_buffers'].pop('w_avg', None)
    with pytest.raises(legacy.NetworkPickleError) as err:
        load(tamper(snapshot_bytes, drop))
    assert_one_line(err, 'training.networks_creps.Generator', 'mapping.w_avg')

    def bad_args(meta):
        if meta['class_name'] == 'Discriminator':
            meta['state']['_init_kwargs']['no_such_argument'] = 1
    with pytest.raises(legacy.NetworkPickleError) as err:
        load(tamper(snapshot_bytes, bad_args))
    assert_one_line(err, 'training.networks_stylegan2.Discriminator', 'no_such_argument')

def test_same_class_name_in_two_modules_maps_to_the_right_one(snapshot):
    from training import networks_creps, networks_stylegan2 # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    G2 = networks_stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=128,
        channel_max=16, mapping_kwargs=dict(num_layers=2)).eval().requires_grad_(False)
    data = pickle.dumps(dict(G_ema=G2, G=snapshot['G_ema']))
    creps_src = persistence.module_source(networks_creps)
    def edit(meta): # An edited copy of each source (as a pickle from elsewhere brings) ...
        meta['module_src'] = '# edited\n' + meta['module_src']
    def swap(meta): # ... or even the other module's source: the tensors decide.
        if meta['class_name'] == 'Generator' and meta['state']['_init_kwargs'].get('channel_base') == 128:
            meta['module_src'] = creps_src
    z = torch.randn(2, 8)
    for variant in [data, tamper(data, edit), tamper(data, swap)]:
        loaded = load(variant)
        assert type(loaded['G_ema']) is networks_stylegan2.Generator and type(loaded['G']) is networks_creps.Generator
        assert torch.equal(loaded['G_ema'](z, None, noise_mode='const'), G2(z, None, noise_mode='const'))

def test_plain_data_and_containers_load():
    data = dict(G_ema=None, kwargs=dnnlib.EasyDict(a=1, b=(2, 3)), arr=np.arange(6).reshape(2, 3), scalar=np.float32(1.5),
        tensor=torch.arange(4), param=torch.nn.Parameter(torch.ones(2)), dtype=torch.float16, size=torch.Size([1, 2]),
        device=torch.device('cpu'), items={1, 2}, frozen=frozenset([3]))
    for protocol in [2, pickle.HIGHEST_PROTOCOL]:
        loaded = load(pickle.dumps(data, protocol=protocol))
        assert loaded['kwargs'] == data['kwargs'] and type(loaded['kwargs']) is dnnlib.EasyDict
        assert np.array_equal(loaded['arr'], data['arr']) and loaded['scalar'] == np.float32(1.5)
        assert torch.equal(loaded['tensor'], data['tensor']) and torch.equal(loaded['param'], data['param'])
        assert (loaded['dtype'], loaded['size'], loaded['device'], loaded['items'], loaded['frozen']) == \
            (torch.float16, torch.Size([1, 2]), torch.device('cpu'), {1, 2}, frozenset([3]))

def test_corrupt_and_truncated_pickles_are_one_line(snapshot_bytes):
    for data in [snapshot_bytes[:len(snapshot_bytes) // 2], snapshot_bytes[:20], b'', b'not a pickle at all',
            b'\x80\x04' + bytes(range(256)) * 4]:
        with pytest.raises(legacy.NetworkPickleError) as err:
            load(data)
        assert_one_line(err)
    with pytest.raises(legacy.NetworkPickleError) as err:
        load(pickle.dumps([1, 2]))
    assert_one_line(err, 'expected a dict')

def test_load_network_passes_trust(snapshot, tmp_path):
    path = tmp_path / 'net.pkl'
    marker = tmp_path / 'source-ran'
    def edit(meta):
        meta['module_src'] += f'\nimport pathlib as _pathlib\n_pathlib.Path({str(marker)!r}).touch()\n'
    path.write_bytes(tamper(pickle.dumps(snapshot), edit))
    assert type(legacy.load_network(str(path))) is Generator and not marker.exists()
    assert type(legacy.load_network(str(path), key='D', trust=True)).__name__ == 'Discriminator' and marker.exists()

#----------------------------------------------------------------------------
# safetensors.

def test_safetensors_round_trip(snapshot, snapshot_bytes, tmp_path, monkeypatch):
    pkl = tmp_path / 'net.pkl'
    pkl.write_bytes(snapshot_bytes)
    dest = tmp_path / 'net.safetensors'
    legacy.export_safetensors(str(pkl), dest)
    # Loading needs no pickle at all.
    monkeypatch.setattr(pickle, 'load', None)
    monkeypatch.setattr(legacy, '_RestrictedUnpickler', None)
    with open(dest, 'rb') as f:
        loaded = legacy.load_network_pkl(f, source='net.pkl')
    assert type(loaded['G_ema']) is Generator
    assert loaded['training_set_kwargs'] == snapshot['training_set_kwargs']
    assert_same_networks(loaded, snapshot)
    assert type(legacy.load_network(str(dest), key='augment_pipe')) is AugmentPipe

def test_safetensors_keeps_training_mode_and_none(tmp_path):
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1, channel_base=64, channel_max=8, biline_channels=4).train()
    G.mapping.requires_grad_(False)
    dest = legacy.export_safetensors(dict(G=G, D=None), tmp_path / 'g.safetensors')
    loaded = legacy.load_network(str(dest), key='G')
    assert [m.training for m in loaded.modules()] == [m.training for m in G.modules()]
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in G.parameters()]
    assert legacy.load_network_pkl(open(dest, 'rb'))['D'] is None

def test_corrupt_safetensors_are_one_line(snapshot, tmp_path):
    dest = legacy.export_safetensors(snapshot, tmp_path / 'net.safetensors')
    data = dest.read_bytes()
    header_len = int.from_bytes(data[:8], 'little')
    for bad in [data[:len(data) // 2], data[:header_len], data[:8 + header_len // 2],
            data[:20] + b'\xff' * 50 + data[70:], data[:8 + header_len] + data[8 + header_len:-10]]:
        with pytest.raises(legacy.NetworkPickleError) as err:
            load(bad)
        assert_one_line(err)

def test_damaged_tensor_bytes_are_refused(snapshot, tmp_path):
    """A byte changed inside a tensor's data leaves a loadable pickle; the checksums this project writes
    beside the networks catch it (NVIDIA's loaders ignore the extra entry)."""
    data = dict(snapshot, **{legacy.CHECKSUMS_KEY: legacy.tensor_checksums(snapshot)})
    payload = pickle.dumps(data)
    weight = snapshot['G_ema'].synthesis.b8.fc1.weight.detach().numpy().tobytes()
    at = payload.rindex(weight) + len(weight) // 2 # In G_ema (G, pickled first, holds the same values).
    damaged = payload[:at] + bytes([payload[at] ^ 0x40]) + payload[at + 1:]
    with pytest.raises(legacy.NetworkPickleError, match="the tensors of 'G_ema' do not match the checksum written with them"):
        load(damaged)
    assert type(load(payload)['G_ema']) is Generator
    assert type(load(pickle.dumps(snapshot))['G_ema']) is Generator # No checksums (as NVIDIA's): nothing to check.
    dest = legacy.export_safetensors(snapshot, tmp_path / 'net.safetensors')
    exported = dest.read_bytes()
    at = exported.index(weight) + 3
    with pytest.raises(legacy.NetworkPickleError, match='damaged'):
        load(exported[:at] + bytes([exported[at] ^ 0x01]) + exported[at + 1:])

def test_export_command(snapshot_bytes, tmp_path):
    pkl = tmp_path / 'net.pkl'
    pkl.write_bytes(snapshot_bytes)
    invoke_ok(legacy.cli, ['export', f'--network={pkl}', f'--dest={tmp_path / "out.safetensors"}'])
    assert type(legacy.load_network(str(tmp_path / 'out.safetensors'))) is Generator

    # Only the generator, with class names: what a model made for generating ships.
    small = tmp_path / 'g_ema.safetensors'
    invoke_ok(legacy.cli, ['export', f'--network={pkl}', f'--dest={small}', '--keys=G_ema', '--class-names=cat, dog,emu'])
    data = legacy.load_network_pkl(open(small, 'rb'))
    assert sorted(data) == ['G_ema', 'class_names', 'tensor_checksums', 'training_set_kwargs'] and small.stat().st_size < 0.5 * (tmp_path / 'out.safetensors').stat().st_size
    G, class_names = legacy.load_generator(str(small))
    assert type(G) is Generator and class_names == ['cat', 'dog', 'emu'] == legacy.read_class_names(small)
    assert legacy.load_generator(str(tmp_path / 'out.safetensors'))[1] is None and legacy.read_class_names(tmp_path / 'out.safetensors') is None
    assert legacy.read_class_names(pkl) is None and legacy.read_class_names(tmp_path / 'missing') is None
    for args, phrase in [(['--keys=G_ema,H'], "no 'H' network"), (['--class-names=a,b'], '2 names, but the generator has 3 classes')]:
        assert_clean_error(invoke(legacy.cli, ['export', f'--network={pkl}', f'--dest={tmp_path / "x.safetensors"}', *args]), phrase)
    assert not (tmp_path / 'x.safetensors').exists()

#----------------------------------------------------------------------------
