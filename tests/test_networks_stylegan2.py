"""StyleGAN2 generator: NVIDIA's parameter layout and ws accounting, output
shapes, noise modes, fused and non-fused modulated convolution, truncation,
double backward (path-length regularization), mixed precision settings,
pickling, and the training loss with the repo's discriminator."""

import io
import pickle

import numpy as np
import pytest
import torch

from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import conv2d_resample
from torch_utils.ops import upfirdn2d
from training import loss as loss_module
from training import networks_stylegan2
from training.networks_stylegan2 import Discriminator, Generator, SynthesisNetwork, modulated_conv2d

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

def set_noise_strength(G, value):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(value)

#----------------------------------------------------------------------------
# Parameter and buffer names and shapes, written from NVIDIA's
# training/networks_stylegan2.py (StyleGAN3 repository).

def _layer(prefix, out_ch, in_ch, w_dim, k, res=None, noise=True):
    """name => shape of a SynthesisLayer (res given) or a ToRGBLayer (res None)."""
    t = {f'{prefix}.weight': (out_ch, in_ch, k, k), f'{prefix}.bias': (out_ch,),
         f'{prefix}.affine.weight': (in_ch, w_dim), f'{prefix}.affine.bias': (in_ch,)}
    if res is not None:
        t[f'{prefix}.resample_filter'] = (4, 4)
        if noise:
            t.update({f'{prefix}.noise_const': (res, res), f'{prefix}.noise_strength': ()})
    return t

def _mapping(z_dim, c_dim, w_dim, num_layers):
    t = {'mapping.w_avg': (w_dim,)}
    embed = w_dim if c_dim else 0
    if c_dim:
        t.update({'mapping.embed.weight': (w_dim, c_dim), 'mapping.embed.bias': (w_dim,)})
    for i in range(num_layers):
        t.update({f'mapping.fc{i}.weight': (w_dim, z_dim + embed if i == 0 else w_dim), f'mapping.fc{i}.bias': (w_dim,)})
    return t

def test_state_dict_layout_skip():
    # channel_base=128, channel_max=16: 16 channels at 4 and 8, 8 at 16.
    G = tiny_generator()
    s = 'synthesis.'
    expected = {s + 'b4.const': (16, 4, 4), s + 'b4.resample_filter': (4, 4)}
    expected.update(_layer(s + 'b4.conv1', 16, 16, 8, 3, res=4))
    expected.update(_layer(s + 'b4.torgb', 3, 16, 8, 1))
    for res, cin, cout in [(8, 16, 16), (16, 16, 8)]:
        expected[f'{s}b{res}.resample_filter'] = (4, 4)
        expected.update(_layer(f'{s}b{res}.conv0', cout, cin, 8, 3, res=res))
        expected.update(_layer(f'{s}b{res}.conv1', cout, cout, 8, 3, res=res))
        expected.update(_layer(f'{s}b{res}.torgb', 3, cout, 8, 1))
    expected.update(_mapping(8, 0, 8, 2))
    state = G.state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == expected
    # NVIDIA's order: synthesis before mapping, the const first, parameters before buffers.
    assert list(state)[:3] == ['synthesis.b4.const', 'synthesis.b4.resample_filter', 'synthesis.b4.conv1.weight']
    assert list(state)[-1] == 'mapping.fc1.bias'
    assert G.num_ws == G.synthesis.num_ws == G.mapping.num_ws == 6
    assert G.synthesis.block_resolutions == [4, 8, 16]
    torch.testing.assert_close(state['synthesis.b8.conv0.resample_filter'], torch.tensor([1., 3, 3, 1]).outer(torch.tensor([1., 3, 3, 1])) / 64)
    assert G.synthesis.b8.conv0.noise_strength.item() == 0 # Noise starts switched off.
    torch.testing.assert_close(G.synthesis.b8.conv0.affine.bias.detach(), torch.ones(16)) # Styles start at 1.

    # NVIDIA's creation order fixes the initial weights of a seed: the const, then
    # per layer the affine weight, the convolution weight and the constant noise.
    torch.manual_seed(0)
    draws = [torch.randn(shape) for shape in [[16, 4, 4], [16, 8], [16, 16, 3, 3], [4, 4], [16, 8], [3, 16, 1, 1], [16, 8]]]
    for name, expected in zip(['b4.const', 'b4.conv1.affine.weight', 'b4.conv1.weight', 'b4.conv1.noise_const',
            'b4.torgb.affine.weight', 'b4.torgb.weight', 'b8.conv0.affine.weight'], draws):
        torch.testing.assert_close(state['synthesis.' + name], expected, rtol=0, atol=0)

