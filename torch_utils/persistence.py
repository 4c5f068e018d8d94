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
Only the module of the decorated class is embedded: the modules it imports
(torch, dnnlib, torch_utils, ...) must be importable when unpickling.

Unpickling executes the embedded source. Only load pickles you trust, or go
through `legacy.load_network_pkl`, which does not execute it by default.
"""

import copy
import hashlib
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
    module_src = _get_module_src(orig_module)

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

def _get_module_src(module):
    """Source text of an imported module, cached per module."""
    src = _module_to_src.get(module)
    if src is None:
        try:
            src = inspect.getsource(module)
        except (OSError, TypeError) as err:
            raise ValueError(f'persistent_class: cannot find the source of module {module.__name__!r} '
                f'({err}); persistent classes must be defined in a source file') from err
        _module_to_src[module] = src
        _digest_to_module.setdefault(_digest(src), module)
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
