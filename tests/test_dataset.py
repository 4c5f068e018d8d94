"""training.dataset: ImageFolderDataset over ZIPs and folders, labels, x-flips, subsets,
pickling and DataLoader workers, and the errors for unusable datasets."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from training.dataset import DatasetError, ImageFolderDataset

#----------------------------------------------------------------------------

def png_bytes(img):
    buf = io.BytesIO()
    PIL.Image.fromarray(img).save(buf, format='PNG')
    return buf.getvalue()

def write_dataset(path, images, labels=None, names=None, **metadata):
    """A dataset in NVIDIA's layout (00000/img00000000.png, dataset.json with `metadata` beside the
    labels): a ZIP if `path` ends in .zip, else a folder."""
    names = names or [f'{i // 1000:05d}/img{i:08d}.png' for i in range(len(images))]
    files = {name: png_bytes(img) for name, img in zip(names, images)}
    files['dataset.json'] = json.dumps(dict(labels=None if labels is None else [[n, l] for n, l in zip(names, labels)], **metadata)).encode()
    if str(path).endswith('.zip'):
        with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                z.writestr(name, data)
    else:
        for name, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
            with open(os.path.join(path, name), 'wb') as f:
                f.write(data)
    return str(path)

def make_images(n, size=8, channels=3, seed=0):
    shape = [n, size, size] + ([channels] if channels == 3 else [])
    return list(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))

def chw(img):
    return img[np.newaxis] if img.ndim == 2 else img.transpose(2, 0, 1)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['zip', 'folder'])
def test_images_and_onehot_labels(tmp_path, kind):
    images = make_images(5)
    path = write_dataset(tmp_path / ('data.zip' if kind == 'zip' else 'data'), images, labels=[0, 2, 1, 2, 0])
    ds = dnnlib.util.construct_class_by_name(class_name='training.dataset.ImageFolderDataset', path=path,
        use_labels=True, max_size=None, xflip=False, resolution=8, random_seed=0)
    assert len(ds) == 5 and ds.name == 'data'
    assert ds.image_shape == [3, 8, 8] and ds.num_channels == 3 and ds.resolution == 8
    assert ds.label_shape == [3] and ds.label_dim == 3 and ds.has_labels and ds.has_onehot_labels
    for i in range(5):
        image, label = ds[i]
        assert image.dtype == np.uint8 and np.array_equal(image, chw(images[i])) and image.flags.writeable # torch warns about read-only arrays.
        assert label.dtype == np.float32 and np.array_equal(label, np.eye(3)[[0, 2, 1, 2, 0][i]])
    assert ds.get_details(1).raw_label == 2 and ds.get_details(1).xflip is False
    unlabelled = ImageFolderDataset(path) # use_labels=False
    assert unlabelled.label_shape == [0] and unlabelled.label_dim == 0 and not unlabelled.has_labels
    assert unlabelled[0][1].shape == (0,)
    ds.close()

def test_class_names(tmp_path, monkeypatch):
    images = make_images(3)
    named = ImageFolderDataset(write_dataset(tmp_path / 'named.zip', images, labels=[0, 2, 1], class_names=['a', 'b', 'c']), use_labels=True)
    reads = []
    read_metadata = named._read_metadata # pylint: disable=protected-access
    monkeypatch.setattr(named, '_read_metadata', lambda: reads.append(1) or read_metadata())
    assert named.class_names == ['a', 'b', 'c'] and named.get_label(1).argmax() == 2
    assert len(reads) == 1 # One parse of dataset.json for the labels and the names.
    assert ImageFolderDataset(str(tmp_path / 'named.zip')).class_names is None # Without labels, nothing to name.
    assert ImageFolderDataset(write_dataset(tmp_path / 'plain.zip', images, labels=[0, 2, 1]), use_labels=True).class_names is None
    for names in [['a', 'b'], ['a', 'b', 3], 'abc']:
        ds = ImageFolderDataset(write_dataset(tmp_path / 'bad.zip', images, labels=[0, 2, 1], class_names=names), use_labels=True)
        with pytest.raises(DatasetError, match='"class_names" must be a list of 3 strings'):
            _ = ds.class_names
    for metadata in [[1, 2], {'class_names': ['a']}]: # dataset.json without "labels" at its top level.
        (tmp_path / 'odd').mkdir(exist_ok=True)
        write_dataset(tmp_path / 'odd', images[:1])
        (tmp_path / 'odd' / 'dataset.json').write_text(json.dumps(metadata))
        with pytest.raises(DatasetError, match='not a dataset.json with a "labels" entry'):
            _ = ImageFolderDataset(str(tmp_path / 'odd'), use_labels=True).label_dim

def test_float_labels_grayscale_and_nested_folders(tmp_path):
    images = make_images(3, channels=1)
    names = ['b/x.png', 'a/deep/y.png', 'c.png'] # Any layout; sorted by path.
    path = write_dataset(tmp_path / 'data', images, labels=[[0.5, 1], [2, 3], [4, 5.5]], names=names)
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.image_shape == [1, 8, 8] and ds.label_shape == [2] and not ds.has_onehot_labels
    assert np.array_equal(ds[0][0], chw(images[1])) and np.array_equal(ds[0][1], [2, 3])
    assert np.array_equal(ds[2][0], chw(images[2])) and ds[2][1].dtype == np.float32

def test_xflip_and_max_size(tmp_path):
    images = make_images(10)
    path = write_dataset(tmp_path / 'data.zip', images)
    ds = ImageFolderDataset(path, xflip=True)
    assert len(ds) == 20
    for i in [0, 7]:
        assert np.array_equal(ds[i][0], chw(images[i]))
        assert np.array_equal(ds[10 + i][0], chw(images[i])[:, :, ::-1]) # The second half: mirrored.
        assert ds[10 + i][0].flags['C_CONTIGUOUS']
        assert ds.get_details(10 + i).xflip and ds.get_details(10 + i).raw_idx == i

    subset = ImageFolderDataset(path, max_size=4, random_seed=1)
    raw = [subset.get_details(i).raw_idx for i in range(len(subset))]
    assert len(subset) == 4 and raw == sorted(raw) and len(set(raw)) == 4
    assert raw == [ImageFolderDataset(path, max_size=4, random_seed=1).get_details(i).raw_idx for i in range(4)] # Deterministic.
    assert np.array_equal(subset[0][0], chw(images[raw[0]]))
    others = {tuple(ImageFolderDataset(path, max_size=4, random_seed=s).get_details(i).raw_idx for i in range(4)) for s in range(2, 6)}
    assert len(others | {tuple(raw)}) > 1 # The seed picks the subset.
    assert len(ImageFolderDataset(path, max_size=4, xflip=True)) == 8 # max_size first, then xflip.
    assert len(ImageFolderDataset(path, max_size=50)) == 10

def test_pickle_and_dataloader_workers(tmp_path):
    images = make_images(6)
    path = write_dataset(tmp_path / 'data.zip', images, labels=[0, 1, 2, 0, 1, 2])
    ds = ImageFolderDataset(path, use_labels=True, xflip=True)
    first = ds[0] # Opens the ZIP in this process.
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 12 and np.array_equal(clone[0][0], first[0]) and np.array_equal(clone[0][1], first[1])
    assert clone.label_dim == 3
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got_images, got_labels = zip(*[(x, c) for x, c in loader])
    got_images, got_labels = torch.cat(got_images), torch.cat(got_labels)
    assert got_images.shape == (12, 3, 8, 8) and got_images.dtype == torch.uint8
    for i in range(12):
        assert np.array_equal(got_images[i].numpy(), ds[i][0]) and np.array_equal(got_labels[i].numpy(), ds[i][1])
    ds.close()
    clone.close()

def test_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match='does not exist'):
        ImageFolderDataset(str(tmp_path / 'missing.zip'))
    (tmp_path / 'file.txt').write_text('x')
    with pytest.raises(DatasetError, match='neither a folder nor a ZIP'):
        ImageFolderDataset(str(tmp_path / 'file.txt'))
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('x')
    with pytest.raises(DatasetError, match='no images found'):
        ImageFolderDataset(str(tmp_path / 'empty'))

    wide = write_dataset(tmp_path / 'wide.zip', [np.zeros([8, 16, 3], dtype=np.uint8)])
    with pytest.raises(DatasetError, match=r'img00000000\.png: image is 16x8; .* square'):
        ImageFolderDataset(wide)
    with pytest.raises(DatasetError, match='not the requested resolution 16x16'):
        ImageFolderDataset(write_dataset(tmp_path / 'small', make_images(2)), resolution=16)

    mixed = write_dataset(tmp_path / 'mixed', make_images(2) + make_images(1, size=16) + make_images(1, channels=1))
    ds = ImageFolderDataset(mixed) # The first image sets the shape; each image is checked when loaded.
    assert len(ds) == 4 and ds[1][0].shape == (3, 8, 8)
    with pytest.raises(DatasetError, match=r'img00000002\.png: image is 3x16x16 but the dataset\'s images are 3x8x8'):
        ds[2] # pylint: disable=pointless-statement
    with pytest.raises(DatasetError, match=r'img00000003\.png: image is 1x8x8'):
        ds[3] # pylint: disable=pointless-statement

    corrupt = write_dataset(tmp_path / 'corrupt', make_images(2))
    with open(os.path.join(corrupt, '00000', 'img00000001.png'), 'wb') as f:
        f.write(b'not a png')
    with pytest.raises(DatasetError, match=r'img00000001\.png: cannot read the image'):
        ImageFolderDataset(corrupt)[1] # pylint: disable=expression-not-assigned

    unlabelled = write_dataset(tmp_path / 'partial', make_images(2), labels=[1, 2])
    with open(os.path.join(unlabelled, 'dataset.json'), 'w') as f:
        json.dump({'labels': [['00000/img00000000.png', 1]]}, f)
    with pytest.raises(DatasetError, match=r'dataset\.json: no label for 00000/img00000001\.png'):
        ImageFolderDataset(unlabelled, use_labels=True).label_dim # pylint: disable=expression-not-assigned
    assert ImageFolderDataset(unlabelled).label_dim == 0 # Labels are read only when used.

#----------------------------------------------------------------------------
