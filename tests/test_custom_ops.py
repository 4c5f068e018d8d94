"""custom_ops: builds cached by source hash and shared between processes, one
warning and a fallback on failure, CREPS_CUSTOM_OPS, and the self-check of
kernels against their reference implementations."""

import glob
import os
import subprocess
import sys
import warnings

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A CPython extension without torch headers, which compiles in about a second.
TINY_SOURCE = r'''
#include <Python.h>
#define ANSWER %d
#define INIT_FN_(name) PyInit_##name
#define INIT_FN(name) INIT_FN_(name)
static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(ANSWER); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, nullptr}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "tiny", nullptr, -1, methods};
PyMODINIT_FUNC INIT_FN(TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module_def); }
'''

GET_TINY = '''
from torch_utils import custom_ops
plugin = custom_ops.get_plugin({name!r}, sources=['tiny.cpp'], source_dir={src!r})
print('answer', plugin.answer())
'''

def _write_tiny(src_dir, answer):
    os.makedirs(src_dir, exist_ok=True)
    with open(os.path.join(src_dir, 'tiny.cpp'), 'w') as f:
        f.write(TINY_SOURCE % answer)

def _start(name, src_dir, ext_dir):
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(ext_dir), CREPS_CUSTOM_OPS='1')
    return subprocess.Popen([sys.executable, '-c', GET_TINY.format(name=name, src=str(src_dir))], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def _finish(proc):
    """(answer, whether the process compiled the plugin)."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return int(out.split()[-1]), 'Building PyTorch plugin' in err

def _get_tiny(name, src_dir, ext_dir):
    return _finish(_start(name, src_dir, ext_dir))

def _libraries(ext_dir, name):
    return sorted(glob.glob(os.path.join(str(ext_dir), name, '*', name + '.so')))

#----------------------------------------------------------------------------

def test_build_is_cached_across_processes_and_rebuilt_on_edit(tmp_path):
    src, ext = tmp_path / 'src', tmp_path / 'ext'
    _write_tiny(src, 42)
    assert _get_tiny('tiny_cached', src, ext) == (42, True)
    [library] = _libraries(ext, 'tiny_cached')
    mtime = os.path.getmtime(library)
    assert _get_tiny('tiny_cached', src, ext) == (42, False)
    assert os.path.getmtime(library) == mtime

    _write_tiny(src, 43)
    assert _get_tiny('tiny_cached', src, ext) == (43, True)
    assert len(_libraries(ext, 'tiny_cached')) == 2

def test_concurrent_processes_build_once(tmp_path):
    src, ext = tmp_path / 'src', tmp_path / 'ext'
    _write_tiny(src, 7)
    procs = [_start('tiny_concurrent', src, ext) for _ in range(2)]
    results = [_finish(p) for p in procs]
    assert [answer for answer, _ in results] == [7, 7]
    assert sum(built for _, built in results) == 1

def test_stale_lock_of_a_killed_build_is_ignored(tmp_path):
    src, ext = tmp_path / 'src', tmp_path / 'ext'
    _write_tiny(src, 5)
    _get_tiny('tiny_stale', src, ext)
    [library] = _libraries(ext, 'tiny_stale')
    build_dir = os.path.dirname(library)
    # What a build killed halfway leaves: torch's lock file, no library, no marker.
    os.remove(library)
    os.remove(os.path.join(build_dir, '.done'))
    open(os.path.join(build_dir, 'lock'), 'w').close()
    assert _get_tiny('tiny_stale', src, ext) == (5, True)

def test_a_library_cut_short_is_rebuilt_not_loaded(tmp_path):
    # Loading a truncated library kills the process with SIGBUS; ninja's time stamps call it up to date.
    src, ext = tmp_path / 'src', tmp_path / 'ext'
    _write_tiny(src, 9)
    _get_tiny('tiny_truncated', src, ext)
    [library] = _libraries(ext, 'tiny_truncated')
    with open(library, 'r+b') as f:
        f.truncate(os.path.getsize(library) // 2)
    assert _get_tiny('tiny_truncated', src, ext) == (9, True)
    assert _get_tiny('tiny_truncated', src, ext) == (9, False)

def test_broken_source_warns_once_and_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    monkeypatch.setenv('CREPS_CUSTOM_OPS', '1')
    (tmp_path / 'broken.cpp').write_text('#include <Python.h>\nthis is not C++;\n')
    kwargs = dict(sources=['broken.cpp'], source_dir=str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert custom_ops.try_get_plugin('broken_plugin', **kwargs) is None
        assert custom_ops.try_get_plugin('broken_plugin', **kwargs) is None
    assert len(caught) == 1
    message = str(caught[0].message)
    assert 'broken_plugin' in message and 'error' in message and 'reference implementation' in message
    [log] = glob.glob(str(tmp_path / 'ext' / 'broken_plugin' / '*' / 'build.log'))
    assert log in message and 'this is not C++' in open(log).read()
    with pytest.raises(custom_ops.PluginError, match='broken_plugin'):
        custom_ops.get_plugin('broken_plugin', **kwargs)

@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the behaviour without CUDA')
def test_cuda_plugin_without_cuda_warns_and_gives_none(tmp_path):
    (tmp_path / 'kernel.cu').write_text('__global__ void k() {}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert custom_ops.try_get_plugin('cuda_only_plugin', sources=['kernel.cu'], source_dir=str(tmp_path)) is None
    assert len(caught) == 1 and 'CUDA is not available' in str(caught[0].message)

@pytest.mark.parametrize('value', ['0', 'off'])
def test_disabled_by_environment(tmp_path, monkeypatch, value):
    monkeypatch.setenv('CREPS_CUSTOM_OPS', value)
    monkeypatch.setattr(bias_act, '_plugins', {})
    _write_tiny(tmp_path, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert custom_ops.try_get_plugin('tiny_disabled', sources=['tiny.cpp'], source_dir=str(tmp_path)) is None
        x = torch.randn([4, 3], requires_grad=True)
        assert bias_act.resolve_impl(x) == 'ref'
        y = bias_act.bias_act(x, torch.zeros([3]), act='lrelu', clamp=1)
        assert type(y.grad_fn).__name__ == 'ClampBackward1'
    assert not caught
    with pytest.raises(custom_ops.PluginError, match='CREPS_CUSTOM_OPS'):
        custom_ops.get_plugin('tiny_disabled', sources=['tiny.cpp'], source_dir=str(tmp_path))

#----------------------------------------------------------------------------
# self_check(): a kernel that builds but computes wrong results.

def test_self_check_passes_matching_results(monkeypatch):
    monkeypatch.setattr(custom_ops, '_checked', {})
    x = torch.linspace(-100, 100, 9)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert custom_ops.self_check('close_op', lambda: (x, x.half()), lambda: [x * (1 + 1e-6), x.double()])
        assert custom_ops.self_check('loose_op', lambda: x.half(), lambda: x + 0.05, tol=1e-3) # Relative to the largest magnitude.

def test_self_check_warns_once_and_remembers(monkeypatch):
    monkeypatch.setattr(custom_ops, '_checked', {})
    x = torch.arange(4.)
    calls = []
    def wrong():
        calls.append(1)
        return x + 0.1
    def raising():
        raise RuntimeError('no kernel image is available for execution on the device')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert not custom_ops.self_check('wrong_op', wrong, lambda: x)
        assert not custom_ops.self_check('wrong_op', wrong, lambda: x) # Remembered, not run again.
        assert not custom_ops.self_check('nan_op', lambda: x * float('nan'), lambda: x)
        assert not custom_ops.self_check('shape_op', lambda: x[:3], lambda: x)
        assert not custom_ops.self_check('count_op', lambda: [x], lambda: [x, x])
        assert not custom_ops.self_check('raising_op', raising, lambda: x)
    assert len(calls) == 1
    messages = [str(w.message) for w in caught]
    assert len(messages) == 5 and all(w.category is RuntimeWarning for w in caught)
    assert all('reference implementation instead' in m for m in messages)
    for name, why, message in zip(['wrong_op', 'nan_op', 'shape_op', 'count_op', 'raising_op'],
            ['off by 0.1', 'off by nan', 'shape [3]', '1 results instead of 2', 'RuntimeError: no kernel image'], messages):
        assert f'The {name} kernel failed its self-check' in message and why in message, message

def test_self_check_runs_with_autograd(monkeypatch):
    # Plugins load on first use, which may come under no_grad or inference_mode: a check of gradients must still work.
    monkeypatch.setattr(custom_ops, '_checked', {})
    def grad_of_square():
        x = torch.arange(3.).requires_grad_(True)
        return torch.autograd.grad(x.square().sum(), [x])
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter('error')
        assert custom_ops.self_check('grad_op', grad_of_square, lambda: [torch.arange(3.) * 2])
