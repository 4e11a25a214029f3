"""Failing hosts and concurrency: Docker down or slow, nginx failing, locks, SQLite writers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import docker
import pytest
from conftest import nginx_get, wait_for

from dna_core import (
    ALLOW_ALL,
    AUTH_HEADER,
    DNA,
    ApiClient,
    DockerUnavailable,
    ExternalCommandFailed,
    NginxSettings,
    Request,
)
from dna_core.nginx import Nginx, ServerBlock, render_service
from dna_core.store import Store

CLIENT_ADDRESS = "127.0.0.1"
#: Seconds the Docker client waits for a response in these tests.
DOCKER_TIMEOUT = 1
#: A generous upper bound for a call that must not hang; far above DOCKER_TIMEOUT.
HANG_LIMIT = 60


def offline_engine(tmp_path: Path, base_url: str) -> DNA:
    """An engine whose Docker client talks to ``base_url`` and whose nginx commands succeed."""
    return DNA(
        "failing",
        state_dir=tmp_path / "state",
        nginx=NginxSettings(
            include_dir=tmp_path / "sites", log_dir=tmp_path / "logs",
            test_command=("true",), reload_command=("true",),
        ),
        docker_client=docker.DockerClient(base_url=base_url, version="1.41", timeout=DOCKER_TIMEOUT),
    )


@pytest.fixture
def silent_socket(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts connections and never responds, like a hung daemon."""
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()
    server.close()


