"""Framework-neutral HTTP request, response and error types.

Handlers take a :class:`Request` and return a :class:`Response`. Adapters
build the request from their framework's request and turn the response into
their framework's response; nothing here performs I/O.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, Union
from urllib.parse import parse_qsl

import attrs

__all__ = [
    "MAX_BODY_BYTES",
    "Body",
    "EnvironHeaders",
    "HTTPError",
    "PrecheckDenied",
    "Request",
    "Response",
    "html_response",
    "json_response",
    "read_body",
    "text_response",
]

#: Largest request body a handler accepts, in bytes.
MAX_BODY_BYTES = 1024 * 1024

Body = Union[str, bytes, Iterable[bytes]]


def _from_latin1(text: str) -> str:
    """Decode a WSGI path or query string, which PEP 3333 passes as latin-1 text of raw bytes."""
    return text if text.isascii() else text.encode("latin-1").decode("utf-8", "replace")


class EnvironHeaders(Mapping[str, str]):
    """The HTTP headers of a WSGI environ by lower-case name, read on demand.

    Adapters pass it as :attr:`Request.headers`, so a request does not pay
    for copying headers that its handler never reads.
    """

    __slots__ = ("environ",)

    _UNPREFIXED = ("CONTENT_TYPE", "CONTENT_LENGTH")

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ

    def __getitem__(self, name: str) -> str:
        key = name.upper().replace("-", "_")
        value = self.environ.get(key if key in self._UNPREFIXED else f"HTTP_{key}")
        if value is None:
            raise KeyError(name)
        return str(value)

    def __iter__(self) -> Iterator[str]:
        for key in self.environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").lower()
            elif key in self._UNPREFIXED:
                yield key.replace("_", "-").lower()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _lower_keys(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Mapping[str, str]:
    if isinstance(headers, EnvironHeaders):
        return headers
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name.lower(): value for name, value in items}


class HTTPError(Exception):
    """Client-facing error with a status, a title and a plain description.

    :param status: HTTP status code.
    :param description: what was wrong and what to send instead.
    :param details: extra JSON fields, such as the offending field and value.
    """

    def __init__(
        self,
        status: int,
        description: str,
        *,
        title: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.title = title or _STATUS_TITLES.get(status, "Error")
        self.details = dict(details or {})
        self.headers = list(headers)

    def to_json_response(self) -> Response:
        """Render the error as a JSON body: ``{"error": ..., "title": ...}``."""
        payload = {"error": self.description, "title": self.title, **self.details}
        response = json_response(payload, status=self.status)
        response.headers.extend(self.headers)
        return response

    def to_html_response(self) -> Response:
        """Render the error as a small escaped HTML page."""
        page = (
            f"<!doctype html><title>{self.status} {html.escape(self.title)}</title>"
            f"<h1>{self.status} {html.escape(self.title)}</h1>"
            f"<p>{html.escape(self.description)}</p>"
        )
        response = html_response(page, status=self.status)
        response.headers.extend(self.headers)
        return response


class PrecheckDenied(Exception):
    """Denial raised by a precheck: carries the complete response to send.

    Every adapter and the core dispatcher convert it with :meth:`to_response`.
    """

    def __init__(
        self,
        status: int = 403,
        body: str | bytes = "Forbidden: this page is not available to you.",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = list(headers)

    def to_response(self) -> Response:
        """Return the denial as a :class:`Response`."""
        headers = list(self.headers)
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        return Response(status=self.status, headers=headers, body=self.body)


_STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@attrs.frozen
class Request:
    """An HTTP request as handlers see it, built by hand in tests.

    ``headers`` keys are stored lower-cased, or read on demand from an
    :class:`EnvironHeaders`; ``query`` keeps the first value of each
    parameter; ``remote_addr`` is the peer address of the connection.
    """

    method: str = "GET"
    path: str = "/"
    path_params: Mapping[str, str] = attrs.field(factory=dict)
    query: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_lower_keys)
    body: bytes = b""
    remote_addr: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any], path_params: Mapping[str, Any]) -> Request:
        """Build a request from a WSGI environ and the path parameters a router matched.

        ``remote_addr`` is ``REMOTE_ADDR``, never a forwarding header.
        """
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        query_string = environ.get("QUERY_STRING", "")
        query: dict[str, str] = {}
        if query_string:
            for name, value in parse_qsl(_from_latin1(query_string), keep_blank_values=True):
                query.setdefault(name, value)
        length = environ.get("CONTENT_LENGTH") or ""
        body = b""
        # NOTE: a body sent without Content-Length (chunked) reads as empty,
        # because wsgi.input may block past the end of the body otherwise.
        if length.isdigit() and int(length) > 0:
            body = read_body(environ["wsgi.input"], int(length))
        return cls(
            environ.get("REQUEST_METHOD", "GET"),
            _from_latin1(path),
            {name: str(value) for name, value in path_params.items()},
            query,
            EnvironHeaders(environ),
            body,
            environ.get("REMOTE_ADDR") or "",
        )

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the header ``name`` (any case), or ``default``."""
        return self.headers.get(name.lower(), default)

    def json(self) -> dict[str, Any]:
        """Parse the body as a JSON object.

        :raises HTTPError: 413 when the body is too large, 400 when it is
            missing, not JSON or not an object.
        """
        if len(self.body) > MAX_BODY_BYTES:
            raise HTTPError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        if not self.body.strip():
            raise HTTPError(400, "The request body is empty: send a JSON object.")
        try:
            value = json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as error:
            raise HTTPError(400, f"The request body is not valid JSON ({error}).") from None
        except RecursionError:
            raise HTTPError(400, "The request body nests JSON too deeply.") from None
        if not isinstance(value, dict):
            raise HTTPError(
                400, f"The request body must be a JSON object, not {type(value).__name__}."
            )
        return value

    def json_or_empty(self) -> dict[str, Any]:
        """Parse the body as a JSON object, treating an empty body as ``{}``."""
        if not self.body.strip():
            return {}
        return self.json()

    def form(self) -> dict[str, str]:
        """Parse an ``application/x-www-form-urlencoded`` body."""
        if len(self.body) > MAX_BODY_BYTES:
            raise HTTPError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        try:
            text = self.body.decode("ascii")
        except UnicodeDecodeError:
            raise HTTPError(400, "The form body is not URL-encoded ASCII.") from None
        return dict(parse_qsl(text, keep_blank_values=True))


