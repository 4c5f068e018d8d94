"""gen_video.py: interpolation grids and zoom/pan videos, read back from the MP4, and bad input."""

import os
import pickle
import subprocess
import sys
import types

import imageio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

import gen_video
from torch_utils import cli
from torch_utils import render
from training.networks_creps import Generator
from training.networks_stylegan2 import Generator as StyleGAN2Generator

from clitest import assert_clean_error, invoke, invoke_ok
from numerics import assert_same_quantized

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------

def make_generator(c_dim=0, img_channels=3):
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=32, img_channels=img_channels,
        channel_base=512, channel_max=32, biline_channels=8)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    return G.eval()

def write_pickle(path, G):
    with open(path, 'wb') as f:
        pickle.dump({'G_ema': G}, f)
    return str(path)

@pytest.fixture(scope='module')
def pickles(tmp_path_factory):
    root = tmp_path_factory.mktemp('pkl')
    torch.manual_seed(1)
    sg2 = StyleGAN2Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=8).eval()
    return dict(creps=write_pickle(root / 'g.pkl', make_generator()), cond=write_pickle(root / 'cond.pkl', make_generator(c_dim=2)),
        gray=write_pickle(root / 'gray.pkl', make_generator(img_channels=1)), sg2=write_pickle(root / 'sg2.pkl', sg2))

@pytest.fixture(scope='module')
def G():
    return make_generator()

def run(args):
    return invoke(gen_video.generate_video, args)

def run_ok(args):
    return invoke_ok(gen_video.generate_video, args)

def read_video(path):
    """All frames of an MP4, uint8 [T, H, W, 3], decoded by imageio's ffmpeg reader."""
    with imageio.get_reader(path, format='FFMPEG') as reader:
        return np.stack([frame for frame in reader]) # list(reader) would size itself by len(reader), which is inf.

def mean_abs_diff(a, b):
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean()

def mapped(G, seeds):
    with torch.no_grad():
        return G.mapping(cli.seed_latents(G, seeds, 'cpu'), None)

#----------------------------------------------------------------------------

