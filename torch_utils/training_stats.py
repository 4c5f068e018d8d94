"""Scalar statistics reported from anywhere in training and averaged across
devices and processes.

Code anywhere (the loss, a network, the loop) calls `report(name, values)`,
which only adds to counters on the values' own device: no host transfer, no
synchronization. A `Collector` in the training loop periodically calls
`update()`, which sums the counters of all devices and, once
`init_multiprocessing()` has been called, of all processes, and then answers
`num`, `mean` and `std` of everything reported between its last two updates.

In multi-process runs every process must report each name at least once, in
the same order as the others (an empty list `report(name, [])` will do),
since the names are reduced together as one tensor.
"""

import re

import numpy as np
import torch

import dnnlib
from . import misc

#----------------------------------------------------------------------------

_num_moments   = 3             # [count, sum, sum of squares]
_counter_dtype = torch.float64 # Counters never lose small contributions to large sums.
_rank          = 0             # Rank of this process.
_sync_device   = None          # Device for the inter-process all_reduce; None = single process.
_sync_called   = False         # Has any Collector.update() synchronized yet?
_counters      = dict()        # {name: {device: moments}}: reported since the last sync.
_cumulative    = dict()        # {name: moments on the CPU}: everything synced so far, all processes.

#----------------------------------------------------------------------------

def init_multiprocessing(rank, sync_device):
    """Collect statistics across processes: call after
    torch.distributed.init_process_group() and before the first
    Collector.update(). `sync_device` is the device the all_reduce runs on
    (the process's CUDA device under NCCL, the CPU under gloo); None keeps
    statistics local to this process."""
    global _rank, _sync_device
    if _sync_called:
        raise RuntimeError('training_stats.init_multiprocessing() must be called before the first Collector.update()')
    _rank = rank
    _sync_device = sync_device

#----------------------------------------------------------------------------

@misc.profiled_function
def report(name, value):
    """Add the scalars in `value` (a tensor, array, list or Python number, of
    any shape, possibly empty) to the statistic `name`. Cheap enough to call
    anywhere; returns `value`, so it can wrap an expression."""
    counters = _counters.setdefault(name, dict())
    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().flatten().to(_counter_dtype)
    # The count comes from the host-side numel, so nothing waits for the device.
    moments = torch.stack([elems.new_full([], elems.numel()), elems.sum(), elems.square().sum()])
    if elems.device in counters:
        counters[elems.device].add_(moments)
    else:
        counters[elems.device] = moments
    return value

def report0(name, value):
    """As report(), but only the values of rank 0 count; the other processes
    report the name with no values. Returns `value`."""
    report(name, value if _rank == 0 else [])
    return value

#----------------------------------------------------------------------------

def _sync(names):
    """Move the counters of `names` from every device (and every process)
    into the cumulative totals; returns [(name, cumulative moments), ...]."""
    global _sync_called
    if not names:
        return []
    _sync_called = True
    device = torch.device('cpu') if _sync_device is None else _sync_device
    deltas = torch.zeros([len(names), _num_moments], dtype=_counter_dtype, device=device)
    for idx, name in enumerate(names):
        for counter in _counters[name].values():
            deltas[idx].add_(counter.to(device))
            counter.zero_()
    if _sync_device is not None:
        torch.distributed.all_reduce(deltas)
    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        _cumulative.setdefault(name, torch.zeros([_num_moments], dtype=_counter_dtype)).add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]

#----------------------------------------------------------------------------

class Collector:
    """Averages of the statistics whose names match `regex`, over the interval
    between the last two calls of `update()`. Values reported before the
    collector was built do not count. Several collectors may run side by
    side, each with its own intervals."""

    def __init__(self,
        regex           = '.*', # Names to collect (re.fullmatch).
        keep_previous   = True, # A name with no values in an interval keeps its previous averages (False: it reads as empty).
    ):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._seen = dict()    # {name: cumulative moments at the last update}
        self._moments = dict() # {name: moments of the last interval}
        self.update()
        self._moments.clear()

    def names(self):
        """Names reported so far (by this process) that match the regex."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self):
        """Close the current interval: sum everything reported since the last
        update over devices and processes (one all_reduce) and make it the
        interval that num(), mean(), std() and as_dict() describe. In
        multi-process runs, every process must call it at the same point."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            delta = cumulative - self._seen.get(name, 0)
            self._seen[name] = cumulative.clone()
            if delta[0] != 0:
                self._moments[name] = delta

    def _interval_moments(self, name):
        if not self._regex.fullmatch(name):
            raise KeyError(f'{name!r} does not match the regex {self._regex.pattern!r} of this Collector')
        return self._moments.get(name, torch.zeros([_num_moments], dtype=_counter_dtype))

    def num(self, name):
        """Number of scalars in the last interval (0 if none)."""
        return int(self._interval_moments(name)[0])

    def mean(self, name):
        """Mean of the scalars in the last interval (NaN if none)."""
        count, total, _ = self._interval_moments(name).tolist()
        return total / count if count else float('nan')

    def std(self, name):
        """Population standard deviation of the scalars in the last interval
        (NaN if none or not finite, 0 for a single scalar)."""
        count, total, total_sq = self._interval_moments(name).tolist()
        if count == 0 or not np.isfinite(total):
            return float('nan')
        if count == 1:
            return 0.0
        mean = total / count
        return float(np.sqrt(max(total_sq / count - mean ** 2, 0))) # Rounding can make the variance slightly negative.

    def as_dict(self):
        """{name: EasyDict(num, mean, std)} for every collected name."""
        return dnnlib.EasyDict({name: dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
            for name in self.names()})

    def __getitem__(self, name):
        """collector[name] is collector.mean(name)."""
        return self.mean(name)

#----------------------------------------------------------------------------
