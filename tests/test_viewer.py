"""viewer.py: the tile geometry against gen_images.py, the HTTP API (status codes, caching,
bad input, downloads), the render queue (batching, dropping, bounded cache), and the page in
a real headless Chromium."""

import asyncio
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import aiohttp
import numpy as np
import PIL.Image
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

import gen_images
import viewer
from training.networks_creps import Generator
from training.networks_stylegan2 import Generator as StyleGAN2Generator

from clitest import assert_clean_error, invoke, invoke_ok

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')

#----------------------------------------------------------------------------

def make_generator(c_dim=3):
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=3, channel_base=512, channel_max=32, biline_channels=8)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    return G.eval().requires_grad_(False)

@pytest.fixture(scope='module')
def network(tmp_path_factory):
    path = tmp_path_factory.mktemp('viewer') / 'tiny.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'G_ema': make_generator(), 'class_names': ['cat', 'dog', 'emu']}, f)
    return str(path)

def make_viewer(G=None, class_names=('cat', 'dog', 'emu'), **renderer_kwargs):
    G = G if G is not None else make_generator()
    return viewer.Viewer(G, list(class_names) if G.c_dim else None, torch.device('cpu'), 'fp32', 'tok', 'tiny.pkl', **renderer_kwargs)

def with_client(v, body):
    """Run the coroutine function body(client) against the app of viewer `v`."""
    async def main():
        async with TestClient(TestServer(viewer.make_app(v))) as client:
            return await body(client)
    return asyncio.run(main())

def decode(png):
    return np.asarray(PIL.Image.open(io.BytesIO(png)))

#----------------------------------------------------------------------------

def test_tiles_equal_the_region_of_a_gen_images_render(network, tmp_path):
    """Four tiles of level 3 side by side are a 512x512 gen_images.py render of their viewport, to 1 in uint8."""
    level, x, y = 3, 3, 2
    x0, _, y0, _ = viewer.tile_viewport(level, x, y)
    _, x1, _, y1 = viewer.tile_viewport(level, x + 1, y + 1)
    invoke_ok(gen_images.generate_images, [f'--network={network}', '--seeds=5', '--class=1', '--trunc=0.7',
        f'--viewport={x0!r},{x1!r},{y0!r},{y1!r}', '--size=512x512', f'--outdir={tmp_path}'])
    expected = np.asarray(PIL.Image.open(tmp_path / gen_images.output_name(5, 1, 0.7, size=(512, 512), viewport=(x0, x1, y0, y1)))).astype(int)
    async def body(client):
        return {(i, j): decode(await (await client.get(f'/tile/tok/5/dog/0.7/{level}/{x + i}/{y + j}.png')).read())
            for i in range(2) for j in range(2)}
    tiles = with_client(make_viewer(), body)
    for (i, j), tile in tiles.items():
        region = expected[j * 256 : (j + 1) * 256, i * 256 : (i + 1) * 256]
        assert np.abs(tile.astype(int) - region).max() <= 1, (i, j)
    # The training frame is the middle of the reachable region; a level splits it in 2^level tiles per side.
    assert viewer.tile_viewport(0, 0, 0)[0] == pytest.approx(viewer.WORLD[0] + 1 / 256)
    assert viewer.tile_viewport(1, 1, 0)[0] - viewer.tile_viewport(1, 0, 0)[1] == pytest.approx(2 / 512)

