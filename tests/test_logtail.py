"""Reading, searching and following logs without reading them whole."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dna_core.logtail import (
    follow_file,
    follow_stream,
    iter_file,
    search_chunks,
    search_file,
    split_lines,
    tail_file,
    tail_lines,
)

BLOCK = 64 * 1024


def write_lines(path: Path, count: int) -> list[str]:
    """Write ``count`` lines of varying length and multi-byte text; return them."""
    lines = [f"{i:07d} {'é' * (i % 97)} {'x' * (i * 7 % 131)}" for i in range(count)]
    path.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8"))
    return lines


def gnu_tail(path: Path, count: int) -> list[str]:
    output = subprocess.run(["tail", "-n", str(count), str(path)], capture_output=True, check=True).stdout
    return output.decode("utf-8").splitlines()


@pytest.mark.parametrize("count", [1, 2, 199, 200, 1000, 5000, 20000])
def test_tail_matches_gnu_tail(tmp_path: Path, count: int) -> None:
    """The last lines of a multi-block file equal GNU tail's, for many counts."""
    path = tmp_path / "access.log"
    write_lines(path, 30000)

    assert tail_lines(path, count) == gnu_tail(path, count)


def test_tail_line_ending_on_block_boundary(tmp_path: Path) -> None:
    """A newline exactly where a 64 KiB block starts or ends loses no line."""
    path = tmp_path / "boundary.log"
    first = "a" * (BLOCK - 1)
    second = "b" * (BLOCK - 1)
    path.write_bytes(f"{first}\n{second}\nc\n".encode())

    for count in (1, 2, 3, 4):
        assert tail_lines(path, count) == [first, second, "c"][-count:]


def test_tail_multibyte_split_by_block(tmp_path: Path) -> None:
    """A character whose bytes straddle two blocks is decoded whole."""
    path = tmp_path / "utf8.log"
    # "é" is two bytes; an odd prefix puts one of them on each side of the cut.
    path.write_bytes(("x" + "é" * BLOCK + "\nlast\n").encode("utf-8"))

    lines = tail_lines(path, 2)

    assert lines == ["x" + "é" * BLOCK, "last"]


def test_tail_without_final_newline(tmp_path: Path) -> None:
    """The unterminated last line counts as a line."""
    path = tmp_path / "open.log"
    path.write_bytes(b"one\ntwo\nthree")

    assert tail_lines(path, 2) == ["two", "three"]
    assert tail_lines(path, 10) == ["one", "two", "three"]


def test_tail_missing_and_empty(tmp_path: Path) -> None:
    """A missing or empty file has no lines."""
    (tmp_path / "empty.log").write_bytes(b"")

    assert tail_lines(tmp_path / "missing.log", 10) == []
    assert tail_lines(tmp_path / "empty.log", 10) == []


def test_tail_keeps_other_line_separators(tmp_path: Path) -> None:
    """Only newline splits lines; form feeds and U+2028 stay inside a line."""
    path = tmp_path / "odd.log"
    path.write_bytes("a\x0cb\u2028c\nnext\n".encode())

    assert tail_lines(path, 2) == ["a\x0cb\u2028c", "next"]


def test_tail_byte_limit(tmp_path: Path) -> None:
    """A line longer than the byte limit is not read whole."""
    path = tmp_path / "huge.log"
    path.write_bytes(b"y" * (4 * BLOCK) + b"\nshort\n")

    assert tail_lines(path, 2, max_bytes=BLOCK) == ["short"]


def test_tail_file_offset(tmp_path: Path) -> None:
    """The offset returned is the file's size, where a follow continues."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")

    assert tail_file(path, 1) == (["two"], 8)


def test_search_ignores_case_keeps_last(tmp_path: Path) -> None:
    """A search returns the newest matches, oldest first, ignoring case."""
    path = tmp_path / "access.log"
    lines = write_lines(path, 30000)
    expected = [line for line in lines if "00123" in line]

    result = search_file(path, "00123", max_matches=5, max_bytes=1 << 30, timeout=60)

    assert result.lines == expected[-5:]
    assert result.stopped == "matches"


def test_search_whole_file(tmp_path: Path) -> None:
    """A search that reaches the start of the file reports no early stop."""
    path = tmp_path / "mixed.log"
    path.write_bytes(b"GET /Error\nGET /ok\n" * 20000 + b"POST /ERROR\n")

    result = search_file(path, "error", max_matches=100000, max_bytes=1 << 30, timeout=60)

    assert len(result.lines) == 20001
    assert result.lines[-1] == "POST /ERROR"
    assert result.lines[0] == "GET /Error"
    assert result.stopped is None
    assert result.scanned_bytes == path.stat().st_size


def test_search_byte_limit(tmp_path: Path) -> None:
    """A search stops after its byte limit and reports it."""
    path = tmp_path / "big.log"
    path.write_bytes(b"needle old\n" + b"hay\n" * 100000 + b"needle new\n")

    result = search_file(path, "NEEDLE", max_matches=10, max_bytes=2 * BLOCK, timeout=60)

    assert result.lines == ["needle new"]
    assert result.stopped == "bytes"
    assert result.scanned_bytes <= 2 * BLOCK


def test_search_time_limit(tmp_path: Path) -> None:
    """A search stops when its clock passes the deadline."""
    path = tmp_path / "big.log"
    path.write_bytes(b"hay\n" * 100000)
    ticks = iter(range(1000))

    result = search_file(path, "x", 10, 1 << 30, timeout=2.5, clock=lambda: float(next(ticks)))

    assert result.stopped == "time"
    assert 0 < result.scanned_bytes < path.stat().st_size


def test_search_chunks_keeps_newest() -> None:
    """A stream search keeps the last matches, across chunk boundaries."""
    chunks = [b"err one\nok\ner", b"r two\nERR three\n", b"ok\n"]

    result = search_chunks(iter(chunks), "err", max_matches=2, max_bytes=1 << 20, timeout=60)

    assert result.lines == ["err two", "ERR three"]
    assert result.stopped is None


def test_split_lines_across_chunks() -> None:
    """Lines cut between chunks come out whole; an unterminated end comes last."""
    assert list(split_lines([b"a\nb", b"c\n", b"", b"d"])) == ["a", "bc", "d"]


def test_iter_file_stops_at_opening_size(tmp_path: Path) -> None:
    """A download ends at the size the file had when it was opened."""
    path = tmp_path / "a.log"
    path.write_bytes(b"x" * (BLOCK + 10))
    chunks = iter_file(path)
    first = next(chunks)
    with path.open("ab") as handle:
        handle.write(b"later\n")

    rest = b"".join(chunks)

    assert first + rest == b"x" * (BLOCK + 10)


def open_descriptors(path: Path) -> list[str]:
    """Return this process's file descriptors open on ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            continue
    return found


