"""The ``DNA`` engine: Docker containers, nginx routes, certificates and state."""

from __future__ import annotations

import hashlib
import itertools
import logging
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
import docker
import docker.errors
import requests.exceptions

from .certificates import Certbot
from .errors import (
    CertificateFailed,
    DeployFailed,
    DockerFailed,
    DockerRejected,
    DockerUnavailable,
    DomainConflict,
    EngineError,
    ExternalCommandFailed,
    ImageNotFound,
    ServiceNotFound,
)
from .logtail import ChunkStream, tail_lines
from .nginx import Nginx, NginxError, NginxSettings, PrivateNginx, ServerBlock, render_service
from .store import ServiceRecord, Store
from .validation import (
    validate_build_options,
    validate_domain,
    validate_image,
    validate_port,
    validate_proxy_headers,
    validate_run_options,
    validate_service_name,
    validate_tag,
)

__all__ = ["DNA", "LABEL_INSTANCE", "LABEL_SERVICE", "LABEL_STATE", "CertificateProvider", "ServiceInfo"]

#: Label naming the engine instance that owns a container or network.
LABEL_INSTANCE = "dna.instance"
#: Label naming the state directory of that instance (a hash of its path), so
#: that two checkouts that share an instance name never adopt or remove each
#: other's containers.
LABEL_STATE = "dna.state"
#: Label naming the service a container runs.
LABEL_SERVICE = "dna.service"


class CertificateProvider(Protocol):
    """Finds or provisions the certificate of a domain for :meth:`DNA.add_domain`."""

    def ensure(self, domain: str, force_wildcard: bool, force_provision: bool) -> str | None:
        """Return the certificate name that covers ``domain``, provisioning one if needed.

        :raises CertificateFailed: when no certificate could be had.
        """

    def files(self, name: str) -> tuple[Path, Path] | None:
        """Return the fullchain and private key files of certificate ``name``, if they exist."""

    def release(self, name: str) -> None:
        """Keep or revoke certificate ``name``, which no domain uses any more."""


