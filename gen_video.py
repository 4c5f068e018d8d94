"""Render videos from a network pickle: latent interpolation grids, and zoom and
pan through the continuous image of an any-scale generator.

Interpolation (NVIDIA's gen_video.py: the same seeds give the same keyframes
in the same cells): a grid of C x R cells, each moving through `num_keyframes`
latents in W space, `w_frames` frames from one keyframe to the next, and back
to the first so that the video loops seamlessly. The seeds fill the cells one
after the other, each cell taking `num_keyframes` consecutive seeds (the list
repeated when too few are given).

Zoom and pan (CREPS): a camera path through the continuous image of one seed.
Frame t (0 at the first frame, 1 at the last) shows the view centred on
`center + t * pan`, magnified `zoom_to ** t` times (a geometric zoom, which the
eye sees as steady). At magnification 1 the longer side of the frame spans the
training frame, with square pixels; every frame is rendered through coordinate
lines, as gen_images.py renders a viewport, and in tiles when it is large.

Frames go to ffmpeg (imageio-ffmpeg carries its own binary) as they are made,
so memory does not grow with the length of the video; the file is written
under a temporary name and renamed when complete.
"""

import contextlib
import os

import click
import imageio_ffmpeg
import numpy as np
import scipy.interpolate
import torch
import tqdm

import dnnlib
import legacy
from torch_utils import cli
from torch_utils import render
from training.networks_creps import PRECISIONS, default_precision

#----------------------------------------------------------------------------

INTERPOLATION_DEFAULTS = dict(grid=(1, 1), w_frames=120, kind='cubic') # NVIDIA's.
ZOOM_DEFAULTS = dict(zoom_to=1.0, center=(0.5, 0.5), pan=(0.0, 0.0), frames=240)
VIDEO_QUALITY = 8 # imageio-ffmpeg's 0-10 scale; 8 gives libx264 CRF 10, near lossless: generator detail survives encoding.

#----------------------------------------------------------------------------
# Interpolation.

def keyframe_seeds(seeds, grid_w, grid_h, num_keyframes=None, shuffle_seed=None):
    """Seeds of the keyframes of every cell, int64 [grid_h, grid_w, num_keyframes]."""
    num_cells = grid_w * grid_h
    if num_keyframes is None:
        if len(seeds) % num_cells != 0:
            raise click.BadParameter(f'{len(seeds)} seeds do not fill a {grid_w}x{grid_h} grid evenly: '
                f'give a multiple of {num_cells} seeds, or --num-keyframes', param_hint='--seeds')
        num_keyframes = len(seeds) // num_cells
    all_seeds = np.resize(np.asarray(seeds, dtype=np.int64), num_cells * num_keyframes) # Repeats the list as needed.
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(all_seeds)
    return all_seeds.reshape(grid_h, grid_w, num_keyframes)

def looping_interpolator(keyframes, kind):
    """Function of time (in keyframes, any real) to the value interpolated through
    `keyframes` along their first axis, periodic in len(keyframes). The cubic
    spline has periodic boundary conditions, so the loop closes with no jump in
    value, speed or acceleration (NVIDIA's padding with copies of the keyframes
    only comes close)."""
    num_keyframes = keyframes.shape[0]
    times = np.arange(num_keyframes + 1)
    values = np.concatenate([keyframes, keyframes[:1]], axis=0)
    if kind == 'cubic':
        spline = scipy.interpolate.CubicSpline(times, values, axis=0, bc_type='periodic')
    else:
        spline = scipy.interpolate.interp1d(times, values, kind=kind, axis=0)
    return lambda t: spline(np.mod(t, num_keyframes))

def layout_grid(images, grid_w, grid_h):
    """uint8 [grid_h * grid_w, H, W, C], in raster order, -> one image [grid_h * H, grid_w * W, C]."""
    _, height, width, channels = images.shape
    return images.reshape(grid_h, grid_w, height, width, channels).transpose(0, 2, 1, 3, 4).reshape(grid_h * height, grid_w * width, channels)

