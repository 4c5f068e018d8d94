"""A deep-zoom web viewer: pan and zoom into a generator's continuous image from a browser.

    python viewer.py                                  # the shipped model, http://127.0.0.1:8765
    python viewer.py --network=g.pkl --device=cuda --port=9000

The page (web/index.html, with OpenSeadragon from npm: `npm ci --prefix web`) shows the
image plane of a seed as a deep-zoom pyramid of 256x256 tiles. A tile is rendered on
demand through the coordinate lines of gen_images.py (render.lines_for_viewport): level L
splits the reachable region WORLD into 2^L x 2^L tiles, so zooming in one level doubles the
sampling density, down to MAX_LEVEL, and panning reaches beyond the training frame. A
network that cannot render at arbitrary lines (StyleGAN2/3) is shown as one image at its
training resolution.

A tile's URL is a pure function of (network, seed, class, psi, level, x, y), so tiles are
served with immutable caching headers and kept in a bounded in-process LRU. Tile requests
wait in one queue, rendered on one device thread in strips that share their rows; a
request whose browser stopped waiting (a tile panned out of view) is dropped from the
queue before it is rendered; the page cancels the requests of tiles that left the view
(OpenSeadragon itself lets them run to their end). Downloads render the current view at a chosen size through
gen_images' tiled path on a second thread, with progress.
"""

import asyncio
import collections
import concurrent.futures
import hashlib
import io
import itertools
import math
import os
import re
import time

import aiohttp.web
import click
import PIL.Image
import torch

import gen_images
import legacy
from torch_utils import cli
from torch_utils import render
from training.networks_creps import PRECISIONS, default_precision

#----------------------------------------------------------------------------

TILE_SIZE = 256                 # Pixels per tile side.
WORLD = (-0.5, 1.5, -0.5, 1.5)  # x0, x1, y0, y1: the reachable region of the image plane; the training frame [0, 1]^2 is its centre.
# Deepest level: its pixel spacing (2 / (256 * 2^16) = 1.2e-7) is the float32 spacing of the
# coordinates near 1.5, the resolution at which the network receives them.
MAX_LEVEL = 16
MAX_PSI = 10                    # |truncation psi| accepted.
MAX_DOWNLOAD_PIXELS = 8192 * 8192
WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'web')
OSD_DIR = os.path.join(WEB_DIR, 'node_modules', 'openseadragon', 'build', 'openseadragon')
IMMUTABLE = {'Cache-Control': 'public, max-age=31536000, immutable'}

class BadRequest(ValueError):
    """A request the viewer refuses: HTTP 400 with this one-line reason."""

#----------------------------------------------------------------------------
# Tile geometry.

def tile_viewport(level, x, y, tile_size=TILE_SIZE, world=WORLD):
    """The viewport (x0, x1, y0, y1) whose lines_for_viewport(size=(tile_size, tile_size))
    are the pixel centres of tile (x, y) of `level`: the pyramid level of
    tile_size * 2^level pixels per side over `world`. Adjacent tiles continue each other's
    pixel grid, so a tile equals the matching region of a render of several tiles."""
    side = tile_size << level
    step_x = (world[1] - world[0]) / side
    step_y = (world[3] - world[2]) / side
    cx = world[0] + (x * tile_size + 0.5) * step_x
    cy = world[2] + (y * tile_size + 0.5) * step_y
    return cx, cx + (tile_size - 1) * step_x, cy, cy + (tile_size - 1) * step_y

def check_tile(level, x, y):
    """Level and tile indices as ints, or BadRequest."""
    if not 0 <= level <= MAX_LEVEL:
        raise BadRequest(f'level {level} is out of range: 0 to {MAX_LEVEL}')
    if not (0 <= x < 2 ** level and 0 <= y < 2 ** level):
        raise BadRequest(f'tile {x},{y} is out of range at level {level}: 0 to {2 ** level - 1} each')

def parse_int(text, what):
    if not re.fullmatch(r'\d{1,12}', text):
        raise BadRequest(f'{what} {text!r} is not a non-negative integer')
    return int(text)

def parse_seed(text):
    seed = parse_int(text, 'seed')
    if seed >= 2 ** 32:
        raise BadRequest(f'seed {seed} is out of range: 0 to {2 ** 32 - 1}')
    return seed

