"""Small utilities shared by every part of the project: attribute dicts,
building objects from their dotted names, human-readable durations, a log
that copies the console to a file, atomic file writes, the on-disk cache
folder, and opening files given as paths or URLs.

Names and behaviour follow NVIDIA's `dnnlib.util`, so that configs, cache
folders and scripts written for StyleGAN2-ADA/StyleGAN3 work unchanged.
"""

import contextlib
import errno
import glob
import hashlib
import importlib
import io
import itertools
import os
import re
import socket
import sys
import tempfile
import time
import types
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Tuple

#----------------------------------------------------------------------------

class EasyDict(dict):
    """A dict whose items can also be read and written as attributes.

    A missing attribute raises AttributeError, not KeyError, so that
    `hasattr()`, `getattr(obj, name, default)`, copy and pickle behave as for
    any other object.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

#----------------------------------------------------------------------------

def format_time(seconds: float) -> str:
    """Round to whole seconds and show the two or three largest units:
    '12s', '3m 05s', '2h 03m 04s', '1d 02h 03m'."""
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // (60 * 60)}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // (24 * 60 * 60)}d {(s // (60 * 60)) % 24:02d}h {(s // 60) % 60:02d}m'

#----------------------------------------------------------------------------
# Looking up objects by their dotted names, as configs name the classes to build.

_name_shorthands = {'np.': 'numpy.'} # Prefixes accepted in place of the full module name.

def _expand_shorthand(obj_name: str) -> str:
    for short, full in _name_shorthands.items():
        if obj_name.startswith(short):
            return full + obj_name[len(short):]
    return obj_name

def get_obj_from_module(module: types.ModuleType, obj_name: str) -> Any:
    """Follow the dotted attribute path `obj_name` from `module`; '' is the module itself."""
    obj = module
    for part in obj_name.split('.') if obj_name else []:
        obj = getattr(obj, part)
    return obj

def get_module_from_obj_name(obj_name: str) -> Tuple[types.ModuleType, str]:
    """Split a dotted name such as 'training.networks_creps.Generator' into
    the module it lives in and the attribute path inside that module.

    The longest importable module prefix that holds the attribute path wins.
    An error raised while importing a module that does exist (a syntax error,
    a missing dependency) is re-raised as is rather than hidden.
    """
    obj_name = _expand_shorthand(obj_name)
    parts = obj_name.split('.')
    missing_attr = None
    for split in range(len(parts), 0, -1):
        module_name, local_name = '.'.join(parts[:split]), '.'.join(parts[split:])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only "this prefix is not a module" means: try a shorter prefix.
            if err.name is None or not (module_name == err.name or module_name.startswith(err.name + '.')):
                raise
            continue
        try:
            get_obj_from_module(module, local_name)
        except AttributeError:
            missing_attr = missing_attr or f"module '{module_name}' has no attribute '{local_name}'"
            continue
        return module, local_name
    if missing_attr is not None:
        raise AttributeError(f'Cannot find {obj_name!r}: {missing_attr}')
    raise ImportError(f'Cannot find {obj_name!r}: no prefix of it is an importable module')

def get_obj_by_name(name: str) -> Any:
    """The Python object with the given fully qualified dotted name."""
    module, local_name = get_module_from_obj_name(name)
    return get_obj_from_module(module, local_name)

def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    """Look up the callable named `func_name` and call it with the remaining arguments."""
    if func_name is None:
        raise TypeError('call_func_by_name() needs func_name')
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f'{func_name!r} is not callable')
    return func(*args, **kwargs)

# The modules whose classes a config's class_name may name. Configs are also read back from
# files that others make (a snapshot's training_set_kwargs, training_options.json beside it,
# training states, safetensors metadata), so a class_name must never reach an arbitrary
# callable, nor import an arbitrary module: only a class defined in one of these is built.
CONSTRUCTIBLE_MODULES = ('training.dataset', 'training.networks_creps', 'training.networks_stylegan2',
    'training.networks_stylegan3', 'training.augment', 'training.loss', 'torch.optim')

class ConstructionRefused(ValueError):
    """A class_name that names anything but a class of CONSTRUCTIBLE_MODULES."""

def constructible_class(class_name: str) -> type:
    """The class named `class_name` ('module.Class', the module one of CONSTRUCTIBLE_MODULES,
    the class defined in it or its submodules); ConstructionRefused for any other name,
    checked before anything is imported."""
    module_name, _, local_name = class_name.rpartition('.') if isinstance(class_name, str) else ('', '', '')
    refused = ConstructionRefused(f'refused to construct {class_name!r}: a class_name must name a class of '
        f'{", ".join(CONSTRUCTIBLE_MODULES)}')
    if module_name not in CONSTRUCTIBLE_MODULES or not local_name.isidentifier() or local_name.startswith('_'):
        raise refused
    cls = getattr(importlib.import_module(module_name), local_name, None)
    if not isinstance(cls, type) or not (cls.__module__ == module_name or cls.__module__.startswith(module_name + '.')):
        raise refused # A function, or a class imported from elsewhere.
    return cls

def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    """Build an instance of the class named `class_name` (see constructible_class) with the
    remaining arguments."""
    if class_name is None:
        raise TypeError('construct_class_by_name() needs class_name')
    return constructible_class(class_name)(*args, **kwargs)

def is_top_level_function(obj: Any) -> bool:
    """Is `obj` a function bound under its own name at the top level of its module?"""
    module = sys.modules.get(getattr(obj, '__module__', None))
    name = getattr(obj, '__qualname__', None)
    return callable(obj) and module is not None and name is not None and module.__dict__.get(name) is obj

def get_top_level_function_name(obj: Any) -> str:
    """'module.name' of a top-level function, such that get_obj_by_name() finds it again.

    A function of the script being run lives in '__main__'; it is named after
    the script file instead, since that is the module a child process (or a
    later session) imports to find it.
    """
    if not is_top_level_function(obj):
        raise ValueError(f'{obj!r} is not a top-level function of its module')
    module_name = obj.__module__
    if module_name == '__main__':
        module_name = os.path.splitext(os.path.basename(sys.modules['__main__'].__file__))[0]
    return f'{module_name}.{obj.__qualname__}'

#----------------------------------------------------------------------------
# Console log and atomic writes.

class Logger:
    """Copy everything written to stdout and stderr into a log file, while
    still printing it. Use as a context manager, or call close()."""

    def __init__(self,
        file_name   = None, # Log file, None = no file (console only).
        file_mode   = 'a',  # 'a' appends to an existing log, 'w' starts it afresh.
    ):
        self.file_name = file_name
        self.file = open(file_name, file_mode, encoding='utf-8') if file_name is not None else None
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._Tee(self, self.stdout), self._Tee(self, self.stderr)

    class _Tee:
        def __init__(self, logger, stream):
            self._logger, self._stream = logger, stream

        def write(self, text):
            self._stream.write(text)
            self._logger._to_file(lambda f: f.write(text))
            return len(text)

        def flush(self):
            self._stream.flush()
            self._logger._to_file(lambda f: f.flush())

    def _to_file(self, operation):
        """operation(file) on the log file; if that fails (a full disk), the log goes on on the
        console only, saying so once, so that what is being printed (an error, often) still shows."""
        if self.file is None:
            return
        try:
            operation(self.file)
        except OSError as err:
            file, self.file = self.file, None
            with contextlib.suppress(OSError):
                file.close()
            self.stderr.write(f'Warning: {self.file_name}: cannot write it ({err.strerror or err}); logging to the console only\n')

        def __getattr__(self, name): # isatty(), encoding, fileno() ...: those of the console stream.
            return getattr(self._stream, name)

    def close(self):
        """Flush, restore the console streams and close the file."""
        if sys.stdout is not self.stdout:
            sys.stdout.flush(); sys.stderr.flush()
            sys.stdout, sys.stderr = self.stdout, self.stderr
        self._to_file(lambda f: f.close())
        self.file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

def _umask():
    mask = os.umask(0o022)
    os.umask(mask) # Reading the umask means setting it; put it back at once.
    return mask

def _temp_prefix(pid):
    """Temporary files are named after the host and process that write them, so that one
    left by a process that was killed (SIGKILL runs no clean-up) can be told apart."""
    return f'.tmp-{socket.gethostname()}-{pid}-'

_swept_folders = set() # Folders this process has already cleaned of stale temporary files.

def _remove_stale_temp_files(folder):
    """Remove, once per process and folder, the temporary files of atomic_output_path that
    processes of this host no longer running left in `folder`. Files of other hosts (a
    shared file system) and of live processes are left alone."""
    if folder in _swept_folders:
        return
    _swept_folders.add(folder)
    pattern = re.compile(re.escape(f'.tmp-{socket.gethostname()}-') + r'(\d+)-')
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue # Alive (or not ours to signal): its file may be in use.
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass

@contextlib.contextmanager
def atomic_output_path(path: str):
    """Yield a temporary path beside `path`, for a writer that needs a file name
    (ffmpeg, say), and move the file onto `path` when the block completes; it is
    removed if the block fails. The temporary name ends with `path`'s name, so
    tools that go by the extension see the right one. The file gets the usual
    permissions (0666 minus the umask)."""
    folder = os.path.dirname(path) or '.'
    _remove_stale_temp_files(folder)
    fd, temp_path = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(os.getpid()), suffix='-' + os.path.basename(path))
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        yield temp_path
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise

class OutputError(OSError):
    """An output file could not be written (a full disk, say); the message is one line naming it."""

    @classmethod
    def writing(cls, path, err):
        """The OutputError for the OSError `err` raised while writing `path` (raise it `from err`, which keeps the errno)."""
        return cls(f'{path}: cannot write it: {err.strerror or err}')

@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb'):
    """Open a temporary file beside `path` for writing and move it onto
    `path` when the block completes: readers, and a crash at any moment,
    see either the old file or the whole new one, never a partial write.
    A failed write (in the block too) raises OutputError naming `path`."""
    try:
        with atomic_output_path(path) as temp_path:
            with open(temp_path, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
    except OutputError:
        raise
    except OSError as err:
        raise OutputError.writing(path, err) from err

#----------------------------------------------------------------------------
# Cache folder.

def make_cache_dir_path(*paths: str) -> str:
    """Path under the cache root: $DNNLIB_CACHE_DIR if set, else ~/.cache/dnnlib
    (taking the home folder from $HOME or $USERPROFILE), else a folder under
    the system temp dir. Nothing is created."""
    if 'DNNLIB_CACHE_DIR' in os.environ:
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *paths)
    for home_var in ('HOME', 'USERPROFILE'):
        if os.environ.get(home_var):
            return os.path.join(os.environ[home_var], '.cache', 'dnnlib', *paths)
    return os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib', *paths)

#----------------------------------------------------------------------------
# Opening paths and URLs.

class DownloadError(IOError):
    """A URL could not be downloaded; the message says how to provide the file offline."""

def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """Is `obj` a string of the form 'scheme://host/...'? file:// URLs count
    only with `allow_file_urls`, since they name local files."""
    if not isinstance(obj, str) or '://' not in obj:
        return False
    if obj.startswith('file://'):
        return allow_file_urls
    try:
        parts = urllib.parse.urlsplit(obj)
    except ValueError:
        return False
    return bool(re.fullmatch(r'[a-z][a-z0-9+.-]*', parts.scheme) and parts.hostname)

def _file_url_to_path(url: str) -> str:
    # url2pathname() would turn the forward slashes of Windows paths into
    # backslashes; only the leading slash of 'file:///c:/x' has to go.
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    if re.match(r'^/[a-zA-Z]:', path):
        path = path[1:]
    return path

def _open_local(path: str, return_filename: bool) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, 'No such file', path)
    return path if return_filename else open(path, 'rb')

def _cache_file_name(url: str, url_md5: str, headers) -> str:
    # The server's own file name when it gives one, else the last part of the URL path.
    match = re.search(r'filename="([^"]*)"', headers.get('Content-Disposition', '') if headers else '')
    name = match[1] if match else os.path.basename(urllib.parse.urlsplit(url).path) or 'download'
    return url_md5 + '_' + re.sub(r'[^0-9a-zA-Z._-]', '_', name)

def _find_cached(cache_dir: str, url_md5: str) -> str:
    # Any name after the md5 matches, so caches filled by NVIDIA's dnnlib are found too.
    files = sorted(glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + '_*')))
    return files[0] if files else None

def _retry_delay(err: Exception, attempt: int) -> float:
    """Seconds to wait before asking again after `err`, or None when asking again cannot help."""
    if isinstance(err, urllib.error.HTTPError):
        if err.code >= 500 or err.code in (408, 429):
            return min(0.25 * 2 ** (attempt - 1), 4.0) # Give an overloaded server time to recover.
        return None # Other client errors (404, 403, ...) will not go away.
    if isinstance(getattr(err, 'reason', None), socket.gaierror):
        return None # The resolver has already retried; offline, this is the common case.
    # Refused or reset connections, timeouts, transfers cut short: asking again
    # at once is as good as waiting, and waiting would make an offline failure slow.
    return 0.0

def _download(url: str, num_attempts: int, timeout: float, verbose: bool) -> Tuple[bytes, Any]:
    """Fetch `url` into memory, retrying transient failures; returns (data, headers)
    or raises the error of the last attempt."""
    if verbose:
        print(f'Downloading {url} ...', end='', flush=True)
    for attempt in itertools.count(1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as res:
                data = res.read()
            if len(data) == 0:
                raise IOError('no data received')
            if verbose:
                print(' done')
            return data, res.headers
        except OSError as err: # URLError, HTTPError and socket errors are all OSErrors.
            delay = _retry_delay(err, attempt)
            if delay is None or attempt == num_attempts:
                if verbose:
                    print(' failed')
                raise
            if verbose:
                print('.', end='', flush=True)
            time.sleep(delay)

def open_url(
    url:                str,            # Local path (str or os.PathLike), file:// URL or http(s):// URL.
    cache_dir:          str   = None,   # Folder of downloaded files; None = make_cache_dir_path('downloads').
    num_attempts:       int   = 10,     # Attempts before a download is given up.
    verbose:            bool  = True,   # Print download progress.
    return_filename:    bool  = False,  # Return the local file name instead of an open file; needs cache=True for URLs.
    cache:              bool  = True,   # Look up and store downloads in the cache folder.
    timeout:            float = 60,     # Seconds without progress before one attempt is abandoned.
) -> Any:
    """Open a local file or a URL for binary reading.

    Downloads are stored in the cache folder as '<md5 of URL>_<file name>',
    written atomically, and later calls read the cached file without any
    network access. Raises FileNotFoundError for a missing local file and
    DownloadError when a URL cannot be fetched.
    """
    assert num_attempts >= 1
    assert not (return_filename and not cache), 'return_filename=True needs cache=True'
    url = os.fspath(url) # Accept pathlib paths as well.

    if not re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*://', url):
        return _open_local(url, return_filename)
    if url.startswith('file://'):
        return _open_local(_file_url_to_path(url), return_filename)
    if not is_url(url):
        raise ValueError(f'Not a valid URL: {url!r}')

    if cache_dir is None:
        cache_dir = make_cache_dir_path('downloads')
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    if cache:
        cached = _find_cached(cache_dir, url_md5)
        if cached is not None:
            return cached if return_filename else open(cached, 'rb')

    try:
        data, headers = _download(url, num_attempts=num_attempts, timeout=timeout, verbose=verbose)
    except OSError as err:
        # HTTPError reads 'HTTP Error 404: Not Found'; other URLErrors wrap the socket error as `reason`.
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, 'reason', None) or err
        raise DownloadError(
            f'Cannot download {url} ({reason}); cache folder: {os.path.abspath(cache_dir)}. '
            f'To work offline, fetch the file on another machine, then either put it into the cache folder '
            f'as {_cache_file_name(url, url_md5, None)}, pass its local path instead of the URL, '
            f'or set DNNLIB_CACHE_DIR to a folder whose downloads/ subfolder holds it.'
        ) from err

    if not cache:
        return io.BytesIO(data)
    cache_file = os.path.join(cache_dir, _cache_file_name(url, url_md5, headers))
    temp_file = os.path.join(cache_dir, f'tmp_{uuid.uuid4().hex}_{os.path.basename(cache_file)}')
    os.makedirs(cache_dir, exist_ok=True)
    with open(temp_file, 'wb') as f:
        f.write(data)
    os.replace(temp_file, cache_file) # Atomic: readers never see a partial file.
    return cache_file if return_filename else io.BytesIO(data)

#----------------------------------------------------------------------------
