// The page of viewer.py: an OpenSeadragon deep-zoom view of a generator's image plane.
// The server's /api/info says how its tile pyramid maps onto the plane: level L (ours)
// splits `world` into 2^L x 2^L tiles of tile_size pixels. OpenSeadragon counts levels
// from a 1-pixel image up, so its level l is ours at l - log2(tile_size).
'use strict';

const $ = (id) => document.getElementById(id);
const creps = window.creps = { tilesLoaded: 0, tilesFailed: 0, tilesCancelled: 0 }; // Read by the browser test.

function showStatus(text) { $('status').textContent = text; }

async function checkedFetch(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(await response.text());
  return response;
}

function currentImage(info) {
  const cls = info.c_dim > 0 ? $('class').value : '-';
  return `${info.token}/${$('seed').value || 0}/${encodeURIComponent(cls)}/${Number($('psi').value)}`;
}

// Tile requests in flight. OpenSeadragon lets a request run to its end even when its tile has left
// the view, and the server renders one in its turn, so a fast zoom would queue seconds of renders
// nobody sees. Each request is a fetch() with its own AbortController: pruneRequests() cancels the
// stale ones, and the server drops a queued tile once no request waits for it.
const inflight = new Set();
const CANCELLED = 'cancelled: out of view';

function downloadTileStart(job) {
  const request = { job, controller: new AbortController(), abortedByOpenSeadragon: false };
  job.userData.request = request;
  inflight.add(request);
  fetch(job.src, { signal: request.controller.signal })
    .then(async (response) => {
      if (!response.ok) throw new Error(await response.text());
      return response.blob();
    })
    .then((blob) => job.finish(blob, null, 'rasterBlob'))
    .catch((err) => { if (!request.abortedByOpenSeadragon) job.fail(request.controller.signal.aborted ? CANCELLED : err.message, null); })
    .finally(() => inflight.delete(request));
}

function downloadTileAbort(job) { // OpenSeadragon's own abort (a timeout): it fails the job itself.
  const { request } = job.userData;
  if (request) { request.abortedByOpenSeadragon = true; request.controller.abort(); }
}

// Cancel the requests of another image, of tiles outside the view (with half a view of margin on
// every side, for a pan), or of levels finer than the view needs (its pixels at 2x the screen's).
function pruneRequests(viewer) {
  const item = viewer.world.getItemAt(0);
  const view = viewer.viewport.getBounds(true);
  const margin = new OpenSeadragon.Rect(view.x - view.width / 2, view.y - view.height / 2, view.width * 2, view.height * 2);
  const screenPixels = viewer.viewport.getContainerSize().x * OpenSeadragon.pixelDensityRatio;
  const finest = Math.ceil(Math.log2(screenPixels / view.width)) + 1; // Level l is 2^l pixels wide.
  for (const request of inflight) {
    const { job } = request;
    const tile = job.tile;
    const wanted = item && job.source === item.source && tile.level <= finest
      && margin.intersection(item.source.getTileBounds(tile.level, tile.x, tile.y)) !== null;
    if (!wanted) request.controller.abort();
  }
}

function tileSource(info) {
  const image = currentImage(info);
  if (!info.lines) return { type: 'image', url: `/image/${image}.png`, buildPyramid: false };
  const offset = Math.round(Math.log2(info.tile_size));
  const side = info.tile_size * 2 ** info.max_level;
  return {
    width: side, height: side, tileSize: info.tile_size, tileOverlap: 0,
    minLevel: offset, maxLevel: info.max_level + offset,
    getTileUrl: (level, x, y) => `/tile/${image}/${level - offset}/${x}/${y}.png`,
    downloadTileStart, downloadTileAbort,
  };
}

// OpenSeadragon's viewport coordinates (the pyramid's width is 1) <-> the image plane.
function toPlane(info, rect) {
  const [x0, x1, y0, y1] = info.world;
  return [x0 + rect.x * (x1 - x0), x0 + (rect.x + rect.width) * (x1 - x0),
          y0 + rect.y * (y1 - y0), y0 + (rect.y + rect.height) * (y1 - y0)];
}

function frameRect(info) {
  const [x0, x1, y0, y1] = info.world;
  return new OpenSeadragon.Rect(-x0 / (x1 - x0), -y0 / (y1 - y0), 1 / (x1 - x0), 1 / (y1 - y0));
}

