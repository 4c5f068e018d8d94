"""Convert image folders, ZIPs, CIFAR-10 and MNIST into training datasets: a ZIP or a
folder of PNGs in NVIDIA's layout (00000/img00000000.png, 1000 per folder) with
labels in dataset.json, readable by training.dataset.ImageFolderDataset and by
NVIDIA's StyleGAN2-ADA/StyleGAN3 code."""

import collections
import concurrent.futures
import contextlib
import gzip
import io
import itertools
import json
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import zipfile
import zlib

import click
import numpy as np
import PIL.Image
import tqdm

from dnnlib import safe_numpy
from torch_utils import cli
from training import dataset

#----------------------------------------------------------------------------

_UMASK = os.umask(0o022)
os.umask(_UMASK) # Reading the umask means setting it; put it back at once.

TRANSFORMS = ['center-crop', 'center-crop-wide', 'center-crop-tall']
IMAGES_PER_FOLDER = 1000

def one_line(err):
    """An exception as one short line for a report."""
    if isinstance(err, PIL.UnidentifiedImageError):
        return 'not an image Pillow can read (unknown format or corrupt)'
    text = ' '.join(str(err).split())
    return f'{type(err).__name__}: {text}' if text else type(err).__name__

def report_skip(where, reason):
    tqdm.tqdm.write(f'Skipping {where}: {reason}', file=sys.stderr)

def archive_name(idx):
    return f'{idx // IMAGES_PER_FOLDER:05d}/img{idx:08d}.png'

def readable_name(name):
    """A file name as valid UTF-8 text: os.listdir() gives the bytes of a name that is not UTF-8 as
    lone surrogates, which no JSON reader can take; they become \\xNN escapes."""
    return name.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')

def is_power_of_two(n):
    return n >= 1 and n & (n - 1) == 0

#----------------------------------------------------------------------------
# Sources. Each gives `count` images by index: `peek(i)` -> (Pillow mode, (width, height))
# read cheaply (header only where possible), `load(i, channels)` -> uint8 [H, W, C],
# `label(i)` -> JSON label or None, `where(i)` -> a name for messages. Both raise on
# unreadable images.

