"""torch_utils.misc and torch_utils.training_stats, including a two-process (gloo) run."""

import io
import json
import math
import re

import numpy as np
import pytest
import torch

from torch_utils import misc
from torch_utils import training_stats

#----------------------------------------------------------------------------
# misc

def test_constant_is_cached_and_broadcast():
    a = misc.constant([1, 2, 3], dtype=torch.float32)
    assert a is misc.constant([1, 2, 3], dtype=torch.float32)
    assert a is not misc.constant([1, 2, 3], dtype=torch.float64)
    b = misc.constant(0.5, shape=[2, 3])
    assert b.shape == (2, 3) and b.is_contiguous() and torch.all(b == 0.5)

def test_assert_shape():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, None, 4])
    with pytest.raises(AssertionError, match='dimension 1: got 3, expected 5'):
        misc.assert_shape(x, [2, 5, 4])
    with pytest.raises(AssertionError, match='number of dimensions: got 3, expected 2'):
        misc.assert_shape(x, [2, 3])

def test_assert_shape_with_dynamic_sizes():
    def f(x):
        misc.assert_shape(x, [None, 3])
        return x * 2
    compiled = torch.compile(f, dynamic=True, backend='eager')
    assert compiled(torch.ones(4, 3)).shape == (4, 3)
    with pytest.raises(AssertionError, match='dimension 1'):
        compiled(torch.ones(4, 5))

def test_profiled_function():
    @misc.profiled_function
    def my_op(x, scale=1):
        return x * scale
    assert my_op.__name__ == 'my_op'
    with torch.autograd.profiler.profile() as prof:
        assert torch.equal(my_op(torch.ones(2), scale=3), torch.full([2], 3.0))
    assert 'my_op' in {event.name for event in prof.function_events}

def _take(iterator, n):
    return [next(iterator) for _ in range(n)]

def test_infinite_sampler_epochs_and_determinism():
    size = 13
    sequence = _take(iter(misc.InfiniteSampler(range(size), seed=7)), size * 4)
    for epoch in range(4):
        assert sorted(sequence[epoch * size:(epoch + 1) * size]) == list(range(size))
    assert sequence[:size] != sequence[size:2 * size] # The window keeps reshuffling.
    assert sequence == _take(iter(misc.InfiniteSampler(range(size), seed=7)), size * 4)
    assert sequence != _take(iter(misc.InfiniteSampler(range(size), seed=8)), size * 4)
    assert _take(iter(misc.InfiniteSampler(range(5), shuffle=False)), 7) == [0, 1, 2, 3, 4, 0, 1]

def test_infinite_sampler_replicas_partition_the_sequence():
    full = _take(iter(misc.InfiniteSampler(range(10), seed=3)), 40)
    parts = [_take(iter(misc.InfiniteSampler(range(10), rank=r, num_replicas=3, seed=3)), 20) for r in range(3)]
    assert [parts[i % 3][i // 3] for i in range(40)] == full

def test_infinite_sampler_resume():
    sampler = misc.InfiniteSampler(range(11), seed=1, window_size=0.3)
    iterator = iter(sampler)
    _take(iterator, 17)
    state = sampler.state_dict()
    expected = _take(iterator, 30)

    restored = misc.InfiniteSampler(range(11), seed=1, window_size=0.3)
    restored.load_state_dict(torch.load(_save(state), weights_only=True))
    assert restored.state_dict()['position'] == 17
    assert _take(iter(restored), 30) == expected
    with pytest.raises(ValueError, match='12'):
        misc.InfiniteSampler(range(12)).load_state_dict(state)

def _save(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer

class _Net(torch.nn.Module):
    def __init__(self, extra=False):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)
        self.register_buffer('scale', torch.rand(2))
        if extra:
            self.extra = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) * self.scale

def test_params_and_buffers():
    names = [name for name, _ in misc.named_params_and_buffers(_Net())]
    assert names == ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias', 'scale']
    assert len(misc.params_and_buffers(_Net())) == 5

def test_copy_params_and_buffers():
    src, dst = _Net(), _Net(extra=True)
    misc.copy_params_and_buffers(src, dst)
    x = torch.randn(3, 4)
    assert torch.equal(src(x), dst(x))
    assert dst.fc1.weight.requires_grad and dst.fc1.weight.grad_fn is None
    with pytest.raises(ValueError, match='extra'):
        misc.copy_params_and_buffers(src, dst, require_all=True)
    misc.copy_params_and_buffers(dst, src, require_all=True)

def test_ddp_helpers_without_process_group():
    net = _Net()
    with misc.ddp_sync(net, sync=False):
        net(torch.zeros(1, 4))
    misc.check_ddp_consistency(net) # No process group: nothing to compare.

def test_print_module_summary(capsys):
    net = torch.nn.Sequential(_Net(), torch.nn.Tanh(), torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))
    x = torch.randn(5, 4)
    out = misc.print_module_summary(net, [x])
    assert torch.equal(out, net(x))
    table = capsys.readouterr().out
    total = re.search(r'^Total\s+(\d+)\s+(\d+)', table, re.MULTILINE)
    assert int(total[1]) == sum(p.numel() for p in net.parameters())
    assert int(total[2]) == 2
    assert '[5, 3]' in table and 'float32' in table and '0.fc1' in table

