"""Running an op's kernels in tests: the device fixture that builds them, and
assertions on the self-check every kernel passes before an op uses it
(custom_ops.self_check)."""

import os
import shutil
import warnings

import pytest
import torch

from torch_utils import custom_ops

def skip_unless_kernels_can_run(device):
    """Skips the test, saying why, when the kernels of `device` cannot be built here."""
    if device == 'cuda' and not torch.cuda.is_available():
        pytest.skip('needs CUDA: the CUDA kernels run on GPUs only')
    if not custom_ops.enabled():
        pytest.skip('custom ops disabled by CREPS_CUSTOM_OPS')
    if shutil.which(os.environ.get('CXX', 'c++')) is None:
        pytest.skip('needs a C++ compiler to build the kernels')

def kernel_device_fixture(get_plugin):
    """A fixture giving each device ('cpu', 'cuda') whose kernel a test runs, once
    get_plugin(device) has built and self-checked it (skipping where it cannot be built)."""
    @pytest.fixture(params=['cpu', 'cuda'])
    def kernel_device(request):
        skip_unless_kernels_can_run(request.param)
        assert get_plugin(request.param) is not None, f'the {request.param} kernel failed to build or its self-check; see the warnings'
        return request.param
    return kernel_device

def assert_passes_self_check(check):
    """check() (an op's _self_check of a correct kernel) is True, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert check()

def assert_dropped_after_one_warning(get_plugin, op_name):
    """get_plugin() gives None, asked twice, after exactly one warning naming the op."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert get_plugin() is None
        assert get_plugin() is None
    assert len(caught) == 1 and f'{op_name} kernel failed its self-check' in str(caught[0].message)
