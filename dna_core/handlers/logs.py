"""Handlers of the logs client: read-only pages, every log line escaped.

Every log page accepts the same query parameters:

- ``lines=N``: the last N lines (default 200, at most the client's
  ``max_lines``); with ``q``, the last N matching lines.
- ``q=TEXT``: keep the lines that contain TEXT, ignoring case.
- ``follow=1``: keep the response open and stream new lines as they come.
- ``download=1``: the log as an attachment: in text, the whole log unless
  ``lines`` is given; in JSON, the last ``lines`` lines.
- ``format=html|text|json``: a page (default), plain text, or JSON
  (newline-delimited ``{"line": ...}`` objects and empty keepalive lines
  when following).
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

from ..http import HTTPError, Request, Response, html_response, json_response, text_response
from ..logtail import (
    SearchResult,
    follow_file,
    follow_stream,
    iter_file,
    search_chunks,
    search_file,
    tail_file,
)
from ..pages import escape, log_controls, log_page, log_page_end, log_page_start, page, render_log_line

if TYPE_CHECKING:
    from ..clients import LogsClient

#: Log types of a service, with their titles, in index order.
LOG_TYPES = {"nginx": "nginx access log", "error": "nginx error log", "docker": "container log"}
DEFAULT_LINES = 200
FORMATS = ("html", "text", "json")
#: Longest ``q`` a request may send, in characters.
MAX_QUERY_CHARS = 200
#: How many of a container's last lines a search covers: Docker reads its
#: log from a line count, not from a byte offset.
DOCKER_SEARCH_LINES = 100_000

_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@attrs.frozen
class LogQuery:
    """The query parameters of a log request, validated.

    :param lines: how many lines (or matches) to show.
    :param lines_given: whether the request sent ``lines``.
    :param search: the ``q`` text, or ``""`` for no search.
    """

    lines: int
    lines_given: bool
    follow: bool
    download: bool
    search: str
    format: str


def requested_lines(request: Request, maximum: int) -> int:
    """Return the ``lines`` query parameter, 1 to ``maximum`` (default 200)."""
    raw = request.query.get("lines")
    if raw is None:
        return min(DEFAULT_LINES, maximum)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= maximum:
        raise HTTPError(400, f"Invalid lines {raw!r}: send a whole number from 1 to {maximum}.")
    return int(raw)


def _flag(request: Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    value = _FLAGS.get(raw.lower())
    if value is None:
        raise HTTPError(400, f"Invalid {name} {raw!r}: send 1 or 0.")
    return value


def parse_log_query(request: Request, maximum: int) -> LogQuery:
    """Validate the query parameters of a log request.

    :raises HTTPError: 400 naming the invalid parameter and its valid values.
    """
    lines = requested_lines(request, maximum)
    follow = _flag(request, "follow")
    download = _flag(request, "download")
    search = request.query.get("q", "")
    if len(search) > MAX_QUERY_CHARS:
        raise HTTPError(400, f"Invalid q: {len(search)} characters; send at most {MAX_QUERY_CHARS}.")
    if "\n" in search or "\r" in search:
        raise HTTPError(400, "Invalid q: a search matches within one line, so send no line breaks.")
    default_format = "text" if download else "html"
    format_ = request.query.get("format", default_format)
    if format_ not in FORMATS:
        raise HTTPError(400, f"Invalid format {format_!r}: send one of {', '.join(FORMATS)}.")
    if follow and download:
        raise HTTPError(400, "Send either follow or download, not both: a download must end.")
    if download and format_ == "html":
        raise HTTPError(400, "Invalid format 'html' for a download: send text or json.")
    return LogQuery(lines, "lines" in request.query, follow, download, search, format_)


class FileLog:
    """A log that is a file: the engine's log or an nginx log of a service."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def tail(self, lines: int) -> tuple[list[str], int | None]:
        """Return the last ``lines`` lines and the offset to follow from."""
        return tail_file(self.path, lines)

    def search(self, client: LogsClient, query: str, matches: int) -> SearchResult:
        """Return the last ``matches`` lines that contain ``query``."""
        return search_file(self.path, query, matches, client.search_max_bytes, client.search_timeout)

    def follow(self, client: LogsClient, lines: int, start: int | None) -> Iterator[str | None]:
        """Yield the lines written from offset ``start`` on; the caller shows the tail."""
        return follow_file(
            self.path, start, timeout=client.follow_timeout, keepalive=client.follow_keepalive
        )

    def download(self, lines: int | None) -> Iterator[bytes]:
        """Yield the whole file, or its last ``lines`` lines."""
        if lines is None:
            return iter_file(self.path)
        return iter([_joined(tail_file(self.path, lines)[0])])


