"""Loading network pickles, safely by default, and exporting them to safetensors.

A network pickle is a dict such as {'G': ..., 'D': ..., 'G_ema': ...,
'training_set_kwargs': ...}, its networks pickled with torch_utils.persistence
(their source embedded), in the format of NVIDIA's StyleGAN releases.

`load_network_pkl(f, trust=False)` never executes code from the file: a
restricted unpickler accepts only the globals that tensors, arrays and plain
containers need, and rebuilds every persistent object as the native class of
the same name (from the modules in NATIVE_MODULES) constructed from the
recorded init arguments, then copies the recorded parameters and buffers into
it. The embedded module source is ignored. Anything else is refused with an
UntrustedPickleError; `trust=True` (`--trust-pickle` on the commands) loads
with plain pickle, executing the embedded source as NVIDIA's loader does.

A `.safetensors` file written by `export_safetensors` is accepted wherever a
pickle is (recognised by its header): tensors plus JSON metadata naming each
network's class and init arguments; no pickle at all.

    python legacy.py export --network=snapshot.pkl --dest=snapshot.safetensors
"""

import _compat_pickle
import collections
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import zipfile

import click
import numpy as np
import torch

import dnnlib
from dnnlib import safe_numpy
from torch_utils.cli import expand_path
from torch_utils import persistence

#----------------------------------------------------------------------------

# The model this repository ships (its card: models/creps-fmnist32.md), the scripts' default --network.
DEFAULT_NETWORK = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'models', 'creps-fmnist32.safetensors')

NATIVE_MODULES = ('training.networks_creps', 'training.networks_stylegan2', 'training.networks_stylegan3', 'training.augment')
TRUST_HINT = 'if you trust the file, load it with --trust-pickle (trust=True in Python), which executes the code embedded in it'
SAFETENSORS_FORMAT = 'creps-networks/1' # The 'format' entry of our safetensors metadata.
MAX_SAFETENSORS_HEADER = 1 << 30 # Bytes: a longer header is not one of ours.

class NetworkPickleError(Exception):
    """A network pickle that cannot be used; the message is one line naming the source."""

class UntrustedPickleError(NetworkPickleError):
    """The pickle needs code execution (or a class we cannot rebuild) to load; `trust=True` would load it."""

class _Mismatch(Exception):
    """A recorded object does not fit a native class (internal; becomes a NetworkPickleError)."""

#----------------------------------------------------------------------------
# Public API.

def load_network_pkl(f, source='<stream>', trust=False):
    """Load a network pickle (or one of our .safetensors files) from the binary file object `f`.

    With trust=False (the default) no code from the file is executed (see the
    module docstring); trust=True unpickles it as NVIDIA's loader does,
    executing the embedded source. `source` names the file in error messages.
    Raises NetworkPickleError (UntrustedPickleError for what only trust=True
    would load) for anything that is not a usable network pickle.
    """
    f = _peekable(f)
    data = _load_safetensors(f.read(), source) if _is_safetensors(f) else _unpickle(f, source, trust)
    verify_checksums(data, source)
    return data

def _unpickle(f, source, trust):
    """The snapshot dict of the pickle `f` (see load_network_pkl)."""
    try:
        if trust:
            data = pickle.load(f)
        else:
            data = _materialize(_RestrictedUnpickler(f).load(), dict())
    except NetworkPickleError as err:
        raise type(err)(f'{source}: {err}') from None
    except _Mismatch as err:
        raise NetworkPickleError(f'{source}: {err}') from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as err:
        raise NetworkPickleError(f'{source}: not a readable network pickle ({type(err).__name__}: {_one_line(err)})') from err
    except (ImportError, AttributeError) as err:
        if str(getattr(err, 'name', None) or '').startswith('dnnlib.tflib') or 'dnnlib.tflib' in str(err):
            raise NetworkPickleError(f'{source}: {_TF_MESSAGE}') from err
        raise NetworkPickleError(f'{source}: the pickle refers to code that is not available ({_one_line(err)})') from err
    except Exception as err: # Corrupt payloads surface as arbitrary exceptions from the rebuild functions.
        raise NetworkPickleError(f'{source}: corrupt network pickle ({type(err).__name__}: {_one_line(err)})') from err
    if not isinstance(data, dict):
        raise NetworkPickleError(f'{source}: expected a dict of networks, found {type(data).__name__}')
    return data

