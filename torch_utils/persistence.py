"""Pickles that carry the source code of the classes they hold.

An instance of a class decorated with `@persistent_class` pickles together
with the full source text of the module that defines the class. Unpickling
runs that source in a fresh module and rebuilds the object from it, so a
pickle keeps working, and keeps computing what it computed when it was
saved, after the defining file has been edited, renamed or deleted.

The pickle format is the one of NVIDIA's StyleGAN2-ADA/StyleGAN3 releases:
the pickle calls `torch_utils.persistence._reconstruct_persistent_obj(meta)`,
where `meta` is a plain dict

    type:        'class'
    version:     6
    module_src:  source text of the module defining the class
    class_name:  name of the class in that module
    state:       the object's state (its __getstate__(), i.e. __dict__)

so NVIDIA's published pickles load here and ours load with their code.
The embedded source may import only what every loader has: third-party
packages and the modules NVIDIA's StyleGAN2-ADA/StyleGAN3 and the official
CREPS code share with this project (SHARED_MODULES: dnnlib, torch_utils.misc,
torch_utils.persistence, torch_utils.ops.*, ...). Any other project module that
a persistent module imports at its top level (torch_utils.render,
training.generator, ...) travels inside the embedded source: the import is
replaced by a call that builds that module from its own (likewise portable)
source, carried as a string, so the pickle loads in those codebases too.

Unpickling executes the embedded source. Only load pickles you trust, or go
through `legacy.load_network_pkl`, which does not execute it by default.
"""

import ast
import copy
import hashlib
import importlib
import inspect
import io
import pickle
import sys
import types

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

_version          = 6      # Format version written into every pickle; NVIDIA's releases use 6 too.
_decorated        = dict() # {original or decorated class: decorated class}
_import_hooks     = []     # [hook(meta) -> meta, ...], called in registration order.
_module_to_src    = dict() # {module: source text}
_digest_to_module = dict() # {sha256 of source text: module}

PROJECT_PACKAGES = ('dnnlib', 'torch_utils', 'training', 'metrics')
SHARED_MODULES = ('dnnlib', 'dnnlib.util', 'torch_utils', 'torch_utils.misc', 'torch_utils.persistence',
    'torch_utils.training_stats', 'torch_utils.custom_ops', 'torch_utils.ops', 'torch_utils.ops.bias_act',
    'torch_utils.ops.conv2d_gradfix', 'torch_utils.ops.conv2d_resample', 'torch_utils.ops.filtered_lrelu',
    'torch_utils.ops.fma', 'torch_utils.ops.grid_sample_gradfix', 'torch_utils.ops.upfirdn2d')
"""Project modules that the official codebases have too, with the functions our networks call;
every other module of PROJECT_PACKAGES is carried in the embedded source of a module importing it."""

#----------------------------------------------------------------------------

def persistent_class(orig_class):
    """Class decorator: instances pickle with the source of the defining module.

        @persistence.persistent_class
        class MyNetwork(torch.nn.Module):
            def __init__(self, num_inputs, num_outputs): ...

    The decorator may also be applied just before construction,
    `persistence.persistent_class(SomeClass)(...)`. Classes of the same module
    that a persistent object holds must be decorated as well; functions of
    the module may be called freely, since they travel with its source.

    The arguments each instance was constructed with are kept (deep copies)
    as `obj.init_args` and `obj.init_kwargs` and pickled with it, so that a
    loader can build the same object with current code and copy the tensors
    over:

        new_net = MyNetwork(*old_net.init_args, **old_net.init_kwargs)
        misc.copy_params_and_buffers(old_net, new_net, require_all=True)

    Decorating a class twice returns the same decorated class, which lets the
    decorators run again when an unpickled module source is executed.
    """
    if not isinstance(orig_class, type):
        raise TypeError(f'persistent_class() decorates classes, got {orig_class!r}')
    if orig_class in _decorated:
        return _decorated[orig_class]

    orig_module = sys.modules.get(orig_class.__module__)
    if orig_module is None:
        raise ValueError(f'persistent_class: module {orig_class.__module__!r} of {orig_class.__qualname__} is not imported')
    module_src = module_source(orig_module)

    class Decorator(orig_class):
        _orig_module_src = module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            # Checked here, not at decoration time: while the decorator runs, the
            # module has not bound the class name yet. Unpickling looks it up by name.
            if _decorated.get(orig_module.__dict__.get(orig_class.__name__)) is not Decorator:
                raise TypeError(f'{orig_class.__qualname__} must be bound under its own name at the top level '
                    f'of module {orig_module.__name__!r} to be persistent')
            _check_pickleable(self.__getstate__()) # The state includes the init args.

        @property
        def init_args(self):
            """Positional arguments of the constructor call (a deep copy)."""
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            """Keyword arguments of the constructor call (a deep copy, as an EasyDict)."""
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            if type(self) not in _decorated:
                # A plain subclass of a persistent class: its own source is not
                # recorded, so pickle it by reference like any other class.
                return super().__reduce__()
            meta = dict(type='class', version=_version, module_src=self._orig_module_src,
                class_name=self._orig_class_name, state=self.__getstate__())
            return (_reconstruct_persistent_obj, (meta,), None)

    # Look like the original class in reprs, error messages and introspection.
    for attr in ('__name__', '__qualname__', '__module__', '__doc__'):
        setattr(Decorator, attr, getattr(orig_class, attr))
    _decorated[orig_class] = Decorator
    _decorated[Decorator] = Decorator
    return Decorator

