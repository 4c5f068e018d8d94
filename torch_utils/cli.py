"""Option types, checks and helpers shared by the command-line scripts (click).

Each type and check turns a malformed value into click's one-line usage error
naming the option, never a traceback.
"""

import contextlib
import math
import os
import re

import click
import numpy as np
import psutil
import torch

from torch_utils import render

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) # For paths in help texts.

#----------------------------------------------------------------------------

class IntRange(click.ParamType):
    """Comma-separated integers and inclusive ranges: '0,2,5-9' -> [0, 2, 5, 6, 7, 8, 9]."""
    name = 'list'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        result = []
        for part in str(value).split(','):
            m = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', part)
            if m is None:
                self.fail(f'{value!r} is not a list of non-negative integers and ranges such as 0,2,5-9', param, ctx)
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                self.fail(f'range {part.strip()!r} runs backwards', param, ctx)
            result.extend(range(lo, hi + 1))
        return result

class Size(click.ParamType):
    """Two positive integers: 'WxH' -> (W, H).

    what:       What the pair is, for the error message.
    example:    A valid value, for the error message.
    """
    def __init__(self, what='a size', example='1920x1080 (positive width x height)', name='WxH'):
        self.what = what
        self.example = example
        self.name = name

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and v >= 1 for v in value):
            return tuple(value) # Converted before (a list when it went through JSON).
        m = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', str(value))
        if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            self.fail(f'{value!r} is not {self.what} such as {self.example}', param, ctx)
        return int(m.group(1)), int(m.group(2))

class FloatTuple(click.ParamType):
    """A fixed number of comma-separated floats: 'a,b,c,d' -> (a, b, c, d)."""

    def __init__(self, count, example):
        self.count = count
        self.example = example
        self.name = ','.join(['F'] * count)

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(float(v) for v in str(value).split(','))
        except ValueError:
            parts = ()
        if len(parts) != self.count or not all(map(math.isfinite, parts)):
            self.fail(f'{value!r} is not {self.count} comma-separated numbers such as {self.example}', param, ctx)
        return parts

#----------------------------------------------------------------------------

def expand_path(_ctx, _param, value):
    """Click callback of path options: `~`, `~user` and $VARIABLES expanded, as a shell would
    have done had the path not followed '=' (--dest=~/x.zip reaches the script unexpanded).
    URLs are left as they are."""
    if value is None or '://' in value:
        return value
    return os.path.expanduser(os.path.expandvars(value))

def output_size(resolution, scale=1, size=None, viewport=None):
    """(width, height) of render.lines_for_viewport(resolution, viewport, scale, size), or a click
    error naming --scale or --viewport where the render would be less than one pixel wide or high."""
    if size is None:
        try:
            render.samples_for_scale(resolution, scale)
        except ValueError as err:
            raise click.BadParameter(f'{err}', param_hint='--scale') from None
    try:
        return render.viewport_size(resolution, viewport or (0, 1, 0, 1), scale=scale, size=size)
    except ValueError as err:
        raise click.BadParameter(f'{err}; widen it or raise --scale', param_hint='--viewport') from None

def check_output_memory(what, count, height, width, channels, available=None):
    """A click error, before anything renders, if `count` uint8 images of `height` x `width` x
    `channels` (which exist whole, to be encoded) do not fit in the memory available now."""
    need = count * height * width * channels
    available = psutil.virtual_memory().available if available is None else available
    if need > available:
        raise click.UsageError(f'{what}: {count} image(s) of {width}x{height} pixels need {format_bytes(need)} of memory, '
            f'and this machine has {format_bytes(available)} available; ask for fewer pixels (--scale, --size, --viewport, --batch)')

def format_bytes(n):
    """'9.31 TiB', '512.00 MiB', '12 B'."""
    units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
    k = min(int(math.log(max(n, 1), 1024)), len(units) - 1)
    return f'{n} B' if k == 0 else f'{n / 1024 ** k:.2f} {units[k]}'