CHECKSUMS_KEY = 'tensor_checksums' # {network key: sha256 of its tensors}; NVIDIA's loaders ignore the entry.

def tensor_checksums(data):
    """{key: hex SHA-256 of the names, dtypes, shapes and bytes of its parameters and buffers} of
    each network in the snapshot dict `data`: what the snapshots this project writes carry, so that
    a file whose tensor bytes were damaged is refused instead of rendering wrong images."""
    checksums = dict()
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            digest = hashlib.sha256()
            for name, tensor in sorted(_named_tensors(value).items()):
                digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)};'.encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            checksums[key] = digest.hexdigest()
    return checksums

def verify_checksums(data, source):
    """NetworkPickleError naming the network whose tensors do not match the checksum recorded beside it."""
    recorded = data.get(CHECKSUMS_KEY)
    if not isinstance(recorded, dict):
        return # Written elsewhere (NVIDIA's pickles have no checksums).
    actual = tensor_checksums({key: data.get(key) for key in recorded})
    for key, checksum in recorded.items():
        if key in actual and actual[key] != checksum:
            raise NetworkPickleError(f'{source}: the tensors of {key!r} do not match the checksum written with them: the file is damaged')

def open_network_pkl(network, trust=False, verbose=True):
    """load_network_pkl() of the file or URL `network` (a download is cached);
    NetworkPickleError, naming `network`, on any failure."""
    if os.path.isdir(network):
        snapshots = sorted(name for name in os.listdir(network) if name.startswith('network-snapshot-') and name.endswith('.pkl'))
        raise NetworkPickleError(f'{network}: a folder, not a network file' + (f'; its newest snapshot is {os.path.join(network, snapshots[-1])}'
            if snapshots else ''))
    try:
        with dnnlib.util.open_url(network, verbose=verbose) as f:
            return load_network_pkl(f, source=str(network), trust=trust)
    except FileNotFoundError as err:
        raise NetworkPickleError(f'{network}: no such file') from err
    except dnnlib.util.DownloadError as err: # Its message names the URL and the cache folder.
        raise NetworkPickleError(str(err)) from err
    except OSError as err:
        raise NetworkPickleError(f'{network}: {err.strerror or err}') from err

def network_of(data, key, source):
    """The network `key` of a snapshot dict; NetworkPickleError naming `source` if it has none."""
    if data.get(key) is None:
        raise NetworkPickleError(f'{source}: the pickle has no {key!r} network (it has: {", ".join(map(str, data)) or "nothing"})')
    if not isinstance(data[key], torch.nn.Module):
        raise NetworkPickleError(f'{source}: its {key!r} is a {type(data[key]).__name__}, not a network')
    for name, tensor in _named_tensors(data[key]).items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NetworkPickleError(f'{source}: its {key!r} has NaN or infinite values in {name} (as after a training run that '
                'diverged): its images would be blank')
    return data[key]

def load_network(network, key='G_ema', trust=False):
    """Open `network` (path or URL; pickle or .safetensors) and return its network `key`; NetworkPickleError on failure."""
    return network_of(open_network_pkl(network, trust=trust), key, network)

def load_generator(network, trust=False):
    """(G_ema, its class names or None) of `network` (path or URL; pickle or .safetensors);
    NetworkPickleError on failure."""
    data = open_network_pkl(network, trust=trust)
    G = network_of(data, 'G_ema', network)
    return G, class_names_of(data, G)

def class_names_of(data, network):
    """The snapshot dict's class names, one string per class index of the conditional `network`,
    or None when it names none (or names that do not fit the network's classes)."""
    names = data.get('class_names')
    if isinstance(names, list) and len(names) == getattr(network, 'c_dim', 0) > 0 and all(isinstance(n, str) for n in names):
        return names
    return None

def read_class_names(path):
    """The class names stored in our .safetensors file `path`, read from its header alone (for
    help texts); None when it names none, or is not such a file."""
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
            head += f.read(min(struct.unpack('<Q', head)[0], MAX_SAFETENSORS_HEADER))
        names = json.loads(_safetensors_metadata(head)['extras'])['class_names']
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError):
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None