def run_bounded(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``function`` in a thread; fail if it hangs, else return its result or exception."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = function(*args, **kwargs)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT)
    assert not thread.is_alive(), f"{function.__name__} still running after {HANG_LIMIT} s"
    return outcome.get("error", outcome.get("result"))


def api_call(client: ApiClient, endpoint: str, body: dict[str, Any]) -> Any:
    key = client.keys.create(CLIENT_ADDRESS).key
    request = Request(
        method="POST", path=f"/{endpoint}", headers={AUTH_HEADER: key},
        body=json.dumps(body).encode(), remote_addr=CLIENT_ADDRESS,
    )
    return client.handle(endpoint, request)


# Docker down or slow


@pytest.mark.parametrize("daemon", ["missing", "hung"])
@pytest.mark.parametrize(
    "operation, arguments",
    [
        ("run_deploy", ("web", "web:v1", 80)),
        ("propagate_services", ()),
        ("get_service_info", ("web",)),
        ("start_service", ("web",)),
        ("stop_service", ("web",)),
        ("delete_service", ("web",)),
        ("docker_logs", ("web",)),
        ("pull_image", ("127.0.0.1:5999/web",)),
    ],
)
def test_docker_unreachable_is_503(
    tmp_path: Path, silent_socket: str, daemon: str, operation: str, arguments: tuple[Any, ...]
) -> None:
    """A missing or hung daemon makes every Docker operation raise DockerUnavailable, not hang."""
    base_url = f"unix://{tmp_path}/missing.sock" if daemon == "missing" else silent_socket
    engine = offline_engine(tmp_path, base_url)
    engine.store.save_service("web", "web:v1", 80, "0" * 64, 40000, {})

    error = run_bounded(getattr(engine, operation), *arguments)

    assert isinstance(error, DockerUnavailable), repr(error)
    assert error.status == 503
    assert "Docker daemon" in str(error)


def test_docker_unreachable_keeps_service_routed(tmp_path: Path, silent_socket: str) -> None:
    """delete_service fails before it touches nginx or the record when Docker hangs."""
    engine = offline_engine(tmp_path, silent_socket)
    engine.store.save_service("web", "web:v1", 80, "0" * 64, 40000, {})
    engine.store.add_domain("web.example.test", "web", {})
    engine._write_config("web")
    path = engine.nginx.path_for(engine.name, "web")
    before = path.read_text()

    error = run_bounded(engine.delete_service, "web")

    assert isinstance(error, DockerUnavailable)
    assert path.read_text() == before
    assert engine.store.get_service("web") is not None


def test_docker_hung_api_answers_503(tmp_path: Path, silent_socket: str) -> None:
    """Through the API a hung daemon gives a JSON 503 that names what failed."""
    client = ApiClient(offline_engine(tmp_path, silent_socket), precheck=ALLOW_ALL)

    response = run_bounded(api_call, client, "run_deploy", {"service": "web", "image": "web:v1", "port": 80})

    body = json.loads(response.data())
    assert response.status == 503
    assert "did not answer" in body["error"]
    assert body["title"] == "Service Unavailable"


def test_docker_hung_build_streams_error(tmp_path: Path, silent_socket: str) -> None:
    """A build against a hung daemon fails with 503 before any progress is streamed."""
    (tmp_path / "builds" / "app").mkdir(parents=True)
    (tmp_path / "builds" / "app" / "Dockerfile").write_text("FROM scratch\n")
    engine = offline_engine(tmp_path, silent_socket)
    engine.build_root = tmp_path / "builds"
    client = ApiClient(engine, precheck=ALLOW_ALL)

    response = run_bounded(api_call, client, "build_image", {"options": {"path": "app"}})

    assert response.status == 503


# nginx failures


def failing_reload(settings: NginxSettings, message: str) -> NginxSettings:
    command = ("sh", "-c", f"echo '{message}' >&2; exit 1")
    return attrs.evolve(settings, reload_command=command)


@pytest.mark.docker
def test_nginx_reload_failure_restores_config(engine: DNA, image_factory: Any, private_nginx: Any) -> None:
    """A failed reload puts the previous file back and reports nginx's message as a 502."""
    engine.run_deploy("web", image_factory("reload test"), 80, init=True)
    engine.add_domain("web", "one.reload.test")
    path = engine.nginx.path_for(engine.name, "web")
    before = path.read_text()
    message = "nginx: [emerg] bind() to 127.0.0.1:1 failed (13: Permission denied)"
    engine.nginx = Nginx(failing_reload(private_nginx.settings, message), log=engine.log)
    client = ApiClient(engine, precheck=ALLOW_ALL)

    response = api_call(client, "add_domain", {"service": "web", "domain": "two.reload.test"})

    body = json.loads(response.data())
    assert response.status == 502
    assert message in body["error"]
    assert path.read_text() == before
    assert [domain.domain for domain in engine.store.domains_of("web")] == ["one.reload.test"]
    wait_for(lambda: nginx_get(private_nginx, "one.reload.test").text == "reload test")


@pytest.mark.docker
def test_nginx_remove_domain_reload_failure(engine: DNA, image_factory: Any, private_nginx: Any) -> None:
    """remove_domain keeps the domain routed and recorded when the reload fails."""
    engine.run_deploy("web", image_factory("remove test"), 80, init=True)
    engine.add_domain("web", "keep.reload.test")
    path = engine.nginx.path_for(engine.name, "web")
    before = path.read_text()
    engine.nginx = Nginx(failing_reload(private_nginx.settings, "reload refused"), log=engine.log)

    with pytest.raises(ExternalCommandFailed, match="reload refused"):
        engine.remove_domain("web", "keep.reload.test")

    assert path.read_text() == before
    assert engine.store.get_domain("keep.reload.test") is not None


@pytest.mark.docker
def test_nginx_test_failure_restores_config(engine: DNA, image_factory: Any, private_nginx: Any) -> None:
    """When nginx -t fails because of another file, the service file is restored and nginx's text returned."""
    engine.run_deploy("web", image_factory("test failure"), 80, init=True)
    path = engine.nginx.path_for(engine.name, "web")
    before = path.read_text()
    broken = private_nginx.settings.include_dir / "zz-broken.conf"
    broken.write_text("server { listen 127.0.0.1:1; bogus_directive on; }\n")

    try:
        with pytest.raises(ExternalCommandFailed, match="bogus_directive"):
            engine.add_domain("web", "never.reload.test")
    finally:
        broken.unlink()

    assert path.read_text() == before
    assert engine.store.get_domain("never.reload.test") is None
    engine.nginx.test()


# Locks


class BlockingCertificates:
    """A certificate provider that holds each domain until the test releases it."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.release = {}  # type: dict[str, threading.Event]
        self.lock = threading.Lock()

    def ensure(self, domain: str, force_wildcard: bool, force_provision: bool) -> str | None:
        with self.lock:
            self.entered.append(domain)
            event = self.release.setdefault(domain, threading.Event())
        event.wait(HANG_LIMIT)
        return None

    def let_go(self, domain: str) -> None:
        with self.lock:
            self.release.setdefault(domain, threading.Event()).set()


@pytest.mark.docker
def test_locks_serialize_one_service_parallel_others(engine: DNA) -> None:
    """A second operation on a busy service waits; one on another service proceeds."""
    certificates = BlockingCertificates()
    engine.certificates = certificates
    for service in ("alpha", "beta"):
        engine.store.save_service(service, "web:v1", 80, None, None, {})
    threads = {
        domain: threading.Thread(target=engine.add_domain, args=(service, domain), daemon=True)
        for service, domain in [("alpha", "a1.lock.test"), ("alpha", "a2.lock.test"), ("beta", "b1.lock.test")]
    }

    threads["a1.lock.test"].start()
    wait_for(lambda: "a1.lock.test" in certificates.entered)
    threads["a2.lock.test"].start()
    threads["b1.lock.test"].start()
    # beta gets in while alpha's first call still holds alpha's lock.
    wait_for(lambda: "b1.lock.test" in certificates.entered)
    # Short grace period: were alpha not serialized, a2 would enter by now.
    time.sleep(0.5)
    entered_while_busy = list(certificates.entered)
    for domain in threads:
        certificates.let_go(domain)
    for thread in threads.values():
        thread.join(HANG_LIMIT)

    assert "a2.lock.test" not in entered_while_busy
    assert certificates.entered.index("a2.lock.test") > certificates.entered.index("a1.lock.test")
    assert sorted(d.domain for d in engine.store.domains_of("alpha")) == ["a1.lock.test", "a2.lock.test"]
    assert [d.domain for d in engine.store.domains_of("beta")] == ["b1.lock.test"]


# SQLite under concurrent writers

WRITERS = 20
WRITES_PER_WRITER = 25



def write_many(store: Store, writer: int, count: int) -> None:
    """Write ``count`` services, domains and keys, and fight over one shared row."""
    for number in range(count):
        service = f"w{writer}-s{number}"
        store.save_service(service, "web:v1", 80, None, 40000 + number, {"writer": writer})
        store.add_domain(f"d{number}.w{writer}.test", service, {"X-N": str(number)})
        store.save_service("shared", "web:v1", 80, None, writer, {"last": writer})
        store.add_key(f"k{writer}x{number}", "0" * 64, "127.0.0.1", 2e9)
        if number % 5 == 0:
            store.revoke_key(f"k{writer}x{number}")
            store.remove_domain(f"d{number}.w{writer}.test")


WRITER_SCRIPT = """
import sys
from dna_core.store import Store
from test_failures import write_many

write_many(Store(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
"""


def check_store(path: Path) -> None:
    store = Store(path)
    connection = store._connection()
    services = store.list_services()
    expected_domains = WRITERS * (WRITES_PER_WRITER - len(range(0, WRITES_PER_WRITER, 5)))

    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    assert len(services) == WRITERS * WRITES_PER_WRITER + 1
    assert connection.execute("SELECT COUNT(*) FROM domains").fetchone()[0] == expected_domains
    assert connection.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == WRITERS * WRITES_PER_WRITER
    for service in services:
        if service.name != "shared":
            writer = int(service.name.split("-")[0][1:])
            assert service.options == {"writer": writer}
    shared = store.get_service("shared")
    assert shared is not None and shared.options == {"last": shared.host_port}


def test_store_concurrent_writer_threads(tmp_path: Path) -> None:
    """20 threads sharing one Store write without losing or tearing a row."""
    path = tmp_path / "threads.sqlite3"
    store = Store(path)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            write_many(store, writer, WRITES_PER_WRITER)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_LIMIT)

    assert errors == []
    check_store(path)


def test_store_concurrent_writer_processes(tmp_path: Path) -> None:
    """20 processes with their own connections write the same file consistently."""
    path = tmp_path / "processes.sqlite3"
    Store(path)
    here = Path(__file__).resolve().parent
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}

    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(path), str(writer), str(WRITES_PER_WRITER)],
            env=environment, stderr=subprocess.PIPE, text=True,
        )
        for writer in range(WRITERS)
    ]
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=HANG_LIMIT * 2)
        if process.returncode != 0:
            failures.append(stderr)

    assert failures == []
    check_store(path)


@pytest.mark.docker
def test_propagate_keeps_other_instance_files(tmp_path: Path, docker_client: Any) -> None:
    """Reconciling instance 'inst' leaves the nginx files of instance 'inst-two' alone."""
    settings = NginxSettings(
        include_dir=tmp_path / "sites", log_dir=tmp_path / "logs",
        test_command=("true",), reload_command=("true",),
    )
    suffix = os.urandom(3).hex()
    short = DNA(f"inst{suffix}", state_dir=tmp_path / "one", nginx=settings, docker_client=docker_client)
    long = DNA(f"inst{suffix}-two", state_dir=tmp_path / "two", nginx=settings, docker_client=docker_client)
    long.store.save_service("web", "web:v1", 80, None, None, {})
    long._write_config("web")
    other_file = long.nginx.path_for(long.name, "web")
    stale_file = short.nginx.path_for(short.name, "gone")
    stale_file.write_text(f"# Written by docker-dna instance {short.name} for service gone; edits are overwritten.\n")

    short.propagate_services()

    assert other_file.exists()
    assert short.nginx.path_for(short.name, "two-web") == other_file
    assert not stale_file.exists()


def test_store_survives_killed_writers(tmp_path: Path) -> None:
    """SIGKILL of half of 20 writer processes mid-run leaves a sound database."""
    path = tmp_path / "killed.sqlite3"
    store = Store(path)
    here = Path(__file__).resolve().parent
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(path), str(writer), "1000"],
            env=environment, stderr=subprocess.DEVNULL,
        )
        for writer in range(WRITERS)
    ]

    wait_for(lambda: len(store.list_services()) > 200, timeout=HANG_LIMIT)
    for process in processes[::2]:
        process.send_signal(signal.SIGKILL)
    for process in processes[1::2]:
        process.terminate()
    for process in processes:
        process.wait(timeout=HANG_LIMIT)
    connection = Store(path)._connection()

    assert [process.returncode for process in processes[::2]] == [-signal.SIGKILL] * (WRITERS // 2)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    for service in Store(path).list_services():
        if service.name == "shared":
            assert service.options == {"last": service.host_port}
        else:
            assert service.options == {"writer": int(service.name[1:].split("-")[0])}


@pytest.mark.docker
def test_concurrent_domains_keep_nginx_consistent(engine: DNA, private_nginx: Any) -> None:
    """20 threads adding domains to 10 services leave every file as the records render it."""
    services = [f"svc{number}" for number in range(10)]
    for number, service in enumerate(services):
        engine.store.save_service(service, "web:v1", 80, None, 41000 + number, {})
    errors: list[BaseException] = []

    def add(service: str, domain: str) -> None:
        try:
            engine.add_domain(service, domain)
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=add, args=(service, f"d{copy}.{service}.test"))
        for service in services
        for copy in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_LIMIT)

    assert errors == []
    for number, service in enumerate(services):
        domains = [domain.domain for domain in engine.store.domains_of(service)]
        expected = render_service(
            engine.name, service, [41000 + number], [ServerBlock(domain) for domain in domains], engine.nginx.settings
        )
        assert domains == [f"d0.{service}.test", f"d1.{service}.test"]
        assert engine.nginx.path_for(engine.name, service).read_text() == expected
    engine.nginx.test()
