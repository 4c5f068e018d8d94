"""Assertions shared by the tests of the command-line tools."""

def assert_clean_error(result, *phrases):
    """A bad input ends with a non-zero exit and a one-line message, never a traceback.
    `result` is a click.testing.Result; each phrase must appear in the error line."""
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert 'Traceback' not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith('Error')]
    assert len(error_lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in error_lines[0], result.stderr
