"""Perceptual Path Length (PPL) of "A Style-Based Generator Architecture for
Generative Adversarial Networks" (Karras et al., 2019), computed as in
StyleGAN3's `ppl2_wend` and the legacy `ppl_zfull`, `ppl_wfull`, `ppl_zend`,
`ppl_wend`.

For random latent pairs (z0, z1) and t (uniform in [0, 1] for 'full' sampling,
0 for 'end'), two images are rendered at t and t + epsilon along the path
between the pair (slerp in Z, lerp in W), and their LPIPS distance (the
squared difference of VGG16's normalized LPIPS features) is divided by
epsilon^2. The metric is the mean over the samples, after dropping those
below the 1st and above the 99th percentile.

Works for any generator with `mapping(z, c)`, `synthesis(ws, noise_mode=...,
force_fp32=...)`, `z_dim`, `img_channels`: CREPS (whose synthesis accepts and
ignores noise_mode), StyleGAN2 and StyleGAN3.

The latent pairs and path positions come from a fixed seed, one stream shared
by the processes as in metric_utils, so that the metric of a network is the
same on every run and for any number of processes (NVIDIA draws from the
global RNG); only StyleGAN's noise inputs, redrawn per batch, differ with the
number of processes.

The math lives in `slerp`, `lpips_input`, `PPLSampler` (the distances of
given latent pairs) and `ppl_from_distances`; `compute_ppl` loads the detector
with metric_utils and runs the sampling loop.
"""

import copy

import numpy as np
import torch

from . import metric_utils

#----------------------------------------------------------------------------

