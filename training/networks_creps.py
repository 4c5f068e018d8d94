"""CREPS generator: a mapping network and a column-row ("bi-line") synthesis network.

Every output pixel (row i, column j) is a function of the latent and of its own
two coordinates only, the row coordinate y_i and the column coordinate x_j:
there is no spatial convolution and no upsampling. The synthesis therefore runs
in two stages:

1. the *line stage* maps each coordinate of the row line and of the column line
   through the per-position layers of every level (cost linear in the side
   length), giving for each level a row bi-line [N, C, H, rank] and a column
   bi-line [N, C, W, rank];
2. the *pixel stage* combines, for any set of rows and columns, the two lines by
   an outer product summed over rank and runs the per-pixel MLPs (cost linear in
   the pixel count). Pixels are processed chunk by chunk so that intermediate
   tensors stay in cache and memory does not grow with the image.

Parameter and buffer names, shapes and the computation follow the official CREPS
release, so its pickles can be loaded into these classes. Tensors flowing
through the layers are [N, channels, positions] in both stages, so that the outer
product lands in the layout the per-pixel layers read, with no transposition.
"""

import importlib

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from training import generator

#----------------------------------------------------------------------------

PRECISIONS = ('fp32', 'fp16', 'bf16')
"""Compute precisions of the synthesis network:
fp32: every layer in float32;
fp16: float16 for the layers configured for it (as trained, CUDA only), float32 elsewhere;
bf16: bfloat16 for every per-position and per-pixel layer, float32 accumulation of the outputs."""

def default_precision(device):
    """The precision used when none is asked for: mixed fp16 on CUDA as trained, else fp32."""
    return 'fp16' if torch.device(device).type == 'cuda' else 'fp32'

def layer_dtype(precision, use_fp16):
    """Compute dtype of a layer configured with `use_fp16` under the given precision."""
    if precision == 'bf16':
        return torch.bfloat16
    if precision == 'fp16' and use_fp16:
        return torch.float16
    return torch.float32

#----------------------------------------------------------------------------

@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()

def track_average(average, value, beta):
    """average = lerp(value, average, beta) in place, only where `value` is finite: a diverging
    training step must not leave NaN in a running average that every later image reads."""
    average.copy_(torch.where(torch.isfinite(value), value.lerp(average, beta), average))

#----------------------------------------------------------------------------

