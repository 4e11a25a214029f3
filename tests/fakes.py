"""A stand-in for the DNA engine that records calls and touches no Docker or nginx.

Handler and adapter tests use it where the real engine would only slow them
down. Its store is a real :class:`dna_core.store.Store`, because API keys are
stored there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dna_core import ServiceInfo, ServiceNotFound
from dna_core.store import Store


class FakeDNA:
    """A stand-in engine that serves every public method from memory and records each call.

    :param state_dir: directory for the SQLite store.
    :param name: instance name shown on the index page.
    """

    def __init__(self, state_dir: Path, name: str = "fake") -> None:
        self.name = name
        self.state_dir = Path(state_dir)
        self.store = Store(self.state_dir / f"{name}.sqlite3")
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.infos: dict[str, ServiceInfo] = {}
        #: Log lines by log: the container's, nginx access, nginx error, the engine's.
        self.log_lines: dict[str, list[str]] = {"docker": [], "nginx": [], "error": [], "dna": []}
        #: Makes the progress lines of pull_image and build_image; tests swap it.
        self.progress: Callable[[], Iterator[str]] = lambda: iter(["step 1", "step 2", "done"])
        #: Return value of the methods that return a success flag.
        self.success = True

    def _record(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((method, args, kwargs))

    def calls_to(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """Return the arguments of every call to ``method``, oldest first."""
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]

    def add_service(self, name: str, image: str = "web:v1", port: int = 80, domains: list[str] | None = None) -> ServiceInfo:
        """Record a service as if it had been deployed."""
        info = ServiceInfo(name=name, image=image, port=port, domains=list(domains or []), state="running")
        self.infos[name] = info
        return info

    def _info(self, name: str) -> ServiceInfo:
        if name not in self.infos:
            raise ServiceNotFound(name)
        return self.infos[name]

    @property
    def services(self) -> list[ServiceInfo]:
        return sorted(self.infos.values(), key=lambda info: info.name)

    def has_service(self, name: str) -> bool:
        return name in self.infos

    def pull_image(self, image: str, tag: str | None = None, stream: bool = False) -> Any:
        self._record("pull_image", image, tag, stream=stream)
        return self.progress() if stream else True

    def build_image(self, stream: bool = False, **options: Any) -> Any:
        self._record("build_image", stream=stream, **options)
        return self.progress() if stream else True

    def run_deploy(self, service: str, image: str, port: int, **docker_options: Any) -> bool:
        self._record("run_deploy", service, image, port, **docker_options)
        self.add_service(service, image, port)
        return True

    def propagate_services(self) -> bool:
        self._record("propagate_services")
        return True

    def get_service_info(self, name: str) -> ServiceInfo:
        self._record("get_service_info", name)
        return self._info(name)

    def start_service(self, service: str) -> bool:
        self._record("start_service", service)
        self._info(service)
        return self.success

    def stop_service(self, service: str) -> bool:
        self._record("stop_service", service)
        self._info(service)
        return self.success

    def add_domain(
        self,
        service: str,
        domain: str,
        force_wildcard: bool = False,
        force_provision: bool = False,
        proxy_set_header: dict[str, str] | None = None,
    ) -> bool:
        self._record(
            "add_domain",
            service,
            domain,
            force_wildcard=force_wildcard,
            force_provision=force_provision,
            proxy_set_header=proxy_set_header,
        )
        self._info(service)
        return self.success

    def remove_domain(self, service: str, domain: str) -> bool:
        self._record("remove_domain", service, domain)
        self._info(service)
        return self.success

    def delete_service(self, service: str) -> bool:
        self._record("delete_service", service)
        self._info(service)
        del self.infos[service]
        return True

    def docker_logs(self, service: str, lines: int = 200) -> list[str]:
        self._record("docker_logs", service, lines)
        self._info(service)
        return self.log_lines["docker"][-lines:]

    def nginx_logs(self, service: str, error: bool = False, lines: int = 200) -> list[str]:
        self._record("nginx_logs", service, error=error, lines=lines)
        self._info(service)
        return self.log_lines["error" if error else "nginx"][-lines:]

    def dna_logs(self, lines: int = 200) -> list[str]:
        self._record("dna_logs", lines)
        return self.log_lines["dna"][-lines:]

    def _log_file(self, kind: str) -> Path:
        # The log pages read files, so each read writes the current lines out.
        path = self.state_dir / f"{self.name}-{kind}.log"
        path.write_text("".join(f"{line}\n" for line in self.log_lines[kind]))
        return path

    @property
    def log_path(self) -> Path:
        return self._log_file("dna")

    def nginx_log_path(self, service: str, error: bool = False) -> Path:
        self._record("nginx_log_path", service, error=error)
        return self._log_file("error" if error else "nginx")

    def docker_log_stream(self, service: str, lines: int | None = None, follow: bool = False) -> Any:
        self._record("docker_log_stream", service, lines=lines, follow=follow)
        self._info(service)
        selected = self.log_lines["docker"] if lines is None else self.log_lines["docker"][-lines:]
        return _ClosableChunks([f"{line}\n".encode() for line in selected])


class _ClosableChunks:
    """An iterator of ``bytes`` chunks with ``close()``, like Docker's log stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)
        self.closed = False

    def __iter__(self) -> _ClosableChunks:
        return self

    def __next__(self) -> bytes:
        if self.closed:
            raise StopIteration
        return next(self._chunks)

    def close(self) -> None:
        self.closed = True
