"""StyleGAN3 generator: NVIDIA's layer schedule, names and shapes for configs
T and R, output shapes, the input transform, pickling, and the double backward
of path length regularization."""

import copy
import io
import pickle

import numpy as np
import pytest
import torch

from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix
from training import networks_stylegan3
from training.networks_stylegan3 import Generator, MappingNetwork, SynthesisInput, SynthesisLayer, SynthesisNetwork

#----------------------------------------------------------------------------

def tiny_generator(img_resolution=16, cfg='T', seed=0, **kwargs):
    """A small generator; config R as in NVIDIA's train.py: 1x1 convolutions,
    radial filters, channel_base and channel_max doubled."""
    r = (cfg == 'R')
    kwargs = dict(dict(channel_base=512 * (2 if r else 1), channel_max=32 * (2 if r else 1),
        num_layers=6 if img_resolution <= 16 else 8, conv_kernel=1 if r else 3, use_radial_filters=r), **kwargs)
    torch.manual_seed(seed)
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=img_resolution, img_channels=3, **kwargs).eval()

def latents(G, n, seed=1):
    return torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))

#----------------------------------------------------------------------------
# The schedule of NVIDIA's stylegan3-t at 1024x1024 (as their published
# pickles and module summary show it).

FFHQ_T_1024_LAYERS = ['L0_36_512', 'L1_36_512', 'L2_52_512', 'L3_52_512', 'L4_84_512', 'L5_148_512', 'L6_148_512',
    'L7_276_323', 'L8_276_203', 'L9_532_128', 'L10_1044_81', 'L11_1044_51', 'L12_1044_32', 'L13_1024_32', 'L14_1024_3']

def test_schedule_matches_nvidia_t_1024():
    S = SynthesisNetwork(w_dim=512, img_resolution=1024, img_channels=3)
    assert S.num_ws == 16
    assert S.layer_names == FFHQ_T_1024_LAYERS
    layers = [getattr(S, name) for name in S.layer_names]
    np.testing.assert_allclose([l.out_cutoff for l in layers][:5], [2, 3.1748, 5.03968, 8, 12.6992], rtol=1e-5)
    np.testing.assert_allclose([l.out_half_width for l in layers][-4:], [189.46, 118.346, 118.346, 118.346], rtol=1e-5)
    assert [l.out_sampling_rate for l in layers] == [16, 16, 32, 32, 64, 128, 128, 256, 256, 512, 1024, 1024, 1024, 1024, 1024]
    assert [l.use_fp16 for l in layers] == [False] * 5 + [True] * 10
    assert [l.is_critically_sampled for l in layers] == [False] * 12 + [True] * 3
    assert [l.is_torgb for l in layers] == [False] * 14 + [True]
    assert (S.input.channels, list(S.input.size), S.input.sampling_rate, S.input.bandwidth) == (512, [36, 36], 16, 2)
    assert S.L2_52_512.up_factor == 4 and S.L2_52_512.down_factor == 2 # lrelu at twice the output rate
    assert list(S.L2_52_512.up_filter.shape) == [24] and list(S.L2_52_512.down_filter.shape) == [12]
    assert S.L0_36_512.padding == [9, 8, 9, 8] # (35*2 + 1) - (36 + 2)*2 + (12 + 12 - 2) = 17, low side (17 + 2)//2
    assert S.L13_1024_32.padding == [-11, -12, -11, -12] # the margin is cropped
    assert S.L14_1024_3.padding == [0, 0, 0, 0]
    assert S.L14_1024_3.up_filter is None and S.L14_1024_3.down_filter is None
    assert S.L14_1024_3.weight.shape == (3, 32, 1, 1)

def test_parameter_names_and_shapes_t():
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3)
    shapes = {name: list(t.shape) for name, t in list(G.named_parameters()) + list(G.named_buffers())}
    assert shapes['mapping.fc0.weight'] == [512, 512] and shapes['mapping.fc1.bias'] == [512]
    assert 'mapping.fc2.weight' not in shapes and 'mapping.embed.weight' not in shapes
    assert shapes['mapping.w_avg'] == [512]
    assert shapes['synthesis.input.weight'] == [512, 512]
    assert shapes['synthesis.input.affine.weight'] == [4, 512] and shapes['synthesis.input.affine.bias'] == [4]
    assert shapes['synthesis.input.transform'] == [3, 3]
    assert shapes['synthesis.input.freqs'] == [512, 2] and shapes['synthesis.input.phases'] == [512]
    assert shapes['synthesis.L0_36_512.weight'] == [512, 512, 3, 3]
    assert shapes['synthesis.L0_36_512.bias'] == [512]
    assert shapes['synthesis.L0_36_512.affine.weight'] == [512, 512]
    assert shapes['synthesis.L0_36_512.magnitude_ema'] == []
    assert shapes['synthesis.L0_36_512.up_filter'] == [12] and shapes['synthesis.L0_36_512.down_filter'] == [12]
    assert shapes['synthesis.L7_276_323.weight'] == [323, 512, 3, 3]
    # Initialization as NVIDIA's: affine to the identity transform, style biases at 1.
    assert G.synthesis.input.affine.weight.abs().max() == 0
    assert G.synthesis.input.affine.bias.tolist() == [1, 0, 0, 0]
    assert torch.all(G.synthesis.L3_52_512.affine.bias == 1)
    assert torch.all(G.synthesis.input.freqs.norm(dim=1) <= 2 + 1e-6)
    assert G.mapping.fc0.weight_gain == pytest.approx(0.01 / np.sqrt(512))

