"""Log handlers with a stand-in engine: no framework, no Docker."""

from __future__ import annotations

import gc
import html
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from dna_core import LogsClient, Request, Response


@attrs.define
class StandInService:
    name: str


class ChunkList:
    """A finite chunk stream with ``close()``, as Docker's log stream has."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


class StandInEngine:
    """The part of ``DNA`` the logs client uses, over files in a temp dir."""

    def __init__(self, root: Path) -> None:
        self.name = "demo"
        self.root = root
        self.log_path = root / "demo.log"
        self.log_path.write_text("2026-01-02 10:00:00,001 INFO engine started\n")
        self.services = [StandInService("web")]
        self.container_output = [b"container line 1\n", b"container <b>line</b> 2\n"]
        self.streams: list[tuple[int | None, bool, ChunkList]] = []

    def has_service(self, name: str) -> bool:
        return name == "web"

    def nginx_log_path(self, service: str, error: bool = False) -> Path:
        return self.root / f"{service}.{'error' if error else 'access'}.log"

    def docker_logs(self, service: str, lines: int = 200) -> list[str]:
        text = b"".join(self.container_output).decode()
        return text.splitlines()[-lines:]

    def docker_log_stream(self, service: str, lines: int | None = None, follow: bool = False) -> ChunkList:
        stream = ChunkList(list(self.container_output))
        self.streams.append((lines, follow, stream))
        return stream


@pytest.fixture
def dna(tmp_path: Path) -> StandInEngine:
    return StandInEngine(tmp_path)


def get(client: LogsClient, path: str, **query: str) -> Response:
    if path == "/dna":
        return client.handle("dna", Request(path=path, query=query))
    _, service, log = path.split("/")
    return client.handle("service_log", Request(path=path, path_params={"service": service, "log": log}, query=query))


def write_access_log(dna: StandInEngine, count: int) -> list[str]:
    lines = [f'127.0.0.1 - - [02/Jan/2026:10:00:{i % 60:02d} +0000] "GET /page/{i} HTTP/1.1" 200 5' for i in range(count)]
    dna.nginx_log_path("web").write_text("".join(f"{line}\n" for line in lines))
    return lines


def test_page_shows_last_lines_escaped(dna: StandInEngine) -> None:
    """The page shows the last N lines with markup escaped."""
    lines = write_access_log(dna, 500)
    with dna.nginx_log_path("web").open("a") as handle:
        handle.write('127.0.0.1 - - "GET /<script>alert(1)</script> HTTP/1.1" 404 0\n')
    client = LogsClient(dna)

    response = get(client, "/web/nginx", lines="3")
    text = response.data().decode()

    assert response.status == 200
    assert "/page/498 " in text
    assert "/page/497 " not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in text
    assert len(lines) == 500


def test_page_marks_timestamp_and_level(dna: StandInEngine) -> None:
    """Timestamps and level words are marked on the page."""
    client = LogsClient(dna)
    dna.nginx_log_path("web", error=True).write_text("2026/01/02 10:00:00 [error] 7#7: upstream failed\n")

    engine_page = get(client, "/dna").data().decode()
    error_page = get(client, "/web/error").data().decode()

    assert '<span class="ts">2026-01-02 10:00:00,001</span>' in engine_page
    assert '<span class="lv lv-info">INFO</span>' in engine_page
    assert '<span class="ts">2026/01/02 10:00:00</span>' in error_page
    assert '<span class="lv lv-error">[error]</span>' in error_page


def test_page_has_controls_without_external_resources(dna: StandInEngine) -> None:
    """The page links follow, download and formats, and loads nothing else."""
    write_access_log(dna, 5)
    text = get(LogsClient(dna), "/web/nginx").data().decode()

    assert 'href="nginx?lines=200&amp;follow=1"' in text
    assert 'href="nginx?download=1"' in text
    assert 'href="nginx?lines=200&amp;format=json"' in text
    assert "<script" not in text
    assert "<link" not in text
    assert "http://" not in text
    assert "https://" not in text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"lines": "0"}, "Invalid lines '0'"),
        ({"lines": "ten"}, "Invalid lines 'ten'"),
        ({"lines": "5001"}, "from 1 to 5000"),
        ({"follow": "maybe"}, "Invalid follow 'maybe'"),
        ({"download": "2"}, "Invalid download '2'"),
        ({"format": "xml"}, "Invalid format 'xml'"),
        ({"follow": "1", "download": "1"}, "either follow or download"),
        ({"download": "1", "format": "html"}, "Invalid format 'html' for a download"),
        ({"q": "x" * 201}, "at most 200"),
        ({"q": "a\nb"}, "no line breaks"),
    ],
)
def test_invalid_query_is_400(dna: StandInEngine, query: dict[str, str], message: str) -> None:
    """Each invalid query parameter gets a 400 that names it."""
    for path in ("/web/nginx", "/web/docker", "/dna"):
        response = get(LogsClient(dna), path, **query)

        assert response.status == 400
        assert message in html.unescape(response.data().decode())


def test_invalid_query_in_json_form_is_json(dna: StandInEngine) -> None:
    """A script that asked for JSON gets its 400 as JSON."""
    response = get(LogsClient(dna), "/web/nginx", format="json", lines="-1")

    assert response.status == 400
    assert response.header("Content-Type") == "application/json"
    assert "Invalid lines '-1'" in json.loads(response.data())["error"]


def test_text_and_json_forms(dna: StandInEngine) -> None:
    """format=text gives bare lines, format=json a list of strings."""
    lines = write_access_log(dna, 50)
    client = LogsClient(dna)

    text = get(client, "/web/nginx", lines="2", format="text")
    data = get(client, "/web/nginx", lines="2", format="json")

    assert text.header("Content-Type") == "text/plain; charset=utf-8"
    assert text.data().decode() == f"{lines[-2]}\n{lines[-1]}\n"
    assert data.header("Content-Type") == "application/json"
    assert json.loads(data.data()) == {"log": "nginx", "lines": lines[-2:]}


def test_search_finds_matches(dna: StandInEngine) -> None:
    """q keeps the lines that contain it, ignoring case, newest last."""
    write_access_log(dna, 1000)
    client = LogsClient(dna)

    data = json.loads(get(client, "/web/nginx", q="PAGE/99", format="json").data())
    page = get(client, "/web/nginx", q="page/99").data().decode()

    assert [line.split('"')[1] for line in data["lines"]] == [
        "GET /page/99 HTTP/1.1", *(f"GET /page/{n} HTTP/1.1" for n in range(990, 1000))
    ]
    assert data["search"]["stopped"] is None
    assert "11 matching lines for &#x27;page/99&#x27;" in page


def test_search_byte_limit_is_reported(dna: StandInEngine) -> None:
    """A search cut by the byte limit is reported on the page, in JSON and in a header."""
    write_access_log(dna, 20000)
    client = LogsClient(dna, search_max_bytes=64 * 1024)

    page = get(client, "/web/nginx", q="page/1999").data().decode()
    data = json.loads(get(client, "/web/nginx", q="page/1999", format="json").data())
    text = get(client, "/web/nginx", q="page/1999", format="text")

    assert "the search stopped after scanning" in page
    assert data["search"]["stopped"] == "bytes"
    assert [line.split()[6] for line in data["lines"]] == [f"/page/{n}" for n in range(19990, 20000)]
    assert data["search"]["scanned_bytes"] <= 64 * 1024
    assert text.header("X-Search-Stopped") == "bytes"


def test_search_match_limit_is_reported(dna: StandInEngine) -> None:
    """A search that found the requested number of lines reports that older ones were not searched."""
    write_access_log(dna, 1000)

    page = get(LogsClient(dna), "/web/nginx", q="GET", lines="10").data().decode()

    assert "the last 10 are shown, and older lines were not searched" in page
    assert page.count("GET /page/") == 10


def test_download_whole_and_last_lines(dna: StandInEngine) -> None:
    """download=1 sends the whole file as an attachment; with lines, its end."""
    lines = write_access_log(dna, 3000)
    client = LogsClient(dna)

    whole = get(client, "/web/nginx", download="1")
    last = get(client, "/web/nginx", download="1", lines="5")
    as_json = get(client, "/web/nginx", download="1", lines="5", format="json")

    assert whole.header("Content-Disposition") == 'attachment; filename="demo-web-nginx.log"'
    assert whole.header("Content-Type") == "text/plain; charset=utf-8"
    assert whole.is_stream
    assert whole.data() == dna.nginx_log_path("web").read_bytes()
    assert last.data().decode() == "".join(f"{line}\n" for line in lines[-5:])
    assert as_json.header("Content-Disposition") == 'attachment; filename="demo-web-nginx.json"'
    assert json.loads(as_json.data()) == {"lines": lines[-5:]}


def test_download_engine_log(dna: StandInEngine) -> None:
    """The engine log downloads under the instance's name."""
    response = get(LogsClient(dna), "/dna", download="1")

    assert response.header("Content-Disposition") == 'attachment; filename="demo-engine.log"'
    assert b"engine started" in response.data()


