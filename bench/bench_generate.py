"""Speed and memory of image generation (gen_images' rendering path), printed as JSON.

For each configuration of (resolution, scale or size, batch, tile, precision,
device) the benchmark reports seconds per image, the FLOPs per image (counted
with torch.utils.flop_counter), the achieved GFLOP/s next to this machine's
measured fp32 matmul rate, and the peak resident memory; for untiled renders
up to 1024x1024 also each stage's time and GFLOP/s, the pixel stage both as
rendering runs it (the fused CPU kernel for float32) and layer by layer. Each configuration runs
in a fresh process so that its peak memory is its own.

    python bench/bench_generate.py                 # the default grid
    python bench/bench_generate.py --huge          # adds the 16384x16384 render (about 15 min on 2 cores)
    python bench/bench_generate.py --only 'res=256,scale=16,tile=512'
    python bench/bench_generate.py --official=~/CREPS --scales=1,2,4   # side by side with a checkout of the official code
    ATEN_CPU_CAPABILITY=avx2 python bench/bench_generate.py ...        # as on an AVX2 CPU (AMD EPYC), on any x86-64

Not a test: timings depend on the machine. Compare ratios within one run.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import click
import numpy as np
import psutil
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import gen_images # pylint: disable=wrong-import-position
from torch_utils import render # pylint: disable=wrong-import-position
from training.networks_creps import Generator # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

# The default CREPS config at 256 px: 30.5 M parameters, about 107 GFLOP per 256x256 image.
CREPS_256 = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, channel_base=65536, channel_max=1024)

# Figures for the official CREPS code on a 2-core CPU, fp32, default config at 256 px (from the project's issue).
OFFICIAL_CPU_REFERENCE = {1: dict(sec_per_img=(1.15, 1.43)), 2: dict(sec_per_img=(5.4, 8.7)), 4: dict(sec_per_img=(45, 45), peak_rss_mb=2.8e3)}

def default_grid(huge):
    grid = [dict(res=64, scale=4, batch=1), dict(res=128, scale=2, batch=1),
        dict(scale=1, batch=1), dict(scale=1, batch=4), dict(scale=1, batch=1, precision='bf16'),
        dict(scale=2, batch=1), dict(scale=4, batch=1),
        dict(scale=16, batch=1, tile=512), dict(scale=16, batch=1)]
    if huge:
        grid.append(dict(scale=64, batch=1, tile=1024))
    if torch.cuda.is_available():
        grid += [dict(scale=s, batch=b, device='cuda', precision=p) for s in [1, 4] for b in [1, 8] for p in ['fp32', 'fp16']]
    return grid

#----------------------------------------------------------------------------

def matmul_rate(device, size=2048, reps=10):
    """Measured fp32 GFLOP/s of a square matmul on `device`."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * size ** 3 * reps / (time.perf_counter() - start) / 1e9

def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()

def count_flops(G, height, width, precision):
    """FLOPs of one image at height x width, (line stage, pixel stage): the line stage is linear in
    the side lengths and the pixel stage in the pixel count, so both are counted on a small render
    (the pixel stage layer by layer, whose products the counter sees) and scaled."""
    from torch.utils.flop_counter import FlopCounterMode # pylint: disable=import-outside-toplevel
    ws = G.mapping(torch.zeros([1, G.z_dim], device=G.mapping.fc0.weight.device), None)
    probe = torch.linspace(0, 1, 16, device=ws.device)
    with FlopCounterMode(display=False) as counter:
        row_lines, col_lines = G.synthesis.line_stage(ws, probe, probe, precision=precision)
    per_line_sample = counter.get_total_flops() / 32
    with FlopCounterMode(display=False) as counter:
        G.synthesis.pixel_stage_ref(ws, row_lines, col_lines, precision=precision)
    per_pixel = counter.get_total_flops() / 256
    return per_line_sample * (height + width), per_pixel * height * width

def time_stages(G, z, lines, precision, device, reps):
    """Seconds per image of the line stage, the pixel stage, and the pixel stage layer by layer (its reference)."""
    ws = G.mapping(z, None)
    def timed(fn):
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            result = fn()
        sync(device)
        return result, (time.perf_counter() - start) / (reps * z.shape[0])
    (row_lines, col_lines), line_sec = timed(lambda: G.synthesis.line_stage(ws, *lines, precision=precision))
    _img, pixel_sec = timed(lambda: G.synthesis.pixel_stage(ws, row_lines, col_lines, precision=precision))
    _img, pixel_ref_sec = timed(lambda: G.synthesis.pixel_stage_ref(ws, row_lines, col_lines, precision=precision))
    return line_sec, pixel_sec, pixel_ref_sec

