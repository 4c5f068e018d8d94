"""The training loop: one loop for every generator config, on CPU or CUDA, in
one process or several.

Every `batch_size` images the loop runs the phases that are due (generator
main loss, generator regularization, discriminator main loss, discriminator
regularization), averages the gradients over processes, zeroes non-finite
ones (as StyleGAN does; the tick line counts the steps that had any, and a
phase whose gradients stay non-finite stops the run), steps the optimizers,
updates the generator's moving average (G_ema) and adapts the augmentation
probability. Progress is reported once per tick
(`kimg_per_tick` thousand images) and snapshots are written every few ticks:
a network pickle in NVIDIA's format, an image grid, and a training-state
checkpoint from which the run continues exactly where it was, as if it had
never stopped.

Reproducibility: the latents of a batch come from one generator shared by
all processes (each takes its slice of the global batch), so the images a
step sees do not depend on how many processes share it; per-process
randomness (augmentation, the order of real images) comes from per-process
generators. The checkpoint holds every random state, the sampler's
position as consumed (not as prefetched by the DataLoader) and all counters.
"""

import contextlib
import copy
import inspect
import json
import os
import pickle
import re
import signal
import time

import numpy as np
import PIL.Image
import psutil
import torch

import dnnlib
import legacy
from torch_utils import distributed
from torch_utils import misc
from torch_utils import training_stats
from training import augment
from training import networks_creps
from metrics import metric_main

#----------------------------------------------------------------------------
# Training-state checkpoints.

STATE_VERSION = 1
STATE_PATTERN = re.compile(r'training-state-(\d+(?:\.\d+)?)\.pt')

def training_states(path):
    """The training-state files `path` names, newest first: the file itself, or those of a
    run folder. Raises FileNotFoundError with a one-line message."""
    if os.path.isdir(path):
        states = [name for name in os.listdir(path) if STATE_PATTERN.fullmatch(name)]
        if not states:
            raise FileNotFoundError(f'{path} holds no training-state-*.pt checkpoint')
        states.sort(key=lambda name: -float(STATE_PATTERN.fullmatch(name).group(1)))
        return [os.path.join(path, name) for name in states]
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} does not exist')
    return [path]

def find_training_state(path):
    """The training-state file `path` names: the file itself, or the latest one in a run folder."""
    return training_states(path)[0]

def is_training_state(path):
    """Does `path` name a training state (a run folder or a training-state file) rather than a network pickle?"""
    return os.path.isdir(path) or STATE_PATTERN.fullmatch(os.path.basename(path)) is not None

def load_training_state(path):
    """The checkpoint dict of a training-state file, loaded without executing code."""
    return torch.load(path, map_location='cpu', weights_only=True)

_NOT_OPTIONS = ('rank', 'abort_fn', 'progress_fn') # Arguments of training_loop() that are not part of a run's settings.

def full_options(**kwargs):
    """The settings of a run: every argument of training_loop(), defaults
    filled in, as JSON values (as a training state records them)."""
    options = {name: param.default for name, param in inspect.signature(training_loop).parameters.items()}
    options.update(kwargs)
    return json.loads(json.dumps({key: value for key, value in options.items() if key not in _NOT_OPTIONS}, default=str))

# Options an exact continuation may change: how long and how often, not what is computed.
RESUMABLE_CHANGES = ('total_kimg', 'kimg_per_tick', 'image_snapshot_ticks', 'network_snapshot_ticks', 'metrics',
    'data_loader_kwargs', 'run_dir', 'resume_state', 'resume_pkl', 'trust_pickle', 'cudnn_benchmark', 'grid_size', 'device',
    'max_nonfinite_steps')

class TrainingDiverged(Exception):
    """A phase's gradients were non-finite in max_nonfinite_steps of its steps in a row; the message is one line."""

