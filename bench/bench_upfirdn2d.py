"""Speed of the upfirdn2d kernels against the pure-PyTorch reference, printed as JSON.

For StyleGAN2/3-like resampling layers (a 4x4 filter, and separable 12-tap
lowpass filters, up and down by 2, in float32 and float16, contiguous and
channels_last), reports the median time in milliseconds of the forward pass
and of forward + backward for the reference and the kernel, and their ratio
(the kernel's speed-up). Also reports how long the plugin took to set up (a
build or a load from the cache, and its self-check).

The CUDA kernel runs the layers at training sizes, when CUDA is available;
the CPU kernel runs them on smaller feature maps (--device cpu), in float32,
at 1 and 2 threads: the figures behind the choice of 'auto' on CPU.

    python bench/bench_upfirdn2d.py
    python bench/bench_upfirdn2d.py --device cpu --reps 50

Not a test: timings depend on the machine. Compare ratios within one run.
"""

import json
import os
import sys

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.kernel_timing import cpu_report, cuda_report, speedup_fields, time_forward_backward # pylint: disable=wrong-import-position
from torch_utils.ops import upfirdn2d # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

# (shape, filter taps, separable, kwargs of upfirdn2d, dtype).
CASES = [
    ([8, 256, 64, 64],   [1, 3, 3, 1],          False, dict(up=2, padding=[2, 1, 2, 1], gain=4),   torch.float32), # StyleGAN2 upsampling
    ([8, 256, 128, 128], [1, 3, 3, 1],          False, dict(down=2, padding=[1, 1, 1, 1]),         torch.float32), # StyleGAN2 downsampling
    ([4, 512, 52, 52],   np.hanning(14)[1:-1],  True,  dict(up=2, padding=[11, 10, 11, 10], gain=4), torch.float32), # StyleGAN3 upsampling
    ([4, 512, 104, 104], np.hanning(14)[1:-1],  True,  dict(down=2),                               torch.float32), # StyleGAN3 downsampling
    ([4, 128, 148, 148], np.hanning(14)[1:-1],  True,  dict(up=2, padding=[11, 10, 11, 10], gain=4), torch.float16),
    ([4, 128, 296, 296], np.hanning(14)[1:-1],  True,  dict(down=2),                               torch.float16),
]

# The same layers on CPU, on feature maps a CPU handles in milliseconds.
CPU_CASES = [
    ([2, 64, 32, 32],    [1, 3, 3, 1],          False, dict(up=2, padding=[2, 1, 2, 1], gain=4),   torch.float32),
    ([2, 64, 64, 64],    [1, 3, 3, 1],          False, dict(down=2, padding=[1, 1, 1, 1]),         torch.float32),
    ([2, 64, 36, 36],    np.hanning(14)[1:-1],  True,  dict(up=2, padding=[11, 10, 11, 10], gain=4), torch.float32),
    ([2, 64, 72, 72],    np.hanning(14)[1:-1],  True,  dict(down=2),                               torch.float32),
]

#----------------------------------------------------------------------------

@click.command()
@click.option('--device', 'kernel', type=click.Choice(['cuda', 'cpu']), default='cuda', show_default=True, help='Which kernel to time.')
@click.option('--reps', type=int, default=20, show_default=True, help='Timed repetitions per measurement.')
def main(kernel, reps):
    def measure(device):
        for shape, taps, separable, kwargs, dtype in (CASES if kernel == 'cuda' else CPU_CASES):
            f = upfirdn2d.setup_filter(taps, device=device, separable=separable)
            run = lambda impl, x, f=f, kwargs=kwargs: upfirdn2d.upfirdn2d(x, f, impl=impl, **kwargs)
            for channels_last in [False, True]:
                x = torch.randn(shape, device=device, dtype=dtype)
                x = x.to(memory_format=torch.channels_last) if channels_last else x
                dy = torch.randn_like(run('ref', x))
                timings = time_forward_backward(run, ['ref', kernel], [x], dy, reps)
                yield dict(shape=shape, dtype=str(dtype), channels_last=channels_last, filter=list(f.shape), **kwargs, **speedup_fields(timings))
    get_plugin = lambda: upfirdn2d._plugin(kernel) # pylint: disable=protected-access
    report = (cuda_report if kernel == 'cuda' else cpu_report)('upfirdn2d', get_plugin, measure)
    if report is not None:
        print(json.dumps(report, indent=1))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