def test_http_api_caching_and_bad_input():
    v = make_viewer()
    async def body(client):
        info = await (await client.get('/api/info')).json()
        assert info['class_names'] == ['cat', 'dog', 'emu'] and info['lines'] and info['tile_size'] == 256
        ok = await client.get('/tile/tok/1/0/1/0/0/0.png')
        assert ok.status == 200 and ok.content_type == 'image/png' and 'immutable' in ok.headers['Cache-Control']
        assert decode(await ok.read()).shape == (256, 256, 3)
        again = await client.get('/tile/tok/1/0/1/0/0/0.png', headers={'If-None-Match': ok.headers['ETag']})
        assert again.status == 304
        by_name = await client.get('/tile/tok/1/cat/1.0/0/0/0.png') # The same tile: from the cache.
        assert by_name.headers['ETag'] == ok.headers['ETag'] and v.renderer.stats['rendered'] == 1
        refused = {}
        for path in ['/tile/tok/x/0/1/0/0/0.png', '/tile/tok/4294967296/0/1/0/0/0.png', '/tile/tok/1/3/1/0/0/0.png',
                '/tile/tok/1/bird/1/0/0/0.png', '/tile/tok/1/0/nan/0/0/0.png', '/tile/tok/1/0/11/0/0/0.png',
                f'/tile/tok/1/0/1/{viewer.MAX_LEVEL + 1}/0/0.png', '/tile/tok/1/0/1/2/4/0.png', '/tile/tok/1/0/1/2/0/-1.png',
                '/tile/other/1/0/1/0/0/0.png', '/api/downloads/99']:
            response = await client.get(path)
            refused[path] = (response.status, await response.text())
        bad = await client.post('/api/downloads', data='{"seed": 1')
        refused['bad json'] = (bad.status, await bad.text())
        bad = await client.post('/api/downloads', json=dict(seed=1, cls=0, psi=1, viewport=[0, 1, 0, 1], width=10 ** 5, height=10 ** 5))
        refused['too large'] = (bad.status, await bad.text())
        return refused
    refused = with_client(v, body)
    for path, (status, text) in refused.items():
        assert status in (400, 404) and '\n' not in text.strip() and 'Traceback' not in text, (path, status, text)
    assert refused['/tile/tok/x/0/1/0/0/0.png'] == (400, "seed 'x' is not a non-negative integer")
    assert refused['/tile/tok/1/bird/1/0/0/0.png'][1].endswith('0=cat, 1=dog, 2=emu')
    assert 'out of range at level 2' in refused['/tile/tok/1/0/1/2/4/0.png'][1]
    assert refused['/tile/other/1/0/1/0/0/0.png'][0] == 404 and refused['/api/downloads/99'][0] == 404
    assert 'at most' in refused['too large'][1] and refused['bad json'][0] == 400

def test_download_renders_the_view_with_progress(network, tmp_path):
    viewport = [0.1, 0.7, 0.2, 0.5]
    invoke_ok(gen_images.generate_images, [f'--network={network}', '--seeds=3', '--class=2', f'--viewport={",".join(map(str, viewport))}',
        '--size=300x150', f'--outdir={tmp_path}'])
    async def body(client):
        job = await (await client.post('/api/downloads', json=dict(seed=3, cls='emu', psi=1, viewport=viewport, width=300, height=150))).json()
        states = [job]
        while not states[-1]['finished']:
            await asyncio.sleep(0.05)
            states.append(await (await client.get(f'/api/downloads/{job["id"]}')).json())
        response = await client.get(f'/api/downloads/{job["id"]}/image')
        assert response.status == 200 and 'attachment' in response.headers['Content-Disposition']
        return states, decode(await response.read())
    states, img = with_client(make_viewer(), body)
    assert states[-1]['done'] == states[-1]['total'] >= 1 and states[-1]['error'] is None
    assert np.array_equal(img, np.asarray(PIL.Image.open(tmp_path / gen_images.output_name(3, 2, size=(300, 150), viewport=viewport))))

def test_networks_without_lines_are_shown_at_their_training_resolution():
    torch.manual_seed(0)
    G = StyleGAN2Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
        channel_base=256, channel_max=16).eval()
    async def body(client):
        info = await (await client.get('/api/info')).json()
        tile = await client.get('/tile/tok/0/-/1/0/0/0.png')
        image = await client.get('/image/tok/0/-/1.png')
        cls = await client.get('/image/tok/0/1/1.png')
        return info, (tile.status, await tile.text()), decode(await image.read()), (cls.status, await cls.text())
    info, tile, image, cls = with_client(make_viewer(G), body)
    assert not info['lines'] and info['kind'] == 'training.networks_stylegan2.Generator'
    assert tile[0] == 400 and 'training resolution' in tile[1]
    assert image.shape == (16, 16, 3)
    assert cls == (400, 'the network is unconditional: its class must be -')

#----------------------------------------------------------------------------

def test_queue_batches_rows_and_drops_tiles_nobody_waits_for(monkeypatch):
    v = make_viewer(max_batch=4)
    renderer = v.renderer
    strips = []
    render_strip = renderer._render_strip # pylint: disable=protected-access
    def slow_strip(batch):
        strips.append(list(batch))
        time.sleep(0.3) # While the first strip renders, the rest queue up.
        return render_strip(batch)
    monkeypatch.setattr(renderer, '_render_strip', slow_strip)
    async def main():
        renderer.start()
        first = asyncio.ensure_future(renderer.tile((0, 0, 1.0, 2, 0, 0)))
        await asyncio.sleep(0.1)
        row = [asyncio.ensure_future(renderer.tile((0, 0, 1.0, 2, x, 1))) for x in range(4)]
        gone = [asyncio.ensure_future(renderer.tile((0, 0, 1.0, 2, x, 3))) for x in range(4)]
        shared = [asyncio.ensure_future(renderer.tile((0, 0, 1.0, 2, 0, 1)))] # Joins a queued tile.
        await asyncio.sleep(0.05)
        for task in gone: # Panned out of view before their turn.
            task.cancel()
        results = await asyncio.gather(first, *row, *shared)
        await renderer.stop()
        return results
    results = asyncio.run(main())
    assert [len(strip) for strip in strips] == [1, 4] # The four tiles of row 1 in one strip; row 3 never rendered.
    assert [key[4] for key in strips[1]] == [0, 1, 2, 3]
    assert renderer.stats['dropped'] == 4 and renderer.stats['rendered'] == 5
    assert results[-1] == results[1] and not renderer.pending
    assert len({png for png in results}) == 5

