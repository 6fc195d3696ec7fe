"""Reading JSON Lines files with errors that name file and line, and a byte cap checked while
reading. Shared by SymBench's CLI (samples, responses) and the training scripts (SFT and DPO
rows), so it belongs to neither. Imports no other project file.
"""

import json
from pathlib import Path


MAX_LINE_BYTES = 4 << 20  # a JSON Lines row this long is a broken file, not data: 4 MiB is ~1M tokens


class LineTooLongError(ValueError):
    """A JSON Lines line over read_jsonl's byte cap."""


def read_jsonl(path, max_line_bytes: int = MAX_LINE_BYTES):
    """("file:line", JSON object) for each non-blank line of a JSON Lines file. Errors name the
    file and line: FileNotFoundError, ValueError for a line that is not UTF-8 or not a JSON
    object, LineTooLongError for one over max_line_bytes (counting its newline). The cap is checked
    while reading, so an oversized line is refused after max_line_bytes bytes instead of being
    held (and parsed) whole."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    with path.open("rb") as lines:
        number = 0
        while line := lines.readline(max_line_bytes + 1):
            number += 1
            where = f"{path}:{number}"
            if len(line) > max_line_bytes:
                raise LineTooLongError(f"{where}: line longer than {max_line_bytes} bytes")
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise ValueError(f"{where}: not UTF-8 text (byte {error.start + 1})") from None
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: invalid JSON ({error.msg}, column {error.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            yield where, row
