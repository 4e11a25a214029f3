"""Pebble and pebble-challtestsrv on loopback, for tests with real ACME validation.

Pebble is a small ACME server for tests. It validates HTTP-01 challenges by
connecting to ``httpPort`` of the address that pebble-challtestsrv's DNS
server returns, which is 127.0.0.1 for every name unless a test sets
another. It validates DNS-01 challenges by querying that DNS server for the
TXT record that a certbot hook stored through challtestsrv's management API.

The ports are fixed, so only one test run on a machine can use them at a
time: :func:`start` checks them first and fails with a clear message.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEBBLE_PORT = 14000
PEBBLE_MANAGEMENT_PORT = 15000
DNS_PORT = 8053
CHALLTESTSRV_MANAGEMENT_PORT = 8055
FIXED_PORTS = (PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT, DNS_PORT, CHALLTESTSRV_MANAGEMENT_PORT)

DIRECTORY_URL = f"https://127.0.0.1:{PEBBLE_PORT}/dir"
CHALLTESTSRV_URL = f"http://127.0.0.1:{CHALLTESTSRV_MANAGEMENT_PORT}"

# Pebble's test defaults sleep before validating and reject 5 % of nonces on
# purpose; both make a test suite slow or flaky.
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}

# A certbot --manual-auth-hook / --manual-cleanup-hook that stores or clears
# the DNS-01 TXT record in pebble-challtestsrv. certbot passes the domain and
# the validation string in CERTBOT_DOMAIN and CERTBOT_VALIDATION.
DNS_HOOK = """\
#!{python}
import json, os, sys, urllib.request

action = sys.argv[1]
body = {{"host": "_acme-challenge." + os.environ["CERTBOT_DOMAIN"] + "."}}
if action == "set-txt":
    body["value"] = os.environ["CERTBOT_VALIDATION"]
request = urllib.request.Request("{url}/" + action, data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(request, timeout=10).read()
"""

_started = False


@attrs.frozen
class AcmeServer:
    """A running Pebble and challtestsrv pair."""

    http_port: int
    ca_bundle: Path
    dns_hook: Path
    pebble: subprocess.Popen[bytes]
    challtestsrv: subprocess.Popen[bytes]

    @property
    def directory_url(self) -> str:
        """The ACME directory URL to give certbot."""
        return DIRECTORY_URL

    def issuing_root(self) -> str:
        """Return Pebble's issuing root in PEM; Pebble makes a new one on every start."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://127.0.0.1:{PEBBLE_MANAGEMENT_PORT}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return str(response.read().decode("ascii"))

    def manage(self, action: str, **body: Any) -> None:
        """Call challtestsrv's management API, such as ``add-a`` or ``clear-a``."""
        request = urllib.request.Request(
            f"{CHALLTESTSRV_URL}/{action}", data=json.dumps(body).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10).read()

    def dns_args(self) -> list[str]:
        """Return certbot arguments for DNS-01 through this server's hook."""
        return [
            "--manual-auth-hook", f"{self.dns_hook} set-txt",
            "--manual-cleanup-hook", f"{self.dns_hook} clear-txt",
        ]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # Go servers set SO_REUSEADDR too, so connections of an earlier run
        # in TIME_WAIT do not count as taken; a listener still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_listener_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a ``localhost``/127.0.0.1 certificate it signed for Pebble's listener."""
    now = datetime.datetime.now(datetime.timezone.utc)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "docker-dna test ACME listener CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = directory / "ca.pem"
    cert_path = directory / "listener.pem"
    key_path = directory / "listener.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{process.args[0]} did not listen on 127.0.0.1:{port} within {timeout} s")


def start(directory: Path, http_port: int) -> AcmeServer:
    """Start challtestsrv and Pebble on loopback; Pebble validates HTTP-01 on ``http_port``.

    :raises RuntimeError: when a fixed port is taken, such as by another
        test run on the same machine.
    """
    global _started
    if _started:
        raise RuntimeError("Pebble is already running in this test process: start it once per session.")
    busy = [port for port in FIXED_PORTS if not _port_is_free(port)]
    if busy:
        raise RuntimeError(
            f"Ports {busy} on 127.0.0.1 are in use, and Pebble and challtestsrv need them: is another "
            "test run using them? Wait for it to finish, or stop what listens there."
        )
    _started = True

    ca_bundle, certificate, key = _write_listener_certificate(directory)
    config = directory / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{PEBBLE_PORT}",
                    "managementListenAddress": f"127.0.0.1:{PEBBLE_MANAGEMENT_PORT}",
                    "certificate": str(certificate),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": 5001,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    hook = directory / "dns-hook"
    hook.write_text(DNS_HOOK.format(python=sys.executable, url=CHALLTESTSRV_URL))
    hook.chmod(0o755)

    challtestsrv_log = directory / "challtestsrv.log"
    challtestsrv = subprocess.Popen(
        [
            "pebble-challtestsrv",
            "-dns01", f"127.0.0.1:{DNS_PORT}",
            "-management", f"127.0.0.1:{CHALLTESTSRV_MANAGEMENT_PORT}",
            "-defaultIPv4", "127.0.0.1",
            "-defaultIPv6", "",
            # Only DNS and the management API are needed; the other
            # challenge servers would bind all interfaces.
            "-http01", "",
            "-https01", "",
            "-tlsalpn01", "",
        ],
        stdout=challtestsrv_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    pebble_log = directory / "pebble.log"
    pebble = subprocess.Popen(
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{DNS_PORT}"],
        stdout=pebble_log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **PEBBLE_ENV},
    )
    server = AcmeServer(
        http_port=http_port, ca_bundle=ca_bundle, dns_hook=hook, pebble=pebble, challtestsrv=challtestsrv
    )
    try:
        _wait_until_listening(CHALLTESTSRV_MANAGEMENT_PORT, challtestsrv, challtestsrv_log)
        _wait_until_listening(PEBBLE_PORT, pebble, pebble_log)
        _wait_until_listening(PEBBLE_MANAGEMENT_PORT, pebble, pebble_log)
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: AcmeServer) -> None:
    """Stop Pebble and challtestsrv by their pids."""
    global _started
    for process in (server.pebble, server.challtestsrv):
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    _started = False
