"""Train a GAN: the CREPS generator (or a StyleGAN config) against a
StyleGAN2 discriminator, on one or several processes, on CUDA or CPU.

Each run writes a numbered folder under --outdir holding training_options.json,
log.txt, stats.jsonl, TensorBoard events, image grids, network snapshots and
training-state checkpoints. --resume takes a network pickle (fine-tuning from
its weights) or a training-state file or run folder (continuing exactly).
"""

import json
import os
import re
import signal
import sys

import click
import torch

import dnnlib
from metrics import metric_main
from metrics import metric_utils
from torch_utils import cli
from torch_utils import distributed
from training import augment
from training import training_loop

#----------------------------------------------------------------------------

GENERATOR_CLASSES = {
    'creps': 'training.networks_creps.Generator',
    'stylegan2': 'training.networks_stylegan2.Generator',
    'stylegan3-t': 'training.networks_stylegan3.Generator',
    'stylegan3-r': 'training.networks_stylegan3.Generator',
}

def parse_comma_separated_list(value):
    if isinstance(value, list):
        return value
    if value is None or value.lower() == 'none' or value == '':
        return []
    return value.split(',')

def next_run_dir(outdir, desc):
    """outdir/<5-digit id>-<desc>, the id one past the largest in use."""
    ids = [int(m.group()) for m in (re.match(r'^\d+', name) for name in os.listdir(outdir)) if m is not None] if os.path.isdir(outdir) else []
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')

def dataset_kwargs(data):
    """Dataset options for --data and the name it gives the run; one-line errors."""
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True, max_size=None, xflip=False)
    try:
        dataset = dnnlib.util.construct_class_by_name(**kwargs)
        kwargs.use_labels = dataset.has_labels # Be explicit about the labels.
        _ = dataset.class_names                # Checked here, not after the networks are built.
        dataset.check_images()                 # Before the run folder exists.
    except (OSError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint='--data')
    kwargs.resolution = dataset.resolution # Be explicit about the resolution.
    kwargs.max_size = len(dataset)         # Be explicit about the dataset size.
    return kwargs, dataset.name

REQUIRED_OPTIONS = ('outdir', 'cfg', 'data', 'gpus', 'batch', 'gamma')
COMMAND_LINE_FILE = 'command_line.json' # The options of a run, in its folder: a continuation takes those it is not given.
NOT_RECORDED = ('resume', 'trust_pickle', 'dry_run') # Options that belong to one invocation, not to the run.

# The options that set each setting a continuation must keep (paths in training_options.json, or their first part).
SETTING_OPTIONS = {
    'G_kwargs.class_name': '--cfg', 'training_set_kwargs.path': '--data', 'training_set_kwargs.max_size': '--data',
    'training_set_kwargs.resolution': '--data', 'num_gpus': '--gpus', 'batch_size': '--batch', 'batch_gpu': '--batch-gpu',
    'loss_kwargs.r1_gamma': '--gamma', 'training_set_kwargs.use_labels': '--cond', 'training_set_kwargs.xflip': '--mirror',
    'augment_kwargs': '--aug', 'ada_target': '--target', 'augment_p': '--p', 'D_kwargs.block_kwargs.freeze_layers': '--freezed',
    'G_kwargs.channel_base': '--cbase', 'D_kwargs.channel_base': '--cbase', 'G_kwargs.channel_max': '--cmax', 'D_kwargs.channel_max': '--cmax',
    'G_opt_kwargs.lr': '--glr', 'D_opt_kwargs.lr': '--dlr', 'G_kwargs.mapping_kwargs.num_layers': '--map-depth',
    'D_kwargs.epilogue_kwargs.mbstd_group_size': '--mbstd-group', 'loss_kwargs.pl_weight': '--pl-weight', 'G_reg_interval': '--pl-weight',
    'G_kwargs.biline_channels': '--biline-channels', 'G_kwargs.rank': '--rank', 'random_seed': '--seed',
    'training_set_kwargs.random_seed': '--seed', 'G_kwargs.num_fp16_res': '--fp32', 'D_kwargs.num_fp16_res': '--fp32',
    'D_kwargs.conv_clamp': '--fp32',
}

