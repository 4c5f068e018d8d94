"""fma: values, gradients of each operand's own shape, gradcheck and
gradgradcheck with broadcasting."""

import pytest
import torch

from torch_utils.ops.fma import fma

# Shapes of (a, b, c): equal; each operand broadcast in turn; extra leading
# dimensions; scalars; every operand broadcast at once.
SHAPES = [
    ([3, 4], [3, 4], [3, 4]),
    ([2, 3, 4], [1, 3, 1], [4]),
    ([4], [2, 3, 4], [2, 1, 1]),
    ([2, 1, 5], [3, 1], [1, 3, 5]),
    ([], [2, 3], []),
    ([5, 1, 1, 1], [1, 3, 1, 2], [1, 1, 4, 1]),
]

# Compares computations whose rounding depends on the CPU's kernels and threads: run by .ci/cpu-variants.
pytestmark = pytest.mark.numerics

def _operands(shapes, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]

@pytest.mark.parametrize('shapes', SHAPES)
def test_values(shapes):
    a, b, c = _operands(shapes, torch.float32)
    torch.testing.assert_close(fma(a, b, c), a * b + c)
    torch.testing.assert_close(fma(a.requires_grad_(), b, c), a * b + c)

@pytest.mark.parametrize('shapes', SHAPES)
def test_gradient_shapes_and_values(shapes):
    ours = [t.requires_grad_() for t in _operands(shapes)]
    ref = [t.detach().clone().requires_grad_() for t in ours]
    g = torch.cos(torch.arange(fma(*ours).numel(), dtype=torch.float64))
    (fma(*ours).flatten() * g).sum().backward()
    ((ref[0] * ref[1] + ref[2]).flatten() * g).sum().backward()
    for t, r in zip(ours, ref):
        assert t.grad.shape == t.shape
        torch.testing.assert_close(t.grad, r.grad)

@pytest.mark.parametrize('shapes', SHAPES)
def test_gradcheck(shapes):
    inputs = [t.requires_grad_() for t in _operands(shapes)]
    assert torch.autograd.gradcheck(fma, inputs)
    assert torch.autograd.gradgradcheck(fma, inputs)

def test_partial_requires_grad():
    a, b, c = _operands(SHAPES[1])
    b.requires_grad_()
    fma(a, b, c).sum().backward()
    assert a.grad is None and c.grad is None
    torch.testing.assert_close(b.grad, (a * torch.ones_like(c)).sum(dim=[0, 2], keepdim=True))
