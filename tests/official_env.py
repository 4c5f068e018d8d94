"""The environment of an official codebase, in a fresh process, for pickles crossing between it and us.

make_env(root, codebase) writes under `root` what a checkout of NVIDIA's StyleGAN3
('stylegan3') or of the official CREPS release ('creps') offers a pickle:
- dnnlib and the torch_utils modules those codebases share with this project
  (persistence.SHARED_MODULES), copied from this project;
- a torch_utils/persistence.py of its own (ENV_PERSISTENCE): the pickle format as the
  official loaders implement it, written here independently, knowing nothing of
  carried modules;
- a `training` package whose modules are theirs, not ours: decoys that fail when
  imported, and for 'creps' a training/networks_creps.py shaped as the official one
  (OFFICIAL_CREPS_SRC), whose SynthesisInput is a plain, non-persistent class.
run_in_env(root, script) runs `script` there with only `root` and the installed
packages importable, and fails the test with its output if it fails.
import_official_creps(folder) imports OFFICIAL_CREPS_SRC in this process.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

#----------------------------------------------------------------------------

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Public names the official modules define (identical in NVIDIA's StyleGAN3 and in the official
# CREPS release): an embedded source may call only these on the shared modules.
OFFICIAL_NAMES = {
    'torch_utils.misc': {'InfiniteSampler', 'assert_shape', 'check_ddp_consistency', 'constant', 'copy_params_and_buffers',
        'ddp_sync', 'named_params_and_buffers', 'params_and_buffers', 'print_module_summary', 'profiled_function',
        'suppress_tracer_warnings'},
    'torch_utils.persistence': {'persistent_class', 'is_persistent', 'import_hook'},
    'torch_utils.ops.bias_act': {'activation_funcs', 'bias_act'},
    'torch_utils.ops.upfirdn2d': {'downsample2d', 'filter2d', 'setup_filter', 'upfirdn2d', 'upsample2d'},
    'torch_utils.ops.conv2d_resample': {'conv2d_resample'},
    'torch_utils.ops.conv2d_gradfix': {'conv2d', 'conv_transpose2d', 'enabled', 'no_weight_gradients', 'weight_gradients_disabled'},
    'torch_utils.ops.filtered_lrelu': {'filtered_lrelu'},
    'torch_utils.ops.grid_sample_gradfix': {'enabled', 'grid_sample'},
    'torch_utils.ops.fma': {'fma'},
}

#----------------------------------------------------------------------------

ENV_PERSISTENCE = '''
"""The pickle format of NVIDIA's releases, as their loaders implement it."""
import copy, inspect, sys, types, uuid
import dnnlib

_persistent = set()
_module_to_src = dict()
_src_to_module = dict()

def persistent_class(orig_class):
    if orig_class in _persistent:
        return orig_class
    module = sys.modules[orig_class.__module__]
    if module not in _module_to_src:
        _module_to_src[module] = inspect.getsource(module)
        _src_to_module[_module_to_src[module]] = module
    module_src = _module_to_src[module]

    class Decorator(orig_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)
        @property
        def init_kwargs(self):
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))
        def __reduce__(self):
            meta = dict(type='class', version=6, module_src=module_src, class_name=orig_class.__name__, state=self.__getstate__())
            return (_reconstruct_persistent_obj, (meta,))

    Decorator.__name__, Decorator.__qualname__, Decorator.__module__ = orig_class.__name__, orig_class.__qualname__, orig_class.__module__
    _persistent.add(Decorator)
    return Decorator

def is_persistent(obj):
    return (obj if isinstance(obj, type) else type(obj)) in _persistent

def import_hook(hook):
    raise NotImplementedError