#----------------------------------------------------------------------------

def is_persistent(obj):
    """Is `obj` a persistent class, or an instance of one?"""
    cls = obj if isinstance(obj, type) else type(obj)
    return _decorated.get(cls) is cls

#----------------------------------------------------------------------------

def import_hook(hook):
    """Register `hook(meta) -> meta`, called for every persistent object being
    unpickled, before its source is imported. `meta` is an EasyDict with the
    fields listed in the module docstring (`state` an EasyDict too). A hook
    typically patches `meta.module_src` for an API that has changed since the
    pickle was written. Returns `hook`, so it can be used as a decorator."""
    if not callable(hook):
        raise TypeError(f'import_hook() needs a callable, got {hook!r}')
    _import_hooks.append(hook)
    return hook

#----------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta):
    """Called by pickle to rebuild a persistent object from its `meta` dict."""
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state)
    for hook in _import_hooks:
        meta = hook(meta)
        if meta is None:
            raise ValueError(f'persistence import hook {hook!r} returned None instead of meta')
    if meta.version != _version:
        raise ValueError(f'Unsupported persistent object version {meta.version} (expected {_version})')
    if meta.type != 'class':
        raise ValueError(f'Unsupported persistent object type {meta.type!r}')

    module = _import_module_src(meta.module_src)
    orig_class = module.__dict__.get(meta.class_name)
    if not isinstance(orig_class, type):
        raise AttributeError(f'The pickled module source defines no class {meta.class_name!r}')
    cls = persistent_class(orig_class)
    obj = cls.__new__(cls)
    if hasattr(obj, '__setstate__'):
        obj.__setstate__(meta.state)
    else:
        obj.__dict__.update(meta.state)
    return obj

#----------------------------------------------------------------------------

def module_source(module):
    """The source text embedded for the persistent classes of an imported module
    (its own source, with the project modules it imports carried; see the module
    docstring), cached per module."""
    src = _module_to_src.get(module)
    if src is None:
        try:
            own_src = inspect.getsource(module)
        except (OSError, TypeError) as err:
            raise ValueError(f'persistent_class: cannot find the source of module {module.__name__!r} '
                f'({err}); persistent classes must be defined in a source file') from err
        src = _portable_source(own_src, module.__name__)
        _module_to_src[module] = src
        # Either text, found in a pickle, means this very module (pickles of earlier versions embed the own source).
        for text in (src, own_src):
            _digest_to_module.setdefault(_digest(text), module)
    return src

def _import_module_src(src):
    """The module with the given source text: the imported module it was read
    from if that is still loaded, else a fresh module executing `src`, created
    once per distinct source."""
    digest = _digest(src)
    module = _digest_to_module.get(digest)
    if module is None:
        module = types.ModuleType(f'_imported_module_{digest[:32]}')
        # Registered before executing, so that the decorators running inside
        # `src` find the source of their own module.
        sys.modules[module.__name__] = module
        _module_to_src[module] = src
        _digest_to_module[digest] = module
        exec(compile(src, f'<persistent source {digest[:12]}>', 'exec'), module.__dict__) # pylint: disable=exec-used
    return module

def _digest(src):
    return hashlib.sha256(src.encode('utf-8')).hexdigest()

#----------------------------------------------------------------------------
# Carrying project modules in an embedded source.

# Inserted once into a portable source, before its first carried import. Standard library only:
# it runs in whichever codebase unpickles. Each carried module is created once per process and
# source text, registered in sys.modules and linecache so that any persistent_class decorator
# (NVIDIA's included, which reads sources with inspect.getsource) finds its source.
_CARRY_PREAMBLE = '''
# Project modules carried by torch_utils.persistence, for loaders that lack them.
_CARRIED_SOURCES = {sources}

def _carried_module(name):
    import hashlib, linecache, sys, types
    src = _CARRIED_SOURCES[name]
    key = '_carried_' + hashlib.sha256(src.encode('utf-8')).hexdigest()[:32]
    if key not in sys.modules:
        module = types.ModuleType(key)
        module.__file__ = f'<carried {{name}} {{key}}>'
        linecache.cache[module.__file__] = (len(src), None, src.splitlines(True), module.__file__)
        sys.modules[key] = module
        exec(compile(src, module.__file__, 'exec'), module.__dict__)
    return sys.modules[key]
'''

