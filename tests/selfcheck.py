"""Assertions on the self-check that every kernel passes before an op uses it (custom_ops.self_check)."""

import warnings

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