def _reconstruct_persistent_obj(meta):
    assert meta['type'] == 'class' and meta['version'] == 6
    module = _src_to_module.get(meta['module_src'])
    if module is None:
        module = types.ModuleType('_imported_module_' + uuid.uuid4().hex)
        sys.modules[module.__name__] = module
        _module_to_src[module] = meta['module_src']
        _src_to_module[meta['module_src']] = module
        exec(meta['module_src'], module.__dict__)
    cls = persistent_class(module.__dict__[meta['class_name']])
    obj = cls.__new__(cls)
    obj.__setstate__(dnnlib.EasyDict(meta['state']))
    return obj
'''

#----------------------------------------------------------------------------
# The official CREPS network module, shaped for pickling as the release's training/networks_creps.py
# is: the same class names, init arguments, attributes and tensor names, SynthesisInput a plain class,
# and the official forward pass (bi-lines [N, C, L, 2 * rank] of the `coords` buffer, their outer
# product, the per-pixel MLPs on [N * H * W, C], the last two blocks on [N, C, H, W]). Written here
# from the release's description, computing in float32 (the release's fp16 layers under force_fp32).

OFFICIAL_CREPS_SRC = '''
import numpy as np
import torch
from torch_utils import misc, persistence
from torch_utils.ops import bias_act

def normalize_2nd_moment(x):
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()

def modulated_fc(x, weight, styles, demodulate=True):
    w = weight.unsqueeze(0) * styles.unsqueeze(1)
    if demodulate:
        w = w * (w.square().sum(dim=2) + 1e-8).rsqrt().unsqueeze(2)
    return torch.einsum('nihw,noi->nohw', x, w)

