"""Just-in-time build of the C++/CUDA extensions ("plugins") of the custom ops.

A plugin is compiled with ninja through `torch.utils.cpp_extension` the first
time a process needs it. Its sources are copied into a folder of torch's
extension directory named by a hash of the sources, the build flags and the
torch build; later processes load the library found there without compiling,
and editing a source builds it anew. Concurrent processes build once: the
build runs under an exclusive file lock.

Ops call `try_get_plugin()`, which returns None, after one warning per plugin,
when the plugin cannot be built or loaded (no compiler, no ninja, a compile
error, no CUDA), so that they can fall back to their pure-PyTorch reference.

A kernel that builds can still compute wrong results (an untested GPU
architecture or toolchain): `self_check()` compares it once per process with
its op's reference implementation, and the op uses the reference after one
warning when they disagree.

A plugin is either a pybind11 module (`PYBIND11_MODULE(TORCH_EXTENSION_NAME,
m)`), returned as that module, or a library that registers its ops with
`TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)`, built with `is_python_module=False`
and returned as its op namespace `torch.ops.<module_name>`.

Environment:
    CREPS_CUSTOM_OPS=0      (or off, false, no) disables every plugin: the ops
                            use their reference implementations, silently.
    TORCH_EXTENSIONS_DIR    where builds are cached (torch's default:
                            ~/.cache/torch_extensions/<python>_<cuda>).
"""

import contextlib
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import time
import uuid
import warnings

import torch
import torch.utils.cpp_extension

try:
    import fcntl
except ImportError: # Windows: torch's own lock inside cpp_extension.load() still serializes builds.
    fcntl = None

#----------------------------------------------------------------------------

verbosity = 'brief' # 'none': silent; 'brief': one line per build; 'full': the whole compiler output.

_plugins = dict()   # module_name => loaded plugin, so each process loads a plugin once.
_failed = dict()    # module_name => why it is unavailable, so each plugin warns once.
_checked = dict()   # kernel name => whether it passed its self-check, so each kernel is checked once.

_DONE_MARKER = '.done' # Written into a build folder once its library has loaded: the library's SHA-256.

#----------------------------------------------------------------------------

class PluginError(RuntimeError):
    """A plugin could not be built or loaded. `log` is the file holding the full
    build output, or None."""
    def __init__(self, message, log=None):
        super().__init__(message)
        self.log = log

def enabled():
    """Whether plugins may be used, per the CREPS_CUSTOM_OPS environment variable."""
    return os.environ.get('CREPS_CUSTOM_OPS', '1').strip().lower() not in ('0', 'off', 'false', 'no')

#----------------------------------------------------------------------------

def _openmp_flags():
    # at::parallel_for runs serially in code compiled without OpenMP when torch
    # uses its OpenMP backend. The library shares torch's OpenMP runtime, which
    # the process has already loaded under the same soname.
    return ['-fopenmp'] if torch._C.has_openmp and sys.platform.startswith('linux') else []

_simd_flags = {
    'AVX2':     ['-mavx2', '-mfma'],
    'AVX512':   ['-mavx512f', '-mavx512bw', '-mavx512dq', '-mavx512vl', '-mfma', '-mprefer-vector-width=512'],
}

def cpu_simd_flags():
    """Compiler flags for the SIMD instruction set that torch's own kernels use
    on this CPU (x86-64 with GCC or Clang: AVX2 or AVX-512), for plugins whose
    loops the compiler vectorizes. Like every build flag they are part of the
    build hash, so a machine with another instruction set builds its own copy
    of the plugin. Respects ATEN_CPU_CAPABILITY."""
    if platform.machine().lower() not in ('x86_64', 'amd64') or os.name != 'posix':
        return []
    return list(_simd_flags.get(torch.backends.cpu.get_cpu_capability(), []))

def _build_kwargs(build_kwargs):
    kwargs = dict(build_kwargs)
    kwargs['extra_cflags'] = list(kwargs.get('extra_cflags') or []) + _openmp_flags()
    kwargs['extra_ldflags'] = list(kwargs.get('extra_ldflags') or []) + _openmp_flags()
    return kwargs

def _cuda_targets():
    # Without TORCH_CUDA_ARCH_LIST, torch compiles for the visible GPUs, so a
    # build is only reusable on GPUs of the same compute capabilities.
    archs = os.environ.get('TORCH_CUDA_ARCH_LIST')
    if archs is not None:
        return archs
    return sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})

def _digest(files, kwargs, with_cuda):
    """Hash of everything the built library depends on."""
    h = hashlib.sha256()
    config = [torch.__version__, torch.version.cuda, sys.version_info[:2], platform.machine(),
        sorted(kwargs.items()), _cuda_targets() if with_cuda else None]
    h.update(repr(config).encode())
    for path in files:
        h.update(os.path.basename(path).encode() + b'\0')
        with open(path, 'rb') as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:32]

