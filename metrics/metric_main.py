"""The metric registry: computing metrics by name and reporting the results.

Each metric is a function `name(opts) -> {result name: float}` registered
under its own name. The names and definitions of StyleGAN3's metrics are
kept exactly (same numbers of images, detectors and settings):

    fid50k_full     FID against the whole dataset (no x-flips), 50k generated.
    kid50k_full     KID against the whole dataset (up to 1M images), 50k generated.
    pr50k3_full     Precision and recall against up to 200k real images, 3-NN.
    ppl2_wend       Perceptual path length in W, endpoints, full image.
    eqt50k_int      Equivariance to integer translation (PSNR).
    eqt50k_frac     Equivariance to fractional translation (PSNR).
    eqr50k          Equivariance to rotation (PSNR).
  Legacy:
    fid50k, kid50k, pr50k3   As above against up to 50k real images (x-flips kept).
    is50k                    Inception score (CIFAR-10).

Not StyleGAN3's, added here for any-scale generators:

    sc50k_x2, sc50k_x4           Scale consistency: PSNR (dB) between a render at
                                 2x (4x), average-pooled back to 1x, and the 1x render.
    fid50k_full_x2, fid50k_full_x4   FID of renders at 2x (4x) against the whole dataset.

and variants a CPU can afford: the definitions above with 10k generated
images (or samples) against a fixed random sample of 10k real images, for
measuring a model, and with 1000 for quick checks:

    fid10k, kid10k, fid10k_x2, fid10k_x4, eqt10k_int
    fid1k_full, kid1k_full, pr1k3_full, sc1k_x2, sc1k_x4, sc1k_x8, fid1k_full_x2

and for training curves on a CPU, a few minutes per snapshot: fid1k and kid1k,
1000 generated images against a fixed random sample of 2000 real ones (FID is
biased upwards by so few images: compare it only with itself).

(Scale consistency is a PSNR pooled over every pixel of every sample: 1000
samples of 32x32 pin it to about 0.01 dB, and a render at 8x costs half a
second per sample on a 2-core CPU.)

The metrics of one calc_metrics call (or of one snapshot in training) share
their Inception features (MetricOptions.feature_cache): fid10k and kid10k
together, or fid10k and fid10k_x2, cost one pass over the real images.

Result keys are NVIDIA's: 'fid50k_full', 'pr50k3_full_precision' and
'_recall', 'is50k_mean' and '_std', ...; ours are named after the metric.

Dataset sizes follow NVIDIA's rule: the number of real images of a metric is
an upper limit (`max_real`; None for *_full = the whole dataset), so a
dataset smaller than that is used whole, never an error. A metric raises
metric_utils.MetricError, before any work, only when the dataset is too
small for its statistic to exist at all: FID and KID need 2 real images,
precision/recall with k neighbours needs k + 1.
"""

import json
import os
import time

import torch

import dnnlib
from . import metric_utils
from . import equivariance
from . import frechet_inception_distance
from . import inception_score
from . import kernel_inception_distance
from . import perceptual_path_length
from . import precision_recall
from . import scale_consistency

#----------------------------------------------------------------------------

_metric_dict = dict() # {name: fn}

def register_metric(fn):
    """Decorator: register `fn(opts) -> dict` under its function name."""
    assert callable(fn)
    _metric_dict[fn.__name__] = fn
    return fn

def is_valid_metric(metric):
    return metric in _metric_dict

def list_valid_metrics():
    return list(_metric_dict.keys())

def detector_urls(metrics):
    """The detector networks (URLs or paths, after overrides) that `metrics`
    load, so that a long job can fetch them, or stop, before it starts:
    Inception for FID, KID and IS, VGG16 for precision/recall and PPL."""
    urls = []
    for metric in metrics:
        if metric.startswith(('fid', 'kid', 'is')):
            urls.append(metric_utils.inception_url())
        elif metric.startswith(('pr', 'ppl')):
            urls.append(metric_utils.vgg16_url())
    return list(dict.fromkeys(urls))

#----------------------------------------------------------------------------

