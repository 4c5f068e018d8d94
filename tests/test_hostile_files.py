"""Hostile files: pickles and dataset archives crafted to corrupt memory, run code
or allocate far more than they hold. Each command that opens one stops with one
line and a non-zero exit, runs nothing, and stays small. The commands run as
real processes, so that a crash shows as a crash and memory is measured."""

import errno
import gzip
import io
import os
import json
import pickle
import resource
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib

import numpy as np
import PIL.Image
import pytest

import dataset_tool
import gen_images
import legacy
from dnnlib import safe_numpy
from training.dataset import DatasetError, ImageFolderDataset
from training.networks_creps import FullyConnectedLayer, Generator

from clitest import assert_clean_error, invoke

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALAR = np.float64(0).__reduce__()[0] # numpy's multiarray.scalar, as pickles name it.

#----------------------------------------------------------------------------
# Payloads. Each pickles as numpy's (or Python's) own globals, in the order
# the attacks use them; none is ever unpickled here by pickle.load.

class PatchedDtype:
    """np.dtype('f8') whose BUILD sets the flags of an object dtype: scalar() would
    then read its 8 bytes as a pointer to a Python object."""
    def __reduce__(self):
        return (np.dtype, ('f8', False, True), (3, '|', None, None, None, -1, -1, 63))

class PointerScalar:
    def __reduce__(self):
        return (SCALAR, (PatchedDtype(), b'\x41' * 8))

class PointerArray:
    """An array whose dtype is patched the same way, with 8 bytes of 'pointer'."""
    def __reduce__(self):
        template = np.zeros(1).__reduce__()
        return (template[0], template[1], (1, (1,), PatchedDtype(), False, b'\x41' * 8))

class HugeBytearray:
    """bytearray(3e9) from a few bytes of pickle."""
    def __reduce__(self):
        return (bytearray, (3 * 10 ** 9,))

class OversizedArray:
    """An array state claiming 10^9 float64 values over 8 bytes."""
    def __reduce__(self):
        template = np.zeros(1).__reduce__()
        return (template[0], template[1], (1, (10 ** 9,), np.dtype('f8'), False, b'\0' * 8))

PAYLOADS = dict(pointer_scalar=PointerScalar(), pointer_array=PointerArray(), object_array=np.array([1, 'x'], dtype=object),
    huge_bytearray=HugeBytearray(), oversized_array=OversizedArray())

def run_command(script, *args):
    """(exit code, stderr, peak RSS in MB) of a command-line tool run in a fresh process."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=REPO, capture_output=True,
        text=True, timeout=300)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 # The largest child so far: an upper bound.
    return proc.returncode, proc.stderr, peak_mb

def assert_one_line_refusal(returncode, stderr, peak_mb, *phrases):
    assert returncode == 1, f'exit {returncode} (negative: killed by a signal)\n{stderr[-2000:]}'
    assert 'Traceback' not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith('Error')]
    assert len(errors) == 1, stderr[-2000:]
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert peak_mb < 1500, f'{peak_mb:.0f} MB'

#----------------------------------------------------------------------------

@pytest.mark.parametrize('name', list(PAYLOADS))
def test_network_pickle_payloads_are_refused(tmp_path, name):
    path = tmp_path / f'{name}.pkl'
    path.write_bytes(pickle.dumps({'G_ema': PAYLOADS[name]}, protocol=2))
    result = run_command('gen_images.py', f'--network={path}', '--seeds=0', f'--outdir={tmp_path / "out"}', '--device=cpu')
    assert_one_line_refusal(*result, f'{name}.pkl')
    assert not (tmp_path / 'out').exists()

@pytest.mark.parametrize('name', list(PAYLOADS))
def test_cifar_archive_payloads_are_refused(tmp_path, name):
    archive = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        data = pickle.dumps({'data': PAYLOADS[name], 'labels': [0]}, protocol=2)
        info = tarfile.TarInfo('cifar-10-batches-py/data_batch_1')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    result = run_command('dataset_tool.py', f'--source={archive}', f'--dest={tmp_path / "out.zip"}')
    assert_one_line_refusal(*result, str(archive))
    assert not (tmp_path / 'out.zip').exists()

def idx_header(magic, *shape):
    return magic.to_bytes(4, 'big') + b''.join(n.to_bytes(4, 'big') for n in shape)

def gzip_of_zeros(head, nbytes):
    """gzip of `head` and `nbytes` zero bytes, compressed in pieces (a bomb, without holding it)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [packer.compress(head)] + [packer.compress(chunk[:min(len(chunk), nbytes - k)]) for k in range(0, nbytes, len(chunk))]
    return b''.join(parts) + packer.flush()