def test_a_client_that_goes_away_cancels_its_tile(monkeypatch):
    """Over a real socket: a request whose client disconnects while its tile waits in the queue is
    counted as cancelled, and the tile, which nobody waits for any more, is dropped unrendered."""
    v = make_viewer()
    renderer = v.renderer
    render_strip = renderer._render_strip # pylint: disable=protected-access
    rendered = []
    def slow_strip(batch):
        time.sleep(0.5) # Long enough for the second request to queue and go away.
        rendered.append(batch)
        return render_strip(batch)
    monkeypatch.setattr(renderer, '_render_strip', slow_strip)
    async def main():
        async with TestServer(viewer.make_app(v)) as server: # Which cancels handlers, as viewer.main does.
            async with aiohttp.ClientSession() as session:
                first = asyncio.ensure_future(session.get(server.make_url('/tile/tok/0/0/1/2/0/0.png')))
                await asyncio.sleep(0.1)
                with pytest.raises(asyncio.TimeoutError): # The client gives up and closes its connection.
                    await session.get(server.make_url('/tile/tok/0/0/1/2/3/3.png'), timeout=aiohttp.ClientTimeout(total=0.1))
                assert (await first).status == 200
                await asyncio.sleep(0.1)
                return dict(renderer.stats)
    stats = asyncio.run(main())
    assert stats['cancelled'] == 1 and stats['dropped'] == 1 and stats['rendered'] == 1
    assert [key[4:] for batch in rendered for key in batch] == [(0, 0)]

def test_cache_is_bounded():
    cache = viewer.LRUCache(max_bytes=10)
    for i in range(6):
        cache.put(i, b'abcd')
    assert cache.bytes <= 10 and len(cache) == 2 and cache.get(0) is None and cache.get(5) == b'abcd'
    cache.get(4)
    cache.put(6, b'abcd') # 5 was used least recently.
    assert cache.get(5) is None and cache.get(4) == b'abcd'

def test_command_line_errors(network, monkeypatch):
    assert_clean_error(invoke(viewer.main, ['--network=/nonexistent.pkl']), '/nonexistent.pkl', 'no such file')
    assert_clean_error(invoke(viewer.main, [f'--network={network}', '--port=70000']), '--port')
    assert_clean_error(invoke(viewer.main, [f'--network={network}', '--device=cuda:99']), '--device')
    monkeypatch.setattr(viewer, 'OSD_DIR', '/nonexistent')
    assert_clean_error(invoke(viewer.main, [f'--network={network}']), 'npm ci --prefix web')

#----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

# viewer.py with renders slowed down once the flag file (argv[1]) exists: the browser test's sweep
# then leaves tiles whose requests are still being served, on any machine, as on a large network.
SLOWABLE_SERVER = '''
import os, sys, time
flag = sys.argv.pop(1)
import viewer
render_strip = viewer.TileRenderer._render_strip
def slow_once_flagged(self, batch):
    if os.path.exists(flag):
        time.sleep(0.3)
    return render_strip(self, batch)
viewer.TileRenderer._render_strip = slow_once_flagged
viewer.main()
'''

