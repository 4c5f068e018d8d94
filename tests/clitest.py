"""Running the command-line tools in tests, and what their errors must look like."""

from click.testing import CliRunner

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

def invoke(command, args):
    """Run the click `command` in this process with `args` (any values, made strings)."""
    return CliRunner().invoke(command, [str(arg) for arg in args])

def invoke_ok(command, args):
    """As invoke(), asserting success."""
    result = invoke(command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result
