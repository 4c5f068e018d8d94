"""numpy arrays, dtypes and scalars, and bytes, from the pickles of strangers.

A pickled numpy array or scalar names numpy's own rebuild functions, and its
dtype is made by np.dtype(spec, align, copy) and then patched through BUILD
(dtype.__setstate__), which takes any flags: a float dtype flagged as holding
objects makes scalar() or an array's state turn the file's bytes into object
pointers (a crash, or code execution). So the restricted unpicklers (legacy.py
for network pickles, dataset_tool.py for CIFAR archives) map numpy's names to
the stand-ins here. BUILD only ever reaches a stand-in, which takes the state of
a plain numeric dtype or array and nothing else; the real objects are then
made by numpy's constructors from the validated values, from bytes the file
actually holds. `resolve()` turns a stand-in left in the unpickled data into
its numpy object.
"""

import _compat_pickle
import math
import pickle

import numpy as np

NUMERIC_KINDS = 'biufc' # bool, signed and unsigned integers, floats, complex: no objects, no strings, no records.
MAX_NDIM = 64           # numpy's own limit.

class RefusedNumpyData(pickle.UnpicklingError):
    """numpy data in a pickle that is not a plain numeric array, dtype or scalar."""

def _refuse(what):
    raise RefusedNumpyData(f'refused numpy data: {what}')

class DtypeSpec:
    """Stands in for the dtype of np.dtype(spec, align, copy) until BUILD gives its byte order."""

    def __init__(self, spec, align=False, copy=True):
        if isinstance(spec, bytes): # Python 2 pickles read with encoding='bytes'.
            spec = spec.decode('latin1')
        if not isinstance(spec, str) or not isinstance(align, bool) or not isinstance(copy, bool):
            _refuse(f'a dtype made from {type(spec).__name__} {spec!r:.40}')
        try:
            dtype = np.dtype(spec)
        except TypeError:
            _refuse(f'dtype {spec!r:.40}')
        if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            _refuse(f'dtype {spec!r:.40} (only plain numbers and booleans)')
        self.dtype = dtype

    def __setstate__(self, state):
        # numpy writes (version 3, byte order, subarray, names, fields, elsize, alignment, flags) for
        # plain dtypes, and version 4 with metadata None as a ninth entry; anything else is a patch.
        if not (isinstance(state, tuple) and state[:1] in ((3,), (4,)) and len(state) == 5 + state[0]
                and state[1] in ('<', '>', '|', '=') and state[2:8] == (None, None, None, -1, -1, 0) and state[8:] in ((), (None,))):
            _refuse(f'a dtype state {state!r:.80}')
        if state[1] in '<>':
            self.dtype = self.dtype.newbyteorder(state[1])

def _dtype(spec):
    if not isinstance(spec, DtypeSpec):
        _refuse(f'{type(spec).__name__} where a dtype belongs')
    return spec.dtype

def _bytes(data):
    if isinstance(data, str): # Python 2 pickles read with encoding='latin1'.
        data = data.encode('latin1')
    if isinstance(data, pickle.PickleBuffer):
        data = data.raw()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _refuse(f'{type(data).__name__} where raw bytes belong')
    return data

def _shape(shape):
    if not (isinstance(shape, tuple) and len(shape) <= MAX_NDIM and all(type(n) is int and n >= 0 for n in shape)):
        _refuse(f'shape {shape!r:.80}')
    return shape

def _array_from_bytes(data, dtype, shape, order):
    """A new array of `shape` and `dtype` from exactly the bytes it needs: never larger than `data`."""
    data, shape = _bytes(data), _shape(shape)
    if math.prod(shape) * dtype.itemsize != len(data):
        _refuse(f'an array of {shape} {dtype} from {len(data)} bytes')
    if order not in ('C', 'F'):
        _refuse(f'array order {order!r:.20}')
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).copy(order='K') # Writable, in its order.

class ArraySpec:
    """Stands in for the empty array that numpy's _reconstruct makes, until BUILD gives its contents."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # (version 1, shape, dtype, Fortran order, raw data): lists of objects in place of raw data are refused.
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[3], bool)):
            _refuse(f'an array state of {type(state).__name__} {state!r:.80}')
        _version, shape, dtype, is_fortran, data = state
        self.array = _array_from_bytes(data, _dtype(dtype), shape, 'F' if is_fortran else 'C')

def _reconstruct(cls, shape, typecode):
    """numpy's _reconstruct(ndarray, (0,), b'b'), the start of every pickled array."""
    if cls is not ArraySpec or shape != (0,) or typecode not in (b'b', 'b'):
        _refuse(f'_reconstruct of {getattr(cls, "__name__", cls)!r:.40}')
    return ArraySpec()

def _frombuffer(data, dtype, shape, order):
    """numpy's _frombuffer (arrays in protocol-5 pickles)."""
    return _array_from_bytes(data, _dtype(dtype), shape, order)

def _scalar(dtype, data):
    """numpy's multiarray.scalar(dtype, raw bytes): a numpy scalar."""
    return _array_from_bytes(data, _dtype(dtype), (), 'C')[()]

def latin1_encode(text, encoding):
    """_codecs.encode as protocol-2 pickles use it for bytes: text to bytes, latin-1 only."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        _refuse(f'_codecs.encode with encoding {encoding!r:.40}')
    return text.encode('latin1')

def bytes_to_bytearray(data=b'', encoding=None):
    """bytearray as pickles call it: from bytes, or text in latin-1 (protocols 0-2); never
    bytearray(n), which would allocate n bytes that the file does not hold."""
    if isinstance(data, bytes) and encoding is None:
        return bytearray(data)
    if isinstance(data, str) and encoding in ('latin1', 'latin-1'):
        return bytearray(data, 'latin1')
    _refuse(f'bytearray of {type(data).__name__}')

def empty_bytes():
    """bytes() as pickles of protocols 0-2 write b''; never bytes(n)."""
    return b''

def _plain_globals():
    names = {('numpy', 'ndarray'): ArraySpec, ('numpy', 'dtype'): DtypeSpec,
        ('_codecs', 'encode'): latin1_encode, ('builtins', 'bytes'): empty_bytes, ('builtins', 'bytearray'): bytes_to_bytearray}
    for package in ('numpy.core', 'numpy._core'): # numpy >= 2 moved numpy.core to numpy._core; pickles name either.
        names[(f'{package}.multiarray', '_reconstruct')] = _reconstruct
        names[(f'{package}.multiarray', 'scalar')] = _scalar
        names[(f'{package}.numeric', '_frombuffer')] = _frombuffer
    return names

_PLAIN_GLOBALS = _plain_globals()

def find_plain_global(module, name):
    """The stand-in for the global `module.name` of a pickle, if it is one that numpy arrays,
    scalars, dtypes or bytes are pickled with; None otherwise. Python 2 names (protocols 0-2)
    are mapped as pickle.Unpickler's fix_imports maps them."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return _PLAIN_GLOBALS.get((module, name))

def resolve(obj):
    """The numpy object of a stand-in left in unpickled data; any other object as it is."""
    if isinstance(obj, ArraySpec):
        if obj.array is None:
            _refuse('an array without contents')
        return obj.array
    if isinstance(obj, DtypeSpec):
        return obj.dtype
    return obj
