"""Crash safety: SIGKILL the serving process mid-deploy and mid-domain, restart, reconcile.

A child process serves the API through Flask with one engine step replaced
by a pause that writes a marker file. The test sends the request, waits for
the marker, kills the child with SIGKILL, builds a new engine on the same
state and runs ``propagate_services``. Afterwards records, containers and
nginx files must agree, and nginx must route every recorded domain.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest
from conftest import free_port, nginx_get, wait_for

from dna_core import DNA, LABEL_INSTANCE, KeyManager
from dna_core.nginx import ServerBlock, render_service

pytestmark = pytest.mark.docker

CHILD = r'''
import sys
import time
from pathlib import Path

import docker
import flask
from werkzeug.serving import make_server

import dna_core.nginx
import dna_flask
from dna_core import ALLOW_ALL, DNA, PrivateNginx

state_dir, nginx_root, listen, name, point, port, marker = sys.argv[1:8]


def pause(*args, **kwargs):
    Path(marker).write_text(point)
    while True:
        time.sleep(60)


if point == "deploy-after-start":
    wait_ready = DNA._wait_ready

    def hooked_wait_ready(self, container, container_port):
        wait_ready(self, container, container_port)
        pause()

    DNA._wait_ready = hooked_wait_ready
elif point == "deploy-before-nginx":
    DNA._write_config = pause
elif point == "domain-before-nginx":
    dna_core.nginx.Nginx.apply = pause
elif point == "domain-before-nginx-test":
    run = dna_core.nginx._run

    def hooked_run(command, *args, **kwargs):
        if "-t" in command:
            pause()
        return run(command, *args, **kwargs)

    dna_core.nginx._run = hooked_run

engine = DNA(
    name,
    state_dir=state_dir,
    nginx=PrivateNginx(nginx_root, listen=listen),
    docker_client=docker.from_env(timeout=120),
    stop_timeout=2,
    ready_timeout=20,
)
app = flask.Flask("crash")
app.register_blueprint(dna_flask.create_api_client(engine, precheck=ALLOW_ALL), url_prefix="/api")
make_server("127.0.0.1", int(port), app).serve_forever()
'''


def kill_mid_request(engine: DNA, private_nginx: Any, point: str, endpoint: str, body: dict[str, Any]) -> None:
    """Serve the API in a child, send ``body`` to ``endpoint`` and SIGKILL the child at ``point``."""
    port = free_port()
    marker = engine.state_dir / f"paused-{point}"
    key = KeyManager(engine.store).create("127.0.0.1").key
    child = subprocess.Popen(
        [
            sys.executable, "-c", CHILD, str(engine.state_dir), str(private_nginx.root),
            private_nginx.listen, engine.name, point, str(port), str(marker),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, timeout=30)
        sender = threading.Thread(target=send_ignoring_reset, args=(port, endpoint, body, key), daemon=True)
        sender.start()
        wait_for(marker.exists, timeout=60)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def send_ignoring_reset(port: int, endpoint: str, body: dict[str, Any], key: str) -> None:
    import requests

    try:
        requests.post(f"http://127.0.0.1:{port}/api/{endpoint}", json=body, headers={"App-Key-DNA": key}, timeout=120)
    except requests.RequestException:
        pass  # the server is killed mid-request on purpose


def restart(engine: DNA, private_nginx: Any, docker_client: Any) -> DNA:
    """Build a fresh engine on the same state, as a restarted server does, and reconcile."""
    restarted = DNA(
        engine.name,
        state_dir=engine.state_dir,
        nginx=private_nginx,
        docker_client=docker_client,
        stop_timeout=2,
        ready_timeout=20,
    )
    restarted.propagate_services()
    return restarted


def assert_consistent(engine: DNA, docker_client: Any, private_nginx: Any, pages: dict[str, str]) -> None:
    """Records, containers, nginx files and routing agree; ``pages`` maps domains to their text."""
    records = {record.name: record for record in engine.store.list_services()}
    containers = docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={engine.name}"})
    include_dir = private_nginx.settings.include_dir
    files = sorted(path.name for path in include_dir.glob(f"dna-{engine.name}-*.conf"))

    assert sorted(container.id for container in containers) == sorted(r.container_id for r in records.values())
    for container in containers:
        assert container.status == "running", container.name
    assert files == sorted(f"dna-{engine.name}-{name}.conf" for name in records)
    for name, record in records.items():
        blocks = [ServerBlock(domain.domain, domain.proxy_headers) for domain in engine.store.domains_of(name)]
        expected = render_service(engine.name, name, [record.host_port], blocks, private_nginx.settings)
        assert (include_dir / f"dna-{engine.name}-{name}.conf").read_text() == expected
    engine.nginx.test()
    for domain, text in pages.items():
        wait_for(lambda domain=domain, text=text: nginx_get(private_nginx, domain).text == text)


@pytest.fixture
def deployed(engine: DNA, image_factory: Any) -> dict[str, str]:
    """Service ``web`` serving v1 at web.crash.test, and a v2 image ready to deploy."""
    images = {"v1": image_factory("crash v1"), "v2": image_factory("crash v2")}
    engine.run_deploy("web", images["v1"], 80, init=True)
    engine.add_domain("web", "web.crash.test")
    return images


def test_crash_redeploy_after_start(
    engine: DNA, deployed: dict[str, str], private_nginx: Any, docker_client: Any
) -> None:
    """Killed once the new container runs but before it is recorded: v1 stays, v2 goes."""
    body = {"service": "web", "image": deployed["v2"], "port": 80, "options": {"init": True}}

    kill_mid_request(engine, private_nginx, "deploy-after-start", "run_deploy", body)
    restarted = restart(engine, private_nginx, docker_client)

    assert restarted.get_service_info("web").image == deployed["v1"]
    assert_consistent(restarted, docker_client, private_nginx, {"web.crash.test": "crash v1"})


def test_crash_redeploy_before_nginx(
    engine: DNA, deployed: dict[str, str], private_nginx: Any, docker_client: Any
) -> None:
    """Killed after recording v2 but before nginx switched: reconcile finishes the switch."""
    body = {"service": "web", "image": deployed["v2"], "port": 80, "options": {"init": True}}

    kill_mid_request(engine, private_nginx, "deploy-before-nginx", "run_deploy", body)
    restarted = restart(engine, private_nginx, docker_client)

    assert restarted.get_service_info("web").image == deployed["v2"]
    assert_consistent(restarted, docker_client, private_nginx, {"web.crash.test": "crash v2"})


def test_crash_first_deploy_after_start(
    engine: DNA, deployed: dict[str, str], private_nginx: Any, docker_client: Any
) -> None:
    """Killed while deploying a new service: its unrecorded container is removed."""
    body = {"service": "fresh", "image": deployed["v2"], "port": 80, "options": {"init": True}}

    kill_mid_request(engine, private_nginx, "deploy-after-start", "run_deploy", body)
    restarted = restart(engine, private_nginx, docker_client)

    assert [info.name for info in restarted.services] == ["web"]
    assert_consistent(restarted, docker_client, private_nginx, {"web.crash.test": "crash v1"})


@pytest.mark.parametrize("point", ["domain-before-nginx", "domain-before-nginx-test"])
def test_crash_add_domain(
    engine: DNA, deployed: dict[str, str], private_nginx: Any, docker_client: Any, point: str
) -> None:
    """Killed after recording a domain, before or while writing nginx: reconcile routes it."""
    body = {"service": "web", "domain": "new.crash.test"}

    kill_mid_request(engine, private_nginx, point, "add_domain", body)
    restarted = restart(engine, private_nginx, docker_client)

    assert restarted.get_service_info("web").domains == ["new.crash.test", "web.crash.test"]
    assert_consistent(
        restarted, docker_client, private_nginx, {"web.crash.test": "crash v1", "new.crash.test": "crash v1"}
    )