def take_recorded_options(opts, ctx):
    """A continuation (--resume=<run folder or training state>) takes every option it is not given
    from the run's command_line.json, each checked as if typed."""
    if opts.resume is None or dnnlib.util.is_url(opts.resume) or not training_loop.is_training_state(opts.resume):
        return
    folder = opts.resume if os.path.isdir(opts.resume) else os.path.dirname(opts.resume)
    path = os.path.join(folder, COMMAND_LINE_FILE)
    if not os.path.isfile(path):
        return # A run of an earlier version: every option must be given.
    try:
        with open(path, 'rt', encoding='utf-8') as f:
            recorded = json.load(f)
        if not isinstance(recorded, dict):
            raise ValueError('not a JSON object')
    except (OSError, ValueError) as err:
        raise click.BadParameter(f'{path}: not a readable record of the run\'s options ({err})', param_hint='--resume')
    params = {param.name: param for param in ctx.command.params}
    for name, value in recorded.items():
        if name in params and name not in NOT_RECORDED and ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE:
            try:
                opts[name] = None if value is None else params[name].type_cast_value(ctx, value)
            except click.BadParameter as err:
                raise click.BadParameter(f'{path}: {err.message}', param_hint=f'--{name.replace("_", "-")} (recorded)')

def resolve_resume(resume):
    """(resume_pkl, the training states to try, newest first) for --resume; either may be None."""
    if resume is None:
        return None, None
    if dnnlib.util.is_url(resume) or not training_loop.is_training_state(resume):
        if not dnnlib.util.is_url(resume) and not os.path.isfile(resume):
            raise click.BadParameter(f'{resume}: no such file or folder', param_hint='--resume')
        return resume, None
    try:
        return None, training_loop.training_states(resume)
    except FileNotFoundError as err:
        raise click.BadParameter(str(err), param_hint='--resume')

def readable_training_state(states):
    """(path, saved options) of the newest readable of the training states `states` (newest
    first). A run killed while the disk filled can leave its newest checkpoint damaged: the
    one before it is used, saying so."""
    for path in states:
        try:
            return path, json.loads(training_loop.load_training_state(path)['options'])
        except Exception as err: # pylint: disable=broad-except # Whatever torch.load raises for a damaged file.
            problem = f'{path}: not a readable training state ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""})'
            if path == states[-1]:
                raise click.BadParameter(problem, param_hint='--resume')
            click.echo(f'Warning: {problem}; resuming from the checkpoint before it', err=True)

#----------------------------------------------------------------------------

# Errors that stop a run with one line: divergence (every process sees the same gradients, so all
# stop at the same tick) and an output that cannot be written (a full disk, say).
STOPPING_ERRORS = (training_loop.TrainingDiverged, dnnlib.util.OutputError)