class FileSource:
    """Image files in a folder tree or a ZIP, sorted by path, labels from dataset.json or folder names."""

    def __init__(self, path, labels_from_folders):
        self.path = path
        self.class_names = None
        if os.path.isdir(path):
            self.kind = 'folder'
            self.zip = None
            names = list(dataset.folder_files(path))
        else:
            self.kind = 'ZIP'
            try:
                self.zip = dataset.open_zip(path)
                names = [name for name in self.zip.namelist() if not name.endswith('/')]
            except (OSError, zipfile.BadZipFile) as err:
                raise click.ClickException(f'{path}: cannot read the ZIP: {one_line(err)}')
            except dataset.DatasetError as err:
                raise click.ClickException(str(err))
        self.names = sorted(name for name in names if dataset.is_image_file(name))
        self.count = len(self.names)
        if self.count == 0:
            self.close()
            raise click.ClickException(f'no image files found in {path} (looked for {", ".join(sorted(dataset.IMAGE_EXTENSIONS))})')
        self.labels = self._folder_labels() if labels_from_folders else self._json_labels(names)

    def describe(self):
        return f'{self.kind} {self.path}: {self.count} image files'

    def where(self, i):
        """Image `i`, named for messages."""
        return readable_name(os.path.join(self.path, self.names[i]))

    def _open(self, name, whole=False):
        """A binary file; `whole`: read into memory (ZIP members decode faster, and in parallel, from memory)."""
        if self.zip is not None:
            return io.BytesIO(self.zip.read(name)) if whole else self.zip.open(name)
        return open(os.path.join(self.path, name), 'rb')

    def _json_labels(self, names):
        if 'dataset.json' not in names:
            return {}
        where = os.path.join(self.path, 'dataset.json')
        try:
            with self._open('dataset.json') as f:
                metadata = json.load(f)
            labels = metadata['labels']
            labels = {} if labels is None else {str(name).replace('\\', '/'): label for name, label in labels}
        except (OSError, ValueError, KeyError, TypeError, RecursionError, zipfile.BadZipFile) as err: # RecursionError: nesting too deep for json.
            raise click.ClickException(f'{where}: not a dataset.json with "labels": [[filename, label], ...] or null ({one_line(err)})')
        try:
            dataset.labels_to_array(list(labels.values()), where) # Checked before any image is converted.
        except dataset.DatasetError as err:
            raise click.ClickException(str(err))
        names = metadata.get('class_names')
        if isinstance(names, list) and all(isinstance(name, str) for name in names): # Kept through a re-conversion.
            self.class_names = names
        return labels

    def _folder_labels(self):
        for name in self.names:
            if '/' not in name:
                raise click.ClickException(f'--labels-from-folders: {self.where(self.names.index(name))} is not inside a class folder')
        folders = sorted({name.split('/', 1)[0] for name in self.names})
        index = {folder: i for i, folder in enumerate(folders)}
        self.class_names = [readable_name(folder) for folder in folders]
        odd = [name for name, folder in zip(self.class_names, folders) if name != folder]
        if odd:
            click.echo(f'Warning: class folder names that are not UTF-8 are stored with \\xNN escapes: {", ".join(odd)}', err=True)
        return {name: index[name.split('/', 1)[0]] for name in self.names}

    def label(self, i):
        return self.labels.get(self.names[i])

    def peek(self, i):
        with self._open(self.names[i]) as f, PIL.Image.open(f) as img:
            size = img.size
            # EXIF orientation, read where it is in the header (JPEG, TIFF, WebP); load() applies it.
            if img.format in ('JPEG', 'MPO', 'TIFF', 'WEBP') and img.getexif().get(dataset.EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                size = size[::-1]
            return img.mode, size

    def load(self, i, channels):
        with self._open(self.names[i], whole=True) as f:
            return dataset.read_image(f, channels)

    def close(self):
        if self.zip is not None:
            self.zip.close()
            self.zip = None

class ArraySource:
    """Images held in memory (CIFAR-10, MNIST): uint8 [N, H, W] or [N, H, W, 3], int labels."""

    def __init__(self, description, images, labels, where):
        self.images = images
        self.labels = labels
        self.count = len(images)
        self.class_names = None
        self._description = description
        self._where = where
        self._mode = 'L' if images.ndim == 3 else 'RGB'

    def describe(self):
        return f'{self._description}: {self.count} images'

    def where(self, i):
        return f'{self._where}[{i}]'

    def label(self, i):
        return None if self.labels is None else int(self.labels[i])

    def peek(self, i):
        return self._mode, (self.images.shape[2], self.images.shape[1])

    def load(self, i, channels):
        return dataset.image_to_array(PIL.Image.fromarray(self.images[i]), channels)

    def close(self):
        pass

#----------------------------------------------------------------------------
# MNIST idx files and the CIFAR-10 python archive.

IDX_IMAGES_MAGIC = 2051 # uint8, 3 dimensions: count, rows, columns.
IDX_LABELS_MAGIC = 2049 # uint8, 1 dimension: count.

def read_head(path, nbytes):
    """The first bytes of a file, decompressed if it is gzip."""
    with open(path, 'rb') as f:
        head = f.read(nbytes)
    if head[:2] == b'\x1f\x8b':
        try:
            with gzip.open(path, 'rb') as f:
                return f.read(nbytes)
        except (OSError, EOFError, zlib.error):
            return b''
    return head

def read_idx(path, magic):
    """An MNIST idx file (gzip or not) as a uint8 array, checked against its header: the header's
    shape must fit what the file can hold before any of the data is read."""
    ndim = magic & 0xff
    header_len = 4 + 4 * ndim
    try:
        file_size = os.path.getsize(path)
        with open(path, 'rb') as raw:
            compressed = raw.read(2) == b'\x1f\x8b'
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw) if compressed else raw
            header = f.read(header_len)
            if len(header) < header_len or int.from_bytes(header[:4], 'big') != magic:
                raise click.ClickException(f'{path}: not an MNIST idx file (magic number {magic} expected)')
            shape = [int.from_bytes(header[4 + 4 * k : 8 + 4 * k], 'big') for k in range(ndim)]
            size = int(np.prod(shape, dtype=np.int64))
            capacity = file_size * dataset.MAX_DECOMPRESSION_RATIO if compressed else file_size - header_len
            if size > capacity:
                raise click.ClickException(f'{path}: the header claims {"x".join(map(str, shape))} bytes of data, more than '
                    f'this {file_size}-byte file can hold' + (f' (over {dataset.MAX_DECOMPRESSION_RATIO} times its size decompressed)' if compressed else ''))
            data = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise click.ClickException(f'{path}: cannot read: {one_line(err)}')
    if len(data) != size:
        raise click.ClickException(f'{path}: truncated or padded: {min(len(data), size)}{"+" if len(data) > size else ""} bytes of data '
            f'for shape {"x".join(map(str, shape))}')
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)