_carrying = [] # Modules whose portable source is being made, outermost first.

def _is_carried(module_name):
    return module_name.split('.')[0] in PROJECT_PACKAGES and module_name not in SHARED_MODULES

def _imported_modules(node, importing):
    """[(bound name, module name, attribute or None)] of an import statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname is None and '.' in alias.name and _is_carried(alias.name):
                raise ValueError(f'persistent_class: module {importing!r} line {node.lineno}: write '
                    f'"from {alias.name.rpartition(".")[0]} import {alias.name.rpartition(".")[2]}" so that the module can be carried')
        return [(alias.asname or alias.name, alias.name, None) for alias in node.names]
    if node.level != 0:
        raise ValueError(f'persistent_class: module {importing!r} line {node.lineno}: relative imports cannot be carried')
    if node.module.split('.')[0] not in PROJECT_PACKAGES:
        return [(alias.asname or alias.name, node.module, alias.name) for alias in node.names]
    found = []
    for alias in node.names:
        value = getattr(importlib.import_module(node.module), alias.name, None)
        if inspect.ismodule(value):
            found.append((alias.asname or alias.name, value.__name__, None))
        else:
            found.append((alias.asname or alias.name, node.module, alias.name))
    return found

def _import_statement(bound, module, attr):
    """A statement binding `bound` as the replaced import did, to `module` or its attribute `attr`."""
    if attr is not None:
        return f'from {module} import {attr} as {bound}\n'
    if bound == module: # import a.b: binds a, as before.
        return f'import {module}\n'
    package, _, leaf = module.rpartition('.')
    return f'from {package} import {leaf} as {bound}\n' if package else f'import {module} as {bound}\n'

def _portable_source(src, module_name):
    """`src` with its top-level imports of carried project modules replaced by carried copies."""
    tree = ast.parse(src)
    top_level = set(map(id, tree.body))
    lines = src.splitlines(True)
    edits, carried = [], dict() # edits: (first line, last line, replacement), 1-based and inclusive.
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        imported = _imported_modules(node, module_name)
        if not any(_is_carried(name) for _bound, name, _attr in imported):
            continue
        if id(node) not in top_level:
            raise ValueError(f'persistent_class: module {module_name!r} line {node.lineno} imports a project module '
                f'inside a function or block; import it at the top level so that it travels with the source')
        statement = ''.join(lines[node.lineno - 1 : node.end_lineno])
        if statement.strip() != ast.get_source_segment(src, node).strip():
            raise ValueError(f'persistent_class: module {module_name!r} line {node.lineno}: put the import on lines of its own')
        text = []
        for bound, name, attr in imported:
            if not _is_carried(name):
                text.append(_import_statement(bound, name, attr))
                continue
            if name not in carried:
                if name in _carrying:
                    raise ValueError(f'persistent_class: modules {" -> ".join(_carrying + [name])} import each other in a circle; they cannot be carried')
                _carrying.append(name)
                try:
                    carried[name] = module_source(importlib.import_module(name))
                finally:
                    _carrying.pop()
            text.append(f'{bound} = _carried_module({name!r})' + (f'.{attr}' if attr else '') + '\n')
        edits.append((node.lineno, node.end_lineno, ''.join(text)))
    if not edits:
        return src
    for name in ('_CARRIED_SOURCES', '_carried_module'):
        if name in src:
            raise ValueError(f'persistent_class: module {module_name!r} uses the name {name}, reserved for carried modules')
    edits.sort()
    first = edits[0][0]
    out = lines[: first - 1] + [_CARRY_PREAMBLE.format(sources=repr(carried)) + '\n']
    previous_end = first - 1
    for start, end, text in edits:
        out += lines[previous_end : start - 1] + [text]
        previous_end = end
    out += lines[previous_end:]
    return ''.join(out)

#----------------------------------------------------------------------------

def _check_pickleable(obj):
    """Raise at construction time, rather than at the first snapshot, if the
    constructor arguments or state hold something that cannot be pickled.
    Tensors, arrays, primitives and persistent objects are known to pickle and
    are skipped, which keeps the check cheap for large networks."""
    def strip(obj):
        if isinstance(obj, (list, tuple, set, frozenset)):
            return [strip(x) for x in obj]
        if isinstance(obj, dict):
            return [[strip(k), strip(v)] for k, v in obj.items()]
        if obj is None or isinstance(obj, (str, bytes, bytearray, bool, int, float, complex)):
            return None
        if isinstance(obj, (torch.Tensor, np.ndarray)) or is_persistent(obj):
            return None
        return obj
    with io.BytesIO() as f:
        pickle.dump(strip(obj), f)

#----------------------------------------------------------------------------