def export_safetensors(network, path, trust=False):
    """Write the networks of a snapshot to the .safetensors file `path`.

    `network` is a dict of networks (as load_network_pkl returns) or a path,
    URL or binary file object of a network pickle (loaded with `trust`).
    Tensor names are '<key>.<parameter or buffer name>'; the metadata holds,
    as JSON, each network's class and init arguments, and the snapshot's
    other JSON-encodable entries (such as training_set_kwargs). Returns `path`.
    """
    if isinstance(network, dict):
        data = network
    elif hasattr(network, 'read'):
        data = load_network_pkl(network, trust=trust)
    else:
        data = open_network_pkl(network, trust=trust, verbose=False)
    safetensors_torch = _import_safetensors()
    tensors, networks, extras = dict(), dict(), dict()
    for key, value in data.items():
        if not isinstance(key, str) or '.' in key:
            raise NetworkPickleError(f'cannot export entry {key!r}: keys must be strings without dots')
        if isinstance(value, torch.nn.Module):
            if not persistence.is_persistent(value) or not hasattr(value, '_init_kwargs'):
                raise NetworkPickleError(f'cannot export {key!r}: {type(value).__name__} is not a persistent network class')
            cls = type(value)
            class_name = f'{cls.__module__}.{cls.__name__}'
            if cls.__module__ not in NATIVE_MODULES: # Loaded with trust=True: its class comes from embedded source.
                class_name = _qualname(_candidate_classes(cls.__name__, getattr(cls, '_orig_module_src', ''))[0])
            try:
                init = _to_json(dict(args=list(value._init_args), kwargs=dict(value._init_kwargs)))
            except TypeError as err:
                raise NetworkPickleError(f'cannot export {key!r}: {err}') from None
            networks[key] = dict(class_name=class_name, init_args=init['args'], init_kwargs=init['kwargs'],
                training=[name for name, m in value.named_modules() if m.training],
                requires_grad=[name for name, p in value.named_parameters() if p.requires_grad])
            for name, tensor in _named_tensors(value).items():
                tensors[f'{key}.{name}'] = tensor.detach().cpu().contiguous().clone()
        elif value is None:
            networks[key] = None
        else:
            try:
                extras[key] = _to_json(value)
            except TypeError:
                pass # Not representable without pickle: left out.
    extras[CHECKSUMS_KEY] = tensor_checksums(data) # Of the tensors as written (the snapshot's may name other networks).
    metadata = dict(format=SAFETENSORS_FORMAT, networks=json.dumps(networks), extras=json.dumps(extras))
    payload = safetensors_torch.save(tensors, metadata=metadata)
    with dnnlib.util.atomic_write(os.fspath(path)) as f:
        f.write(payload)
    return path

#----------------------------------------------------------------------------
# The restricted unpickler.

_TF_MESSAGE = ('a TensorFlow-era StyleGAN/StyleGAN2 pickle (dnnlib.tflib.network.Network): out of scope here; '
    'convert it with NVIDIA\'s PyTorch release first')

class _Recorded:
    """A persistent object as recorded in the pickle: its class name, module source and state."""
    def __init__(self, meta):
        if not isinstance(meta, dict) or not isinstance(meta.get('class_name'), str) or not isinstance(meta.get('state'), dict):
            raise _Mismatch('corrupt persistent object record (expected a dict with class_name and state)')
        if meta.get('type') != 'class' or meta.get('version') != 6:
            raise _Mismatch(f'persistent object {meta["class_name"]!r} has unsupported type/version {meta.get("type")!r}/{meta.get("version")!r}')
        self.class_name = meta['class_name']
        self.module_src = meta.get('module_src') if isinstance(meta.get('module_src'), str) else ''
        self.module_name = meta.get('module_name') # Not written by NVIDIA's format nor ours; honoured if present.
        self.state = meta['state']

class _RecordedTorchModule:
    """Stand-in for a module pickled by reference (torch.nn.Sequential, ModuleList..., or a network module's
    plain class) inside a persistent network: its state is only read."""
    torch_class = None
    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise _Mismatch(f'corrupt state of a {self.torch_class.__name__}')
        self.state = state

_stand_ins = dict()

def _torch_module_stand_in(cls):
    if cls not in _stand_ins:
        _stand_ins[cls] = type(cls.__name__, (_RecordedTorchModule,), dict(torch_class=cls))
    return _stand_ins[cls]

