"""Loading network pickles.

A network pickle is a dict such as {'G': ..., 'D': ..., 'G_ema': ...,
'training_set_kwargs': ...}, its networks pickled with torch_utils.persistence
(their source embedded), in the format of NVIDIA's StyleGAN releases.
"""

import pickle
import zipfile

import dnnlib

#----------------------------------------------------------------------------

class NetworkPickleError(Exception):
    """A network pickle that cannot be used; the message is one line naming the source."""

def load_network_pkl(f, source='<stream>'):
    """Unpickle a network pickle from the binary file object `f`.

    `source` names the file in error messages. Raises NetworkPickleError for
    anything that is not a readable network pickle.
    """
    try:
        data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as err:
        raise NetworkPickleError(f'{source}: not a readable network pickle ({type(err).__name__}: {err})') from err
    except (ImportError, AttributeError) as err:
        raise NetworkPickleError(f'{source}: the pickle refers to code that is not available ({err})') from err
    except Exception as err: # Corrupt payloads surface as arbitrary exceptions from the rebuild functions.
        raise NetworkPickleError(f'{source}: corrupt network pickle ({type(err).__name__}: {err})') from err
    if not isinstance(data, dict):
        raise NetworkPickleError(f'{source}: expected a dict of networks, found {type(data).__name__}')
    return data

def load_network(network, key='G_ema'):
    """Open `network` (path or URL) and return its network `key`; NetworkPickleError on failure."""
    try:
        with dnnlib.util.open_url(network) as f:
            data = load_network_pkl(f, source=network)
    except FileNotFoundError as err:
        raise NetworkPickleError(f'{network}: no such file') from err
    except dnnlib.util.DownloadError as err: # Its message names the URL and the cache folder.
        raise NetworkPickleError(str(err)) from err
    except OSError as err:
        raise NetworkPickleError(f'{network}: {err}') from err
    if key not in data:
        raise NetworkPickleError(f'{network}: the pickle has no {key!r} network (it has: {", ".join(map(str, data)) or "nothing"})')
    return data[key]

#----------------------------------------------------------------------------
