"""The generator every architecture shares: a mapping network turns (z, c)
into per-layer latents ws, a synthesis network turns ws into an image.

Each network module (CREPS, StyleGAN2, StyleGAN3) defines its own persistent
`Generator`, as NVIDIA's pickles name one per module, by naming its mapping
and synthesis classes on this base.
"""

import torch

#----------------------------------------------------------------------------

class MappedGenerator(torch.nn.Module):
    mapping_class   = None  # Class of the mapping network: (z_dim, c_dim, w_dim, num_ws, **mapping_kwargs).
    synthesis_class = None  # Class of the synthesis network: (w_dim, img_resolution, img_channels, **synthesis_kwargs), with .num_ws.

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality, 0 = unconditional.
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output (training) resolution.
        img_channels,               # Number of output color channels.
        mapping_kwargs      = {},   # Arguments for the mapping network.
        **synthesis_kwargs,         # Arguments for the synthesis network.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        # The synthesis network first: it decides num_ws (and NVIDIA's networks draw its initial weights first).
        self.synthesis = self.synthesis_class(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = self.mapping_class(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        """z: [N, z_dim], c: [N, c_dim]; truncation_psi < 1 pulls the ws (the
        first truncation_cutoff of them, None = all) toward the tracked mean w;
        update_emas: update that mean (training). synthesis_kwargs go to the
        synthesis network (noise_mode, precision, coordinate lines, ...)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

    def extra_repr(self):
        return (f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, '
            f'img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}')

#----------------------------------------------------------------------------
