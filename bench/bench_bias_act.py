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
import sys

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.kernel_timing import plugin_setup_seconds, speedup_fields, time_forward_backward # pylint: disable=wrong-import-position
from torch_utils.ops import bias_act # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

# (shape, dim): a channels-last rows layout (fully connected layers), an NCHW
# feature map, and a CREPS line tensor [N, length, channels].
SHAPES = [([65536, 64], 1), ([8, 512, 256, 16], 1), ([16, 1024, 512], 2)]

# (act, gain, clamp) as the networks call them, and two transcendental activations.
ACTIVATIONS = [('linear', None, None), ('lrelu', None, 256), ('tanh', None, None), ('swish', None, None)]

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
        plugin_setup_s={kernel: plugin_setup_seconds(lambda kernel=kernel: bias_act._plugin(kernel)) for kernel in kernels}, # pylint: disable=protected-access
        results=[])
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
                run = lambda impl, x, b, kwargs=kwargs: bias_act.bias_act(x, b, impl=impl, **kwargs)
                timings = time_forward_backward(run, ['ref', kernel], [x, b], dy, reps)
                report['results'].append(dict(kernel=kernel, shape=shape, dim=dim, act=act, clamp=clamp, **speedup_fields(timings)))
    print(json.dumps(report, indent=1))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
