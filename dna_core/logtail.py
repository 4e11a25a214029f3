"""Read, search and follow logs without reading them whole.

Files are read backwards from their end in 64 KiB blocks, so the cost of a
tail or a search depends on how much is shown or scanned, not on the file's
size. Streams of ``bytes`` chunks (Docker's log output) are split into lines
as they come. Bytes that are not UTF-8 are replaced.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import attrs

__all__ = [
    "MAX_LINE_BYTES",
    "ChunkStream",
    "SearchResult",
    "follow_file",
    "follow_stream",
    "iter_file",
    "search_chunks",
    "search_file",
    "split_lines",
    "tail_file",
    "tail_lines",
]

logger = logging.getLogger(__name__)

_BLOCK = 64 * 1024

#: Maximum bytes of a line kept whole. Follows and streams split a longer
#: line into pieces and searches keep only its end, so that one huge line
#: cannot exhaust memory.
MAX_LINE_BYTES = 1024 * 1024

#: Maximum bytes a tail reads before it stops looking for more lines.
DEFAULT_TAIL_BYTES = 32 * 1024 * 1024

#: Item that :func:`follow_file` and :func:`follow_stream` yield when no line
#: came for a while, so that the caller can send something and notice a
#: client that went away.
Keepalive = None


class ChunkStream(Protocol):
    """A blocking iterator of ``bytes`` chunks whose ``close()`` may be called
    from another thread, such as Docker's ``logs(stream=True)`` result."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@attrs.frozen
class SearchResult:
    """Matching lines of a search, oldest first, and how far the scan went.

    :param lines: the matching lines, at most the requested number of matches.
    :param scanned_bytes: bytes of the log that were scanned.
    :param stopped: why the scan ended before covering the whole log:
        ``"matches"``, ``"bytes"`` or ``"time"``; ``None`` when it covered it.
    """

    lines: list[str]
    scanned_bytes: int
    stopped: str | None = None


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _complete_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Split ``buffer`` into its complete lines and the unfinished rest.

    A rest longer than :data:`MAX_LINE_BYTES` counts as a line, so that one
    endless line cannot fill memory.
    """
    *complete, rest = buffer.split(b"\n")
    if len(rest) > MAX_LINE_BYTES:
        complete.append(rest)
        rest = b""
    return [_decode(raw) for raw in complete], rest


def _open(path: str | Path) -> IO[bytes] | None:
    try:
        return open(path, "rb", buffering=0)
    except FileNotFoundError:
        return None


def tail_lines(path: str | Path, count: int, max_bytes: int = DEFAULT_TAIL_BYTES) -> list[str]:
    """Return the last ``count`` lines of ``path``, oldest first.

    A missing file has no lines. See :func:`tail_file`.
    """
    return tail_file(path, count, max_bytes)[0]


def tail_file(path: str | Path, count: int, max_bytes: int = DEFAULT_TAIL_BYTES) -> tuple[list[str], int]:
    """Return the last ``count`` lines of ``path`` and the file's size when read.

    The size is the offset from which :func:`follow_file` continues without
    missing or repeating a line. The file is read backwards in 64 KiB blocks
    and at most ``max_bytes`` of it are read, so lines longer than that
    yield fewer lines than requested.
    """
    handle = _open(path)
    if handle is None:
        return [], 0
    with handle:
        end = handle.seek(0, os.SEEK_END)
        if count <= 0:
            return [], end
        position = end
        chunks: list[bytes] = []
        newlines = 0
        # One newline more than requested, because the file usually ends with one.
        while position > 0 and newlines <= count and end - position < max_bytes:
            size = min(_BLOCK, position)
            position -= size
            handle.seek(position)
            chunk = handle.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")

    parts = b"".join(reversed(chunks)).split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    if position > 0 and parts:
        # The first part may start in the middle of a line: drop it.
        parts.pop(0)
    return [_decode(part) for part in parts[-count:]], end


def search_file(
    path: str | Path,
    query: str,
    max_matches: int,
    max_bytes: int,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Return the last ``max_matches`` lines of ``path`` that contain ``query``.

    The match ignores case. The file is scanned backwards from its end and
    the scan stops at the start of the file, after ``max_matches`` matches,
    after ``max_bytes`` bytes or after ``timeout`` seconds, whichever comes
    first, and :attr:`SearchResult.stopped` records which.
    """
    needle = query.casefold()
    matches: list[str] = []
    handle = _open(path)
    if handle is None or max_matches <= 0:
        return SearchResult([], 0)

    deadline = clock() + timeout
    stopped = None
    with handle:
        position = handle.seek(0, os.SEEK_END)
        end = position
        carry = b""
        while position > 0 and stopped is None:
            if end - position >= max_bytes:
                stopped = "bytes"
                break
            if clock() > deadline:
                stopped = "time"
                break
            size = min(_BLOCK, position)
            position -= size
            handle.seek(position)
            data = handle.read(size) + carry
            if position > 0:
                # Bytes before the first newline may continue in the previous block.
                cut = data.find(b"\n")
                if cut < 0:
                    carry = data[-MAX_LINE_BYTES:]
                    continue
                carry, data = data[:cut], data[cut + 1 :]
            text = _decode(data)
            if needle not in text.casefold():
                continue
            for line in reversed(text.split("\n")):
                if needle in line.casefold():
                    matches.append(line)
                    if len(matches) >= max_matches:
                        stopped = "matches"
                        break
        scanned = end - position

    matches.reverse()
    return SearchResult(matches, scanned, stopped)