@pytest.mark.parametrize('name, content, phrase', [
    # 400 MB of zeros in 0.4 MB: over 100 times its size decompressed.
    ('bomb-images-idx3-ubyte.gz', lambda: gzip_of_zeros(idx_header(2051, 510000, 28, 28), 510000 * 28 * 28), 'more than this'),
    # 4 billion images claimed by a 16-byte header.
    ('huge-images-idx3-ubyte', lambda: idx_header(2051, 4 * 10 ** 9, 28, 28), 'more than this 16-byte file can hold'),
    # Two million images of 0x0: nothing to read, 2 GB once padded to 32x32.
    ('empty-images-idx3-ubyte', lambda: idx_header(2051, 2 * 10 ** 6, 0, 0), 'images of 0x0'),
    ('short-images-idx3-ubyte.gz', lambda: gzip.compress(idx_header(2051, 3, 28, 28) + bytes(100)), 'truncated'),
])
def test_mnist_headers_are_checked_against_the_file(tmp_path, name, content, phrase):
    source = tmp_path / name
    source.write_bytes(content())
    result = run_command('dataset_tool.py', f'--source={source}', f'--dest={tmp_path / "out.zip"}', '--max-images=10')
    assert_one_line_refusal(*result, name, phrase)
    assert not (tmp_path / 'out.zip').exists()

def test_zip_bombs_are_refused_before_decompressing(tmp_path):
    # 20 MB of zeros as an image member, deflated to 20 kB.
    bomb = tmp_path / 'bomb.zip'
    with zipfile.ZipFile(bomb, 'w', compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr('00000/img00000000.png', bytes(20 << 20))
    result = run_command('dataset_tool.py', f'--source={bomb}', f'--dest={tmp_path / "out.zip"}')
    assert_one_line_refusal(*result, 'bomb.zip', '00000/img00000000.png', 'decompression bomb')
    assert not (tmp_path / 'out.zip').exists()
    with pytest.raises(DatasetError, match='decompression bomb'):
        ImageFolderDataset(str(bomb)) # Training and metrics open datasets the same way.

class OversizedLayer:
    """A real CREPS FullyConnectedLayer(4, 4) record whose init arguments are edited to ask
    for 20000 x 20000 weights (1.6 GB), while the file holds 20 values."""
    def __reduce__(self):
        rebuild, (meta,), _state = FullyConnectedLayer(4, 4).__reduce__()
        meta['state']['_init_args'] = (20000, 20000)
        return (rebuild, (meta,))

def oversized_safetensors(path):
    """legacy.export_safetensors of a FullyConnectedLayer(4, 4), its metadata edited to (20000, 20000)."""
    legacy.export_safetensors({'G_ema': FullyConnectedLayer(4, 4)}, path)
    data = path.read_bytes()
    header_len = struct.unpack('<Q', data[:8])[0]
    header = json.loads(data[8 : 8 + header_len])
    networks = json.loads(header['__metadata__']['networks'])
    networks['G_ema']['init_args'] = [20000, 20000]
    header['__metadata__']['networks'] = json.dumps(networks)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack('<Q', len(text)) + text + data[8 + header_len:])

@pytest.mark.parametrize('kind', ['pkl', 'safetensors'])
def test_init_arguments_cannot_ask_for_more_than_the_file_holds(tmp_path, kind):
    path = tmp_path / f'oversized.{kind}'
    if kind == 'pkl':
        path.write_bytes(pickle.dumps({'G_ema': OversizedLayer()}))
    else:
        oversized_safetensors(path)
    result = run_command('gen_images.py', f'--network={path}', '--seeds=0', f'--outdir={tmp_path / "out"}', '--device=cpu')
    assert_one_line_refusal(*result, f'oversized.{kind}', 'ask for 400020000 parameter and buffer values', 'holds 20')
    assert not (tmp_path / 'out').exists()