def _stage_sources(files, build_dir):
    """Copies the sources into build_dir, atomically: the folder appears complete or not at all."""
    if os.path.isdir(build_dir):
        return
    tmp_dir = f'{build_dir}.tmp-{uuid.uuid4().hex}'
    os.makedirs(tmp_dir)
    for path in files:
        shutil.copyfile(path, os.path.join(tmp_dir, os.path.basename(path)))
    try:
        os.replace(tmp_dir, build_dir)
    except OSError:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if not os.path.isdir(build_dir):
            raise

@contextlib.contextmanager
def _exclusive_lock(path):
    """Holds an exclusive lock on the file `path`, which the OS releases if the
    process dies. Yields whether the platform could lock it."""
    with open(path, 'a') as f:
        if fcntl is None:
            yield False
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        yield True

def _library_path(module_name, build_dir):
    return os.path.join(build_dir, module_name + torch.utils.cpp_extension.LIB_EXT)

def _file_digest(path):
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()

def _is_intact(module_name, build_dir):
    """Did a build finish here, and is its library the one it wrote? A library cut short (a full
    disk, a killed copy) kills the process that loads it (SIGBUS), and ninja, going by its
    time stamps, would take it as up to date."""
    try:
        with open(os.path.join(build_dir, _DONE_MARKER)) as f:
            return f.read().strip() == _file_digest(_library_path(module_name, build_dir))
    except OSError:
        return False

def _discard_build(module_name, build_dir):
    """Remove what a build left that ninja would reuse: the marker, the library and the objects."""
    names = [_DONE_MARKER, os.path.basename(_library_path(module_name, build_dir))]
    names += [name for name in (os.listdir(build_dir) if os.path.isdir(build_dir) else []) if name.endswith('.o')]
    for name in names:
        if os.path.exists(os.path.join(build_dir, name)):
            os.remove(os.path.join(build_dir, name))

def _load_library(module_name, build_dir, is_python_module):
    path = _library_path(module_name, build_dir)
    if not is_python_module:
        torch.ops.load_library(path)
        return getattr(torch.ops, module_name)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def _summarize(text):
    """The line of a build log that says what went wrong."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    causes = [line for line in lines[1:] if 'error' in line.lower()]
    line = (causes or lines or ['unknown error'])[0]
    return line if len(line) <= 300 else line[:297] + '...'

def _status(message, end='\n'):
    if verbosity != 'none':
        print(message, end=end, file=sys.stderr, flush=True)

#----------------------------------------------------------------------------

def get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Returns the plugin `module_name`, building it first if needed.

    Args:
        module_name:    Name of the extension module (and of its op namespace).
        sources:        C++ (.cpp) and CUDA (.cu) source files.
        headers:        Further files the sources include, hashed and copied along.
        source_dir:     Folder the file names above are relative to, or None.
        **build_kwargs: Passed on to torch.utils.cpp_extension.load(), e.g.
                        extra_cflags, extra_cuda_cflags, is_python_module.

    Raises PluginError when the plugin cannot be built or loaded.
    """
    assert verbosity in ['none', 'brief', 'full']
    if module_name in _plugins:
        return _plugins[module_name]
    if not enabled():
        raise PluginError(f'Plugin "{module_name}" is disabled by CREPS_CUSTOM_OPS={os.environ["CREPS_CUSTOM_OPS"]}')

    files = [os.path.join(source_dir or '', f) for f in list(sources) + list(headers or [])]
    assert len({os.path.basename(f) for f in files}) == len(files), 'source file names must be distinct'
    with_cuda = any(f.endswith('.cu') for f in sources)
    if with_cuda and not torch.cuda.is_available():
        raise PluginError(f'Plugin "{module_name}" has CUDA sources, and CUDA is not available')
    kwargs = _build_kwargs(build_kwargs)
    is_python_module = kwargs.get('is_python_module', True)

    build_top_dir = torch.utils.cpp_extension._get_build_directory(module_name, verbose=False) # pylint: disable=protected-access
    build_dir = os.path.join(build_top_dir, _digest(files, kwargs, with_cuda))
    if not _is_intact(module_name, build_dir):
        with _exclusive_lock(build_dir + '.lock') as exclusive:
            if not _is_intact(module_name, build_dir): # Another process may have built it while we waited.
                _discard_build(module_name, build_dir)
                _plugins[module_name] = _build(module_name, files, sources, build_dir, kwargs, exclusive)
                with open(os.path.join(build_dir, _DONE_MARKER), 'w') as f:
                    f.write(_file_digest(_library_path(module_name, build_dir)))
                return _plugins[module_name]

    try:
        _plugins[module_name] = _load_library(module_name, build_dir, is_python_module)
    except Exception as e:
        raise PluginError(f'Plugin "{module_name}" failed to load from {build_dir}: {_summarize(e)}') from e
    return _plugins[module_name]