class StopRequest:
    """Ctrl-C as a request to stop: the first one lets training end cleanly (training_loop's
    abort_fn: a snapshot and a training state at the current step, for --resume=<run folder>),
    a second one stops at once. A signal handler while entered."""

    def __init__(self, verbose):
        self.verbose = verbose # Say so (one process of a group).
        self.requested = False
        self._previous = None

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_exc):
        signal.signal(signal.SIGINT, self._previous)

    def __call__(self):
        return self.requested

    def _handle(self, _signum, _frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.verbose:
            print('\nCtrl-C: stopping at the end of this step, with a snapshot and a training state to continue from '
                '(train.py --resume=<run folder>); Ctrl-C again stops at once, without them.', file=sys.stderr, flush=True)

def subprocess_fn(rank, init_method, c):
    """Body of every training process: join the group, log, train."""
    device = distributed.setup_process(rank=rank, world_size=c.num_gpus, base_device=c.device, init_method=init_method)
    c = dnnlib.EasyDict(c, rank=rank, device=str(device))
    try:
        with StopRequest(verbose=(rank == 0)) as stop_request:
            if rank == 0:
                with dnnlib.util.Logger(os.path.join(c.run_dir, 'log.txt'), 'a'):
                    try:
                        training_loop.training_loop(**c, abort_fn=stop_request)
                    except STOPPING_ERRORS as err:
                        print(f'Error: training stopped: {err}', file=sys.stderr) # Into log.txt as well, where it can be written.
                        raise
            else:
                training_loop.training_loop(**c, abort_fn=stop_request)
    except STOPPING_ERRORS:
        sys.exit(1) # Each is one line; the snapshots written before stay usable.
    except KeyboardInterrupt: # The second Ctrl-C.
        if rank == 0:
            print('Stopped at once; the snapshots and training states written before are kept.', file=sys.stderr)
        sys.exit(130)

def launch_training(c, desc, outdir, dry_run, opts):
    """Print the options, make the run folder and start the processes."""
    world = distributed.torchrun_world()
    is_main = world is None or world[0] == 0
    c.run_dir = next_run_dir(outdir, desc)
    if is_main:
        print()
        print('Training options:')
        print(json.dumps(c, indent=2))
        print()
        print(f'Output directory:    {c.run_dir}')
        print(f'Number of processes: {c.num_gpus}')
        print(f'Batch size:          {c.batch_size} images')
        print(f'Training duration:   {c.total_kimg:g} kimg')
        print(f'Dataset path:        {c.training_set_kwargs.path}')
        print(f'Dataset size:        {c.training_set_kwargs.max_size} images')
        print(f'Dataset resolution:  {c.training_set_kwargs.resolution}')
        print(f'Dataset labels:      {c.training_set_kwargs.use_labels}')
        print(f'Dataset x-flips:     {c.training_set_kwargs.xflip}')
        print()
    if dry_run:
        if is_main:
            print('Dry run; exiting.')
        return
    if is_main:
        try:
            os.makedirs(c.run_dir)
        except OSError as err:
            raise click.BadParameter(f'cannot create run folder {c.run_dir}: {err.strerror}', param_hint='--outdir')
        with dnnlib.util.atomic_write(os.path.join(c.run_dir, 'training_options.json'), 'wt') as f:
            json.dump(c, f, indent=2)
        with dnnlib.util.atomic_write(os.path.join(c.run_dir, COMMAND_LINE_FILE), 'wt') as f:
            json.dump({name: value for name, value in opts.items() if name not in NOT_RECORDED}, f, indent=2)

    # Ctrl-C reaches every process of the terminal's group: spawned processes stop cleanly
    # (StopRequest) while this one waits for them, rather than dying first.
    spawning = c.num_gpus > 1 and world is None
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if spawning else None
    try:
        distributed.launch(subprocess_fn, c.num_gpus, c)
    except torch.multiprocessing.ProcessExitedException as err: # A spawned process stopped with its message printed.
        sys.exit(err.exit_code or 1)
    finally:
        if spawning:
            signal.signal(signal.SIGINT, previous_handler)

#----------------------------------------------------------------------------

@click.command()
# Required (a continuation, --resume=<run folder>, takes them from the run, as every option it leaves out).
@click.option('--outdir', help='Where to make the run folder  [required]', metavar='DIR', callback=cli.expand_path)
@click.option('--cfg', help='Base configuration  [required]', type=click.Choice(list(GENERATOR_CLASSES)))
@click.option('--data', help='Training data (a dataset_tool.py ZIP or folder)  [required]', metavar='[ZIP|DIR]', type=str, callback=cli.expand_path)
@click.option('--gpus', help='Number of processes (one per GPU, or CPU processes)  [required]', metavar='INT', type=click.IntRange(min=1))
@click.option('--batch', help='Total batch size  [required]', metavar='INT', type=click.IntRange(min=1))
@click.option('--gamma', help='R1 regularization weight  [required]', metavar='FLOAT', type=click.FloatRange(min=0))
# Optional features.
@click.option('--cond', help='Train a conditional model', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--mirror', help='Enable dataset x-flips', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--aug', help='Augmentation mode', type=click.Choice(['noaug', 'ada', 'fixed']), default='ada', show_default=True)
@click.option('--resume', help='Network pickle (fine-tune) or training state / run folder (continue exactly)', metavar='[PATH|URL|DIR]', type=str, callback=cli.expand_path)
@cli.trust_pickle_option
@click.option('--freezed', help='Freeze the first layers of D', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
# Hyperparameters.
@click.option('--p', help='Probability for --aug=fixed', metavar='FLOAT', type=click.FloatRange(min=0, max=1), default=0.2, show_default=True)
@click.option('--target', help='Target value for --aug=ada', metavar='FLOAT', type=click.FloatRange(min=0, max=1), default=0.6, show_default=True)
@click.option('--batch-gpu', help='Limit the batch size per process', metavar='INT', type=click.IntRange(min=1))
@click.option('--cbase', help='Capacity multiplier', metavar='INT', type=click.IntRange(min=1), default=32768, show_default=True)
@click.option('--cmax', help='Max. feature maps', metavar='INT', type=click.IntRange(min=1), default=512, show_default=True)
@click.option('--glr', help='G learning rate  [default: varies]', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--dlr', help='D learning rate', metavar='FLOAT', type=click.FloatRange(min=0), default=0.002, show_default=True)
@click.option('--map-depth', help='Mapping network depth  [default: varies]', metavar='INT', type=click.IntRange(min=1))
@click.option('--mbstd-group', help='Minibatch std group size', metavar='INT', type=click.IntRange(min=1), default=4, show_default=True)
@click.option('--pl-weight', help='Path-length regularization weight, 0 = off  [default: varies]', metavar='FLOAT', type=click.FloatRange(min=0))
@click.option('--biline-channels', help='CREPS: bi-line channels (width of the per-pixel network)', metavar='INT', type=click.IntRange(min=4), default=32, show_default=True)
@click.option('--rank', 'biline_rank', help='CREPS: rank of the bi-lines', metavar='INT', type=click.IntRange(min=1), default=8, show_default=True)
# Settings.
@click.option('--desc', help='String to include in the run folder name', metavar='STR', type=str)
@click.option('--metrics', help="Quality metrics at each snapshot, or 'none'", metavar='[NAME|A,B,C|none]', type=parse_comma_separated_list, default='fid50k_full', show_default=True)
@click.option('--kimg', help='Total training duration', metavar='KIMG', type=click.FloatRange(min=0, min_open=True), default=25000, show_default=True)
@click.option('--tick', help='How often to print progress', metavar='KIMG', type=click.FloatRange(min=0, min_open=True), default=4, show_default=True)
@click.option('--snap', help='How often to save snapshots', metavar='TICKS', type=click.IntRange(min=1), default=50, show_default=True)
@click.option('--grid', 'grid_size', help='Columns x rows of the snapshot image grids  [default: fills a 4K screen; at most 8x8 on the CPU]', type=cli.Size())
@click.option('--seed', help='Random seed', metavar='INT', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--fp32', help='Disable mixed precision', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--nobench', help='Disable cuDNN benchmarking', metavar='BOOL', type=bool, default=False, show_default=True)
@click.option('--workers', help='DataLoader worker processes', metavar='INT', type=click.IntRange(min=0), default=3, show_default=True)
@click.option('--device', help='Torch device (each process takes its own GPU under --gpus)', default=cli.default_device(), show_default=True)
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
def main(**kwargs):
    """Train a GAN: CREPS (any-scale, bi-line synthesis) or StyleGAN.

    Examples:

    \b
    # Train CREPS on a 256x256 dataset with 8 GPUs.
    python train.py --outdir=~/training-runs --cfg=creps --data=~/datasets/ffhq-256x256.zip \\
        --gpus=8 --batch=32 --gamma=2 --mirror=1

    \b
    # A short CREPS run on the CPU, offline (no metrics), in the recipe of the shipped model.
    python train.py --outdir=runs --cfg=creps --data=d.zip --gpus=1 --batch=32 --gamma=0.05 --aug=noaug \\
        --pl-weight=0 --map-depth=2 --workers=1 --cbase=512 --cmax=32 --kimg=0.128 --tick=0.064 --metrics=none --device=cpu

    \b
    # Continue a run exactly where its last checkpoint left it, with its options.
    python train.py --resume=~/training-runs/00000-creps-ffhq-256x256-gpus8-batch32-gamma2
    """
    opts = dnnlib.EasyDict(kwargs)
    take_recorded_options(opts, click.get_current_context())
    missing = [name for name in REQUIRED_OPTIONS if opts[name] is None]
    if missing:
        raise click.UsageError(f"Missing option '--{missing[0]}' (a continuation, --resume=<run folder>, takes it from the run)")
    c = dnnlib.EasyDict()
    c.G_kwargs = dnnlib.EasyDict(class_name=None, z_dim=512, w_dim=512, mapping_kwargs=dnnlib.EasyDict())
    c.D_kwargs = dnnlib.EasyDict(class_name='training.networks_stylegan2.Discriminator', block_kwargs=dnnlib.EasyDict(),
        mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8)
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss')

    unknown = [metric for metric in opts.metrics if not metric_main.is_valid_metric(metric)]
    if unknown:
        raise click.BadParameter(f'unknown metric {unknown[0]!r}; valid: none, {", ".join(metric_main.list_valid_metrics())}', param_hint='--metrics')
    for url in metric_main.detector_urls(opts.metrics): # Fetched now: an offline machine learns it before training, not at the first snapshot.
        try:
            metric_utils.load_feature_detector(url)
        except (OSError, metric_utils.MetricError) as err:
            raise click.BadParameter(str(err), param_hint='--metrics')
    device = cli.resolve_device(opts.device)

    # Training set.
    c.training_set_kwargs, dataset_name = dataset_kwargs(opts.data)
    if opts.cond and not c.training_set_kwargs.use_labels:
        raise click.BadParameter(f'--cond=True requires labels in {os.path.join(opts.data, "dataset.json")}', param_hint='--cond')
    c.training_set_kwargs.use_labels = opts.cond
    c.training_set_kwargs.xflip = opts.mirror
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=(device.type == 'cuda'), num_workers=opts.workers)
    if opts.workers > 0:
        c.data_loader_kwargs.prefetch_factor = 2

    # Hyperparameters and settings.
    c.num_gpus = opts.gpus
    c.device = str(device)
    c.batch_size = opts.batch
    c.batch_gpu = opts.batch_gpu or opts.batch // opts.gpus
    c.G_kwargs.channel_base = c.D_kwargs.channel_base = opts.cbase
    c.G_kwargs.channel_max = c.D_kwargs.channel_max = opts.cmax
    c.G_kwargs.mapping_kwargs.num_layers = (8 if opts.cfg in ('stylegan2', 'creps') else 2) if opts.map_depth is None else opts.map_depth
    c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
    c.D_kwargs.epilogue_kwargs.mbstd_group_size = opts.mbstd_group
    c.loss_kwargs.r1_gamma = opts.gamma
    c.G_opt_kwargs.lr = (0.002 if opts.cfg in ('stylegan2', 'creps') else 0.0025) if opts.glr is None else opts.glr
    c.D_opt_kwargs.lr = opts.dlr
    c.metrics = opts.metrics
    c.total_kimg = opts.kimg
    c.kimg_per_tick = opts.tick
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.grid_size = opts.grid_size
    c.random_seed = c.training_set_kwargs.random_seed = opts.seed

    # Checks that would otherwise fail later, in the middle of a run.
    if c.batch_size % c.num_gpus != 0:
        raise click.BadParameter(f'--batch={c.batch_size} is not a multiple of --gpus={c.num_gpus}', param_hint='--batch')
    if c.batch_size % (c.num_gpus * c.batch_gpu) != 0:
        raise click.BadParameter(f'--batch={c.batch_size} is not a multiple of --gpus times --batch-gpu ({c.num_gpus} x {c.batch_gpu})', param_hint='--batch')
    if c.batch_gpu < opts.mbstd_group:
        raise click.BadParameter(f'--batch-gpu={c.batch_gpu} is smaller than --mbstd-group={opts.mbstd_group}', param_hint='--batch-gpu')
    if c.batch_gpu % opts.mbstd_group != 0:
        raise click.BadParameter(f'--batch-gpu={c.batch_gpu} is not a multiple of --mbstd-group={opts.mbstd_group}', param_hint='--batch-gpu')
    if c.training_set_kwargs.max_size < c.batch_size // c.num_gpus:
        raise click.BadParameter(f'{opts.data} has {c.training_set_kwargs.max_size} images, fewer than the {c.batch_size // c.num_gpus} each process needs per step (--batch={c.batch_size}, --gpus={c.num_gpus})', param_hint='--data')
    world = distributed.torchrun_world()
    if world is not None and world[2] != c.num_gpus:
        raise click.BadParameter(f'torchrun started {world[2]} processes but --gpus={c.num_gpus}; they must agree', param_hint='--gpus')
    if device.type == 'cuda' and world is None and device.index is None and c.num_gpus > torch.cuda.device_count():
        raise click.BadParameter(f'--gpus={c.num_gpus} but this machine has {torch.cuda.device_count()} GPUs', param_hint='--gpus')

    # Base configuration.
    c.ema_kimg = c.batch_size * 10 / 32
    c.G_kwargs.class_name = GENERATOR_CLASSES[opts.cfg]
    c.G_reg_interval = 4 # Lazy path-length regularization.
    is_stylegan3 = opts.cfg.startswith('stylegan3')
    c.loss_kwargs.pl_weight = (0 if is_stylegan3 else 2) if opts.pl_weight is None else opts.pl_weight # StyleGAN3 has none.
    if opts.cfg == 'creps':
        c.G_kwargs.channel_base *= 2 # CREPS's line layers are twice as wide as StyleGAN2's convolutions.
        c.G_kwargs.channel_max *= 2
        c.G_kwargs.biline_channels = opts.biline_channels
        c.G_kwargs.rank = opts.biline_rank
    if opts.cfg == 'stylegan2':
        c.G_kwargs.fused_modconv_default = 'inference_only' # Regular convolutions in training: faster than grouped ones.
        c.loss_kwargs.style_mixing_prob = 0.9 # Style mixing regularization.
        c.loss_kwargs.pl_no_weight_grad = True # PL's backward skips the conv weight gradients (exact with non-fused convolutions).
    if is_stylegan3:
        c.G_kwargs.magnitude_ema_beta = 0.5 ** (c.batch_size / (20 * 1e3))
    if opts.cfg == 'stylegan3-r':
        c.G_kwargs.conv_kernel = 1 # 1x1 convolutions.
        c.G_kwargs.channel_base *= 2 # Twice the feature maps.
        c.G_kwargs.channel_max *= 2
        c.G_kwargs.use_radial_filters = True # Radially symmetric downsampling filters.
        c.loss_kwargs.blur_init_sigma = 10 # Blur the images D sees ...
        c.loss_kwargs.blur_fade_kimg = c.batch_size * 200 / 32 # ... fading out over the first kimg.
    if c.loss_kwargs.pl_weight == 0:
        c.G_reg_interval = None # Nothing to regularize: no lazy G phase.

    # Augmentation.
    if opts.aug != 'noaug':
        c.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **augment.AUGMENT_PRESETS['bgc'])
        if opts.aug == 'ada':
            c.ada_target = opts.target
        if opts.aug == 'fixed':
            c.augment_p = opts.p

    # Resume. Continuing a run that was itself a fine-tune keeps the fine-tune settings.
    c.resume_pkl, resume_states = resolve_resume(opts.resume)
    if opts.trust_pickle:
        c.trust_pickle = True
    c.resume_state, saved_options = None, None
    if resume_states is not None:
        c.resume_state, saved_options = readable_training_state(resume_states)
        c.resume_pkl = saved_options.get('resume_pkl')
    if c.resume_pkl is not None:
        c.ada_kimg = 100 # Make ADA react faster at the beginning.
        c.ema_rampup = None # Disable EMA rampup.
        c.loss_kwargs.blur_init_sigma = 0 # Disable blur rampup.

    # Performance.
    if opts.fp32:
        c.G_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 0
        c.D_kwargs.conv_clamp = None
    if opts.nobench:
        c.cudnn_benchmark = False

    if saved_options is not None:
        try:
            training_loop.check_resumable(saved_options, training_loop.full_options(**c))
        except training_loop.ResumeMismatch as err:
            option = SETTING_OPTIONS.get(err.key) or SETTING_OPTIONS.get(err.key.split('.')[0])
            if option is None:
                raise click.BadParameter(str(err), param_hint='--resume')
            raise click.BadParameter(f'the run was trained with {option}={err.saved if not isinstance(err.saved, bool) else err.saved} '
                f'({err.key}), this continuation asks for {err.now}; an exact continuation needs the same {option} (leave it out to '
                'take the run\'s; fine-tune from a network pickle to change it)', param_hint=option)

    desc = f'{opts.cfg}-{dataset_name}-gpus{c.num_gpus}-batch{c.batch_size}-gamma{c.loss_kwargs.r1_gamma:g}'
    if opts.desc is not None:
        desc += f'-{opts.desc}'
    launch_training(c=c, desc=desc, outdir=opts.outdir, dry_run=opts.dry_run, opts=opts)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