def test_fifos_in_a_dataset_folder_are_skipped(tmp_path):
    # A FIFO named like an image: opening it would wait for a writer forever.
    folder = tmp_path / 'images'
    folder.mkdir()
    for i in range(2):
        PIL.Image.new('RGB', (8, 8), (i * 100, 0, 0)).save(folder / f'img{i}.png')
    os.mkfifo(folder / 'fifo.png')
    result = subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), f'--source={folder}', f'--dest={tmp_path / "out.zip"}'],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(tmp_path / 'out.zip') as z:
        assert len([name for name in z.namelist() if name.endswith('.png')]) == 2
    assert len(ImageFolderDataset(str(folder))) == 2

def test_a_snapshot_whose_network_is_not_a_network(tmp_path):
    path = tmp_path / 'not_a_network.pkl'
    path.write_bytes(pickle.dumps({'G_ema': {'weights': 5}}))
    result = run_command('gen_images.py', f'--network={path}', '--seeds=0', f'--outdir={tmp_path / "out"}', '--device=cpu')
    assert_one_line_refusal(*result, 'not_a_network.pkl', "its 'G_ema' is a dict, not a network")

@pytest.mark.parametrize('labels, phrase', [
    ('{"labels": ' + '[' * 100000 + ']' * 100000 + '}', 'not a dataset.json'), # Nested deeper than json can parse.
    ('{"labels": [["img0.png", 1000000000000], ["img1.png", 0]]}', 'between 0 and 99999, got 1000000000000'),
], ids=['deep nesting', 'huge class index'])
def test_dataset_json_that_cannot_be_labels(tmp_path, labels, phrase):
    folder = tmp_path / 'images'
    folder.mkdir()
    for i in range(2):
        PIL.Image.new('RGB', (8, 8)).save(folder / f'img{i}.png')
    (folder / 'dataset.json').write_text(labels)
    result = run_command('dataset_tool.py', f'--source={folder}', f'--dest={tmp_path / "out.zip"}')
    assert_one_line_refusal(*result, 'dataset.json', phrase)
    assert not (tmp_path / 'out.zip').exists()
    with pytest.raises(DatasetError, match=phrase): # Training reads dataset.json the same way.
        ImageFolderDataset(str(folder), use_labels=True).get_label(0)

def test_a_full_disk_is_one_line_and_keeps_earlier_images(tmp_path, monkeypatch):
    network = tmp_path / 'g.pkl'
    network.write_bytes(pickle.dumps({'G_ema': Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
        channel_base=256, channel_max=16, biline_channels=8).eval()}))
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'seed0001.png').write_bytes(b'an earlier image')
    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(PIL.Image.Image, 'save', full_disk)
    result = invoke(gen_images.generate_images, ['--network', network, '--seeds=0-1', '--outdir', tmp_path / 'out'])
    assert_clean_error(result, 'seed0000.png: cannot write it: No space left on device')
    assert os.listdir(tmp_path / 'out') == ['seed0001.png'] and (tmp_path / 'out' / 'seed0001.png').read_bytes() == b'an earlier image'

def test_a_full_disk_under_a_zip_destination_is_one_line_and_keeps_the_old_zip(tmp_path, monkeypatch):
    folder = tmp_path / 'images'
    folder.mkdir()
    for i in range(3):
        PIL.Image.new('RGB', (8, 8), (i, 0, 0)).save(folder / f'img{i}.png')
    dest = tmp_path / 'out.zip'
    dest.write_bytes(b'the old dataset')
    writes = []
    def write_until_full(self, info, data, **kwargs):
        if len(writes) == 1:
            raise OSError(errno.ENOSPC, 'No space left on device')
        writes.append(info)
        return real_writestr(self, info, data, **kwargs)
    def directory_on_full_disk(_self): # Closing writes the ZIP's directory: that fails too.
        raise OSError(errno.ENOSPC, 'No space left on device')
    real_writestr = zipfile.ZipFile.writestr
    monkeypatch.setattr(zipfile.ZipFile, 'writestr', write_until_full)
    monkeypatch.setattr(zipfile.ZipFile, '_write_end_record', directory_on_full_disk)
    result = invoke(dataset_tool.convert_dataset, [f'--source={folder}', f'--dest={dest}', '--overwrite', '--workers=1'])
    assert_clean_error(result, 'out.zip', 'No space left on device')
    assert dest.read_bytes() == b'the old dataset' and sorted(os.listdir(tmp_path)) == ['images', 'out.zip']

