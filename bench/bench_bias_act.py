"""Speed of the bias_act kernels against the pure-PyTorch reference, printed as JSON.

For a few shapes (bias along dim) and activations, reports the median time in
milliseconds of the forward pass and of forward + backward for the reference
and the CPU kernel, and their ratio; with CUDA, the same for the CUDA kernel.
Also reports how long the plugin took to set up (a build, or a load from the
cache).

    python bench/bench_bias_act.py
    python bench/bench_bias_act.py --reps 50 --threads 1

Not a test: timings depend on the machine. Compare ratios within one run.
"""

import json
import os
import statistics
import sys
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torch_utils.ops import bias_act # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

# (shape, dim): a channels-last rows layout (fully connected layers), an NCHW
# feature map, and a CREPS line tensor [N, length, channels].
SHAPES = [([65536, 64], 1), ([8, 512, 256, 16], 1), ([16, 1024, 512], 2)]

# (act, gain, clamp) as the networks call them, and two transcendental activations.
ACTIVATIONS = [('linear', None, None), ('lrelu', None, 256), ('tanh', None, None), ('swish', None, None)]

def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)

def median_ms(fns, device, reps):
    """Median milliseconds of each function, timed in turn within every
    repetition so that all see the same state of the memory allocator."""
    times = [[] for _ in fns]
    for rep in range(reps + 1):
        for fn, fn_times in zip(fns, times):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if rep > 0: # The first round warms up.
                fn_times.append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]

def time_impls(impls, x, b, dy, reps, **kwargs):
    """Milliseconds of the forward pass, and of forward + backward (to x and b), per implementation."""
    xg, bg = x.detach().requires_grad_(True), b.detach().requires_grad_(True)
    forward = [lambda impl=impl: bias_act.bias_act(x, b, impl=impl, **kwargs) for impl in impls]
    both = [lambda impl=impl: torch.autograd.grad(bias_act.bias_act(xg, bg, impl=impl, **kwargs), [xg, bg], dy)
        for impl in impls]
    return median_ms(forward, x.device, reps), median_ms(both, x.device, reps)

def plugin_setup_seconds(device_type):
    start = time.perf_counter()
    available = bias_act._plugin(device_type) is not None # pylint: disable=protected-access
    return round(time.perf_counter() - start, 2) if available else None

#----------------------------------------------------------------------------

@click.command()
@click.option('--reps', type=int, default=20, show_default=True, help='Timed repetitions per measurement.')
@click.option('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s).')
def main(reps, threads):
    if threads is not None:
        torch.set_num_threads(threads)
    kernels = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    report = dict(torch=torch.__version__, threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        plugin_setup_s={kernel: plugin_setup_seconds(kernel) for kernel in kernels}, results=[])
    for kernel in kernels:
        if report['plugin_setup_s'][kernel] is None:
            continue
        device = torch.device(kernel)
        for shape, dim in SHAPES:
            x = torch.randn(shape, device=device)
            b = torch.randn([shape[dim]], device=device)
            dy = torch.randn(shape, device=device)
            for act, gain, clamp in ACTIVATIONS:
                kwargs = dict(dim=dim, act=act, gain=gain, clamp=clamp)
                (ref_fwd, ker_fwd), (ref_both, ker_both) = time_impls(['ref', kernel], x, b, dy, reps, **kwargs)
                report['results'].append(dict(kernel=kernel, shape=shape, dim=dim, act=act, clamp=clamp,
                    ref_fwd_ms=round(ref_fwd, 3), kernel_fwd_ms=round(ker_fwd, 3), fwd_speedup=round(ref_fwd / ker_fwd, 2),
                    ref_fwd_bwd_ms=round(ref_both, 3), kernel_fwd_bwd_ms=round(ker_both, 3), fwd_bwd_speedup=round(ref_both / ker_both, 2)))
    print(json.dumps(report, indent=1))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