def append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_follow_file_new_lines_rotation_truncation(tmp_path: Path) -> None:
    """A follow reads new lines, then a rotated file, then a truncated one."""
    path = tmp_path / "access.log"
    path.write_text("old\n")
    start = tail_file(path, 10)[1]
    follow = follow_file(path, start, timeout=60, keepalive=0.05, poll_interval=0.01)

    append(path, "new 1\npartial")
    assert next(follow) == "new 1"
    append(path, " end\n")
    assert next(follow) == "partial end"

    path.rename(tmp_path / "access.log.1")
    append(tmp_path / "access.log.1", "last of old\n")
    path.write_text("first of new\n")
    assert next(follow) == "last of old"
    assert next(follow) == "first of new"

    with path.open("r+") as handle:
        handle.truncate(0)
    # The follow notices a truncation only while the file is shorter than
    # its offset, so it must poll once before the file grows again.
    assert next(follow) is None
    append(path, "after truncation\n")
    assert next(follow) == "after truncation"

    follow.close()
    assert open_descriptors(path) == []


def test_follow_file_keepalive_and_timeout(tmp_path: Path) -> None:
    """An idle follow yields keepalives, then ends at its timeout."""
    path = tmp_path / "idle.log"
    path.write_text("")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    follow = follow_file(path, timeout=1.0, keepalive=0.25, poll_interval=0.125, clock=lambda: now[0], sleep=sleep)
    items = list(follow)

    assert items == [None, None, None]
    assert open_descriptors(path) == []


def test_follow_file_waits_for_missing_file(tmp_path: Path) -> None:
    """A follow of a log not created yet reads it from its start once it exists."""
    path = tmp_path / "later.log"
    follow = follow_file(path, timeout=60, keepalive=0.05, poll_interval=0.01)
    assert next(follow) is None

    path.write_text("hello\n")

    received = next(follow)
    while received is None:
        received = next(follow)
    assert received == "hello"
    follow.close()


class BlockingStream:
    """A chunk stream that blocks like a followed Docker log until closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        self.closed.wait(timeout=30)

    def close(self) -> None:
        self.closed.set()


def follow_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "dna-log-follow"]


def test_follow_stream_close_stops_reader() -> None:
    """Closing a stream follow closes the stream and ends the reader thread."""
    stream = BlockingStream([b"one\ntw", b"o\n"])
    follow = follow_stream(stream, timeout=60, keepalive=0.05)

    assert next(follow) == "one"
    assert next(follow) == "two"
    assert next(follow) is None
    follow.close()

    assert stream.closed.is_set()
    assert follow_threads() == []


def test_follow_stream_timeout_closes() -> None:
    """A stream follow ends at its timeout and releases the stream."""
    stream = BlockingStream([b"one\n"])

    items = list(follow_stream(stream, timeout=0.3, keepalive=0.1))

    assert items[0] == "one"
    assert set(items[1:]) == {None}
    assert stream.closed.is_set()
    assert follow_threads() == []


def test_follow_stream_end_flushes_last_line() -> None:
    """A stream that ends (container stopped) ends the follow with its last line."""
    class EndingStream:
        def __iter__(self) -> Iterator[bytes]:
            return iter([b"a\nb"])

        def close(self) -> None:
            pass

    items = list(follow_stream(EndingStream(), timeout=60, keepalive=5))

    assert items == ["a", "b"]


def test_follow_stream_close_failure_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A stream that cannot be closed is logged, and closing the follow still succeeds."""

    class UncloseableStream(BlockingStream):
        def close(self) -> None:
            super().close()
            raise RuntimeError("cannot cancel this transport")

    follow = follow_stream(UncloseableStream([b"one\n"]), timeout=60, keepalive=5)
    assert next(follow) == "one"

    follow.close()

    assert "closing a followed log stream failed: cannot cancel this transport" in caplog.text
    assert follow_threads() == []