def test_a_full_disk_stops_training_with_one_line(tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    for i in range(4):
        PIL.Image.new('RGB', (16, 16), (60 * i, 0, 0)).save(folder / f'img{i}.png')
    args = ['train.py', f'--outdir={tmp_path / "runs"}', f'--data={folder}', '--cfg=creps', '--gpus=1', '--batch=2', '--gamma=1',
        '--cbase=256', '--cmax=16', '--biline-channels=8', '--map-depth=2', '--mbstd-group=2', '--kimg=0.002', '--metrics=none',
        '--aug=noaug', '--workers=0', '--device=cpu', '--grid=2x1']
    # The network snapshot meets a full disk: pickle.dump into a file fails as writing would.
    script = (f'import errno, io, pickle, runpy, sys\n'
        f'def full_disk(obj, file, *args, real_dump=pickle.dump, **kwargs):\n'
        f'    if not isinstance(file, io.BytesIO):\n        raise OSError(errno.ENOSPC, "No space left on device")\n'
        f'    return real_dump(obj, file, *args, **kwargs)\n'
        f'pickle.dump = full_disk\nsys.argv = {args!r}\nrunpy.run_path("train.py", run_name="__main__")\n')
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('Error')]
    assert len(errors) == 1 and 'network-snapshot-' in errors[0] and 'No space left on device' in errors[0], result.stderr
    (run_dir,) = (tmp_path / 'runs').iterdir()
    assert not [name for name in os.listdir(run_dir) if name.endswith('.pkl') or name.startswith('.tmp')]

def test_a_network_with_nan_weights_is_an_error_not_black_images(tmp_path):
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=256, channel_max=16, biline_channels=8).eval()
    G.mapping.w_avg.fill_(float('nan')) # What --glr=1e30 left.
    path = tmp_path / 'diverged.pkl'
    path.write_bytes(pickle.dumps({'G_ema': G}))
    result = invoke(gen_images.generate_images, ['--network', path, '--seeds=0', '--outdir', tmp_path / 'out'])
    assert_clean_error(result, 'diverged.pkl', 'NaN or infinite values in mapping.w_avg')
    assert not (tmp_path / 'out').exists()

#----------------------------------------------------------------------------
# What real files hold still loads, through the same stand-ins.

@pytest.mark.parametrize('protocol', range(6))
def test_plain_numpy_data_loads_in_every_protocol(protocol):
    data = {'big_endian': np.arange(6, dtype='>i2').reshape(2, 3), 'fortran': np.asfortranarray(np.ones([2, 3], np.float32)),
        'scalar': np.float32(2.5), 'bool': np.array([True, False]), 'complex': np.complex64(1 + 2j), 'empty': np.zeros([0, 3]),
        'bytes': b'\xff\x00', 'no_bytes': b'', 'bytearray': bytearray(b'xy')}
    loaded = legacy.load_network_pkl(io.BytesIO(pickle.dumps(data, protocol=protocol)))
    for key, value in data.items():
        assert type(loaded[key]) is type(value) and np.array_equal(loaded[key], value), key
        assert getattr(loaded[key], 'dtype', None) == getattr(value, 'dtype', None), key
    assert loaded['fortran'].flags.f_contiguous and loaded['fortran'].flags.writeable

def test_stand_ins_refuse_what_no_plain_array_has():
    dtype = safe_numpy.DtypeSpec('f8')
    for state in [(3, '|', None, None, None, -1, -1, 63), (3, '<', None, ('a',), {}, 8, 8, 16), (5, '<'), 'flags']:
        with pytest.raises(safe_numpy.RefusedNumpyData, match='dtype state'):
            dtype.__setstate__(state)
    for spec in ['O', 'U3', 'V8', 'f4,i4', 'S5', 42]:
        with pytest.raises(safe_numpy.RefusedNumpyData):
            safe_numpy.DtypeSpec(spec)
    with pytest.raises(safe_numpy.RefusedNumpyData, match='from 8 bytes'):
        safe_numpy.ArraySpec().__setstate__((1, (2,), safe_numpy.DtypeSpec('f8'), False, b'\0' * 8))
    with pytest.raises(safe_numpy.RefusedNumpyData, match='raw bytes'):
        safe_numpy.ArraySpec().__setstate__((1, (2,), safe_numpy.DtypeSpec('f8'), False, [1.0, 2.0]))
    with pytest.raises(safe_numpy.RefusedNumpyData, match='bytearray of int'):
        safe_numpy.bytes_to_bytearray(10 ** 9)
    assert safe_numpy.find_plain_global('numpy', 'frombuffer') is None and safe_numpy.find_plain_global('builtins', 'eval') is None

#----------------------------------------------------------------------------
