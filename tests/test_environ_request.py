"""Neutral requests built from WSGI environs, with no web framework."""

from __future__ import annotations

import io
from typing import Any

import pytest

from dna_core import MAX_BODY_BYTES, EnvironHeaders, Request


def environ(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/api",
        "PATH_INFO": "/run_deploy",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
    }
    base.update(overrides)
    return base


def test_headers_by_any_case() -> None:
    """Headers are found by any spelling of their name, content headers included."""
    headers = EnvironHeaders(
        environ(HTTP_APP_KEY_DNA="dna_key", CONTENT_TYPE="application/json", CONTENT_LENGTH="2")
    )

    assert headers["app-key-dna"] == "dna_key"
    assert headers.get("App-Key-DNA") == "dna_key"
    assert headers["Content-Type"] == "application/json"
    assert headers.get("x-missing") is None
    assert sorted(headers) == ["app-key-dna", "content-length", "content-type"]
    assert len(headers) == 3


def test_request_fields_from_environ() -> None:
    """Method, full path, parameters, headers, body and peer address come from the environ."""
    body = b'{"service": "web"}'
    incoming = environ(
        HTTP_APP_KEY_DNA="dna_key",
        CONTENT_LENGTH=str(len(body)),
        **{"wsgi.input": io.BytesIO(body)},
    )

    request = Request.from_environ(incoming, {"name": "web"})

    assert request.method == "POST"
    assert request.path == "/api/run_deploy"
    assert request.path_params == {"name": "web"}
    assert request.header("App-Key-DNA") == "dna_key"
    assert request.json() == {"service": "web"}
    assert request.remote_addr == "127.0.0.1"


def test_query_keeps_first_value_and_decodes_utf8() -> None:
    """A repeated parameter keeps its first value; percent-escapes decode as UTF-8."""
    request = Request.from_environ(environ(QUERY_STRING="lines=5&lines=9&name=caf%C3%A9&empty="), {})

    assert request.query == {"lines": "5", "name": "café", "empty": ""}


def test_non_ascii_path_decodes_utf8() -> None:
    """PEP 3333 passes raw path bytes as latin-1 text; the request contains the UTF-8 text."""
    raw = "/logs/café/docker".encode().decode("latin-1")

    request = Request.from_environ(environ(SCRIPT_NAME="", PATH_INFO=raw), {})

    assert request.path == "/logs/café/docker"


def test_forwarded_for_is_not_the_peer() -> None:
    """X-Forwarded-For, which any client can send, never replaces REMOTE_ADDR."""
    request = Request.from_environ(environ(HTTP_X_FORWARDED_FOR="10.1.2.3"), {})

    assert request.remote_addr == "127.0.0.1"


@pytest.mark.parametrize("length", [None, "", "abc", "-5"])
def test_body_without_valid_length_is_empty(length: str | None) -> None:
    """Without a usable Content-Length the body is not read at all."""
    stream = io.BytesIO(b'{"service": "web"}')

    request = Request.from_environ(environ(CONTENT_LENGTH=length, **{"wsgi.input": stream}), {})

    assert request.body == b""
    assert stream.tell() == 0


def test_body_read_stops_past_limit() -> None:
    """An oversized body is read only one byte past the limit, so json() can send 413."""
    stream = io.BytesIO(b"x" * (MAX_BODY_BYTES + 100))

    request = Request.from_environ(environ(CONTENT_LENGTH=str(MAX_BODY_BYTES + 100), **{"wsgi.input": stream}), {})

    assert len(request.body) == MAX_BODY_BYTES + 1