def open_mnist(images_path):
    """MNIST images (padded from 28x28 to 32x32 with black, as NVIDIA's tool does) and the labels beside them."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    if not (1 <= images.shape[1] <= 32 and 1 <= images.shape[2] <= 32):
        raise click.ClickException(f'{images_path}: images of {images.shape[2]}x{images.shape[1]}; MNIST images are padded to 32x32, '
            'so they must be between 1x1 and 32x32')
    folder, base = os.path.split(images_path)
    labels = None
    if 'images-idx3' in base:
        stem = base.replace('images-idx3', 'labels-idx1')
        for candidate in dict.fromkeys([stem, stem[:-3] if stem.endswith('.gz') else stem + '.gz']):
            if os.path.isfile(os.path.join(folder, candidate)):
                labels = read_idx(os.path.join(folder, candidate), IDX_LABELS_MAGIC)
                if len(labels) != len(images):
                    raise click.ClickException(f'{os.path.join(folder, candidate)}: {len(labels)} labels for {len(images)} images')
                if labels.size and labels.max() > 9:
                    raise click.ClickException(f'{os.path.join(folder, candidate)}: MNIST labels must lie in 0..9, found {labels.max()}')
                break
    if labels is None:
        click.echo(f'No labels file beside {images_path}; writing the images without labels', err=True)
    pad = (32 - images.shape[1]) // 2, (32 - images.shape[2]) // 2
    if min(pad) > 0:
        images = np.pad(images, [(0, 0), (pad[0], 32 - images.shape[1] - pad[0]), (pad[1], 32 - images.shape[2] - pad[1])])
    return ArraySource(f'MNIST {images_path}', images, labels, images_path)

class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only (through dnnlib.safe_numpy's checked
    stand-ins): a dataset archive must not run code."""

    def find_class(self, module, name):
        found = safe_numpy.find_plain_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
        return found