def test_page_zooms_in_a_real_browser(network, tmp_path):
    """Headless Chromium opens the page, zooms in three levels with the keyboard, and the view shows
    rendered tiles that change with the zoom. VIEWER_SCREENSHOT=path keeps the first view (the README's screenshot,
    with VIEWER_TEST_NETWORK=models/creps-fmnist32.safetensors)."""
    missing = [what for what, ok in [('chromium', CHROMIUM), ('chromedriver', CHROMEDRIVER), ('web/node_modules (npm ci --prefix web)',
        os.path.isdir(viewer.OSD_DIR))] if not ok]
    if missing:
        pytest.skip(f'needs {" and ".join(missing)}; .ci/run installs them')
    webdriver = pytest.importorskip('selenium.webdriver', reason='needs selenium (pip install selenium)')
    from selenium.webdriver.chrome.service import Service # pylint: disable=import-outside-toplevel

    port = free_port()
    network = os.environ.get('VIEWER_TEST_NETWORK', network) # The README's screenshot shows the shipped model.
    slow_flag = tmp_path / 'slow'
    server = subprocess.Popen([sys.executable, '-c', SLOWABLE_SERVER, str(slow_flag), f'--network={network}', f'--port={port}', '--device=cpu'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'), cwd=REPO)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1000,800']:
        options.add_argument(arg)
    driver = None
    try:
        assert 'Serving on http://127.0.0.1' in server.stdout.readline() + server.stdout.readline()
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.get(f'http://127.0.0.1:{port}/')
        def settled():
            """Wait until the zoom animation has ended and every tile of the view has loaded; the view's screenshot."""
            deadline = time.time() + 120
            while time.time() < deadline:
                state = driver.execute_script('return window.creps && creps.viewer && [creps.tilesLoaded, creps.tilesFailed, '
                    'creps.viewer.world.getItemCount() > 0 && creps.viewer.world.getItemAt(0).getFullyLoaded(), '
                    'creps.viewer.viewport.getZoom(true) / creps.viewer.viewport.getZoom(false)]')
                if state and state[0] > 0 and state[2] and abs(state[3] - 1) < 1e-3:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError(f'the view did not load: {state}, status: {driver.find_element("id", "status").text!r}')
            assert state[1] == 0 # No tile failed.
            time.sleep(0.5) # Let the last tiles blend in.
            rect = driver.find_element('id', 'view').rect
            shot = PIL.Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert('RGB')
            # Above the navigator (bottom right), which shows the whole reachable region at every zoom.
            view = shot.crop((rect['x'], rect['y'], rect['x'] + rect['width'], rect['y'] + rect['height'] - 140))
            return state[0], np.asarray(view).astype(float)
        first_tiles, view = settled()
        shots = [view]
        if os.environ.get('VIEWER_SCREENSHOT'):
            driver.save_screenshot(os.environ['VIEWER_SCREENSHOT'])
        canvas = driver.find_element('css selector', '#view .openseadragon-canvas')
        get_zoom = lambda: driver.execute_script('return creps.viewer.viewport.getZoom(false)') # The zoom being animated to.
        start_zoom = get_zoom()
        for level in range(1, 4): # OpenSeadragon's keyboard zoom: each '+' zooms by 1.2; pressed until the zoom doubled.
            deadline = time.time() + 30
            while get_zoom() < start_zoom * 2 ** level * 0.999 and time.time() < deadline:
                canvas.send_keys('+')
                time.sleep(0.3)
            tiles, view = settled()
            shots.append(view)
        assert get_zoom() >= start_zoom * 8 * 0.999
        assert tiles > first_tiles # Deeper levels were rendered on demand.

        slow_flag.touch()
        # A fast sweep: the view pans by a view's width every 40 ms, much faster than tiles render, and
        # comes back. The page cancels the requests of the tiles it left (the server sees them go), none
        # of them counts as failed, and the final view loads completely (cancelled tiles load again).
        driver.execute_script('''
            const viewport = creps.viewer.viewport, home = viewport.getCenter(), step = viewport.getBounds().width;
            for (let i = 1; i <= 12; i++) setTimeout(() => viewport.panTo(new OpenSeadragon.Point(home.x + i * step, home.y)), 40 * i);
            setTimeout(() => viewport.panTo(home), 40 * 13);
            window.sweepHome = home;
        ''')
        time.sleep(1)
        settled()
        # The animated pan ends within a fraction of a pixel of where it started (a spring's tolerance),
        # which resamples every tile by that fraction: set the centre exactly, then compare.
        driver.execute_script('creps.viewer.viewport.panTo(window.sweepHome, true)')
        _tiles, back = settled()
        assert np.abs(back - view).mean() < 1 # The view it left, exactly.
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/stats') as f:
            stats = json.load(f)
        cancelled = driver.execute_script('return creps.tilesCancelled')
        # How many of them the server saw depends on how fast it renders (a request that got its tile
        # before the page let go of it is not cancelled); test_a_client_that_goes_away_cancels_its_tile
        # shows the server's side over a socket.
        assert cancelled > 0 and stats['cancelled'] <= cancelled, (cancelled, stats)
        for view in shots:
            assert view.std() > 5 # Rendered tiles, not a blank canvas.
        for a, b in zip(shots[:-1], shots[1:]):
            assert np.abs(a - b).mean() > 2 # The view changed with the zoom.
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)

#----------------------------------------------------------------------------