@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, bias=True, weight_norm=True, activation='linear', lr_multiplier=1, bias_init=0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / (np.sqrt(in_features) if weight_norm else 1)
        self.bias_gain = lr_multiplier
    def forward(self, x):
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
            activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, num_layers, w_avg_beta
        embed = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        hidden = w_dim if layer_features is None else layer_features
        widths = [z_dim + embed] + [hidden] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed)
        for i in range(num_layers):
            setattr(self, f'fc{i}', FullyConnectedLayer(widths[i], widths[i + 1], activation=activation, lr_multiplier=lr_multiplier))
        self.register_buffer('w_avg', torch.zeros([w_dim]))
    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        parts = ([normalize_2nd_moment(z)] if self.z_dim > 0 else []) + ([normalize_2nd_moment(self.embed(c))] if self.c_dim > 0 else [])
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f'fc{i}')(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        return x if truncation_psi == 1 else self.w_avg.lerp(x, truncation_psi)

@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, activation='lrelu', fc_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim, self.activation, self.fc_clamp = in_channels, out_channels, w_dim, activation, fc_clamp
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
    def forward(self, x, w, noise_mode='random', gain=1):
        x = modulated_fc(x, self.weight, self.affine(w))
        clamp = None if self.fc_clamp is None else self.fc_clamp * gain
        return bias_act.bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

class SynthesisInput(torch.nn.Module): # Not persistent, as in the release.
    def __init__(self, channels, w_dim, resolution, rank=8, bandwidth=10):
        super().__init__()
        self.channels, self.w_dim, self.resolution, self.rank, self.bandwidth = channels, w_dim, resolution, rank, bandwidth
        self.register_buffer('freqs', torch.randn([1, channels // 2 * rank]) * bandwidth)
        self.register_buffer('coords', torch.linspace(0, 1, resolution).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1))
        self.weight = torch.nn.Parameter(torch.randn([1, channels, 1, 2 * rank]))
        self.affine = FullyConnectedLayer(w_dim, channels * 2 * rank, bias_init=1)
    def forward(self, w):
        n = w.shape[0]
        x = (self.coords.repeat(n, 1, 1, 1) @ self.freqs).reshape(n, -1, 2, self.channels // 2, self.rank)
        x = (x.permute(0, 3, 1, 2, 4) * (np.pi * 2)).flatten(3)
        x = torch.sin(torch.cat([x, x + np.pi / 2], dim=1))
        return x * (self.weight * self.affine(w).reshape(n, self.channels, 1, -1)) / np.sqrt(self.channels)

@persistence.persistent_class
class ToResLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, fc_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim, self.fc_clamp = in_channels, out_channels, w_dim, fc_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels)
    def forward(self, x, w):
        x = modulated_fc(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act.bias_act(x, self.bias, clamp=self.fc_clamp)

@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, is_last, res_channels=None, architecture='skip',
            fc_clamp=256, use_fp16=False, fp16_channels_last=False, **layer_kwargs):
        super().__init__()
        self.in_channels, self.w_dim, self.resolution, self.res_channels, self.is_last = in_channels, w_dim, resolution, res_channels, is_last
        self.architecture = architecture if in_channels > 1 else 'orig'
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.num_fc = self.num_tores = 0
        if in_channels == 1:
            self.input = SynthesisInput(out_channels, w_dim=w_dim, resolution=resolution)
        else:
            self.fc0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, fc_clamp=fc_clamp, channels_last=self.channels_last, **layer_kwargs)
            self.num_fc += 1
        self.fc1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, fc_clamp=fc_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_fc += 1
        if is_last or architecture == 'skip':
            self.tores = ToResLayer(out_channels, res_channels, w_dim=w_dim, fc_clamp=fc_clamp, channels_last=self.channels_last)
            self.num_tores += 1
    def forward(self, x, res, ws, force_fp32=False, update_emas=False, **layer_kwargs):
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 1:
            x = self.input(next(w_iter))
        else:
            x = self.fc0(x, next(w_iter), **layer_kwargs)
        x = self.fc1(x, next(w_iter), **layer_kwargs)
        if self.is_last or self.architecture == 'skip':
            y = self.tores(x, next(w_iter))
            res = y if res is None else res.add(y)
        return x, res

def _decoder(channels):
    widths = [channels, channels * 2, channels * 4, channels * 2, channels]
    return torch.nn.Sequential(*[FullyConnectedLayer(a, b, activation='lrelu') for a, b in zip(widths[:-1], widths[1:])])

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, biline_channels=32, channel_base=32768, channel_max=512,
            num_fp16_res=0, **block_kwargs):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels, self.biline_channels = w_dim, img_resolution, img_channels, biline_channels
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 1
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 1, channels[res], w_dim=w_dim, resolution=img_resolution,
                res_channels=biline_channels, is_last=is_last, use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_fc + (block.num_tores if is_last else 0)
            setattr(self, f'b{res}', block)
        for res in self.block_resolutions[1:]:
            setattr(self, f'decoder_{res}', _decoder(biline_channels))
        self.decoder_last = _decoder(biline_channels)
        self.decoder_img = FullyConnectedLayer(biline_channels, img_channels)
        self.block0 = SynthesisBlock(biline_channels, biline_channels * 4, w_dim=w_dim, resolution=img_resolution,
            res_channels=img_channels, is_last=False, use_fp16=True, fc_clamp=256)
        self.block1 = SynthesisBlock(biline_channels * 4, biline_channels * 2, w_dim=w_dim, resolution=img_resolution,
            res_channels=img_channels, is_last=True, use_fp16=True, fc_clamp=256)
    def forward(self, ws, **block_kwargs):
        x = biline = feature = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            x, biline = block(x, biline, ws.narrow(1, w_idx, (res == 4) + block.num_fc + block.num_tores), **block_kwargs)
            w_idx += block.num_fc
            if biline is not None:
                rows, cols = (biline * np.sqrt(0.5)).chunk(2, dim=-1)
                outer = rows @ cols.transpose(-2, -1)
                n, c, h, w = outer.shape
                outer = outer.permute(0, 2, 3, 1).reshape(-1, c)
                feature = outer if feature is None else getattr(self, f'decoder_{res}')(feature) + outer
        feature = self.decoder_last(feature)
        img = self.decoder_img(feature).reshape(n, h, w, -1).permute(0, 3, 1, 2)
        feature = feature.reshape(n, h, w, -1).permute(0, 3, 1, 2)
        last = ws[:, -1:].repeat(1, 3, 1)
        feature, img = self.block0(feature, img, last, **block_kwargs)
        feature, img = self.block1(feature, img, last, **block_kwargs)
        return img

@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, c_dim, w_dim, img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
'''

def import_official_creps(folder):
    """OFFICIAL_CREPS_SRC as a module of this process (written to a file in `folder`, as persistent
    classes need), with this project's torch_utils."""
    name = f'official_networks_creps_{uuid.uuid4().hex[:8]}'
    path = os.path.join(folder, f'{name}.py')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(OFFICIAL_CREPS_SRC)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

def official_coords(rows, cols):
    """The `coords` buffer [1, L, 2, 1] through which the official code sets the lines it renders
    (its gen_images.py --scale writes linspace(0, 1, int(res * scale)) to both sides). Lines of
    different lengths are padded to the longer one; crop the image to [len(rows), len(cols)]."""
    import torch # pylint: disable=import-outside-toplevel
    length = max(len(rows), len(cols))
    pad = lambda line: torch.cat([line, line[-1:].repeat(length - len(line))])
    return torch.stack([pad(rows), pad(cols)], dim=1).reshape(1, length, 2, 1)

_DECOY = 'raise ImportError("{name}: the official codebase\'s own module, which a pickle from this project must not need")\n'

#----------------------------------------------------------------------------

def make_env(root, codebase):
    """Write the official codebase's environment (see the module docstring) under `root`; returns `root`."""
    assert codebase in ('stylegan3', 'creps')
    os.makedirs(root, exist_ok=True)
    for name in ('dnnlib/__init__.py', 'dnnlib/util.py', 'torch_utils/__init__.py', 'torch_utils/misc.py',
            'torch_utils/training_stats.py', 'torch_utils/custom_ops.py'):
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        shutil.copy(os.path.join(PROJECT_ROOT, name), os.path.join(root, name))
    shutil.copytree(os.path.join(PROJECT_ROOT, 'torch_utils', 'ops'), os.path.join(root, 'torch_utils', 'ops'),
        ignore=shutil.ignore_patterns('__pycache__'))
    with open(os.path.join(root, 'torch_utils', 'persistence.py'), 'w', encoding='utf-8') as f:
        f.write(ENV_PERSISTENCE)
    os.makedirs(os.path.join(root, 'training'))
    open(os.path.join(root, 'training', '__init__.py'), 'w', encoding='utf-8').close()
    modules = ['networks_stylegan2', 'networks_stylegan3', 'augment', 'loss', 'dataset', 'training_loop', 'generator']
    for name in modules + (['networks_creps'] if codebase == 'stylegan3' else []):
        with open(os.path.join(root, 'training', f'{name}.py'), 'w', encoding='utf-8') as f:
            f.write(_DECOY.format(name=f'training.{name}'))
    if codebase == 'creps':
        with open(os.path.join(root, 'training', 'networks_creps.py'), 'w', encoding='utf-8') as f:
            f.write(OFFICIAL_CREPS_SRC)
    with open(os.path.join(root, 'official_env_check.py'), 'w', encoding='utf-8') as f:
        f.write(textwrap.dedent(f'''
            import importlib, os, sys
            import torch_utils
            assert os.path.dirname(os.path.dirname(torch_utils.__file__)) == {str(root)!r}, torch_utils.__file__
            for name in ('torch_utils.render', 'torch_utils.cli', 'dnnlib.safe_numpy'):
                try:
                    importlib.import_module(name)
                except ImportError:
                    continue
                raise AssertionError(name + ' is importable in the official environment')
            '''))
    return root

def run_in_env(root, script, timeout=600):
    """Run the Python code `script` in a fresh process in the environment at `root`; returns its stdout."""
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    code = 'import official_env_check\n' + textwrap.dedent(script)
    result = subprocess.run([sys.executable, '-c', code], cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f'the script failed in the official environment:\n{result.stdout}\n{result.stderr}'
    return result.stdout

#----------------------------------------------------------------------------
