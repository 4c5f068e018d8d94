"""Helpers for networks and the training loop: cached constants, shape
assertions that survive tracing, the infinite data sampler, copying and
checking parameters, and a printed summary of a module's layers.

Network source embedded in NVIDIA's published pickles calls some of these
(`constant`, `assert_shape`, `profiled_function`, `suppress_tracer_warnings`)
by name, so their names and signatures are fixed.
"""

import contextlib
import functools
import re
import warnings

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------
# Constant tensors, built once per value, dtype and device: a forward pass that
# needs a small fixed tensor on the GPU does not copy it from the host every time.

_constant_cache = dict()

def constant(value, shape=None, dtype=None, device=None, memory_format=None):
    """A tensor holding `value`, broadcast to `shape` if given. The result is
    shared between callers: never modify it in place."""
    value = np.asarray(value)
    shape = None if shape is None else tuple(shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device('cpu' if device is None else device)
    memory_format = torch.contiguous_format if memory_format is None else memory_format

    key = (value.shape, value.dtype.str, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key)
    if tensor is None:
        tensor = torch.tensor(value, dtype=dtype, device=device)
        if shape is not None:
            tensor = tensor.expand(shape)
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor

#----------------------------------------------------------------------------

@contextlib.contextmanager
def suppress_tracer_warnings():
    """Silence torch.jit.TracerWarning inside the block (the known, harmless
    warnings of shape checks being recorded as constants). Not written with
    warnings.catch_warnings(), which restores the whole filter list on exit
    and so drops filters that other code added meanwhile (bpo-29672)."""
    flt = ('ignore', None, torch.jit.TracerWarning, None, 0)
    warnings.filters.insert(0, flt)
    try:
        yield
    finally:
        warnings.filters.remove(flt)

#----------------------------------------------------------------------------

def assert_shape(tensor, ref_shape):
    """Raise AssertionError unless `tensor.shape` matches `ref_shape`, where
    None accepts any size. Under torch.jit.trace() sizes may be tensors; the
    check is then recorded in the traced graph instead of run once."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)} '
            f'(shape {list(tensor.shape)}, expected {list(ref_shape)})')
    for dim, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(size, torch.Tensor) or isinstance(ref_size, torch.Tensor):
            # Traced sizes: formatting them into the message would read their values.
            with suppress_tracer_warnings(): # as_tensor() of a size is traced as a constant, and says so.
                torch._assert(torch.equal(torch.as_tensor(size), torch.as_tensor(ref_size)), f'Wrong size for dimension {dim}')
        elif size != ref_size:
            raise AssertionError(f'Wrong size for dimension {dim}: got {size}, expected {ref_size} '
                f'(shape {list(tensor.shape)}, expected {list(ref_shape)})')

#----------------------------------------------------------------------------

def profiled_function(fn):
    """Decorator: each call shows up in the PyTorch profiler under the function's name."""
    @functools.wraps(fn)
    def profiled(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return profiled

#----------------------------------------------------------------------------

class _SamplerState:
    """Iteration state of InfiniteSampler, owning copies of `order` and of the RNG.
    A slotted class rather than an EasyDict: it is read several times per item."""
    __slots__ = ('position', 'order', 'rng')

    def __init__(self, position, order, rng_state):
        self.position = position
        self.order = np.array(order, dtype=np.int64)
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = rng_state

class InfiniteSampler(torch.utils.data.Sampler):
    """Sampler for torch.utils.data.DataLoader that loops over the dataset
    forever, as StyleGAN3's does.

    The items are visited in a random permutation of the dataset. After an
    item is yielded, it is swapped with one of the `window_size * len(dataset)`
    positions just visited, so the order keeps changing from one pass to the
    next without any point where the whole dataset is reshuffled. Unlike
    StyleGAN3's sampler the swap never wraps around the end of the order: every
    run of len(dataset) consecutive positions, starting at a multiple of
    len(dataset), visits each item exactly once. Position p goes to replica
    p % num_replicas.

    `state_dict()` captures how far the latest iterator has got; after
    `load_state_dict()`, the next iterator continues from there with the same
    sequence. A DataLoader draws indices ahead of the training loop (its
    prefetch depth), so the state is that of the sampler, not of the batches
    consumed so far.
    """

    def __init__(self,
        dataset,                # Anything with len(); the items are range(len(dataset)).
        rank            = 0,    # Index of this replica (process).
        num_replicas    = 1,    # Number of replicas sharing the sequence.
        shuffle         = True, # False = visit the items in order, over and over.
        seed            = 0,    # Seed of the permutation and the swaps.
        window_size     = 0.5,  # Swap window as a fraction of the dataset; a window below 2 items disables the swaps.
    ):
        if len(dataset) == 0:
            raise ValueError('InfiniteSampler needs a non-empty dataset')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} is not in [0, num_replicas={num_replicas})')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size must be in [0, 1], got {window_size}')
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self._state = self._initial_state() # Where the next iterator starts, then where the latest one is.

    def _initial_state(self):
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(self.dataset)) if self.shuffle else np.arange(len(self.dataset))
        return _SamplerState(0, order, rng.bit_generator.state)

    def __iter__(self):
        # The live state is shared with state_dict(), and updated before each
        # yield, so that a snapshot taken between two items resumes after the first.
        state = self._state = _SamplerState(self._state.position, self._state.order, self._state.rng.bit_generator.state)
        size = len(state.order)
        window = int(np.rint(size * self.window_size)) if self.shuffle else 0
        order, integers = state.order, state.rng.integers
        while True:
            i = state.position % size
            item = int(order[i])
            is_mine = state.position % self.num_replicas == self.rank
            if window >= 2:
                j = i - int(integers(min(window, i + 1)))
                order[i], order[j] = order[j], order[i]
            state.position += 1
            if is_mine:
                yield item

    def state_dict(self):
        """Position reached, current order and RNG state, as plain Python
        values and tensors (so torch.load(weights_only=True) accepts them)."""
        return dict(
            position    = self._state.position, # Positions visited, by all replicas together.
            order       = torch.as_tensor(self._state.order.copy(), dtype=torch.int64),
            rng         = self._state.rng.bit_generator.state, # PCG64 state: a dict of ints and strings.
        )

    def load_state_dict(self, state_dict):
        """Make the next iterator continue where the one of `state_dict` was."""
        order = np.asarray(state_dict['order'], dtype=np.int64)
        if len(order) != len(self.dataset):
            raise ValueError(f'Sampler state is for {len(order)} items, the dataset has {len(self.dataset)}')
        self._state = _SamplerState(int(state_dict['position']), order, state_dict['rng'])