class ResumeMismatch(ValueError):
    """A setting differs between the run that wrote a training state and the one continuing it.
    `key`: its path in the options ('loss_kwargs.r1_gamma'); `saved`, `now`: the two values."""
    def __init__(self, key, saved, now):
        super().__init__(f'the training state was written with {key} = {json.dumps(saved)}, this run has {json.dumps(now)}; '
            'an exact continuation needs the same settings (use a network pickle to fine-tune with new ones)')
        self.key, self.saved, self.now = key, saved, now

def _first_difference(saved, now, path=''):
    """(path, saved value, new value) of the first leaf that differs, in sorted key order; None if none."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            if not path and key in RESUMABLE_CHANGES:
                continue
            difference = _first_difference(saved.get(key), now.get(key), f'{path}.{key}' if path else key)
            if difference is not None:
                return difference
        return None
    return None if saved == now else (path, saved, now)

def check_resumable(saved_options, options):
    """Raise ResumeMismatch naming the first setting (a leaf of the nested options) that differs
    between the run that wrote a training state and the one continuing it."""
    difference = _first_difference(saved_options, options)
    if difference is not None:
        raise ResumeMismatch(*difference)

def _rng_state(device):
    """This process's random states, as tensors and plain values (torch.load(weights_only=True) reads them)."""
    np_state = np.random.get_state(legacy=False)
    state = dict(torch=torch.get_rng_state(),
        numpy=dict(key=torch.as_tensor(np_state['state']['key'].astype(np.int64)), pos=np_state['state']['pos'],
            has_gauss=np_state['has_gauss'], gauss=np_state['gauss']))
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state

def _set_rng_state(state, device):
    torch.set_rng_state(state['torch'])
    np.random.set_state(dict(bit_generator='MT19937', state=dict(key=state['numpy']['key'].numpy().astype(np.uint32),
        pos=state['numpy']['pos']), has_gauss=state['numpy']['has_gauss'], gauss=state['numpy']['gauss']))
    if device.type == 'cuda':
        torch.cuda.set_rng_state(state['cuda'], device)

@contextlib.contextmanager
def _random_state_kept(device):
    """Whatever the block draws, the random states afterwards are those before
    it: evaluating metrics never changes the course of training."""
    state = _rng_state(device)
    try:
        yield
    finally:
        _set_rng_state(state, device)

#----------------------------------------------------------------------------
# Image grids.

CPU_GRID_MAX = 8 # Columns and rows at most of a default grid on the CPU: 1024 images of a 256-px CREPS take half an hour there.

