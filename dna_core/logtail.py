"""Read the last lines of a log file without reading the whole file."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["tail_lines"]

_BLOCK = 64 * 1024


def tail_lines(path: str | Path, count: int) -> list[str]:
    """Return the last ``count`` lines of ``path``, oldest first.

    The file is read backwards in 64 KiB blocks, so the cost depends on
    ``count`` and the line length, not on the file's size. A missing file
    has no lines. Bytes that are not UTF-8 are replaced.
    """
    if count <= 0:
        return []
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return []
    with handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        chunks: list[bytes] = []
        newlines = 0
        # One newline more than requested, because the file usually ends with one.
        while position > 0 and newlines <= count:
            size = min(_BLOCK, position)
            position -= size
            handle.seek(position)
            chunk = handle.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.decode("utf-8", errors="replace").splitlines()
    if position > 0:
        # The first line may be cut in the middle: drop it.
        lines = lines[1:]
    return lines[-count:]