def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor for protocol 0/1 pickles, limited to our stand-ins."""
    if base is not object or not (isinstance(cls, type) and issubclass(cls, _RecordedTorchModule)) or state is not None:
        raise UntrustedPickleError(f'refused to rebuild {getattr(cls, "__name__", cls)!r} via copyreg; {TRUST_HINT}')
    return object.__new__(cls)

def _load_storage_from_bytes(b):
    """torch.storage._load_from_bytes without its full unpickling: torch's weights-only loader."""
    return torch.load(io.BytesIO(b), weights_only=True, map_location='cpu')

def _allowed_globals():
    allowed = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('builtins', 'set'): set, ('builtins', 'frozenset'): frozenset, ('builtins', 'complex'): complex,
        ('builtins', 'slice'): slice,
        ('copyreg', '_reconstructor'): _safe_reconstructor,
        ('torch._utils', '_rebuild_tensor'): torch._utils._rebuild_tensor,
        ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
        ('torch._utils', '_rebuild_parameter'): torch._utils._rebuild_parameter,
        ('torch._utils', '_rebuild_parameter_with_state'): torch._utils._rebuild_parameter_with_state,
        ('torch.storage', '_load_from_bytes'): _load_storage_from_bytes,
        ('torch', 'device'): torch.device, ('torch', 'Size'): torch.Size,
        ('dnnlib.util', 'EasyDict'): dnnlib.EasyDict, ('dnnlib', 'EasyDict'): dnnlib.EasyDict,
        ('torch_utils.persistence', '_reconstruct_persistent_obj'): _Recorded,
    }
    return allowed

def _referenced_module_class(module, name):
    """The module class a pickle names by reference whose state, inside a persistent network, may be
    read: a torch.nn class (Sequential, ModuleList...) or a plain class of a network module (the
    official CREPS release's SynthesisInput is not persistent); None for anything else."""
    if module.startswith('torch.nn.modules.'):
        cls = vars(sys.modules[module]).get(name) if module in sys.modules else None
    elif module in NATIVE_MODULES:
        native = _native_modules().get(module)
        cls = vars(native).get(name) if native is not None else None
        cls = cls if getattr(cls, '__module__', None) == module else None # Defined there, not imported.
    else:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, torch.nn.Module) else None

class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module, name):
        # Python 2 names (protocols 0-2), mapped as pickle.Unpickler's fix_imports does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        found = self._allowed.get((module, name)) or safe_numpy.find_plain_global(module, name)
        if found is not None:
            return found
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        cls = _referenced_module_class(module, name)
        if cls is not None:
            return _torch_module_stand_in(cls)
        if module.startswith('dnnlib.tflib'):
            raise NetworkPickleError(_TF_MESSAGE)
        raise UntrustedPickleError(f'refused to load {module}.{name}: not a tensor, array or known network class; {TRUST_HINT}')

#----------------------------------------------------------------------------
# Rebuilding recorded persistent objects as native classes.

def _native_modules():
    modules = dict()
    for name in NATIVE_MODULES:
        try:
            modules[name] = __import__(name, fromlist=['_'])
        except ModuleNotFoundError as err:
            if err.name != name: # The module exists but something it imports is missing.
                raise
    return modules

_source_lines = dict()

def _similarity(src, module):
    if module not in _source_lines:
        native_src = persistence.module_source(module) # As our own pickles embed it.
        _source_lines[module] = (native_src, set(native_src.splitlines()))
    native_src, native_lines = _source_lines[module]
    if src == native_src:
        return 2.0
    lines = set(src.splitlines())
    return len(lines & native_lines) / max(len(lines | native_lines), 1)

def _native_class(module, class_name):
    cls = module.__dict__.get(class_name)
    if isinstance(cls, type) and issubclass(cls, torch.nn.Module) and persistence.is_persistent(cls) and cls.__module__ == module.__name__:
        return cls
    return None

def _candidate_classes(class_name, module_src, module_name=None):
    """Native persistent classes named `class_name`, the most likely first (by the similarity of their module's source)."""
    modules = _native_modules()
    if module_name is not None:
        if module_name not in modules:
            raise UntrustedPickleError(f'refused to rebuild {module_name}.{class_name}: module {module_name!r} is not one of '
                f'the network modules {", ".join(modules)}; {TRUST_HINT}')
        modules = {module_name: modules[module_name]}
    found = [(module, cls) for module in modules.values() if (cls := _native_class(module, class_name)) is not None]
    if not found:
        raise UntrustedPickleError(f'refused to rebuild persistent class {class_name!r}: no network class of that name in '
            f'{", ".join(modules)}, and its embedded source is not executed; {TRUST_HINT}')
    found.sort(key=lambda item: -_similarity(module_src, item[0]))
    return [cls for _module, cls in found]

