"""Timing shared by the kernel benchmarks (bench_bias_act, bench_upfirdn2d,
bench_filtered_lrelu): medians of interleaved repetitions, the time a
plugin takes to become available, the speed-up fields of a report row, and
the reports of a CUDA and of a CPU kernel."""

import statistics
import time

import torch

#----------------------------------------------------------------------------

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

def time_forward_backward(run, impls, inputs, dy, reps):
    """Milliseconds of run(impl, *inputs) for each of `impls`, and of it with its
    backward pass to all inputs (output gradient dy)."""
    needing_grad = [x.detach().requires_grad_(True) for x in inputs]
    forward = [lambda impl=impl: run(impl, *inputs) for impl in impls]
    both = [lambda impl=impl: torch.autograd.grad(run(impl, *needing_grad), needing_grad, dy) for impl in impls]
    return median_ms(forward, dy.device, reps), median_ms(both, dy.device, reps)

def speedup_fields(timings):
    """Report fields for ((ref_fwd, kernel_fwd), (ref_fwd_bwd, kernel_fwd_bwd)) milliseconds."""
    (ref_fwd, ker_fwd), (ref_both, ker_both) = timings
    return dict(ref_fwd_ms=round(ref_fwd, 3), kernel_fwd_ms=round(ker_fwd, 3), fwd_speedup=round(ref_fwd / ker_fwd, 2),
        ref_fwd_bwd_ms=round(ref_both, 3), kernel_fwd_bwd_ms=round(ker_both, 3), fwd_bwd_speedup=round(ref_both / ker_both, 2))

def plugin_setup_seconds(get_plugin):
    """Seconds get_plugin() takes to give a plugin (a build or a load from the cache,
    and its self-check), or None when it gives none."""
    start = time.perf_counter()
    available = get_plugin() is not None
    return round(time.perf_counter() - start, 2) if available else None

def cuda_report(op_name, get_plugin, measure):
    """The report of a CUDA kernel benchmark: `measure(device)` yields its rows.
    Without CUDA, says so and returns None."""
    if not torch.cuda.is_available():
        print(f'CUDA is needed to benchmark the {op_name} CUDA kernel; nothing to do.')
        return None
    device = torch.device('cuda')
    setup_s = plugin_setup_seconds(get_plugin)
    return dict(torch=torch.__version__, device=torch.cuda.get_device_name(device), plugin_setup_s=setup_s,
        results=list(measure(device)) if setup_s is not None else [])

def cpu_report(op_name, get_plugin, measure, threads=(1, 2)):
    """The report of a CPU kernel benchmark: `measure(device)` yields its rows,
    measured at each of the given numbers of threads (torch.set_num_threads),
    which the rows record. Returns None, having said so, when the plugin is unavailable."""
    device = torch.device('cpu')
    setup_s = plugin_setup_seconds(get_plugin)
    if setup_s is None:
        print(f'The {op_name} CPU kernel is unavailable (see the warning); nothing to do.')
        return None
    results = []
    saved = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            results += [dict(threads=n, **row) for row in measure(device)]
    finally:
        torch.set_num_threads(saved)
    return dict(torch=torch.__version__, device='cpu', cpu_capability=torch.backends.cpu.get_cpu_capability(),
        plugin_setup_s=setup_s, results=results)

#----------------------------------------------------------------------------
