"""The dna command: key management and the served platform."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, wait_for

DNA = [sys.executable, "-m", "dna_core.cli"]


def run_dna(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DNA, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def test_keys_new_list_revoke(tmp_path: Path) -> None:
    """dna keys new prints a key; list shows its id only; revoke ends it."""
    created = run_dna("keys", "new", "--ip", "127.0.0.1", cwd=tmp_path)
    key = created.stdout.strip()
    key_id = key.split("_")[1]

    listed = run_dna("keys", "list", cwd=tmp_path)
    revoked = run_dna("keys", "revoke", key_id, cwd=tmp_path)
    again = run_dna("keys", "revoke", key_id, cwd=tmp_path)

    assert created.returncode == 0, created.stderr
    assert key.startswith("dna_")
    assert (tmp_path / ".dna" / "dna.sqlite3").exists()
    assert key_id in listed.stdout
    assert key not in listed.stdout
    assert revoked.returncode == 0
    assert again.returncode == 1


def test_keys_new_rejects_bad_address(tmp_path: Path) -> None:
    """A client address that is not an IP address is refused with a message."""
    result = run_dna("keys", "new", "--ip", "not-an-ip", cwd=tmp_path)

    assert result.returncode == 2
    assert "not-an-ip" in result.stderr


@pytest.mark.docker
def test_serve_mounts_both_clients(tmp_path: Path) -> None:
    """dna serve serves the logs index, the key pages to loopback and the API."""
    import requests

    port, nginx_port = free_port(), free_port()
    server = subprocess.Popen(
        [*DNA, "--name", f"cli{os.getpid()}", "serve", "--port", str(port), "--nginx-listen", f"127.0.0.1:{nginx_port}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        index = wait_for(lambda: requests.get(f"{base}/logs/", timeout=2), timeout=30)
        keys_page = requests.get(f"{base}/api/", timeout=5)
        unauthenticated = requests.post(f"{base}/api/propagate_services", timeout=5)
        nginx_default = requests.get(f"http://127.0.0.1:{nginx_port}/", timeout=5)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate(timeout=30)

    assert index.status_code == 200
    assert "Engine log" in index.text
    assert keys_page.status_code == 200
    assert unauthenticated.status_code == 403
    assert nginx_default.status_code == 404
    assert (tmp_path / ".dna" / "nginx" / "nginx.conf").exists()
    assert not (tmp_path / ".dna" / "nginx" / "nginx.pid").exists(), output


def test_instance_options_after_command(tmp_path: Path) -> None:
    """--state-dir and --name work after the command as well as before it."""
    created = run_dna("keys", "new", "--ip", "127.0.0.1", "--state-dir", "elsewhere", "--name", "other", cwd=tmp_path)

    assert created.returncode == 0, created.stderr
    assert (tmp_path / "elsewhere" / "other.sqlite3").exists()
    assert not (tmp_path / ".dna").exists()