def test_state_dict_layout_resnet_conditional_no_noise():
    # res 8, 1 channel, labels; channel_base=64: 16 channels at 4, 8 at 8.
    G = tiny_generator(c_dim=3, w_dim=6, img_resolution=8, img_channels=1, channel_base=64, architecture='resnet',
        use_noise=False, mapping_kwargs=dict(num_layers=3))
    s = 'synthesis.'
    expected = {s + 'b4.const': (16, 4, 4), s + 'b4.resample_filter': (4, 4), s + 'b8.resample_filter': (4, 4)}
    expected.update(_layer(s + 'b4.conv1', 16, 16, 6, 3, res=4, noise=False)) # No torgb: not the last block.
    expected.update(_layer(s + 'b8.conv0', 8, 16, 6, 3, res=8, noise=False))
    expected.update(_layer(s + 'b8.conv1', 8, 8, 6, 3, res=8, noise=False))
    expected.update(_layer(s + 'b8.torgb', 1, 8, 6, 1))
    expected.update({s + 'b8.skip.weight': (8, 16, 1, 1), s + 'b8.skip.resample_filter': (4, 4)})
    expected.update(_mapping(8, 3, 6, 3))
    assert {name: tuple(t.shape) for name, t in G.state_dict().items()} == expected
    assert G.num_ws == 1 + 2 + 1

    G = tiny_generator(architecture='orig')
    names = set(G.state_dict())
    assert 'synthesis.b16.torgb.weight' in names and not any(n.startswith(('synthesis.b4.torgb', 'synthesis.b8.torgb')) for n in names)
    assert not any('skip' in n for n in names)
    assert G.num_ws == 6 # The last ToRGB still takes its own w.

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_num_ws_and_the_w_each_layer_reads(architecture):
    # A 256x256 network has NVIDIA's 14 ws, whatever the architecture.
    assert SynthesisNetwork(w_dim=4, img_resolution=256, img_channels=3, channel_base=1024, channel_max=4, architecture=architecture).num_ws == 14
    assert SynthesisNetwork(w_dim=4, img_resolution=4, img_channels=3, channel_base=64, channel_max=4).num_ws == 2

    # Each ToRGB shares its w with the next block's first convolution.
    G = tiny_generator(architecture=architecture)
    ws = torch.arange(G.num_ws, dtype=torch.float32)[None, :, None].repeat(2, 1, G.w_dim)
    seen = {}
    for name, module in G.synthesis.named_modules():
        if name.endswith('affine'):
            module.register_forward_hook(lambda m, inputs, out, name=name: seen.__setitem__(name[:-len('.affine')], inputs[0][0, 0].item()))
    G.synthesis(ws)
    expected = {'b4.conv1': 0, 'b8.conv0': 1, 'b8.conv1': 2, 'b16.conv0': 3, 'b16.conv1': 4, 'b16.torgb': 5}
    if architecture == 'skip':
        expected.update({'b4.torgb': 1, 'b8.torgb': 3})
    assert seen == expected