def open_cifar10(path):
    """The 50000 training images of the CIFAR-10 python archive (data_batch_1..5), as NVIDIA's tool uses."""
    images, labels = [], []
    try:
        with tarfile.open(path, 'r:*') as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            for k in range(1, 6):
                member = members.get(f'data_batch_{k}')
                if member is None:
                    raise click.ClickException(f'{path}: not a CIFAR-10 python archive (no cifar-10-batches-py/data_batch_{k})')
                with tar.extractfile(member) as f:
                    batch = _ArrayUnpickler(f, encoding='latin1').load()
                if not isinstance(batch, dict):
                    raise click.ClickException(f'{path}: {member.name}: not a CIFAR-10 batch (a {type(batch).__name__})')
                batch = {key: safe_numpy.resolve(value) for key, value in batch.items()}
                data = np.asarray(batch['data'], dtype=np.uint8)
                if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch['labels']) != len(data):
                    raise click.ClickException(f'{path}: {member.name}: expected "data" uint8 [N, 3072] and N "labels"')
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)) # Channel planes -> HWC.
                labels.append(np.asarray(batch['labels'], dtype=np.int64))
    except (OSError, EOFError, zlib.error, tarfile.TarError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as err:
        raise click.ClickException(f'{path}: cannot read the CIFAR-10 archive: {one_line(err)}')
    labels = np.concatenate(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise click.ClickException(f'{path}: CIFAR-10 labels must lie in 0..9')
    return ArraySource(f'CIFAR-10 {path}', np.ascontiguousarray(np.concatenate(images)), labels, path)

def open_source(path, labels_from_folders):
    """The source, by what it contains (not by its name)."""
    if not os.path.exists(path):
        raise click.BadParameter(f'{path} does not exist', param_hint='--source')
    source = None
    if os.path.isdir(path):
        for name in ['train-images-idx3-ubyte.gz', 'train-images-idx3-ubyte']:
            if os.path.isfile(os.path.join(path, name)):
                source = open_mnist(os.path.join(path, name))
                break
    elif zipfile.is_zipfile(path):
        pass # Images in a ZIP.
    else:
        try:
            head = read_head(path, 4)
        except OSError as err:
            raise click.BadParameter(f'cannot read {path}: {one_line(err)}', param_hint='--source')
        magic = int.from_bytes(head, 'big') if len(head) == 4 else None
        if magic == IDX_IMAGES_MAGIC:
            source = open_mnist(path)
        elif magic == IDX_LABELS_MAGIC:
            raise click.BadParameter(f'{path} is an MNIST labels file; give the images file (train-images-idx3-ubyte.gz)', param_hint='--source')
        elif tarfile.is_tarfile(path):
            source = open_cifar10(path)
        else:
            raise click.BadParameter(f'{path}: unknown source format; expected a folder of images, a ZIP of images, '
                'the CIFAR-10 python archive (cifar-10-python.tar.gz) or MNIST idx files', param_hint='--source')
    if source is None:
        return FileSource(path, labels_from_folders)
    if labels_from_folders:
        raise click.BadParameter(f'{path} carries its own labels; --labels-from-folders is for folders and ZIPs of images', param_hint='--labels-from-folders')
    return source

#----------------------------------------------------------------------------
# Crop and resize, on uint8 [H, W, C] arrays. None = the image is unusable (too small).

def resize(img, width, height):
    if img.shape[0] == height and img.shape[1] == width:
        return img
    out = PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).resize((width, height), PIL.Image.Resampling.LANCZOS)
    return np.asarray(out).reshape(height, width, img.shape[2])

def center_crop(img, width, height):
    """The largest centered square, resized to width x height."""
    side = min(img.shape[:2])
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    return resize(img[top : top + side, left : left + side], width, height)

def center_crop_wide(img, width, height):
    """Crop rows to the aspect ratio width:height, resize, and center on a black width x width square.
    None for images narrower than `width` or too short to crop (no upscaling)."""
    crop = int(np.round(width * img.shape[0] / img.shape[1]))
    if img.shape[1] < width or crop < height:
        return None
    top = (img.shape[0] - crop) // 2
    canvas = np.zeros([width, width, img.shape[2]], dtype=np.uint8)
    canvas[(width - height) // 2 : (width - height) // 2 + height] = resize(img[top : top + crop], width, height)
    return canvas

def center_crop_tall(img, width, height):
    """As center_crop_wide, with rows and columns swapped: on a black height x height square."""
    crop = int(np.round(height * img.shape[1] / img.shape[0]))
    if img.shape[0] < height or crop < width:
        return None
    left = (img.shape[1] - crop) // 2
    canvas = np.zeros([height, height, img.shape[2]], dtype=np.uint8)
    canvas[:, (height - width) // 2 : (height - width) // 2 + width] = resize(img[:, left : left + crop], width, height)
    return canvas

def make_transform(transform, resolution):
    """The function applied to each image, and the side of the square images it gives (None: the images' own)."""
    if resolution is None:
        if transform is not None:
            raise click.BadParameter(f'--transform={transform} needs --resolution=WxH', param_hint='--transform')
        return None, None
    width, height = resolution
    if transform is None or transform == 'center-crop':
        if width != height:
            raise click.BadParameter(f'{width}x{height} is not square; training images must be (--transform=center-crop-wide or '
                'center-crop-tall give a non-square picture on a square canvas)', param_hint='--resolution')
        side = width
    elif transform == 'center-crop-wide':
        if width < height:
            raise click.BadParameter(f'--transform=center-crop-wide needs a width >= height, not {width}x{height}', param_hint='--resolution')
        side = width
    else:
        if height < width:
            raise click.BadParameter(f'--transform=center-crop-tall needs a height >= width, not {width}x{height}', param_hint='--resolution')
        side = height
    if not is_power_of_two(side):
        raise click.BadParameter(f'the output images would be {side}x{side}; training needs a power of two', param_hint='--resolution')
    fn = {None: resize, 'center-crop': center_crop, 'center-crop-wide': center_crop_wide, 'center-crop-tall': center_crop_tall}[transform]
    return (lambda img: fn(img, width, height)), side

#----------------------------------------------------------------------------
# Destinations: everything goes to a temporary file or folder beside the destination,
# which replaces the destination only once complete.

class ZipDest:
    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
        os.fchmod(fd, 0o666 & ~_UMASK) # mkstemp creates the file private; give it the usual permissions.
        self.file = os.fdopen(fd, 'w+b')
        self.zip = zipfile.ZipFile(self.file, 'w', compression=zipfile.ZIP_STORED)

    def write(self, name, data):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)) # Fixed dates: the same input gives the same bytes.
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, data, compress_type=zipfile.ZIP_STORED)

    def commit(self):
        self.zip.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        # Closing writes the ZIP's directory, which fails again on a full disk: moot for a file being
        # discarded, and it must not hide the error being reported.
        with contextlib.suppress(OSError, ValueError):
            self.zip.close()
        with contextlib.suppress(OSError):
            self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