#----------------------------------------------------------------------------
# training_stats (the names are unique to each test: the counters are global)

def test_collector_mean_std_num():
    values = [1.0, 2.0, 4.0, 7.0]
    training_stats.report('TestStats/before', 100.0) # Before the collector exists: ignored.
    collector = training_stats.Collector(regex='TestStats/.*')
    assert training_stats.report('TestStats/a', torch.tensor(values[:3])) is not None
    training_stats.report('TestStats/a', values[3])
    training_stats.report('TestStats/a', [])
    collector.update()
    assert collector.num('TestStats/a') == 4
    assert collector.mean('TestStats/a') == pytest.approx(np.mean(values))
    assert collector.std('TestStats/a') == pytest.approx(np.std(values))
    assert collector['TestStats/a'] == collector.mean('TestStats/a')
    assert collector.num('TestStats/before') == 0 and math.isnan(collector.mean('TestStats/before'))

    training_stats.report('TestStats/a', 5.0)
    collector.update()
    assert collector.as_dict()['TestStats/a'] == dict(num=1, mean=5.0, std=0.0)
    collector.update() # Nothing new: the previous averages are kept.
    assert collector.num('TestStats/a') == 1

def test_collector_regex_and_keep_previous():
    collector = training_stats.Collector(regex='TestRegex/loss.*', keep_previous=False)
    training_stats.report('TestRegex/loss_g', [1.0, 3.0])
    training_stats.report('TestRegex/time', 9.0)
    collector.update()
    assert collector.names() == ['TestRegex/loss_g']
    assert set(collector.as_dict()) == {'TestRegex/loss_g'}
    assert collector.mean('TestRegex/loss_g') == 2.0
    with pytest.raises(KeyError):
        collector.mean('TestRegex/time')
    collector.update()
    assert collector.num('TestRegex/loss_g') == 0 # keep_previous=False: the empty interval reads as empty.

#----------------------------------------------------------------------------
# Two processes over gloo: statistics are summed across ranks, and
# check_ddp_consistency finds a parameter that differs.

def _distributed_worker(rank, world_size, init_file, out_dir):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
    collector = training_stats.Collector(regex='Dist/.*')
    training_stats.report('Dist/a', [rank + 1.0] * (rank + 1)) # Rank 0: [1], rank 1: [2, 2].
    training_stats.report0('Dist/b', 10.0 + rank)
    collector.update()

    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    misc.check_ddp_consistency(net)
    with torch.no_grad():
        net.bias[0] = rank
    try:
        misc.check_ddp_consistency(net)
        error = None
    except AssertionError as err:
        error = str(err)
    misc.check_ddp_consistency(net, ignore_regex=r'.*\.bias')
    with open(f'{out_dir}/rank{rank}.json', 'w') as f:
        json.dump(dict(stats=collector.as_dict(), error=error), f)
    torch.distributed.destroy_process_group()

def test_two_processes(tmp_path):
    torch.multiprocessing.spawn(_distributed_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in range(2)]
    for result in results:
        assert result['stats']['Dist/a']['num'] == 3
        assert result['stats']['Dist/a']['mean'] == pytest.approx(5 / 3)
        assert result['stats']['Dist/a']['std'] == pytest.approx(np.std([1, 2, 2]))
        assert result['stats']['Dist/b'] == dict(num=1, mean=10.0, std=0.0)
    assert results[0]['error'] is None and 'Linear.bias' in results[1]['error']

#----------------------------------------------------------------------------
