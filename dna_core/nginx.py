"""nginx configuration: rendering, atomic writes, validation and reloads.

The engine writes one file per service into the include directory. A file
holds the service's ``upstream`` and one ``server`` block per domain. Every
write goes through :meth:`Nginx.apply`: write a temporary file, rename it into
place, run ``nginx -t`` and restore the previous file when the test fails.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

__all__ = ["Nginx", "NginxError", "NginxSettings", "PrivateNginx", "ServerBlock", "render_service"]

logger = logging.getLogger(__name__)


class NginxError(RuntimeError):
    """An nginx test or reload failed; the message carries nginx's output."""


@attrs.frozen
class NginxSettings:
    """Settings for the nginx files the engine writes and the commands it runs.

    :param include_dir: directory that the main ``nginx.conf`` includes
        (``include DIR/*.conf;`` inside its ``http`` block).
    :param log_dir: directory for the per-service access and error logs.
    :param listen: the ``listen`` address of generated server blocks.
    :param test_command: command that validates the whole configuration.
    :param reload_command: command that makes the running nginx reload.
    :param webroot: directory served under ``/.well-known/acme-challenge/``.
    :param error_log: nginx's main error log, quoted when a reload fails.
    :param pid_file: the master's pid file; with it, a reload waits until
        new workers run the new configuration.
    :param reload_timeout: seconds to wait for those workers.
    :param https_listen: the ``listen`` address of TLS server blocks; ``None``
        serves every domain on plain HTTP, with or without a certificate.
    """

    include_dir: Path = attrs.field(converter=Path)
    log_dir: Path = attrs.field(converter=Path)
    listen: str = "80"
    test_command: tuple[str, ...] = ("nginx", "-t")
    reload_command: tuple[str, ...] = ("nginx", "-s", "reload")
    webroot: Path | None = None
    error_log: Path | None = None
    pid_file: Path | None = None
    reload_timeout: float = 10.0
    https_listen: str | None = None


@attrs.frozen
class ServerBlock:
    """One proxied domain of a service, with its certificate files if it has one."""

    domain: str
    proxy_headers: dict[str, str] = attrs.field(factory=dict)
    default_server: bool = False
    certificate: Path | None = None
    certificate_key: Path | None = None

    @property
    def has_tls(self) -> bool:
        """Whether the block has both certificate files."""
        return self.certificate is not None and self.certificate_key is not None


def server_names(domain: str) -> list[str]:
    """Return the names a domain serves: ``www.`` is added to a two-label domain."""
    if domain.count(".") == 1 and not domain.startswith("*."):
        return [domain, f"www.{domain}"]
    return [domain]


def upstream_name(instance: str, service: str) -> str:
    """Return the nginx upstream name of a service."""
    safe = f"{instance}_{service}".replace(".", "_").replace("-", "_")
    return f"dna_{safe}"


def render_service(
    instance: str,
    service: str,
    ports: Sequence[int],
    blocks: Sequence[ServerBlock],
    settings: NginxSettings,
) -> str:
    """Render the nginx file of one service.

    Every value has been validated before it gets here: service and domain
    names match strict patterns and header values exclude quotes, ``;`` and
    braces, so none can end the directive it sits in.
    """
    upstream = upstream_name(instance, service)
    access_log = settings.log_dir / f"{instance}-{service}.access.log"
    error_log = settings.log_dir / f"{instance}-{service}.error.log"
    lines = [
        f"# Written by docker-dna instance {instance} for service {service}; edits are overwritten.",
        f"upstream {upstream} {{",
    ]
    lines += [f"    server 127.0.0.1:{port};" for port in ports] or ["    server 127.0.0.1:9 down;"]
    lines.append("}")
    for block in blocks:
        tls = block.has_tls and settings.https_listen is not None
        listen = settings.listen + (" default_server" if block.default_server else "")
        lines += ["", "server {", f"    listen {listen};"]
        lines += _server_common(block, settings, access_log, error_log)
        if tls:
            # Everything but the ACME challenge moves to HTTPS, so renewals
            # over HTTP-01 keep working.
            lines += [
                "    location / {",
                f"        return 301 https://$host{_port_suffix(str(settings.https_listen))}$request_uri;",
                "    }",
                "}",
                "",
                "server {",
                f"    listen {settings.https_listen} ssl"
                + (" default_server;" if block.default_server else ";"),
            ]
            lines += _server_common(block, settings, access_log, error_log)
            lines += [
                f"    ssl_certificate {block.certificate};",
                f"    ssl_certificate_key {block.certificate_key};",
            ]
        lines += _proxy_location(upstream, block)
        lines.append("}")
    return "\n".join(lines) + "\n"


