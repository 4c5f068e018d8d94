"""Comparing two computations like with like.

Float results depend on the thread count (it sets how a reduction is split),
on the shapes of the operands (they set the blocking of a matmul) and on the
CPU's vector kernels. A test that claims two computations agree exactly runs
both with the same thread count, shapes and batches; one that compares
different shapes or splits states a tolerance derived from the computation.
"""

import contextlib

import numpy as np
import torch

@contextlib.contextmanager
def torch_threads(num_threads):
    """Run the block with `num_threads` intra-op threads, as a worker process
    that pins them does, then restore the caller's count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)

def assert_same_quantized(a, b):
    """uint8 images a and b are one float image rendered through different shapes
    (tiles, batches, chunks): a value that rounds an ulp differently can land on the
    other side of a quantization step, but never further."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