def calc_metric(metric, **kwargs):
    """Compute `metric` with metric_utils.MetricOptions(**kwargs); every process
    of a multi-process group must call it. Returns EasyDict(results, metric,
    total_time, total_time_str, num_gpus), the results broadcast from rank 0.
    Raises ValueError for an unknown metric and MetricError (prefixed with the
    metric's name) when it cannot be computed."""
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r}; valid metrics: {", ".join(list_valid_metrics())}')
    opts = metric_utils.MetricOptions(**kwargs)

    start_time = time.time()
    try:
        results = _metric_dict[metric](opts)
    except metric_utils.MetricError as err:
        raise metric_utils.MetricError(f'{metric}: {err}') from err
    total_time = time.time() - start_time

    # Only rank 0 computes the final numbers; the others report what it found.
    for key, value in list(results.items()):
        if opts.num_gpus > 1:
            value = torch.as_tensor(value, dtype=torch.float64, device=opts.device)
            torch.distributed.broadcast(tensor=value, src=0)
            value = float(value.cpu())
        results[key] = value

    return dnnlib.EasyDict(
        results         = dnnlib.EasyDict(results),
        metric          = metric,
        total_time      = total_time,
        total_time_str  = dnnlib.util.format_time(total_time),
        num_gpus        = opts.num_gpus,
    )

#----------------------------------------------------------------------------

