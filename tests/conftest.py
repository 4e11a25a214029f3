"""Fixtures for tests against the real Docker daemon and a private nginx.

Every test run gets its own prefix, so instance names, networks, images and
labels never collide with leftovers of earlier runs; each fixture removes
what it created by name or id.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

RUN_ID = secrets.token_hex(3)

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY www /www
{extra}
CMD ["/bin/busybox", "httpd", "-f", "-v", "-p", "80", "-h", "/www"]
"""


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns a truthy value; return that value.

    nginx reloads asynchronously, so tests wait for the new workers this way
    instead of sleeping.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as error:  # the condition may fail until the state settles
            last_error = error
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last error: {last_error!r})")


def write_context(root: Path, page: str, extra: str = "") -> Path:
    """Write a build context for a busybox httpd image serving ``page``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "busybox")
    (root / "www").mkdir(exist_ok=True)
    (root / "www" / "index.html").write_text(page)
    (root / "Dockerfile").write_text(DOCKERFILE.format(extra=extra))
    return root


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    import docker

    client = docker.from_env(timeout=120)
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def image_factory(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Build busybox httpd images serving a given page; remove them at the end."""
    built: list[str] = []

    def build(page: str) -> str:
        tag = f"dna-test-{RUN_ID}/web:v{len(built) + 1}"
        context = write_context(tmp_path_factory.mktemp("context"), page)
        docker_client.images.build(path=str(context), tag=tag, rm=True)
        built.append(tag)
        return tag

    yield build
    for tag in built:
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:
            pass


@pytest.fixture
def private_nginx(tmp_path: Path) -> Iterator[Any]:
    from dna_core import PrivateNginx

    nginx = PrivateNginx(tmp_path / "nginx", listen=f"127.0.0.1:{free_port()}")
    nginx.start()
    yield nginx
    nginx.stop()


_instances = iter(range(1, 10_000))


@pytest.fixture
def engine(tmp_path: Path, private_nginx: Any, docker_client: Any) -> Iterator[Any]:
    """A DNA engine of its own name on the real Docker daemon and a private nginx."""
    from dna_core import DNA, LABEL_INSTANCE

    name = f"t{RUN_ID}-{next(_instances)}"
    build_root = tmp_path / "builds"
    build_root.mkdir()
    dna = DNA(
        name,
        state_dir=tmp_path / "state",
        nginx=private_nginx,
        docker_client=docker_client,
        build_root=build_root,
        stop_timeout=2,
        ready_timeout=20,
    )
    yield dna
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={name}"}):
        container.remove(force=True)
    for network in docker_client.networks.list(names=[dna.network_name]):
        network.remove()


def nginx_get(nginx: Any, host: str, path: str = "/") -> Any:
    """Send a GET through the private nginx with the given ``Host`` header."""
    import requests

    return requests.get(f"http://{nginx.listen}{path}", headers={"Host": host}, timeout=5)


class ServerThread:
    """A real threaded WSGI server on a loopback port, for streaming tests."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
