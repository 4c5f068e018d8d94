"""StyleGAN2 networks ("Analyzing and Improving the Image Quality of StyleGAN",
Karras et al. 2020), as configured in NVIDIA's StyleGAN2-ADA and StyleGAN3.

This module holds the discriminator that every config of this project trains
against; the StyleGAN2 generator is to join it (see the section below).
Class names, constructor arguments, parameter and buffer names and shapes,
and the computation follow NVIDIA's training/networks_stylegan2.py, so the D
of their published pickles loads into these classes. Layers are created in
NVIDIA's order, so the same seed gives the same initial weights.

The fully connected layer and the mapping network (used by the discriminator
to embed class labels) are the ones of networks_creps, which are StyleGAN2's.

Mixed precision: blocks configured with use_fp16 compute in float16 on CUDA
only; on any other device everything runs in float32. Everything is
differentiable twice, as R1 regularization (the gradient of D with respect to
its input image, itself differentiated with respect to D's parameters) needs.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import upfirdn2d
from training.networks_creps import FullyConnectedLayer, MappingNetwork

#----------------------------------------------------------------------------
# Layers.

@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with optional FIR-filtered up/downsampling, bias, activation and clamping.
    The weight is scaled at run time by 1/sqrt(fan_in) (equalized learning rate)."""
    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the convolution kernel.
        bias            = True,         # Apply an additive bias before the activation?
        activation      = 'linear',     # Activation function: 'relu', 'lrelu', etc.
        up              = 1,            # Integer upsampling factor.
        down            = 1,            # Integer downsampling factor.
        resample_filter = [1,3,3,1],    # Low-pass filter for the resampling.
        conv_clamp      = None,         # Clamp the output to +-X, None = no clamping.
        channels_last   = False,        # Create the weight in channels_last memory format?
        trainable       = True,         # False: weight and bias are buffers (frozen layers).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.channels_last = channels_last
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias) # None registers no tensor.

    def forward(self, x, gain=1):
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.channels_last and x.device.type != 'cuda':
            # channels_last only on CUDA: a channels_last weight would make the output so.
            # (clone, as contiguous() keeps the strides of a 1x1 weight, which count as both.)
            w = w.clone(memory_format=torch.contiguous_format)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample.conv2d_resample(x=x, w=w, f=self.resample_filter, up=self.up, down=self.down,
            padding=self.padding, flip_weight=(self.up == 1)) # No weight flip either way (conv_transpose2d convolves), as NVIDIA.
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)

    def extra_repr(self):
        return (f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, activation={self.activation:s}, '
            f'up={self.up}, down={self.down}')

#----------------------------------------------------------------------------
# Generator: modulated_conv2d, SynthesisLayer, ToRGBLayer, SynthesisBlock,
# SynthesisNetwork and Generator go here, with NVIDIA's names, reusing the
# layers above.

#----------------------------------------------------------------------------
# Discriminator.