def parse_psi(text):
    try:
        psi = float(text)
    except ValueError:
        raise BadRequest(f'psi {text!r} is not a number') from None
    if not (math.isfinite(psi) and abs(psi) <= MAX_PSI):
        raise BadRequest(f'psi {text!r} is out of range: -{MAX_PSI} to {MAX_PSI}')
    return psi

#----------------------------------------------------------------------------

class LRUCache:
    """PNG bytes by key, at most `max_bytes` in all; the least recently used go first."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items = collections.OrderedDict()

    def get(self, key):
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key, value):
        if key in self._items:
            self.bytes -= len(self._items.pop(key))
        self._items[key] = value
        self.bytes += len(value)
        while self.bytes > self.max_bytes and self._items:
            self.bytes -= len(self._items.popitem(last=False)[1])

    def __len__(self):
        return len(self._items)

def encode_png(img):
    """uint8 [H, W, C] as PNG bytes."""
    buf = io.BytesIO()
    PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format='PNG', compress_level=1)
    return buf.getvalue()

def latent_and_label(G, seed, class_idx, device):
    """z [1, z_dim] of `seed` (as gen_images draws it) and the one-hot label [1, c_dim] of `class_idx` (None: no class)."""
    c = torch.zeros([1, G.c_dim], device=device)
    if class_idx is not None:
        c[:, class_idx] = 1
    return cli.seed_latents(G, [seed], device), c

class Pending:
    """A queued tile: the future its requests wait on, and how many still wait."""
    def __init__(self, future):
        self.future = future
        self.waiters = 0

class TileRenderer:
    """Renders tiles on one thread, in strips of up to `max_batch` tiles that share their rows.

    Requests for the same tile share one render; a tile whose every request was
    cancelled (the browser no longer needs it) is dropped before it is rendered.
    """

    def __init__(self,
        G,                          # The generator (eval mode, on `device`).
        device,                     # torch.device of G.
        precision   = 'fp32',       # Compute precision of the synthesis network.
        cache_bytes = 128 << 20,    # Bound of the tile LRU.
        max_batch   = 8,            # Tiles rendered in one call at most.
        max_pending = 512,          # Queued tiles at most; further requests get HTTP 503.
    ):
        self.G = G
        self.device = device
        self.precision = precision
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.cache = LRUCache(cache_bytes)
        self.pending = collections.OrderedDict() # key -> Pending, oldest first.
        self.stats = dict.fromkeys(['rendered', 'dropped', 'cancelled', 'batches', 'cache_hits'], 0) # 'cancelled' counts requests.
        self.latencies = collections.deque(maxlen=10000) # Seconds from request to PNG, of the tiles not in the cache.
        self._ws = collections.OrderedDict()     # (seed, class, psi) -> ws, a few recent ones.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='tiles')
        self._wake = asyncio.Event()
        self._task = None

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def tile(self, key):
        """PNG bytes of the tile `key` = (seed, class_idx, psi, level, x, y)."""
        png = self.cache.get(key)
        if png is not None:
            self.stats['cache_hits'] += 1
            return png
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= self.max_pending:
                raise aiohttp.web.HTTPServiceUnavailable(text='too many tiles queued; try again', headers={'Retry-After': '1'})
            entry = self.pending[key] = Pending(asyncio.get_running_loop().create_future())
            self._wake.set()
        entry.waiters += 1
        start = time.perf_counter()
        try:
            png = await asyncio.shield(entry.future)
        except asyncio.CancelledError: # The client went away (the page cancels tiles that left the view).
            self.stats['cancelled'] += 1
            raise
        finally:
            entry.waiters -= 1
        self.latencies.append(time.perf_counter() - start)
        return png

    def _next_batch(self):
        """The oldest queued tile that someone still waits for, with the queued tiles of
        the same image, level and row (they share their row coordinates)."""
        for key in [key for key, entry in self.pending.items() if entry.waiters == 0]:
            self.pending.pop(key).future.cancel()
            self.stats['dropped'] += 1
        if not self.pending:
            return []
        first = next(iter(self.pending))
        same_row = [key for key in self.pending if key[:4] == first[:4] and key[5] == first[5]]
        return sorted(same_row[:self.max_batch], key=lambda key: key[4])

    async def _serve(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while batch := self._next_batch():
                try:
                    pngs = await loop.run_in_executor(self._executor, self._render_strip, batch)
                except Exception as err: # pylint: disable=broad-except # Reported to the waiting requests.
                    pngs = [err] * len(batch)
                for key, png in zip(batch, pngs):
                    entry = self.pending.pop(key)
                    if isinstance(png, Exception):
                        entry.future.set_exception(png)
                        continue
                    self.cache.put(key, png)
                    entry.future.set_result(png)

    def mapped(self, seed, class_idx, psi):
        """ws [1, num_ws, w_dim] of a seed, class and psi; the last few are kept."""
        key = (seed, class_idx, psi)
        if key not in self._ws:
            with torch.no_grad():
                self._ws[key] = self.G.mapping(*latent_and_label(self.G, seed, class_idx, self.device), truncation_psi=psi)
            while len(self._ws) > 16:
                self._ws.popitem(last=False)
        return self._ws[key]

    def _render_strip(self, batch):
        """PNGs of tiles of one image, level and row, rendered in one call (runs on the tile thread)."""
        seed, class_idx, psi, level, _x, y = batch[0]
        ws = self.mapped(seed, class_idx, psi)
        lines = [render.lines_for_viewport(self.G.img_resolution, tile_viewport(level, key[4], y), size=(TILE_SIZE, TILE_SIZE)) for key in batch]
        rows, cols = lines[0][0], torch.cat([tile_cols for _rows, tile_cols in lines])
        with torch.no_grad():
            strip = render.render_uint8(self.G.synthesis, ws, rows, cols, precision=self.precision)[0]
        self.stats['rendered'] += len(batch)
        self.stats['batches'] += 1
        return [encode_png(strip[:, i * TILE_SIZE : (i + 1) * TILE_SIZE]) for i in range(len(batch))]

#----------------------------------------------------------------------------

class Download:
    """A render of a view at a chosen size, on its own thread, with progress."""

    def __init__(self, total):
        self.done = 0
        self.total = total
        self.png = None
        self.error = None

    def advance(self):
        self.done += 1

    def state(self):
        return dict(done=self.done, total=self.total, finished=self.png is not None or self.error is not None, error=self.error)

class Viewer:
    """The viewer's state and HTTP handlers for one network."""

    def __init__(self, G, class_names, device, precision, token, network_name, **renderer_kwargs):
        self.G = G
        self.class_names = class_names
        self.device = device
        self.precision = precision
        self.token = token
        self.network_name = network_name
        self.lines_based = render.supports_lines(G.synthesis)
        self.renderer = TileRenderer(G, device, precision, **renderer_kwargs)
        self.downloads = collections.OrderedDict() # id -> Download, the last few.
        self._download_ids = itertools.count()
        self.download_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='downloads')

    def info(self):
        return dict(network=self.network_name, token=self.token, resolution=self.G.img_resolution, channels=self.G.img_channels,
            c_dim=self.G.c_dim, class_names=self.class_names, lines=self.lines_based, tile_size=TILE_SIZE, max_level=MAX_LEVEL,
            world=WORLD, kind=f'{type(self.G).__module__}.{type(self.G).__name__}')

    def parse_class(self, text):
        """None for an unconditional network ('-'), else the class index of `text` (index or name)."""
        if self.G.c_dim == 0:
            if text != '-':
                raise BadRequest('the network is unconditional: its class must be -')
            return None
        try:
            return cli.class_index(text, self.G.c_dim, self.class_names)
        except click.BadParameter as err:
            raise BadRequest(err.message) from None

    def check_token(self, token):
        if token != self.token:
            raise aiohttp.web.HTTPNotFound(text=f'this server shows network {self.token}, not {token}; reload the page')

    async def handle_tile(self, request):
        m = request.match_info
        self.check_token(m['token'])
        if not self.lines_based:
            raise BadRequest('this network renders only at its training resolution: use /image/')
        seed, class_idx, psi = parse_seed(m['seed']), self.parse_class(m['cls']), parse_psi(m['psi'])
        level, x, y = parse_int(m['level'], 'level'), parse_int(m['x'], 'x'), parse_int(m['y'], 'y')
        check_tile(level, x, y)
        key = (seed, class_idx, psi, level, x, y)
        etag = '"' + hashlib.sha256(repr((self.token, key)).encode()).hexdigest()[:24] + '"'
        if request.headers.get('If-None-Match') == etag: # A browser revalidating: the tile cannot have changed.
            return aiohttp.web.Response(status=304, headers=dict(IMMUTABLE, ETag=etag))
        png = await self.renderer.tile(key)
        return aiohttp.web.Response(body=png, content_type='image/png', headers=dict(IMMUTABLE, ETag=etag))

    async def handle_image(self, request):
        """The image at the training resolution (any network)."""
        m = request.match_info
        self.check_token(m['token'])
        seed, class_idx, psi = parse_seed(m['seed']), self.parse_class(m['cls']), parse_psi(m['psi'])
        lines = render.lines_for_scale(self.G.img_resolution, 1) if self.lines_based else None
        z, c = latent_and_label(self.G, seed, class_idx, self.device)
        work = lambda: encode_png(gen_images.generate(self.G, z, c, truncation_psi=psi, lines=lines, precision=self.precision)[0])
        png = await asyncio.get_running_loop().run_in_executor(self.download_executor, work)
        return aiohttp.web.Response(body=png, content_type='image/png', headers=IMMUTABLE)

    async def handle_download(self, request):
        """POST {seed, cls, psi, viewport: [x0, x1, y0, y1], width, height} -> {id}: starts a render."""
        try:
            body = await request.json()
            seed, class_idx, psi = parse_seed(str(body['seed'])), self.parse_class(str(body['cls'])), parse_psi(str(body['psi']))
            viewport = [float(v) for v in body['viewport']]
            width, height = parse_int(str(body['width']), 'width'), parse_int(str(body['height']), 'height')
        except BadRequest:
            raise
        except (ValueError, KeyError, TypeError) as err:
            raise BadRequest(f'expected JSON {{seed, cls, psi, viewport: [x0, x1, y0, y1], width, height}} ({type(err).__name__}: {err})') from None
        if not self.lines_based:
            raise BadRequest('this network renders only at its training resolution')
        if len(viewport) != 4 or not all(math.isfinite(v) for v in viewport):
            raise BadRequest('viewport must be 4 finite numbers x0, x1, y0, y1')
        if not (1 <= width and 1 <= height and width * height <= MAX_DOWNLOAD_PIXELS):
            raise BadRequest(f'size {width}x{height} is out of range: at least 1x1, at most {MAX_DOWNLOAD_PIXELS} pixels')
        lines = render.lines_for_viewport(self.G.img_resolution, viewport, size=(width, height))
        tile = render.auto_tile(1, height, width, self.G.img_channels) or 1024
        job = Download(total=len(list(render.tiles(height, width, tile))))
        job_id = str(next(self._download_ids))
        self.downloads[job_id] = job
        while len(self.downloads) > 4: # Finished downloads hold their PNG until they are among the oldest.
            self.downloads.popitem(last=False)
        z, c = latent_and_label(self.G, seed, class_idx, self.device)
        def work():
            try:
                img = gen_images.generate(self.G, z, c, truncation_psi=psi, lines=lines, tile=tile, precision=self.precision, on_tile=job.advance)
                job.png = encode_png(img[0])
            except Exception as err: # pylint: disable=broad-except # Shown on the page as one line.
                job.error = f'{type(err).__name__}: {err}'
        asyncio.get_running_loop().run_in_executor(self.download_executor, work)
        return aiohttp.web.json_response(dict(id=job_id, **job.state()))

    def _job(self, request):
        job = self.downloads.get(request.match_info['id'])
        if job is None:
            raise aiohttp.web.HTTPNotFound(text=f'no download {request.match_info["id"]!r} (only the last few are kept)')
        return job

    async def handle_download_state(self, request):
        return aiohttp.web.json_response(self._job(request).state())

    async def handle_download_image(self, request):
        job = self._job(request)
        if job.png is None:
            raise aiohttp.web.HTTPConflict(text=job.error or 'the render is not finished')
        return aiohttp.web.Response(body=job.png, content_type='image/png',
            headers={'Content-Disposition': f'attachment; filename="view-{request.match_info["id"]}.png"'})

    async def handle_info(self, _request):
        return aiohttp.web.json_response(self.info())

    async def handle_stats(self, _request):
        latencies = sorted(self.renderer.latencies)
        percentile = lambda q: round(latencies[min(int(q * len(latencies)), len(latencies) - 1)], 4) if latencies else None
        return aiohttp.web.json_response(dict(self.renderer.stats, pending=len(self.renderer.pending),
            cached_tiles=len(self.renderer.cache), cached_bytes=self.renderer.cache.bytes,
            latency_median_s=percentile(0.5), latency_p95_s=percentile(0.95), latency_count=len(latencies)))

