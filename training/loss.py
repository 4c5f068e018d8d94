"""Training losses: the non-saturating logistic GAN loss with R1 and
path-length regularization, both lazy (run every few minibatches with a
proportionally larger weight), style mixing, and the discriminator blur of
StyleGAN3-R.

The training loop calls `accumulate_gradients()` once per phase and round;
a phase is one of
    'Gmain'  generator: non-saturating loss,
    'Greg'   generator: path-length regularization,
    'Gboth'  both at once (when regularization is not lazy),
    'Dmain'  discriminator: logistic loss on fakes and reals,
    'Dreg'   discriminator: R1 on reals,
    'Dboth'  both at once.
Gradients are added to the parameters' .grad; the loop steps the optimizers.
"""

import numpy as np
import torch

from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')

def blur_sigma_at(cur_nimg, blur_init_sigma, blur_fade_kimg):
    """Standard deviation (pixels) of the blur applied to every image the
    discriminator sees: blur_init_sigma at the start, fading linearly to 0
    over blur_fade_kimg thousand images (StyleGAN3-R's schedule)."""
    if blur_fade_kimg <= 0:
        return 0
    return max(1 - cur_nimg / (blur_fade_kimg * 1e3), 0) * blur_init_sigma

def blur(img, sigma):
    """Gaussian blur of standard deviation `sigma` pixels, truncated at 3
    sigma, as a separable filter; the identity when the support is empty."""
    radius = int(np.floor(sigma * 3))
    if radius <= 0:
        return img
    taps = torch.arange(-radius, radius + 1, device=img.device, dtype=torch.float32)
    f = torch.exp2(-(taps / sigma).square()) # exp2 rather than exp: StyleGAN3-R's width, which trained models assume.
    return upfirdn2d.filter2d(img, f / f.sum())

#----------------------------------------------------------------------------