@attrs.frozen
class ServiceInfo:
    """The engine's record of one service, with its container's state."""

    name: str
    image: str
    port: int
    domains: list[str]
    container_id: str | None = None
    state: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the service as a JSON-ready ``dict``."""
        return {
            "name": self.name,
            "image": self.image,
            "port": self.port,
            "domains": list(self.domains),
            "container_id": self.container_id,
            "state": self.state,
        }


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _primed(lines: Iterator[str]) -> Iterator[str]:
    """Read the first line now, so that an error Docker sends before any progress raises here."""
    first = next(lines, None)
    return itertools.chain(() if first is None else (first,), lines)


def _progress_line(item: Mapping[str, Any]) -> str | None:
    """Turn one decoded Docker progress dict into a line of text."""
    if "error" in item or "errorDetail" in item:
        detail = item.get("errorDetail") or {}
        raise EngineError(str(item.get("error") or detail.get("message") or item))
    if "stream" in item:
        text = str(item["stream"]).rstrip("\n")
        return text if text.strip() else None
    if "status" in item:
        parts = [str(item.get("id", "")), str(item["status"]), str(item.get("progress", ""))]
        return " ".join(part for part in parts if part).strip()
    if "aux" in item and isinstance(item["aux"], Mapping) and "ID" in item["aux"]:
        return f"image {item['aux']['ID']}"
    return None


class DNA:
    """A deployment platform on one Docker host and one nginx.

    :param name: instance name; it prefixes containers, the network, nginx
        files and the database, so two instances never touch each other.
    :param default: domain whose server block is nginx's ``default_server``.
    :param cb_args: extra certbot arguments, such as a DNS plugin's options.
    :param state_dir: directory for the database, the engine's log and, by
        default, a private nginx.
    :param nginx: a :class:`PrivateNginx` to run, or :class:`NginxSettings`
        of an nginx that something else runs. Default: a private nginx under
        ``state_dir/nginx`` listening on ``127.0.0.1:8080``.
    :param docker_client: a ``docker.DockerClient``; default ``docker.from_env()``.
    :param build_root: directory that build contexts must lie in; ``None``
        disables ``build_image`` through the API.
    :param volume_root: directory that bind mounts must lie in; ``None``
        allows named volumes only.
    :param certificates: provisions TLS certificates, such as a
        :class:`~dna_core.certificates.Certbot`; ``None`` serves HTTP only.
        It needs an nginx with ``https_listen`` set. A ``Certbot`` gets the
        engine's logger, ``cb_args`` and nginx webroot.
    :param stop_timeout: seconds a container gets to stop before it is killed.
    :param ready_timeout: seconds a new container gets to accept connections.
    """

    def __init__(
        self,
        name: str,
        default: str | None = None,
        cb_args: list[str] | None = None,
        *,
        state_dir: str | Path = ".dna",
        nginx: PrivateNginx | NginxSettings | None = None,
        docker_client: docker.DockerClient | None = None,
        build_root: str | Path | None = None,
        volume_root: str | Path | None = None,
        certificates: CertificateProvider | None = None,
        stop_timeout: int = 10,
        ready_timeout: float = 30.0,
        docker_timeout: int = 60,
    ) -> None:
        try:
            self.name = validate_service_name(name, "name")
            self.default = validate_domain(default, "default") if default else None
        except EngineError as error:
            raise ValueError(str(error)) from None
        except Exception as error:
            raise ValueError(f"DNA(name={name!r}, default={default!r}): {error}") from None
        self.cb_args = list(cb_args or [])
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_id = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:16]
        self.build_root = Path(build_root).resolve() if build_root else None
        self.volume_root = Path(volume_root).resolve() if volume_root else None
        self.certificates = certificates
        self.stop_timeout = stop_timeout
        self.ready_timeout = ready_timeout
        self.network_name = f"dna-{self.name}"

        self.log = logging.getLogger(f"dna_core.engine.{self.name}")
        self.log_path = self.state_dir / f"{self.name}.log"
        self._attach_log_file()
        self._print: Callable[[str], None] | None = None

        if nginx is None:
            nginx = PrivateNginx(self.state_dir / "nginx")
        if isinstance(nginx, PrivateNginx):
            self.nginx = Nginx(nginx.settings, private=nginx, log=self.log)
        else:
            self.nginx = Nginx(nginx, log=self.log)
        if certificates is not None and self.nginx.settings.https_listen is None:
            raise ValueError(
                "DNA(certificates=...) needs an nginx with https_listen set, "
                "such as PrivateNginx(root, https_listen='127.0.0.1:8443')"
            )
        if isinstance(certificates, Certbot):
            certificates.attach(self.log, self.cb_args, self.nginx.settings.webroot)

        self.store = Store(self.state_dir / f"{self.name}.sqlite3")
        self._docker = docker_client
        self._docker_timeout = docker_timeout
        self._locks: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
        self._locks_guard = threading.Lock()
        self._network_lock = threading.Lock()
        self._services = [self._info(record, None) for record in self.store.list_services()]

    # Logging

    def _attach_log_file(self) -> None:
        # The engine's own log is a feature (the /dna page), so the engine
        # adds one file handler to its own logger and leaves the root alone.
        for handler in self.log.handlers:
            if getattr(handler, "baseFilename", None) == str(self.log_path):
                return
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(handler)
        if self.log.level == logging.NOTSET or self.log.level > logging.INFO:
            self.log.setLevel(logging.INFO)

    def _say(self, message: str, *args: Any, level: int = logging.INFO) -> None:
        self.log.log(level, message, *args)
        if self._print is not None:
            self._print(message % args if args else message)

    def set_print(self, printer: Callable[[str], None]) -> None:
        """Also send every engine log message to ``printer`` (for example ``print``)."""
        self._print = printer

    def reset_print(self) -> None:
        """Stop sending log messages to the function given to :meth:`set_print`."""
        self._print = None

    # Docker access

    @property
    def docker(self) -> docker.DockerClient:
        """The Docker client, created on first use."""
        if self._docker is None:
            try:
                self._docker = docker.from_env(timeout=self._docker_timeout)
            except docker.errors.DockerException as error:
                raise DockerUnavailable(f"Cannot reach the Docker daemon: {error}") from None
        return self._docker

    @contextmanager
    def _docker_call(self, action: str) -> Iterator[None]:
        """Turn Docker transport and server errors into engine errors."""
        try:
            yield
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            self._say("%s: Docker daemon unreachable: %s", action, error, level=logging.ERROR)
            raise DockerUnavailable(f"{action} failed: the Docker daemon did not answer ({error}).") from None
        except docker.errors.APIError as error:
            if error.is_server_error():
                # The daemon responded, so it is not unavailable: the failure is
                # further on, such as a registry it cannot reach.
                self._say("%s: Docker error: %s", action, error, level=logging.ERROR)
                raise DockerFailed(f"{action} failed: {error.explanation or error}") from None
            raise

    def _ping(self, action: str) -> None:
        """Raise :class:`DockerUnavailable` unless the daemon responds within the client's timeout.

        NOTE: the Docker SDK sends pulls, and builds without a ``timeout``
        option, with no read timeout, so this check bounds a daemon that is
        down or hung when the call starts but not one that hangs mid-stream.
        """
        with self._docker_call(action):
            self.docker.ping()

    def _lock(self, service: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks[service]

    def _ensure_network(self) -> str:
        with self._network_lock, self._docker_call("creating the network"):
            existing = self.docker.networks.list(names=[self.network_name])
            if not any(network.name == self.network_name for network in existing):
                self._say("creating bridge network %s", self.network_name)
                self.docker.networks.create(
                    self.network_name, driver="bridge", labels={LABEL_INSTANCE: self.name}
                )
        return self.network_name

    def _containers(self, service: str | None = None) -> list[Any]:
        labels = [f"{LABEL_INSTANCE}={self.name}", f"{LABEL_STATE}={self.state_id}"]
        if service is not None:
            labels.append(f"{LABEL_SERVICE}={service}")
        with self._docker_call("listing containers"):
            return list(self.docker.containers.list(all=True, sparse=True, filters={"label": labels}))

    # Images

    def pull_image(self, image: str, tag: str | None = None, stream: bool = False) -> Any:
        """Pull ``image`` (with ``tag``, default ``latest``) from its registry.

        With ``stream=True``, return an iterator of progress lines; errors
        that Docker reports before the first line are raised at once.
        Otherwise return the pulled image's id.
        """
        image = validate_image(image)
        tag = validate_tag(tag)
        self._say("pulling %s%s", image, f":{tag}" if tag else "")
        self._ping(f"pulling {image}")
        try:
            with self._docker_call(f"pulling {image}"):
                progress = self.docker.api.pull(image, tag=tag, stream=True, decode=True)
                lines = _primed(self._progress(progress, f"pull of {image}"))
        except docker.errors.NotFound as error:
            raise ImageNotFound(f"Image {image!r} not found: {error.explanation}") from None
        except docker.errors.APIError as error:
            raise ImageNotFound(f"Pulling {image!r} failed: {error.explanation or error}") from None

        if stream:
            return lines
        for _ in lines:
            pass
        reference = f"{image}:{tag}" if tag else image
        with self._docker_call("inspecting the image"):
            return self.docker.images.get(reference).id

    def build_image(self, stream: bool = False, **options: Any) -> Any:
        """Build an image with Docker's build ``options`` (``path``, ``tag``...).

        With ``stream=True``, return an iterator of progress lines. Otherwise
        return the new image's id.
        """
        options = validate_build_options(options, self.build_root)
        options.setdefault("rm", True)
        # Without forcerm a failed step leaves its stopped container behind.
        options.setdefault("forcerm", True)
        self._say("building %s from %s", options.get("tag", "an untagged image"), options["path"])
        self._ping("building an image")
        with self._docker_call("building an image"):
            progress = self.docker.api.build(decode=True, **options)
            lines = _primed(self._progress(progress, "build"))

        if stream:
            return lines
        image_id = None
        for line in lines:
            if line.startswith("image "):
                image_id = line.split(" ", 1)[1]
        return image_id

    def _progress(self, progress: Iterator[Mapping[str, Any]], what: str) -> Iterator[str]:
        try:
            for item in progress:
                line = _progress_line(item)
                if line is not None:
                    self.log.info("%s: %s", what, line)
                    yield line
        except EngineError as error:
            self._say("%s failed: %s", what, error, level=logging.ERROR)
            raise
        except docker.errors.APIError as error:
            self._say("%s failed: %s", what, error, level=logging.ERROR)
            if error.is_client_error():
                raise DockerRejected(f"{what} failed: {error.explanation or error}") from None
            raise DockerFailed(f"{what} failed: {error.explanation or error}") from None
        except (requests.exceptions.RequestException, docker.errors.DockerException) as error:
            self._say("%s failed: %s", what, error, level=logging.ERROR)
            raise DockerUnavailable(f"{what} failed: {error}") from None
        self._say("%s finished", what)

    # Services

    def run_deploy(self, service: str, image: str, port: int, **docker_options: Any) -> bool:
        """Run ``image`` as the container of ``service`` and route nginx to ``port``.

        A redeploy starts the new container next to the old one, waits until
        it accepts connections, switches nginx to it, then removes the old
        one, so the service keeps serving throughout.

        :raises DeployFailed: when the new container exits or never listens;
            the previous container keeps serving.
        """
        service = validate_service_name(service)
        image = validate_image(image)
        port = validate_port(port)
        options = validate_run_options(docker_options, self.volume_root)
        with self._lock(service):
            network = self._ensure_network()
            previous = self.store.get_service(service)
            host_port = _free_loopback_port()
            name = f"dna-{self.name}-{service}-{secrets.token_hex(4)}"
            labels = {
                **options.pop("labels", {}),
                LABEL_INSTANCE: self.name,
                LABEL_STATE: self.state_id,
                LABEL_SERVICE: service,
            }
            self._say("deploying %s: creating container %s from %s", service, name, image)
            try:
                with self._docker_call(f"creating {name}"):
                    container = self.docker.containers.create(
                        image,
                        name=name,
                        labels=labels,
                        network=network,
                        ports={f"{port}/tcp": ("127.0.0.1", host_port)},
                        **options,
                    )
            except docker.errors.ImageNotFound:
                raise ImageNotFound(
                    f"Image {image!r} not found on the Docker host: pull or build it first."
                ) from None
            except docker.errors.APIError as error:
                raise DeployFailed(f"Docker rejected the container: {error.explanation}") from None
            except (docker.errors.DockerException, TypeError, ValueError) as error:
                # The SDK checks some option values itself before calling the daemon.
                self._say("deploying %s: Docker SDK rejected the options: %s", service, error, level=logging.ERROR)
                raise DeployFailed(f"Docker rejected the options: {error}") from None

            try:
                try:
                    with self._docker_call(f"starting {name}"):
                        container.start()
                except docker.errors.APIError as error:
                    raise DeployFailed(f"Docker could not start the container: {error.explanation}") from None
                self._wait_ready(container, port)
                self.store.save_service(service, image, port, container.id, host_port, options)
                try:
                    self._write_config(service)
                except EngineError:
                    if previous is not None:
                        self.store.save_service(
                            service, previous.image, previous.port, previous.container_id,
                            previous.host_port, previous.options,
                        )
                    else:
                        self.store.delete_service(service)
                    raise
            except BaseException:
                self._say("deploying %s failed: removing container %s", service, name, level=logging.ERROR)
                self._remove_container(container.id)
                raise

            if previous is not None and previous.container_id and previous.container_id != container.id:
                self._say("deploying %s: removing previous container %s", service, previous.container_id[:12])
                self._remove_container(previous.container_id)
            self._say("deployed %s: container %s on 127.0.0.1:%d", service, name, host_port)
        self._refresh_one(service)
        return True

    def _wait_ready(self, container: Any, port: int) -> None:
        """Wait until the container accepts TCP connections on ``port`` in its network."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            with self._docker_call("inspecting the new container"):
                container.reload()
            state = container.attrs["State"]
            if state.get("Status") in ("exited", "dead"):
                output = container.logs(tail=20).decode("utf-8", "replace").strip()
                raise DeployFailed(
                    f"The container exited with code {state.get('ExitCode')} before listening"
                    f" on port {port}. Its last output: {output or '(none)'}"
                )
            address = container.attrs["NetworkSettings"]["Networks"].get(self.network_name, {}).get("IPAddress")
            if address:
                try:
                    with socket.create_connection((address, port), timeout=1):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise DeployFailed(
                    f"The container did not accept connections on port {port} within"
                    f" {self.ready_timeout:g} s: check that the image listens on that port."
                )
            time.sleep(0.1)

    def _remove_container(self, container_id: str) -> None:
        try:
            with self._docker_call("removing a container"):
                container = self.docker.containers.get(container_id)
                container.stop(timeout=self.stop_timeout)
                container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except EngineError as error:
            self._say("could not remove container %s: %s", container_id[:12], error, level=logging.WARNING)

    def _record(self, service: str) -> ServiceRecord:
        service = validate_service_name(service)
        record = self.store.get_service(service)
        if record is None:
            raise ServiceNotFound(service)
        return record

    def _write_config(self, service: str) -> None:
        """Render and apply the nginx file of ``service`` from the store."""
        text = self._render_config(service)
        path = self.nginx.path_for(self.name, service)
        try:
            self.nginx.apply(path, text)
        except NginxError as error:
            self._say("nginx update for %s failed: %s", service, error, level=logging.ERROR)
            raise ExternalCommandFailed(str(error)) from None

    def _render_config(self, service: str) -> str:
        """Render the nginx file of ``service`` from the store."""
        record = self._record(service)
        blocks = []
        for domain in self.store.domains_of(service):
            files = None
            if domain.certificate and self.certificates is not None:
                files = self.certificates.files(domain.certificate)
            blocks.append(
                ServerBlock(
                    domain=domain.domain,
                    proxy_headers=domain.proxy_headers,
                    default_server=domain.domain == self.default,
                    certificate=files[0] if files else None,
                    certificate_key=files[1] if files else None,
                )
            )
        ports = [record.host_port] if record.host_port else []
        return render_service(self.name, service, ports, blocks, self.nginx.settings)

    def start_service(self, service: str) -> bool:
        """Start the container of ``service``; return whether Docker started it."""
        return self._container_action(service, "start")

    def stop_service(self, service: str) -> bool:
        """Stop the container of ``service``; return whether Docker stopped it."""
        return self._container_action(service, "stop")

    def _container_action(self, service: str, action: str) -> bool:
        record = self._record(service)
        with self._lock(record.name):
            self._say("%s %s (container %s)", action, record.name, (record.container_id or "-")[:12])
            try:
                with self._docker_call(f"{action} {record.name}"):
                    container = self.docker.containers.get(record.container_id)
                    if action == "start":
                        container.start()
                    else:
                        container.stop(timeout=self.stop_timeout)
            except (docker.errors.NotFound, docker.errors.NullResource):
                self._say("%s %s: its container is gone", action, record.name, level=logging.WARNING)
                return False
            except docker.errors.APIError as error:
                self._say("%s %s failed: %s", action, record.name, error, level=logging.WARNING)
                return False
        self._refresh_one(record.name)
        return True

    def delete_service(self, service: str) -> bool:
        """Remove the service's nginx file and logs, its containers and its record."""
        record = self._record(service)
        with self._lock(record.name):
            self._say("deleting %s", record.name)
            certificates = {domain.certificate for domain in self.store.domains_of(record.name)}
            # Listing first means an unreachable Docker daemon fails the call
            # before nginx stops routing to the service.
            containers = self._containers(record.name)
            try:
                self.nginx.remove(self.nginx.path_for(self.name, record.name))
            except NginxError as error:
                raise ExternalCommandFailed(str(error)) from None
            for container in containers:
                self._remove_container(container.id)
            self.store.delete_service(record.name)
            for error_log in (False, True):
                self.nginx_log_path(record.name, error_log).unlink(missing_ok=True)
            for certificate in certificates:
                self._release_certificate(certificate)
        self._services = [info for info in self._services if info.name != record.name]
        return True

    # Domains

    def add_domain(
        self,
        service: str,
        domain: str,
        force_wildcard: bool = False,
        force_provision: bool = False,
        proxy_set_header: Mapping[str, str] | None = None,
    ) -> bool:
        """Route ``domain`` to ``service`` through nginx, then secure it.

        With a certificate provider, a matching certificate is reused or a
        new one provisioned, and the domain moves to HTTPS with HTTP
        redirected to it.

        :raises DomainConflict: when ``domain`` is bound to another service.
        :raises CertificateFailed: when no certificate could be had; the
            domain is routed and keeps serving plain HTTP, or HTTPS with the
            certificate it had before.
        """
        record = self._record(service)
        domain = validate_domain(domain)
        headers = validate_proxy_headers(proxy_set_header)
        with self._lock(record.name):
            previous = self.store.get_domain(domain)
            try:
                self.store.add_domain(domain, record.name, headers)
            except ValueError as error:
                # The store's message names the service the domain is bound to.
                message = str(error)
                raise DomainConflict(
                    f"{message[:1].upper()}{message[1:]}: remove it there first with remove_domain."
                ) from None
            self._say("adding domain %s to %s", domain, record.name)
            try:
                self._write_config(record.name)
            except EngineError:
                if previous is None:
                    self.store.remove_domain(domain)
                else:
                    self.store.add_domain(domain, record.name, previous.proxy_headers)
                raise
            try:
                if self.certificates is not None:
                    self._secure(record.name, domain, force_wildcard, force_provision)
            finally:
                self._refresh_one(record.name)
        return True

    def _secure(self, service: str, domain: str, force_wildcard: bool, force_provision: bool) -> None:
        """Give ``domain`` a certificate and its TLS server block."""
        if self.certificates is None:
            return
        previous = self.store.get_domain(domain)
        try:
            certificate = self.certificates.ensure(domain, force_wildcard, force_provision)
        except CertificateFailed as error:
            kept = previous.certificate if previous else None
            serving = f"it keeps certificate {kept}" if kept else "it stays on HTTP"
            self._say("no new certificate for %s, %s: %s", domain, serving, error, level=logging.ERROR)
            raise
        if certificate is None:
            self._say("no certificate for %s: the provider returned none", domain, level=logging.WARNING)
            return
        self.store.set_certificate(domain, certificate)
        try:
            self._write_config(service)
        except EngineError:
            self.store.set_certificate(domain, previous.certificate if previous else None)
            raise
        self._say("%s serves HTTPS with certificate %s", domain, certificate)
        if previous is not None and previous.certificate not in (None, certificate):
            self._release_certificate(previous.certificate)

    def _release_certificate(self, certificate: str | None) -> None:
        """Hand ``certificate`` back to the provider once no domain uses it."""
        if certificate is None or self.certificates is None:
            return
        for record in self.store.list_services():
            if any(domain.certificate == certificate for domain in self.store.domains_of(record.name)):
                return
        self.certificates.release(certificate)

    def remove_domain(self, service: str, domain: str) -> bool:
        """Stop routing ``domain`` to ``service``; return whether it was routed."""
        record = self._record(service)
        domain = validate_domain(domain)
        with self._lock(record.name):
            bound = self.store.get_domain(domain)
            if bound is None or bound.service != record.name:
                return False
            self._say("removing domain %s from %s", domain, record.name)
            self.store.remove_domain(domain)
            try:
                self._write_config(record.name)
            except EngineError:
                self.store.add_domain(domain, record.name, bound.proxy_headers)
                self.store.set_certificate(domain, bound.certificate)
                raise
            self._release_certificate(bound.certificate)
        self._refresh_one(record.name)
        return True

    # State

    def _info(self, record: ServiceRecord, state: str | None) -> ServiceInfo:
        return ServiceInfo(
            name=record.name,
            image=record.image,
            port=record.port,
            domains=[domain.domain for domain in self.store.domains_of(record.name)],
            container_id=record.container_id,
            state=state,
        )

    def _refresh_one(self, service: str) -> None:
        record = self.store.get_service(service)
        others = [info for info in self._services if info.name != service]
        if record is not None:
            state = None
            for container in self._containers(service):
                if container.id == record.container_id:
                    state = container.attrs.get("State")
            others.append(self._info(record, state))
        self._services = sorted(others, key=lambda info: info.name)

    @property
    def services(self) -> list[ServiceInfo]:
        """The services as of the last change or :meth:`propagate_services`."""
        return list(self._services)

    def get_service_info(self, name: str) -> ServiceInfo:
        """Return the record and container state of service ``name``."""
        record = self._record(name)
        state = None
        for container in self._containers(record.name):
            if container.id == record.container_id:
                state = container.attrs.get("State")
        return self._info(record, state)

    def propagate_services(self) -> bool:
        """Reconcile records, containers and nginx files, then refresh :attr:`services`.

        One label-filtered container list is the only Docker call when all
        is in order. A record whose container vanished adopts the newest
        container of its service. Containers that no record owns are
        removed, and nginx files are rewritten from the records.
        """
        containers = self._containers()
        by_service: defaultdict[str, list[Any]] = defaultdict(list)
        for container in containers:
            by_service[container.attrs.get("Labels", {}).get(LABEL_SERVICE, "")].append(container)

        infos = []
        records = {record.name: record for record in self.store.list_services()}
        for name, record in records.items():
            with self._lock(name):
                candidates = sorted(by_service.get(name, []), key=lambda c: c.attrs.get("Created", 0))
                current = next((c for c in candidates if c.id == record.container_id), None)
                if current is None and candidates:
                    current = candidates[-1]
                    host_port = self._published_port(current, record.port)
                    self._say("service %s adopts container %s", name, current.id[:12])
                    self.store.save_service(name, record.image, record.port, current.id, host_port, record.options)
                for container in candidates:
                    if container is not current:
                        self._say("removing stale container %s of %s", container.id[:12], name)
                        self._remove_container(container.id)
                record = self.store.get_service(name) or record
                infos.append(self._info(record, current.attrs.get("State") if current else None))

        for name, orphans in by_service.items():
            if name not in records:
                for container in orphans:
                    self._say("removing container %s: no service %r is recorded", container.id[:12], name)
                    self._remove_container(container.id)
        self._apply_all_configs(set(records))
        self._services = infos
        return True

    def _apply_all_configs(self, services: set[str]) -> None:
        """Rewrite the nginx file of every service and remove stale ones, with one reload.

        Every service lock is held, taken in sorted order, so that no deploy
        writes a newer file between the rendering and the write.
        """
        changes: dict[Path, str | None] = {}
        for path in self.nginx.settings.include_dir.glob(f"dna-{self.name}-*.conf"):
            service = path.name[len(f"dna-{self.name}-"):-len(".conf")]
            # Instance "a" also matches the files of instance "a-b", so only a
            # file whose header names this instance is ours to remove.
            if service not in services and self._wrote(path, service):
                self._say("removing nginx file %s: no service %r is recorded", path, service)
                changes[path] = None
        with ExitStack() as locks:
            for service in sorted(services):
                locks.enter_context(self._lock(service))
            for service in sorted(services):
                if self.store.get_service(service) is not None:
                    changes[self.nginx.path_for(self.name, service)] = self._render_config(service)
            try:
                self.nginx.apply_many(changes)
            except NginxError as error:
                self._say("nginx update of %d files failed: %s", len(changes), error, level=logging.ERROR)
                raise ExternalCommandFailed(str(error)) from None

    def _wrote(self, path: Path, service: str) -> bool:
        """Return whether ``path`` is the nginx file this instance writes for ``service``."""
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                header = handle.readline()
        except OSError:
            return False
        return header.startswith(f"# Written by docker-dna instance {self.name} for service {service};")

    @staticmethod
    def _published_port(container: Any, port: int) -> int | None:
        for binding in container.attrs.get("Ports", []) or []:
            if binding.get("PrivatePort") == port and binding.get("PublicPort"):
                return int(binding["PublicPort"])
        return None

    # Logs

    def nginx_log_path(self, service: str, error: bool = False) -> Path:
        """Return the access (or error) log file nginx writes for ``service``."""
        service = validate_service_name(service)
        kind = "error" if error else "access"
        return self.nginx.settings.log_dir / f"{self.name}-{service}.{kind}.log"

    def nginx_logs(self, service: str, error: bool = False, lines: int = 200) -> list[str]:
        """Return the last ``lines`` of the service's nginx access (or error) log."""
        self._record(service)
        return tail_lines(self.nginx_log_path(service, error), lines)

    def docker_logs(self, service: str, lines: int = 200) -> list[str]:
        """Return the last ``lines`` of the service container's output."""
        record = self._record(service)
        if not record.container_id:
            return []
        try:
            with self._docker_call(f"reading the logs of {record.name}"):
                output: bytes = self.docker.containers.get(record.container_id).logs(tail=lines)
        except docker.errors.NotFound:
            return []
        return output.decode("utf-8", "replace").splitlines()

    def docker_log_stream(
        self, service: str, lines: int | None = None, follow: bool = False
    ) -> ChunkStream | None:
        """Open the output of the service's container as a stream of ``bytes`` chunks.

        The stream keeps a connection to the Docker daemon open until it ends
        or is closed, and ``close()`` may be called from another thread.

        :param lines: start with the last ``lines`` lines; ``None`` starts at
            the beginning of the log.
        :param follow: keep the stream open and send new output as it comes,
            until the container stops.
        :return: the stream, or ``None`` when the service has no container.
        """
        record = self._record(service)
        if not record.container_id:
            return None
        try:
            with self._docker_call(f"reading the logs of {record.name}"):
                container = self.docker.containers.get(record.container_id)
                stream: ChunkStream = container.logs(
                    stream=True, follow=follow, tail="all" if lines is None else lines
                )
        except docker.errors.NotFound:
            return None
        return stream

    def dna_logs(self, lines: int = 200) -> list[str]:
        """Return the last ``lines`` of the engine's own log."""
        return tail_lines(self.log_path, lines)

    def has_service(self, name: str) -> bool:
        """Return whether a service called ``name`` is recorded."""
        return self.store.get_service(name) is not None