def _qualname(cls):
    return f'{cls.__module__}.{cls.__name__}'

def _materialize(obj, memo):
    """Replace every recorded persistent object in `obj` (dicts, lists, tuples) with its native rebuild."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _Recorded):
        result = _rebuild(obj, memo)
    elif isinstance(obj, _RecordedTorchModule):
        raise UntrustedPickleError(f'refused to rebuild a {obj.torch_class.__name__} outside any persistent network '
            f'(no init arguments recorded); {TRUST_HINT}')
    elif type(obj) in (dict, dnnlib.EasyDict, collections.OrderedDict):
        result = type(obj)((key, _materialize(value, memo)) for key, value in obj.items())
    elif type(obj) is list:
        result = [_materialize(value, memo) for value in obj]
    elif type(obj) is tuple:
        result = tuple(_materialize(value, memo) for value in obj)
    else:
        result = safe_numpy.resolve(obj) # numpy's stand-ins become arrays, scalars and dtypes.
    memo[id(obj)] = result
    return result

def _rebuild(rec, memo):
    state = rec.state
    if '_init_args' not in state or '_init_kwargs' not in state:
        raise _Mismatch(f'persistent object {rec.class_name!r} has no recorded init arguments (_init_args/_init_kwargs)')
    args = _materialize(state['_init_args'], memo)
    kwargs = _materialize(state['_init_kwargs'], memo)
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise _Mismatch(f'persistent object {rec.class_name!r}: corrupt init arguments')
    recorded = _collect(state, '', rec.class_name)
    errors = []
    for cls in _candidate_classes(rec.class_name, rec.module_src, rec.module_name):
        try:
            net = _construct(cls, args, kwargs, recorded.tensors, 'the pickle')
            _copy_into(net, recorded, _qualname(cls))
            return net
        except _Mismatch as err:
            errors.append(err)
    raise errors[0]

# Elements a native network may have beyond those its file holds: a constructor may make buffers that
# a file leaves out (none does so far), but a file must not make the loader allocate what it does not hold.
CONSTRUCTION_SLACK_ELEMENTS = 1 << 20

def _construct(cls, args, kwargs, tensors, where):
    """cls(*args, **kwargs) with init arguments read from a file that holds `tensors` (a dict) for
    the network: first built on the meta device, which allocates nothing, to refuse arguments that
    ask for more parameters and buffers than the file's tensors hold."""
    def rejected(err):
        return _Mismatch(f'cannot rebuild {_qualname(cls)} from {where}: its constructor rejects the recorded '
            f'init arguments ({type(err).__name__}: {_one_line(err)})')
    try:
        with torch.device('meta'):
            needed = sum(t.numel() for t in _named_tensors(cls(*args, **kwargs)).values())
    except Exception as err: # pylint: disable=broad-except
        raise rejected(err) from None
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() // t.element_size() for t in tensors.values()}
    held = sum(storages.values())
    if needed > held + CONSTRUCTION_SLACK_ELEMENTS:
        raise _Mismatch(f'cannot rebuild {_qualname(cls)} from {where}: its recorded init arguments ask for {needed} '
            f'parameter and buffer values, but {where} holds {held}')
    try:
        return cls(*args, **kwargs)
    except Exception as err: # pylint: disable=broad-except
        raise rejected(err) from None

