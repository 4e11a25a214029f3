"""The DNA engine against the real Docker daemon, nginx and a local registry."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import RUN_ID, free_port, nginx_get, wait_for
from dna_core import LABEL_INSTANCE, LABEL_SERVICE, LABEL_STATE, DeployFailed, DockerFailed, DockerRejected, EngineError, DomainConflict, ImageNotFound, NginxError

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private registry on a loopback port, as Debian's docker-registry serves it."""
    root = tmp_path_factory.mktemp("registry")
    address = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    config.write_text(textwrap.dedent(f"""\
        version: 0.1
        storage:
          filesystem:
            rootdirectory: {root / 'data'}
          delete:
            enabled: true
        http:
          addr: {address}
        log:
          level: error
        """))
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import requests

    wait_for(lambda: requests.get(f"http://{address}/v2/", timeout=1).status_code == 200)
    yield address
    process.terminate()
    process.wait(timeout=10)


def test_pull_image_streams_from_registry(engine: Any, docker_client: Any, image_factory: Any, registry: str) -> None:
    """pull_image really downloads the layers and streams Docker's progress."""
    remote = f"{registry}/pulltest-{RUN_ID}"
    local_tag = image_factory("pulled page")
    image = docker_client.images.get(local_tag)
    image.tag(remote, "v1")
    for line in docker_client.images.push(remote, tag="v1", stream=True, decode=True):
        assert "error" not in line, line
    # Without any local tag the layers are deleted, so the pull must download them.
    docker_client.images.remove(f"{remote}:v1")
    docker_client.images.remove(local_tag)

    try:
        lines = list(engine.pull_image(remote, "v1", stream=True))

        assert any("Pull complete" in line or "Download complete" in line for line in lines), lines
        assert docker_client.images.get(f"{remote}:v1").id == image.id
    finally:
        docker_client.images.remove(f"{remote}:v1", force=True)


def test_pull_unknown_image_raises_before_streaming(engine: Any, registry: str) -> None:
    """A missing image is reported as ImageNotFound, not as a half-sent stream."""
    with pytest.raises(ImageNotFound):
        engine.pull_image(f"{registry}/nosuch-{RUN_ID}", "v1", stream=True)


def test_failed_redeploy_keeps_previous(engine: Any, docker_client: Any, image_factory: Any, private_nginx: Any) -> None:
    """A redeploy whose container never listens is removed; the old one keeps serving."""
    image = image_factory("steady page")
    engine.run_deploy("steady", image, 80, init=True)
    engine.add_domain("steady", "steady.example.test")
    wait_for(lambda: nginx_get(private_nginx, "steady.example.test").text == "steady page")
    before = engine.store.get_service("steady")
    engine.ready_timeout = 2

    with pytest.raises(DeployFailed, match="port 81"):
        engine.run_deploy("steady", image, 81, init=True)

    after = engine.store.get_service("steady")
    containers = docker_client.containers.list(all=True, filters={"label": f"{LABEL_SERVICE}=steady"})
    assert after == before
    assert [container.id for container in containers if container.labels[LABEL_INSTANCE] == engine.name] == [before.container_id]
    assert nginx_get(private_nginx, "steady.example.test").text == "steady page"


def test_exiting_container_reports_output(engine: Any, image_factory: Any) -> None:
    """A container that exits at once fails the deploy with its exit code."""
    image = image_factory("never served")

    with pytest.raises(DeployFailed, match="exited with code"):
        engine.run_deploy("crash", image, 80, command=["/bin/busybox", "false"])

    assert engine.store.get_service("crash") is None


def test_domain_of_other_service_is_refused(engine: Any, image_factory: Any) -> None:
    """A domain bound to one service cannot be added to another."""
    image = image_factory("shared")
    engine.run_deploy("one", image, 80, init=True)
    engine.run_deploy("two", image, 80, init=True)
    engine.add_domain("one", "shared.example.test")

    with pytest.raises(DomainConflict):
        engine.add_domain("two", "shared.example.test")

    assert engine.get_service_info("two").domains == []
    assert "shared.example.test" not in engine.nginx.path_for(engine.name, "two").read_text()


def test_restarted_container_stays_routed(engine: Any, docker_client: Any, image_factory: Any, private_nginx: Any) -> None:
    """A container restarted by Docker keeps its loopback port, so nginx still reaches it."""
    engine.run_deploy("sturdy", image_factory("sturdy page"), 80, init=True)
    engine.add_domain("sturdy", "sturdy.test")
    wait_for(lambda: nginx_get(private_nginx, "sturdy.test").text == "sturdy page")

    docker_client.containers.get(engine.store.get_service("sturdy").container_id).restart(timeout=1)

    wait_for(lambda: nginx_get(private_nginx, "sturdy.test").text == "sturdy page")
    assert nginx_get(private_nginx, "www.sturdy.test").text == "sturdy page"


