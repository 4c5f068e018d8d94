"""The training losses against independent computations."""

import numpy as np
import pytest
import torch

from torch_utils.ops import conv2d_gradfix
from training import loss as loss_module
from training import networks_stylegan2
from training.networks_creps import Generator

#----------------------------------------------------------------------------

class TinyD(torch.nn.Module):
    """A small discriminator whose input gradient depends on the input (so R1 is not trivial)."""
    def __init__(self, channels=3, resolution=8):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * resolution * resolution, 1)

    def forward(self, img, c, update_emas=False):
        return self.fc(torch.nn.functional.softplus(self.conv(img)).flatten(1))

def tiny_G(c_dim=0):
    return Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
        biline_channels=8, rank=2, mapping_kwargs=dict(num_layers=2))

def grads_of(module):
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}

#----------------------------------------------------------------------------

def test_r1_matches_independent_computation():
    torch.manual_seed(0)
    D = TinyD()
    G = tiny_G()
    gamma, gain = 3.0, 16.0
    loss = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D, r1_gamma=gamma)
    real = torch.randn([5, 3, 8, 8])
    loss.accumulate_gradients('Dreg', real_img=real, real_c=torch.zeros([5, 0]), gen_z=torch.randn([5, 8]), gen_c=torch.zeros([5, 0]),
        gain=gain, cur_nimg=0)
    ours = grads_of(D)

    # Independent: per-sample input gradients through torch.func, then the penalty's parameter gradient.
    D.zero_grad(set_to_none=True)
    params = dict(D.named_parameters())
    def logit(p, x):
        return torch.func.functional_call(D, p, (x[None], None))[0, 0]
    def penalty(p):
        input_grads = torch.func.vmap(torch.func.grad(logit, argnums=1), in_dims=(None, 0))(p, real)
        return gain * (gamma / 2) * input_grads.square().sum([1, 2, 3]).mean()
    reference = torch.func.grad(penalty)(params)
    assert set(ours) <= set(reference)
    for name, expected in reference.items(): # The last bias does not affect R1: no gradient, or zero.
        torch.testing.assert_close(ours.get(name, torch.zeros_like(expected)), expected, rtol=1e-5, atol=1e-7)
    assert ours['conv.weight'].abs().sum() > 0

def test_r1_off_when_gamma_is_zero():
    D, G = TinyD(), tiny_G()
    loss = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D, r1_gamma=0)
    loss.accumulate_gradients('Dreg', real_img=torch.randn([2, 3, 8, 8]), real_c=torch.zeros([2, 0]), gen_z=torch.randn([2, 8]),
        gen_c=torch.zeros([2, 0]), gain=1, cur_nimg=0)
    assert not grads_of(D)

def test_discriminator_main_loss_is_the_logistic_loss():
    torch.manual_seed(1)
    D, G = TinyD(), tiny_G()
    G.requires_grad_(False)
    loss = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D, r1_gamma=0)
    real, z = torch.randn([4, 3, 8, 8]), torch.randn([4, 8])
    loss.accumulate_gradients('Dmain', real_img=real, real_c=torch.zeros([4, 0]), gen_z=z, gen_c=torch.zeros([4, 0]), gain=2, cur_nimg=0)
    ours = grads_of(D)
    D.zero_grad(set_to_none=True)
    fake = G(z, None)
    expected = 2 * (torch.nn.functional.softplus(D(fake, None)).mean() + torch.nn.functional.softplus(-D(real, None)).mean())
    expected.backward()
    for name, grad in grads_of(D).items():
        torch.testing.assert_close(ours[name], grad, rtol=1e-5, atol=1e-7)

def test_generator_loss_reaches_only_the_generator():
    D, G = TinyD(), tiny_G()
    D.requires_grad_(False)
    loss = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D)
    loss.accumulate_gradients('Gmain', real_img=None, real_c=None, gen_z=torch.randn([3, 8]), gen_c=torch.zeros([3, 0]), gain=1, cur_nimg=0)
    assert grads_of(G) and not grads_of(D)

def test_path_length_penalty_tracks_the_mean_and_has_an_off_switch():
    torch.manual_seed(2)
    D, G = TinyD(), tiny_G()
    D.requires_grad_(False)
    args = dict(real_img=None, real_c=None, gen_z=torch.randn([4, 8]), gen_c=torch.zeros([4, 0]), gain=4, cur_nimg=0)
    off = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D, pl_weight=0)
    off.accumulate_gradients('Greg', **args)
    assert not grads_of(G) and float(off.pl_mean) == 0

    on = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D, pl_weight=2, pl_decay=0.5)
    on.accumulate_gradients('Greg', **args)
    assert grads_of(G) and float(on.pl_mean) > 0
    # The state an exact resume carries.
    other = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D, pl_weight=2)
    other.load_state_dict(on.state_dict())
    assert float(other.pl_mean) == float(on.pl_mean)

