"""viewer.py under a browser that zooms continuously: tile latency, throughput, peak memory.

Starts viewer.py (in its own process) and headless Chromium, which zooms in by key
presses (1.2x each), pans now and then, and zooms out again, for --seconds. Prints one
JSON line: tile latency from request to PNG (median, p95; tiles not in the cache), tiles
rendered per second, requests the page cancelled (tiles that left the view) and tiles
dropped from the queue for it (never rendered), render calls
(strips of tiles), the peak resident memory of the server process, and this machine's
float32 matmul rate for scale.

    python bench/bench_viewer.py                       # the shipped model, CPU
    python bench/bench_viewer.py --network=g.pkl --device=cuda --seconds=120

Needs Debian's chromium and chromium-driver, selenium and `npm ci --prefix web`.
Not a test: timings depend on the machine.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import click
import psutil
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import legacy # pylint: disable=wrong-import-position

#----------------------------------------------------------------------------

def matmul_gflops(n=2048, repeats=5):
    """This machine's float32 matmul rate (GFLOP/s), for reading the other figures."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b # pylint: disable=pointless-statement
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b # pylint: disable=pointless-statement
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def watch_peak_rss(pid, stop, result):
    """Poll the resident memory of process `pid` until `stop` is set; the peak into result['peak']."""
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            result['peak'] = max(result.get('peak', 0), proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.1)

def browse(url, seconds):
    """Headless Chromium zooming in and out of `url` for `seconds`; tiles the page loaded."""
    from selenium import webdriver # pylint: disable=import-outside-toplevel
    from selenium.webdriver.chrome.service import Service # pylint: disable=import-outside-toplevel
    from selenium.webdriver.common.keys import Keys # pylint: disable=import-outside-toplevel
    options = webdriver.ChromeOptions()
    options.binary_location = '/usr/bin/chromium'
    for arg in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1280,900']:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service('/usr/bin/chromedriver'), options=options)
    try:
        driver.get(url)
        while not driver.execute_script('return window.creps && creps.tilesLoaded > 0'):
            time.sleep(0.2)
        canvas = driver.find_element('css selector', '#view .openseadragon-canvas')
        start = time.time()
        presses = 0
        while time.time() - start < seconds:
            # 16 presses in (about 18x), a pan, 16 out: a user exploring, faster than tiles can render.
            phase = presses % 40
            key = '+' if phase < 16 else Keys.ARROW_RIGHT if phase < 20 else '-' if phase < 36 else Keys.ARROW_DOWN
            canvas.send_keys(key)
            presses += 1
            time.sleep(0.25)
        return driver.execute_script('return creps.tilesLoaded'), presses
    finally:
        driver.quit()

@click.command()
@click.option('--network', default=legacy.DEFAULT_NETWORK, show_default=True, help='Network to serve')
@click.option('--device', default='cpu', show_default=True, help='Device of the viewer')
@click.option('--seconds', type=click.FloatRange(min=5), default=60, show_default=True, help='How long the browser zooms')
def main(network, device, seconds):
    """Serve --network with viewer.py and zoom into it from headless Chromium; one JSON line."""
    gflops = matmul_gflops()
    port = free_port()
    server = subprocess.Popen([sys.executable, os.path.join(REPO, 'viewer.py'), f'--network={network}', f'--port={port}', f'--device={device}'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop, rss = threading.Event(), {}
    try:
        while 'Serving on' not in server.stdout.readline():
            if server.poll() is not None:
                raise click.ClickException('viewer.py did not start')
        watcher = threading.Thread(target=watch_peak_rss, args=(server.pid, stop, rss), daemon=True)
        watcher.start()
        idle_rss = psutil.Process(server.pid).memory_info().rss
        start = time.time()
        tiles_loaded, presses = browse(f'http://127.0.0.1:{port}/', seconds)
        elapsed = time.time() - start
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/stats') as f:
            stats = json.load(f)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(dict(network=os.path.basename(network), device=device, seconds=round(elapsed, 1), key_presses=presses,
        tiles_loaded_by_page=tiles_loaded, tiles_rendered=stats.get('rendered', 0), tiles_per_s=round(stats.get('rendered', 0) / elapsed, 2),
        requests_cancelled=stats.get('cancelled', 0), tiles_dropped=stats.get('dropped', 0), render_calls=stats.get('batches', 0), cache_hits=stats.get('cache_hits', 0),
        latency_median_s=stats.get('latency_median_s'), latency_p95_s=stats.get('latency_p95_s'),
        server_rss_idle_gb=round(idle_rss / 2**30, 3), server_rss_peak_gb=round(rss.get('peak', 0) / 2**30, 3),
        matmul_gflops=round(gflops, 1))))

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