def test_propagate_removes_orphans_and_adopts(engine: Any, docker_client: Any, image_factory: Any) -> None:
    """propagate_services removes unowned containers and re-adopts a service's container."""
    image = image_factory("adopted")
    engine.run_deploy("kept", image, 80, init=True)
    network = engine.network_name
    orphan = docker_client.containers.create(
        image, name=f"dna-{engine.name}-orphan", labels={LABEL_INSTANCE: engine.name, LABEL_STATE: engine.state_id, LABEL_SERVICE: "ghost"}, network=network
    )
    stray_file = engine.nginx.path_for(engine.name, "ghost")
    stray_file.write_text(f"# Written by docker-dna instance {engine.name} for service ghost; edits are overwritten.\n")
    record = engine.store.get_service("kept")
    engine.store.save_service("kept", record.image, record.port, "0" * 64, record.host_port, record.options)

    engine.propagate_services()

    remaining = docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={engine.name}"})
    assert [container.id for container in remaining] == [record.container_id]
    assert orphan.id not in [container.id for container in remaining]
    assert engine.store.get_service("kept").container_id == record.container_id
    assert not stray_file.exists()
    assert [service.name for service in engine.services] == ["kept"]
    assert engine.services[0].state == "running"


def test_rejected_nginx_file_is_restored(engine: Any) -> None:
    """A file that fails nginx -t is replaced by the previous one."""
    path = engine.nginx.path_for(engine.name, "manual")
    good = "# nothing yet\n"
    engine.nginx.apply(path, good)

    with pytest.raises(NginxError, match="rejected"):
        engine.nginx.apply(path, "server { this is not nginx }\n")

    assert path.read_text() == good
    engine.nginx.test()


def test_engine_log_records_steps(engine: Any, image_factory: Any) -> None:
    """The engine's log file records deploy steps and the nginx commands it ran."""
    engine.run_deploy("logged", image_factory("logged"), 80, init=True)

    text = "\n".join(engine.dna_logs(500))

    assert "deploying logged: creating container" in text
    assert "running nginx -t" in text
    assert "deployed logged" in text


def test_invalid_instance_name(tmp_path: Path) -> None:
    """A bad instance name fails when the engine is built, naming the value."""
    from dna_core import DNA

    with pytest.raises(ValueError, match="bad name"):
        DNA("bad name", state_dir=tmp_path)


def test_same_name_other_state_dir_is_left_alone(engine: Any, docker_client: Any, image_factory: Any, tmp_path: Path) -> None:
    """An engine of the same name but another state directory never removes this one's containers."""
    from dna_core import DNA, PrivateNginx

    engine.run_deploy("mine", image_factory("mine"), 80, init=True)
    other = DNA(engine.name, state_dir=tmp_path / "other-state", nginx=PrivateNginx(tmp_path / "other-nginx"), docker_client=docker_client)

    other.propagate_services()

    container_id = engine.store.get_service("mine").container_id
    assert docker_client.containers.get(container_id).status == "running"
    assert other.services == []
    assert other.state_id != engine.state_id


def test_bad_dockerfile_is_rejected_without_leftovers(engine: Any, docker_client: Any) -> None:
    """A Dockerfile that does not parse is a 422 error, and a failing step leaves no container."""
    from conftest import write_context

    write_context(engine.build_root / "broken", "x", extra="HELLO world")
    write_context(engine.build_root / "failing", "x", extra='RUN ["/bin/busybox", "false"]')
    containers_before = {container.id for container in docker_client.containers.list(all=True)}

    with pytest.raises(DockerRejected) as rejected:
        engine.build_image(path="broken")
    with pytest.raises(EngineError) as failed:
        engine.build_image(path="failing")
    containers_after = {container.id for container in docker_client.containers.list(all=True)}

    assert rejected.value.status == 422
    assert "HELLO" in str(rejected.value)
    assert "returned a non-zero code" in str(failed.value)
    assert containers_after - containers_before == set()


def test_pull_from_unreachable_registry_is_502(engine: Any) -> None:
    """A registry that nobody serves is a 502 failure, not a Docker outage."""
    with pytest.raises(DockerFailed) as failed:
        engine.pull_image(f"127.0.0.1:{free_port()}/nothing", "v1")

    assert failed.value.status == 502
