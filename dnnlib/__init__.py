"""Utilities with no dependency on the rest of the project (nor on torch)."""

from . import util
from .util import EasyDict, make_cache_dir_path