#----------------------------------------------------------------------------

@aiohttp.web.middleware
async def one_line_errors(request, handler):
    """Refused requests get HTTP 400 and their one-line reason as text, never a traceback."""
    try:
        return await handler(request)
    except BadRequest as err:
        raise aiohttp.web.HTTPBadRequest(text=str(err)) from None

def make_app(viewer):
    """The aiohttp application serving `viewer` (a Viewer)."""
    app = aiohttp.web.Application(middlewares=[one_line_errors])
    tile_path = '/{token}/{seed}/{cls}/{psi}'
    for route, name in [('/', 'index.html'), ('/viewer.js', 'viewer.js')]:
        async def page(_request, path=os.path.join(WEB_DIR, name)):
            return aiohttp.web.FileResponse(path)
        app.router.add_get(route, page)
    app.router.add_get('/api/info', viewer.handle_info)
    app.router.add_get('/api/stats', viewer.handle_stats)
    app.router.add_get('/tile' + tile_path + '/{level}/{x}/{y}.png', viewer.handle_tile)
    app.router.add_get('/image' + tile_path + '.png', viewer.handle_image)
    app.router.add_post('/api/downloads', viewer.handle_download)
    app.router.add_get('/api/downloads/{id}', viewer.handle_download_state)
    app.router.add_get('/api/downloads/{id}/image', viewer.handle_download_image)
    if os.path.isdir(OSD_DIR):
        app.router.add_static('/osd/', OSD_DIR)
    async def lifecycle(_app):
        viewer.renderer.start()
        yield
        await viewer.renderer.stop()
        viewer.download_executor.shutdown(wait=False)
    app.cleanup_ctx.append(lifecycle)
    return app