def run_one(config):
    """Measure one configuration in this process; returns the result dict."""
    cfg = dict(res=256, scale=1, batch=1, tile=None, precision='fp32', device='cpu', reps=None)
    cfg.update(config)
    device = torch.device(cfg['device'])
    torch.manual_seed(0)
    G = Generator(**dict(CREPS_256, img_resolution=cfg['res'])).eval().requires_grad_(False).to(device)
    lines = render.lines_for_scale(cfg['res'], cfg['scale'])
    height, width = len(lines[0]), len(lines[1])
    z = torch.randn([cfg['batch'], G.z_dim], device=device)
    with torch.no_grad():
        line_flops, pixel_flops = count_flops(G, height, width, cfg['precision'])
        flops = line_flops + pixel_flops
        gen_images.generate(G, z[:1], None, lines=render.lines_for_scale(cfg['res'], 0.25), precision=cfg['precision']) # Warm-up.
        reps = cfg['reps'] or (3 if height * width * cfg['batch'] <= 4 * 256 ** 2 else 1)
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            gen_images.generate(G, z, None, lines=lines, tile=cfg['tile'], precision=cfg['precision'])
        sync(device)
        seconds = (time.perf_counter() - start) / (reps * cfg['batch'])
        peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1) # Before the untiled stages below.
        stages = {}
        if cfg['tile'] is None and height * width <= 1024 ** 2:
            line_sec, pixel_sec, pixel_ref_sec = time_stages(G, z, [line.to(device) for line in lines], cfg['precision'], device, reps)
            stages = dict(line_sec=round(line_sec, 4), line_gflops=round(line_flops / line_sec / 1e9, 1),
                pixel_sec=round(pixel_sec, 4), pixel_gflops=round(pixel_flops / pixel_sec / 1e9, 1),
                pixel_layer_by_layer_sec=round(pixel_ref_sec, 4), pixel_speedup=round(pixel_ref_sec / pixel_sec, 2))
    return dict(cfg, width=width, height=height, sec_per_img=round(seconds, 4), gflop_per_img=round(flops / 1e9, 2),
        gflops=round(flops / seconds / 1e9, 1), **stages, peak_rss_mb=peak_rss_mb,
        peak_cuda_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == 'cuda' else None)

#----------------------------------------------------------------------------

# Side by side with the official CREPS code (a checkout of VinAIResearch/CREPS, never copied
# here): each measurement is a fresh process, ours and theirs alternating, on the same weights.
# A child imports one codebase only (both name their modules `training` and `torch_utils`).

CHILD_SETUP = {
    # The official gen_images.py renders a scale by setting the `coords` buffer of its input.
    'official': """
from training.networks_creps import Generator
def render(G, ws, side):
    G.synthesis.b4.input.coords = torch.linspace(0, 1, side).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1)
    return G.synthesis(ws)
""",
    'ours': """
from training.networks_creps import Generator
from torch_utils import render as lines
def render(G, ws, side):
    return G.synthesis(ws, *lines.lines_for_size(side, side))
""",
}

CHILD_TIMING = """
G = Generator(**config['G_kwargs']).eval().requires_grad_(False)
G.load_state_dict(torch.load(config['weights']))
with torch.no_grad():
    ws = G.mapping(torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(0)), None)
    side = int(G.img_resolution * config['scale'])
    render(G, ws, G.img_resolution // 4) # Warm-up.
    start = time.perf_counter()
    img = render(G, ws, side)
    seconds = time.perf_counter() - start
if config['image']:
    torch.save(img, config['image'])
print(json.dumps(dict(sec_per_img=round(seconds, 3), peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))))
"""