def grid_shape(resolution, grid_size, device_type='cuda'):
    """(columns, rows) of the snapshot grids: `grid_size` if given, else about a 4K screen of images, as
    StyleGAN3, at most CPU_GRID_MAX x CPU_GRID_MAX on the CPU."""
    if grid_size is not None:
        return tuple(grid_size)
    limit = CPU_GRID_MAX if device_type == 'cpu' else 32
    return int(np.clip(7680 // resolution, 7, limit)), int(np.clip(4320 // resolution, 4, limit))

def grid_items(training_set, grid_size, random_seed):
    """Dataset indices for a (columns, rows) grid: random images, or, with
    labels, each row showing one label (cycling through the labels)."""
    gw, gh = grid_size
    rnd = np.random.RandomState(random_seed)
    order = rnd.permutation(len(training_set))
    if not training_set.has_labels:
        return np.resize(order, gw * gh)
    by_label = dict()
    for idx in order:
        by_label.setdefault(tuple(training_set.get_label(idx).tolist()), []).append(idx)
    labels = sorted(by_label)
    rows = [np.resize(by_label[labels[row % len(labels)]], gw) for row in range(gh)]
    return np.concatenate(rows)

def save_image_grid(images, path, drange, grid_size):
    """Write images [N, C, H, W] (values in `drange`) as one PNG of grid_size = (columns, rows), atomically."""
    lo, hi = drange
    images = np.asarray(images, dtype=np.float32)
    images = np.rint((images - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _, channels, height, width = images.shape
    images = images.reshape(gh, gw, channels, height, width).transpose(0, 3, 1, 4, 2).reshape(gh * height, gw * width, channels)
    with dnnlib.util.atomic_write(path) as f:
        PIL.Image.fromarray(images[:, :, 0] if channels == 1 else images, 'L' if channels == 1 else 'RGB').save(f, format='PNG')

#----------------------------------------------------------------------------

def snapshot_label(cur_nimg, kimg_per_tick, total_kimg, stopped=False):
    """The kimg in the file names of a run's snapshots, by one rule for the whole run: six digits, as
    NVIDIA's, when the tick and the duration are whole kimg (then no two snapshots share a label), else
    with three decimals throughout (--kimg=3.4 would otherwise end on a second 000003). A snapshot
    `stopped` by request within a tick has the decimals unless it falls on a whole kimg (it would
    overwrite the tick's before it)."""
    if float(kimg_per_tick).is_integer() and float(total_kimg).is_integer() and not (stopped and cur_nimg % 1000):
        return f'{cur_nimg // 1000:06d}'
    return f'{cur_nimg / 1000:010.3f}'

class _Phase:
    def __init__(self, name, module, opt, interval):
        self.name, self.module, self.opt, self.interval = name, module, opt, interval

def _make_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval):
    """Optimizers and phases. With lazy regularization every `reg_interval`
    steps, learning rate and Adam betas are rescaled so that the main loss
    keeps its effective step size (StyleGAN2, appendix B)."""
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval), ('D', D, D_opt_kwargs, D_reg_interval)]:
        mb_ratio = 1 if reg_interval is None else reg_interval / (reg_interval + 1)
        opt_kwargs = dnnlib.EasyDict(opt_kwargs, lr=opt_kwargs['lr'] * mb_ratio, betas=[float(beta) ** mb_ratio for beta in opt_kwargs['betas']])
        opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs)
        if reg_interval is None:
            phases.append(_Phase(name + 'both', module, opt, 1))
        else:
            phases.append(_Phase(name + 'main', module, opt, 1))
            phases.append(_Phase(name + 'reg', module, opt, reg_interval))
    return phases

def _step(phase, num_gpus):
    """Average the gradients over processes, zero the non-finite ones
    (counted in Progress/nonfinite_grads) and step the optimizer. Returns a
    0-dim bool tensor, on the device: had the step any non-finite gradient?"""
    params = [param for param in phase.module.parameters() if param.grad is not None]
    if not params:
        return None
    flat = torch.cat([param.grad.flatten() for param in params])
    if num_gpus > 1:
        torch.distributed.all_reduce(flat)
        flat /= num_gpus
    finite = torch.isfinite(flat)
    training_stats.report(f'Progress/nonfinite_grads_{phase.name[0]}', (~finite).sum())
    flat = torch.where(finite, flat, torch.zeros_like(flat))
    for param, grad in zip(params, flat.split([param.numel() for param in params])):
        param.grad = grad.reshape(param.shape)
    phase.opt.step()
    return ~finite.all()

@torch.no_grad()
def _update_ema(G_ema, G, cur_nimg, batch_size, ema_kimg, ema_rampup):
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        networks_creps.track_average(p_ema, p.detach(), ema_beta) # Stays finite if G does not.
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)

_NETWORK_NAMES = dict(G='generator', D='discriminator')

def _nonfinite_report(steps, steps_per_tick, max_nonfinite_steps):
    """The tick line's field and a warning line for the steps of this tick that had non-finite
    gradients ({network letter: count}); (None, None) if none had."""
    if not any(steps.values()):
        return None, None
    field = 'nonfinite ' + ' '.join(f'{key}:{count}' for key, count in steps.items())
    warning = ('Warning: non-finite gradients (zeroed: the step left those weights unchanged) in '
        + ', '.join(f'{count} of {steps_per_tick[key]} {_NETWORK_NAMES[key]} steps' for key, count in steps.items() if count)
        + ' of this tick' + (f'; the run stops after {max_nonfinite_steps} in a row' if max_nonfinite_steps is not None else ''))
    return field, warning

_PHASE_NAMES = dict(main='loss', reg='regularization', both='loss')

