"""torch_utils.persistence: pickles in NVIDIA's format that carry their module's source."""

import copy
import importlib
import io
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import uuid

import pytest
import torch

from torch_utils import persistence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A module defining persistent classes; FACTOR is what a later edit changes.
MODULE_SRC = textwrap.dedent('''
    import torch
    from torch_utils import persistence

    FACTOR = 2.0

    def scaled(x):
        return x * FACTOR

    @persistence.persistent_class
    class Layer(torch.nn.Module):
        def __init__(self, features, bias=True):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(features, features))
            self.register_buffer('offset', torch.randn(features))
            self.linear = torch.nn.Linear(features, features, bias=bias)

        def forward(self, x):
            return scaled(self.linear(x @ self.weight) + self.offset)

    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, features, depth=2):
            super().__init__()
            self.layers = torch.nn.ModuleList([Layer(features) for _ in range(depth)])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x
''')

@pytest.fixture
def netmod(tmp_path, monkeypatch):
    """The module above, written to tmp_path under a unique name and imported."""
    name = f'persistent_mod_{uuid.uuid4().hex[:8]}'
    path = tmp_path / f'{name}.py'
    path.write_text(MODULE_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)

def _run_python(script, *paths):
    """Run `script` in a fresh interpreter that can import the repo and `paths`; returns stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, *map(str, paths)]))
    result = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout

class _MetaCapturingUnpickler(pickle.Unpickler):
    """Records each persistent object's meta instead of executing its source."""
    def __init__(self, file):
        super().__init__(file)
        self.metas = []

    def find_class(self, module, name):
        if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
            return lambda meta: self.metas.append(meta) or meta
        return super().find_class(module, name)

#----------------------------------------------------------------------------

def test_round_trip(netmod):
    net = netmod.Net(4, depth=3)
    assert persistence.is_persistent(net) and persistence.is_persistent(netmod.Net)
    assert not persistence.is_persistent(torch.nn.Linear(1, 1))
    assert net.init_args == (4,) and net.init_kwargs == {'depth': 3} and net.init_kwargs.depth == 3

    loaded = pickle.loads(pickle.dumps(net))
    assert type(loaded).__name__ == 'Net'
    for (name, a), (name_b, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b)
    x = torch.randn(5, 4)
    assert torch.equal(net(x), loaded(x))
    assert loaded.init_args == (4,) and loaded.init_kwargs == {'depth': 3}
    rebuilt = type(loaded)(*loaded.init_args, **loaded.init_kwargs)
    assert len(rebuilt.layers) == 3
    twin = copy.deepcopy(net) # How the training loop makes G_ema.
    assert type(twin) is type(net) and torch.equal(twin(x), net(x)) and twin.init_kwargs == {'depth': 3}

def test_decoration_is_idempotent(netmod):
    assert persistence.persistent_class(netmod.Net) is netmod.Net

def test_pickle_format_matches_nvidia(netmod):
    net = netmod.Net(3, depth=1)
    data = pickle.dumps(net)
    strings = {arg for _op, arg, _pos in pickletools.genops(data) if isinstance(arg, str)}
    assert {'torch_utils.persistence', '_reconstruct_persistent_obj'} <= strings

    unpickler = _MetaCapturingUnpickler(io.BytesIO(data))
    outer = unpickler.load()
    assert type(outer) is dict # A plain dict, as in NVIDIA's pickles, not an EasyDict.
    assert set(outer) == {'type', 'version', 'module_src', 'class_name', 'state'}
    assert outer['type'] == 'class' and outer['version'] == 6 and outer['class_name'] == 'Net'
    assert outer['module_src'] == MODULE_SRC
    assert outer['state']['_init_args'] == (3,) and outer['state']['_init_kwargs'] == {'depth': 1}
    assert sorted(meta['class_name'] for meta in unpickler.metas) == ['Layer', 'Net']

