"""StyleGAN2 discriminator: shapes, NVIDIA's parameter layout, minibatch
standard deviation, double backward (R1), mixed precision settings, pickling."""

import io
import pickle

import numpy as np
import pytest
import torch

from torch_utils import persistence
from training import networks_stylegan2
from training.networks_stylegan2 import Conv2dLayer, Discriminator, MinibatchStdLayer

#----------------------------------------------------------------------------

def tiny_discriminator(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32)
    args.update(kwargs)
    return Discriminator(**args)

def inputs(D, n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn([n, D.img_channels, D.img_resolution, D.img_resolution], generator=gen)
    c = torch.nn.functional.one_hot(torch.arange(n) % max(D.c_dim, 1), max(D.c_dim, 1)).float()[:, :D.c_dim]
    return img, c

#----------------------------------------------------------------------------

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('resolution,img_channels,c_dim', [(16, 3, 0), (32, 1, 5), (64, 3, 2)])
def test_output_shape(architecture, resolution, img_channels, c_dim):
    D = tiny_discriminator(img_resolution=resolution, img_channels=img_channels, c_dim=c_dim, architecture=architecture,
        channel_base=resolution * 8, channel_max=16)
    img, c = inputs(D, 4)
    logits = D(img, c)
    assert logits.shape == (4, 1) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert D.block_resolutions == [2 ** i for i in range(int(np.log2(resolution)), 2, -1)]
    # Samples are scored independently, but for the minibatch std feature of their group.
    D2 = tiny_discriminator(img_resolution=resolution, img_channels=img_channels, c_dim=c_dim, architecture=architecture,
        channel_base=resolution * 8, channel_max=16, epilogue_kwargs=dict(mbstd_num_channels=0))
    torch.testing.assert_close(D2(img, c)[1:3], D2(img[1:3], c[1:3]))

def test_labels_change_the_output():
    D = tiny_discriminator(c_dim=3)
    img, _ = inputs(D, 4)
    a = D(img, torch.eye(3)[[0, 1, 2, 0]])
    b = D(img, torch.eye(3)[[1, 2, 0, 1]])
    assert not torch.allclose(a, b)
    assert D(img, torch.eye(3)[[0, 1, 2, 0]], update_emas=True).shape == (4, 1)

#----------------------------------------------------------------------------
# Parameter and buffer names and shapes, as NVIDIA's code creates them.

def _block_tensors(res, layers):
    """name => shape for block b<res>; layers: {layer name: (out, in, kernel, has_bias)}."""
    tensors = {f'b{res}.resample_filter': (4, 4)}
    for name, (out_ch, in_ch, k, has_bias) in layers.items():
        tensors[f'b{res}.{name}.weight'] = (out_ch, in_ch, k, k)
        if has_bias:
            tensors[f'b{res}.{name}.bias'] = (out_ch,)
        tensors[f'b{res}.{name}.resample_filter'] = (4, 4)
    return tensors

def test_state_dict_layout_resnet_conditional():
    # channel_base=256, channel_max=32: 8 channels at 32, 16 at 16, 32 at 8 and 4; cmap_dim = 32.
    D = tiny_discriminator(c_dim=3, img_resolution=32, img_channels=3, architecture='resnet')
    expected = {}
    expected.update(_block_tensors(32, {'fromrgb': (8, 3, 1, True), 'conv0': (8, 8, 3, True), 'conv1': (16, 8, 3, True), 'skip': (16, 8, 1, False)}))
    expected.update(_block_tensors(16, {'conv0': (16, 16, 3, True), 'conv1': (32, 16, 3, True), 'skip': (32, 16, 1, False)}))
    expected.update(_block_tensors(8, {'conv0': (32, 32, 3, True), 'conv1': (32, 32, 3, True), 'skip': (32, 32, 1, False)}))
    expected.update({'mapping.embed.weight': (32, 3), 'mapping.embed.bias': (32,)})
    for i in range(8):
        expected.update({f'mapping.fc{i}.weight': (32, 32), f'mapping.fc{i}.bias': (32,)})
    expected.update({
        'b4.conv.weight': (32, 33, 3, 3), 'b4.conv.bias': (32,), 'b4.conv.resample_filter': (4, 4),
        'b4.fc.weight': (32, 32 * 4 * 4), 'b4.fc.bias': (32,),
        'b4.out.weight': (32, 32), 'b4.out.bias': (32,),
    })
    state = D.state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == expected
    # NVIDIA's order of creation (which fixes the initial weights for a seed).
    assert list(state)[:4] == ['b32.resample_filter', 'b32.fromrgb.weight', 'b32.fromrgb.bias', 'b32.fromrgb.resample_filter']
    assert list(state).index('mapping.embed.weight') < list(state).index('b4.conv.weight')
    torch.testing.assert_close(state['b32.resample_filter'], torch.tensor([1., 3, 3, 1]).outer(torch.tensor([1., 3, 3, 1])) / 64)

def test_state_dict_layout_skip_and_orig():
    D = tiny_discriminator(img_resolution=16, img_channels=1, architecture='skip', channel_base=128, channel_max=64,
        epilogue_kwargs=dict(mbstd_num_channels=2))
    # 8 channels at 16, 16 at 8, 32 at 4.
    expected = {}
    expected.update(_block_tensors(16, {'fromrgb': (8, 1, 1, True), 'conv0': (8, 8, 3, True), 'conv1': (16, 8, 3, True)}))
    expected.update(_block_tensors(8, {'fromrgb': (16, 1, 1, True), 'conv0': (16, 16, 3, True), 'conv1': (32, 16, 3, True)}))
    expected.update({
        'b4.fromrgb.weight': (32, 1, 1, 1), 'b4.fromrgb.bias': (32,), 'b4.fromrgb.resample_filter': (4, 4),
        'b4.conv.weight': (32, 34, 3, 3), 'b4.conv.bias': (32,), 'b4.conv.resample_filter': (4, 4),
        'b4.fc.weight': (32, 512), 'b4.fc.bias': (32,), 'b4.out.weight': (1, 32), 'b4.out.bias': (1,),
    })
    assert {name: tuple(t.shape) for name, t in D.state_dict().items()} == expected

    D = tiny_discriminator(img_resolution=16, architecture='orig', channel_base=128, channel_max=64, c_dim=2, cmap_dim=7,
        mapping_kwargs=dict(num_layers=2), epilogue_kwargs=dict(mbstd_num_channels=0))
    names = {name: tuple(t.shape) for name, t in D.state_dict().items()}
    assert 'b16.fromrgb.weight' in names and not any('skip' in n or n.startswith(('b8.fromrgb', 'b4.fromrgb')) for n in names)
    assert names['b4.conv.weight'] == (32, 32, 3, 3)
    assert names['b4.out.weight'] == (7, 32)
    assert names['mapping.embed.weight'] == (7, 2) and names['mapping.fc1.weight'] == (7, 7) and 'mapping.fc2.weight' not in names
    assert 'mapping.w_avg' not in names

def test_freeze_layers():
    # Layers are numbered across blocks: b16 fromrgb 0, conv0 1, conv1 2, skip 3; b8 conv0 4, ...
    D = tiny_discriminator(block_kwargs=dict(freeze_layers=5))
    reference = tiny_discriminator()
    assert {n: t.shape for n, t in D.state_dict().items()} == {n: t.shape for n, t in reference.state_dict().items()}
    trainable = {n for n, _ in D.named_parameters()}
    frozen = {'b16.fromrgb.weight', 'b16.fromrgb.bias', 'b16.conv0.weight', 'b16.conv0.bias', 'b16.conv1.weight',
        'b16.conv1.bias', 'b16.skip.weight', 'b8.conv0.weight', 'b8.conv0.bias'}
    assert trainable == {n for n, _ in reference.named_parameters()} - frozen
    assert D.b16.num_layers == 4 and D.b8.first_layer_idx == 4
    img, c = inputs(D, 2)
    torch.testing.assert_close(D(img, c), reference(img, c)) # Same seed, same weights.

#----------------------------------------------------------------------------
# Minibatch standard deviation.

def naive_mbstd(x, group_size, num_channels):
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    g = n if group_size is None else min(group_size, n)
    groups = n // g
    extra = np.zeros([n, num_channels, h, w])
    for i in range(n):
        members = [k for k in range(n) if k % groups == i % groups] # Strided groups.
        assert len(members) == g
        for f in range(num_channels):
            chans = x[members, f * (c // num_channels) : (f + 1) * (c // num_channels)]
            std = np.sqrt(np.mean((chans - chans.mean(axis=0)) ** 2, axis=0) + 1e-8)
            extra[i, f] = std.mean()
    return np.concatenate([x, extra], axis=1)

@pytest.mark.parametrize('n,group_size,num_channels', [(8, 4, 1), (8, 2, 2), (4, 4, 4), (6, None, 1), (3, 8, 1), (5, 1, 1), (6, 3, 2)])
def test_minibatch_std_against_naive(n, group_size, num_channels):
    x = torch.randn([n, 8, 3, 5], dtype=torch.float64)
    y = MinibatchStdLayer(group_size, num_channels)(x)
    assert y.shape == (n, 8 + num_channels, 3, 5)
    np.testing.assert_allclose(y.numpy(), naive_mbstd(x.numpy(), group_size, num_channels), rtol=1e-12, atol=1e-12)
    if group_size == 1:
        torch.testing.assert_close(y[:, 8:], torch.full([n, 1, 3, 5], 1e-4, dtype=torch.float64))

def test_minibatch_std_derivatives_and_errors():
    x = torch.randn([4, 4, 2, 2], dtype=torch.float64, requires_grad=True)
    for group_size in [1, 2, 4]:
        layer = MinibatchStdLayer(group_size, num_channels=2)
        assert torch.autograd.gradcheck(layer, [x])
        assert torch.autograd.gradgradcheck(layer, [x], fast_mode=True)
    with pytest.raises(ValueError, match='divisible'):
        MinibatchStdLayer(4)(torch.randn([6, 4, 2, 2]))
    with pytest.raises(ValueError, match='divisible'):
        MinibatchStdLayer(2, num_channels=3)(torch.randn([4, 4, 2, 2]))

#----------------------------------------------------------------------------
# R1: gradient with respect to the image, with its graph, then backward into D.

def _r1(D, img, c):
    img = img.detach().requires_grad_(True)
    grad, = torch.autograd.grad(D(img, c).sum(), [img], create_graph=True)
    return grad.square().sum()

@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_double_backward_reaches_every_weight(architecture):
    D = tiny_discriminator(c_dim=3, architecture=architecture)
    img, c = inputs(D, 4)
    _r1(D, img, c).backward()
    for name, param in D.named_parameters():
        # Biases act on the gradient only through the lrelu masks (zero second derivative).
        if name.endswith('weight'):
            assert param.grad is not None and param.grad.abs().sum() > 0, name

def test_double_backward_smooth_activation_reaches_every_parameter():
    act = dict(activation='swish')
    D = tiny_discriminator(c_dim=3, block_kwargs=act, epilogue_kwargs=act, mapping_kwargs=act)
    img, c = inputs(D, 4)
    _r1(D, img, c).backward()
    for name, param in D.named_parameters():
        if name != 'b4.out.bias': # The only parameter the gradient does not depend on.
            assert param.grad is not None and param.grad.abs().sum() > 0, name

def test_r1_gradient_against_finite_differences():
    # d(R1)/d(weight) from double backward against central differences, in
    # float64, through the layers of a resnet block and the minibatch std
    # (the blocks themselves cast to float32; the layers run in x's dtype).
    torch.manual_seed(0)
    block = networks_stylegan2.DiscriminatorBlock(0, 3, 4, resolution=4, img_channels=2, first_layer_idx=0,
        activation='swish', conv_clamp=256).double()
    mbstd = MinibatchStdLayer(group_size=2)
    img = torch.randn([2, 2, 4, 4], dtype=torch.float64)
    def r1(w_conv0, w_skip):
        x = img.detach().requires_grad_(True)
        h = block.fromrgb(x)
        h0 = torch.func.functional_call(block.conv0, {'weight': w_conv0}, (h,))
        y = torch.func.functional_call(block.skip, {'weight': w_skip}, (h,), dict(gain=np.sqrt(0.5))) + block.conv1(h0, gain=np.sqrt(0.5))
        score = torch.tanh(mbstd(y)).sum()
        grad, = torch.autograd.grad(score, [x], create_graph=True)
        return grad.square().sum()
    weights = [block.conv0.weight.detach().clone().requires_grad_(True), block.skip.weight.detach().clone().requires_grad_(True)]
    assert torch.autograd.gradcheck(r1, weights, fast_mode=True)

def test_conv2d_layer_derivatives():
    torch.manual_seed(0)
    for kwargs in [dict(kernel_size=3, down=2, activation='lrelu'), dict(kernel_size=1, down=2, bias=False), dict(kernel_size=3, activation='swish')]:
        layer = Conv2dLayer(2, 2, **kwargs).double()
        x = torch.randn([1, 2, 4, 4], dtype=torch.float64, requires_grad=True)
        w = layer.weight.detach().clone().requires_grad_(True)
        fn = lambda x, w: torch.func.functional_call(layer, {'weight': w}, (x,), dict(gain=0.7))
        assert torch.autograd.gradcheck(fn, [x, w])
        assert torch.autograd.gradgradcheck(fn, [x, w], fast_mode=True)

def test_conv_clamp():
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 4, kernel_size=3, activation='lrelu', conv_clamp=0.5)
    y = layer(torch.randn([2, 3, 8, 8]) * 10, gain=2)
    assert y.abs().max() <= 1.0 + 1e-6 and (y.abs() > 0.999).any()
    y = Conv2dLayer(3, 4, kernel_size=3, up=1, down=2)(torch.randn([2, 3, 8, 8]))
    assert y.shape == (2, 4, 4, 4)

#----------------------------------------------------------------------------
# Precision settings and pickling.

def test_fp16_blocks_run_in_float32_on_cpu():
    img, c = None, None
    outputs = []
    for kwargs in [dict(num_fp16_res=0), dict(num_fp16_res=4), dict(num_fp16_res=4, block_kwargs=dict(fp16_channels_last=True))]:
        D = tiny_discriminator(c_dim=2, img_resolution=32, **kwargs)
        img, c = inputs(D, 4)
        x, _ = D.b32(None, img)
        assert x.dtype == torch.float32 and x.is_contiguous()
        outputs.append(D(img, c))
    assert D.b32.use_fp16 and D.b32.channels_last and D.b8.use_fp16 # fp16_resolution = max(2**(5+1-4), 8) = 8.
    assert D.b32.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    for y in outputs[1:]:
        torch.testing.assert_close(y, outputs[0])

def test_pickle_round_trip():
    D = tiny_discriminator(c_dim=3, architecture='skip', block_kwargs=dict(freeze_layers=1))
    img, c = inputs(D, 4)
    expected = D(img, c)
    buf = io.BytesIO()
    pickle.dump(D, buf)
    buf.seek(0)
    D2 = pickle.load(buf)
    assert persistence.is_persistent(D2) and persistence.is_persistent(D2.b16) and persistence.is_persistent(D2.mapping)
    assert type(D2).__name__ == 'Discriminator'
    assert D2.init_kwargs['block_kwargs'] == dict(freeze_layers=1)
    torch.testing.assert_close(D2(img, c), expected)
    assert [n for n, _ in D2.named_parameters()] == [n for n, _ in D.named_parameters()]

def test_bad_arguments():
    with pytest.raises(ValueError):
        tiny_discriminator(img_resolution=24)
    with pytest.raises(ValueError):
        tiny_discriminator(architecture='unet')
    D = tiny_discriminator()
    with pytest.raises(ValueError, match='divisible'):
        D(torch.randn([6, 3, 16, 16]), torch.zeros([6, 0]))

#----------------------------------------------------------------------------