def _check_diverged(runs, max_nonfinite_steps, options):
    """TrainingDiverged if a phase's run of steps with non-finite gradients ({phase name: count}) reached the limit."""
    for name, run in runs.items():
        if max_nonfinite_steps is not None and run >= max_nonfinite_steps:
            key = name[0]
            lr = (options.get(f'{key}_opt_kwargs') or {}).get('lr')
            raise TrainingDiverged(f'the gradients of the {_NETWORK_NAMES[key]} {_PHASE_NAMES[name[1:]]} were non-finite (NaN or '
                f'infinite) in each of its last {run} steps, which therefore changed nothing: training diverged; lower the learning '
                f'rate (--{key.lower()}lr' + (f', now {lr:g}' if isinstance(lr, (int, float)) else '') + ') or raise --gamma, '
                'and continue from the last good snapshot')

def _generate_grid(G_ema, grid_z, grid_c, batch_gpu):
    return torch.cat([G_ema(z, c, noise_mode='const').cpu() for z, c in zip(grid_z.split(batch_gpu), grid_c.split(batch_gpu))])

#----------------------------------------------------------------------------

PROGRESS_INTERVAL = 60 # Seconds: within a long tick, a progress line at most this often (ticks take minutes on a CPU).

def _ignore_interrupts(_worker_id):
    """DataLoader workers leave Ctrl-C to the training process, which stops cleanly (they would quit at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

def _agreed(flag, num_gpus, device):
    """`flag` of any process, in every process (all-reduced); the flag itself in one process."""
    if num_gpus == 1:
        return bool(flag)
    flag = torch.tensor(float(flag), device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())

def _within_tick_progress(cur_nimg, tick_start_nimg, tick_start_time, kimg_per_tick, total_nimg):
    """A line on the way to the next tick: where it is, the rate so far and when the tick ends."""
    elapsed = time.time() - tick_start_time
    tick_end_nimg = min(tick_start_nimg + kimg_per_tick * 1000, total_nimg)
    rate = (cur_nimg - tick_start_nimg) / max(elapsed, 1e-6) # Images per second.
    eta = (tick_end_nimg - cur_nimg) / max(rate, 1e-6)
    return (f'  ... kimg {cur_nimg / 1000:<8.1f} sec/kimg {1000 / max(rate, 1e-6):<7.2f} '
        f'next tick at kimg {tick_end_nimg / 1000:g} in {dnnlib.util.format_time(eta)}')

def training_loop(
    run_dir                 = '.',      # Output folder.
    training_set_kwargs     = {},       # Options for the training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for the generator.
    D_kwargs                = {},       # Options for the discriminator.
    G_opt_kwargs            = {},       # Options for the generator's optimizer.
    D_opt_kwargs            = {},       # Options for the discriminator's optimizer.
    augment_kwargs          = None,     # Options for the augmentation pipeline, None = no augmentation.
    loss_kwargs             = {},       # Options for the loss.
    metrics                 = [],       # Metrics (metric_main names) to evaluate at each network snapshot.
    random_seed             = 0,        # Global random seed.
    num_gpus                = 1,        # Number of processes taking part.
    rank                    = 0,        # Rank of this process in [0, num_gpus).
    device                  = 'cpu',    # Device of this process.
    batch_size              = 4,        # Total batch size of one training step, over all processes.
    batch_gpu               = 4,        # Samples per process and forward pass (gradient accumulation makes up the rest).
    ema_kimg                = 10,       # Half-life of the generator's moving average, in thousands of images.
    ema_rampup              = 0.05,     # The half-life ramps up as cur_nimg * ema_rampup, None = no ramp-up.
    G_reg_interval          = None,     # Generator regularization every this many steps, None = every step, with the main loss.
    D_reg_interval          = 16,       # Discriminator regularization every this many steps, None = every step.
    augment_p               = 0,        # Initial (or, without ADA, fixed) augmentation probability.
    ada_target              = None,     # ADA's target for E[sign(D(real))], None = p stays fixed.
    ada_interval            = 4,        # Adjust p every this many steps.
    ada_kimg                = 500,      # p can go from 0 to 1 in this many thousand images.
    total_kimg              = 25000,    # Train for this many thousand images.
    kimg_per_tick           = 4,        # Progress report interval, in thousands of images.
    image_snapshot_ticks    = 50,       # Image grid every this many ticks, None = never.
    network_snapshot_ticks  = 50,       # Network pickle and training state every this many ticks, None = only at the end.
    grid_size               = None,     # (columns, rows) of the image grids, None = automatic.
    resume_pkl              = None,     # Network pickle to start from (weights only), None = random init.
    resume_state            = None,     # Training-state file to continue exactly, None = start afresh.
    trust_pickle            = False,    # Execute the code embedded in resume_pkl, as NVIDIA's loader does.
    cudnn_benchmark         = True,     # Let cuDNN pick its fastest algorithms (non-deterministic on CUDA).
    max_nonfinite_steps     = 100,      # Stop (TrainingDiverged) when a phase's gradients are non-finite in this many of its steps in a row, None = never.
    abort_fn                = None,     # Returning True stops training with a snapshot and a training state (no metrics): polled
                                        # after every step in one process (the tick ends there), at tick ends in several (agreed).
    progress_fn             = None,     # Called once per tick with (cur_nimg, total_nimg).
):
    options = full_options(**locals())
    device = torch.device(device)
    start_time = time.time()
    is_main = (rank == 0)

    # Per-process randomness; latents come from a generator shared by all processes.
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    latent_rng = torch.Generator().manual_seed(random_seed)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = False # TF32 matmuls would change the numbers of fp32 layers.
    torch.backends.cudnn.allow_tf32 = False

    # Training set.
    if is_main:
        print('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    sampler_kwargs = dict(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    sampler = misc.InfiniteSampler(**sampler_kwargs)
    consumed = misc.InfiniteSampler(**sampler_kwargs) # Shadow of `sampler`, advanced as batches are consumed, not prefetched.
    if is_main:
        print(f'Number of images: {len(training_set)}, image shape: {training_set.image_shape}, label shape: {training_set.label_shape}')
        print()

    # Networks.
    if is_main:
        print('Constructing networks...')
    class_names = training_set.class_names # Read (and checked) once, before any training.
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))

    if resume_pkl is not None and resume_state is None and is_main: # The other processes get the weights by broadcast below.
        print(f'Resuming from "{resume_pkl}"')
        with dnnlib.util.open_url(resume_pkl) as f:
            resume_data = legacy.load_network_pkl(f, source=resume_pkl, trust=trust_pickle)
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            if resume_data.get(name) is not None: # A pickle without D fine-tunes G against a fresh D.
                misc.copy_params_and_buffers(resume_data[name], module, require_all=False)

    if is_main:
        z = torch.empty([batch_gpu, G.z_dim], device=device)
        c = torch.empty([batch_gpu, G.c_dim], device=device)
        img = misc.print_module_summary(G, [z, c])
        misc.print_module_summary(D, [img, c])

    # Loss, optimizers and phases.
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)
    phases = _make_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)
    ada_stats = training_stats.Collector(regex='Loss/signs/real') if augment_pipe is not None and ada_target is not None else None

    # Counters; an exact continuation restores them with everything else.
    cur_nimg, cur_tick, batch_idx, ada_batches = 0, 0, 0, 0
    if resume_state is not None:
        state = load_training_state(resume_state)
        check_resumable(json.loads(state['options']), options)
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)] + ([('augment_pipe', augment_pipe)] if augment_pipe is not None else []):
            module.load_state_dict(state['networks'][name])
        for phase_opt, opt_state in zip(dict.fromkeys(phase.opt for phase in phases), state['optimizers']):
            phase_opt.load_state_dict(opt_state)
        loss.load_state_dict(state['loss'])
        cur_nimg, cur_tick, batch_idx, ada_batches = (state['progress'][key] for key in ('cur_nimg', 'cur_tick', 'batch_idx', 'ada_batches'))
        rank_state = state['ranks'][rank]
        _set_rng_state(rank_state['rng'], device)
        latent_rng.set_state(rank_state['latent_rng'])
        sampler.load_state_dict(rank_state['sampler'])
        consumed.load_state_dict(rank_state['sampler'])
        if is_main:
            print(f'Continuing from "{resume_state}" at {cur_nimg / 1000:g} kimg')
        del state

    # All processes start from rank 0's weights.
    for module in [G, D, G_ema, augment_pipe]:
        if module is not None:
            distributed.broadcast_module(module)

    # The DataLoader draws its worker seeds from its own generator, so that
    # starting it leaves the global random state untouched (exact resume).
    loader_rng = torch.Generator().manual_seed(random_seed * num_gpus + rank)
    data_iter = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=batch_size // num_gpus,
        generator=loader_rng, worker_init_fn=_ignore_interrupts, **data_loader_kwargs))
    consumed_iter = iter(consumed)

    # Snapshot grids: fixed reals, labels and latents.
    grid_z = grid_c = None
    if is_main:
        grid = grid_shape(training_set.resolution, grid_size, device.type)
        items = grid_items(training_set, grid, random_seed)
        images = np.stack([training_set[int(idx)][0] for idx in items])
        save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid)
        grid_z = torch.randn([len(items), G.z_dim], generator=torch.Generator().manual_seed(random_seed)).to(device)
        grid_c = torch.from_numpy(np.stack([training_set.get_label(int(idx)) for idx in items])).to(device)
        if resume_state is None:
            with torch.no_grad():
                images = _generate_grid(G_ema, grid_z, grid_c, batch_gpu)
            save_image_grid(images.numpy(), os.path.join(run_dir, 'fakes_init.png'), drange=[-1, 1], grid_size=grid)

    # Logs.
    stats_collector = training_stats.Collector(regex='.*')
    stats_jsonl = stats_tfevents = None
    if is_main:
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError as err:
            print(f'Skipping TensorBoard export: {err}')

    if is_main:
        print(f'Training for {total_kimg:g} kimg...')
        print()
    total_nimg = int(total_kimg * 1000)
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    if progress_fn is not None:
        progress_fn(cur_nimg, total_nimg)
    num_rounds = batch_size // (batch_gpu * num_gpus)
    nonfinite_steps = {key: torch.zeros([], dtype=torch.int64, device=device) for key in _NETWORK_NAMES} # In this tick.
    nonfinite_runs = {phase.name: torch.zeros([], dtype=torch.int64, device=device) for phase in phases} # In a row, now.
    steps_per_tick = {key: 0 for key in _NETWORK_NAMES}

    last_progress_time = tick_start_time
    while True:
        # Fetch this step's reals, latents and labels.
        real_img, real_c = next(data_iter)
        for _ in range(batch_size // num_gpus):
            next(consumed_iter)
        real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
        real_c = real_c.to(device).split(batch_gpu)
        all_z = torch.randn([len(phases), batch_size, G.z_dim], generator=latent_rng).to(device)
        all_z = all_z[:, rank * (batch_size // num_gpus) : (rank + 1) * (batch_size // num_gpus)]
        all_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(len(phases) * batch_size // num_gpus)]
        all_c = torch.from_numpy(np.stack(all_c)).to(device).reshape(len(phases), batch_size // num_gpus, training_set.label_dim)

        # Run the due phases.
        for phase, phase_z, phase_c in zip(phases, all_z, all_c):
            if batch_idx % phase.interval != 0:
                continue
            phase.module.requires_grad_(True)
            phase.opt.zero_grad(set_to_none=True)
            for round_img, round_c, round_z, round_gen_c in zip(real_img, real_c, phase_z.split(batch_gpu), phase_c.split(batch_gpu)):
                # Gain: the lazy interval, over the rounds, so that gradients are means over the global batch.
                loss.accumulate_gradients(phase=phase.name, real_img=round_img, real_c=round_c, gen_z=round_z, gen_c=round_gen_c,
                    gain=phase.interval / num_rounds, cur_nimg=cur_nimg)
            phase.module.requires_grad_(False)
            nonfinite = _step(phase, num_gpus)
            if nonfinite is not None: # Counted on the device: no synchronization until the tick.
                nonfinite_steps[phase.name[0]] += nonfinite
                steps_per_tick[phase.name[0]] += 1
                nonfinite_runs[phase.name] = torch.where(nonfinite, nonfinite_runs[phase.name] + 1, 0)

        _update_ema(G_ema, G, cur_nimg, batch_size, ema_kimg, ema_rampup)
        cur_nimg += batch_size
        batch_idx += 1
        ada_batches += 1

        done = (cur_nimg >= total_nimg)
        # In one process a stop request ends the tick at once (a CPU tick can last half an hour);
        # several processes agree on it at the tick's end, without a synchronization per step.
        stop_now = abort_fn is not None and num_gpus == 1 and abort_fn()
        tick_end = done or stop_now or cur_tick == 0 or cur_nimg >= tick_start_nimg + kimg_per_tick * 1000

        # Adapt the augmentation probability; also at each tick end, so that a
        # checkpoint never holds a partly gathered interval.
        if ada_stats is not None and (batch_idx % ada_interval == 0 or tick_end):
            ada_stats.update()
            new_p = augment.adjust_p(float(augment_pipe.p), sign_mean=ada_stats['Loss/signs/real'], target=ada_target,
                batch_size_images=batch_size, interval_batches=ada_batches, ada_kimg=ada_kimg)
            augment_pipe.p.copy_(torch.as_tensor(new_p))
            ada_batches = 0
        if not tick_end:
            if is_main and time.time() - last_progress_time >= PROGRESS_INTERVAL:
                print(_within_tick_progress(cur_nimg, tick_start_nimg, tick_start_time, kimg_per_tick, total_nimg))
                last_progress_time = time.time()
            continue

        # Tick: report progress.
        tick_end_time = time.time()
        fields = [
            f'tick {training_stats.report0("Progress/tick", cur_tick):<5d}',
            f'kimg {training_stats.report0("Progress/kimg", cur_nimg / 1e3):<8.1f}',
            f'time {dnnlib.util.format_time(training_stats.report0("Timing/total_sec", tick_end_time - start_time)):<12s}',
            f'sec/tick {training_stats.report0("Timing/sec_per_tick", tick_end_time - tick_start_time):<7.1f}',
            f'sec/kimg {training_stats.report0("Timing/sec_per_kimg", (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3):<7.2f}',
            f'maintenance {training_stats.report0("Timing/maintenance_sec", maintenance_time):<6.1f}',
            f'cpumem {training_stats.report0("Resources/cpu_mem_gb", psutil.Process(os.getpid()).memory_info().rss / 2**30):<6.2f}',
        ]
        if device.type == 'cuda':
            fields.append(f'gpumem {training_stats.report0("Resources/peak_gpu_mem_gb", torch.cuda.max_memory_allocated(device) / 2**30):<6.2f}')
            torch.cuda.reset_peak_memory_stats(device)
        fields.append(f'augment {training_stats.report0("Progress/augment", float(augment_pipe.p) if augment_pipe is not None else 0):.3f}')
        training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / 3600)
        training_stats.report0('Timing/total_days', (tick_end_time - start_time) / 86400)
        field, warning = _nonfinite_report({key: int(count) for key, count in nonfinite_steps.items()}, steps_per_tick, max_nonfinite_steps)
        if field is not None:
            fields.append(field)
        if is_main:
            print(' '.join(fields), flush=True)
            if warning is not None:
                print(warning, flush=True)
        _check_diverged({key: int(run) for key, run in nonfinite_runs.items()}, max_nonfinite_steps, options)
        for key in _NETWORK_NAMES:
            nonfinite_steps[key].zero_()
            steps_per_tick[key] = 0

        # Check for abort.
        aborted = not done and abort_fn is not None and _agreed(stop_now or abort_fn(), num_gpus, device)
        if aborted:
            done = True
            if is_main:
                print()
                print('Aborting: writing a snapshot and a training state to continue from (train.py --resume=<run folder>)...')

        # Snapshots.
        label = snapshot_label(cur_nimg, kimg_per_tick, total_kimg, stopped=aborted)
        if is_main and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
            with torch.no_grad():
                images = _generate_grid(G_ema, grid_z, grid_c, batch_gpu)
            save_image_grid(images.numpy(), os.path.join(run_dir, f'fakes{label}.png'), drange=[-1, 1], grid_size=grid)

        stats_metrics = dict()
        if done or (network_snapshot_ticks is not None and cur_tick % network_snapshot_ticks == 0):
            snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{label}.pkl')
            for module in [G, D, G_ema, augment_pipe]:
                if module is not None:
                    misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
            rank_state = dict(rng=_rng_state(device), latent_rng=latent_rng.get_state(), sampler=consumed.state_dict())
            all_rank_states = distributed.all_gather_objects(rank_state)
            if is_main:
                snapshot = dict(training_set_kwargs=dict(training_set_kwargs))
                if class_names is not None: # For --class by name in gen_images.py and gen_video.py.
                    snapshot['class_names'] = class_names
                for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
                    snapshot[name] = None if module is None else copy.deepcopy(module).cpu().eval().requires_grad_(False)
                snapshot[legacy.CHECKSUMS_KEY] = legacy.tensor_checksums(snapshot) # Damaged files are refused when loaded.
                with dnnlib.util.atomic_write(snapshot_pkl) as f:
                    pickle.dump(snapshot, f)
                del snapshot
                state = dict(version=STATE_VERSION, options=json.dumps(options),
                    networks={name: module.state_dict() for name, module in
                        [('G', G), ('D', D), ('G_ema', G_ema)] + ([('augment_pipe', augment_pipe)] if augment_pipe is not None else [])},
                    optimizers=[opt.state_dict() for opt in dict.fromkeys(phase.opt for phase in phases)],
                    loss=loss.state_dict(),
                    progress=dict(cur_nimg=cur_nimg, cur_tick=cur_tick + 1, batch_idx=batch_idx, ada_batches=ada_batches),
                    ranks=all_rank_states)
                with dnnlib.util.atomic_write(os.path.join(run_dir, f'training-state-{label}.pt')) as f:
                    torch.save(state, f)
                del state

            # Metrics run on every process (they share the work); not when stopped by request (calc_metrics can).
            metrics = [] if aborted else metrics
            if metrics and is_main:
                print('Evaluating metrics...')
            with _random_state_kept(device):
                feature_cache = dict() # This snapshot's metrics share their features.
                for metric in metrics:
                    result = metric_main.calc_metric(metric=metric, G=G_ema, dataset_kwargs=training_set_kwargs,
                        num_gpus=num_gpus, rank=rank, device=device, feature_cache=feature_cache)
                    if is_main:
                        metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                    stats_metrics.update(result.results)

        # Statistics.
        stats_collector.update()
        if is_main:
            stats = stats_collector.as_dict()
            timestamp = time.time()
            try:
                stats_jsonl.write(json.dumps(dict(stats, timestamp=timestamp)) + '\n')
                stats_jsonl.flush()
            except OSError as err:
                raise dnnlib.util.OutputError.writing(stats_jsonl.name, err) from err
            if stats_tfevents is not None:
                global_step = int(cur_nimg / 1e3)
                walltime = timestamp - start_time
                for name, value in stats.items():
                    stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
                for name, value in stats_metrics.items():
                    stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
                stats_tfevents.flush()
        if progress_fn is not None:
            progress_fn(cur_nimg, total_nimg)

        # Next tick.
        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = last_progress_time = time.time()
        maintenance_time = tick_start_time - tick_end_time
        if done:
            break

    if is_main:
        stats_jsonl.close()
        if stats_tfevents is not None:
            stats_tfevents.close()
        print()
        print('Exiting...')

#----------------------------------------------------------------------------