def test_parameter_names_and_shapes_r():
    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, channel_base=65536, channel_max=1024,
        conv_kernel=1, use_radial_filters=True)
    S = G.synthesis
    assert S.layer_names[0] == 'L0_36_1024' and S.layer_names[-1] == 'L14_256_3'
    layers = [getattr(S, name) for name in S.layer_names]
    for l in layers:
        assert l.weight.shape[2:] == (1, 1)
        if l.down_filter is not None:
            assert l.down_filter.ndim == (1 if l.is_critically_sampled else 2)
            assert l.down_radial == (not l.is_critically_sampled)
        if l.up_filter is not None:
            assert l.up_filter.ndim == 1
    f = layers[0].down_filter
    assert list(f.shape) == [12, 12]
    torch.testing.assert_close(f, f.t()) # radially symmetric
    torch.testing.assert_close(f, f.flip(0))
    assert f.sum().item() == pytest.approx(1, abs=1e-5)

def test_lowpass_filters():
    f = SynthesisLayer.design_lowpass_filter(numtaps=12, cutoff=2, width=12, fs=32)
    assert list(f.shape) == [12] and f.sum().item() == pytest.approx(1, abs=1e-5)
    torch.testing.assert_close(f, f.flip(0))
    assert SynthesisLayer.design_lowpass_filter(numtaps=1, cutoff=2, width=12, fs=32) is None

