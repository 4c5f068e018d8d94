"""StyleGAN3 generator ("Alias-Free Generative Adversarial Networks",
Karras et al. 2021), configs T (translation equivariant) and R (rotation
equivariant as well: 1x1 convolutions and radially symmetric filters).

Class names, constructor arguments, defaults, and parameter and buffer names
and shapes are NVIDIA's, so that their published pickles load into these
classes and give the same pixels. The signal processing view: every layer
holds a continuous signal, sampled at `sampling_rate` samples per unit on a
canvas of `size` pixels (the image plus a margin), band-limited below
`cutoff`; the nonlinearity runs at a higher rate between a low-pass
upsampling and a low-pass downsampling filter (see filtered_lrelu).
"""

import numpy as np
import scipy.signal
import scipy.special
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import filtered_lrelu
from training import generator
from training.networks_creps import fully_connected, track_average

#----------------------------------------------------------------------------

@misc.profiled_function
def modulated_conv2d(
    x,                  # Input: [batch_size, in_channels, in_height, in_width].
    w,                  # Weight: [out_channels, in_channels, kernel_height, kernel_width].
    s,                  # Styles: [batch_size, in_channels].
    demodulate  = True, # Normalize each output channel's weights to unit norm?
    padding     = 0,    # Padding: an int or [padH, padW].
    input_gain  = None, # Scale of the input channels: None, [], [in_channels] or [batch_size, in_channels].
):
    with misc.suppress_tracer_warnings(): # The batch size is a constant of a traced graph.
        batch_size = int(x.shape[0])
    out_channels, in_channels, kh, kw = w.shape
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    misc.assert_shape(s, [batch_size, in_channels])

    # Bring the weights and styles to unit RMS first, which keeps float16 in range.
    if demodulate:
        w = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
        s = s * s.square().mean().rsqrt()

    # One weight tensor per sample: [NOIkk].
    w = w.unsqueeze(0) * s.reshape(batch_size, 1, in_channels, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        input_gain = input_gain.expand(batch_size, in_channels)
        w = w * input_gain.reshape(batch_size, 1, in_channels, 1, 1)

    # All samples at once, as one grouped convolution.
    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    w = w.reshape(batch_size * out_channels, in_channels, kh, kw)
    # Through conv2d_gradfix (the values of torch.nn.functional.conv2d), which
    # honours no_weight_gradients(). The per-sample weights depend on the styles,
    # so inside that block the styles get no gradient through them either.
    x = conv2d_gradfix.conv2d(x, w.to(x.dtype), padding=padding, groups=batch_size)
    return x.reshape(batch_size, out_channels, *x.shape[2:])

#----------------------------------------------------------------------------

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        activation      = 'linear', # Activation function: 'relu', 'lrelu', etc.
        bias            = True,     # Apply an additive bias before the activation?
        lr_multiplier   = 1,        # Learning rate multiplier.
        weight_init     = 1,        # Initial standard deviation of the weights.
        bias_init       = 0,        # Initial bias: a scalar or [out_features].
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        bias_init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
        self.bias = torch.nn.Parameter(torch.from_numpy(bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        return fully_connected(x, self.weight, self.bias, self.weight_gain, self.bias_gain, self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self,
        z_dim,                  # Input latent (Z) dimensionality.
        c_dim,                  # Conditioning label (C) dimensionality, 0 = no labels.
        w_dim,                  # Intermediate latent (W) dimensionality.
        num_ws,                 # Number of intermediate latents to output.
        num_layers      = 2,    # Number of mapping layers.
        lr_multiplier   = 0.01, # Learning rate multiplier for the mapping layers.
        w_avg_beta      = 0.998,# Decay of the moving average of W during training.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        # The label embedding (no learning rate multiplier) and fc0, fc1, ...
        self.embed = FullyConnectedLayer(self.c_dim, self.w_dim) if self.c_dim > 0 else None
        features = [self.z_dim + (self.w_dim if self.c_dim > 0 else 0)] + [self.w_dim] * self.num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation='lrelu', lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        misc.assert_shape(z, [None, self.z_dim])
        if truncation_cutoff is None:
            truncation_cutoff = self.num_ws

        # Normalize z and the embedded label to unit second moment, and concatenate them.
        x = z.to(torch.float32)
        x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            y = self.embed(c.to(torch.float32))
            y = y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt()
            x = torch.cat([x, y], dim=1)

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if update_emas:
            track_average(self.w_avg, x.detach().mean(dim=0), self.w_avg_beta)

        # One copy of w per synthesis input, the first truncation_cutoff of them truncated.
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws:d}'

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisInput(torch.nn.Module):
    def __init__(self,
        w_dim,          # Intermediate latent (W) dimensionality.
        channels,       # Number of output channels.
        size,           # Output size in pixels: an int or [width, height].
        sampling_rate,  # Output sampling rate (pixels per unit).
        bandwidth,      # Output bandwidth (the frequencies' radius).
    ):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2])
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        # Frequencies spread over the disc of radius bandwidth, random phases.
        freqs = torch.randn([self.channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([self.channels]) - 0.5

        self.weight = torch.nn.Parameter(torch.randn([self.channels, self.channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0]) # Rotation (cos, sin) and translation (x, y).
        self.register_buffer('transform', torch.eye(3, 3)) # Inverse of a user transform of the image (gen_images' --translate, --rotate).
        self.register_buffer('freqs', freqs)    # [channels, 2]
        self.register_buffer('phases', phases)  # [channels]

    def forward(self, w):
        batch_size = w.shape[0]

        # The rotation and translation from w, normalized by the rotation's
        # magnitude, both inverse (they map image points to signal points).
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        eye = torch.eye(3, device=w.device).unsqueeze(0).repeat([batch_size, 1, 1])
        m_r = eye.clone()
        m_r[:, 0, 0] = t[:, 0]
        m_r[:, 0, 1] = -t[:, 1]
        m_r[:, 1, 0] = t[:, 1]
        m_r[:, 1, 1] = t[:, 0]
        m_t = eye.clone()
        m_t[:, 0, 2] = -t[:, 2]
        m_t[:, 1, 2] = -t[:, 3]
        transforms = m_r @ m_t @ self.transform.unsqueeze(0) # [batch, 3, 3]

        # Transformed features: sin(2 pi (f . (A p + b) + phase)).
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2] # [batch, channel, xy]

        # Fade out the frequencies a user transform brings beyond the bandwidth, to zero at Nyquist.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        # Pixel centers, in units, of a canvas of size pixels at sampling_rate.
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * self.size[0] / self.sampling_rate
        theta[1, 1] = 0.5 * self.size[1] / self.sampling_rate
        grid = torch.nn.functional.affine_grid(theta.unsqueeze(0), [1, 1, self.size[1], self.size[0]], align_corners=False) # [1, H, W, xy]

        # Products [1, H, W, 1, xy] @ [batch, 1, 1, xy, channel], in NVIDIA's order of operations.
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3) # [batch, H, W, channel]
        x = x + phases.reshape(batch_size, 1, 1, -1)
        x = torch.sin(x * (np.pi * 2)) * amplitudes.reshape(batch_size, 1, 1, -1)

        # Learned mixing of the features.
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        x = x.permute(0, 3, 1, 2)
        misc.assert_shape(x, [batch_size, self.channels, int(self.size[1]), int(self.size[0])])
        return x

    def extra_repr(self):
        return '\n'.join([
            f'w_dim={self.w_dim:d}, channels={self.channels:d}, size={[int(v) for v in self.size]},',
            f'sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}'])

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    def __init__(self,
        w_dim,                          # Intermediate latent (W) dimensionality.
        is_torgb,                       # Is this the last layer, to RGB?
        is_critically_sampled,          # Is the output cutoff at Nyquist (the last layers)?
        use_fp16,                       # Run in float16 (on CUDA only)?

        # Input and output signals.
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        in_size,                        # Input size in pixels: an int or [width, height].
        out_size,                       # Output size in pixels: an int or [width, height].
        in_sampling_rate,               # Input sampling rate (s).
        out_sampling_rate,              # Output sampling rate (s).
        in_cutoff,                      # Input cutoff frequency (f_c).
        out_cutoff,                     # Output cutoff frequency (f_c).
        in_half_width,                  # Input transition band half-width (f_h).
        out_half_width,                 # Output transition band half-width (f_h).

        # Hyperparameters.
        conv_kernel         = 3,        # Convolution kernel size; 1 for the ToRGB layer.
        filter_size         = 6,        # Low-pass filter taps per sample of the lower rate, when resampling.
        lrelu_upsampling    = 2,        # Sampling rate of the leaky ReLU relative to the higher of in and out; 1 for ToRGB.
        use_radial_filters  = False,    # Radially symmetric downsampling filter (config R)? Not for critically sampled layers.
        conv_clamp          = 256,      # Clamp the output to [-X, +X], None = no clamping.
        magnitude_ema_beta  = 0.999,    # Decay of the moving average of the input's mean square.
    ):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(self.w_dim, self.in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([self.out_channels, self.in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([self.out_channels]))
        self.register_buffer('magnitude_ema', torch.ones([]))

        # Upsampling from the input rate to the leaky ReLU's rate, keeping the input band.
        self.up_factor = int(np.rint(self.tmp_sampling_rate / self.in_sampling_rate))
        assert self.in_sampling_rate * self.up_factor == self.tmp_sampling_rate
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not self.is_torgb else 1
        self.register_buffer('up_filter', self.design_lowpass_filter(
            numtaps=self.up_taps, cutoff=self.in_cutoff, width=self.in_half_width * 2, fs=self.tmp_sampling_rate))

        # Downsampling from the leaky ReLU's rate to the output rate, keeping the output band.
        self.down_factor = int(np.rint(self.tmp_sampling_rate / self.out_sampling_rate))
        assert self.out_sampling_rate * self.down_factor == self.tmp_sampling_rate
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not self.is_torgb else 1
        self.down_radial = use_radial_filters and not self.is_critically_sampled
        self.register_buffer('down_filter', self.design_lowpass_filter(
            numtaps=self.down_taps, cutoff=self.out_cutoff, width=self.out_half_width * 2, fs=self.tmp_sampling_rate, radial=self.down_radial))

        # Padding that yields out_size, with the samples placed symmetrically
        # about the canvas' center (paper, Appendix C.3).
        pad_total = (self.out_size - 1) * self.down_factor + 1 # Size wanted before downsampling.
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor # Size after the convolution and upsampling.
        pad_total += self.up_taps + self.down_taps - 2 # What the two filters take away.
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(self, x, w, noise_mode='random', force_fp32=False, update_emas=False):
        assert noise_mode in ['random', 'const', 'none'] # No noise in StyleGAN3; accepted for a common API.
        misc.assert_shape(x, [None, self.in_channels, int(self.in_size[1]), int(self.in_size[0])])
        misc.assert_shape(w, [x.shape[0], self.w_dim])

        # Normalize the input by the running RMS of its magnitude.
        if update_emas:
            track_average(self.magnitude_ema, x.detach().to(torch.float32).square().mean(), self.magnitude_ema_beta)
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * (self.conv_kernel ** 2)))

        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and x.device.type == 'cuda') else torch.float32
        x = modulated_conv2d(x=x.to(dtype), w=self.weight, s=styles, padding=self.conv_kernel - 1,
            demodulate=(not self.is_torgb), input_gain=input_gain)

        # Bias, upsampling, leaky ReLU (linear for ToRGB), clamping, downsampling.
        gain = 1 if self.is_torgb else np.sqrt(2)
        slope = 1 if self.is_torgb else 0.2
        x = filtered_lrelu.filtered_lrelu(x=x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype),
            up=self.up_factor, down=self.down_factor, padding=self.padding, gain=gain, slope=slope, clamp=self.conv_clamp)

        misc.assert_shape(x, [None, self.out_channels, int(self.out_size[1]), int(self.out_size[0])])
        assert x.dtype == dtype
        return x

    @staticmethod
    def design_lowpass_filter(numtaps, cutoff, width, fs, radial=False):
        """A Kaiser-windowed low-pass filter: None (identity) for one tap,
        separable [numtaps] from firwin, or radial [numtaps, numtaps] from the jinc."""
        assert numtaps >= 1
        if numtaps == 1:
            return None
        if not radial:
            f = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
            return torch.as_tensor(f, dtype=torch.float32)

        # jinc(r) = J1(2 pi fc r) / (pi r), the ideal radial low-pass, times a separable Kaiser window.
        # (numtaps is even here, so r is never 0.)
        x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
        r = np.hypot(*np.meshgrid(x, x))
        f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
        beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
        window = np.kaiser(numtaps, beta)
        f = f * np.outer(window, window)
        f = f / np.sum(f)
        return torch.as_tensor(f, dtype=torch.float32)

    def extra_repr(self):
        return '\n'.join([
            f'w_dim={self.w_dim:d}, is_torgb={self.is_torgb},',
            f'is_critically_sampled={self.is_critically_sampled}, use_fp16={self.use_fp16},',
            f'in_sampling_rate={self.in_sampling_rate:g}, out_sampling_rate={self.out_sampling_rate:g},',
            f'in_cutoff={self.in_cutoff:g}, out_cutoff={self.out_cutoff:g},',
            f'in_half_width={self.in_half_width:g}, out_half_width={self.out_half_width:g},',
            f'in_size={[int(v) for v in self.in_size]}, out_size={[int(v) for v in self.out_size]},',
            f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}'])

#----------------------------------------------------------------------------

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self,
        w_dim,                          # Intermediate latent (W) dimensionality.
        img_resolution,                 # Output image resolution.
        img_channels,                   # Number of color channels.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_layers          = 14,       # Number of layers, excluding the Fourier features and ToRGB.
        num_critical        = 2,        # Number of critically sampled layers at the end.
        first_cutoff        = 2,        # Cutoff frequency of the first layer (f_{c,0}).
        first_stopband      = 2**2.1,   # Minimum stopband of the first layer (f_{t,0}).
        last_stopband_rel   = 2**0.3,   # Minimum stopband of the last layer, relative to its cutoff.
        margin_size         = 10,       # Pixels of margin on each side of the image.
        output_scale        = 0.25,     # Scale of the output image.
        num_fp16_res        = 4,        # Use FP16 for the N highest resolutions (on CUDA only).
        **layer_kwargs,                 # Arguments for SynthesisLayer.
    ):
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        # Cutoffs and minimum stopbands grow geometrically up to the last
        # num_critical layers, which stay at Nyquist of the image.
        last_cutoff = self.img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(self.num_layers + 1) / (self.num_layers - self.num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents

        # Sampling rates: the power of two that holds the stopband, at most the image's.
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, self.img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + self.margin_size * 2
        sizes[-2:] = self.img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = self.img_channels

        self.input = SynthesisInput(w_dim=self.w_dim, channels=int(channels[0]), size=int(sizes[0]),
            sampling_rate=sampling_rates[0], bandwidth=cutoffs[0])
        self.layer_names = []
        for idx in range(self.num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(w_dim=self.w_dim,
                is_torgb=(idx == self.num_layers),
                is_critically_sampled=(idx >= self.num_layers - self.num_critical),
                use_fp16=(sampling_rates[idx] * (2 ** self.num_fp16_res) > self.img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx],
                in_half_width=half_widths[prev], out_half_width=half_widths[idx],
                **layer_kwargs)
            name = f'L{idx}_{layer.out_size[0]}_{layer.out_channels}'
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, **layer_kwargs)
        if self.output_scale != 1:
            x = x * self.output_scale
        misc.assert_shape(x, [None, self.img_channels, self.img_resolution, self.img_resolution])
        return x.to(torch.float32)

    def extra_repr(self):
        return '\n'.join([
            f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d},',
            f'img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d},',
            f'num_layers={self.num_layers:d}, num_critical={self.num_critical:d},',
            f'margin_size={self.margin_size:d}, num_fp16_res={self.num_fp16_res:d}'])

#----------------------------------------------------------------------------

@persistence.persistent_class
class Generator(generator.MappedGenerator):
    """StyleGAN3 generator: its own mapping network and the alias-free synthesis network."""
    mapping_class = MappingNetwork
    synthesis_class = SynthesisNetwork

#----------------------------------------------------------------------------