class DockerLog:
    """The output of a service's container, read through Docker."""

    def __init__(self, dna: Any, service: str) -> None:
        self.dna = dna
        self.service = service

    def tail(self, lines: int) -> tuple[list[str], int | None]:
        """Return the last ``lines`` lines, using Docker's own tail."""
        return self.dna.docker_logs(self.service, lines), None

    def search(self, client: LogsClient, query: str, matches: int) -> SearchResult:
        """Return the last ``matches`` lines of the last :data:`DOCKER_SEARCH_LINES` that contain ``query``."""
        stream = self.dna.docker_log_stream(self.service, lines=DOCKER_SEARCH_LINES)
        if stream is None:
            return SearchResult([], 0)
        try:
            return search_chunks(stream, query, matches, client.search_max_bytes, client.search_timeout)
        finally:
            stream.close()

    def follow(self, client: LogsClient, lines: int, start: int | None) -> Iterator[str | None]:
        """Yield the last ``lines`` lines, then new lines as the container writes them."""
        stream = self.dna.docker_log_stream(self.service, lines=lines, follow=True)
        if stream is None:
            return iter(())
        return follow_stream(stream, timeout=client.follow_timeout, keepalive=client.follow_keepalive)

    def download(self, lines: int | None) -> Iterator[bytes]:
        """Yield the whole output, or its last ``lines`` lines, as Docker sends it."""
        stream = self.dna.docker_log_stream(self.service, lines=lines)
        if stream is None:
            return iter(())
        return _closing(stream)


def _closing(stream: Any) -> Iterator[bytes]:
    try:
        yield from stream
    finally:
        stream.close()