def split_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield the lines of a stream of ``bytes`` chunks, without line ends."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        if b"\n" not in chunk and len(buffer) <= MAX_LINE_BYTES:
            continue
        lines, buffer = _complete_lines(buffer)
        yield from lines
    if buffer:
        yield _decode(buffer)


def search_chunks(
    chunks: Iterable[bytes],
    query: str,
    max_matches: int,
    max_bytes: int,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Return the last ``max_matches`` lines of a chunk stream that contain ``query``.

    The stream is read from its start, so when the byte or time limit ends
    the scan, the newest part of the stream is the part not searched.
    """
    needle = query.casefold()
    matches: deque[str] = deque(maxlen=max(max_matches, 0))
    deadline = clock() + timeout
    scanned = 0
    stopped = None

    def counted() -> Iterator[bytes]:
        nonlocal scanned
        for chunk in chunks:
            scanned += len(chunk)
            yield chunk

    for line in split_lines(counted()):
        if needle in line.casefold():
            matches.append(line)
        if scanned >= max_bytes:
            stopped = "bytes"
            break
        if clock() > deadline:
            stopped = "time"
            break
    return SearchResult(list(matches), scanned, stopped)


def iter_file(path: str | Path) -> Iterator[bytes]:
    """Yield the content of ``path`` in 64 KiB chunks, up to its size when opened.

    The file is opened on the first ``next()`` and closed when the iterator
    ends or is closed. Lines appended meanwhile are left out, so that a
    download of a busy log ends.
    """
    handle = _open(path)
    if handle is None:
        return
    with handle:
        remaining = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        while remaining > 0:
            chunk = handle.read(min(_BLOCK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def follow_file(
    path: str | Path,
    start: int | None = None,
    *,
    timeout: float,
    keepalive: float,
    poll_interval: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str | None]:
    """Yield the lines written to ``path`` from offset ``start`` on, as they come.

    The file is polled every ``poll_interval`` seconds. When it is replaced
    (rotated), the rest of the old file is read, then the new one from its
    start. When it shrinks (truncated), reading restarts at its start. A
    truncated file that grows past the old offset between two polls is not
    noticed, as with ``tail -f``.
    ``None`` is yielded after ``keepalive`` seconds without a line. The
    iterator ends after ``timeout`` seconds, and closing it closes the file.

    :param start: offset to continue from, such as the size that
        :func:`tail_file` returned; default: the end of the file.
    """
    deadline = clock() + timeout
    handle = _open(path)
    if handle is not None:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(size if start is None or start > size else start)
    buffer = b""
    last_sent = clock()
    try:
        while clock() < deadline:
            data = handle.read(_BLOCK) if handle is not None else b""
            if data:
                lines, buffer = _complete_lines(buffer + data)
                yield from lines
                last_sent = clock()
                continue

            if handle is not None and os.fstat(handle.fileno()).st_size < handle.tell():
                handle.seek(0)
                buffer = b""
                continue
            replacement = _replaced(path, handle)
            if replacement is not None:
                if handle is not None:
                    handle.close()
                handle, buffer = replacement, b""
                continue
            if clock() - last_sent >= keepalive:
                yield Keepalive
                last_sent = clock()
            sleep(poll_interval)
    finally:
        if handle is not None:
            handle.close()


def _replaced(path: str | Path, handle: IO[bytes] | None) -> IO[bytes] | None:
    """Return a new handle when ``path`` now names another file than ``handle``."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        # Rotated away and not created again yet: keep reading the old file.
        return None
    if handle is None:
        return _open(path)
    opened = os.fstat(handle.fileno())
    if (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
        return _open(path)
    return None


_END = object()


def follow_stream(
    stream: ChunkStream,
    *,
    timeout: float,
    keepalive: float,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[str | None]:
    """Yield the lines of a blocking chunk stream, such as a followed Docker log.

    A reader thread pulls chunks into a small queue, so this iterator can
    yield ``None`` after ``keepalive`` idle seconds and end after
    ``timeout`` seconds even while the stream blocks. Ending or closing the
    iterator closes ``stream``, which wakes the reader, and joins the thread.
    """
    chunks: queue.Queue[Any] = queue.Queue(maxsize=64)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in stream:
                if not put(chunk):
                    return
        except Exception as error:  # noqa: BLE001 - the consumer re-raises it
            put(error)
        finally:
            put(_END)

    reader = threading.Thread(target=read, name="dna-log-follow", daemon=True)
    deadline = clock() + timeout
    buffer = b""
    reader.start()
    try:
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return
            try:
                item = chunks.get(timeout=min(keepalive, remaining))
            except queue.Empty:
                if clock() < deadline:
                    yield Keepalive
                continue
            if item is _END:
                if buffer:
                    yield _decode(buffer)
                return
            if isinstance(item, Exception):
                raise item
            lines, buffer = _complete_lines(buffer + item)
            yield from lines
    finally:
        stop.set()
        try:
            stream.close()
        except Exception as error:  # noqa: BLE001 - the follow ends either way
            # Docker's SDK cannot cancel a stream over SSH, for one.
            logger.warning("closing a followed log stream failed: %s", error)
        reader.join(timeout=10)
        if reader.is_alive():
            logger.warning("the reader thread of a followed log stream did not stop within 10 s")
