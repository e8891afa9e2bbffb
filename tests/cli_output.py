"""What the CLI tests read from captured output (imported by the tests beside it; not a test module)."""

from __future__ import annotations


def one_error_line(capsys) -> str:
    """The CLI's single ``zsgm: error: ...`` line on stderr, asserting there is exactly one and no traceback."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("zsgm: error: "), lines[0]
    return lines[0]