#----------------------------------------------------------------------------
# Outputs.

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('resolution,img_channels,c_dim', [(8, 3, 0), (16, 1, 4), (32, 3, 2)])
def test_output_shape_and_range(architecture, resolution, img_channels, c_dim):
    G = tiny_generator(img_resolution=resolution, img_channels=img_channels, c_dim=c_dim, architecture=architecture,
        channel_base=resolution * 4, channel_max=16, conv_clamp=0.5)
    z, c = latents(G, 2)
    img = G(z, c)
    assert img.shape == (2, img_channels, resolution, resolution) and img.dtype == torch.float32
    assert img.is_contiguous() and torch.isfinite(img).all() and img.std() > 0
    # ToRGB outputs are clamped to conv_clamp, and upsampling with [1,3,3,1] averages:
    # the image is bounded by the clamp times the number of ToRGBs summed.
    num_torgb = len(G.synthesis.block_resolutions) if architecture == 'skip' else 1
    assert img.abs().max() <= 0.5 * num_torgb + 1e-6
    if c_dim > 0: # Labels change the image.
        assert not torch.allclose(G(z, c, noise_mode='const'), G(z, c.roll(1, dims=1), noise_mode='const'))
    # Samples are independent of each other.
    torch.testing.assert_close(G(z, c, noise_mode='const')[1:], G(z[1:], c[1:], noise_mode='const'))

def test_noise_modes():
    G = tiny_generator()
    z, c = latents(G, 2)
    with torch.no_grad():
        set_noise_strength(G, 0)
        quiet = G(z, c, noise_mode='random')
        set_noise_strength(G, 0.5)
        const = G(z, c, noise_mode='const')
        torch.testing.assert_close(G(z, c, noise_mode='const'), const, rtol=0, atol=0) # Deterministic.
        random_a, random_b = G(z, c, noise_mode='random'), G(z, c, noise_mode='random')
        none = G(z, c, noise_mode='none')
    assert not torch.allclose(random_a, random_b) and not torch.allclose(random_a, const)
    assert not torch.allclose(const, quiet)
    torch.testing.assert_close(none, quiet) # 'none' ignores the noise, whatever its strength.
    # Random noise is per sample; const noise is shared by the samples.
    torch.manual_seed(5)
    a = G(z[:1].repeat(2, 1), c, noise_mode='random')
    assert not torch.allclose(a[0], a[1])
    with pytest.raises(ValueError, match='noise_mode'):
        G(z, c, noise_mode='fixed')

def test_truncation_and_w_avg():
    G = tiny_generator(c_dim=2)
    z, c = latents(G, 4)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.w_dim))
    w_avg = G.mapping.w_avg.clone()
    ws = G.mapping(z, c)
    assert ws.shape == (4, G.num_ws, G.w_dim)
    # psi lerps from w_avg toward w; the cutoff limits it to the first ws.
    torch.testing.assert_close(G.mapping(z, c, truncation_psi=0.3), w_avg + 0.3 * (ws - w_avg))
    cut = G.mapping(z, c, truncation_psi=0.3, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], w_avg + 0.3 * (ws[:, :2] - w_avg))
    torch.testing.assert_close(cut[:, 2:], ws[:, 2:])
    # psi = 0: every latent gives the image of w_avg.
    img = G(z, c, truncation_psi=0, noise_mode='const')
    torch.testing.assert_close(img, img[:1].expand_as(img))
    torch.testing.assert_close(img[:1], G.synthesis(w_avg[None, None].repeat(1, G.num_ws, 1), noise_mode='const'))
    # The mean is tracked only when asked (update_emas, as StyleGAN3).
    G(z, c)
    torch.testing.assert_close(G.mapping.w_avg, w_avg, rtol=0, atol=0)
    G(z, c, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, ws[:, 0].mean(0).lerp(w_avg, G.mapping.w_avg_beta))

#----------------------------------------------------------------------------
# Modulated convolution.