def interpolation_frames(ws, grid_w, grid_h, w_frames, kind, render_cells):
    """Yield the frames of an interpolation video, uint8 [H, W, C].

    ws:             Keyframe latents [grid_h, grid_w, num_keyframes, num_ws, w_dim].
    w_frames:       Frames from one keyframe to the next.
    kind:           'linear' or 'cubic' (see looping_interpolator()).
    render_cells:   Function of ws [cells, num_ws, w_dim] to uint8 images [cells, h, w, C].
    """
    num_keyframes = ws.shape[2]
    interpolate = looping_interpolator(np.moveaxis(ws.cpu().numpy(), 2, 0), kind)
    for frame_idx in range(num_keyframes * w_frames):
        w = torch.from_numpy(interpolate(frame_idx / w_frames)).to(device=ws.device, dtype=ws.dtype)
        yield layout_grid(render_cells(w.reshape(grid_h * grid_w, *ws.shape[3:])), grid_w, grid_h)

#----------------------------------------------------------------------------
# Zoom and pan.

def camera_viewport(t, width, height, zoom_to, center, pan):
    """Viewport (x0, x1, y0, y1) of the frame at time t in [0, 1] of the camera path."""
    magnification = zoom_to ** t
    spacing = 1 / (max(width, height, 2) - 1) / magnification # Between pixel centres; square pixels.
    cx, cy = center[0] + t * pan[0], center[1] + t * pan[1]
    half_w, half_h = (width - 1) * spacing / 2, (height - 1) * spacing / 2
    return (cx - half_w, cx + half_w, cy - half_h, cy + half_h)

def zoom_frames(G, ws, width, height, num_frames, zoom_to, center, pan, tile=None, precision='fp32'):
    """Yield the frames of a zoom and pan video of the latent `ws` [1, num_ws, w_dim], uint8 [H, W, C]."""
    for frame_idx in range(num_frames):
        t = frame_idx / max(num_frames - 1, 1)
        lines = render.lines_for_viewport(None, camera_viewport(t, width, height, zoom_to, center, pan), size=(width, height))
        yield render.render_uint8(G.synthesis, ws, *lines, tile=tile, precision=precision)[0]

#----------------------------------------------------------------------------
# Encoding.

def to_rgb(frame):
    """uint8 [H, W, 1 or 3] -> [H, W, 3], contiguous, as ffmpeg reads it."""
    return np.ascontiguousarray(np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame)

@contextlib.contextmanager
def video_writer(path, width, height, fps):
    """Yield a function that appends one RGB frame, uint8 [height, width, 3], to an
    H.264 MP4 at `path`. The file appears at `path` only once it is complete and
    decodes to every frame appended; otherwise a ClickException says what failed
    and an earlier file at `path` is left as it was."""
    with dnnlib.util.atomic_output_path(path) as temp_path:
        # macro_block_size=1: ffmpeg must not resize frames; sizes are checked to be even instead.
        # ffmpeg_timeout=0: wait for ffmpeg to finish however long it takes, rather than kill it.
        writer = imageio_ffmpeg.write_frames(temp_path, (width, height), fps=fps, codec='libx264', pix_fmt_in='rgb24',
            quality=VIDEO_QUALITY, macro_block_size=1, ffmpeg_log_level='error', ffmpeg_timeout=0)
        writer.send(None) # Starts ffmpeg.
        sent = 0
        def append(frame):
            nonlocal sent
            try:
                writer.send(frame)
            except OSError as err: # ffmpeg has stopped (a full disk, say); its own message is on stderr.
                raise click.ClickException(f'{path}: the video encoder stopped after {sent} frames ({str(err).splitlines()[0]})') from None
            sent += 1
        try:
            yield append
        finally:
            writer.close()
        # imageio-ffmpeg does not report ffmpeg's exit status: the file itself must show every frame.
        try:
            written = imageio_ffmpeg.count_frames_and_secs(temp_path)[0]
        except (RuntimeError, OSError) as err:
            raise click.ClickException(f'{path}: the video encoder wrote no readable video ({str(err).splitlines()[0]})') from None
        if written != sent:
            raise click.ClickException(f'{path}: the video encoder wrote {written} of {sent} frames (is the disk full?)')

def check_output(path):
    """--output: an .mp4 path whose folder exists or can be made."""
    if not path.lower().endswith('.mp4'):
        raise click.BadParameter(f'{path!r} must be an .mp4 file', param_hint='--output')
    if os.path.isdir(path):
        raise click.BadParameter(f'{path!r} is a folder; give the video file name', param_hint='--output')
    try:
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    except OSError as err:
        raise click.BadParameter(f'cannot create the folder of {path!r}: {err.strerror}', param_hint='--output')

def check_even(width, height, what):
    """H.264 in the yuv420p format that players accept needs even frame sides."""
    if width % 2 or height % 2:
        raise click.UsageError(f'video frames must have even sides for H.264; {what} gives {width}x{height}: change --scale or --size')