def default_device():
    """'cuda' when a GPU is available, else 'cpu'."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'

def resolve_device(name):
    """torch.device for `name`, or a click error naming --device if it is unusable here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise click.BadParameter(f'{name!r} is not a device name such as cpu, cuda or cuda:1', param_hint='--device')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter(f'{name!r} requested but CUDA is not available on this machine; use --device=cpu', param_hint='--device')
    return device

@contextlib.contextmanager
def one_line_errors(*exception_types):
    """Report exceptions of `exception_types`, whose messages are whole one-line
    reports (naming the file or option), as click's one-line error, not a traceback."""
    try:
        yield
    except exception_types as err:
        raise click.ClickException(str(err)) from None

def resolve_precision(precision, device, default):
    """`precision`, or `default` when None, checked against the device (--precision)."""
    precision = precision or default
    if precision == 'fp16' and device.type != 'cuda':
        raise click.BadParameter('fp16 needs a CUDA device; use fp32 or bf16 on the CPU', param_hint='--precision')
    return precision

#----------------------------------------------------------------------------
# Latents and labels.

def seed_latents(G, seeds, device):
    """The latent of each seed, drawn as in NVIDIA's scripts so that seeds give the same images."""
    z = np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])
    return torch.from_numpy(z).to(device=device, dtype=torch.float32)

def describe_classes(c_dim, class_names):
    """'0=T-shirt/top, 1=Trouser, ...' for error messages, or '0 to 9' without names."""
    if class_names is None:
        return f'0 to {c_dim - 1}'
    return ', '.join(f'{i}={name}' for i, name in enumerate(class_names))

def _name_key(name):
    """What --class compares: letters and digits, lower case ('Ankle boot' = 'ankle-boot' = 'ankleboot')."""
    return re.sub(r'[^0-9a-z]', '', name.lower())

def class_index(value, c_dim, class_names=None):
    """--class `value` (an index, or a name of `class_names`) as an index in [0, c_dim)."""
    value = value.strip()
    if re.fullmatch(r'\d+', value):
        index = int(value)
        if index >= c_dim:
            raise click.BadParameter(f'class {index} is out of range: the network has classes {describe_classes(c_dim, class_names)}', param_hint='--class')
        return index
    matches = [i for i, name in enumerate(class_names or []) if _name_key(name) == _name_key(value)]
    if len(matches) != 1:
        what = 'names no class' if class_names is None else 'is not the name of one class'
        raise click.BadParameter(f'{value!r} is not a class index, and the network {what}; its classes: {describe_classes(c_dim, class_names)}', param_hint='--class')
    return matches[0]

def class_labels(G, value, batch_size, device, class_names=None):
    """One-hot labels [batch_size, c_dim] for --class `value` (index or name, None if not given),
    checked against the network's conditioning."""
    c = torch.zeros([batch_size, G.c_dim], device=device)
    if G.c_dim == 0:
        if value is not None:
            raise click.BadParameter('the network is unconditional; remove --class', param_hint='--class')
        return c
    if value is None:
        raise click.BadParameter(f'the network is conditional: choose a class with --class ({describe_classes(G.c_dim, class_names)})', param_hint='--class')
    c[:, class_index(str(value), G.c_dim, class_names)] = 1
    return c

#----------------------------------------------------------------------------

def network_option(default):
    """--network, defaulting to the shipped model `default` (legacy.DEFAULT_NETWORK)."""
    return click.option('--network', 'network_pkl', metavar='PATH|URL', default=default, callback=expand_path,
        help=f'Network pickle or .safetensors file, or URL  [default: the shipped Fashion-MNIST model, {os.path.relpath(default, REPO)}]')

def class_option(default_names):
    """--class, its help listing the class names `default_names` of the default network."""
    names = f'; the shipped model\'s: {describe_classes(len(default_names), default_names)}' if default_names else ''
    return click.option('--class', 'class_idx', metavar='INDEX|NAME', help=f'Class of a conditional network, by index or name{names}')

# Network pickles load without executing anything from the file (legacy.py); this opts in to NVIDIA's behaviour.
trust_pickle_option = click.option('--trust-pickle', is_flag=True,
    help="Execute the code embedded in the network pickle, as NVIDIA's loader does (only for pickles you trust)")

#----------------------------------------------------------------------------
