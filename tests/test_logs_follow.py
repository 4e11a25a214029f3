"""Following real logs over a real loopback server: nginx, Docker, Flask."""

from __future__ import annotations

import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread, nginx_get, wait_for

flask = pytest.importorskip("flask", reason="the follow tests serve the pages through Flask")
requests = pytest.importorskip("requests")

import dna_flask

pytestmark = pytest.mark.docker

HOST = "follow.example.test"


def follow_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "dna-log-follow"]


def open_on(path: Any) -> list[str]:
    """Return this process's file descriptors open on ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            continue
    return found


def child_processes(parent: int) -> list[int]:
    """Return the pids of the processes whose parent is ``parent``."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


@pytest.fixture
def deployed(engine: Any, image_factory: Any, private_nginx: Any) -> Any:
    """An engine with service ``web`` deployed and routed from :data:`HOST`."""
    engine.run_deploy("web", image_factory("follow me"), 80)
    engine.add_domain("web", HOST)
    wait_for(lambda: nginx_get(private_nginx, HOST).text == "follow me")
    # A reload returns while workers of the previous configuration still
    # accept connections for a moment, and they respond 404 for HOST.
    wait_for(lambda: len(child_processes(private_nginx.pid())) == 1)
    return engine


@pytest.fixture
def server(deployed: Any) -> Any:
    app = flask.Flask(__name__)
    blueprint = dna_flask.create_logs_client(deployed, follow_keepalive=0.2, follow_timeout=60)
    app.register_blueprint(blueprint, url_prefix="/logs")
    with ServerThread(app) as running:
        yield running


def read_until(lines: Any, marker: str) -> str:
    """Return the first streamed line that contains ``marker``."""
    received = []
    for line in lines:
        if marker in line:
            return str(line)
        received.append(line)
    raise AssertionError(f"the stream ended before a line with {marker!r}; it sent {received[-5:]!r}")


def test_follow_nginx_log_streams_new_line(deployed: Any, server: Any, private_nginx: Any) -> None:
    """A line nginx writes after the request started reaches the open page, escaped."""
    marker = f"marker-{secrets.token_hex(4)}"
    response = requests.get(f"{server.url}/logs/web/nginx?follow=1", stream=True, timeout=30)
    lines = response.iter_lines(decode_unicode=True)

    requests.get(
        f"http://{private_nginx.listen}/", headers={"Host": HOST, "User-Agent": f"<b>{marker}</b>"}, timeout=5
    )
    line = read_until(lines, marker)
    response.close()

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f"&lt;b&gt;{marker}&lt;/b&gt;" in line
    assert "<b>" not in line
    access_log = deployed.nginx_log_path("web")
    wait_for(lambda: open_on(access_log) == [])


def test_follow_container_log_streams_new_line(deployed: Any, server: Any, private_nginx: Any) -> None:
    """A line the container writes after the request started reaches the JSON stream."""
    response = requests.get(f"{server.url}/logs/web/docker?follow=1&format=json&lines=5", stream=True, timeout=30)
    response.encoding = "utf-8"
    lines = response.iter_lines(decode_unicode=True)

    # busybox httpd -v logs every response on stderr; only this request is a 404.
    nginx_get(private_nginx, HOST, f"/missing-{secrets.token_hex(4)}")
    line = read_until(lines, "response:404")
    response.close()

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert "response:404" in json.loads(line)["line"]
    # The server notices the closed connection at the next keepalive and
    # closes the body, which closes the Docker stream and its reader thread.
    wait_for(lambda: follow_threads() == [])


def test_follow_container_ends_when_it_stops(deployed: Any, server: Any) -> None:
    """Stopping the container ends its followed log."""
    response = requests.get(f"{server.url}/logs/web/docker?follow=1&format=text", stream=True, timeout=60)
    stopper = threading.Timer(1.0, deployed.stop_service, args=("web",))
    stopper.start()

    body = response.text
    stopper.join()

    assert response.status_code == 200
    assert "response:200" in body
    assert follow_threads() == []


def test_search_and_download_real_logs(deployed: Any, server: Any, private_nginx: Any) -> None:
    """Search and download work on the real access log and container log."""
    marker = f"find-{secrets.token_hex(4)}"
    requests.get(f"http://{private_nginx.listen}/", headers={"Host": HOST, "User-Agent": marker}, timeout=5)
    access_log = deployed.nginx_log_path("web")
    wait_for(lambda: marker in access_log.read_text())

    found = requests.get(f"{server.url}/logs/web/nginx", params={"q": marker.upper(), "format": "json"}, timeout=10)
    download = requests.get(f"{server.url}/logs/web/nginx?download=1", timeout=10)
    container = requests.get(f"{server.url}/logs/web/docker?download=1&lines=1", timeout=10)
    container_found = requests.get(
        f"{server.url}/logs/web/docker", params={"q": "RESPONSE:200", "format": "json"}, timeout=10
    ).json()

    assert [marker in line for line in found.json()["lines"]] == [True]
    assert download.headers["Content-Disposition"] == f'attachment; filename="{deployed.name}-web-nginx.log"'
    assert download.content == access_log.read_bytes()
    assert container.headers["Content-Disposition"] == f'attachment; filename="{deployed.name}-web-docker.log"'
    assert container.text.count("\n") == 1
    assert container_found["lines"]
    assert all("response:200" in line for line in container_found["lines"])
    assert container_found["search"]["stopped"] is None
