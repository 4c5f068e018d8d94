"""The per-pixel stage of a bi-line synthesis network as one fused kernel (biline_pixels.cpp for
the CPU, biline_pixels.cu for CUDA).

The stage is a program of steps over a few per-pixel buffers (see the C++ source):

    (OUTER, level, -, dst, accumulate, -)       dst (+)= sum over rank of rows[level] x cols[level]
    (DENSE, layer, src, dst, accumulate, lrelu) dst (+)= clamp(act(W src + b) * gain)

with buffer IMAGE_BUFFER the output. `pixels()` runs it with the kernel where the kernel is
available and passed its self-check, and with `pixels_ref()`, the same program step by step
in PyTorch, elsewhere. The network builds the program (networks_creps.SynthesisNetwork);
its layer-by-layer path stays the reference of the whole stage, and the only one that
trains (the kernel has no backward pass).
"""

import os

import numpy as np
import torch

from torch_utils import custom_ops

#----------------------------------------------------------------------------

OUTER, DENSE = 0, 1
NUM_BUFFERS = 5
IMAGE_BUFFER = 4

class Program:
    """The steps and layers of one pixel stage, built with outer() and dense()."""

    def __init__(self):
        self.steps = []     # [kind, index, src, dst, accumulate, lrelu] each.
        self.weights = []   # float32 [1 or N, O, I]: shared or per sample.
        self.biases = []    # float32 [O].
        self.gains = []
        self.clamps = []    # -1: none.

    def outer(self, level, dst, accumulate=False):
        self.steps.append([OUTER, level, -1, dst, int(accumulate), 0])

    def to(self, device, dtype=torch.float32):
        """This program with its tensors on `device` in `dtype`."""
        program = Program()
        program.steps, program.gains, program.clamps = self.steps, self.gains, self.clamps
        program.weights = [w.to(device, dtype) for w in self.weights]
        program.biases = [b.to(device, dtype) for b in self.biases]
        return program

    def dense(self, weight, bias, src, dst, lrelu=False, gain=1.0, clamp=None, accumulate=False):
        """A fully connected layer at every pixel: weight [O, I] (shared) or [N, O, I] (per sample)."""
        assert src != dst
        weight = weight if weight.ndim == 3 else weight.unsqueeze(0)
        self.steps.append([DENSE, len(self.weights), src, dst, int(accumulate), int(lrelu)])
        self.weights.append(weight.to(torch.float32).contiguous())
        self.biases.append(bias.to(torch.float32).contiguous())
        self.gains.append(float(gain))
        self.clamps.append(-1.0 if clamp is None else float(clamp))

#----------------------------------------------------------------------------

_plugins = dict() # 'cpu' | 'cuda' => op namespace or None, looked up once per process.

def _plugin(device_type):
    if device_type not in _plugins:
        plugin = custom_ops.try_get_device_plugin('biline_pixels', device_type, ['biline_pixels.cpp'], ['biline_pixels.cu'],
            headers=['biline_pixels.h'], source_dir=os.path.dirname(__file__), is_python_module=False,
            extra_cflags=['-O3', '-fno-trapping-math'] + custom_ops.cpu_simd_flags())
        device = torch.device('cuda') if device_type == 'cuda' else torch.device('cpu')
        _plugins[device_type] = plugin if plugin is not None and _self_check(plugin, device) else None
    return _plugins[device_type]

def _self_check(plugin, device):
    """Whether the kernel runs a small random program (two levels, shared and per-sample
    layers, clamping, an odd width) on `device` as pixels_ref() does."""
    gen = torch.Generator().manual_seed(0)
    randn = lambda *shape: torch.randn(shape, generator=gen)
    rows, cols = randn(2, 2, 3, 6, 4), randn(2, 2, 4, 6, 21)
    program = Program()
    program.outer(0, dst=0)
    program.dense(randn(10, 6), randn(10), src=0, dst=1, lrelu=True, gain=np.sqrt(2))
    program.dense(randn(2, 6, 10), randn(6), src=1, dst=0, clamp=0.5)
    program.outer(1, dst=0, accumulate=True)
    program.dense(randn(3, 6), randn(3), src=0, dst=IMAGE_BUFFER)
    program.dense(randn(2, 3, 6), randn(3), src=0, dst=IMAGE_BUFFER, accumulate=True)
    expected = pixels_ref(program, rows, cols, 3)
    program = program.to(device)
    return custom_ops.self_check(f'biline_pixels ({device.type})', lambda: _run_kernel(plugin, program, rows.to(device), cols.to(device), 3).cpu(),
        lambda: expected, tol=1e-5)

def _run_kernel(plugin, program, rows, cols, img_channels):
    return plugin.pixels(rows, cols, program.weights, program.biases, [v for step in program.steps for v in step],
        program.gains, program.clamps, img_channels)

def kernel_available(device):
    """Whether pixels() runs the fused kernel on `device` in this process (built, and passed its self-check)."""
    return _plugin(torch.device(device).type) is not None

def pixels(program, rows, cols, img_channels):
    """Image [N, img_channels, H, W] (float32) of `program` on the line features rows [L, N, H, C, R]
    and cols [L, N, R, C, W] (float32 on the CPU; float32, float16 or bfloat16 on CUDA, summed in
    float32), without gradients: by the kernel of their device, else step by step."""
    plugin = _plugin(rows.device.type)
    with torch.no_grad():
        if plugin is not None:
            return _run_kernel(plugin, program, rows.contiguous(), cols, img_channels)
        return pixels_ref(program, rows, cols, img_channels)

def pixels_ref(program, rows, cols, img_channels):
    """pixels() step by step in PyTorch: buffers [N, channels, H * W]."""
    levels, n, h, channels, rank = rows.shape
    w = cols.shape[4]
    program, rows, cols = program.to(rows.device), rows.float(), cols.float() # Sums in float32, as the kernels.
    buffers = [None] * NUM_BUFFERS
    for kind, index, src, dst, accumulate, lrelu in program.steps:
        if kind == OUTER:
            value = torch.einsum('nhcr,nrcw->nchw', rows[index], cols[index]).reshape(n, channels, h * w)
        else:
            weight = program.weights[index].expand(n, -1, -1)
            value = torch.bmm(weight, buffers[src]) + program.biases[index][None, :, None]
            if lrelu:
                value = torch.nn.functional.leaky_relu(value, 0.2)
            value = value * program.gains[index]
            if program.clamps[index] >= 0:
                value = value.clamp(-program.clamps[index], program.clamps[index])
        buffers[dst] = buffers[dst] + value if accumulate else value
    assert levels > 0 and buffers[IMAGE_BUFFER].shape[1] == img_channels
    return buffers[IMAGE_BUFFER].reshape(n, img_channels, h, w)

#----------------------------------------------------------------------------