def with_defaults(defaults, **values):
    """`values` (in their order), each None replaced by its entry in `defaults`: the
    options of one mode have no click defaults, so that giving one is detectable."""
    return {name: defaults[name] if value is None else value for name, value in values.items()}

def chosen_mode(given):
    """'zoom' or 'interpolation', from the names of the options given on the command line."""
    zoom = sorted(name for name in given if name in ZOOM_DEFAULTS)
    interpolation = sorted(name for name in given if name in INTERPOLATION_DEFAULTS or name in ('num_keyframes', 'shuffle_seed'))
    if zoom and interpolation:
        flags = lambda names: ', '.join('--' + name.replace('_', '-') for name in names)
        raise click.UsageError(f'{flags(zoom)} make a zoom video and {flags(interpolation)} an interpolation video: choose one')
    return 'zoom' if zoom else 'interpolation'

#----------------------------------------------------------------------------

@click.command()
@cli.network_option(legacy.DEFAULT_NETWORK)
@click.option('--seeds', type=cli.IntRange(), help="Random seeds, e.g. '0-7' (interpolation: the keyframes of every cell; zoom: one seed)", required=True)
@click.option('--output', help='Output video file', metavar='FILE.mp4', required=True, callback=cli.expand_path)
@click.option('--grid', type=cli.Size('a grid', '3x2 (columns x rows)', 'CxR'), help='Interpolation: grid of columns x rows  [default: 1x1]')
@click.option('--num-keyframes', type=click.IntRange(min=1), help='Interpolation: keyframes per cell  [default: seeds / cells]')
@click.option('--w-frames', type=click.IntRange(min=1), help='Interpolation: frames from one keyframe to the next  [default: 120]')
@click.option('--kind', type=click.Choice(['linear', 'cubic']), help='Interpolation: spline through the keyframes  [default: cubic]')
@click.option('--shuffle-seed', type=click.IntRange(min=0), help='Interpolation: shuffle the keyframe seeds with this random seed')
@click.option('--zoom-to', type=click.FloatRange(min=0, min_open=True), help='Zoom: magnification at the last frame (below 1 zooms out)  [default: 1]')
@click.option('--center', type=cli.FloatTuple(2, '0.5,0.5'), help='Zoom: x,y of the view centre at the first frame ([0,1] is the training frame)  [default: 0.5,0.5]')
@click.option('--pan', type=cli.FloatTuple(2, '0.2,0'), help='Zoom: x,y movement of the view centre over the video  [default: 0,0]')
@click.option('--frames', type=click.IntRange(min=1), help='Zoom: number of frames  [default: 240]')
@click.option('--fps', type=click.FloatRange(min=0, min_open=True), help='Frames per second', default=60, show_default=True)
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@cli.class_option(legacy.read_class_names(legacy.DEFAULT_NETWORK))
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), help='Noise mode (StyleGAN networks)', default='const', show_default=True)
@click.option('--scale', type=click.FloatRange(min=0, min_open=True), help='Size of each image (grid cell or zoom frame) relative to the training resolution (CREPS)', default=1, show_default=True)
@click.option('--size', type=cli.Size(), help='Size WxH of each image (grid cell or zoom frame) in pixels (CREPS)')
@click.option('--tile', type=click.IntRange(min=1), help='Render in tiles of this many pixels square (CREPS)  [default: automatic for large frames]')
@click.option('--precision', type=click.Choice(PRECISIONS), help='Compute precision  [default: fp16 mixed on CUDA, fp32 on CPU]')
@click.option('--device', help='Torch device', default=cli.default_device(), show_default=True)
@cli.trust_pickle_option
@click.pass_context
def generate_video(ctx, network_pkl, seeds, output, grid, num_keyframes, w_frames, kind, shuffle_seed, zoom_to, center, pan, frames, fps,
        truncation_psi, class_idx, noise_mode, scale, size, tile, precision, device, trust_pickle):
    """Render a latent interpolation video, or a zoom and pan video, from a network pickle.

    \b
    # A 2x2 grid, two keyframes per cell, at twice the training resolution:
    python gen_video.py --network=g.pkl --seeds=0-7 --grid=2x2 --scale=2 --output=lerp.mp4
    \b
    # Four seconds zooming 16 times into a point while drifting right, at 1280x720:
    python gen_video.py --network=g.pkl --seeds=3 --zoom-to=16 --center=0.4,0.6 --pan=0.05,0 --size=1280x720 --frames=240 --output=zoom.mp4
    """
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    mode = chosen_mode(given)
    check_output(output)
    device = cli.resolve_device(device)
    precision = cli.resolve_precision(precision, device, default_precision(device))

    print(f'Loading network from "{network_pkl}"...')
    with cli.one_line_errors(legacy.NetworkPickleError):
        G, class_names = legacy.load_generator(network_pkl, trust=trust_pickle)
    G = G.eval().requires_grad_(False).to(device)
    if G.img_channels not in (1, 3):
        raise click.ClickException(f'{network_pkl}: videos need a network with 1 or 3 image channels, this one has {G.img_channels}')
    lines_based = render.supports_lines(G.synthesis)
    if not lines_based and ({'scale', 'size', 'tile'} & given or mode == 'zoom'):
        raise click.UsageError(f'{type(G).__module__}.{type(G).__name__} renders only at its training resolution: '
            '--scale, --size, --tile and zoom videos need a CREPS network')
    if lines_based: # A frame exists whole, to be encoded.
        cli.check_output_memory(f'--scale={scale:g}' if size is None else f'--size={size[0]}x{size[1]}', 1,
            *cli.output_size(G.img_resolution, scale=scale, size=size)[::-1], 3)
    lines = render.lines_for_viewport(G.img_resolution, scale=scale, size=size) if lines_based else None
    height, width = (len(lines[0]), len(lines[1])) if lines_based else (G.img_resolution, G.img_resolution)

    if mode == 'zoom':
        if len(seeds) != 1:
            raise click.BadParameter(f'a zoom video renders one seed, got {len(seeds)}', param_hint='--seeds')
        options = with_defaults(ZOOM_DEFAULTS, zoom_to=zoom_to, center=center, pan=pan, frames=frames)
        check_even(width, height, 'the frame size')
        num_frames = options.pop('frames')
        tile = tile or render.auto_tile(1, height, width, G.img_channels)
        with torch.no_grad():
            ws = G.mapping(cli.seed_latents(G, seeds, device), cli.class_labels(G, class_idx, 1, device, class_names), truncation_psi=truncation_psi)
        frame_iter = zoom_frames(G, ws, width, height, num_frames, tile=tile, precision=precision, **options)
        print(f'Zoom and pan on seed {seeds[0]}, magnification 1 to {options["zoom_to"]:g}: {num_frames} frames of {width}x{height}')
    else:
        grid, w_frames, kind = with_defaults(INTERPOLATION_DEFAULTS, grid=grid, w_frames=w_frames, kind=kind).values()
        grid_w, grid_h = grid
        cell_seeds = keyframe_seeds(seeds, grid_w, grid_h, num_keyframes, shuffle_seed)
        if cell_seeds.shape[2] == 1:
            click.echo(f'Warning: one keyframe per cell: the video shows {grid_w * grid_h} still image(s); '
                'give more seeds than cells, or --num-keyframes', err=True)
        height, width = height * grid_h, width * grid_w
        check_even(width, height, f'a {grid_w}x{grid_h} grid of {width // grid_w}x{height // grid_h} images')
        num_cells = grid_w * grid_h
        num_frames = cell_seeds.shape[2] * w_frames
        tile = tile or (render.auto_tile(num_cells, len(lines[0]), len(lines[1]), G.img_channels) if lines_based else None)
        with torch.no_grad():
            z = cli.seed_latents(G, cell_seeds.reshape(-1), device)
            ws = G.mapping(z, cli.class_labels(G, class_idx, len(z), device, class_names), truncation_psi=truncation_psi)
        ws = ws.reshape(grid_h, grid_w, cell_seeds.shape[2], *ws.shape[1:])
        render_cells = lambda w: render.render_images(G.synthesis, w, lines, tile=tile, precision=precision, noise_mode=noise_mode)
        frame_iter = interpolation_frames(ws, grid_w, grid_h, w_frames, kind, render_cells)
        print(f'Interpolating a {grid_w}x{grid_h} grid through {cell_seeds.shape[2]} keyframes: {num_frames} frames of {width}x{height}')

    with video_writer(output, width, height, fps) as append_frame:
        with torch.no_grad():
            for frame in tqdm.tqdm(frame_iter, total=num_frames, unit='frame', desc='Rendering'):
                append_frame(to_rgb(frame))
    print(f'Wrote {output}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_video() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