@attrs.define
class Response:
    """An HTTP response: an ``int`` status, header pairs and a body.

    A body that is neither ``str`` nor ``bytes`` is an iterable of ``bytes``
    chunks that the adapter streams as they come.
    """

    status: int = 200
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    body: Body = b""

    @property
    def is_stream(self) -> bool:
        """Whether the body is an iterable to stream rather than a value."""
        return not isinstance(self.body, (str, bytes))

    def header(self, name: str) -> str | None:
        """Return the first header called ``name`` (any case), or ``None``."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the body as ``bytes`` chunks, whatever its form."""
        if isinstance(self.body, str):
            yield self.body.encode("utf-8")
        elif isinstance(self.body, bytes):
            yield self.body
        else:
            yield from self.body

    def data(self) -> bytes:
        """Return the whole body as ``bytes``, consuming a stream."""
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        if isinstance(self.body, bytes):
            return self.body
        return b"".join(self.body)


def json_response(payload: Any, status: int = 200) -> Response:
    """Return ``payload`` serialised as a JSON response."""
    body = json.dumps(payload, sort_keys=True)
    return Response(status, [("Content-Type", "application/json")], body)


def html_response(page: str, status: int = 200) -> Response:
    """Return an HTML page response."""
    return Response(status, [("Content-Type", "text/html; charset=utf-8")], page)


def text_response(body: Body, status: int = 200) -> Response:
    """Return a plain-text response; ``body`` may be a stream of ``bytes``."""
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    if not isinstance(body, (str, bytes)):
        # Proxies such as nginx buffer responses unless this header disables it, which
        # would hold back progress lines until the stream ends.
        headers.append(("X-Accel-Buffering", "no"))
        headers.append(("Cache-Control", "no-cache"))
    return Response(status, headers, body)


class Readable(Protocol):
    """A binary stream to read a request body from, such as ``wsgi.input``."""

    def read(self, size: int, /) -> bytes: ...


def read_body(stream: Readable, content_length: int | None) -> bytes:
    """Read a request body, at most :data:`MAX_BODY_BYTES` plus one byte.

    Reading one byte past the limit lets :meth:`Request.json` report 413
    without buffering an unbounded upload.
    """
    limit = MAX_BODY_BYTES + 1
    if content_length is not None:
        limit = min(limit, max(content_length, 0))
    return stream.read(limit) if limit else b""
