"""Certificates: real certbot against a loopback Pebble, served by the engine's nginx.

HTTP-01 challenges are validated by Pebble through the private nginx, DNS-01
challenges through pebble-challtestsrv's DNS server, filled by a certbot
manual hook. certbot only ever talks to the loopback Pebble.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import acme_server
import pytest
import requests
from conftest import RUN_ID, free_port, wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dna_core import (
    ALLOW_ALL,
    DNA,
    LABEL_INSTANCE,
    ApiClient,
    Certbot,
    CertificateFailed,
    KeyManager,
    NginxSettings,
    PrivateNginx,
    Request,
    ServerBlock,
)
from dna_core.nginx import render_service

PAGE = "hello from the app container"

_instances = iter(range(1, 10_000))


def certbot_runs(engine: DNA, subcommand: str) -> int:
    """Count the certbot runs of ``subcommand`` that the engine's log records."""
    runs = 0
    for line in engine.log_path.read_text().splitlines():
        if " running " in line and "certbot" in line and f" {subcommand} " in line:
            runs += 1
    return runs


def https_get(port: int, host: str, root_pem: str, path: str = "/") -> tuple[int, str]:
    """GET ``path`` over TLS from 127.0.0.1:``port`` with SNI ``host``, verifying against ``root_pem``."""
    context = ssl.create_default_context(cadata=root_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # noqa: SIM117 (Python 3.9)
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode("utf-8", "replace")


def http_get(nginx: PrivateNginx, host: str, path: str = "/") -> requests.Response:
    """GET ``path`` through nginx's HTTP listener with ``Host: host``, not following redirects."""
    return requests.get(f"http://{nginx.listen}{path}", headers={"Host": host}, timeout=5, allow_redirects=False)


def http_get_status(nginx: PrivateNginx, host: str, status: int, path: str = "/") -> requests.Response | None:
    """Return the response to :func:`http_get` if it has ``status``; polled while nginx reloads."""
    response = http_get(nginx, host, path)
    return response if response.status_code == status else None


def response_json(response: Any) -> Any:
    return json.loads(b"".join(response.iter_bytes()))


def https_get_when_ready(port: int, host: str, root_pem: str) -> tuple[int, str]:
    """GET over TLS, retrying until nginx's new workers serve ``host`` (at most 15 s)."""
    result: tuple[int, str] = wait_for(lambda: https_get(port, host, root_pem))
    return result


def https_refused(port: int, host: str, root_pem: str) -> bool:
    """Whether a TLS request to ``host`` fails; nginx reloads asynchronously, so callers poll this."""
    try:
        https_get(port, host, root_pem)
    except OSError:
        return True
    return False


def https_port(engine: DNA) -> int:
    return int(str(engine.nginx.settings.https_listen).rsplit(":", 1)[1])


def site_file(engine: DNA, service: str) -> Path:
    return engine.nginx.path_for(engine.name, service)


@pytest.fixture(scope="session")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[acme_server.AcmeServer]:
    """Pebble and challtestsrv for the whole session; Pebble validates HTTP-01 on one fixed nginx port."""
    missing = [tool for tool in ("certbot", "pebble", "pebble-challtestsrv") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install the Debian packages certbot and pebble")
    server = acme_server.start(tmp_path_factory.mktemp("acme"), http_port=free_port())
    yield server
    acme_server.stop(server)


@pytest.fixture(scope="session")
def root_pem(acme: acme_server.AcmeServer) -> str:
    return acme.issuing_root()


@pytest.fixture(scope="session")
def web_image(image_factory: Any) -> str:
    return image_factory(PAGE)


def make_certbot(acme: acme_server.AcmeServer, directory: Path, **options: Any) -> Certbot:
    return Certbot(
        acme.directory_url,
        directory,
        email="admin@example.test",
        env={"REQUESTS_CA_BUNDLE": str(acme.ca_bundle)},
        timeout=120,
        **options,
    )


@pytest.fixture
def acme_nginx(acme: acme_server.AcmeServer) -> Iterator[PrivateNginx]:
    """A private nginx on the port Pebble validates HTTP-01 on, with a TLS listener.

    Its workers run as ``nobody`` when the tests run as root, so its root
    lies outside pytest's private temp dir and can be traversed by anyone:
    nginx must read the challenge files that certbot writes to its webroot.
    """
    root = Path(tempfile.mkdtemp(prefix="dna-acme-nginx-"))
    root.chmod(0o755)
    nginx = PrivateNginx(
        root,
        listen=f"127.0.0.1:{acme.http_port}",
        https_listen=f"127.0.0.1:{free_port()}",
    )
    nginx.start()
    yield nginx
    nginx.stop()
    shutil.rmtree(root, ignore_errors=True)


def _engine(tmp_path: Path, nginx: PrivateNginx, docker_client: Any, certbot: Certbot, cb_args: list[str]) -> DNA:
    return DNA(
        f"c{RUN_ID}-{next(_instances)}",
        cb_args=cb_args,
        state_dir=tmp_path / "state",
        nginx=nginx,
        docker_client=docker_client,
        certificates=certbot,
        stop_timeout=2,
        ready_timeout=20,
    )


def _remove_engine_resources(engine: DNA, docker_client: Any) -> None:
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={engine.name}"}):
        container.remove(force=True)
    for network in docker_client.networks.list(names=[engine.network_name]):
        network.remove()


@pytest.fixture
def tls_engine(
    tmp_path: Path, acme_nginx: PrivateNginx, docker_client: Any, acme: acme_server.AcmeServer
) -> Iterator[DNA]:
    """An engine whose certificates come from Pebble; removed certificates are kept."""
    engine = _engine(tmp_path, acme_nginx, docker_client, make_certbot(acme, tmp_path / "certbot"), acme.dns_args())
    yield engine
    _remove_engine_resources(engine, docker_client)


pytestmark = [pytest.mark.docker, pytest.mark.nginx]


@pytest.mark.acme
def test_http01_certificate_serves_https(tls_engine: DNA, web_image: str, root_pem: str) -> None:
    """A domain gets a certificate over HTTP-01 and serves the container on HTTPS."""
    tls_engine.run_deploy("web", web_image, 80)

    assert tls_engine.add_domain("web", "app.example.test") is True

    status, body = https_get_when_ready(https_port(tls_engine), "app.example.test", root_pem)
    assert status == 200
    assert PAGE in body
    record = tls_engine.store.get_domain("app.example.test")
    assert record is not None
    assert record.certificate == "app.example.test"
    log = tls_engine.log_path.read_text()
    assert "--server https://127.0.0.1:14000/dir" in log
    assert "certbot: " in log


@pytest.mark.acme
def test_http_redirects_except_challenge(tls_engine: DNA, web_image: str, acme_nginx: PrivateNginx) -> None:
    """Plain HTTP redirects to HTTPS, but the ACME challenge path is still served."""
    tls_engine.run_deploy("web", web_image, 80)
    tls_engine.add_domain("web", "app.example.test")
    challenge = acme_nginx.root / "webroot" / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True, exist_ok=True)
    (challenge / "probe").write_text("probe-token")

    redirect = wait_for(lambda: http_get_status(acme_nginx, "app.example.test", 301, "/page?x=1"))
    token = http_get(acme_nginx, "app.example.test", "/.well-known/acme-challenge/probe")

    assert redirect.headers["Location"] == f"https://app.example.test:{https_port(tls_engine)}/page?x=1"
    assert token.status_code == 200
    assert token.text == "probe-token"


@pytest.mark.acme
def test_remove_domain_then_reuse(tls_engine: DNA, web_image: str, root_pem: str) -> None:
    """remove_domain drops the TLS block and keeps the certificate, which a later add reuses."""
    tls_engine.run_deploy("web", web_image, 80)
    tls_engine.add_domain("web", "app.example.test")
    assert "ssl_certificate" in site_file(tls_engine, "web").read_text()

    assert tls_engine.remove_domain("web", "app.example.test") is True

    assert "ssl_certificate" not in site_file(tls_engine, "web").read_text()
    assert "app.example.test" not in site_file(tls_engine, "web").read_text()
    wait_for(lambda: https_refused(https_port(tls_engine), "app.example.test", root_pem))
    assert tls_engine.certificates is not None
    assert tls_engine.certificates.files("app.example.test") is not None

    tls_engine.add_domain("web", "app.example.test")

    assert certbot_runs(tls_engine, "certonly") == 1
    assert "reusing it" in tls_engine.log_path.read_text()
    status, body = https_get_when_ready(https_port(tls_engine), "app.example.test", root_pem)
    assert status == 200
    assert PAGE in body


@pytest.mark.acme
def test_force_provision_skips_reuse(tls_engine: DNA, web_image: str, root_pem: str) -> None:
    """force_provision requests a new certificate although a matching one exists."""
    tls_engine.run_deploy("web", web_image, 80)
    tls_engine.add_domain("web", "app.example.test")
    assert tls_engine.certificates is not None
    first = tls_engine.certificates.files("app.example.test")
    assert first is not None
    first_serial = x509.load_pem_x509_certificates(first[0].read_bytes())[0].serial_number

    tls_engine.add_domain("web", "app.example.test", force_provision=True)

    assert certbot_runs(tls_engine, "certonly") == 2
    second = tls_engine.certificates.files("app.example.test")
    assert second is not None
    assert x509.load_pem_x509_certificates(second[0].read_bytes())[0].serial_number != first_serial
    status, _ = https_get_when_ready(https_port(tls_engine), "app.example.test", root_pem)
    assert status == 200


@pytest.mark.acme
def test_wildcard_dns01_then_reuse(tls_engine: DNA, web_image: str, root_pem: str) -> None:
    """Both flags provision domain and *.domain over DNS-01; a subdomain then reuses it."""
    tls_engine.run_deploy("web", web_image, 80)

    tls_engine.add_domain("web", "example.test", force_wildcard=True, force_provision=True)
    tls_engine.add_domain("web", "app.example.test")

    assert certbot_runs(tls_engine, "certonly") == 1
    assert "--preferred-challenges dns" in tls_engine.log_path.read_text()
    for domain in ("example.test", "app.example.test"):
        record = tls_engine.store.get_domain(domain)
        assert record is not None
        assert record.certificate == "wildcard.example.test"
    assert tls_engine.certificates is not None
    info = tls_engine.certificates.find("example.test", wildcard=True)
    assert info is not None
    assert info.names == {"example.test", "*.example.test"}
    assert tls_engine.certificates.ensure("example.test", force_wildcard=True) == "wildcard.example.test"
    assert certbot_runs(tls_engine, "certonly") == 1
    for host in ("example.test", "www.example.test", "app.example.test"):
        status, body = https_get_when_ready(https_port(tls_engine), host, root_pem)
        assert status == 200, host
        assert PAGE in body, host


@pytest.mark.acme
def test_failed_validation_keeps_http(
    tls_engine: DNA, web_image: str, acme: acme_server.AcmeServer, acme_nginx: PrivateNginx
) -> None:
    """A failed validation leaves the domain on HTTP, returns what failed, and backs off."""
    tls_engine.run_deploy("web", web_image, 80)
    client = ApiClient(tls_engine, precheck=ALLOW_ALL)
    key = KeyManager(tls_engine.store).create("127.0.0.1").key
    request = Request(
        method="POST",
        path="/add_domain",
        headers={"App-Key-DNA": key, "Content-Type": "application/json"},
        body=json.dumps({"service": "web", "domain": "fail.example.test"}).encode(),
        remote_addr="127.0.0.1",
    )
    # Nothing listens on 127.0.0.2, so Pebble's HTTP-01 connection is refused.
    acme.manage("add-a", host="fail.example.test.", addresses=["127.0.0.2"])
    try:
        first = client.handle("add_domain", request)
        second = client.handle("add_domain", request)
    finally:
        acme.manage("clear-a", host="fail.example.test.")

    assert first.status == 200
    answer = response_json(first)
    assert answer["success"] is False
    assert "certbot certonly exited" in answer["error"]
    plain = wait_for(lambda: http_get_status(acme_nginx, "fail.example.test", 200))
    assert PAGE in plain.text
    assert "ssl_certificate" not in site_file(tls_engine, "web").read_text()
    log = tls_engine.log_path.read_text()
    assert "certbot: " in log
    assert "no new certificate for fail.example.test, it stays on HTTP" in log
    assert second.status == 200
    retry = response_json(second)
    assert retry["success"] is False
    assert "next attempt is allowed in" in retry["error"]
    assert certbot_runs(tls_engine, "certonly") == 1


@pytest.mark.acme
def test_delete_service_revokes_when_asked(
    tmp_path: Path, acme_nginx: PrivateNginx, docker_client: Any, acme: acme_server.AcmeServer, web_image: str
) -> None:
    """With on_remove='revoke', delete_service removes the TLS block and revokes the certificate."""
    certbot = make_certbot(acme, tmp_path / "certbot", on_remove="revoke")
    engine = _engine(tmp_path, acme_nginx, docker_client, certbot, [])
    try:
        engine.run_deploy("web", web_image, 80)
        engine.add_domain("web", "app.example.test")
        assert certbot.files("app.example.test") is not None

        engine.delete_service("web")

        assert not site_file(engine, "web").exists()
        assert certbot_runs(engine, "revoke") == 1
        assert certbot.files("app.example.test") is None
        assert certbot.find("app.example.test") is None
    finally:
        _remove_engine_resources(engine, docker_client)


def test_certbot_timeout_is_reported(tmp_path: Path) -> None:
    """A certbot run longer than the timeout is killed and reported as a failure."""
    certbot = Certbot(acme_server.DIRECTORY_URL, tmp_path / "certbot", webroot=tmp_path, timeout=0.2)

    with pytest.raises(CertificateFailed, match="timed out after 0.2 s"):
        certbot.ensure("app.example.test")


def test_unreachable_acme_server_is_reported(tmp_path: Path) -> None:
    """certbot failing to reach the ACME server raises with certbot's own message."""
    certbot = Certbot(f"https://127.0.0.1:{free_port()}/dir", tmp_path / "certbot", webroot=tmp_path, timeout=60)

    with pytest.raises(CertificateFailed, match="certbot certonly exited 1: .*127.0.0.1"):
        certbot.ensure("app.example.test")


def test_wildcard_needs_dns_arguments(tmp_path: Path) -> None:
    """A wildcard without DNS plugin or hook arguments fails before certbot runs."""
    certbot = Certbot(acme_server.DIRECTORY_URL, tmp_path / "certbot", webroot=tmp_path)

    with pytest.raises(CertificateFailed, match="needs DNS-01"):
        certbot.ensure("example.test", force_wildcard=True)


def test_engine_rejects_certificates_without_https(tmp_path: Path) -> None:
    """Certificates without an HTTPS listen address are a configuration error."""
    certbot = Certbot(acme_server.DIRECTORY_URL, tmp_path / "certbot")

    with pytest.raises(ValueError, match="https_listen"):
        DNA("plain", state_dir=tmp_path / "state", nginx=PrivateNginx(tmp_path / "nginx"), certificates=certbot)


def test_certbot_rejects_bad_settings(tmp_path: Path) -> None:
    """Certbot names the bad setting and the accepted values."""
    with pytest.raises(ValueError, match="on_remove='delete'"):
        Certbot(acme_server.DIRECTORY_URL, tmp_path, on_remove="delete")
    with pytest.raises(ValueError, match="https://"):
        Certbot("http://127.0.0.1:14000/dir", tmp_path)


def write_lineage(config_dir: Path, name: str, names: list[str], days: float) -> None:
    """Write a certbot-style lineage (renewal file and live PEM files) with a self-signed certificate."""
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    live = config_dir / "live" / name
    live.mkdir(parents=True)
    (live / "fullchain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (live / "privkey.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (config_dir / "renewal").mkdir(exist_ok=True)
    (config_dir / "renewal" / f"{name}.conf").write_text(
        f"version = 2.1.0\narchive_dir = {config_dir}/archive/{name}\n"
        f"cert = {live}/cert.pem\nprivkey = {live}/privkey.pem\n"
        f"chain = {live}/chain.pem\nfullchain = {live}/fullchain.pem\n\n"
        "[renewalparams]\nauthenticator = webroot\n"
    )


@pytest.mark.parametrize(
    ("domain", "wildcard", "expected"),
    [
        ("app.example.test", False, "app-exact"),
        ("other.example.test", False, "wild"),
        ("deep.app.example.test", False, None),
        ("example.test", False, "wild"),
        ("example.test", True, "wild"),
        ("old.example.test", False, "wild"),
        ("app.example.test", True, None),
        ("shop.test", False, "shop"),
    ],
)
def test_find_matches_exact_then_wildcard(tmp_path: Path, domain: str, wildcard: bool, expected: str | None) -> None:
    """Lookup prefers an exact name, falls back to a one-level wildcard, skips expiring ones."""
    config = tmp_path / "config"
    write_lineage(config, "app-exact", ["app.example.test"], days=60)
    write_lineage(config, "wild", ["example.test", "*.example.test"], days=60)
    write_lineage(config, "old", ["old.example.test"], days=2)
    write_lineage(config, "shop", ["shop.test", "www.shop.test"], days=60)
    write_lineage(config, "shop-bare", ["shop.test"], days=90)
    certbot = Certbot(acme_server.DIRECTORY_URL, tmp_path, config_dir=config)

    found = certbot.find(domain, wildcard=wildcard)

    assert (found.name if found else None) == expected


def test_wildcard_domain_reuses_wildcard(tmp_path: Path) -> None:
    """A domain given as *.name is looked up as name plus *.name, without running certbot."""
    config = tmp_path / "config"
    write_lineage(config, "wild", ["example.test", "*.example.test"], days=60)
    certbot = Certbot(acme_server.DIRECTORY_URL, tmp_path, config_dir=config, command=("false",))

    assert certbot.ensure("*.example.test") == "wild"


def test_find_skips_unreadable_lineage(tmp_path: Path) -> None:
    """A lineage whose PEM file is broken is skipped, not raised."""
    config = tmp_path / "config"
    write_lineage(config, "broken", ["app.example.test"], days=60)
    (config / "live" / "broken" / "fullchain.pem").write_text("not a certificate")
    certbot = Certbot(acme_server.DIRECTORY_URL, tmp_path, config_dir=config)

    assert certbot.find("app.example.test") is None
    assert certbot.certificates() == []


def test_render_tls_server_block(tmp_path: Path) -> None:
    """A block with certificate files renders a redirecting HTTP server and a TLS server."""
    settings = NginxSettings(
        include_dir=tmp_path, log_dir=tmp_path, listen="127.0.0.1:8080",
        webroot=tmp_path / "webroot", https_listen="127.0.0.1:8443",
    )
    block = ServerBlock(
        domain="app.example.test", certificate=tmp_path / "full.pem", certificate_key=tmp_path / "key.pem",
        default_server=True,
    )

    text = render_service("inst", "web", [1234], [block], settings)

    http, tls = text.split("server {")[1:]
    assert "listen 127.0.0.1:8080 default_server;" in http
    assert "location /.well-known/acme-challenge/" in http
    assert "return 301 https://$host:8443$request_uri;" in http
    assert "proxy_pass" not in http
    assert "listen 127.0.0.1:8443 ssl default_server;" in tls
    assert f"ssl_certificate {tmp_path / 'full.pem'};" in tls
    assert f"ssl_certificate_key {tmp_path / 'key.pem'};" in tls
    assert "proxy_pass http://dna_inst_web;" in tls


def test_render_without_https_listen_stays_http(tmp_path: Path) -> None:
    """Certificate files are ignored when nginx has no HTTPS listen address."""
    settings = NginxSettings(include_dir=tmp_path, log_dir=tmp_path, listen="80")
    block = ServerBlock(domain="app.example.test", certificate=tmp_path / "f.pem", certificate_key=tmp_path / "k.pem")

    text = render_service("inst", "web", [1234], [block], settings)

    assert text.count("server {") == 1
    assert "ssl" not in text
    assert "proxy_pass" in text