@misc.profiled_function
def modulated_fc(
    x,                  # Input tensor: [batch_size, in_channels, num_positions].
    weight,             # Weight tensor: [out_channels, in_channels].
    styles,             # Modulation coefficients: [batch_size, in_channels].
    demodulate  = True, # Apply weight demodulation?
):
    """Per-sample modulated fully connected layer applied at every position."""
    batch_size = x.shape[0]
    out_channels, in_channels = weight.shape
    misc.assert_shape(x, [batch_size, in_channels, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    # Pre-normalize to keep float16 from overflowing; demodulation undoes the scale.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels) / weight.norm(float('inf'), dim=1, keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    return torch.bmm(modulated_weight(weight, styles, demodulate).to(x.dtype), x)

def modulated_weight(weight, styles, demodulate=True):
    """The per-sample weights [N, O, I] of a modulated layer: weight [O, I] scaled by styles
    [N, I] along its inputs, and demodulated (unit norm per output)."""
    w = weight.unsqueeze(0) * styles.unsqueeze(1) # [NOI]
    if demodulate:
        # The norms of w's rows, sum_i (weight[o, i] * styles[n, i])^2, as one product: a pass over
        # the weight instead of two over the modulated weights of every sample.
        w = w * (styles.square() @ weight.square().t() + 1e-8).rsqrt().unsqueeze(2)
    return w

#----------------------------------------------------------------------------

def fully_connected(x, weight, bias, weight_gain, bias_gain, activation):
    """x times (weight * weight_gain) transposed, plus bias * bias_gain, then the
    activation, in x's dtype. x: [N, in] or, applied at every position, [N, in, P].
    The equalized-learning-rate layer of every mapping network."""
    b = bias
    if b is not None:
        b = b.to(x.dtype)
        if bias_gain != 1:
            b = b * bias_gain
    if x.ndim == 3:
        # One product per sample with the weight broadcast (a view): torch.matmul(w, x) would fold
        # the batch into the rows, transposing x to [N * P, in] and back, a copy per layer and pass.
        w = weight.to(x.dtype) * weight_gain
        return bias_act.bias_act(torch.bmm(w.unsqueeze(0).expand(x.shape[0], -1, -1), x), b, dim=1, act=activation)
    # The gain scales the product [N, out], not the weight [out, in]: an affine layer of a
    # 1024-channel network has 1024 x 512 weights for a handful of samples.
    w = weight.to(x.dtype)
    if activation == 'linear' and b is not None:
        return torch.addmm(b.unsqueeze(0), x, w.t(), alpha=weight_gain)
    return bias_act.bias_act(torch.mm(x, w.t()).mul_(weight_gain), b, act=activation)

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias            = True,     # Apply additive bias before the activation function?
        weight_norm     = True,     # Scale the weight by 1/sqrt(in_features) (equalized learning rate)?
        activation      = 'linear', # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier   = 1,        # Learning rate multiplier.
        bias_init       = 0,        # Initial value for the additive bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / (np.sqrt(in_features) if weight_norm else 1)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        """x: [N, in_features] or, applied at every position, [N, in_features, num_positions]."""
        return fully_connected(x, self.weight, self.bias, self.weight_gain, self.bias_gain, self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality, 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality, 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of intermediate latents to output, None = do not broadcast.
        num_layers      = 8,        # Number of mapping layers.
        embed_features  = None,     # Label embedding dimensionality, None = same as w_dim.
        layer_features  = None,     # Number of intermediate features in the mapping layers, None = same as w_dim.
        activation      = 'lrelu',  # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier   = 0.01,     # Learning rate multiplier for the mapping layers.
        w_avg_beta      = 0.998,    # Decay for tracking the moving average of W during training, None = do not track.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        # Embed, normalize and concatenate the inputs.
        x = None
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        # Track the moving average of W, the centre of truncation, only when asked
        # (the training loss asks while generating for the discriminator, as StyleGAN3's).
        if update_emas and self.w_avg_beta is not None:
            track_average(self.w_avg, x.detach().mean(dim=0), self.w_avg_beta)

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            assert self.w_avg_beta is not None
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated, demodulated fully connected layer with activation and clamping."""
    def __init__(self,
        in_channels,                # Number of input channels.
        out_channels,               # Number of output channels.
        w_dim,                      # Intermediate latent (W) dimensionality.
        activation      = 'lrelu',  # Activation function: 'relu', 'lrelu', etc.
        fc_clamp        = None,     # Clamp the output to +-X, None = disable clamping.
        channels_last   = False,    # Kept for compatibility with the official pickles; no effect on a weight matrix.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.activation = activation
        self.fc_clamp = fc_clamp
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, gain=1):
        styles = self.affine(w)
        x = modulated_fc(x=x, weight=self.weight, styles=styles)
        act_clamp = self.fc_clamp * gain if self.fc_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, activation={self.activation:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class ToResLayer(torch.nn.Module):
    """Modulated, non-demodulated projection to the skip output (bi-line or RGB)."""
    def __init__(self,
        in_channels,                # Number of input channels.
        out_channels,               # Number of output channels.
        w_dim,                      # Intermediate latent (W) dimensionality.
        fc_clamp        = None,     # Clamp the output to +-X, None = disable clamping.
        channels_last   = False,    # Kept for compatibility with the official pickles; no effect on a weight matrix.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.fc_clamp = fc_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_fc(x=x, weight=self.weight, styles=styles, demodulate=False)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.fc_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisInput(torch.nn.Module):
    """Fourier features of one coordinate line, modulated by w.

    The official release stores the row and the column parameters side by side
    in the last axis (`2 * rank`): the first `rank` entries belong to the rows
    (the image's height axis), the last `rank` to the columns.
    """
    # Official code sets the lines it renders by replacing `coords` (its gen_images.py --scale does),
    # so a pickle may hold it at any length: legacy.load_network_pkl takes its shape from the file.
    variable_shape_buffers = ('coords',)

    def __init__(self,
        channels,                   # Number of output channels.
        w_dim,                      # Intermediate latent (W) dimensionality.
        resolution,                 # Training resolution: sets the `coords` buffer only.
        rank            = 8,        # Rank of the bi-line: values per channel and position.
        bandwidth       = 10,       # Standard deviation of the random frequencies.
    ):
        super().__init__()
        assert channels % 2 == 0
        self.channels = channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.rank = rank
        self.bandwidth = bandwidth
        self.register_buffer('freqs', torch.randn([1, channels // 2 * rank]) * bandwidth)
        # The training grid, as the official release stores it: the lines of a call without
        # coordinates (as official code makes). This project never mutates it.
        self.register_buffer('coords', torch.linspace(0, 1, resolution).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1))
        self.weight = torch.nn.Parameter(torch.randn([1, channels, 1, 2 * rank]))
        self.affine = FullyConnectedLayer(w_dim, channels * 2 * rank, bias_init=1)

    def forward(self, w, rows=None, cols=None):
        """Features [N, channels, (H + W) * rank] of the row coordinates `rows` [H] followed by
        those of the column coordinates `cols` [W].

        Called with `w` alone, as the official release's blocks call it (an official pickle
        refers to this class by name), it returns the official layout instead: features
        [N, channels, L, 2 * rank] of the `coords` buffer [1, L, 2, 1], rows in the first
        `rank` entries of the last axis, columns in the last."""
        if rows is None and cols is None:
            lines = self.forward(w, self.coords[0, :, 0, 0], self.coords[0, :, 1, 0])
            n, length = w.shape[0], self.coords.shape[1]
            return lines.reshape(n, self.channels, 2, length, self.rank).permute(0, 1, 3, 2, 4).reshape(n, self.channels, length, -1)
        rank, half = self.rank, self.channels // 2
        styles = self.affine(w).reshape(w.shape[0], self.channels, 1, 2 * rank)
        weight = self.weight * styles / np.sqrt(self.channels) # [N, C, 1, 2 * rank]
        parts = []
        for side, coords in enumerate([rows, cols]):
            if coords.shape[0] == 0:
                continue
            phase = (coords.to(torch.float32).unsqueeze(1) * self.freqs).reshape(-1, half, rank) * (np.pi * 2) # [L, C/2, rank]
            # cos(x) written as sin(x + pi/2), as the official release computes it.
            x = torch.sin(torch.cat([phase, phase + np.pi / 2], dim=1)).transpose(0, 1) # [C, L, rank]
            x = x.unsqueeze(0) * weight[..., side * rank : (side + 1) * rank] # [N, C, L, rank]
            parts.append(x.reshape(w.shape[0], self.channels, -1))
        return torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]

    def extra_repr(self):
        return f'channels={self.channels:d}, w_dim={self.w_dim:d}, rank={self.rank}, resolution={self.resolution:d}, bandwidth={self.bandwidth:g}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One level: per-position layers and a skip projection, shared by the line stage
    (positions = line samples x rank) and the final per-pixel blocks (positions = pixels)."""
    def __init__(self,
        in_channels,                        # Number of input channels, 1 = first block (Fourier input).
        out_channels,                       # Number of output channels.
        w_dim,                              # Intermediate latent (W) dimensionality.
        resolution,                         # Training resolution (the input layer's grid).
        is_last,                            # Is this the last block?
        res_channels        = None,         # Number of channels of the skip output.
        architecture        = 'skip',       # Architecture: 'orig', 'skip'.
        fc_clamp            = 256,          # Clamp the output of the layers to +-X, None = disable clamping.
        use_fp16            = False,        # Use float16 for this block under the 'fp16' precision?
        fp16_channels_last  = False,        # Kept for compatibility with the official pickles.
        rank                = 8,            # Rank of the bi-line (first block only).
        bandwidth           = 10,           # Bandwidth of the Fourier features (first block only).
        **layer_kwargs,                     # Arguments for SynthesisLayer.
    ):
        assert architecture in ['orig', 'skip']
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.res_channels = res_channels
        self.is_last = is_last
        self.architecture = architecture if in_channels > 1 else 'orig'
        self.use_fp16 = use_fp16
        self.num_fc = 0
        self.num_tores = 0

        if in_channels == 1:
            self.input = SynthesisInput(out_channels, w_dim=w_dim, resolution=resolution, rank=rank, bandwidth=bandwidth)
        else:
            self.fc0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, fc_clamp=fc_clamp, **layer_kwargs)
            self.num_fc += 1
        self.fc1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, fc_clamp=fc_clamp, **layer_kwargs)
        self.num_fc += 1
        if is_last or architecture == 'skip':
            self.tores = ToResLayer(out_channels, res_channels, w_dim=w_dim, fc_clamp=fc_clamp)
            self.num_tores += 1
        # The first block owns a `tores` but, being 'orig', never uses it: its level adds no
        # bi-line. Kept as in the official release, whose pickles carry the parameters.
        self.emits_res = is_last or self.architecture == 'skip'

    @property
    def num_ws(self):
        """Number of w vectors this block is given (the first block leaves its last one unused)."""
        return (self.in_channels == 1) + self.num_fc + self.num_tores

    def forward(self, x, res, ws, precision='fp32', lines=None):
        """x: [N, in_channels, P] (None for the first block, which builds it from the coordinate
        lines `lines` = (rows, cols)); res: float32 skip accumulator [N, res_channels, P] or None."""
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = layer_dtype(precision, self.use_fp16)
        if self.in_channels == 1:
            x = self.input(next(w_iter), *lines).to(dtype)
            x = self.fc1(x, next(w_iter))
        else:
            x = self.fc0(x.to(dtype), next(w_iter))
            x = self.fc1(x, next(w_iter))
        if self.emits_res:
            y = self.tores(x, next(w_iter)).to(torch.float32)
            res = res.add(y) if res is not None else y
        return x, res

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}'

