"""Image datasets for training and metrics: a ZIP or a folder of images with
optional labels in `dataset.json`, in the layout that dataset_tool.py writes
(and NVIDIA's StyleGAN2-ADA/StyleGAN3 tools write).

Configs build them by name, as in StyleGAN3:

    dnnlib.util.construct_class_by_name(class_name='training.dataset.ImageFolderDataset',
        path='data.zip', use_labels=True, max_size=None, xflip=False, resolution=None, random_seed=0)

Items are `(image, label)`: image uint8 numpy [C, H, W] (C = 1 for grayscale, 3
for RGB), label float32 numpy [label_dim] (one-hot for class indices).

The image decoding helpers (`read_image`, `image_to_array`) are shared with
dataset_tool.py, so that the tool and the loader agree on how every image mode
becomes 8-bit grayscale or RGB.
"""

import json
import os
import zipfile

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

import dnnlib

#----------------------------------------------------------------------------

class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message is one line naming the path."""

#----------------------------------------------------------------------------
# Folders.

def folder_files(path):
    """Paths (relative to `path`, '/'-separated) of the regular files in the folder tree `path`.
    FIFOs, sockets and devices are left out: reading a FIFO named *.png would wait forever."""
    for root, _dirs, files in os.walk(path):
        for fname in files:
            if os.path.isfile(os.path.join(root, fname)): # Follows symbolic links, as open() does.
                yield os.path.relpath(os.path.join(root, fname), start=path).replace(os.sep, '/')

#----------------------------------------------------------------------------
# ZIP archives.

# Images are compressed already, so their ZIP members shrink little (dataset_tool stores them
# as they are), and gzip shrinks MNIST's idx files about 5 times: a compressed file that claims
# to expand over a hundred times is a decompression bomb.
MAX_DECOMPRESSION_RATIO = 100
ZIP_RATIO_SLACK = 1 << 20 # Small members (dataset.json, flat test images) may shrink further.

def open_zip(path):
    """zipfile.ZipFile of `path`, refusing (DatasetError, naming the member) an archive with a
    member whose declared size is over MAX_DECOMPRESSION_RATIO times what it takes in the file;
    zipfile itself reads no member beyond its declared size."""
    archive = zipfile.ZipFile(path)
    for info in archive.infolist():
        if info.file_size > MAX_DECOMPRESSION_RATIO * info.compress_size + ZIP_RATIO_SLACK:
            archive.close()
            raise DatasetError(f'{path}: member {info.filename} claims {info.file_size} bytes from {info.compress_size} '
                f'compressed (over {MAX_DECOMPRESSION_RATIO} times): refused as a decompression bomb')
    return archive

#----------------------------------------------------------------------------
# Decoding images.

# Files taken as images, by extension (lower case). Other files in the tree are ignored.
IMAGE_EXTENSIONS = frozenset(['.png', '.jpg', '.jpeg', '.jpe', '.jfif', '.bmp', '.dib', '.gif', '.webp', '.tif', '.tiff',
    '.ppm', '.pgm', '.pbm', '.pnm', '.tga', '.qoi'])

# Pillow modes holding a single (gray) channel, with or without alpha.
GRAYSCALE_MODES = frozenset(['1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F'])

EXIF_ORIENTATION = 0x0112 # EXIF tag: 1 = as stored, 2..8 = mirrored and/or rotated.

def is_image_file(name):
    """Whether `name` (a path inside a folder or a ZIP, '/'-separated) is an image to use.

    Hidden files and folders (a component starting with '.') and macOS '__MACOSX' metadata are not.
    """
    parts = name.replace('\\', '/').split('/')
    if any(part.startswith('.') or part == '__MACOSX' for part in parts):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS

def is_grayscale_mode(mode):
    """Whether a Pillow image mode holds one gray channel (alpha aside); palette images count as color."""
    return mode in GRAYSCALE_MODES

def _composite_on_white(color, alpha):
    a = alpha.astype(np.float32)[:, :, np.newaxis] * (1 / 255)
    return np.rint(color.astype(np.float32) * a + 255 * (1 - a)).astype(np.uint8)

def image_to_array(img, channels=None):
    """A Pillow image as uint8 numpy [H, W, C], C = `channels` (1 or 3).

    channels=None keeps gray images gray (C = 1) and makes every other image RGB (C = 3).
    Conversions, the same for every image:
    - 16-bit gray ('I;16*', and 'I' taken as 16-bit) is rescaled to 8 bits (65535 -> 255), not clipped;
      float ('F') is taken as [0, 1] if no value exceeds 1, else as [0, 255];
    - alpha (RGBA, LA, PA, palette with transparency) is composited on white and dropped;
    - palette, CMYK, YCbCr, LAB, HSV become RGB; gray -> RGB repeats the channel;
      RGB -> gray uses Pillow's luma (ITU-R 601-2).
    """
    mode = img.mode
    if mode in ('L', 'RGB'):
        arr = np.asarray(img)
    elif mode == '1':
        arr = np.asarray(img.convert('L'))
    elif mode == 'I' or mode.startswith('I;16'):
        v = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        arr = ((v + 128) // 257).astype(np.uint8) # round(v * 255 / 65535)
    elif mode == 'F':
        v = np.nan_to_num(np.asarray(img, dtype=np.float32))
        if v.size and v.max() <= 1:
            v = v * 255
        arr = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    elif mode in ('LA', 'La', 'RGBA', 'RGBa', 'PA') or (mode == 'P' and 'transparency' in img.info):
        arr = np.asarray(img.convert('LA' if mode in ('LA', 'La') else 'RGBA'))
        arr = _composite_on_white(arr[:, :, :-1], arr[:, :, -1])
    else:
        arr = np.asarray(img.convert('RGB'))
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    if channels is None or arr.shape[2] == channels:
        return arr
    if channels == 3:
        return np.repeat(arr, 3, axis=2)
    if channels == 1:
        return np.asarray(PIL.Image.fromarray(arr).convert('L'))[:, :, np.newaxis]
    raise ValueError(f'channels must be 1 or 3, not {channels!r}')

def read_image(file, channels=None):
    """Decode an image file (path or binary file object) as uint8 numpy [H, W, C], upright
    as its EXIF orientation says, converted by `image_to_array`. Raises what Pillow raises
    (OSError, PIL.UnidentifiedImageError, ...) for unreadable or truncated files."""
    with PIL.Image.open(file) as img:
        img.load()
        if img.getexif().get(EXIF_ORIENTATION, 1) in range(2, 9):
            img = PIL.ImageOps.exif_transpose(img)
        return image_to_array(img, channels)

#----------------------------------------------------------------------------

class Dataset(torch.utils.data.Dataset):
    """Images and labels indexed 0..len-1, with optional subsetting (max_size) and x-flips.

    Subclasses implement `_load_raw_image(raw_idx)` -> uint8 [C, H, W],
    `_load_raw_labels()` -> int64 [N] (class indices) or float32 [N, D], or None,
    and optionally `_load_class_names()` -> a name per class index, or None.
    """

    def __init__(self,
        name,                   # Name of the dataset.
        raw_shape,              # Shape of the raw image data [N, C, H, W].
        max_size    = None,     # Use at most this many images (a random subset, fixed by random_seed); None = all. Applied before xflip.
        use_labels  = False,    # Give the labels? False = label dimension zero.
        xflip       = False,    # Double the dataset with x-flipped copies (the second half). Applied after max_size.
        random_seed = 0,        # Seed of the max_size subset.
    ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None

        # Subset: the same images as NVIDIA's loader for the same seed.
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])

        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            if not isinstance(labels, np.ndarray) or labels.shape[0] != self._raw_shape[0] or labels.dtype not in (np.float32, np.int64):
                raise DatasetError(f'dataset {self._name}: labels must be int64 [N] or float32 [N, D] for its {self._raw_shape[0]} images')
            if labels.dtype == np.int64 and (labels.ndim != 1 or np.any(labels < 0)):
                raise DatasetError(f'dataset {self._name}: class labels must be non-negative integers')
            self._raw_labels = labels
        return self._raw_labels

    def close(self): # Release open files; subclasses override.
        pass

    def _load_raw_image(self, raw_idx): # uint8 [C, H, W]; subclasses override.
        raise NotImplementedError

    def _load_raw_labels(self): # int64 [N], float32 [N, D] or None; subclasses override.
        raise NotImplementedError

    def _load_class_names(self): # List of str, one per class index, or None; subclasses override.
        return None

    def _describe_raw(self, raw_idx): # Where an image comes from, for error messages.
        return f'image {raw_idx} of dataset {self._name}'

    def __getstate__(self):
        return dict(self.__dict__, _raw_labels=None) # Labels are reloaded on demand.

    def __del__(self):
        try:
            self.close()
        except Exception: # pylint: disable=broad-except
            pass

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        raw_idx = int(self._raw_idx[idx])
        image = self._load_raw_image(raw_idx)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or list(image.shape) != self.image_shape:
            got = 'x'.join(map(str, image.shape)) if isinstance(image, np.ndarray) else type(image).__name__
            raise DatasetError(f'{self._describe_raw(raw_idx)}: image is {got} but the dataset\'s images are '
                f'{"x".join(map(str, self.image_shape))} (uint8 CxHxW); make the images uniform with dataset_tool.py')
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        # Writable: Pillow's arrays are read-only views, which torch's collation warns about.
        return np.require(image, requirements=['C', 'W']), self.get_label(idx)

    def get_label(self, idx):
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx):
        d = dnnlib.EasyDict()
        d.raw_idx = int(self._raw_idx[idx])
        d.xflip = bool(self._xflip[idx])
        d.raw_label = self._get_raw_labels()[d.raw_idx].copy()
        return d

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self): # [C, H, W]
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        assert len(self.image_shape) == 3 # CHW
        return self.image_shape[0]

    @property
    def resolution(self):
        assert len(self.image_shape) == 3 # CHW
        assert self.image_shape[1] == self.image_shape[2]
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                self._label_shape = [int(np.max(raw_labels)) + 1] if raw_labels.size else [0]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

    @property
    def class_names(self):
        """The name of each class index (label_dim of them), or None: without class labels,
        or when the dataset names no classes."""
        if not (self.has_labels and self.has_onehot_labels):
            return None
        names = self._load_class_names()
        if names is not None and (not isinstance(names, list) or len(names) != self.label_dim or not all(isinstance(n, str) for n in names)):
            raise DatasetError(f'dataset {self._name}: "class_names" must be a list of {self.label_dim} strings, one per class index')
        return names

#----------------------------------------------------------------------------

class ImageFolderDataset(Dataset):
    """The images of a folder tree or a ZIP (sorted by path; any depth), with labels from
    `dataset.json` at its root: {"labels": [["00000/img00000000.png", 6], ...]} (class
    indices, given one-hot) or lists of floats, or {"labels": null}.

    Images must be square and all of the same shape; the first image sets the shape
    and each image is checked when loaded (a DatasetError names the file).
    Safe with DataLoader workers: no ZIP handle is shared between processes; each
    process opens its own on first use.
    """

    def __init__(self,
        path,                   # A folder or a ZIP file.
        resolution      = None, # Require this resolution; None = whatever the images have.
        **super_kwargs,         # Arguments of Dataset: max_size, use_labels, xflip, random_seed.
    ):
        self._path = path
        self._zipfile = None
        self._zipfile_pid = None
        self._metadata_class_names = None # dataset.json's "class_names", read with the labels.

        if not os.path.exists(path):
            raise DatasetError(f'dataset {path} does not exist')
        if os.path.isdir(path):
            self._type = 'dir'
            self._all_fnames = set(folder_files(path))
        elif zipfile.is_zipfile(path):
            self._type = 'zip'
            self._all_fnames = {fname for fname in self._get_zipfile().namelist() if not fname.endswith('/')}
        else:
            raise DatasetError(f'dataset {path} is neither a folder nor a ZIP file')

        self._image_fnames = sorted(fname for fname in self._all_fnames if is_image_file(fname))
        if not self._image_fnames:
            raise DatasetError(f'no images found in {path}')

        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        raw_shape = [len(self._image_fnames)] + list(self._load_raw_image(0).shape)
        self.close() # Worker processes forked from this one must not share the ZIP handle.
        height, width = raw_shape[2], raw_shape[3]
        if height != width:
            raise DatasetError(f'{self._describe_raw(0)}: image is {width}x{height}; the dataset\'s images must be square '
                '(convert it with dataset_tool.py --resolution, and --transform for a crop)')
        if resolution is not None and height != resolution:
            raise DatasetError(f'{self._describe_raw(0)}: image is {width}x{height}, not the requested resolution {resolution}x{resolution}')
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)

    def _get_zipfile(self):
        assert self._type == 'zip'
        if self._zipfile is None or self._zipfile_pid != os.getpid():
            self._zipfile = open_zip(self._path) # A forked process opens its own: seeks on a shared handle would race.
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def _describe_raw(self, raw_idx):
        return os.path.join(self._path, self._image_fnames[raw_idx])

    def check_images(self):
        """Check every image's size and channel count against the first image's, from the file headers
        (nothing decoded): DatasetError naming the first image that differs, before a run starts, not
        in a DataLoader worker hours later."""
        channels, height, width = self.image_shape
        for raw_idx, fname in enumerate(self._image_fnames):
            try:
                with self._open_file(fname) as f, PIL.Image.open(f) as img:
                    size, mode = img.size, img.mode
                    if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8): # Turned upright when read.
                        size = size[::-1]
            except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, PIL.Image.DecompressionBombError) as err:
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise DatasetError(f'{self._describe_raw(raw_idx)}: cannot read the image: {msg}') from err
            got = 1 if is_grayscale_mode(mode) else 3
            if size != (width, height) or got != channels:
                raise DatasetError(f'{self._describe_raw(raw_idx)}: image is {size[0]}x{size[1]} with {got} channel(s) but the dataset\'s '
                    f'first image is {width}x{height} with {channels}; make the images uniform with dataset_tool.py')
        self.close() # Worker processes forked from this one must not share the ZIP handle.

    def close(self):
        try:
            if self._zipfile is not None and self._zipfile_pid == os.getpid():
                self._zipfile.close()
        finally:
            self._zipfile = None
            self._zipfile_pid = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None, _zipfile_pid=None)

    def _load_raw_image(self, raw_idx):
        try:
            with self._open_file(self._image_fnames[raw_idx]) as f:
                image = read_image(f)
        except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, PIL.Image.DecompressionBombError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DatasetError(f'{self._describe_raw(raw_idx)}: cannot read the image: {msg}') from err
        return image.transpose(2, 0, 1) # HWC => CHW

    def _read_metadata(self):
        """dataset.json as a dict (checked to have "labels"), or None if there is none."""
        fname = 'dataset.json'
        if fname not in self._all_fnames:
            return None
        where = os.path.join(self._path, fname)
        try:
            with self._open_file(fname) as f:
                metadata = json.load(f)
        except (OSError, ValueError, RecursionError) as err: # RecursionError: nesting too deep for json.
            raise DatasetError(f'{where}: not a dataset.json with a "labels" entry ({type(err).__name__}: {err})') from err
        if not isinstance(metadata, dict) or 'labels' not in metadata:
            raise DatasetError(f'{where}: not a dataset.json with a "labels" entry (its top level is a {type(metadata).__name__}'
                + (' without "labels")' if isinstance(metadata, dict) else ')'))
        return metadata

    def _load_class_names(self):
        self._get_raw_labels() # Reads dataset.json, once for both.
        return self._metadata_class_names

    def _load_raw_labels(self):
        metadata = self._read_metadata()
        if metadata is None:
            return None
        self._metadata_class_names = metadata.get('class_names')
        where = os.path.join(self._path, 'dataset.json')
        labels = metadata['labels']
        if labels is None:
            return None
        try:
            labels = {str(name).replace('\\', '/'): label for name, label in labels}
        except (TypeError, ValueError) as err:
            raise DatasetError(f'{where}: "labels" must be a list of [filename, label] pairs') from err
        missing = [fname for fname in self._image_fnames if fname not in labels]
        if missing:
            raise DatasetError(f'{where}: no label for {missing[0]}' + (f' and {len(missing) - 1} other images' if len(missing) > 1 else ''))
        return labels_to_array([labels[fname] for fname in self._image_fnames], where)

# Class labels become one-hot vectors of (largest index + 1) values: an index of 10^12 in a
# dataset.json would make every label a terabyte. ImageNet-21k has 21841 classes.
MAX_CLASSES = 100000

def labels_to_array(labels, where):
    """JSON labels -> int64 [N] (all non-negative integers: class indices) or float32 [N, D]
    (all lists of D numbers). `where` names the source in the DatasetError for anything else."""
    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool) or isinstance(x, float) and x.is_integer()
    if all(is_int(x) for x in labels):
        arr = np.array(labels, dtype=np.float64).astype(np.int64)
        if np.any(arr < 0) or np.any(arr >= MAX_CLASSES):
            bad = int(arr.min()) if np.any(arr < 0) else int(arr.max())
            raise DatasetError(f'{where}: class labels must be between 0 and {MAX_CLASSES - 1}, got {bad}')
        return arr
    if all(isinstance(x, list) for x in labels) and len({len(x) for x in labels}) == 1:
        try:
            return np.array(labels, dtype=np.float32)
        except (TypeError, ValueError):
            pass
    raise DatasetError(f'{where}: labels must be all class indices (non-negative integers) or all lists of the same number of floats')

#----------------------------------------------------------------------------
