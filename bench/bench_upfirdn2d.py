"""Speed of the upfirdn2d CUDA kernel against the pure-PyTorch reference, printed as JSON.

For StyleGAN2/3-like resampling layers (a 4x4 filter, and separable 12-tap
lowpass filters, up and down by 2, in float32 and float16, contiguous and
channels_last), reports the median time in milliseconds of the forward pass
and of forward + backward for the reference and the kernel, and their ratio
(the kernel's speed-up). Also reports how long the plugin took to set up (a
build or a load from the cache, and its self-check).

    python bench/bench_upfirdn2d.py
    python bench/bench_upfirdn2d.py --reps 50

Not a test: timings depend on the machine. Compare ratios within one run.
Needs CUDA; without it, says so and exits.
"""

import json
import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.bench_bias_act import median_ms # pylint: disable=wrong-import-position
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

def time_impls(x, f, reps, **kwargs):
    """Milliseconds of the forward pass, and of forward + backward, for 'ref' and 'cuda'."""
    xg = x.detach().requires_grad_(True)
    dy = torch.randn_like(upfirdn2d.upfirdn2d(x, f, impl='ref', **kwargs))
    forward = [lambda impl=impl: upfirdn2d.upfirdn2d(x, f, impl=impl, **kwargs) for impl in ['ref', 'cuda']]
    both = [lambda impl=impl: torch.autograd.grad(upfirdn2d.upfirdn2d(xg, f, impl=impl, **kwargs), [xg], dy) for impl in ['ref', 'cuda']]
    return median_ms(forward, x.device, reps), median_ms(both, x.device, reps)

#----------------------------------------------------------------------------

@click.command()
@click.option('--reps', type=int, default=20, show_default=True, help='Timed repetitions per measurement.')
def main(reps):
    if not torch.cuda.is_available():
        print('bench_upfirdn2d: CUDA is needed to benchmark the upfirdn2d CUDA kernel; nothing to do.')
        return
    device = torch.device('cuda')
    start = time.perf_counter()
    available = upfirdn2d._plugin() is not None # pylint: disable=protected-access
    report = dict(torch=torch.__version__, device=torch.cuda.get_device_name(device),
        plugin_setup_s=round(time.perf_counter() - start, 2) if available else None, results=[])
    if available:
        for shape, taps, separable, kwargs, dtype in CASES:
            f = upfirdn2d.setup_filter(taps, device=device, separable=separable)
            for channels_last in [False, True]:
                x = torch.randn(shape, device=device, dtype=dtype)
                x = x.to(memory_format=torch.channels_last) if channels_last else x
                (ref_fwd, ker_fwd), (ref_both, ker_both) = time_impls(x, f, reps, **kwargs)
                report['results'].append(dict(shape=shape, dtype=str(dtype), channels_last=channels_last, filter=list(f.shape), **kwargs,
                    ref_fwd_ms=round(ref_fwd, 3), kernel_fwd_ms=round(ker_fwd, 3), fwd_speedup=round(ref_fwd / ker_fwd, 2),
                    ref_fwd_bwd_ms=round(ref_both, 3), kernel_fwd_bwd_ms=round(ker_both, 3), fwd_bwd_speedup=round(ref_both / ker_both, 2)))
    print(json.dumps(report, indent=1))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
