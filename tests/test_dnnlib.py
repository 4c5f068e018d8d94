"""dnnlib: EasyDict, format_time, building objects by name, the cache folder and open_url."""

import functools
import hashlib
import http.server
import os
import pickle
import socket
import subprocess
import sys
import threading

import pytest
import torch

import dnnlib
from dnnlib import util

#----------------------------------------------------------------------------

def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1
    del d.a
    assert 'a' not in d
    assert not hasattr(d, 'missing')
    with pytest.raises(AttributeError):
        d.missing
    assert pickle.loads(pickle.dumps(d)) == d

@pytest.mark.parametrize('seconds, text', [
    (0, '0s'), (12.4, '12s'), (185, '3m 05s'), (2 * 3600 + 3 * 60 + 4, '2h 03m 04s'),
    (86400 + 2 * 3600 + 3 * 60 + 59, '1d 02h 03m'),
])
def test_format_time(seconds, text):
    assert util.format_time(seconds) == text

def test_construct_and_call_by_name():
    layer = torch.nn.Linear(2, 2)
    opt = util.construct_class_by_name(layer.parameters(), class_name='torch.optim.Adam', lr=0.5)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults['lr'] == 0.5
    assert util.call_func_by_name(3, func_name='np.square') == 9
    assert util.get_obj_by_name('os.path.join') is os.path.join
    with pytest.raises(AttributeError, match='no_such_name'):
        util.get_obj_by_name('os.path.no_such_name')
    with pytest.raises(ImportError):
        util.get_obj_by_name('no_such_module_xyz.thing')

@pytest.mark.parametrize('class_name', [
    'collections.OrderedDict',                  # A class, but not one of the project's modules.
    'builtins.eval', 'os.system', 'subprocess.Popen',
    'training.dataset.os',                      # A module imported by a project module.
    'training.dataset.zipfile.ZipFile',
    'training.networks_creps.persistence.persistent_class', # A function.
    'training.dataset._private', 'training.dataset', 'training.dataset.NoSuchClass', '', 42, None.__class__,
])
def test_construct_refuses_anything_but_the_project_classes(class_name, tmp_path):
    with pytest.raises(util.ConstructionRefused, match='refused to construct'):
        util.construct_class_by_name(class_name=class_name, path=str(tmp_path))

def test_construct_checks_the_name_before_importing():
    assert 'antigravity' not in sys.modules
    with pytest.raises(util.ConstructionRefused):
        util.construct_class_by_name(class_name='antigravity.Thing')
    assert 'antigravity' not in sys.modules

def test_top_level_function_name():
    assert util.get_top_level_function_name(util.format_time) == 'dnnlib.util.format_time'
    with pytest.raises(ValueError):
        util.get_top_level_function_name(lambda: None)

def test_is_url():
    assert util.is_url('https://example.com/a.pkl')
    assert util.is_url('http://127.0.0.1:8000/a.pkl')
    assert not util.is_url('/local/a.pkl')
    assert not util.is_url('file:///local/a.pkl')
    assert util.is_url('file:///local/a.pkl', allow_file_urls=True)
    assert not util.is_url(None)

#----------------------------------------------------------------------------

def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    assert util.make_cache_dir_path('downloads') == str(tmp_path / 'cache' / 'downloads')
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert dnnlib.make_cache_dir_path('x') == os.path.join(str(tmp_path / 'home'), '.cache', 'dnnlib', 'x')

def test_open_local_path_and_file_url(tmp_path):
    path = tmp_path / 'data.bin'
    path.write_bytes(b'payload')
    for local in (str(path), path):
        with util.open_url(local) as f:
            assert f.read() == b'payload'
    with util.open_url(path.as_uri()) as f:
        assert f.read() == b'payload'
    assert util.open_url(path.as_uri(), return_filename=True) == str(path)
    with pytest.raises(FileNotFoundError, match='missing.pkl'):
        util.open_url(str(tmp_path / 'missing.pkl'))

#----------------------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = [] # Paths asked for, shared by the test and the server thread.

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args): # Keep the test output clean.
        pass