def test_container_log_forms(dna: StandInEngine) -> None:
    """The container log is escaped, searchable and downloadable through Docker streams."""
    client = LogsClient(dna)

    page = get(client, "/web/docker").data().decode()
    found = json.loads(get(client, "/web/docker", q="LINE</B>", format="json").data())
    download = get(client, "/web/docker", download="1")
    body = download.data()

    assert "container &lt;b&gt;line&lt;/b&gt; 2" in page
    assert found["lines"] == ["container <b>line</b> 2"]
    assert body == b"container line 1\ncontainer <b>line</b> 2\n"
    assert download.header("Content-Disposition") == 'attachment; filename="demo-web-docker.log"'
    assert all(stream.closed for _, _, stream in dna.streams)
    assert [(lines, follow) for lines, follow, _ in dna.streams] == [(100_000, False), (None, False)]


def test_follow_container_log_ends_with_stream(dna: StandInEngine) -> None:
    """A followed container log streams Docker's tail and ends when Docker's stream ends."""
    client = LogsClient(dna)

    response = get(client, "/web/docker", follow="1", lines="7", format="json")
    items = [json.loads(line) for line in response.data().splitlines() if line.strip()]

    assert response.header("Content-Type") == "application/x-ndjson"
    assert response.header("X-Accel-Buffering") == "no"
    assert items == [{"line": "container line 1"}, {"line": "container <b>line</b> 2"}]
    assert [(lines, follow) for lines, follow, _ in dna.streams] == [(7, True)]
    assert dna.streams[0][2].closed
    assert [thread for thread in threading.enumerate() if thread.name == "dna-log-follow"] == []


