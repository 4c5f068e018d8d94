"""Option types and checks shared by the command-line scripts (click).

Each type turns a malformed value into click's one-line usage error naming the
option, never a traceback.
"""

import math
import re

import click
import torch

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
    """Width and height: 'WxH' -> (W, H), both positive."""
    name = 'WxH'

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        m = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', str(value))
        if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            self.fail(f'{value!r} is not a size such as 1920x1080 (positive width x height)', param, ctx)
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

#----------------------------------------------------------------------------

# Network pickles load without executing anything from the file (legacy.py); this opts in to NVIDIA's behaviour.
trust_pickle_option = click.option('--trust-pickle', is_flag=True,
    help="Execute the code embedded in the network pickle, as NVIDIA's loader does (only for pickles you trust)")

#----------------------------------------------------------------------------