@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (base URL, request log, stop function)."""
    root = tmp_path / 'www'
    root.mkdir()
    _Handler.requests = []
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    def stop():
        server.shutdown()
        server.server_close()
    yield f'http://127.0.0.1:{server.server_address[1]}', root, _Handler.requests, stop
    if thread.is_alive():
        stop()

def test_open_http_url_cached(http_server, tmp_path, monkeypatch):
    base, root, requests, stop = http_server
    (root / 'net.pkl').write_bytes(b'network bytes')
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    url = f'{base}/net.pkl'

    with util.open_url(url, verbose=False) as f:
        assert f.read() == b'network bytes'
    cached = util.open_url(url, return_filename=True)
    assert os.path.dirname(cached) == str(tmp_path / 'cache' / 'downloads')
    assert os.path.basename(cached) == hashlib.md5(url.encode()).hexdigest() + '_net.pkl'
    assert not [name for name in os.listdir(os.path.dirname(cached)) if name.startswith('tmp_')]

    stop() # From now on only the cache can answer.
    with util.open_url(url, verbose=False) as f:
        assert f.read() == b'network bytes'
    assert requests == ['/net.pkl']

def test_open_http_without_cache(http_server, tmp_path):
    base, root, _requests, _stop = http_server
    (root / 'a.txt').write_bytes(b'abc')
    with util.open_url(f'{base}/a.txt', cache_dir=str(tmp_path / 'cache'), cache=False, verbose=False) as f:
        assert f.read() == b'abc'
    assert not (tmp_path / 'cache').exists()

def test_http_not_found_is_not_retried(http_server, tmp_path):
    base, _root, requests, _stop = http_server
    with pytest.raises(util.DownloadError, match='404'):
        util.open_url(f'{base}/missing.pkl', cache_dir=str(tmp_path), verbose=False)
    assert requests == ['/missing.pkl']

def _closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def test_temporary_files_of_killed_processes_are_removed(tmp_path):
    # SIGKILL leaves the temporary file of a write; the next write in that folder removes it.
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f'{util._temp_prefix(dead)}abcd-image.png'
    other_host = tmp_path / f'.tmp-elsewhere-{dead}-abcd-image.png'
    alive = tmp_path / f'{util._temp_prefix(os.getppid())}abcd-image.png'
    for path in [stale, other_host, alive]:
        path.write_bytes(b'partial')
    with util.atomic_write(str(tmp_path / 'image.png')) as f:
        f.write(b'new')
    assert sorted(os.listdir(tmp_path)) == sorted([other_host.name, alive.name, 'image.png'])

def test_offline_error_is_quick_and_clear(tmp_path, monkeypatch):
    url = f'http://127.0.0.1:{_closed_port()}/x.pkl'
    cache_dir = str(tmp_path / 'my cache')
    delays = []
    monkeypatch.setattr(util.time, 'sleep', delays.append)
    with pytest.raises(util.DownloadError) as info:
        util.open_url(url, cache_dir=cache_dir, verbose=False)
    assert delays == [0.0] * 9 # Ten attempts, no waiting between them (counted, not timed: machines differ).
    message = str(info.value)
    assert url in message and cache_dir in message and 'DNNLIB_CACHE_DIR' in message
    assert isinstance(info.value, IOError)

#----------------------------------------------------------------------------

def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    path = tmp_path / 'out.bin'
    path.write_bytes(b'old')
    with pytest.raises(RuntimeError):
        with dnnlib.util.atomic_write(str(path)) as f:
            f.write(b'partial')
            raise RuntimeError('interrupted')
    assert path.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.bin'] # No temp file left behind.
    with dnnlib.util.atomic_write(str(path)) as f:
        f.write(b'new')
    assert path.read_bytes() == b'new'
    assert path.stat().st_mode & 0o777 == 0o666 & ~_current_umask()

def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

def test_logger_copies_console_to_file(tmp_path, capsys):
    log = tmp_path / 'log.txt'
    with dnnlib.util.Logger(str(log), 'w'):
        print('to both')
        print('to stderr too', file=sys.stderr)
    print('after close')
    assert log.read_text() == 'to both\nto stderr too\n'
    captured = capsys.readouterr()
    assert 'to both' in captured.out and 'after close' in captured.out and 'to stderr too' in captured.err

def test_logger_goes_on_on_the_console_when_the_log_file_fails(tmp_path, capsys):
    class FullDisk:
        def write(self, *_args):
            raise OSError(28, 'No space left on device')
        flush = close = write
    log = tmp_path / 'log.txt'
    with dnnlib.util.Logger(str(log), 'w') as logger:
        logger.file.close()
        logger.file = FullDisk()
        print('Error: what went wrong', file=sys.stderr) # What a failing run prints last must still show.
        print('more')
    captured = capsys.readouterr()
    assert 'Error: what went wrong' in captured.err and 'more' in captured.out
    assert captured.err.count('cannot write it (No space left on device); logging to the console only') == 1