@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """Two 3x3 convolutions at one resolution, the second downsampling by 2,
    with the image brought in by a 1x1 "fromrgb" convolution in the first block
    (every block for 'skip') and a downsampling 1x1 shortcut for 'resnet'."""
    def __init__(self,
        in_channels,                        # Number of input channels, 0 = first block.
        tmp_channels,                       # Number of intermediate channels.
        out_channels,                       # Number of output channels.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of input color channels.
        first_layer_idx,                    # Index of the first layer of this block in the discriminator.
        architecture        = 'resnet',     # Architecture: 'orig', 'skip', 'resnet'.
        activation          = 'lrelu',      # Activation function: 'relu', 'lrelu', etc.
        resample_filter     = [1,3,3,1],    # Low-pass filter for the downsampling.
        conv_clamp          = None,         # Clamp the output of convolution layers to +-X, None = no clamping.
        use_fp16            = False,        # Compute in float16 (on CUDA)?
        fp16_channels_last  = False,        # Use channels_last memory format with float16?
        freeze_layers       = 0,            # Freeze-D: the first this many layers of the discriminator are frozen.
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'in_channels must be 0 (first block) or tmp_channels ({tmp_channels}), got {in_channels}')
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        # Layers are numbered across the discriminator, in creation order.
        self.num_layers = 0
        def layer(*args, **kwargs):
            trainable = self.first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return Conv2dLayer(*args, trainable=trainable, channels_last=self.channels_last, **kwargs)

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = layer(img_channels, tmp_channels, kernel_size=1, activation=activation, conv_clamp=conv_clamp)
        self.conv0 = layer(tmp_channels, tmp_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp)
        self.conv1 = layer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
            resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == 'resnet':
            self.skip = layer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x, img, force_fp32=False):
        if (x if x is not None else img).device.type != 'cuda':
            force_fp32 = True # float16 and channels_last only on CUDA.
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            # Both branches scaled by sqrt(1/2), so that their sum keeps unit variance.
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))

        assert x.dtype == dtype
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends, as num_channels extra feature maps, the standard deviation of
    the features across a group of samples, averaged over channels and pixels.

    The minibatch of N samples is split into N/G groups of G = min(group_size, N)
    samples with a stride: sample i belongs to group i % (N/G). The C channels
    are split into num_channels groups of C/num_channels, each giving one
    extra feature (constant over the image, shared within the sample group).
    N must be divisible by G.
    """
    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size        # None = the entire minibatch.
        self.num_channels = num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        with misc.suppress_tracer_warnings(): # Sizes are constants of a traced graph.
            N, C, H, W = int(N), int(C), int(H), int(W)
        G = min(self.group_size, N) if self.group_size is not None else N
        F = self.num_channels
        if N % G or C % F:
            raise ValueError(f'MinibatchStdLayer: the minibatch ({N}) must be divisible by the group size ({G}) '
                f'and the channels ({C}) by num_channels ({F})')

        y = x.reshape(G, N // G, F, C // F, H, W)  # Sample g * (N/G) + n is y[g, n].
        y = y - y.mean(dim=0)                       # Deviation from the group mean.
        y = y.square().mean(dim=0)                  # Variance over the group: [n, F, c, H, W].
        y = (y + 1e-8).sqrt()                       # Standard deviation.
        y = y.mean(dim=[2, 3, 4])                   # Averaged over channels and pixels: [n, F].
        y = y.reshape(N // G, F, 1, 1).repeat(G, 1, H, W) # Back to every sample: [N, F, H, W].
        return torch.cat([x, y], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels:d}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 end of the discriminator: minibatch standard deviation, a 3x3
    convolution, two fully connected layers, and the projection on the mapped
    label for conditional models. Runs in float32."""
    def __init__(self,
        in_channels,                    # Number of input channels.
        cmap_dim,                       # Dimensionality of the mapped conditioning label, 0 = no label.
        resolution,                     # Resolution of this block.
        img_channels,                   # Number of input color channels.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        mbstd_group_size    = 4,        # Group size of the minibatch standard deviation layer, None = entire minibatch.
        mbstd_num_channels  = 1,        # Number of features of the minibatch standard deviation layer, 0 = disable.
        activation          = 'lrelu',  # Activation function: 'relu', 'lrelu', etc.
        conv_clamp          = None,     # Clamp the output of convolution layers to +-X, None = no clamping.
    ):
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        _ = force_fp32 # Always float32.
        dtype = torch.float32
        x = x.to(dtype=dtype, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=torch.contiguous_format)
            x = x + self.fromrgb(img)

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)

        # Projection discriminator: the output's dot product with the mapped label.
        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))

        assert x.dtype == dtype
        return x

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: one DiscriminatorBlock per resolution from the
    image's down to 8 (blocks b<res>), then the 4x4 epilogue b4. Returns
    logits [N, 1]; with labels (c_dim > 0), they are projected on a mapping of
    the label (the module `mapping`)."""
    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality.
        img_resolution,                 # Input resolution.
        img_channels,                   # Number of input color channels.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 4,        # Use FP16 for the N highest resolutions.
        conv_clamp          = 256,      # Clamp the output of convolution layers to +-X, None = no clamping.
        cmap_dim            = None,     # Dimensionality of the mapped conditioning label, None = default.
        block_kwargs        = {},       # Arguments for DiscriminatorBlock.
        mapping_kwargs      = {},       # Arguments for MappingNetwork.
        epilogue_kwargs     = {},       # Arguments for DiscriminatorEpilogue.
    ):
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f'img_resolution must be a power of two, at least 8, got {img_resolution}')
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = channels_dict[4]
        if c_dim == 0:
            cmap_dim = 0

        common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels_dict[res], channels_dict[res // 2], resolution=res,
                first_layer_idx=cur_layer_idx, use_fp16=(res >= fp16_resolution), **block_kwargs, **common_kwargs)
            setattr(self, f'b{res}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common_kwargs)

    def forward(self, img, c, update_emas=False, **block_kwargs):
        _ = update_emas # Nothing to update; accepted for the common network interface.
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def extra_repr(self):
        return f'c_dim={self.c_dim:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'

#----------------------------------------------------------------------------
