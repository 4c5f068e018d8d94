"""Speed and memory of gen_video.py, printed as JSON.

Each configuration runs gen_video.py's command in a fresh process, on a
randomly initialized default CREPS generator (pickled once into a temporary
folder), and reports seconds per frame and the process's peak resident memory.
Frames are streamed to the encoder, so peak memory should not grow with the
number of frames: compare `peak_rss_mb` of the short and the long zoom.

    python bench/bench_video.py
    python bench/bench_video.py --res=64     # a quick run with a smaller network

Not a test: timings depend on the machine. Compare ratios within one run.
"""

import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time

import click
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.networks_creps import Generator # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

def default_grid(res):
    zoom = ['--seeds=0', '--zoom-to=16', '--center=0.4,0.6', '--pan=0.05,0']
    return [
        dict(name='zoom_24_frames', args=zoom + ['--frames=24']),
        dict(name='zoom_96_frames', args=zoom + ['--frames=96']),
        dict(name='zoom_24_frames_4x_size_tiled', args=zoom + ['--frames=24', f'--size={4 * res}x{4 * res}', f'--tile={res}']),
        dict(name='grid_2x2_interpolation', args=['--seeds=0-7', '--grid=2x2', '--w-frames=12']),
    ]

def run_child(network, config, out_dir):
    """Run one configuration in this process; returns the result dict."""
    import gen_video # pylint: disable=import-outside-toplevel
    output = os.path.join(out_dir, config['name'] + '.mp4')
    start = time.perf_counter()
    gen_video.generate_video.main([f'--network={network}', f'--output={output}', '--device=cpu'] + config['args'], standalone_mode=False)
    seconds = time.perf_counter() - start
    import imageio_ffmpeg # pylint: disable=import-outside-toplevel
    num_frames, _ = imageio_ffmpeg.count_frames_and_secs(output)
    return dict(config, frames=num_frames, sec_per_frame=round(seconds / num_frames, 4),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), mp4_kb=round(os.path.getsize(output) / 1024, 1))

@click.command()
@click.option('--res', type=int, default=256, show_default=True, help='Training resolution of the benchmarked generator')
@click.option('--child', hidden=True, help='Internal: network, configuration and output folder as JSON')
def main(res, child):
    """Benchmark gen_video.py; prints one JSON document."""
    if child:
        network, config, out_dir = json.loads(child)
        print(json.dumps(run_child(network, config, out_dir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3, channel_base=65536, channel_max=1024).eval()
        network = os.path.join(tmp, 'G.pkl')
        with open(network, 'wb') as f:
            pickle.dump({'G_ema': G}, f)
        results = []
        for config in default_grid(res):
            proc = subprocess.run([sys.executable, __file__, '--child', json.dumps([network, config, tmp])], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                results.append(dict(config, error=proc.stderr.strip().splitlines()[-1:]))
            else:
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    by_name = {r['name']: r for r in results}
    report = dict(res=res, cpu_threads=torch.get_num_threads(), torch=torch.__version__, results=results)
    if all('peak_rss_mb' in by_name[name] for name in ('zoom_24_frames', 'zoom_96_frames')):
        report['peak_rss_ratio_96_over_24_frames'] = round(by_name['zoom_96_frames']['peak_rss_mb'] / by_name['zoom_24_frames']['peak_rss_mb'], 3)
    print(json.dumps(report, indent=1))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