def test_acceptance_grid_and_zoom(pickles, tmp_path):
    # The commands of the acceptance criteria, as a user runs them: real processes.
    env = dict(os.environ, OMP_NUM_THREADS='1')
    grid = tmp_path / 'grid.mp4'
    proc = subprocess.run([sys.executable, 'gen_video.py', f'--network={pickles["creps"]}', '--seeds=0-3', '--grid=2x1',
        '--w-frames=5', f'--output={grid}'], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    frames = read_video(grid)
    assert frames.shape == (2 * 5, 32, 64, 3) # Two keyframes per cell, five frames each; two 32x32 cells side by side.

    zoom = tmp_path / 'zoom.mp4'
    proc = subprocess.run([sys.executable, 'gen_video.py', f'--network={pickles["creps"]}', '--seeds=7', '--zoom-to=8',
        '--center=0.3,0.6', '--pan=0.1,0', '--frames=48', '--size=64x48', '--fps=24', f'--output={zoom}'], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    frames = read_video(zoom)
    assert frames.shape == (48, 48, 64, 3)
    with imageio.get_reader(zoom, format='FFMPEG') as reader:
        assert reader.get_meta_data()['fps'] == 24
    assert mean_abs_diff(frames[0], frames[-1]) > 5 # The camera moved.
    assert not [name for name in os.listdir(tmp_path) if name.startswith('.tmp-')]

#----------------------------------------------------------------------------
# Interpolation.

def test_keyframe_seeds_fill_cells_in_order():
    assert gen_video.keyframe_seeds([0, 1, 2, 3], 2, 1).tolist() == [[[0, 1], [2, 3]]]
    assert gen_video.keyframe_seeds([5, 6], 1, 1, num_keyframes=3).tolist() == [[[5, 6, 5]]] # Repeated when too few.
    assert gen_video.keyframe_seeds([1, 2], 1, 2).tolist() == [[[1]], [[2]]]
    shuffled = gen_video.keyframe_seeds(list(range(12)), 2, 2, shuffle_seed=3)
    assert sorted(shuffled.reshape(-1).tolist()) == list(range(12))
    assert shuffled.reshape(-1).tolist() != list(range(12))
    assert np.array_equal(shuffled, gen_video.keyframe_seeds(list(range(12)), 2, 2, shuffle_seed=3))

@pytest.mark.parametrize('kind', ['linear', 'cubic'])
def test_interpolator_passes_through_keyframes_and_loops(kind):
    keyframes = np.random.RandomState(0).randn(3, 2, 4)
    interpolate = gen_video.looping_interpolator(keyframes, kind)
    for k in range(3):
        assert np.allclose(interpolate(k), keyframes[k])
    for t in [0.25, 1.5, 2.75]:
        assert np.allclose(interpolate(t), interpolate(t - 3)) # Periodic: the video loops without a jump.
    assert np.allclose(interpolate(0.5), (keyframes[0] + keyframes[1]) / 2) == (kind == 'linear')

def test_layout_grid_places_cells_in_raster_order():
    cells = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones([1, 2, 3, 1], dtype=np.uint8)
    grid = gen_video.layout_grid(cells, grid_w=3, grid_h=2)
    assert grid.shape == (4, 9, 1)
    assert grid[0, ::3, 0].tolist() == [0, 1, 2] and grid[2, ::3, 0].tolist() == [3, 4, 5]

@pytest.mark.numerics
def test_interpolation_frames_are_the_keyframe_images(G):
    # Frame k * w_frames of the video is the image of keyframe k in every cell, at the requested scale.
    seeds = gen_video.keyframe_seeds([0, 1, 2, 3], 2, 1)
    ws = mapped(G, seeds.reshape(-1)).reshape(1, 2, 2, G.num_ws, G.w_dim)
    lines = render.lines_for_scale(32, 1.5)
    render_cells = lambda w: render.render_images(G.synthesis, w, lines)
    frames = list(gen_video.interpolation_frames(ws, 2, 1, 3, 'cubic', render_cells))
    assert len(frames) == 6 and frames[0].shape == (48, 96, 3)
    for k in range(2):
        cells = render.render_images(G.synthesis, ws[0, :, k], lines)
        assert_same_quantized(frames[3 * k], gen_video.layout_grid(cells, 2, 1))
    assert not np.array_equal(frames[1], frames[0])

def test_video_pixels_match_the_rendered_frames(pickles, tmp_path, G):
    # Checks colour order and orientation through the codec (lossy, hence the tolerance).
    run_ok(['--network', pickles['creps'], '--seeds=0-1', '--w-frames=2', '--kind=linear', '--output', tmp_path / 'v.mp4'])
    frames = read_video(tmp_path / 'v.mp4')
    assert frames.shape == (4, 32, 32, 3)
    expected = render.render_images(G.synthesis, mapped(G, [0]), render.lines_for_scale(32, 1))[0]
    assert mean_abs_diff(frames[0], expected) < 4
    assert mean_abs_diff(frames[0], expected[:, :, ::-1]) > 2 * mean_abs_diff(frames[0], expected)
    assert mean_abs_diff(frames[0], expected[::-1]) > 2 * mean_abs_diff(frames[0], expected)

def test_scale_size_class_and_grayscale(pickles, tmp_path):
    run_ok(['--network', pickles['creps'], '--seeds=0-5', '--grid=3x2', '--num-keyframes=1', '--w-frames=2', '--scale=0.5', '--output', tmp_path / 's.mp4'])
    assert read_video(tmp_path / 's.mp4').shape == (2, 32, 48, 3)
    run_ok(['--network', pickles['creps'], '--seeds=0', '--w-frames=3', '--size=40x24', '--output', tmp_path / 'z.mp4'])
    assert read_video(tmp_path / 'z.mp4').shape == (3, 24, 40, 3)
    run_ok(['--network', pickles['cond'], '--seeds=0', '--class=1', '--w-frames=2', '--output', tmp_path / 'c.mp4'])
    frames = read_video(tmp_path / 'c.mp4')
    assert frames.shape == (2, 32, 32, 3)
    run_ok(['--network', pickles['gray'], '--seeds=0', '--w-frames=2', '--output', tmp_path / 'g.mp4'])
    gray = read_video(tmp_path / 'g.mp4').astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 2 and gray.std() > 1

def test_stylegan2_interpolation_at_training_resolution(pickles, tmp_path):
    run_ok(['--network', pickles['sg2'], '--seeds=0-1', '--grid=2x1', '--w-frames=2', '--output', tmp_path / 'sg2.mp4'])
    assert read_video(tmp_path / 'sg2.mp4').shape == (2, 16, 32, 3)

#----------------------------------------------------------------------------
# Zoom and pan.

def test_camera_viewport():
    assert np.allclose(gen_video.camera_viewport(0, 32, 32, 8, (0.5, 0.5), (0, 0)), (0, 1, 0, 1))
    # Magnified 4 times at the end, centred on the panned point; square pixels for a wide frame.
    x0, x1, y0, y1 = gen_video.camera_viewport(1, 65, 33, 4, (0.2, 0.6), (0.1, -0.2))
    assert np.allclose([(x0 + x1) / 2, (y0 + y1) / 2], [0.3, 0.4])
    assert np.isclose(x1 - x0, 0.25) and np.isclose((x1 - x0) / 64, (y1 - y0) / 32)
    # Geometric zoom: halfway through a 4x zoom the magnification is 2.
    x0, x1, _, _ = gen_video.camera_viewport(0.5, 33, 33, 4, (0.5, 0.5), (0, 0))
    assert np.isclose(x1 - x0, 0.5)

@pytest.mark.numerics
def test_zoom_frames_render_the_camera_viewports(G):
    ws = mapped(G, [3])
    frames = list(gen_video.zoom_frames(G, ws, 32, 32, 3, zoom_to=4, center=(0.4, 0.5), pan=(0.2, 0)))
    first = render.render_images(G.synthesis, ws, render.lines_for_viewport(None, (-0.1, 0.9, 0, 1), size=(32, 32)))[0]
    last = render.render_images(G.synthesis, ws, render.lines_for_viewport(None, (0.475, 0.725, 0.375, 0.625), size=(32, 32)))[0]
    assert_same_quantized(frames[0], first)
    assert_same_quantized(frames[-1], last)
    # Tiles give the same frames.
    tiled = list(gen_video.zoom_frames(G, ws, 32, 32, 3, zoom_to=4, center=(0.4, 0.5), pan=(0.2, 0), tile=16))
    assert len(tiled) == len(frames)
    for a, b in zip(frames, tiled):
        assert_same_quantized(a, b)

def test_zoom_defaults_and_automatic_tiles(pickles, tmp_path, monkeypatch):
    monkeypatch.setattr(render, 'TILE_BUDGET_BYTES', 20 * 20 * 3 * 4) # Forces 16-pixel tiles.
    run_ok(['--network', pickles['creps'], '--seeds=2', '--frames=4', '--scale=1.5', '--output', tmp_path / 'z.mp4'])
    frames = read_video(tmp_path / 'z.mp4')
    assert frames.shape == (4, 48, 48, 3)
    assert mean_abs_diff(frames[0], frames[-1]) < 2 # --zoom-to 1 and no pan: a still camera.

def test_frames_are_streamed_and_a_failure_keeps_the_old_video(pickles, tmp_path, monkeypatch):
    out = tmp_path / 'v.mp4'
    out.write_bytes(b'previous video')
    rendered = []
    real_zoom_frames = gen_video.zoom_frames
    def failing_frames(*args, **kwargs):
        for frame in real_zoom_frames(*args, **kwargs):
            if len(rendered) == 3:
                raise RuntimeError('out of memory')
            rendered.append(frame)
            yield frame
    monkeypatch.setattr(gen_video, 'zoom_frames', failing_frames)
    result = run(['--network', pickles['creps'], '--seeds=2', '--frames=10', '--output', out])
    assert isinstance(result.exception, RuntimeError)
    assert len(rendered) == 3 # Frames are made one at a time, as the encoder takes them.
    assert out.read_bytes() == b'previous video'

@pytest.mark.parametrize('fault', ['cut short', 'encoder stops'])
def test_an_encoder_failure_is_an_error_and_keeps_the_old_video(pickles, tmp_path, monkeypatch, fault):
    # As on a full disk: ffmpeg exits early, or leaves a file that holds only part of the video.
    out = tmp_path / 'v.mp4'
    out.write_bytes(b'previous video')
    real_write_frames = imageio_ffmpeg.write_frames
    def faulty_write_frames(path, *args, **kwargs):
        writer = real_write_frames(path, *args, **kwargs)
        frames = 0
        def send(frame):
            nonlocal frames
            frames += frame is not None # The first send starts ffmpeg.
            if fault == 'encoder stops' and frames == 3:
                raise OSError('[Errno 32] Broken pipe\n\nFFMPEG COMMAND: ...')
            return writer.send(frame)
        def close():
            writer.close()
            if fault == 'cut short':
                with open(path, 'r+b') as f:
                    f.truncate(os.path.getsize(path) // 3)
        return types.SimpleNamespace(send=send, close=close)
    monkeypatch.setattr(gen_video.imageio_ffmpeg, 'write_frames', faulty_write_frames)
    result = run(['--network', pickles['creps'], '--seeds=2', '--frames=6', '--size=32x32', '--output', out])
    assert_clean_error(result, str(out), 'stopped after 2 frames' if fault == 'encoder stops' else 'video encoder')
    assert 'Wrote' not in result.output
    assert out.read_bytes() == b'previous video' and os.listdir(tmp_path) == ['v.mp4']
    assert os.listdir(tmp_path) == ['v.mp4']

#----------------------------------------------------------------------------
# Bad input.

@pytest.mark.parametrize('args, phrases', [
    (['--seeds=0-2', '--grid=2x1'], ['--seeds', '3 seeds do not fill a 2x1 grid']),
    (['--seeds=0', '--grid=0x2'], ['--grid', "'0x2' is not a grid such as 3x2"]),
    (['--seeds=0', '--grid=wide'], ['--grid', "'wide' is not a grid"]),
    (['--seeds=0-1', '--zoom-to=4'], ['--seeds', 'a zoom video renders one seed, got 2']),
    (['--seeds=0', '--zoom-to=0'], ['--zoom-to']),
    (['--seeds=0', '--zoom-to=4', '--grid=2x1'], ['--zoom-to make a zoom video and --grid an interpolation video']),
    (['--seeds=0', '--frames=10', '--w-frames=3'], ['--frames', '--w-frames', 'choose one']),
    (['--seeds=0', '--center=0.5'], ['--center', "'0.5' is not 2 comma-separated numbers"]),
    (['--seeds=0', '--size=33x32'], ['even sides', '33x32', '--size']),
    (['--seeds=0-2', '--grid=3x1', '--scale=0.72'], ['even sides', 'a 3x1 grid of 23x23 images gives 69x23']),
    (['--seeds=a'], ['--seeds']),
    (['--seeds=0', '--kind=quadratic'], ['--kind']),
    (['--seeds=0', '--fps=0'], ['--fps']),
    (['--seeds=0', '--class=1'], ['--class', 'unconditional']),
    (['--seeds=0', '--precision=fp16', '--device=cpu'], ['--precision', 'fp16 needs a CUDA device']),
    (['--seeds=0', '--scale=100000'], ['--scale=100000', 'need 27.94 TiB of memory']),
    (['--seeds=0', '--scale=0.01'], ['--scale', 'scale 0.01 gives 0.32 pixels per side at resolution 32, less than one']),
])
def test_bad_options(pickles, tmp_path, args, phrases):
    result = run(['--network', pickles['creps'], '--output', tmp_path / 'v.mp4'] + args)
    assert_clean_error(result, *phrases)
    assert not os.listdir(tmp_path)

def test_bad_output_paths(pickles, tmp_path):
    assert_clean_error(run(['--network', pickles['creps'], '--seeds=0', '--output', tmp_path / 'v.gif']), '--output', 'must be an .mp4 file')
    (tmp_path / 'dir.mp4').mkdir()
    assert_clean_error(run(['--network', pickles['creps'], '--seeds=0', '--output', tmp_path / 'dir.mp4']), '--output', 'is a folder')
    (tmp_path / 'file').write_text('not a folder')
    assert_clean_error(run(['--network', pickles['creps'], '--seeds=0', '--output', tmp_path / 'file' / 'v.mp4']), '--output', 'cannot create the folder')
    # A missing folder is made.
    result = run_ok(['--network', pickles['creps'], '--seeds=0', '--w-frames=1', '--output', tmp_path / 'new' / 'v.mp4'])
    assert 'one keyframe per cell: the video shows 1 still image(s)' in result.stderr
    assert read_video(tmp_path / 'new' / 'v.mp4').shape == (1, 32, 32, 3)

def test_bad_networks(pickles, tmp_path):
    out = ['--output', tmp_path / 'v.mp4']
    assert_clean_error(run(['--network', tmp_path / 'missing.pkl', '--seeds=0'] + out), 'missing.pkl')
    assert_clean_error(run(['--network', pickles['cond'], '--seeds=0'] + out), '--class', 'the network is conditional')
    assert_clean_error(run(['--network', pickles['sg2'], '--seeds=0', '--zoom-to=2'] + out), 'renders only at its training resolution', 'zoom videos need a CREPS network')
    assert_clean_error(run(['--network', pickles['sg2'], '--seeds=0', '--scale=2'] + out), '--scale')
    assert not os.listdir(tmp_path)