def test_mapping_network():
    torch.manual_seed(0)
    M = MappingNetwork(z_dim=8, c_dim=5, w_dim=16, num_ws=4)
    assert [name for name, _ in M.named_parameters()] == ['embed.weight', 'embed.bias', 'fc0.weight', 'fc0.bias', 'fc1.weight', 'fc1.bias']
    assert list(M.fc0.weight.shape) == [16, 24] and M.embed.weight_gain == pytest.approx(1 / np.sqrt(5))
    z, c = torch.randn([3, 8]), torch.eye(5)[:3]
    ws = M(z, c, update_emas=True)
    assert list(ws.shape) == [3, 4, 16] and torch.equal(ws[:, 0], ws[:, 3])
    assert M.w_avg.abs().sum() > 0
    ws_t = M(z, c, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(ws_t[:, 0], M.w_avg.lerp(ws[:, 0], 0.5))
    torch.testing.assert_close(ws_t[:, 3], ws[:, 3])

#----------------------------------------------------------------------------

@pytest.mark.parametrize('img_resolution', [16, 32])
@pytest.mark.parametrize('cfg', ['T', 'R'])
def test_output_shape(img_resolution, cfg):
    G = tiny_generator(img_resolution, cfg)
    img = G(latents(G, 2), None)
    assert img.shape == (2, 3, img_resolution, img_resolution) and img.dtype == torch.float32
    assert torch.isfinite(img).all() and img.std() > 0
    assert G.synthesis.layer_names[-1] == f'L{G.synthesis.num_layers}_{img_resolution}_3'

def test_update_emas_changes_only_emas():
    G = tiny_generator()
    G(latents(G, 2), None, update_emas=True)
    mags = [getattr(G.synthesis, name).magnitude_ema.item() for name in G.synthesis.layer_names]
    assert all(m != 1 for m in mags)
    assert G.mapping.w_avg.abs().sum() > 0

def test_input_transform_translates_features():
    torch.manual_seed(0)
    layer = SynthesisInput(w_dim=8, channels=6, size=20, sampling_rate=16, bandwidth=2)
    w = torch.randn([2, 8])
    a = layer(w)
    layer.transform[0, 2] = 3 / 16 # Three pixels along x.
    layer.transform[1, 2] = -2 / 16 # Minus two along y.
    b = layer(w)
    torch.testing.assert_close(b[:, :, 2:, :-3], a[:, :, :-2, 3:], atol=1e-5, rtol=0)

@pytest.mark.parametrize('cfg', ['T', 'R'])
def test_input_transform_translates_image(cfg):
    # A sanity check, not a measure of equivariance: an untrained network with
    # critically sampled last layers is only roughly equivariant.
    G = tiny_generator(16, cfg)
    z = latents(G, 2)
    a = G(z, None)
    G.synthesis.input.transform[0, 2] = 2 / 16 # Two output pixels along x.
    b = G(z, None)
    err_shifted = (b[..., 3:-3, 2:-4] - a[..., 3:-3, 4:-2]).square().mean()
    err_unshifted = (b[..., 3:-3, 2:-4] - a[..., 3:-3, 2:-4]).square().mean()
    assert err_shifted < 0.25 * err_unshifted

def test_pickle_round_trip():
    G = tiny_generator(16, 'R')
    G(latents(G, 2), None, update_emas=True)
    buf = io.BytesIO()
    pickle.dump(G, buf)
    buf.seek(0)
    G2 = pickle.load(buf)
    assert all(persistence.is_persistent(m) for m in [G2, G2.mapping, G2.mapping.fc0, G2.synthesis, G2.synthesis.input,
        getattr(G2.synthesis, G2.synthesis.layer_names[0])])
    z = latents(G, 2, seed=7)
    assert torch.equal(G(z, None), G2(z, None))
    G3 = copy.deepcopy(G)
    assert torch.equal(G(z, None), G3(z, None))

@pytest.mark.parametrize('cfg', ['T', 'R'])
def test_path_length_double_backward(cfg):
    # Path length regularization differentiates a gradient wrt. ws once more, down to the weights.
    G = tiny_generator(16, cfg)
    ws = G.mapping(latents(G, 2), None).detach().requires_grad_(True)
    img = G.synthesis(ws)
    pl_noise = torch.randn_like(img) / np.sqrt(img.shape[2] * img.shape[3])
    (pl_grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
    pl_lengths.mean().backward()
    grads = {name: p.grad for name, p in G.synthesis.named_parameters()}
    first = G.synthesis.layer_names[0]
    assert grads[f'{first}.weight'] is not None and grads[f'{first}.weight'].abs().sum() > 0
    assert grads[f'{first}.affine.weight'].abs().sum() > 0
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())

def test_modulated_conv2d_matches_per_sample_conv():
    torch.manual_seed(0)
    x, w, s = torch.randn([2, 4, 7, 7]), torch.randn([5, 4, 3, 3]), torch.randn([2, 4])
    gain = torch.tensor(0.7)
    y = networks_stylegan3.modulated_conv2d(x, w, s, padding=2, input_gain=gain)
    for n in range(2):
        wn = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
        wn = wn * (s[n] * s.square().mean().rsqrt()).reshape(1, 4, 1, 1)
        wn = wn * (wn.square().sum([1, 2, 3], keepdim=True) + 1e-8).rsqrt() * gain
        torch.testing.assert_close(y[n:n + 1], torch.nn.functional.conv2d(x[n:n + 1], wn, padding=2), atol=1e-5, rtol=1e-5)
    y = networks_stylegan3.modulated_conv2d(x, w, s, demodulate=False)
    torch.testing.assert_close(y[1:], torch.nn.functional.conv2d(x[1:], w * s[1].reshape(1, 4, 1, 1)), atol=1e-5, rtol=1e-5)

#----------------------------------------------------------------------------

def test_modulated_conv2d_honours_no_weight_gradients():
    # The grouped convolution goes through conv2d_gradfix. Its per-sample
    # weights carry the weight, the styles and the input gain, so inside
    # no_weight_gradients() none of them gets a gradient; the input's is unchanged.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 4, 7, 7], generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn([5, 4, 3, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    s = torch.randn([2, 4], generator=gen, dtype=torch.float64, requires_grad=True)
    gain = torch.rand([2, 4], generator=gen, dtype=torch.float64).requires_grad_(True)
    y = networks_stylegan3.modulated_conv2d(x, w, s, padding=2, input_gain=gain)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    full = torch.autograd.grad(y, [x, w, s, gain], dy, retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for g in full)
    with conv2d_gradfix.no_weight_gradients():
        gx, gw, gs, gg = torch.autograd.grad(y, [x, w, s, gain], dy, retain_graph=True, allow_unused=True)
    torch.testing.assert_close(gx, full[0], rtol=0, atol=0)
    assert gw is None and gs is None and gg is None
    # The switch is read when the backward pass runs, not when the forward pass ran.
    again = torch.autograd.grad(y, [x, w, s, gain], dy)
    for a, b in zip(again, full):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