def slerp(a, b, t):
    """Spherical interpolation between the directions of `a` and `b` [..., D] at
    `t` [..., 1]: a unit vector, at angle t * angle(a, b) from a, in the plane of a and b."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True)
    angle = t * torch.acos(cos)
    ortho = b - cos * a # The component of b orthogonal to a, made a unit vector.
    ortho = ortho / ortho.norm(dim=-1, keepdim=True)
    d = a * torch.cos(angle) + ortho * torch.sin(angle)
    return d / d.norm(dim=-1, keepdim=True)

#----------------------------------------------------------------------------

def lpips_input(img, crop=False):
    """Generator images [N, C, H, W] in [-1, 1] -> the VGG16 LPIPS input: the face
    region if `crop` (rows 3/8..7/8, columns 2/8..6/8 of a square image), area-
    downsampled by the integer factor H // 256 when that exceeds 1, scaled to
    [0, 255], and grayscale repeated to three channels.

    The factor is taken from the image before the crop, as StyleGAN3 does (the
    TensorFlow StyleGAN and StyleGAN2 took it after the crop: cropped images of
    512 px and more end up half as large here, and their PPL differs)."""
    factor = img.shape[2] // 256
    if crop:
        if img.shape[2] != img.shape[3]:
            raise metric_utils.MetricError(f'perceptual path length: the face crop needs square images, got {img.shape[3]}x{img.shape[2]}')
        c = img.shape[2] // 8
        img = img[:, :, c*3 : c*7, c*2 : c*6]
    if factor > 1:
        img = torch.nn.functional.avg_pool2d(img, kernel_size=factor)
    img = (img + 1) * (255 / 2)
    if img.shape[1] == 1:
        img = img.repeat([1, 3, 1, 1])
    return img

#----------------------------------------------------------------------------

# Keyword arguments of the generator call that belong to the mapping network; the
# others go to the synthesis network, as Generator.forward splits them.
_MAPPING_KWARGS = ('truncation_psi', 'truncation_cutoff')

class PPLSampler(torch.nn.Module):
    """Squared LPIPS path derivatives of a generator, one per latent pair."""

    def __init__(self,
        G,                      # Generator: mapping(z, c), synthesis(ws, ...), z_dim, img_channels.
        G_kwargs,               # Keyword arguments of the generator call (truncation, rendering).
        epsilon,                # Step along the path; the result is divided by epsilon^2.
        space,                  # Interpolation space: 'z' (slerp) or 'w' (lerp).
        sampling,               # Where on the path: 'full' = at the given t, 'end' = at t = 0.
        crop,                   # Crop to the face region before LPIPS?
        vgg16,                  # LPIPS detector: vgg16(img, resize_images=False, return_lpips=True) -> [N, F].
    ):
        assert space in ['z', 'w']
        assert sampling in ['full', 'end']
        super().__init__()
        # Copies: the noise buffers are overwritten below, and the sampler is moved between devices.
        self.G = copy.deepcopy(G)
        self.mapping_kwargs = {k: v for k, v in G_kwargs.items() if k in _MAPPING_KWARGS}
        # Constant noise, else the two images of a pair differ by their noise and not only by epsilon;
        # float32, else rounding dominates a step of 1e-4.
        self.synthesis_kwargs = {k: v for k, v in G_kwargs.items() if k not in _MAPPING_KWARGS}
        self.synthesis_kwargs.update(noise_mode='const', force_fp32=True)
        self.epsilon = epsilon
        self.space = space
        self.sampling = sampling
        self.crop = crop
        self.vgg16 = copy.deepcopy(vgg16)

    def randomize_noise(self, generator=None):
        """Draw new constant noise inputs (StyleGAN's `*.noise_const` buffers; CREPS
        has none), so that the mean runs over the noise too."""
        for name, buf in self.G.named_buffers():
            if name.endswith('.noise_const'):
                buf.copy_(torch.randn(buf.shape, generator=generator, dtype=buf.dtype).to(buf.device))

    def forward(self, z0, z1, t, c):
        """Distances [N] along the paths from z0 to z1 [N, z_dim], at t [N] in [0, 1]
        ('full' sampling; 'end' uses t = 0), with labels c [N, c_dim]."""
        if self.sampling == 'end':
            t = torch.zeros_like(t)
        if self.space == 'w':
            w0, w1 = self.G.mapping(torch.cat([z0, z1]), torch.cat([c, c]), **self.mapping_kwargs).chunk(2)
            t = t.reshape(-1, 1, 1)
            wt0 = w0.lerp(w1, t)
            wt1 = w0.lerp(w1, t + self.epsilon)
        else:
            t = t.reshape(-1, 1)
            zt0 = slerp(z0, z1, t)
            zt1 = slerp(z0, z1, t + self.epsilon)
            wt0, wt1 = self.G.mapping(torch.cat([zt0, zt1]), torch.cat([c, c]), **self.mapping_kwargs).chunk(2)

        img = self.G.synthesis(torch.cat([wt0, wt1]), **self.synthesis_kwargs)
        img = lpips_input(img, crop=self.crop)
        lpips0, lpips1 = self.vgg16(img, resize_images=False, return_lpips=True).chunk(2)
        return (lpips0 - lpips1).square().sum(dim=1) / self.epsilon ** 2

#----------------------------------------------------------------------------

PPL_SEED = 0 # Seed of the latent pairs and path positions of compute_ppl().

def iterate_path_samples(opts, batch_size, seed=PPL_SEED):
    """Endless batches (z0, z1, t): latent pairs [batch_size, G.z_dim] and path
    positions [batch_size], uniform in [0, 1), float32 on opts.device.

    As metric_utils.iterate_random_latents: all processes draw one stream of
    num_gpus * batch_size samples per batch and keep every num_gpus-th one from
    their rank on. Sample k takes the k-th values of the streams whatever the
    batch size, so the samples, and the metric, do not depend on the number of
    processes.
    """
    z_rng, t_rng = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)]
    n = batch_size * opts.num_gpus
    while True:
        z = z_rng.standard_normal([n, 2, opts.G.z_dim])[opts.rank :: opts.num_gpus]
        t = t_rng.random(n)[opts.rank :: opts.num_gpus]
        z, t = (torch.from_numpy(x).to(device=opts.device, dtype=torch.float32) for x in (z, t))
        yield z[:, 0], z[:, 1], t

#----------------------------------------------------------------------------

def ppl_from_distances(dist):
    """Mean of the distances [N] between their 1st percentile (rounded down to a
    sample) and their 99th (rounded up), as the reference drops outliers."""
    dist = np.asarray(dist)
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[np.logical_and(dist >= lo, dist <= hi)].mean())

#----------------------------------------------------------------------------

def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size):
    """PPL of opts.G over `num_samples` latent pairs, `batch_size` per process
    and generator call; NaN on every rank but 0."""
    vgg16 = metric_utils.get_feature_detector(metric_utils.vgg16_url(), device=opts.device,
        num_gpus=opts.num_gpus, rank=opts.rank, verbose=opts.progress.verbose)

    sampler = PPLSampler(G=opts.G, G_kwargs=opts.G_kwargs, epsilon=epsilon, space=space, sampling=sampling, crop=crop, vgg16=vgg16)
    sampler.eval().requires_grad_(False).to(opts.device)
    sample_iter = iterate_path_samples(opts=opts, batch_size=batch_size)
    c_iter = metric_utils.iterate_random_labels(opts=opts, batch_size=batch_size)
    noise_gen = torch.Generator().manual_seed(PPL_SEED * opts.num_gpus + opts.rank)

    # Rank 0 gathers the batches of all processes, interleaved back into stream order.
    dist = []
    progress = opts.progress.sub(tag='ppl sampling', num_items=num_samples)
    with torch.no_grad():
        for batch_start in range(0, num_samples, batch_size * opts.num_gpus):
            progress.update(batch_start)
            sampler.randomize_noise(noise_gen)
            z0, z1, t = next(sample_iter)
            x = sampler(z0, z1, t, next(c_iter))
            ys = []
            for src in range(opts.num_gpus):
                y = x.clone()
                if opts.num_gpus > 1:
                    torch.distributed.broadcast(y, src=src)
                ys.append(y)
            if opts.rank == 0:
                dist.append(torch.stack(ys, dim=1).flatten().cpu())
    progress.update(num_samples)

    if opts.rank != 0:
        return float('nan')
    return ppl_from_distances(torch.cat(dist)[:num_samples].numpy())

#----------------------------------------------------------------------------