def tiny_stylegan2(fused_modconv_default):
    torch.manual_seed(5)
    return networks_stylegan2.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=128,
        channel_max=16, mapping_kwargs=dict(num_layers=2), fused_modconv_default=fused_modconv_default).train()

def path_length_phase(G, pl_no_weight_grad, monkeypatch=None):
    """One 'Greg' phase; returns the new pl_mean, G's gradients, and how many
    convolution weight gradients conv2d_gradfix computed."""
    calls = []
    if monkeypatch is not None:
        grad_weight = conv2d_gradfix._grad_weight
        monkeypatch.setattr(conv2d_gradfix, '_grad_weight', lambda *args: calls.append(1) or grad_weight(*args))
    G.zero_grad(set_to_none=True)
    loss = loss_module.StyleGAN2Loss(device='cpu', G=G, D=TinyD(resolution=16).requires_grad_(False), pl_weight=2,
        pl_decay=0.5, pl_no_weight_grad=pl_no_weight_grad)
    torch.manual_seed(6) # The same latents and path-length noise for both runs.
    loss.accumulate_gradients('Greg', real_img=None, real_c=None, gen_z=torch.randn([4, 8]), gen_c=torch.zeros([4, 0]),
        gain=4, cur_nimg=0)
    return float(loss.pl_mean), grads_of(G), len(calls)

@pytest.mark.numerics
def test_pl_no_weight_grad_is_exact_with_non_fused_convolutions(monkeypatch):
    # StyleGAN2 in training with fused_modconv_default='inference_only' (train.py's
    # stylegan2 config): the convolution weights are parameters, not functions of w.
    # J^T y = dL/dw needs the input gradients of the convolutions only, so skipping
    # their weight gradients changes neither J^T y (hence the penalty and pl_mean)
    # nor the penalty's parameter gradients, which reach the convolution weights
    # through those input gradients (adjoint convolutions of the weights). The
    # skipped weight gradients fed nothing: the results agree bit for bit.
    G = tiny_stylegan2('inference_only')
    mean_full, grads_full, calls_full = path_length_phase(G, False, monkeypatch)
    monkeypatch.undo()
    mean_skip, grads_skip, calls_skip = path_length_phase(G, True, monkeypatch)
    assert mean_full > 0 and mean_skip == mean_full
    assert set(grads_skip) == set(grads_full)
    for name, grad in grads_full.items():
        assert torch.equal(grads_skip[name], grad), name
    convs = [name for name, p in G.named_parameters() if name.startswith('synthesis.') and p.ndim == 4]
    assert convs and all(grads_skip[name].abs().sum() > 0 for name in convs)
    # The work it saves: the first backward pass computes no weight gradient;
    # the second one still computes those of the adjoint convolutions.
    assert 0 < calls_skip < calls_full

def test_pl_no_weight_grad_refuses_fused_convolutions():
    # Fused, w reaches the image only through the per-sample convolution weights:
    # skipping their gradients would leave no path from the image to w.
    for G in [tiny_stylegan2(True), tiny_stylegan2('inference_only').eval()]:
        assert path_length_phase(G, False)[0] > 0
        with pytest.raises(RuntimeError, match='pl_no_weight_grad'):
            path_length_phase(G, True)

def test_pl_no_weight_grad_defaults_to_off():
    assert loss_module.StyleGAN2Loss(device='cpu', G=None, D=None).pl_no_weight_grad is False

def test_style_mixing_takes_the_tail_from_a_second_latent():
    torch.manual_seed(3)
    G = tiny_G()
    loss = loss_module.StyleGAN2Loss(device='cpu', G=G, D=TinyD(), style_mixing_prob=1)
    z = torch.randn([2, 8])
    _, ws = loss.run_G(z, None)
    own = G.mapping(z, None)
    same = (ws == own).all(dim=2)[0].tolist()
    cutoff = same.index(False)
    assert 1 <= cutoff < G.num_ws and all(same[:cutoff]) and not any(same[cutoff:])

def test_blur_schedule_and_filter():
    assert loss_module.blur_sigma_at(0, 10, 200) == 10
    assert loss_module.blur_sigma_at(100_000, 10, 200) == pytest.approx(5)
    assert loss_module.blur_sigma_at(300_000, 10, 200) == 0
    assert loss_module.blur_sigma_at(0, 10, 0) == 0
    img = torch.zeros([1, 1, 33, 33])
    img[0, 0, 16, 16] = 1
    blurred = loss_module.blur(img, 2)
    profile = blurred[0, 0, 16].numpy()
    # A centred, symmetric, peaked response with the exp2 Gaussian's shape.
    taps = np.arange(-6, 7)
    expected = np.exp2(-(taps / 2) ** 2) / np.exp2(-(taps / 2) ** 2).sum()
    np.testing.assert_allclose(profile[10:23] / profile[10:23].sum(), expected, rtol=1e-5)
    assert torch.equal(loss_module.blur(img, 0.2), img) # Support below one pixel: untouched.

#----------------------------------------------------------------------------