class FolderDest:
    def __init__(self, path):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.tmp = tempfile.mkdtemp(dir=folder, prefix=f'.{os.path.basename(os.path.abspath(path))}.', suffix='.tmp')
        os.chmod(self.tmp, 0o777 & ~_UMASK)

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)

    def commit(self):
        if os.path.isdir(self.path) and os.listdir(self.path): # --overwrite: move the old one aside, then delete it.
            old = tempfile.mkdtemp(dir=os.path.dirname(self.tmp), prefix=f'.{os.path.basename(self.tmp)}.old')
            os.replace(self.path, os.path.join(old, 'x'))
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)

    def abort(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

def check_dest(dest, source, overwrite):
    """Refuse destinations that would lose data; True for a ZIP destination."""
    if dest == '':
        raise click.BadParameter('must not be empty', param_hint='--dest')
    is_zip = dest.lower().endswith('.zip')
    if os.path.exists(dest):
        if is_zip and not os.path.isfile(dest):
            raise click.BadParameter(f'{dest} exists and is not a file; a .zip destination is a file', param_hint='--dest')
        if not is_zip and not os.path.isdir(dest):
            raise click.BadParameter(f'{dest} exists and is not a folder (name a ZIP destination *.zip)', param_hint='--dest')
        if (os.listdir(dest) if os.path.isdir(dest) else os.path.getsize(dest) > 0) and not overwrite:
            raise click.BadParameter(f'{dest} is not empty; add --overwrite to replace it', param_hint='--dest')
    real_dest, real_source = os.path.realpath(dest), os.path.realpath(source)
    if real_dest == real_source or real_source.startswith(real_dest.rstrip(os.sep) + os.sep):
        raise click.BadParameter(f'{dest} would replace the source {source}', param_hint='--dest')
    return is_zip

#----------------------------------------------------------------------------

def encode_png(img):
    """uint8 [H, W, C] -> uncompressed PNG bytes (fast to decode during training)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format='PNG', compress_level=0)
    return buf.getvalue()

def check_labels(labels):
    """Whether dataset.json gets these labels: True if every image has one (all class indices or
    all float vectors of one length), False if none has; a warning if only some have."""
    given = [label for label in labels if label is not None]
    if len(given) < len(labels):
        if given:
            click.echo(f'Warning: {len(labels) - len(given)} of {len(labels)} images have no label; writing "labels": null', err=True)
        return False
    try:
        dataset.labels_to_array(given, 'dataset.json')
    except dataset.DatasetError as err:
        raise click.ClickException(f'source {err}')
    return True

def parse_class_names(src, class_names):
    """--class-names: one name per class index of the source's labels, checked before anything is written."""
    names = [name.strip() for name in class_names.split(',')]
    labels = [src.label(i) for i in range(src.count)]
    if any(label is None for label in labels):
        raise click.BadParameter(f'{src.describe()} has no class labels to name', param_hint='--class-names')
    try:
        labels = dataset.labels_to_array(labels, 'the source')
    except dataset.DatasetError as err:
        raise click.BadParameter(str(err), param_hint='--class-names')
    if labels.dtype != np.int64:
        raise click.BadParameter('the source\'s labels are vectors, not class indices', param_hint='--class-names')
    num_classes = int(labels.max()) + 1
    if len(names) != num_classes or not all(names):
        raise click.BadParameter(f'{len(names)} names for the {num_classes} classes (0 to {num_classes - 1}) of the source; '
            'give one non-empty name per class index, separated by commas', param_hint='--class-names')
    return names

def scan(src, limit, fixed_size, skipped):
    """Check image headers before writing anything: the channel count of the dataset (1 if
    every image is grayscale, else 3) and, without --resolution, the common size. Stops
    after `limit` readable images; unreadable ones are reported and added to `skipped`."""
    modes, first = set(), None
    readable = 0
    with tqdm.tqdm(total=src.count if limit is None else min(limit, src.count), desc='Checking', unit='img', leave=False) as progress:
        for i in range(src.count):
            if limit is not None and readable >= limit:
                break
            try:
                mode, size = src.peek(i)
            except Exception as err: # pylint: disable=broad-except
                report_skip(src.where(i), one_line(err))
                skipped.add(i)
                progress.total = min(progress.total, src.count - len(skipped))
                progress.refresh()
                continue
            readable += 1
            progress.update(1)
            modes.add(mode)
            if fixed_size:
                continue
            if first is None:
                first = i, size
                if size[0] != size[1] or not is_power_of_two(size[0]):
                    raise click.ClickException(f'{src.where(i)} is {size[0]}x{size[1]}; the images must be square with a power-of-two side: '
                        'give --resolution=WxH to resize, and --transform to crop')
            elif size != first[1]:
                raise click.ClickException(f'{src.where(i)} is {size[0]}x{size[1]} but {src.where(first[0])} is {first[1][0]}x{first[1][1]}: '
                    'give --resolution=WxH to resize them all')
    if readable == 0:
        raise click.ClickException(f'no image could be read ({len(skipped)} skipped)')
    # Images past the checked ones (read when some checked ones fail to decode) are converted to this too.
    channels = 1 if all(dataset.is_grayscale_mode(m) for m in modes) else 3
    return channels, (None if first is None else first[1][0])

#----------------------------------------------------------------------------

def convert_image(src, i, fn, shape):
    """Image `i` as PNG bytes, or (None, why it is skipped). Runs in worker threads."""
    try:
        img = src.load(i, shape[2])
    except Exception as err: # pylint: disable=broad-except
        return None, one_line(err)
    if fn is None:
        if list(img.shape) != shape:
            raise click.ClickException(f'{src.where(i)} is {img.shape[1]}x{img.shape[0]} but the other images are '
                f'{shape[1]}x{shape[0]}: give --resolution=WxH to resize them all')
    else:
        img = fn(img)
        if img is None:
            return None, 'smaller than --resolution: the crop would need upscaling'
    return encode_png(img), None

def convert_in_order(src, indices, fn, shape, workers):
    """(index, png bytes or None, reason) for `indices` in order, converted by `workers` threads
    (Pillow decodes, resizes and encodes without holding the GIL) a bounded number ahead."""
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        pending = collections.deque()
        indices = iter(indices)
        for i in itertools.islice(indices, 2 * workers):
            pending.append((i, pool.submit(convert_image, src, i, fn, shape)))
        while pending:
            i, future = pending.popleft()
            yield (i,) + future.result()
            for j in itertools.islice(indices, 1):
                pending.append((j, pool.submit(convert_image, src, j, fn, shape)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

def write(src, dest, is_zip, fn, shape, limit, skipped, workers):
    """Convert and write the images and dataset.json; the destination appears only when complete."""
    try:
        out = ZipDest(dest) if is_zip else FolderDest(dest)
    except OSError as err:
        raise click.BadParameter(f'cannot write beside {dest}: {err.strerror or err}', param_hint='--dest')
    try:
        labels = []
        limit = src.count if limit is None else limit
        todo = [i for i in range(src.count) if i not in skipped]
        converted = convert_in_order(src, todo, fn, shape, workers)
        with contextlib.closing(converted), tqdm.tqdm(total=min(limit, len(todo)), desc='Writing', unit='img') as progress:
            for i, png, reason in converted:
                if png is None:
                    report_skip(src.where(i), reason)
                    skipped.add(i)
                    progress.total = min(limit, src.count - len(skipped))
                    progress.refresh()
                    continue
                name = archive_name(len(labels))
                out.write(name, png)
                labels.append([name, src.label(i)])
                progress.update(1)
                if len(labels) >= limit:
                    break
        if not labels:
            raise click.ClickException(f'no image could be written ({len(skipped)} skipped)')
        metadata = {'labels': labels if check_labels([label for _name, label in labels]) else None}
        if src.class_names is not None and metadata['labels'] is not None:
            # As many names as the written labels make classes (--max-images may leave out the last ones).
            metadata['class_names'] = src.class_names[:int(dataset.labels_to_array([label for _name, label in labels], dest).max()) + 1]
        out.write('dataset.json', json.dumps(metadata).encode('utf-8'))
        out.commit()
    except OSError as err: # Reading errors are per image and skipped; this is the destination failing (disk full, ...).
        out.abort()
        raise click.ClickException(f'cannot write {dest}: {err.strerror or err}')
    except BaseException:
        out.abort()
        raise
    kind = 'grayscale' if shape[2] == 1 else 'RGB'
    labelled = 'with labels' if metadata['labels'] is not None else 'without labels'
    click.echo(f'Wrote {len(labels)} images ({shape[1]}x{shape[0]} {kind}, {labelled}) to {dest}; skipped {len(skipped)}')

#----------------------------------------------------------------------------

@click.command()
@click.option('--source', help='Folder or ZIP of images, cifar-10-python.tar.gz, or MNIST train-images-idx3-ubyte[.gz] (or its folder)', metavar='PATH', required=True, callback=cli.expand_path)
@click.option('--dest', help='Output ZIP (*.zip) or folder', metavar='PATH', required=True, callback=cli.expand_path)
@click.option('--max-images', type=click.IntRange(min=1), help='Write at most this many images')
@click.option('--transform', type=click.Choice(TRANSFORMS), help='Crop before resizing (needs --resolution)')
@click.option('--resolution', type=cli.Size(), help='Output size WxH: images are resized (Lanczos) or cropped and resized')
@click.option('--labels-from-folders', is_flag=True, help='Class labels from the first-level folder names (sorted)')
@click.option('--class-names', metavar='A,B,...', help='Names of the class indices 0, 1, ... of the source\'s labels (as MNIST\'s and Fashion-MNIST\'s have none)')
@click.option('--overwrite', is_flag=True, help='Replace a non-empty --dest')
@click.option('--workers', type=click.IntRange(min=1), help='Threads decoding, resizing and encoding images', default=min(8, os.cpu_count() or 1), show_default=True)
def convert_dataset(source, dest, max_images, transform, resolution, labels_from_folders, class_names, overwrite, workers):
    """Convert an image dataset into a ZIP or folder of PNGs for training.

    \b
    The source format is recognized from its contents:
    --source path/                         images anywhere under path/
    --source images.zip                    images anywhere in the ZIP
    --source cifar-10-python.tar.gz        CIFAR-10 (50000 training images, labels)
    --source train-images-idx3-ubyte.gz    MNIST (labels from the *-labels-idx1-ubyte[.gz]
                                           beside it; padded to 32x32), or its folder
    --dest out.zip | out/                  uncompressed PNGs: 00000/img00000000.png, ...

    \b
    Labels go to dataset.json: {"labels": [["00000/img00000000.png", 6], ...]} or
    {"labels": null}, from the source's dataset.json (keyed by path in the source), from
    CIFAR-10/MNIST, or with --labels-from-folders from the first-level folder names
    (class indices in sorted name order; the names are stored as "class_names", as are
    those of --class-names, and those of the source's dataset.json).

    \b
    Images: all become grayscale (1 channel) if every source image is grayscale, else
    RGB. Alpha is composited on white; 16-bit images are rescaled to 8 bits; EXIF
    orientation is applied. Without --resolution every image must have the size of the
    first, square with a power-of-two side. --resolution=WxH resizes; --transform:
    center-crop: the largest centered square; center-crop-wide (center-crop-tall): crop
    to the aspect W:H, resize, and center on a black WxW (HxH) square; images smaller
    than WxH are skipped. Unreadable files are reported and skipped.

    \b
    The destination is written to a hidden temporary file or folder beside it and moved
    into place at the end: an interrupted run never leaves a half-written destination.
    """
    if class_names is not None and labels_from_folders:
        raise click.BadParameter('--labels-from-folders names the classes after the folders; leave out one of the two', param_hint='--class-names')
    is_zip = check_dest(dest, source, overwrite)
    fn, side = make_transform(transform, resolution)
    src = open_source(source, labels_from_folders)
    try:
        click.echo(f'Source: {src.describe()}')
        if class_names is not None:
            src.class_names = parse_class_names(src, class_names)
        if src.class_names is not None:
            click.echo('Classes: ' + ', '.join(f'{i}={name}' for i, name in enumerate(src.class_names)))
            if labels_from_folders and len(src.class_names) == 1:
                click.echo(f'Warning: a single class ({src.class_names[0]!r}); point --source at the folder that holds the class folders', err=True)
        skipped = set()
        channels, first_side = scan(src, max_images, fn is not None, skipped)
        side = side or first_side
        shape = [side, side, channels]
        write(src, dest, is_zip, fn, shape, max_images, skipped, workers)
    finally:
        src.close()

#----------------------------------------------------------------------------

if __name__ == '__main__':
    convert_dataset() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