def _collect(state, prefix, where):
    """Tensors, submodule class names, training flags and requires_grad of a recorded module tree."""
    out = dnnlib.EasyDict(tensors=dict(), classes=dict(), training=dict(), requires_grad=dict())
    def walk(state, path):
        if not isinstance(state, dict):
            raise _Mismatch(f'corrupt state of {where} at {path or "<top>"!r}')
        if isinstance(state.get('training'), bool):
            out.training[path] = state['training']
        dot = path + '.' if path else ''
        for kind in ('_parameters', '_buffers'):
            for name, tensor in (state.get(kind) or {}).items():
                if tensor is None:
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise _Mismatch(f'{where}: {dot}{name} is a {type(tensor).__name__} in the pickle, not a tensor')
                out.tensors[dot + name] = tensor
                if kind == '_parameters':
                    out.requires_grad[dot + name] = tensor.requires_grad
        for name, sub in (state.get('_modules') or {}).items():
            if sub is None:
                continue
            if isinstance(sub, _Recorded):
                out.classes[dot + name] = sub.class_name
                walk(sub.state, dot + name)
            elif isinstance(sub, _RecordedTorchModule):
                out.classes[dot + name] = sub.torch_class.__name__
                walk(getattr(sub, 'state', {}), dot + name)
            else:
                raise _Mismatch(f'{where}: submodule {dot + name!r} is a {type(sub).__name__} in the pickle')
    walk(state, prefix)
    return out

def _named_tensors(net):
    tensors = dict(net.named_parameters(remove_duplicate=False))
    tensors.update(net.named_buffers(remove_duplicate=False))
    return tensors

def _copy_into(net, recorded, where):
    """Copy recorded tensors into `net` (strict on names and shapes) and restore training flags and requires_grad."""
    modules = dict(net.named_modules(remove_duplicate=False))
    for path, class_name in recorded.classes.items():
        native = modules.get(path)
        if native is None or type(native).__name__ != class_name:
            here = 'nothing' if native is None else f'a {type(native).__name__}'
            raise _Mismatch(f'cannot rebuild {where} from the pickle: submodule {path!r} is a {class_name} there but {here} here')
    native_tensors = _named_tensors(net)
    missing = [name for name in native_tensors if name not in recorded.tensors]
    unexpected = [name for name in recorded.tensors if name not in native_tensors]
    if missing or unexpected:
        parts = ([f'missing {", ".join(missing[:3])}{" ..." if len(missing) > 3 else ""}'] if missing else []) + \
            ([f'unexpected {", ".join(unexpected[:3])}{" ..." if len(unexpected) > 3 else ""}'] if unexpected else [])
        raise _Mismatch(f'cannot rebuild {where} from the pickle: tensors do not match ({"; ".join(parts)})')
    resized = dict()
    for name, tensor in native_tensors.items():
        source = recorded.tensors[name]
        if tuple(source.shape) != tuple(tensor.shape):
            path, _, leaf = name.rpartition('.')
            if leaf in getattr(modules[path], 'variable_shape_buffers', ()) and source.dtype == tensor.dtype:
                resized[name] = (modules[path], leaf)
                continue
            raise _Mismatch(f'cannot rebuild {where} from the pickle: tensor {name!r} has shape {list(source.shape)} '
                f'in the pickle but {list(tensor.shape)} here')
    with torch.no_grad():
        for name, tensor in native_tensors.items():
            if name in resized:
                module, leaf = resized[name]
                module.register_buffer(leaf, recorded.tensors[name].detach().clone())
            else:
                tensor.copy_(recorded.tensors[name])
    params = dict(net.named_parameters(remove_duplicate=False))
    for name, flag in recorded.requires_grad.items():
        params[name].requires_grad_(flag)
    for path, flag in recorded.training.items():
        if path in modules:
            modules[path].training = flag

#----------------------------------------------------------------------------
# safetensors.

def _import_safetensors():
    try:
        import safetensors.torch # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise NetworkPickleError('safetensors is not installed (python3 -m pip install safetensors)') from err
    return safetensors.torch

def _peekable(f):
    if not (hasattr(f, 'seekable') and f.seekable()):
        f = io.BytesIO(f.read())
    return f

def _is_safetensors(f):
    pos = f.tell()
    head = f.read(9)
    f.seek(pos)
    return len(head) == 9 and head[8:9] == b'{' and 2 <= struct.unpack('<Q', head[:8])[0] < MAX_SAFETENSORS_HEADER

def _safetensors_metadata(head):
    """The __metadata__ dict of a safetensors file from its first bytes `head` (the 8-byte header
    length and the JSON header; more may follow); {} when it has none."""
    header_len = struct.unpack('<Q', head[:8])[0]
    return json.loads(bytes(head[8:8 + header_len]).decode('utf-8')).get('__metadata__') or {}

