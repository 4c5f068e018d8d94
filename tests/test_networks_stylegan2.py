"""StyleGAN2 generator: NVIDIA's parameter layout, shapes, noise modes,
fused and non-fused modulated convolution, truncation, double backward
(path-length regularization), pickling, and the training loss."""

import io
import pickle

import numpy as np
import pytest
import torch

from torch_utils import persistence
from training import networks_stylegan2
from training.networks_stylegan2 import Generator, modulated_conv2d

#----------------------------------------------------------------------------

def tiny_generator(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
        mapping_kwargs=dict(num_layers=2))
    args.update(kwargs)
    return Generator(**args)

def latents(G, n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(n) % max(G.c_dim, 1), max(G.c_dim, 1)).float()[:, :G.c_dim]
    return z, c

#----------------------------------------------------------------------------

def test_forward_runs():
    G = tiny_generator()
    z, c = latents(G, 2)
    img = G(z, c)
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()

#----------------------------------------------------------------------------