def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print the result of calc_metric() as one JSON line (its fields plus
    snapshot_pkl, a path made relative to run_dir, and a timestamp), append it to
    <run_dir>/metric-<name>.jsonl when run_dir is an existing folder, and
    return the line.

    The line goes out in a single write to a file opened for appending, so
    processes reporting into the same file never interleave within a line,
    and a reader never sees part of one (short of a full disk).
    """
    metric = result_dict['metric']
    assert is_valid_metric(metric)
    if run_dir is not None and snapshot_pkl is not None and not dnnlib.util.is_url(snapshot_pkl, allow_file_urls=True):
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)

    jsonl_line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(jsonl_line, flush=True)
    if run_dir is not None and os.path.isdir(run_dir):
        data = (jsonl_line + '\n').encode('utf-8')
        fd = os.open(os.path.join(run_dir, f'metric-{metric}.jsonl'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
    return jsonl_line

#----------------------------------------------------------------------------
# Recommended metrics (StyleGAN3).

@register_metric
def fid50k_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=50000)
    return dict(fid50k_full=fid)

@register_metric
def kid50k_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k_full=kid)

@register_metric
def pr50k3_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    precision, recall = precision_recall.compute_pr(opts, max_real=200000, num_gen=50000, nhood_size=3, row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=precision, pr50k3_full_recall=recall)

@register_metric
def ppl2_wend(opts):
    ppl = perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space='w', sampling='end', crop=False, batch_size=2)
    return dict(ppl2_wend=ppl)

@register_metric
def eqt50k_int(opts):
    opts.G_kwargs.update(force_fp32=True)
    psnr = equivariance.compute_equivariance_metrics(opts, num_samples=50000, batch_size=4, compute_eqt_int=True)
    return dict(eqt50k_int=psnr)

@register_metric
def eqt50k_frac(opts):
    opts.G_kwargs.update(force_fp32=True)
    psnr = equivariance.compute_equivariance_metrics(opts, num_samples=50000, batch_size=4, compute_eqt_frac=True)
    return dict(eqt50k_frac=psnr)

@register_metric
def eqr50k(opts):
    opts.G_kwargs.update(force_fp32=True)
    psnr = equivariance.compute_equivariance_metrics(opts, num_samples=50000, batch_size=4, compute_eqr=True)
    return dict(eqr50k=psnr)

#----------------------------------------------------------------------------
# Legacy metrics (StyleGAN3).

@register_metric
def fid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    fid = frechet_inception_distance.compute_fid(opts, max_real=50000, num_gen=50000)
    return dict(fid50k=fid)

@register_metric
def kid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    kid = kernel_inception_distance.compute_kid(opts, max_real=50000, num_gen=50000, num_subsets=100, max_subset_size=1000)
    return dict(kid50k=kid)

@register_metric
def pr50k3(opts):
    opts.dataset_kwargs.update(max_size=None)
    precision, recall = precision_recall.compute_pr(opts, max_real=50000, num_gen=50000, nhood_size=3, row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=precision, pr50k3_recall=recall)

@register_metric
def is50k(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    mean, std = inception_score.compute_is(opts, num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)

#----------------------------------------------------------------------------
# Any-scale metrics (not StyleGAN3's).

@register_metric
def sc50k_x2(opts):
    psnr = scale_consistency.compute_scale_psnr(opts, num_samples=50000, scale=2, batch_size=4)
    return dict(sc50k_x2=psnr)

@register_metric
def sc50k_x4(opts):
    psnr = scale_consistency.compute_scale_psnr(opts, num_samples=50000, scale=4, batch_size=4)
    return dict(sc50k_x4=psnr)

@register_metric
def fid50k_full_x2(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    fid = scale_consistency.compute_fid_at_scale(opts, max_real=None, num_gen=50000, scale=2)
    return dict(fid50k_full_x2=fid)

@register_metric
def fid50k_full_x4(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    fid = scale_consistency.compute_fid_at_scale(opts, max_real=None, num_gen=50000, scale=4)
    return dict(fid50k_full_x4=fid)

#----------------------------------------------------------------------------
# Variants a CPU can afford (not StyleGAN3's): 10k generated images against a fixed random sample
# of 10k real ones (the dataset's max_size subset, random_seed 0, so that the statistics of the
# reals are computed once and cached), and 1000 generated images for quick checks.

CPU_SAMPLE_SIZE = 10000 # Generated images, and real ones, of the 10k variants.

@register_metric
def fid10k(opts):
    opts.dataset_kwargs.update(max_size=CPU_SAMPLE_SIZE, xflip=False, random_seed=0)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=CPU_SAMPLE_SIZE)
    return dict(fid10k=fid)

@register_metric
def kid10k(opts):
    opts.dataset_kwargs.update(max_size=CPU_SAMPLE_SIZE, xflip=False, random_seed=0)
    kid = kernel_inception_distance.compute_kid(opts, max_real=None, num_gen=CPU_SAMPLE_SIZE, num_subsets=100, max_subset_size=1000)
    return dict(kid10k=kid)

@register_metric
def fid10k_x2(opts):
    opts.dataset_kwargs.update(max_size=CPU_SAMPLE_SIZE, xflip=False, random_seed=0)
    fid = scale_consistency.compute_fid_at_scale(opts, max_real=None, num_gen=CPU_SAMPLE_SIZE, scale=2)
    return dict(fid10k_x2=fid)

@register_metric
def fid10k_x4(opts):
    opts.dataset_kwargs.update(max_size=CPU_SAMPLE_SIZE, xflip=False, random_seed=0)
    fid = scale_consistency.compute_fid_at_scale(opts, max_real=None, num_gen=CPU_SAMPLE_SIZE, scale=4)
    return dict(fid10k_x4=fid)

@register_metric
def eqt10k_int(opts):
    opts.G_kwargs.update(force_fp32=True)
    psnr = equivariance.compute_equivariance_metrics(opts, num_samples=CPU_SAMPLE_SIZE, batch_size=4, compute_eqt_int=True)
    return dict(eqt10k_int=psnr)

CURVE_REAL_SIZE = 2000 # Real images of the training-curve variants.

@register_metric
def fid1k(opts):
    opts.dataset_kwargs.update(max_size=CURVE_REAL_SIZE, xflip=False, random_seed=0)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=1000)
    return dict(fid1k=fid)

@register_metric
def kid1k(opts):
    opts.dataset_kwargs.update(max_size=CURVE_REAL_SIZE, xflip=False, random_seed=0)
    kid = kernel_inception_distance.compute_kid(opts, max_real=None, num_gen=1000, num_subsets=100, max_subset_size=1000)
    return dict(kid1k=kid)

@register_metric
def fid1k_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=1000)
    return dict(fid1k_full=fid)

@register_metric
def kid1k_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    kid = kernel_inception_distance.compute_kid(opts, max_real=1000000, num_gen=1000, num_subsets=100, max_subset_size=1000)
    return dict(kid1k_full=kid)

@register_metric
def pr1k3_full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    precision, recall = precision_recall.compute_pr(opts, max_real=200000, num_gen=1000, nhood_size=3, row_batch_size=10000, col_batch_size=10000)
    return dict(pr1k3_full_precision=precision, pr1k3_full_recall=recall)

@register_metric
def sc1k_x2(opts):
    psnr = scale_consistency.compute_scale_psnr(opts, num_samples=1000, scale=2, batch_size=4)
    return dict(sc1k_x2=psnr)

@register_metric
def sc1k_x4(opts):
    psnr = scale_consistency.compute_scale_psnr(opts, num_samples=1000, scale=4, batch_size=4)
    return dict(sc1k_x4=psnr)

@register_metric
def sc1k_x8(opts):
    psnr = scale_consistency.compute_scale_psnr(opts, num_samples=1000, scale=8, batch_size=4)
    return dict(sc1k_x8=psnr)

@register_metric
def fid1k_full_x2(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    fid = scale_consistency.compute_fid_at_scale(opts, max_real=None, num_gen=1000, scale=2)
    return dict(fid1k_full_x2=fid)

#----------------------------------------------------------------------------