def _load_safetensors(buffer, source):
    try:
        metadata = _safetensors_metadata(buffer)
        if metadata.get('format') != SAFETENSORS_FORMAT:
            raise NetworkPickleError(f'{source}: a safetensors file, but not one written by legacy.export_safetensors '
                f'(metadata format {metadata.get("format")!r}, expected {SAFETENSORS_FORMAT!r})')
        networks = json.loads(metadata['networks'])
        extras = json.loads(metadata.get('extras', '{}'))
        tensors = _import_safetensors().load(bytes(buffer))
    except NetworkPickleError:
        raise
    except Exception as err: # pylint: disable=broad-except
        raise NetworkPickleError(f'{source}: corrupt safetensors file ({type(err).__name__}: {_one_line(err)})') from None
    data = dict(extras)
    try:
        for key, spec in networks.items():
            if spec is None:
                data[key] = None
                continue
            module_name, _, class_name = spec['class_name'].rpartition('.')
            cls = _candidate_classes(class_name, '', module_name)[0]
            init = _from_json(dict(args=spec['init_args'], kwargs=spec['init_kwargs']))
            prefix = key + '.'
            recorded = dnnlib.EasyDict(classes=dict(), training={name: True for name in spec.get('training', [])},
                tensors={name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)})
            net = _construct(cls, init['args'], init['kwargs'], recorded.tensors, 'the file')
            recorded.requires_grad = {name: name in spec.get('requires_grad', []) for name, _p in net.named_parameters(remove_duplicate=False)}
            for name, module in net.named_modules(remove_duplicate=False):
                recorded.training.setdefault(name, False)
            _copy_into(net, recorded, f'{_qualname(cls)} ({key})')
            data[key] = net
    except NetworkPickleError as err:
        raise type(err)(f'{source}: {err}') from None
    except _Mismatch as err:
        raise NetworkPickleError(f'{source}: {err}') from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise NetworkPickleError(f'{source}: corrupt safetensors metadata ({type(err).__name__}: {_one_line(err)})') from None
    return data

def _to_json(value):
    """A JSON-encodable form of init arguments; tuples are tagged so that they come back as tuples."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {'__tuple__': [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) and '__tuple__' not in value:
        return {k: _to_json(v) for k, v in value.items()}
    raise TypeError(f'a {type(value).__name__} cannot be stored as JSON')

def _from_json(value):
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {'__tuple__'}:
            return tuple(_from_json(v) for v in value['__tuple__'])
        return {k: _from_json(v) for k, v in value.items()}
    return value

def _one_line(err):
    return ' '.join(str(err).split())

#----------------------------------------------------------------------------

@click.group()
def cli():
    """Network pickle tools."""

@cli.command('export')
@click.option('--network', 'network_pkl', required=True, metavar='PATH|URL', help='Network pickle to export', callback=expand_path)
@click.option('--dest', required=True, metavar='FILE', help='The .safetensors file to write', callback=expand_path)
@click.option('--keys', metavar='KEY,KEY', help='Keep only these networks, e.g. G_ema for a file that only generates  [default: all]')
@click.option('--class-names', metavar='A,B,...', help="Names of the generator's class indices 0, 1, ... [default: the snapshot's]")
@click.option('--trust-pickle', is_flag=True, help='Execute the code embedded in the pickle (only for files you trust)')
def export_command(network_pkl, dest, keys, class_names, trust_pickle):
    """Write the networks of a pickle to a .safetensors file (no pickle needed to load it)."""
    try:
        data = open_network_pkl(network_pkl, trust=trust_pickle, verbose=False)
        if keys is not None:
            keep = [key.strip() for key in keys.split(',')]
            for key in keep:
                network_of(data, key, network_pkl)
            data = {key: value for key, value in data.items() if key in keep or not (value is None or isinstance(value, torch.nn.Module))} # Other networks go; extras stay.
        if class_names is not None:
            data['class_names'] = [name.strip() for name in class_names.split(',')]
            generator = data.get('G_ema', data.get('G'))
            if class_names_of(data, generator) is None:
                raise click.BadParameter(f'{len(data["class_names"])} names, but the generator has {getattr(generator, "c_dim", 0)} classes', param_hint='--class-names')
        export_safetensors(data, dest)
    except NetworkPickleError as err:
        raise click.ClickException(str(err))
    except OSError as err: # Network files fail as NetworkPickleError: this is the destination.
        raise click.ClickException(f'{dest}: {err.strerror or err}')
    print(f'Wrote {dest}')

if __name__ == '__main__':
    cli() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