#----------------------------------------------------------------------------
# Parameters and buffers.

def params_and_buffers(module):
    """All parameters, then all buffers, of `module` and its submodules."""
    return list(module.parameters()) + list(module.buffers())

def named_params_and_buffers(module):
    """(name, tensor) of all parameters, then all buffers."""
    return list(module.named_parameters()) + list(module.named_buffers())

@torch.no_grad()
def copy_params_and_buffers(src_module, dst_module, require_all=False):
    """Copy the values of same-named parameters and buffers from `src_module`
    into the existing tensors of `dst_module` (devices and dtypes may differ).
    Tensors missing from `src_module` keep their values, unless `require_all`."""
    src_tensors = dict(named_params_and_buffers(src_module))
    missing = []
    for name, tensor in named_params_and_buffers(dst_module):
        src = src_tensors.get(name)
        if src is None:
            missing.append(name)
            continue
        if src.shape != tensor.shape:
            raise ValueError(f'copy_params_and_buffers: {name} has shape {list(src.shape)} in the source '
                f'but {list(tensor.shape)} in the destination')
        tensor.copy_(src)
    if require_all and missing:
        raise ValueError(f'copy_params_and_buffers: {type(src_module).__name__} has no tensor named '
            + ', '.join(missing))

#----------------------------------------------------------------------------
# DistributedDataParallel.

@contextlib.contextmanager
def ddp_sync(module, sync):
    """With sync=False, skip the gradient all-reduce of a DDP module in the
    block (gradient accumulation); a no-op for any other module."""
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield

def check_ddp_consistency(module, ignore_regex=None):
    """Raise AssertionError naming the parameters and buffers that differ from
    their values on rank 0. `ignore_regex` is matched against
    '<ClassName>.<tensor name>'. Does nothing in a single process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    differing = []
    for name, tensor in named_params_and_buffers(module):
        fullname = f'{type(module).__name__}.{name}'
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = torch.nan_to_num(tensor) # NaN != NaN would fail even when both sides agree.
        reference = tensor.clone()
        torch.distributed.broadcast(reference, src=0)
        if not torch.equal(tensor, reference):
            differing.append(fullname)
    # Raised only after the loop: every rank must take part in every broadcast,
    # or rank 0 would wait forever for a rank that stopped early.
    if differing:
        raise AssertionError(f'Rank {torch.distributed.get_rank()} differs from rank 0 in {", ".join(differing)}')

#----------------------------------------------------------------------------
# Module summary.

def _flatten_tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for x in obj for t in _flatten_tensors(x)]
    return []

def _record_calls(module, inputs, max_nesting):
    """Run module(*inputs); return its outputs and, in completion order, an entry
    (submodule, output tensors) for each call at most `max_nesting` levels deep."""
    entries = []
    depth = [0]
    def pre_hook(_mod, _inputs):
        depth[0] += 1
    def post_hook(mod, _inputs, outputs):
        depth[0] -= 1
        if depth[0] <= max_nesting:
            entries.append(dnnlib.EasyDict(mod=mod, outputs=_flatten_tensors(outputs)))
    handles = [m.register_forward_pre_hook(pre_hook) for m in module.modules()]
    handles += [m.register_forward_hook(post_hook) for m in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, entries

def print_module_summary(module, inputs, max_nesting=3, skip_redundant=True):
    """Call module(*inputs) and print a table of its submodules with their
    parameter and buffer counts and output shapes and dtypes; returns the outputs.

    Each tensor is counted once, for the first call that owns it: inner
    modules finish first, so a parent row shows only its own direct tensors
    (and those of submodules nested deeper than `max_nesting`), and the totals
    are the true totals of `module`. With `skip_redundant`, rows that add no
    tensor of their own (a wrapper returning its child's output) are left out.
    """
    if isinstance(module, torch.jit.ScriptModule):
        raise TypeError('print_module_summary() needs an eager module, hooks do not run in a ScriptModule')
    outputs, entries = _record_calls(module, inputs, max_nesting)

    seen = set()
    for e in entries:
        e.params = [t for t in e.mod.parameters() if id(t) not in seen]
        e.buffers = [t for t in e.mod.buffers() if id(t) not in seen]
        e.new_outputs = [t for t in e.outputs if id(t) not in seen]
        seen |= {id(t) for t in e.params + e.buffers + e.new_outputs}
    if skip_redundant:
        entries = [e for e in entries if e.params or e.buffers or e.new_outputs]

    names = {mod: name for name, mod in module.named_modules()}
    rows = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype']]
    rows.append(['---'] * len(rows[0]))
    param_total = buffer_total = 0
    for e in entries:
        name = '<top-level>' if e.mod is module else names[e.mod]
        num_params = sum(t.numel() for t in e.params)
        num_buffers = sum(t.numel() for t in e.buffers)
        param_total += num_params
        buffer_total += num_buffers
        shapes = [str(list(t.shape)) for t in e.outputs] or ['-']
        dtypes = [str(t.dtype).removeprefix('torch.') for t in e.outputs] or ['-']
        for idx, (shape, dtype) in enumerate(zip(shapes, dtypes)):
            suffix = f':{idx}' if len(shapes) > 1 else ''
            counts = [str(num_params or '-'), str(num_buffers or '-')] if idx == 0 else ['-', '-']
            rows.append([name + suffix, *counts, shape, dtype])
    rows.append(['---'] * len(rows[0]))
    rows.append(['Total', str(param_total), str(buffer_total), '-', '-'])

    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    return outputs

#----------------------------------------------------------------------------
