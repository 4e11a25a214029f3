"""propagate_services makes the same number of Docker API calls for any number of services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dna_core import LABEL_INSTANCE, LABEL_SERVICE, LABEL_STATE

pytestmark = pytest.mark.docker


@pytest.fixture
def docker_requests(engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every HTTP request the engine's Docker client sends."""
    api = engine.docker.api
    sent: list[str] = []
    send = api.send

    def counting_send(request: Any, **options: Any) -> Any:
        sent.append(f"{request.method} {request.path_url}")
        return send(request, **options)

    monkeypatch.setattr(api, "send", counting_send)
    yield sent


def add_services(engine: Any, docker_client: Any, image: str, names: list[str]) -> None:
    """Create one stopped container and one record per name, as a deploy leaves them."""
    for name in names:
        container = docker_client.containers.create(
            image,
            name=f"dna-{engine.name}-{name}",
            labels={LABEL_INSTANCE: engine.name, LABEL_STATE: engine.state_id, LABEL_SERVICE: name},
        )
        engine.store.save_service(name, image, 80, container.id, None, {})


def test_propagate_calls_constant(
    engine: Any, docker_client: Any, image_factory: Any, docker_requests: list[str]
) -> None:
    """Two services and twelve services cost the same single label-filtered list."""
    image = image_factory("propagate")

    add_services(engine, docker_client, image, ["a1", "a2"])
    docker_requests.clear()
    engine.propagate_services()
    with_two = list(docker_requests)

    add_services(engine, docker_client, image, [f"b{i}" for i in range(10)])
    docker_requests.clear()
    engine.propagate_services()
    with_twelve = list(docker_requests)

    assert len(with_two) == 1
    assert with_two[0].startswith("GET /v")
    assert "/containers/json?" in with_two[0]
    assert len(with_twelve) == len(with_two)
    assert sorted(info.name for info in engine.services) == sorted(["a1", "a2", *(f"b{i}" for i in range(10))])
    assert all(info.state == "created" for info in engine.services)
