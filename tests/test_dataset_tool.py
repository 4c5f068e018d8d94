"""dataset_tool.py: every source kind, image mode, option and bad-input case, on inputs built here."""

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import PIL.Image
import pytest

import dataset_tool
from training.dataset import ImageFolderDataset

from clitest import assert_clean_error, invoke, invoke_ok

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

def save(path, img, **kwargs):
    """Save a PIL image or a uint8/uint16 array under `path`, creating folders."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(img, np.ndarray):
        img = PIL.Image.fromarray(img)
    img.save(path, **kwargs)
    return path

def solid(size, color):
    """A size x size RGB array of one color."""
    return np.full([size, size, 3], color, dtype=np.uint8)

def noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)

def run(args):
    return invoke(dataset_tool.convert_dataset, args)

def run_ok(args):
    return invoke_ok(dataset_tool.convert_dataset, args)

def read_zip(path):
    """The images (name -> uint8 array as stored) and the dataset.json of a ZIP dataset."""
    with zipfile.ZipFile(path) as z:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
        images = {name: np.asarray(PIL.Image.open(io.BytesIO(z.read(name)))) for name in z.namelist() if name.endswith('.png')}
        return images, json.loads(z.read('dataset.json'))

def read_folder(path):
    images = {}
    for root, _dirs, files in os.walk(path):
        for f in files:
            if f.endswith('.png'):
                images[os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')] = np.asarray(PIL.Image.open(os.path.join(root, f)))
    with open(os.path.join(path, 'dataset.json')) as f:
        return images, json.load(f)

def names(n):
    return [f'{i // 1000:05d}/img{i:08d}.png' for i in range(n)]

#----------------------------------------------------------------------------

def test_folder_of_mixed_images_to_zip(tmp_path):
    src = tmp_path / 'src'
    save(src / 'a_rgb.png', solid(32, (200, 10, 30)))
    save(src / 'b_gray.png', np.full([32, 32], 77, dtype=np.uint8))
    rgba = np.zeros([32, 32, 4], dtype=np.uint8)
    rgba[:16] = (0, 0, 255, 255) # Opaque blue top, fully transparent (black) bottom.
    save(src / 'c_rgba.png', rgba)
    palette = PIL.Image.new('P', (32, 32), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    save(src / 'd_palette.png', palette)
    save(src / 'e_16bit.png', np.full([32, 32], 65535, dtype=np.uint16))
    save(src / 'f_big.png', solid(64, (10, 100, 250))) # Resized by --resolution.
    (src / 'g_corrupt.png').write_bytes(b'this is not a PNG')
    good = io.BytesIO()
    PIL.Image.fromarray(noise([32, 32, 3])).save(good, format='PNG')
    (src / 'h_truncated.png').write_bytes(good.getvalue()[:200])
    save(src / 'sub' / 'i_photo.jpg', solid(32, (128, 128, 128)), quality=95)
    (src / 'notes.txt').write_text('not an image')
    save(src / '.hidden.png', solid(32, 0)) # Hidden files are not images of the dataset.

    result = run_ok(['--source', src, '--dest', tmp_path / 'out.zip', '--resolution=32x32'])
    assert 'Wrote 7 images (32x32 RGB, without labels)' in result.stdout and 'skipped 2' in result.stdout
    skip_lines = [line for line in result.stderr.splitlines() if 'Skipping' in line]
    assert len(skip_lines) == 2
    assert str(src / 'g_corrupt.png') in skip_lines[0] and str(src / 'h_truncated.png') in skip_lines[1]

    images, meta = read_zip(tmp_path / 'out.zip')
    assert meta == {'labels': None}
    assert sorted(images) == names(7)
    assert all(img.shape == (32, 32, 3) and img.dtype == np.uint8 for img in images.values())
    rgb, gray, rgba, pal, bit16, big, photo = (images[n] for n in names(7))
    assert np.all(rgb == (200, 10, 30))
    assert np.all(gray == 77) # Gray repeated over the three channels.
    assert np.all(rgba[:16] == (0, 0, 255)) and np.all(rgba[16:] == 255) # Alpha composited on white.
    assert np.all(pal == (0, 255, 0))
    assert np.all(bit16 == 255) # 16 bits rescaled, not clipped.
    assert np.all(np.abs(big.astype(int) - (10, 100, 250)) <= 1) # Lanczos on a solid color.
    assert np.all(np.abs(photo.astype(int) - 128) <= 2)

    # Read back by the training loader.
    ds = ImageFolderDataset(str(tmp_path / 'out.zip'), use_labels=True)
    assert len(ds) == 7 and ds.image_shape == [3, 32, 32] and not ds.has_labels
    assert np.array_equal(ds[0][0], rgb.transpose(2, 0, 1))

def test_grayscale_sources_stay_grayscale(tmp_path):
    src = tmp_path / 'src'
    save(src / 'a.png', np.full([16, 16], 10, dtype=np.uint8))
    save(src / 'b.png', np.array([[0, 32768, 65535, 1000]] * 16, dtype=np.uint16).repeat(4, axis=1)) # 16-bit gray.
    la = np.zeros([16, 16, 2], dtype=np.uint8)
    la[:, :, 0] = 40
    la[:8, :, 1] = 255 # Opaque top half.
    save(src / 'c.png', PIL.Image.fromarray(la, 'LA'))
    save(src / 'd.png', PIL.Image.new('1', (16, 16), 1))
    run_ok(['--source', src, '--dest', tmp_path / 'out'])
    images, meta = read_folder(tmp_path / 'out')
    assert meta == {'labels': None}
    assert sorted(images) == names(4)
    assert all(img.shape == (16, 16) for img in images.values()) # Stored as 8-bit grayscale PNGs.
    a, b, c, d = (images[n] for n in names(4))
    assert np.all(a == 10)
    assert list(b[0, ::4]) == [0, 128, 255, 4] # round(v * 255 / 65535)
    assert np.all(c[:8] == 40) and np.all(c[8:] == 255)
    assert np.all(d == 255)
    ds = ImageFolderDataset(str(tmp_path / 'out'))
    assert ds.image_shape == [1, 16, 16]

def test_mixed_sizes_without_resolution_name_the_file(tmp_path):
    src = tmp_path / 'src'
    save(src / 'a.png', solid(32, 1))
    save(src / 'b.png', solid(32, 2))
    save(src / 'c.png', solid(16, 3))
    assert_clean_error(run(['--source', src, '--dest', tmp_path / 'out.zip']), str(src / 'c.png'), '16x16', '--resolution')
    assert not os.path.exists(tmp_path / 'out.zip')
    # Non-square and non-power-of-two first images are errors too, naming the file.
    save(tmp_path / 'wide' / 'a.png', np.zeros([16, 32, 3], dtype=np.uint8))
    assert_clean_error(run(['--source', tmp_path / 'wide', '--dest', tmp_path / 'out.zip']), str(tmp_path / 'wide' / 'a.png'), '32x16', 'square')
    save(tmp_path / 'odd' / 'a.png', solid(24, 0))
    assert_clean_error(run(['--source', tmp_path / 'odd', '--dest', tmp_path / 'out.zip']), 'power-of-two')
    assert sorted(os.listdir(tmp_path)) == ['odd', 'src', 'wide'] # Nothing written, no temporary files left.

def test_zip_source_with_dataset_json_labels(tmp_path):
    src = tmp_path / 'src.zip'
    with zipfile.ZipFile(src, 'w') as z:
        for i in range(4):
            buf = io.BytesIO()
            PIL.Image.fromarray(solid(8, i * 50)).save(buf, format='PNG')
            z.writestr(f'imgs/{i}.png', buf.getvalue())
        z.writestr('__MACOSX/imgs/._0.png', b'resource fork') # macOS metadata, ignored.
        z.writestr('dataset.json', json.dumps({'labels': [[f'imgs/{i}.png', [i, 0.5]] for i in range(4)]}))
    run_ok(['--source', src, '--dest', tmp_path / 'out'])
    images, meta = read_folder(tmp_path / 'out')
    assert sorted(images) == names(4)
    assert meta == {'labels': [[n, [i, 0.5]] for i, n in enumerate(names(4))]}
    assert all(np.all(images[n] == i * 50) for i, n in enumerate(names(4)))
    ds = ImageFolderDataset(str(tmp_path / 'out'), use_labels=True)
    assert ds.label_shape == [2] and not ds.has_onehot_labels and np.array_equal(ds.get_label(3), [3, 0.5])

def test_dataset_json_labels_follow_skipped_images(tmp_path):
    src = tmp_path / 'src'
    save(src / 'a.png', solid(8, 1))
    (src / 'b.png').write_bytes(b'corrupt')
    save(src / 'c.png', solid(8, 3))
    (src / 'dataset.json').write_text(json.dumps({'labels': [['a.png', 4], ['b.png', 5], ['c.png', 6]]}))
    run_ok(['--source', src, '--dest', tmp_path / 'out.zip'])
    _images, meta = read_zip(tmp_path / 'out.zip')
    assert meta == {'labels': [[names(2)[0], 4], [names(2)[1], 6]]}
    # Labels that cannot be used are an error naming dataset.json.
    (src / 'dataset.json').write_text('{"labels": [["a.png", 1], ["c.png", [0.5]]]}')
    assert_clean_error(run(['--source', src, '--dest', tmp_path / 'bad.zip']), 'dataset.json')
    (src / 'dataset.json').write_text('{"labels": ')
    assert_clean_error(run(['--source', src, '--dest', tmp_path / 'bad.zip']), 'dataset.json')

def test_labels_from_folders(tmp_path):
    src = tmp_path / 'src'
    for cls, count in [('dog', 2), ('cat', 1), ('emu', 2)]:
        for i in range(count):
            save(src / cls / f'{i}.png', solid(8, i))
    result = run_ok(['--source', src, '--dest', tmp_path / 'out.zip', '--labels-from-folders'])
    assert '0=cat, 1=dog, 2=emu' in result.stdout
    _images, meta = read_zip(tmp_path / 'out.zip')
    assert meta == {'labels': [[n, c] for n, c in zip(names(5), [0, 1, 1, 2, 2])], 'class_names': ['cat', 'dog', 'emu']}
    ds = ImageFolderDataset(str(tmp_path / 'out.zip'), use_labels=True)
    assert ds.label_dim == 3 and np.array_equal(ds[1][1], [0, 1, 0]) and ds.class_names == ['cat', 'dog', 'emu']
    run_ok(['--source', tmp_path / 'out.zip', '--dest', tmp_path / 'again.zip']) # A re-conversion keeps the names.
    assert read_zip(tmp_path / 'again.zip')[1] == meta
    run_ok(['--source', src, '--dest', tmp_path / 'two.zip', '--labels-from-folders', '--max-images=3']) # No emu is written:
    assert read_zip(tmp_path / 'two.zip')[1]['class_names'] == ['cat', 'dog'] # as many names as the labels make classes.
    assert_clean_error(run(['--source', src, '--dest', tmp_path / 'x.zip', '--labels-from-folders', '--class-names=a,b,c']),
        '--class-names', '--labels-from-folders')
    save(src / 'top.png', solid(8, 0)) # An image outside any class folder.
    assert_clean_error(run(['--source', src, '--dest', tmp_path / 'bad.zip', '--labels-from-folders']), str(src / 'top.png'))

def test_class_folders_with_names_that_are_not_utf8(tmp_path):
    src = tmp_path / 'src'
    for name in [b'caf\xe9', b'plain']: # A Latin-1 name, as old archives have.
        folder = os.path.join(os.fsencode(src), name)
        os.makedirs(folder)
        save(os.fsdecode(os.path.join(folder, b'0.png')), solid(8, 1))
    (src / 'plain' / 'bad.png').write_bytes(b'corrupt') # Skipped with a message naming it.
    result = run_ok(['--source', src, '--dest', tmp_path / 'out.zip', '--labels-from-folders'])
    assert 'caf\\xe9' in result.stderr and 'bad.png' in result.stderr
    with zipfile.ZipFile(tmp_path / 'out.zip') as z:
        raw = z.read('dataset.json')
    assert json.loads(raw.decode('utf-8'))['class_names'] == ['caf\\xe9', 'plain'] # Valid UTF-8 text, no lone surrogates.
    assert '\\ud' not in raw.decode('utf-8')

def write_cifar(path, per_batch=2):
    """A CIFAR-10 python archive: data_batch_1..5 and test_batch pickles, as the real one."""
    rng = np.random.default_rng(1)
    batches = {}
    with tarfile.open(path, 'w:gz') as tar:
        for name in [f'data_batch_{k}' for k in range(1, 6)] + ['test_batch']:
            batch = {'batch_label': name, 'data': rng.integers(0, 256, [per_batch, 3072], dtype=np.uint8),
                'labels': [int(x) for x in rng.integers(0, 10, per_batch)], 'filenames': [f'{name}_{i}.png' for i in range(per_batch)]}
            data = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            batches[name] = batch
    return batches

def test_cifar10(tmp_path):
    batches = write_cifar(tmp_path / 'cifar-10-python.tar.gz')
    run_ok(['--source', tmp_path / 'cifar-10-python.tar.gz', '--dest', tmp_path / 'out.zip'])
    images, meta = read_zip(tmp_path / 'out.zip')
    train = [batches[f'data_batch_{k}'] for k in range(1, 6)]
    expected_images = np.concatenate([b['data'] for b in train]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    expected_labels = sum((b['labels'] for b in train), [])
    assert sorted(images) == names(10) # The training batches only, as NVIDIA's tool.
    assert all(np.array_equal(images[n], expected_images[i]) for i, n in enumerate(names(10)))
    assert meta == {'labels': [[n, c] for n, c in zip(names(10), expected_labels)]}
    run_ok(['--source', tmp_path / 'cifar-10-python.tar.gz', '--dest', tmp_path / 'few.zip', '--max-images=3'])
    assert sorted(read_zip(tmp_path / 'few.zip')[0]) == names(3)

def test_cifar10_refuses_pickled_code(tmp_path):
    class Evil: # pylint: disable=too-few-public-methods
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    with tarfile.open(tmp_path / 'cifar.tar.gz', 'w:gz') as tar:
        data = pickle.dumps({'data': Evil(), 'labels': []})
        info = tarfile.TarInfo('cifar-10-batches-py/data_batch_1')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert_clean_error(run(['--source', tmp_path / 'cifar.tar.gz', '--dest', tmp_path / 'out.zip']), 'refusing')

def write_idx(path, magic, arr, compress):
    data = magic.to_bytes(4, 'big') + b''.join(d.to_bytes(4, 'big') for d in arr.shape) + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)

@pytest.mark.parametrize('compress', [True, False])
def test_mnist(tmp_path, compress):
    images = noise([3, 28, 28], seed=2)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    gz = '.gz' if compress else ''
    write_idx(tmp_path / f'train-images-idx3-ubyte{gz}', 2051, images, compress)
    write_idx(tmp_path / f'train-labels-idx1-ubyte{gz}', 2049, labels, compress)
    source = tmp_path / f'train-images-idx3-ubyte{gz}' if compress else tmp_path # The file, or its folder.
    run_ok(['--source', source, '--dest', tmp_path / 'out.zip'])
    out, meta = read_zip(tmp_path / 'out.zip')
    assert sorted(out) == names(3)
    for i, n in enumerate(names(3)):
        assert out[n].shape == (32, 32) # Grayscale, padded to 32x32 with black.
        assert np.array_equal(out[n][2:30, 2:30], images[i]) and out[n][:2].sum() == 0 and out[n][:, 30:].sum() == 0
    assert meta == {'labels': [[n, int(c)] for n, c in zip(names(3), labels)]}
    assert_clean_error(run(['--source', source, '--dest', tmp_path / 'x.zip', '--labels-from-folders']), '--labels-from-folders')
    assert_clean_error(run(['--source', tmp_path / f'train-labels-idx1-ubyte{gz}', '--dest', tmp_path / 'x.zip']), 'labels file')

def test_class_names_of_bare_class_indices(tmp_path):
    write_idx(tmp_path / 'train-images-idx3-ubyte', 2051, noise([3, 28, 28], seed=2), False)
    write_idx(tmp_path / 'train-labels-idx1-ubyte', 2049, np.array([2, 0, 1]), False)
    source = tmp_path / 'train-images-idx3-ubyte'
    result = run_ok(['--source', source, '--dest', tmp_path / 'out.zip', '--class-names=T-shirt/top, Trouser ,Ankle boot'])
    assert '0=T-shirt/top, 1=Trouser, 2=Ankle boot' in result.stdout
    assert read_zip(tmp_path / 'out.zip')[1]['class_names'] == ['T-shirt/top', 'Trouser', 'Ankle boot']
    assert ImageFolderDataset(str(tmp_path / 'out.zip'), use_labels=True).class_names == ['T-shirt/top', 'Trouser', 'Ankle boot']
    for names, phrase in [('a,b', '2 names for the 3 classes'), ('a,b,c,d', '4 names'), ('a,,c', 'non-empty')]:
        assert_clean_error(run(['--source', source, '--dest', tmp_path / 'x.zip', f'--class-names={names}']), '--class-names', phrase)
    unlabelled = tmp_path / 'unlabelled'
    save(unlabelled / 'a.png', solid(8, 1))
    assert_clean_error(run(['--source', unlabelled, '--dest', tmp_path / 'x.zip', '--class-names=a']), '--class-names', 'no class labels')
    assert not (tmp_path / 'x.zip').exists()

def test_mnist_labels_out_of_range(tmp_path):
    write_idx(tmp_path / 'train-images-idx3-ubyte', 2051, noise([2, 28, 28], seed=2), False)
    write_idx(tmp_path / 'train-labels-idx1-ubyte', 2049, np.array([3, 200]), False)
    assert_clean_error(run(['--source', tmp_path / 'train-images-idx3-ubyte', '--dest', tmp_path / 'out.zip']),
        'train-labels-idx1-ubyte', 'must lie in 0..9, found 200')
    assert not (tmp_path / 'out.zip').exists()

def test_max_images_counts_written_images(tmp_path):
    src = tmp_path / 'src'
    (src / 'a').mkdir(parents=True)
    (src / 'a' / '0.png').write_bytes(b'corrupt')
    for i in range(1, 6):
        save(src / 'a' / f'{i}.png', solid(8, i))
    run_ok(['--source', src, '--dest', tmp_path / 'out.zip', '--max-images=3'])
    images, _meta = read_zip(tmp_path / 'out.zip')
    assert sorted(images) == names(3)
    assert [int(images[n][0, 0, 0]) for n in names(3)] == [1, 2, 3]

def test_destination_is_never_overwritten_silently(tmp_path):
    src = tmp_path / 'src'
    save(src / 'a.png', solid(8, 5))
    (tmp_path / 'out.zip').write_bytes(b'precious')
    assert_clean_error(run(['--source', src, '--dest', tmp_path / 'out.zip']), 'not empty', '--overwrite')
    assert (tmp_path / 'out.zip').read_bytes() == b'precious'
    run_ok(['--source', src, '--dest', tmp_path / 'out.zip', '--overwrite'])
    assert sorted(read_zip(tmp_path / 'out.zip')[0]) == names(1)

    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('precious')
    assert_clean_error(run(['--source', src, '--dest', tmp_path / 'out']), 'not empty', '--overwrite')
    assert os.listdir(tmp_path / 'out') == ['keep.txt']
    run_ok(['--source', src, '--dest', tmp_path / 'out', '--overwrite'])
    assert sorted(os.listdir(tmp_path / 'out')) == ['00000', 'dataset.json']
    (tmp_path / 'empty').mkdir() # An empty folder is fine.
    run_ok(['--source', src, '--dest', tmp_path / 'empty'])
    assert_clean_error(run(['--source', src, '--dest', src, '--overwrite']), 'source')
    assert_clean_error(run(['--source', src, '--dest', tmp_path, '--overwrite']), 'source')
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith('.')) == [] # No temporary files left.

def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / 'src'
    for i in range(4):
        save(src / f'{i}.png', solid(8, i))
    calls = []
    real_encode = dataset_tool.encode_png
    def encode_then_interrupt(img):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(img)
    monkeypatch.setattr(dataset_tool, 'encode_png', encode_then_interrupt)
    for dest in ['out.zip', 'out']:
        calls.clear()
        result = run(['--source', src, '--dest', tmp_path / dest])
        assert result.exit_code != 0
        assert sorted(os.listdir(tmp_path)) == ['src']

def test_transforms(tmp_path):
    src = tmp_path / 'src'
    img = np.zeros([32, 64, 3], dtype=np.uint8)
    img[:, :16] = 50
    img[:, 16:48] = 150 # The centered square.
    img[:, 48:] = 250
    save(src / 'a.png', img)
    run_ok(['--source', src, '--dest', tmp_path / 'crop.zip', '--transform=center-crop', '--resolution=16x16'])
    (out,) = read_zip(tmp_path / 'crop.zip')[0].values()
    assert out.shape == (16, 16, 3) and np.all(np.abs(out.astype(int) - 150) <= 1)

    run_ok(['--source', src, '--dest', tmp_path / 'wide.zip', '--transform=center-crop-wide', '--resolution=32x16'])
    (out,) = read_zip(tmp_path / 'wide.zip')[0].values()
    assert out.shape == (32, 32, 3)
    assert np.all(out[:8] == 0) and np.all(out[24:] == 0) # Black bands on the square canvas.
    assert np.all(np.abs(out[8:24, 12:20].astype(int) - 150) <= 1) and np.all(np.abs(out[8:24, :2].astype(int) - 50) <= 2)

    save(src / 'b.png', np.zeros([8, 16, 3], dtype=np.uint8)) # Too small for the crop: skipped.
    result = run_ok(['--source', src, '--dest', tmp_path / 'wide2.zip', '--transform=center-crop-wide', '--resolution=32x16'])
    assert 'Wrote 1 images' in result.stdout and str(src / 'b.png') in result.stderr

    run_ok(['--source', src, '--dest', tmp_path / 'tall.zip', '--transform=center-crop-tall', '--resolution=4x8'])
    assert all(img.shape == (8, 8, 3) for img in read_zip(tmp_path / 'tall.zip')[0].values())

def test_bad_arguments(tmp_path):
    src = tmp_path / 'src'
    save(src / 'a.png', solid(8, 0))
    dest = tmp_path / 'out.zip'
    assert_clean_error(run(['--source', tmp_path / 'missing', '--dest', dest]), 'does not exist')
    (tmp_path / 'notes.txt').write_text('hello')
    assert_clean_error(run(['--source', tmp_path / 'notes.txt', '--dest', dest]), 'unknown source format')
    (tmp_path / 'empty').mkdir()
    assert_clean_error(run(['--source', tmp_path / 'empty', '--dest', dest]), 'no image files')
    assert_clean_error(run(['--source', src, '--dest', dest, '--transform=center-crop']), '--resolution')
    assert_clean_error(run(['--source', src, '--dest', dest, '--resolution=32x16']), 'square')
    assert_clean_error(run(['--source', src, '--dest', dest, '--resolution=48x48']), 'power of two')
    assert_clean_error(run(['--source', src, '--dest', dest, '--resolution=big']), '--resolution')
    assert_clean_error(run(['--source', src, '--dest', dest, '--max-images=0']), '--max-images')
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'a.png').write_bytes(b'corrupt')
    (tmp_path / 'bad' / 'b.jpg').write_bytes(b'')
    assert_clean_error(run(['--source', tmp_path / 'bad', '--dest', dest]), 'no image could be read')
    (tmp_path / 'bad.zip').write_bytes(b'PK\x03\x04 broken')
    assert_clean_error(run(['--source', tmp_path / 'bad.zip', '--dest', dest]))
    assert not os.path.exists(dest)

def test_command_line(tmp_path):
    # As a user runs it: a real process, a progress bar, a summary, and an error line without a traceback.
    src = tmp_path / 'src'
    for i in range(3):
        save(src / f'{i}.png', noise([16, 16, 3], seed=i))
    (src / 'broken.png').write_bytes(b'corrupt')
    proc = subprocess.run([sys.executable, 'dataset_tool.py', f'--source={src}', f'--dest={tmp_path / "out.zip"}'],
        cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'Wrote 3 images (16x16 RGB, without labels)' in proc.stdout and 'skipped 1' in proc.stdout
    assert f'Skipping {src / "broken.png"}' in proc.stderr and 'Writing' in proc.stderr and 'Traceback' not in proc.stderr
    ds = ImageFolderDataset(str(tmp_path / 'out.zip'))
    assert np.array_equal(ds[2][0], noise([16, 16, 3], seed=2).transpose(2, 0, 1))

#----------------------------------------------------------------------------