def _build(module_name, files, sources, build_dir, kwargs, exclusive):
    """Compiles and loads the plugin; called under the lock, which is `exclusive` where the platform has one."""
    _stage_sources(files, build_dir)
    # Holding our lock, nobody else is building here: a lock file left by
    # cpp_extension in this folder comes from a killed build and would make it wait forever.
    stale_baton = os.path.join(build_dir, 'lock')
    if exclusive and os.path.exists(stale_baton):
        os.remove(stale_baton)

    log = os.path.join(build_dir, 'build.log')
    _status(f'Building PyTorch plugin "{module_name}"... ', end='' if verbosity == 'brief' else '\n')
    start = time.time()
    try:
        module = torch.utils.cpp_extension.load(name=module_name, build_directory=build_dir, verbose=(verbosity == 'full'),
            sources=[os.path.join(build_dir, os.path.basename(f)) for f in sources], **kwargs)
    except Exception as e:
        _status('failed.')
        with open(log, 'w') as f:
            f.write(str(e))
        raise PluginError(f'Plugin "{module_name}" failed to build: {_summarize(e)}', log=log) from e
    _status(f'done ({time.time() - start:.0f} s).')
    return module if kwargs.get('is_python_module', True) else getattr(torch.ops, module_name)

def try_get_plugin(module_name, sources, headers=None, source_dir=None, **build_kwargs):
    """Returns the plugin like get_plugin(), or None if it cannot be had.

    Warns once per plugin that is unavailable for another reason than
    CREPS_CUSTOM_OPS, so that the caller can fall back to its reference
    implementation.
    """
    if not enabled() or module_name in _failed:
        return None
    try:
        return get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
    except Exception as e: # pylint: disable=broad-except
        _failed[module_name] = e
        where = f' Full build log: {e.log}.' if getattr(e, 'log', None) else ''
        warnings.warn(f'{e}. Using the slower reference implementation instead.{where} '
            f'Set torch_utils.custom_ops.verbosity = "full" to see the build as it runs.', RuntimeWarning, stacklevel=2)
        return None

def try_get_device_plugin(name, device_type, cpp_sources, cuda_sources, extra_cuda_cflags=(), **build_kwargs):
    """The plugin holding the kernel of op `name` for `device_type` ('cpu' or
    'cuda'), or None after one warning (see try_get_plugin()).

    On a CUDA machine one plugin, `<name>_cuda_plugin`, is built from the C++
    and the CUDA sources and holds the kernels of both devices; elsewhere
    `<name>_cpu_plugin` is built from the C++ sources alone.
    """
    if torch.cuda.is_available():
        plugin = try_get_plugin(f'{name}_cuda_plugin', sources=list(cpp_sources) + list(cuda_sources),
            extra_cuda_cflags=list(extra_cuda_cflags), **build_kwargs)
        if plugin is not None or device_type == 'cuda':
            return plugin
    if device_type != 'cpu':
        return None
    return try_get_plugin(f'{name}_cpu_plugin', sources=list(cpp_sources), **build_kwargs)

#----------------------------------------------------------------------------

def _mismatch(got, expected, tol):
    """Why `got` is not `expected` (tensors, or sequences of them) within tol
    relative to each expected tensor's largest magnitude, or None."""
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    if len(got) != len(expected):
        return f'{len(got)} results instead of {len(expected)}'
    for i, (a, b) in enumerate(zip(got, expected)):
        if a.shape != b.shape:
            return f'result {i} has shape {list(a.shape)} instead of {list(b.shape)}'
        a, b = a.detach().double(), b.detach().double()
        error = (a - b).abs().max().item() if b.numel() else 0.0
        bound = tol * max(1.0, b.abs().max().item()) if b.numel() else 0.0
        if not error <= bound: # Also catches NaN.
            return f'result {i} is off by {error:.3g}, more than {bound:.3g}'
    return None

def self_check(name, kernel, reference, tol=1e-4):
    """Whether the kernel `name` computes what its reference does: compares
    kernel() with reference(), tensors or sequences of tensors, within `tol`
    relative to the magnitude of each expected tensor.

    Runs once per name and process, and remembers the answer. A kernel that
    disagrees, or raises, draws one warning naming it; the caller should then
    use its reference implementation. Both functions should compute on one
    small input, drawn from their own torch.Generator so that the check leaves
    the global random state alone. They run with autograd on, whatever the
    caller's mode, so that they can compare gradients too.
    """
    if name not in _checked:
        try:
            with torch.inference_mode(False), torch.enable_grad():
                problem = _mismatch(kernel(), reference(), tol)
        except Exception as e: # pylint: disable=broad-except
            problem = f'it raised {type(e).__name__}: {_summarize(e)}'
        if problem is not None:
            warnings.warn(f'The {name} kernel failed its self-check against the reference implementation: {problem}. '
                'Using the slower reference implementation instead.', RuntimeWarning, stacklevel=2)
        _checked[name] = problem is None
    return _checked[name]

#----------------------------------------------------------------------------
