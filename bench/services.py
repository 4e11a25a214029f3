"""Count the Docker API calls of propagate_services with many services, and time it.

Creates a Docker network, a busybox image built FROM scratch and N small
sleeping containers (300 by default) labelled as services of a fresh engine
instance, records N services, then:

- counts the HTTP requests that ``propagate_services`` sends to the Docker
  daemon, with a tenth of the services and with all of them;
- times ``propagate_services`` once while it writes the N nginx files, then
  best of several runs when nothing changes;
- times ``docker ps -a --filter label=...`` on the same containers as the
  reference.

Everything it created is removed at the end. Run ``python bench/services.py --help``.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dna_core import DNA, LABEL_INSTANCE, LABEL_SERVICE, LABEL_STATE, PrivateNginx

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
CMD ["/bin/busybox", "sleep", "3600"]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RequestCounter:
    """Count the HTTP requests a Docker client sends, by wrapping its session's ``send``."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.api = client.api
        self.original = self.api.send
        self.requests: list[str] = []
        self.api.send = self._send  # type: ignore[method-assign]

    def _send(self, request: Any, **options: Any) -> Any:
        self.requests.append(f"{request.method} {request.path_url.split('?')[0]}")
        return self.original(request, **options)

    def restore(self) -> None:
        self.api.send = self.original  # type: ignore[method-assign]


def best_of(runs: int, action: Any) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=300, help="number of services (default 300)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the best counts (default 5)")
    parser.add_argument("--workers", type=int, default=8, help="threads creating containers (default 8)")
    options = parser.parse_args()

    run_id = secrets.token_hex(3)
    instance = f"bench{run_id}"
    label = f"{LABEL_INSTANCE}={instance}"
    root = Path(tempfile.mkdtemp(prefix="dna-bench-services-"))
    client = docker.from_env(timeout=120)
    network = None
    image_tag = f"dna-bench-{run_id}/sleep:1"
    created: list[str] = []
    nginx = PrivateNginx(root / "nginx", listen=f"127.0.0.1:{free_port()}")
    try:
        context = root / "context"
        context.mkdir()
        shutil.copy("/bin/busybox", context / "busybox")
        (context / "Dockerfile").write_text(DOCKERFILE)
        image = client.images.build(path=str(context), tag=image_tag, rm=True)[0]
        network = client.networks.create(f"dna-bench-{run_id}", driver="bridge", labels={LABEL_INSTANCE: instance})
        nginx.start()
        engine = DNA(instance, state_dir=root / "state", nginx=nginx, docker_client=client)

        def create(index: int) -> tuple[str, str]:
            service = f"svc{index:03d}"
            container = client.containers.run(
                image.id,
                name=f"dna-{instance}-{service}",
                labels={LABEL_INSTANCE: instance, LABEL_STATE: engine.state_id, LABEL_SERVICE: service},
                network=network.name,
                init=True,
                detach=True,
            )
            return service, container.id

        creation_seconds = 0.0

        def create_all(indexes: range) -> None:
            nonlocal creation_seconds
            begun = time.perf_counter()
            with ThreadPoolExecutor(options.workers) as pool:
                for service, container_id in pool.map(create, indexes):
                    created.append(container_id)
                    engine.store.save_service(service, image_tag, 80, container_id, None, {})
            creation_seconds += time.perf_counter() - begun

        few = max(1, options.services // 10)
        create_all(range(few))
        counter = RequestCounter(client)
        try:
            engine.propagate_services()
            few_calls = list(counter.requests)

            create_all(range(few, options.services))
            print(f"created and started {len(created)} containers in {creation_seconds:.1f} s")
            counter.requests.clear()
            started = time.perf_counter()
            engine.propagate_services()
            first_seconds = time.perf_counter() - started
            all_calls = list(counter.requests)

            counter.requests.clear()
            steady_seconds = best_of(options.runs, engine.propagate_services)
            steady_calls = len(counter.requests) / options.runs
        finally:
            counter.restore()

        running = sum(1 for info in engine.services if info.state == "running")
        docker_ps = best_of(
            options.runs,
            lambda: subprocess.run(
                ["docker", "ps", "-a", "--filter", f"label={label}"], stdout=subprocess.DEVNULL, check=True
            ),
        )
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True, check=True
        ).stdout.split()

        print()
        print(f"services recorded: {options.services}; running according to propagate_services: {running};"
              f" containers listed by docker ps: {len(listed)}")
        print(f"Docker API calls of propagate_services: {len(few_calls)} with {few} services"
              f" ({', '.join(few_calls)}), {len(all_calls)} with {options.services} ({', '.join(all_calls)}),"
              f" {steady_calls:g} per unchanged run")
        print(f"propagate_services after adding {options.services - few} services (writes their nginx files):"
              f" {first_seconds:.2f} s")
        print(f"propagate_services, unchanged, best of {options.runs}: {steady_seconds * 1000:.0f} ms")
        print(f"docker ps -a --filter label=..., best of {options.runs}: {docker_ps * 1000:.0f} ms")
        print(f"ratio propagate_services / docker ps: {steady_seconds / docker_ps:.2f}x")
    finally:
        def remove(container_id: str) -> None:
            try:
                client.containers.get(container_id).remove(force=True)
            except docker.errors.NotFound:
                pass

        with ThreadPoolExecutor(options.workers) as pool:
            list(pool.map(remove, created))
        if network is not None:
            try:
                network.remove()
            except docker.errors.APIError as error:
                # Docker can keep a stale endpoint after a failed create; a daemon restart clears it.
                print(f"could not remove network {network.name}: {error.explanation}", file=sys.stderr)
        try:
            client.images.remove(image_tag, force=True)
        except docker.errors.ImageNotFound:
            pass
        nginx.stop()
        client.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