def _server_common(block: ServerBlock, settings: NginxSettings, access_log: Path, error_log: Path) -> list[str]:
    """Render the lines that the HTTP and the TLS server block of a domain share."""
    lines = [
        f"    server_name {' '.join(server_names(block.domain))};",
        f"    access_log {access_log};",
        f"    error_log {error_log};",
    ]
    if settings.webroot is not None:
        lines += [
            "    location /.well-known/acme-challenge/ {",
            f"        root {settings.webroot};",
            "    }",
        ]
    return lines


def _proxy_location(upstream: str, block: ServerBlock) -> list[str]:
    lines = [
        "    location / {",
        f"        proxy_pass http://{upstream};",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
    ]
    lines += [f'        proxy_set_header {name} "{value}";' for name, value in block.proxy_headers.items()]
    lines.append("    }")
    return lines


def _port_suffix(listen: str) -> str:
    """Return ``:PORT`` for a redirect to ``listen``, or nothing for port 443."""
    port = listen.rsplit(":", 1)[-1].split()[0]
    return "" if port == "443" else f":{port}"


def _run(
    command: Sequence[str], timeout: float = 30, log: logging.Logger = logger
) -> subprocess.CompletedProcess[str]:
    log.info("running %s", shlex.join(command))
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        log.error("%s timed out after %g s", command[0], timeout)
        raise NginxError(f"{shlex.join(command)} timed out after {timeout:g} s") from None
    except OSError as error:
        log.error("%s could not run: %s", command[0], error)
        raise NginxError(f"{shlex.join(command)} could not run: {error}") from None
    output = (result.stdout + result.stderr).strip()
    if output or result.returncode:
        log.info("%s exited %d: %s", command[0], result.returncode, output)
    return result


class Nginx:
    """Writes, validates and reloads the nginx files of one engine instance."""

    def __init__(
        self, settings: NginxSettings, private: PrivateNginx | None = None, log: logging.Logger = logger
    ) -> None:
        self.settings = settings
        self.private = private
        self.log = log
        self._lock = threading.Lock()
        settings.include_dir.mkdir(parents=True, exist_ok=True)
        settings.log_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, instance: str, service: str) -> Path:
        """Return the file that contains a service's configuration."""
        return self.settings.include_dir / f"dna-{instance}-{service}.conf"

    def apply(self, path: Path, text: str | None) -> None:
        """Replace ``path`` with ``text`` (or delete it when ``None``), test, reload.

        See :meth:`apply_many`, which this calls with one file.
        """
        self.apply_many({path: text})

    def apply_many(self, changes: Mapping[Path, str | None]) -> None:
        """Replace each path with its text (``None`` deletes it), then test and reload once.

        The previous file is restored when ``nginx -t`` or the reload fails,
        so the running configuration and the files on disk agree. A marker
        file lives from the write until the reload, so that when a process
        dies in between, the next call reloads even if the file is unchanged.

        :raises NginxError: with nginx's output when the test or reload fails.
        """
        pending = self.settings.include_dir / ".dna.pending"
        with self._lock, _file_lock(self.settings.include_dir / ".dna.lock"):
            previous = {path: path.read_text() if path.exists() else None for path in changes}
            changed = {path: text for path, text in changes.items() if previous[path] != text}
            if not changed:
                if pending.exists():
                    self.log.warning("an earlier nginx update was interrupted: reloading nginx")
                    self.test()
                    self._reload()
                    pending.unlink()
                return
            pending.touch()
            for path, text in changed.items():
                _write(path, text)
            result = _run(self.settings.test_command, log=self.log)
            if result.returncode != 0:
                for path in changed:
                    _write(path, previous[path])
                pending.unlink()
                raise NginxError(f"nginx rejected the new configuration: {result.stderr.strip()}")
            try:
                self._reload()
            except NginxError:
                # The running nginx still serves the previous files, so put them back.
                for path in changed:
                    _write(path, previous[path])
                pending.unlink()
                raise
            pending.unlink()

    def remove(self, path: Path) -> None:
        """Delete ``path`` and reload nginx."""
        self.apply(path, None)

    def test(self) -> None:
        """Run ``nginx -t``; raise :class:`NginxError` when it fails."""
        result = _run(self.settings.test_command, log=self.log)
        if result.returncode != 0:
            raise NginxError(f"nginx configuration test failed: {result.stderr.strip()}")

    def _reload(self) -> None:
        if self.private is not None and not self.private.is_running():
            self.log.info("starting the private nginx at %s", self.private.root)
            self.private.start()
            return
        master = _read_pid(self.settings.pid_file)
        workers = _children(master) if master else set()
        result = _run(self.settings.reload_command, log=self.log)
        if result.returncode != 0:
            raise NginxError(f"nginx reload failed: {(result.stderr or result.stdout).strip()}")
        if master:
            self._wait_for_new_workers(master, workers)

    def _wait_for_new_workers(self, master: int, old: set[int]) -> None:
        # `nginx -s reload` only signals the master and returns at once. The
        # master starts new workers once the new configuration is loaded, and
        # keeps the old ones when loading fails (a port already in use, say).
        # Old workers keep accepting requests with the old configuration until
        # they retitle themselves "shutting down" and close their sockets.
        deadline = time.monotonic() + self.settings.reload_timeout
        while time.monotonic() < deadline:
            children = _children(master)
            if children - old and not any(_accepting(pid) for pid in children & old):
                return
            time.sleep(0.02)
        log_tail = ""
        if self.settings.error_log is not None:
            from .logtail import tail_lines

            log_tail = " ".join(tail_lines(self.settings.error_log, 3))
        self.log.error("nginx started no new workers within %g s: %s", self.settings.reload_timeout, log_tail)
        raise NginxError(
            f"nginx did not load the new configuration within {self.settings.reload_timeout:g} s. "
            f"Its error log ends: {log_tail or '(empty)'}"
        )


