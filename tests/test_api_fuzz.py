"""Fuzz the served API from its own OpenAPI document with schemathesis.

Every operation gets up to :data:`MAX_EXAMPLES` valid and as many invalid
requests. The real engine runs them against the real Docker daemon and a
private nginx. Only ``pull_image`` runs against a stand-in engine, because a
valid image reference without a registry host names Docker Hub, and the
tests never leave the machine.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

flask = pytest.importorskip("flask", reason="the fuzz tests serve the API through Flask")
schemathesis = pytest.importorskip("schemathesis", reason="the fuzz tests need schemathesis")

import dna_flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from dna_core import ALLOW_ALL, MAX_BODY_BYTES, ApiClient, KeyManager, Request
from dna_core.store import Store
from dna_core.validation import validate_image, validate_tag

#: Examples per operation and generation mode; DNA_FUZZ_EXAMPLES raises it for a longer run.
MAX_EXAMPLES = int(os.environ.get("DNA_FUZZ_EXAMPLES", "30"))
CLIENT_ADDRESS = "127.0.0.1"

# Status 503 is the documented response when the Docker daemon is unreachable.
ALLOWED_5XX = {503}


def make_app(engine: Any) -> Any:
    app = flask.Flask(__name__)
    app.register_blueprint(dna_flask.create_api_client(engine, precheck=ALLOW_ALL), url_prefix="/api")
    return app


def fuzz(
    app: Any,
    key: str,
    exclude: frozenset[str] = frozenset(),
    only: frozenset[str] | None = None,
    target_service: str | None = None,
) -> collections.Counter[tuple[str, int]]:
    """Send generated requests to every operation; return the count per (operation, status).

    :param target_service: a deployed service that every other valid request
        names instead of its generated name, so that requests get past the
        lookup and reach Docker and nginx.
    """
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        name = operation.definition.raw.get("operationId", operation.label)
        if name in exclude or (only is not None and name not in only):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            retarget = target_service if mode is GenerationMode.POSITIVE and name != "delete_service" else None
            try:
                fuzz_operation(operation, mode, key, retarget, statuses)
            except Unsatisfiable:
                # An operation with no body and no parameters has no invalid form.
                pass
    return statuses


def fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    key: str,
    target_service: str | None,
    statuses: collections.Counter[tuple[str, int]],
) -> None:
    sent = iter(range(1_000_000))

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        if target_service and isinstance(case.body, dict) and "service" in case.body and next(sent) % 2 == 0:
            case.body["service"] = target_service
        response = case.call(headers={"App-Key-DNA": key}, environ_overrides={"REMOTE_ADDR": CLIENT_ADDRESS})
        statuses[(operation.label, response.status_code)] += 1

    send()


def server_errors(statuses: collections.Counter[tuple[str, int]]) -> dict[Any, int]:
    return {key: count for key, count in statuses.items() if key[1] >= 500 and key[1] not in ALLOWED_5XX}


def snapshot(root: Path, skip: set[Path]) -> set[Path]:
    """Return every file and directory under ``root``, leaving out the trees in ``skip``."""
    found = set()
    for directory, subdirectories, files in os.walk(root):
        here = Path(directory)
        subdirectories[:] = [
            name
            for name in subdirectories
            if here / name not in skip and name not in {".hypothesis", ".pytest_cache", "__pycache__"}
        ]
        found.update(here / name for name in subdirectories + files)
    return found


def test_openapi_document_lists_every_route(tmp_path: Path) -> None:
    """/openapi.json names every route of the client with its methods."""
    client = ApiClient(StandInEngine(tmp_path))

    response = client.handle("openapi", Request(path="/api/openapi.json"))
    document = __import__("json").loads(response.body)

    assert response.status == 200
    assert document["openapi"].startswith("3.")
    assert document["servers"] == [{"url": "/api"}]
    for route in client.routes:
        if route.endpoint == "openapi":
            continue
        path = route.rule.replace("<", "{").replace(">", "}")
        assert path in document["paths"], route.rule
        for method in route.methods:
            assert method.lower() in document["paths"][path], (route.rule, method)
    assert document["paths"]["/run_deploy"]["post"]["security"] == [{"apiKey": []}]


def test_openapi_matches_run_deploy_validation(tmp_path: Path) -> None:
    """The run_deploy schema admits what the validators accept: digit-string ports and every allowed option."""
    from dna_core.validation import RUN_OPTIONS

    client = ApiClient(StandInEngine(tmp_path))
    document = __import__("json").loads(client.handle("openapi", Request(path="/api/openapi.json")).body)
    schema = document["paths"]["/run_deploy"]["post"]["requestBody"]["content"]["application/json"]["schema"]

    port_types = [option["type"] for option in schema["properties"]["port"]["oneOf"]]
    options_text = schema["properties"]["options"]["description"]

    assert port_types == ["integer", "string"]
    for key in RUN_OPTIONS:
        assert key in options_text, key


@pytest.mark.docker
def test_fuzz_real_engine_no_server_errors(
    engine: Any, image_factory: Any, tmp_path: Path, private_nginx: Any
) -> None:
    """Generated requests never get a 5xx, break nginx or write outside the state."""
    image = image_factory("fuzz target")
    engine.run_deploy("web", image, 80, init=True)
    engine.add_domain("web", "web.fuzz.test")
    key = KeyManager(engine.store).create(CLIENT_ADDRESS).key
    watched_roots = [tmp_path, Path.cwd()]
    skip = {engine.state_dir, Path(private_nginx.root)}
    before = {root: snapshot(root, skip) for root in watched_roots}

    statuses = fuzz(make_app(engine), key, exclude=frozenset({"pull_image"}), target_service="web")

    print(f"\nreal engine: {sum(statuses.values())} requests, statuses {sorted(statuses.items())}")
    assert sum(statuses.values()) > 0
    assert server_errors(statuses) == {}
    assert statuses[("POST /add_domain", 200)] > 0, "no generated domain reached nginx"
    engine.nginx.test()
    for root in watched_roots:
        assert snapshot(root, skip) - before[root] == set(), root


def test_fuzz_pull_image_no_server_errors(tmp_path: Path) -> None:
    """Generated pull requests get a stream or a 4xx, never a 5xx."""
    engine = StandInEngine(tmp_path)
    key = KeyManager(engine.store).create(CLIENT_ADDRESS).key

    statuses = fuzz(make_app(engine), key, only=frozenset({"pull_image"}))

    print(f"\npull_image: {sum(statuses.values())} requests, statuses {sorted(statuses.items())}")
    assert sum(statuses.values()) > 0
    assert server_errors(statuses) == {}
    assert engine.pulled, "no generated request reached the engine"


def test_oversized_body_through_flask_is_413(tmp_path: Path) -> None:
    """Flask reads at most one byte past the limit and returns a JSON 413."""
    engine = StandInEngine(tmp_path)
    key = KeyManager(engine.store).create(CLIENT_ADDRESS).key
    body = b'{"image": "' + b"x" * (MAX_BODY_BYTES * 2) + b'"}'

    response = make_app(engine).test_client().post(
        "/api/pull_image", data=body, content_type="application/json", headers={"App-Key-DNA": key}
    )

    assert response.status_code == 413
    assert response.get_json()["title"] == "Payload Too Large"
    assert engine.pulled == []


class StandInEngine:
    """Just enough of the engine for ``pull_image``: it validates and records, never pulls."""

    name = "standin"
    services: tuple[Any, ...] = ()

    def __init__(self, root: Path) -> None:
        self.store = Store(root / "standin.sqlite3")
        self.pulled: list[tuple[str, str | None]] = []

    def pull_image(self, image: Any, tag: Any = None, stream: bool = False) -> Iterator[str]:
        image = validate_image(image)
        tag = validate_tag(tag)
        self.pulled.append((image, tag))
        return iter([f"{tag or 'latest'}: Pulling from {image}", "Status: Downloaded newer image"])