def naive_modulated_conv2d(x, weight, styles, demodulate, up, resample_filter, flip_weight):
    """One sample at a time, weights built explicitly, through a plain convolution."""
    out = []
    for i in range(x.shape[0]):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        out.append(conv2d_resample.conv2d_resample(x[i:i + 1], w, f=resample_filter, up=up,
            padding=weight.shape[-1] // 2, flip_weight=flip_weight))
    return torch.cat(out)

@pytest.mark.parametrize('up,kernel_size', [(1, 3), (2, 3), (1, 1)])
@pytest.mark.parametrize('demodulate', [True, False])
def test_fused_and_non_fused_agree(up, kernel_size, demodulate):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([3, 5, 6, 6], generator=gen, dtype=torch.float64)
    weight = torch.randn([4, 5, kernel_size, kernel_size], generator=gen, dtype=torch.float64)
    styles = torch.randn([3, 5], generator=gen, dtype=torch.float64) + 1
    noise = torch.randn([3, 1, 6 * up, 6 * up], generator=gen, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    kwargs = dict(x=x, weight=weight, styles=styles, demodulate=demodulate, up=up, padding=kernel_size // 2,
        resample_filter=f, flip_weight=(up == 1))
    fused = modulated_conv2d(fused_modconv=True, **kwargs)
    reference = naive_modulated_conv2d(x, weight, styles, demodulate, up, f, up == 1)
    assert fused.shape == (3, 4, 6 * up, 6 * up)
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(modulated_conv2d(fused_modconv=False, **kwargs), reference, rtol=1e-12, atol=1e-12)
    # Noise is added after demodulation in both paths.
    torch.testing.assert_close(modulated_conv2d(noise=noise, fused_modconv=True, **kwargs), reference + noise, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(modulated_conv2d(noise=noise, fused_modconv=False, **kwargs), reference + noise, rtol=1e-12, atol=1e-12)
    if demodulate: # Unit-norm weights: the output does not depend on the scale of the styles (but for the 1e-8 epsilon).
        torch.testing.assert_close(modulated_conv2d(**{**kwargs, 'styles': styles * 7}), fused, rtol=1e-8, atol=1e-8)

def test_fp16_pre_normalization_keeps_the_result():
    # The float16 path rescales weight and styles before demodulating; in
    # float32 the same formula (forced here through a float16 input cast back)
    # must match the plain result, and in float16 stay finite for huge styles.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 8, 5, 5], generator=gen)
    weight = torch.randn([4, 8, 3, 3], generator=gen)
    styles = torch.randn([2, 8], generator=gen) * 1e4
    reference = modulated_conv2d(x.double(), weight.double(), styles.double(), padding=1)
    out = modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=False)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference, rtol=2e-2, atol=2e-2)

@pytest.mark.parametrize('architecture', ['skip', 'resnet'])
def test_generator_fused_modconv_agree(architecture):
    G = tiny_generator(architecture=architecture, c_dim=2)
    set_noise_strength(G, 0.3)
    z, c = latents(G, 3)
    fused = G(z, c, noise_mode='const', fused_modconv=True)
    # The network computes in float32 (the blocks cast to it); the float64 comparison is the one above.
    torch.testing.assert_close(G(z, c, noise_mode='const', fused_modconv=False), fused, rtol=1e-5, atol=1e-5)

def test_fused_modconv_default(monkeypatch):
    calls = []
    original = networks_stylegan2.modulated_conv2d
    def spy(**kwargs):
        calls.append(kwargs['fused_modconv'])
        return original(**kwargs)
    monkeypatch.setattr(networks_stylegan2, 'modulated_conv2d', spy)
    G = tiny_generator(fused_modconv_default='inference_only')
    z, c = latents(G, 2)
    num_layers = 5 + 3 # Convolutions and ToRGBs.
    expected = G.eval()(z, c)
    assert calls == [True] * num_layers
    calls.clear()
    torch.testing.assert_close(G.train()(z, c, noise_mode='none'), G.eval()(z, c, noise_mode='none'), rtol=1e-5, atol=1e-5)
    assert calls == [False] * num_layers + [True] * num_layers
    calls.clear()
    G.train()(z, c, fused_modconv=True) # An explicit value overrides the default.
    assert calls == [True] * num_layers
    calls.clear()
    tiny_generator()(z, c) # NVIDIA's default: fused.
    assert calls == [True] * num_layers
    assert expected.shape == (2, 3, 16, 16)

#----------------------------------------------------------------------------
# Derivatives.

@pytest.mark.parametrize('fused_modconv', [True, False])
def test_path_length_double_backward(fused_modconv):
    # Path-length regularization: grad of (img * noise).sum() w.r.t. ws, with
    # its graph, then backward of its norm into G's parameters.
    G = tiny_generator(c_dim=2, architecture='skip')
    set_noise_strength(G, 0.1)
    z, c = latents(G, 2)
    ws = G.mapping(z, c)
    img = G.synthesis(ws, fused_modconv=fused_modconv)
    pl_noise = torch.randn_like(img) / np.sqrt(img.shape[2] * img.shape[3])
    grads, = torch.autograd.grad((img * pl_noise).sum(), [ws], create_graph=True)
    assert grads.shape == ws.shape
    grads.square().sum(2).mean(1).sqrt().mean().backward()
    for name, p in G.named_parameters():
        if name.endswith(('weight', 'const')):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name

def test_modulated_conv2d_gradgradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 2, 3, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn([2, 2, 3, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    styles = torch.randn([2, 2], generator=gen, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    for fused in [True, False]:
        fn = lambda x, w, s: modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f, flip_weight=False, fused_modconv=fused)
        assert torch.autograd.gradcheck(fn, [x, weight, styles], fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, [x, weight, styles], fast_mode=True)

@pytest.mark.parametrize('up', [1, 2])
@pytest.mark.parametrize('demodulate', [True, False])
def test_modulated_conv2d_under_no_weight_gradients(up, demodulate):
    # Inside no_weight_gradients() the convolutions compute no gradient w.r.t.
    # the weight they are given. Non-fused, that is the shared weight: it keeps
    # only the gradient of the demodulation coefficients (applied after the
    # convolution), while the input and the styles keep exact gradients. Fused,
    # the per-sample weights carry weight, styles and demodulation: only the
    # input gets a gradient. (Hence path-length regularization can skip the
    # weight gradients only with non-fused convolutions.)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([3, 5, 6, 6], generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn([4, 5, 3, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    styles = (torch.randn([3, 5], generator=gen, dtype=torch.float64) + 1).requires_grad_(True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    kwargs = dict(demodulate=demodulate, up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    dy = torch.randn([3, 4, 6 * up, 6 * up], generator=gen, dtype=torch.float64)
    inputs = [x, weight, styles]

    # Reference for the non-fused path: the convolution sees a constant weight.
    ref = conv2d_resample.conv2d_resample(x * styles.reshape(3, 5, 1, 1), weight.detach(), f=f, up=up, padding=1,
        flip_weight=(up == 1))
    if demodulate:
        ref = ref * (weight[None] * styles.reshape(3, 1, 5, 1, 1)).square().sum([2, 3, 4]).add(1e-8).rsqrt().reshape(3, 4, 1, 1)
    ref_x, ref_w, ref_s = torch.autograd.grad(ref, inputs, dy, allow_unused=True)
    full_x = torch.autograd.grad(naive_modulated_conv2d(x, weight, styles, demodulate, up, f, up == 1), x, dy)[0]
    torch.testing.assert_close(ref_x, full_x, rtol=1e-12, atol=1e-12)

    y = modulated_conv2d(x=x, weight=weight, styles=styles, fused_modconv=False, **kwargs)
    with conv2d_gradfix.no_weight_gradients():
        gx, gw, gs = torch.autograd.grad(y, inputs, dy, allow_unused=True)
    torch.testing.assert_close(gx, ref_x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gs, ref_s, rtol=1e-12, atol=1e-12)
    if demodulate:
        torch.testing.assert_close(gw, ref_w, rtol=1e-12, atol=1e-12)
    else:
        assert gw is None and ref_w is None

    y = modulated_conv2d(x=x, weight=weight, styles=styles, fused_modconv=True, **kwargs)
    with conv2d_gradfix.no_weight_gradients():
        gx, gw, gs = torch.autograd.grad(y, inputs, dy, retain_graph=True, allow_unused=True)
    torch.testing.assert_close(gx, full_x, rtol=1e-12, atol=1e-12)
    assert gw is None and gs is None
    # Outside the block the same graph gives every gradient.
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(y, inputs, dy))

#----------------------------------------------------------------------------
# Precision settings, pickling, training.

def test_fp16_blocks_run_in_float32_on_cpu():
    outputs = []
    for kwargs in [dict(num_fp16_res=0), dict(num_fp16_res=4), dict(num_fp16_res=4, fp16_channels_last=True)]:
        G = tiny_generator(img_resolution=32, channel_base=256, **kwargs)
        z, c = latents(G, 2)
        img = G(z, c, noise_mode='const')
        assert img.dtype == torch.float32 and img.is_contiguous()
        outputs.append(img)
    assert G.synthesis.b32.use_fp16 and G.synthesis.b32.channels_last and G.synthesis.b8.use_fp16 # fp16_resolution = max(2**(5+1-4), 8).
    assert not G.synthesis.b4.use_fp16
    assert G.synthesis.b32.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for img in outputs[1:]:
        torch.testing.assert_close(img, outputs[0])

@pytest.mark.skipif(not torch.cuda.is_available(), reason='float16 runs on CUDA only')
def test_fp16_on_cuda():
    G = tiny_generator(img_resolution=32, channel_base=256, num_fp16_res=2, fp16_channels_last=True).cuda()
    z, c = latents(G, 4)
    z, c = z.cuda(), c.cuda()
    img = G(z, c, noise_mode='const')
    reference = G(z, c, noise_mode='const', force_fp32=True)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    torch.testing.assert_close(img, reference, rtol=0.05, atol=0.05)
    torch.testing.assert_close(G(z, c, noise_mode='const', fused_modconv=False), img, rtol=0.05, atol=0.05)

def test_pickle_round_trip():
    G = tiny_generator(c_dim=2, architecture='resnet', fused_modconv_default='inference_only', mapping_kwargs=dict(num_layers=3))
    set_noise_strength(G, 0.2)
    z, c = latents(G, 3)
    expected = G(z, c, noise_mode='const')
    buf = io.BytesIO()
    pickle.dump(G, buf)
    buf.seek(0)
    G2 = pickle.load(buf)
    assert type(G2).__name__ == 'Generator'
    assert all(persistence.is_persistent(m) for m in [G2, G2.synthesis, G2.synthesis.b8, G2.synthesis.b8.conv0,
        G2.synthesis.b16.torgb, G2.mapping])
    assert G2.init_kwargs == dict(z_dim=8, c_dim=2, w_dim=8, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
        mapping_kwargs=dict(num_layers=3), architecture='resnet', fused_modconv_default='inference_only')
    torch.testing.assert_close(G2(z, c, noise_mode='const'), expected, rtol=0, atol=0)
    assert list(G2.state_dict()) == list(G.state_dict())

def test_training_loss_phases():
    G = tiny_generator(c_dim=2, img_resolution=8, fused_modconv_default='inference_only').train()
    set_noise_strength(G, 0.1)
    torch.manual_seed(0)
    D = Discriminator(c_dim=2, img_resolution=8, img_channels=3, channel_base=64, channel_max=16)
    loss = loss_module.StyleGAN2Loss(device='cpu', G=G, D=D, pl_weight=2, style_mixing_prob=0.9)
    z, c = latents(G, 4)
    real = torch.randn([4, 3, 8, 8])
    for phase in ['Gmain', 'Greg', 'Dmain', 'Dreg']:
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        loss.accumulate_gradients(phase, real_img=real, real_c=c, gen_z=z, gen_c=c, gain=4, cur_nimg=0)
        module = G if phase.startswith('G') else D
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), phase
        assert sum(g.abs().sum() for g in grads) > 0, phase
    assert loss.pl_mean > 0

def test_bad_arguments():
    with pytest.raises(ValueError, match='architecture'):
        tiny_generator(architecture='unet')
    with pytest.raises(ValueError, match='img_resolution'):
        tiny_generator(img_resolution=24)
    G = tiny_generator()
    with pytest.raises(AssertionError):
        G.synthesis(torch.zeros([2, G.num_ws + 1, G.w_dim]))

#----------------------------------------------------------------------------