def test_follow_file_page_close_releases_file(dna: StandInEngine) -> None:
    """Closing a followed page mid-stream closes the followed log file."""
    write_access_log(dna, 3)
    client = LogsClient(dna, follow_keepalive=0.05)
    response = get(client, "/web/nginx", follow="1")
    chunks = response.iter_bytes()

    head = next(chunks).decode()
    with dna.nginx_log_path("web").open("a") as handle:
        handle.write("new <i>line</i>\n")
    received = next(chunks)
    while received == b"<!-- -->":
        received = next(chunks)
    chunks.close()

    assert "/page/2 " in head
    assert received == b"new &lt;i&gt;line&lt;/i&gt;\n"
    assert not any(name.endswith("web.access.log") for name in _open_files())


def test_follow_file_timeout_ends_page(dna: StandInEngine) -> None:
    """A follow ends at follow_timeout and closes the page."""
    write_access_log(dna, 1)
    client = LogsClient(dna, follow_timeout=0.3, follow_keepalive=0.1)

    text = get(client, "/web/nginx", follow="1", q="nothing").data().decode()

    assert text.endswith("Reload to follow again.</p></body></html>")
    assert "/page/0 " not in text


def test_follow_slots_limit_and_free(dna: StandInEngine) -> None:
    """Follows beyond max_follows get 503; a closed or dropped follow frees its slot."""
    write_access_log(dna, 3)
    client = LogsClient(dna, max_follows=1, follow_keepalive=0.05)

    first = get(client, "/web/nginx", follow="1")
    refused = get(client, "/web/nginx", follow="1", format="json")
    chunks = first.iter_bytes()
    next(chunks)
    chunks.close()
    second = get(client, "/web/nginx", follow="1")
    del second
    gc.collect()
    third = get(client, "/web/nginx", follow="1")

    assert first.status == 200
    assert refused.status == 503
    assert refused.header("Retry-After") == "30"
    assert "Too many followed logs: 1 are open" in json.loads(refused.data())["error"]
    assert third.status == 200


def test_client_rejects_invalid_limits(dna: StandInEngine) -> None:
    """Invalid limits fail when the client is built, naming the option."""
    with pytest.raises(ValueError, match="max_follows"):
        LogsClient(dna, max_follows=0)
    for option in ("follow_timeout", "follow_keepalive", "search_max_bytes", "search_timeout"):
        with pytest.raises(ValueError, match=option):
            LogsClient(dna, **{option: 0})


def _open_files() -> list[str]:
    import os

    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return names