def _read_pid(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _accepting(pid: int) -> bool:
    """Return whether nginx worker ``pid`` still runs and has not begun shutting down."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            title = handle.read()
    except OSError:
        return False
    return b"shutting down" not in title


def _children(pid: int) -> set[int]:
    """Return the pids of the processes whose parent is ``pid`` (Linux ``/proc``)."""
    children = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name in brackets may contain spaces: split after it.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.add(int(entry.name))
    return children


def _write(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
        return
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


class _file_lock:
    """An exclusive ``flock`` so that two processes never interleave nginx writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.descriptor = -1

    def __enter__(self) -> None:
        self.descriptor = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.descriptor, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.descriptor, fcntl.LOCK_UN)
        os.close(self.descriptor)


_MAIN_CONF = """\
# Written by docker-dna: a private nginx for one engine instance.
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/nginx-error.log;
events {{ worker_connections 512; }}
http {{
    access_log {root}/logs/nginx-access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server_names_hash_bucket_size 512;
    server {{
        listen {listen} default_server;
        server_name _;
        location /.well-known/acme-challenge/ {{ root {root}/webroot; }}
        location / {{ return 404; }}
    }}
    include {root}/sites/*.conf;
}}
"""


class PrivateNginx:
    """An nginx master that the platform runs under its own directory.

    :param root: directory for ``nginx.conf``, sites, logs and temp files.
    :param listen: loopback address and port, such as ``127.0.0.1:8080``.
    :param https_listen: address and port of the TLS server blocks, such as
        ``127.0.0.1:8443``; ``None`` keeps every domain on plain HTTP.

    NOTE: started as root, nginx runs its workers as ``nobody``, which must
    be able to traverse ``root`` and read ``root/webroot`` for HTTP-01
    challenges to pass.
    """

    def __init__(
        self,
        root: str | Path,
        listen: str = "127.0.0.1:8080",
        binary: str = "nginx",
        https_listen: str | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.listen = listen
        self.https_listen = https_listen
        self.binary = binary
        self.conf = self.root / "nginx.conf"
        for sub in ("sites", "logs", "tmp", "webroot"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(_MAIN_CONF.format(root=self.root, listen=listen))

    @property
    def settings(self) -> NginxSettings:
        """Settings for an engine that uses this nginx."""
        return NginxSettings(
            include_dir=self.root / "sites",
            log_dir=self.root / "logs",
            listen=self.listen,
            test_command=(self.binary, "-t", "-q", "-c", str(self.conf)),
            reload_command=(self.binary, "-s", "reload", "-c", str(self.conf)),
            webroot=self.root / "webroot",
            error_log=self.root / "logs" / "nginx-error.log",
            pid_file=self.root / "nginx.pid",
            https_listen=self.https_listen,
        )

    def pid(self) -> int | None:
        """Return the master's pid, or ``None`` when it is not running."""
        try:
            pid = int((self.root / "nginx.pid").read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def is_running(self) -> bool:
        """Return whether the master process is alive."""
        return self.pid() is not None

    def start(self) -> None:
        """Start the master if it is not running and wait until it listens."""
        if self.is_running():
            return
        result = _run((self.binary, "-c", str(self.conf)))
        if result.returncode != 0:
            raise NginxError(f"nginx failed to start: {result.stderr.strip()}")
        deadline = time.monotonic() + 10
        while not self.is_running():
            if time.monotonic() > deadline:
                raise NginxError(f"nginx did not write {self.root / 'nginx.pid'} within 10 s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the master and wait for it to exit."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