def _joined(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def index(client: LogsClient, request: Request) -> Response:
    """List the engine's log and the three logs of every service."""
    rows = []
    for service in client.dna.services:
        link = quote(service.name, safe="")
        cells = "".join(
            f'<td><a href="{link}/{kind}">{escape(title)}</a></td>' for kind, title in LOG_TYPES.items()
        )
        rows.append(f"<tr><td>{escape(service.name)}</td>{cells}</tr>")
    table = (
        "<table><tr><th>service</th><th colspan=3>logs</th></tr>" + "".join(rows) + "</table>"
        if rows
        else '<p class="muted">No services are deployed yet.</p>'
    )
    body = f'<p><a href="dna">Engine log</a></p>{table}'
    return html_response(page(f"Logs of {client.dna.name}", body))


def engine_log(client: LogsClient, request: Request) -> Response:
    """Show the engine's own log."""
    log = FileLog(Path(client.dna.log_path))
    try:
        query = parse_log_query(request, client.max_lines)
        return _serve(client, query, log, title=f"Engine log of {client.dna.name}", name="dna", back="./",
                      filename=f"{client.dna.name}-engine")
    except HTTPError as error:
        return _error_response(request, error)


def _error_response(request: Request, error: HTTPError) -> Response:
    """Render ``error`` as JSON for a request that asked for JSON, else as a page."""
    if request.query.get("format") == "json":
        return error.to_json_response()
    return error.to_html_response()


def service_log(client: LogsClient, request: Request) -> Response:
    """Show one log of one service, or hand the request to the fallback."""
    service = request.path_params["service"]
    kind = request.path_params["log"]
    if kind not in LOG_TYPES or not client.dna.has_service(service):
        return client.fall_back(service, kind)

    log: FileLog | DockerLog
    if kind == "docker":
        log = DockerLog(client.dna, service)
    else:
        log = FileLog(client.dna.nginx_log_path(service, error=kind == "error"))
    try:
        query = parse_log_query(request, client.max_lines)
        return _serve(client, query, log, title=f"{service}: {LOG_TYPES[kind]}", name=kind, back="../",
                      filename=f"{client.dna.name}-{service}-{kind}")
    except HTTPError as error:
        return _error_response(request, error)


def _serve(
    client: LogsClient, query: LogQuery, log: FileLog | DockerLog, *, title: str, name: str, back: str,
    filename: str,
) -> Response:
    """Return the lines of ``log`` that ``query`` selects, in the requested form."""
    if query.download:
        return _download(query, log, filename)
    if query.follow:
        return _follow(client, query, log, title, name, back)

    result: SearchResult | None = None
    if query.search:
        result = log.search(client, query.search, query.lines)
        lines = result.lines
    else:
        lines = log.tail(query.lines)[0]

    if query.format == "json":
        payload: dict[str, Any] = {"log": name, "lines": lines}
        if result is not None:
            payload["search"] = {
                "q": query.search, "scanned_bytes": result.scanned_bytes, "stopped": result.stopped,
            }
        return json_response(payload)
    if query.format == "text":
        response = text_response(_joined(lines))
        if result is not None and result.stopped:
            response.headers.append(("X-Search-Stopped", result.stopped))
        return response
    controls = log_controls(name, query.lines, query.search)
    notice = _search_notice(client, query, result, isinstance(log, DockerLog)) if result else None
    return html_response(log_page(title, lines, back, controls, notice))


def _search_notice(client: LogsClient, query: LogQuery, result: SearchResult, docker: bool) -> str:
    """Say how many lines matched and, when the scan stopped early, why."""
    found = f"{len(result.lines)} matching lines for {query.search!r}"
    scanned = _size(result.scanned_bytes)
    where = f"of the last {DOCKER_SEARCH_LINES} lines of the container log" if docker else "of the log"
    if result.stopped == "matches":
        return f"{found}: the last {query.lines} are shown, and older lines were not searched."
    if result.stopped == "bytes":
        return f"{found}: the search stopped after scanning {scanned} {where}, its limit."
    if result.stopped == "time":
        return f"{found}: the search stopped after {client.search_timeout:g} s, having scanned {scanned} {where}."
    return f"{found} in {scanned} {where}."


def _size(count: int) -> str:
    """Format a byte count for people, such as ``12 KiB`` or ``64.0 MiB``."""
    if count < 1024 * 1024:
        return f"{count / 1024:.0f} KiB" if count >= 1024 else f"{count} bytes"
    return f"{count / (1024 * 1024):.1f} MiB"


def _download(query: LogQuery, log: FileLog | DockerLog, filename: str) -> Response:
    """Return the log, or its last lines, as an attachment."""
    lines = query.lines if query.lines_given else None
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    if query.format == "json":
        # A JSON document is built in memory, so it contains the last lines only.
        response = json_response({"lines": log.tail(query.lines)[0]})
        extension = "json"
    else:
        response = text_response(log.download(lines))
        extension = "log"
    response.headers.append(("Content-Disposition", f'attachment; filename="{safe_name}.{extension}"'))
    return response


def _follow(client: LogsClient, query: LogQuery, log: FileLog | DockerLog, title: str, name: str,
            back: str) -> Response:
    """Return a streamed response of the tail, then of every new line.

    The stream ends after the client's ``follow_timeout``, or when the
    adapter closes the body because the client went away: closing the body
    closes the followed file or Docker stream.
    """
    needle = query.search.casefold()
    release = client.acquire_follow()
    try:
        if isinstance(log, DockerLog):
            initial: list[str] = []
            start: int | None = None
        elif query.search:
            # Taking the offset first may repeat a line written meanwhile, but loses none.
            start = log.tail(0)[1]
            initial = log.search(client, query.search, query.lines).lines
        else:
            initial, start = log.tail(query.lines)
        new_lines = log.follow(client, query.lines, start)
    except BaseException:
        release()
        raise
    ended = (
        f"Following ended: it lasts at most {client.follow_timeout:g} s, and a container log ends"
        " when its container stops. Reload to follow again."
    )

    def kept(line: str) -> bool:
        return not needle or needle in line.casefold()

    def html_chunks() -> Iterator[bytes]:
        controls = log_controls(name, query.lines, query.search, streaming=True)
        head = log_page_start(title, back, controls)
        yield (head + "".join(f"{render_log_line(line)}\n" for line in initial)).encode("utf-8")
        for line in new_lines:
            if line is None:
                # A comment the browser ignores; writing it lets the server notice a client that left.
                yield b"<!-- -->"
            elif kept(line):
                yield f"{render_log_line(line)}\n".encode()
        yield log_page_end(ended).encode("utf-8")

    def text_chunks() -> Iterator[bytes]:
        yield _joined(initial)
        for line in new_lines:
            # NOTE: plain text has no neutral keepalive, so a client that
            # leaves an idle text follow is noticed only at follow_timeout.
            if line is not None and kept(line):
                yield f"{line}\n".encode()

    def json_chunks() -> Iterator[bytes]:
        for old in initial:
            yield (json.dumps({"line": old}) + "\n").encode("utf-8")
        for line in new_lines:
            # The keepalive is an empty line, which readers of this stream skip.
            if line is None:
                yield b"\n"
            elif kept(line):
                yield (json.dumps({"line": line}) + "\n").encode("utf-8")

    chunks = {"html": html_chunks, "text": text_chunks, "json": json_chunks}[query.format]
    content_type = {
        "html": "text/html; charset=utf-8",
        "text": "text/plain; charset=utf-8",
        "json": "application/x-ndjson",
    }[query.format]
    headers = [("Content-Type", content_type), ("X-Accel-Buffering", "no"), ("Cache-Control", "no-cache")]
    body = _closing_follow(chunks(), new_lines, release)
    # A body that is never iterated never runs its finally clause, so the
    # slot is also freed when the body is garbage-collected.
    weakref.finalize(body, release)
    return Response(200, headers, body)


def _closing_follow(
    chunks: Iterator[bytes], source: Iterator[Any], release: Callable[[], None]
) -> Iterator[bytes]:
    """Yield ``chunks``; closing this iterator closes the followed ``source`` and frees the slot."""
    try:
        yield from chunks
    finally:
        try:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        finally:
            release()