#----------------------------------------------------------------------------

def fused_pixel_op():
    """The module of the fused pixel-stage kernels, torch_utils.ops.biline_pixels, or None where the
    code runs without it: this module's source travels in the pickles it makes, and the official
    codebases that load them have no such op (their networks then render layer by layer)."""
    try:
        return importlib.import_module('torch_utils.ops.biline_pixels')
    except ImportError:
        return None

def _fc_step(program, layer, src, dst):
    """A FullyConnectedLayer as a step of a fused pixel program (biline_pixels.Program)."""
    bias = layer.bias * layer.bias_gain if layer.bias is not None else layer.weight.new_zeros([layer.out_features])
    program.dense(layer.weight * layer.weight_gain, bias, src, dst, lrelu=(layer.activation == 'lrelu'),
        gain=bias_act.activation_funcs[layer.activation].def_gain)

def _modulated_step(program, layer, w, src, dst):
    """A SynthesisLayer or ToResLayer of the samples of w [N, w_dim] as a step of a fused pixel
    program, its per-sample weights prepared here, once per image; a ToResLayer adds to dst."""
    if isinstance(layer, ToResLayer):
        weight = modulated_weight(layer.weight, layer.affine(w) * layer.weight_gain, demodulate=False)
        program.dense(weight, layer.bias, src, dst, clamp=layer.fc_clamp, accumulate=True)
    else:
        weight = modulated_weight(layer.weight, layer.affine(w))
        program.dense(weight, layer.bias, src, dst, lrelu=(layer.activation == 'lrelu'), gain=layer.act_gain, clamp=layer.fc_clamp)