def network_token(path):
    """A short content hash of the network file: tile URLs stay valid exactly as long as the weights."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()[:16]

#----------------------------------------------------------------------------

@click.command()
@cli.network_option(legacy.DEFAULT_NETWORK)
@click.option('--host', default='127.0.0.1', show_default=True, help='Address to listen on (0.0.0.0: every interface, reachable by anyone on the network)')
@click.option('--port', type=click.IntRange(0, 65535), default=8765, show_default=True, help='Port to listen on (0: any free port)')
@click.option('--precision', type=click.Choice(PRECISIONS), help='Compute precision [default: fp16 mixed on CUDA, fp32 on CPU]')
@click.option('--device', help='Torch device', default=cli.default_device(), show_default=True)
@cli.trust_pickle_option
def main(network_pkl, host, port, precision, device, trust_pickle):
    """Serve a deep-zoom view of a generator's images at http://HOST:PORT.

    \b
    # The shipped model on this machine's CPU; open http://127.0.0.1:8765 in a browser:
    python viewer.py
    \b
    # A network on a remote GPU machine, reached through ssh port forwarding:
    ssh -L 8765:127.0.0.1:8765 gpu-host 'cd creps && python viewer.py --network=g.pkl --device=cuda'
    """
    if not os.path.isdir(OSD_DIR):
        raise click.ClickException(f'OpenSeadragon is not installed in {os.path.relpath(WEB_DIR)}: run  npm ci --prefix web')
    device = cli.resolve_device(device)
    precision = cli.resolve_precision(precision, device, default_precision(device))
    print(f'Loading network from "{network_pkl}"...')
    with cli.one_line_errors(legacy.NetworkPickleError):
        G, class_names = legacy.load_generator(network_pkl, trust=trust_pickle)
        local = network_pkl[len('file://'):] if network_pkl.startswith('file://') else network_pkl
        token = network_token(local) if os.path.isfile(local) else hashlib.sha256(network_pkl.encode()).hexdigest()[:16]
    G = G.eval().requires_grad_(False).to(device)
    viewer = Viewer(G, class_names, device, precision, token, os.path.basename(network_pkl))
    if not viewer.lines_based:
        print(f'{viewer.info()["kind"]} renders only at its training resolution: the page shows {G.img_resolution}x{G.img_resolution} images, without deep zoom.')
    where = 'only this machine can connect' if host in ('127.0.0.1', 'localhost', '::1') else 'reachable from other machines'
    print(f'Serving on http://{host}:{port} ({where}); Ctrl-C stops.')
    try:
        aiohttp.web.run_app(make_app(viewer), host=host, port=port, print=None, handler_cancellation=True)
    except OSError as err:
        raise click.ClickException(f'cannot listen on {host}:{port}: {err.strerror or err}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