class StyleGAN2Loss:
    def __init__(self,
        device,                     # Device the networks run on.
        G,                          # Generator (with .mapping and .synthesis).
        D,                          # Discriminator.
        augment_pipe        = None, # Augmentation applied to every image D sees, None = none.
        r1_gamma            = 10,   # R1 regularization weight.
        style_mixing_prob   = 0,    # Probability of mixing the styles of two latents in a minibatch.
        pl_weight           = 0,    # Path-length regularization weight, 0 = off.
        pl_batch_shrink     = 2,    # Path-length regularization runs on batch // pl_batch_shrink samples.
        pl_decay            = 0.01, # Decay of the moving average of path lengths.
        pl_start_kimg       = 0,    # Path-length regularization starts after this many thousand images.
        pl_no_weight_grad   = False, # Skip the convolution weight gradients in the path-length backward pass (see below).
        blur_init_sigma     = 0,    # Initial blur of D's inputs (pixels), 0 = no blur.
        blur_fade_kimg      = 0,    # The blur fades out over this many thousand images.
        synthesis_kwargs    = {},   # Extra arguments of G.synthesis (the precision of a CREPS generator, say).
    ):
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_start_kimg = pl_start_kimg
        self.pl_no_weight_grad = pl_no_weight_grad
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        self.synthesis_kwargs = dict(synthesis_kwargs)
        self.pl_mean = torch.zeros([], device=device)

    def state_dict(self):
        """What an exact resume needs beyond the networks."""
        return dict(pl_mean=self.pl_mean.detach().cpu())

    def load_state_dict(self, state):
        self.pl_mean.copy_(state['pl_mean'])

    def run_G(self, z, c, update_emas=False):
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            # One cutoff per minibatch; "no mixing" is a cutoff past the last w.
            num_ws = ws.shape[1]
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff, torch.full_like(cutoff, num_ws))
            mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
            ws = torch.where(torch.arange(num_ws, device=ws.device)[None, :, None] < cutoff, ws, mixed)
        img = self.G.synthesis(ws, update_emas=update_emas, **self.synthesis_kwargs)
        return img, ws

    def run_D(self, img, c, blur_sigma=0, update_emas=False):
        img = blur(img, blur_sigma)
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c, update_emas=update_emas)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        """Add gain * d(loss of `phase`)/d(parameters) to the parameters' gradients."""
        assert phase in PHASES
        if self.pl_weight == 0 or cur_nimg < self.pl_start_kimg * 1e3:
            phase = {'Greg': None, 'Gboth': 'Gmain'}.get(phase, phase)
        if self.r1_gamma == 0:
            phase = {'Dreg': None, 'Dboth': 'Dmain'}.get(phase, phase)
        blur_sigma = blur_sigma_at(cur_nimg, self.blur_init_sigma, self.blur_fade_kimg)

        if phase in ('Gmain', 'Gboth'):
            self._generator_loss(gen_z, gen_c, gain, blur_sigma)
        if phase in ('Greg', 'Gboth'):
            self._path_length_penalty(gen_z, gen_c, gain)
        fake_loss = None
        if phase in ('Dmain', 'Dboth'):
            fake_loss = self._discriminator_fake_loss(gen_z, gen_c, gain, blur_sigma)
        if phase in ('Dmain', 'Dreg', 'Dboth'):
            self._discriminator_real_loss(real_img, real_c, gain, blur_sigma, fake_loss=fake_loss, with_r1=(phase != 'Dmain'))

    def _generator_loss(self, gen_z, gen_c, gain, blur_sigma):
        """G makes D call its fakes real: softplus(-D(G(z))) = -log sigmoid(D(G(z)))."""
        gen_img, _ = self.run_G(gen_z, gen_c)
        gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
        training_stats.report('Loss/scores/fake', gen_logits)
        training_stats.report('Loss/signs/fake', gen_logits.sign())
        loss = torch.nn.functional.softplus(-gen_logits)
        training_stats.report('Loss/G/loss', loss)
        loss.mean().mul(gain).backward()

    def _path_length_penalty(self, gen_z, gen_c, gain):
        """A fixed-size step in w should move the image by a fixed amount:
        penalize the deviation of |J^T y| (y random image-space noise) from
        its moving average.

        With `pl_no_weight_grad`, the backward pass that gives J^T y runs
        under conv2d_gradfix.no_weight_gradients(): the convolutions skip the
        gradient w.r.t. their weights, which J^T y does not need as long as
        those weights are parameters, not functions of w. That holds for
        StyleGAN2 in training mode with fused_modconv_default='inference_only'
        (the setting train.py pairs it with). With fused modulated
        convolutions (StyleGAN2 fused, StyleGAN3) the per-sample weights carry
        the styles, the skip would drop that path, and since no other path
        leads from the image to w, this raises. The parameters still get their
        full penalty gradient: it flows through the input gradients of the
        convolutions, which use the weights."""
        batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
        pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
        with conv2d_gradfix.no_weight_gradients(self.pl_no_weight_grad):
            pl_grads, = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws], create_graph=True,
                allow_unused=self.pl_no_weight_grad)
        if pl_grads is None: # w reaches the image only through convolution weights, whose gradients were skipped.
            raise RuntimeError('pl_no_weight_grad=True, but the generator\'s convolution weights depend on w (fused modulated '
                'convolutions?): the path-length gradient needs them. Use pl_no_weight_grad=False, or non-fused '
                'convolutions in training (StyleGAN2: fused_modconv_default=\'inference_only\').')
        pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
        pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(pl_mean.detach())
        pl_penalty = (pl_lengths - pl_mean).square()
        training_stats.report('Loss/pl_penalty', pl_penalty)
        loss = pl_penalty * self.pl_weight
        training_stats.report('Loss/G/reg', loss)
        loss.mean().mul(gain).backward()

    def _discriminator_fake_loss(self, gen_z, gen_c, gain, blur_sigma):
        """D calls fakes fake: softplus(D(G(z))) = -log(1 - sigmoid(D(G(z)))).
        Returns the per-sample loss, detached, for the statistics."""
        gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
        gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma, update_emas=True)
        training_stats.report('Loss/scores/fake', gen_logits)
        training_stats.report('Loss/signs/fake', gen_logits.sign())
        loss = torch.nn.functional.softplus(gen_logits)
        loss.mean().mul(gain).backward()
        return loss.detach()

    def _discriminator_real_loss(self, real_img, real_c, gain, blur_sigma, fake_loss, with_r1):
        """D calls reals real (softplus(-D(x))) when `fake_loss` (that of the
        fake half of the phase) is given, and/or R1: gamma/2 * |dD(x)/dx|^2."""
        real_img = real_img.detach().requires_grad_(with_r1)
        real_logits = self.run_D(real_img, real_c, blur_sigma=blur_sigma)
        training_stats.report('Loss/scores/real', real_logits)
        training_stats.report('Loss/signs/real', real_logits.sign())
        total = 0
        if fake_loss is not None:
            loss = torch.nn.functional.softplus(-real_logits)
            training_stats.report('Loss/D/loss', fake_loss + loss)
            total = total + loss
        if with_r1:
            with conv2d_gradfix.no_weight_gradients(): # Only the image gradient is wanted here.
                r1_grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True)
            r1_penalty = r1_grads.square().sum([1, 2, 3])
            training_stats.report('Loss/r1_penalty', r1_penalty)
            loss_r1 = r1_penalty * (self.r1_gamma / 2)
            training_stats.report('Loss/D/reg', loss_r1)
            total = total + loss_r1.reshape(-1, 1)
        total.mean().mul(gain).backward()

#----------------------------------------------------------------------------