def _decoder(channels):
    """Per-pixel MLP between two levels: C -> 2C -> 4C -> 2C -> C, leaky ReLU throughout."""
    widths = [channels, channels * 2, channels * 4, channels * 2, channels]
    return torch.nn.Sequential(*[FullyConnectedLayer(a, b, activation='lrelu') for a, b in zip(widths[:-1], widths[1:])])

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Training resolution (a power of two); sets the number of levels.
        img_channels,               # Number of color channels.
        biline_channels = 32,       # Number of bi-line channels, the width of the per-pixel network.
        channel_base    = 32768,    # Overall multiplier for the number of channels of the line layers.
        channel_max     = 512,      # Maximum number of channels in any line layer.
        num_fp16_res    = 0,        # Use float16 for the N highest levels (under the 'fp16' precision).
        rank            = 8,        # Rank of the bi-lines.
        bandwidth       = 10,       # Standard deviation of the input Fourier frequencies.
        line_chunk      = 2**22,    # Line stage: at most this many (position x rank x channel) values per sample at once.
        pixel_chunk     = 16384,    # Pixel stage: pixels (summed over the batch) processed at once, sized for the CPU caches.
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        assert channel_base > 4 and channel_max > 1 and biline_channels > img_channels
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.biline_channels = biline_channels
        self.num_fp16_res = num_fp16_res
        self.rank = rank
        self.line_chunk = line_chunk
        self.pixel_chunk = pixel_chunk
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 1
        for res in self.block_resolutions:
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(channels_dict[res // 2] if res > 4 else 1, channels_dict[res], w_dim=w_dim,
                resolution=img_resolution, res_channels=biline_channels, is_last=is_last,
                use_fp16=(res >= fp16_resolution), rank=rank, bandwidth=bandwidth, **block_kwargs)
            self.num_ws += block.num_fc + (block.num_tores if is_last else 0)
            setattr(self, f'b{res}', block)

        # Levels whose running bi-line sum exists: from the first block that emits one.
        emitting = [res for res in self.block_resolutions if getattr(self, f'b{res}').emits_res]
        self.feature_resolutions = [res for res in self.block_resolutions if res >= emitting[0]]

        # The first feature level has no decoder input; its decoder is built but unused, as officially.
        for res in self.block_resolutions[1:]:
            setattr(self, f'decoder_{res}', _decoder(biline_channels))
        self.decoder_last = _decoder(biline_channels)
        self.decoder_img = FullyConnectedLayer(biline_channels, img_channels)
        self.block0 = SynthesisBlock(biline_channels, biline_channels * 4, w_dim=w_dim, resolution=img_resolution,
            res_channels=img_channels, is_last=False, use_fp16=True, fc_clamp=256)
        self.block1 = SynthesisBlock(biline_channels * 4, biline_channels * 2, w_dim=w_dim, resolution=img_resolution,
            res_channels=img_channels, is_last=True, use_fp16=True, fc_clamp=256)

    def split_ws(self, ws):
        """The w vectors of each level; consecutive levels share one, as in the official release."""
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        block_ws, w_idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws.append(ws.narrow(1, w_idx, block.num_ws))
            w_idx += block.num_fc
        return block_ws

    def line_stage(self, ws, rows, cols, precision='fp32'):
        """Bi-lines at row coordinates `rows` [H] and column coordinates `cols` [W].

        Returns (row_lines, col_lines): per feature level (feature_resolutions) a float32
        tensor [N, biline_channels, H, rank], resp. [N, biline_channels, W, rank]: the running sum of the
        levels' skip outputs, pre-scaled by sqrt(1/2) as the outer product needs. Rows and
        columns go through the layers together, in chunks of positions that bound memory
        and keep the matrix products large.
        """
        block_ws = self.split_ws(ws)
        max_channels = max(getattr(self, f'b{res}').fc1.out_channels for res in self.block_resolutions)
        chunk = max(self.line_chunk // (self.rank * max_channels), 1)
        height, total = rows.shape[0], rows.shape[0] + cols.shape[0]
        levels = [[] for _ in self.feature_resolutions]
        for start in range(0, total, chunk):
            end = min(start + chunk, total)
            lines = (rows[start:end], cols[max(start - height, 0) : max(end - height, 0)])
            x = biline = None
            for res, cur_ws in zip(self.block_resolutions, block_ws):
                x, biline = getattr(self, f'b{res}')(x, biline, cur_ws, precision=precision, lines=lines)
                if biline is not None:
                    levels[self.feature_resolutions.index(res)].append(biline)
        row_lines, col_lines = [], []
        for parts in levels:
            level = (torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]) * np.sqrt(0.5)
            level = level.reshape(ws.shape[0], self.biline_channels, total, self.rank)
            row_lines.append(level[:, :, :height])
            col_lines.append(level[:, :, height:])
        return row_lines, col_lines

    def pixel_stage(self, ws, row_lines, col_lines, precision='fp32'):
        """Image [N, img_channels, H, W] from the bi-lines of H rows and W columns (as from line_stage):
        by the fused kernel of its device where it applies (float32 without gradients: rendering),
        else layer by layer (pixel_stage_ref)."""
        op = fused_pixel_op()
        if op is None or not self._fused_pixels_apply(op, ws, precision):
            return self.pixel_stage_ref(ws, row_lines, col_lines, precision)
        rows = torch.stack(row_lines).permute(0, 1, 3, 2, 4) # [L, N, H, C, R]
        cols = torch.stack(col_lines).permute(0, 1, 4, 2, 3) # [L, N, R, C, W]
        with torch.no_grad():
            return op.pixels(self.pixel_program(op, ws), rows.contiguous(), cols.contiguous(), self.img_channels)

    def _fused_pixels_apply(self, op, ws, precision):
        activations = [layer.activation for layer in self.modules() if isinstance(layer, (FullyConnectedLayer, SynthesisLayer))]
        needs_grad = torch.is_grad_enabled() and (ws.requires_grad or any(p.requires_grad for p in self.parameters()))
        return precision == 'fp32' and not needs_grad and set(activations) <= {'linear', 'lrelu'} and op.kernel_available(ws.device)

    def pixel_program(self, op, ws):
        """The pixel stage as a program of the fused kernel (op.Program, op = fused_pixel_op()) for
        the samples of ws: the levels' outer products and decoders, the RGB projection and the two
        final blocks, whose modulated weights are prepared here, once per image."""
        F, T1, T2, T3, IMAGE = 0, 1, 2, 3, op.IMAGE_BUFFER
        program = op.Program()
        def chain(layers, buffer): # buffer = layers(buffer), through the temporaries.
            assert len(layers) >= 2
            src = buffer
            for k, layer in enumerate(layers):
                dst = buffer if k == len(layers) - 1 else (T1, T2)[k % 2]
                _fc_step(program, layer, src, dst)
                src = dst
        program.outer(0, F)
        for level, res in enumerate(self.feature_resolutions[1:], start=1):
            chain(getattr(self, f'decoder_{res}'), F)
            program.outer(level, F, accumulate=True)
        chain(self.decoder_last, F)
        _fc_step(program, self.decoder_img, F, IMAGE)
        w = ws[:, -1].to(torch.float32) # Both blocks take the last w, in every layer.
        x = F
        for block in [self.block0, self.block1]:
            hidden, out = [buffer for buffer in (T1, T2, T3) if buffer != x][:2]
            _modulated_step(program, block.fc0, w, x, hidden)
            _modulated_step(program, block.fc1, w, hidden, out)
            if block.emits_res:
                _modulated_step(program, block.tores, w, out, IMAGE)
            x = out
        return program

    def pixel_stage_ref(self, ws, row_lines, col_lines, precision='fp32'):
        """pixel_stage() layer by layer in PyTorch, in chunks of rows: the reference, and the path that trains."""
        n, h, w = ws.shape[0], row_lines[0].shape[2], col_lines[0].shape[2]
        chunk_rows = max(self.pixel_chunk // max(n * w, 1), 1)
        img = torch.empty([n, self.img_channels, h, w], device=ws.device) # Filled chunk by chunk: no second full-size copy.
        for i in range(0, h, chunk_rows):
            rows = [r[:, :, i : i + chunk_rows] for r in row_lines]
            img[:, :, i : i + chunk_rows] = self._pixels(ws, rows, col_lines, precision).reshape(n, self.img_channels, -1, w)
        return img

    def _pixels(self, ws, row_lines, col_lines, precision):
        """Pixels [N, img_channels, h * w] of the h rows by w columns given."""
        n = ws.shape[0]
        dtype = layer_dtype(precision, use_fp16=False)
        feature = None
        for res, rows, cols in zip(self.feature_resolutions, row_lines, col_lines):
            outer = torch.matmul(rows, cols.transpose(2, 3)).reshape(n, self.biline_channels, -1).to(dtype) # Sum over rank.
            feature = outer if feature is None else getattr(self, f'decoder_{res}')(feature) + outer
        feature = self.decoder_last(feature)
        img = self.decoder_img(feature).to(torch.float32)
        last_ws = ws[:, -1:, :].to(torch.float32).repeat(1, 3, 1)
        feature, img = self.block0(feature, img, last_ws, precision=precision)
        feature, img = self.block1(feature, img, last_ws, precision=precision)
        return img

    def forward(self, ws, rows=None, cols=None, precision='fp32', noise_mode=None, force_fp32=False, update_emas=False):
        """Image [N, img_channels, len(rows), len(cols)] at row coordinates `rows` and column
        coordinates `cols` (1-D; default: the lines of the first block's `coords` buffer, the
        training grid). noise_mode and update_emas are accepted for compatibility with StyleGAN
        calls; the network has no noise inputs."""
        _ = noise_mode, update_emas
        if force_fp32:
            precision = 'fp32'
        if rows is None or cols is None:
            # The grid of the first block's `coords` buffer: the training grid, unless code written
            # for the official release has replaced the buffer, as its gen_images.py --scale does.
            # This project's renders always pass their lines and never touch the buffer.
            coords = getattr(self, f'b{self.block_resolutions[0]}').input.coords
            rows = coords[0, :, 0, 0] if rows is None else rows
            cols = coords[0, :, 1, 0] if cols is None else cols
        row_lines, col_lines = self.line_stage(ws, rows, cols, precision=precision)
        return self.pixel_stage(ws, row_lines, col_lines, precision=precision)

    def extra_repr(self):
        return (f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, '
            f'img_channels={self.img_channels:d}, num_fp16_res={self.num_fp16_res:d}, rank={self.rank:d}')

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(generator.MappedGenerator):
    """CREPS generator: the StyleGAN2 mapping network and the bi-line synthesis network."""
    mapping_class = MappingNetwork
    synthesis_class = SynthesisNetwork

#----------------------------------------------------------------------------
