"""Speed of the filtered_lrelu CUDA kernels against the pure-PyTorch reference, printed as JSON.

For StyleGAN3-like layers (separable 12-tap lowpass filters for 2x up and
down, a radial 2D one for the critically sampled layers, clamp 256, biases;
float32 at low resolution and float16 above, contiguous and channels_last),
reports the median time in milliseconds of the forward pass and of forward +
backward (to x and b) for the reference and the kernels, and their ratio (the
kernels' speed-up). Also reports how long the plugins took to set up (builds
or loads from the cache, and their self-checks).

The CUDA kernels run the layers at training sizes, when CUDA is available;
the CPU kernels run them on smaller feature maps (--device cpu), in float32,
at 1 and 2 threads: the figures behind the choice of 'auto' on CPU.

    python bench/bench_filtered_lrelu.py
    python bench/bench_filtered_lrelu.py --device cpu --reps 50

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
from torch_utils.ops import filtered_lrelu # pylint: disable=wrong-import-position
from torch_utils.ops import upfirdn2d # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

# (shape, up, down, radial fd, dtype): feature maps with StyleGAN3's margin of 10 pixels.
CASES = [
    ([4, 512, 36, 36],   2, 2, False, torch.float32),
    ([4, 512, 52, 52],   2, 2, False, torch.float32),
    ([4, 256, 84, 84],   2, 2, False, torch.float16),
    ([4, 128, 148, 148], 2, 2, False, torch.float16),
    ([4, 64, 276, 276],  2, 2, True,  torch.float16),
    ([4, 32, 276, 276],  2, 1, False, torch.float16),
]

# The same kinds of layers on CPU, on feature maps a CPU handles in tens of milliseconds.
CPU_CASES = [
    ([2, 64, 36, 36],    2, 2, False, torch.float32),
    ([2, 32, 52, 52],    2, 2, True,  torch.float32),
    ([2, 32, 52, 52],    2, 1, False, torch.float32),
]

TAPS = 6 # Filter taps per sampling factor, as in StyleGAN3.

def lowpass(taps, device):
    return upfirdn2d.setup_filter(np.hanning(taps + 2)[1:-1], device=device, separable=True)

def layer_args(shape, up, down, radial, device):
    """Filters and keyword arguments of a layer whose output has the input's size."""
    fu = lowpass(TAPS * up, device)
    fd = lowpass(TAPS * down, device)
    fd = torch.outer(fd, fd) if radial else fd
    size = shape[-1]
    pad_total = (size - 1) * down + 1 - size * up + (TAPS * up - 1) + (TAPS * down - 1)
    pad0 = (pad_total + up) // 2
    padding = [pad0, pad_total - pad0, pad0, pad_total - pad0]
    return fu, fd, dict(up=up, down=down, padding=padding, gain=np.sqrt(2), slope=0.2, clamp=256)

#----------------------------------------------------------------------------

@click.command()
@click.option('--device', 'kernel', type=click.Choice(['cuda', 'cpu']), default='cuda', show_default=True, help='Which kernels to time.')
@click.option('--reps', type=int, default=20, show_default=True, help='Timed repetitions per measurement.')
def main(kernel, reps):
    def measure(device):
        for shape, up, down, radial, dtype in (CASES if kernel == 'cuda' else CPU_CASES):
            fu, fd, kwargs = layer_args(shape, up, down, radial, device)
            run = lambda impl, x, b, fu=fu, fd=fd, kwargs=kwargs: filtered_lrelu.filtered_lrelu(x, fu, fd, b, impl=impl, **kwargs)
            b = torch.randn(shape[1], device=device, dtype=dtype)
            for channels_last in [False, True]:
                x = torch.randn(shape, device=device, dtype=dtype)
                x = x.to(memory_format=torch.channels_last) if channels_last else x
                dy = torch.randn_like(run('ref', x, b))
                timings = time_forward_backward(run, ['ref', kernel], [x, b], dy, reps)
                yield dict(shape=shape, dtype=str(dtype), channels_last=channels_last, up=up, down=down, fd=list(fd.shape), **speedup_fields(timings))
    get_plugin = lambda: filtered_lrelu._plugin(kernel) # pylint: disable=protected-access
    report = (cuda_report if kernel == 'cuda' else cpu_report)('filtered_lrelu', get_plugin, measure)
    if report is not None:
        print(json.dumps(report, indent=1))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