def test_loads_in_fresh_process_after_source_changed_and_deleted(netmod, tmp_path):
    net = netmod.Net(4)
    x = torch.randn(2, 4)
    torch.save(dict(x=x, y=net(x)), tmp_path / 'expected.pt')
    (tmp_path / 'net.pkl').write_bytes(pickle.dumps(dict(G=net, other=netmod.Layer(4))))

    # The class would now compute something else...
    source_file = tmp_path / f'{netmod.__name__}.py'
    source_file.write_text(MODULE_SRC.replace('FACTOR = 2.0', 'FACTOR = 3.0'))
    output = _run_python(textwrap.dedent(f'''
        import importlib, os, pickle, torch
        edited = importlib.import_module({netmod.__name__!r})
        assert edited.FACTOR == 3.0
        os.remove({str(source_file)!r}) # ... and is gone.
        with open({str(tmp_path / 'net.pkl')!r}, 'rb') as f:
            data = pickle.load(f)
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
        G = data['G']
        assert torch.equal(G(expected['x']), expected['y']), 'old behaviour lost'
        assert type(G) is not edited.Net
        modules = {{type(obj).__module__ for obj in [G, data['other'], *G.layers]}}
        print(len(modules), modules.pop().startswith('_imported_module_'))
    '''), tmp_path)
    assert output.split() == ['1', 'True'] # One module, executed once for all objects.
    assert not source_file.exists()

def test_objects_from_one_source_share_a_module(netmod):
    # An edited copy of the source, as NVIDIA's pickles bring: not the imported module.
    def patch(meta):
        meta.module_src = meta.module_src + '\n# edited\n'
        return meta
    persistence.import_hook(patch)
    try:
        a, b = pickle.loads(pickle.dumps([netmod.Net(2), netmod.Layer(2)]))
    finally:
        persistence._import_hooks.remove(patch)
    assert type(a).__module__ == type(b).__module__ == type(a.layers[0]).__module__
    assert type(a).__module__ != netmod.__name__
    assert type(a.layers[0]) is type(b)
    assert type(pickle.loads(pickle.dumps(a))) is type(a) # Re-pickling keeps the loaded source.

def test_import_hook_modifies_meta(netmod):
    seen = []
    def hook(meta):
        seen.append((meta.class_name, meta.version, sorted(meta.state.keys())[:1]))
        meta.module_src = meta.module_src.replace('FACTOR = 2.0', 'FACTOR = 0.0')
        return meta
    persistence.import_hook(hook)
    try:
        loaded = pickle.loads(pickle.dumps(netmod.Layer(3)))
    finally:
        persistence._import_hooks.remove(hook)
    assert seen and seen[0][:2] == ('Layer', 6)
    assert torch.equal(loaded(torch.randn(2, 3)), torch.zeros(2, 3))

def test_unpicklable_init_arg_fails_at_construction(netmod):
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        netmod.Layer(2, bias=lambda: None)

def test_class_without_source_is_rejected():
    module = type(sys)('module_without_file')
    sys.modules[module.__name__] = module
    try:
        cls = type('Thing', (), {'__module__': module.__name__})
        with pytest.raises(ValueError, match='source'):
            persistence.persistent_class(cls)
    finally:
        del sys.modules[module.__name__]

#----------------------------------------------------------------------------

#----------------------------------------------------------------------------
# Carried project modules.

def _module_from(tmp_path, monkeypatch, src):
    name = f'carrying_mod_{uuid.uuid4().hex[:8]}'
    (tmp_path / f'{name}.py').write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)

def test_project_import_is_carried_and_shared_import_kept(tmp_path, monkeypatch):
    module = _module_from(tmp_path, monkeypatch, '''
        import torch
        from torch_utils import misc, render
        from torch_utils.ops import bias_act
    ''')
    src = persistence.module_source(module)
    assert 'from torch_utils import misc as misc\n' in src and 'from torch_utils.ops import bias_act\n' in src
    assert "render = _carried_module('torch_utils.render')\n" in src and 'from torch_utils import misc, render' not in src
    namespace = dict(__name__='carried_check')
    exec(compile(src, '<portable>', 'exec'), namespace) # pylint: disable=exec-used
    # A copy built from the carried source, not the imported module, computing the same.
    assert namespace['render'] is not importlib.import_module('torch_utils.render')
    assert namespace['render'].lines_for_size(3, 2)[1].tolist() == [0, 0.5, 1]

@pytest.mark.parametrize('src, phrase', [
    ('def f():\n    from torch_utils import render\n', 'inside a function'),
    ('import training.generator\n', 'from training import generator'),
], ids=['nested', 'dotted'])
def test_uncarriable_project_import_is_refused_at_decoration(tmp_path, monkeypatch, src, phrase):
    module = _module_from(tmp_path, monkeypatch, 'import torch\n' + src)
    with pytest.raises(ValueError, match=phrase):
        persistence.module_source(module)