def _run_child(config, root, cwd):
    """One timed render of `config['code']` ('ours' or 'official', whose checkout is `root`)."""
    script = f'import json, resource, sys, time, torch\nconfig = json.loads(sys.argv[1])\nsys.path.insert(0, {root!r})\n'
    script += CHILD_SETUP[config['code']] + CHILD_TIMING
    proc = subprocess.run([sys.executable, '-c', script, json.dumps(config)], capture_output=True, text=True, check=False, cwd=cwd)
    if proc.returncode != 0:
        raise click.ClickException(f'{config["code"]} at scale {config["scale"]} failed: {proc.stderr.strip().splitlines()[-1:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])

def compare_official(official_dir, scales, reps):
    """The side-by-side table: per scale, the median seconds of each code over `reps` alternating runs."""
    torch.manual_seed(0)
    G = Generator(**CREPS_256).eval().requires_grad_(False)
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        weights = os.path.join(temp, 'weights.pt')
        torch.save(G.state_dict(), weights)
        line_flops, pixel_flops = count_flops(G, 256, 256, 'fp32')
        per_pixel = pixel_flops / 256 ** 2
        official_rss_per_pixel = None # From its largest render so far: its memory grows with the pixel count.
        for scale in scales:
            side = int(256 * scale)
            codes = ['ours', 'official']
            projected_mb = official_rss_per_pixel * side ** 2 if official_rss_per_pixel else 0
            if projected_mb > psutil.virtual_memory().available / 2**20:
                # Running it anyway would invite the kernel's OOM killer onto this machine's other processes.
                codes = ['ours']
            times = {code: [] for code in codes}
            for rep in range(reps):
                for code in codes:
                    image = os.path.join(temp, f'{code}.pt') if rep == 0 and scale <= 4 else None
                    config = dict(code=code, scale=scale, weights=weights, image=image, G_kwargs=CREPS_256)
                    result = _run_child(config, official_dir if code == 'official' else REPO, cwd=temp)
                    times[code].append(result)
                    print(json.dumps(dict(config, **result)), file=sys.stderr)
            row = dict(scale=scale, side=side)
            for code, results in times.items():
                row[f'{code}_sec'] = float(np.median([r['sec_per_img'] for r in results]))
                row[f'{code}_peak_rss_mb'] = max(r['peak_rss_mb'] for r in results)
            row['ours_gflops'] = round((line_flops / 512 * 2 * side + per_pixel * side ** 2) / row['ours_sec'] / 1e9, 1)
            if 'official' in times:
                official_rss_per_pixel = row['official_peak_rss_mb'] / side ** 2
                row['speedup'] = round(row['official_sec'] / row['ours_sec'], 2)
                if scale <= 4:
                    ours, official = torch.load(os.path.join(temp, 'ours.pt')), torch.load(os.path.join(temp, 'official.pt'))
                    row['max_abs_difference'] = float((ours - official).abs().max())
                    row['max_abs_value'] = float(official.abs().max())
            else:
                row['official_not_run'] = f'projected peak RSS {projected_mb / 1024:.1f} GB exceeds the available memory'
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows

def parse_only(text):
    config = {}
    for item in text.split(','):
        key, value = item.split('=')
        config[key] = value if key in ('precision', 'device') else float(value) if key == 'scale' else int(value)
    return config

@click.command()
@click.option('--huge', is_flag=True, help='Also render 16384x16384 (scale 64 of the 256-px config)')
@click.option('--only', help="One configuration, e.g. 'res=256,scale=16,tile=512'")
@click.option('--official', 'official_dir', metavar='DIR', default=lambda: os.environ.get('CREPS_OFFICIAL_DIR'),
    help='A checkout of VinAIResearch/CREPS: compare its generator with ours instead, same weights, alternating runs  [default: $CREPS_OFFICIAL_DIR]')
@click.option('--scales', default='1,2,4', show_default=True, help='Scales of the comparison with --official (256-px default config)')
@click.option('--reps', type=click.IntRange(min=1), default=3, show_default=True, help='Alternating runs per scale and code with --official')
@click.option('--child', hidden=True, help='Internal: measure one JSON configuration in this process')
def main(huge, only, official_dir, scales, reps, child):
    """Benchmark image generation speed and memory; prints one JSON document."""
    if child:
        print(json.dumps(run_one(json.loads(child))))
        return
    if official_dir:
        if not os.path.isfile(os.path.join(official_dir, 'training', 'networks_creps.py')):
            raise click.BadParameter(f'{official_dir} is not a checkout of VinAIResearch/CREPS (no training/networks_creps.py)', param_hint='--official')
        rows = compare_official(os.path.abspath(official_dir), [float(v) for v in scales.split(',')], reps)
        print(json.dumps(dict(machine=dict(cpu_threads=torch.get_num_threads(), torch=torch.__version__,
            cpu_capability=torch.backends.cpu.get_cpu_capability(), matmul_fp32_gflops=round(matmul_rate('cpu'), 1)), official_comparison=rows), indent=1))
        return
    grid = [parse_only(only)] if only else default_grid(huge)
    results = []
    for config in grid:
        proc = subprocess.run([sys.executable, __file__, '--child', json.dumps(config)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            results.append(dict(config, error=proc.stderr.strip().splitlines()[-1:]))
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    devices = sorted({r.get('device', 'cpu') for r in results})
    report = dict(
        machine=dict(cpu_threads=torch.get_num_threads(), torch=torch.__version__,
            matmul_fp32_gflops={d: round(matmul_rate(d), 1) for d in devices}),
        official_creps_cpu_reference=OFFICIAL_CPU_REFERENCE,
        results=results)
    for r in results:
        for key in ['gflops', 'line_gflops', 'pixel_gflops']:
            if key in r:
                r[key.replace('gflops', 'fraction_of_matmul_rate')] = round(r[key] / report['machine']['matmul_fp32_gflops'][r['device']], 3)
    print(json.dumps(report, indent=1))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