async function download(info, viewer) {
  const width = Number($('width').value), height = Number($('height').value);
  // The rendered region: the view's centre and width, with the height of the chosen aspect (square pixels).
  const bounds = viewer.viewport.getBounds(true);
  const rectHeight = bounds.width * height / width;
  const rect = new OpenSeadragon.Rect(bounds.x, bounds.y + (bounds.height - rectHeight) / 2, bounds.width, rectHeight);
  const body = { seed: $('seed').value || 0, cls: info.c_dim > 0 ? $('class').value : '-', psi: Number($('psi').value),
    viewport: toPlane(info, rect), width, height };
  const progress = $('progress');
  progress.hidden = false; progress.value = 0; $('download').disabled = true;
  try {
    const job = await (await checkedFetch('/api/downloads', { method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' } })).json();
    for (let state = job; !state.finished; ) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      state = await (await checkedFetch(`/api/downloads/${job.id}`)).json();
      progress.value = state.done / state.total;
      if (state.error) throw new Error(state.error);
    }
    const link = document.createElement('a');
    link.href = `/api/downloads/${job.id}/image`;
    link.download = `seed${body.seed}-${width}x${height}.png`;
    link.click();
    showStatus('');
  } catch (err) {
    showStatus(`Download failed: ${err.message}`);
  } finally {
    progress.hidden = true; $('download').disabled = false;
  }
}

async function main() {
  const info = creps.info = await (await checkedFetch('/api/info')).json();
  $('title').textContent = info.network;
  document.title = `${info.network} - CREPS viewer`;
  if (info.c_dim > 0) {
    for (let i = 0; i < info.c_dim; i++) {
      const option = document.createElement('option');
      option.value = i;
      option.textContent = info.class_names ? `${i}: ${info.class_names[i]}` : `${i}`;
      $('class').appendChild(option);
    }
  } else {
    $('class-label').hidden = true;
  }
  if (!info.lines) {
    $('note').textContent = `${info.kind} renders only at its training resolution (${info.resolution}x${info.resolution}): no deep zoom.`;
    $('download').disabled = true;
  }

  const viewer = creps.viewer = OpenSeadragon({
    element: $('view'), prefixUrl: '/osd/images/', drawer: 'canvas', tileSources: tileSource(info),
    showNavigator: true, navigatorPosition: 'BOTTOM_RIGHT', visibilityRatio: 0.05, constrainDuringPan: false,
    maxZoomPixelRatio: 4, minZoomImageRatio: 0.2, imageLoaderLimit: 6, timeout: 300000, preserveViewport: true,
    homeFillsViewer: false, showRotationControl: false,
  });
  viewer.addHandler('tile-loaded', () => { creps.tilesLoaded++; });
  viewer.addHandler('tile-load-failed', (event) => {
    if (event.message === CANCELLED) {
      // OpenSeadragon marks a failed tile as missing for good once this handler returns; a
      // cancelled one must load again when it comes back into view.
      creps.tilesCancelled++;
      queueMicrotask(() => { event.tile.exists = true; });
      return;
    }
    creps.tilesFailed++;
    showStatus(`A tile failed to load: ${event.message}`);
  });
  let lastPrune = 0;
  viewer.addHandler('animation', () => {
    if (performance.now() - lastPrune > 100) { lastPrune = performance.now(); pruneRequests(viewer); }
  });
  viewer.addHandler('animation-finish', () => pruneRequests(viewer));
  viewer.world.addHandler('add-item', () => pruneRequests(viewer));
  const home = () => { if (info.lines) viewer.viewport.fitBounds(frameRect(info), true); };
  viewer.addOnceHandler('open', home);
  creps.home = home;

  const reopen = () => { $('psi-value').textContent = Number($('psi').value).toFixed(2); viewer.open(tileSource(info)); };
  $('seed').addEventListener('change', reopen);
  $('class').addEventListener('change', reopen);
  $('psi').addEventListener('change', reopen);
  $('psi').addEventListener('input', () => { $('psi-value').textContent = Number($('psi').value).toFixed(2); });
  $('random').addEventListener('click', () => { $('seed').value = Math.floor(Math.random() * 2 ** 32); reopen(); });
  $('home').addEventListener('click', home);
  $('download').addEventListener('click', () => download(info, viewer));
}

main().catch((err) => showStatus(`The viewer could not start: ${err.message}`));
