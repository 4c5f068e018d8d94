"""Small stand-ins for the metric detector networks, saved the way NVIDIA's are."""

import io
import pickle

import torch

class PickledScript:
    """Pickles as a call of torch.jit.load on the module's archive: a TorchScript
    module inside a plain pickle, which pickle.load rebuilds without any code
    of this project (TorchScript modules do not pickle by themselves)."""

    def __init__(self, module):
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
        self.data = buffer.getvalue()

    def __reduce__(self):
        return (torch.jit.load, (io.BytesIO(self.data),))

def save_detector(module, path):
    """Script `module` and pickle it to `path` as a detector file; returns the path as a string."""
    with open(path, 'wb') as f:
        pickle.dump(PickledScript(torch.jit.script(module.eval().requires_grad_(False))), f)
    return str(path)
