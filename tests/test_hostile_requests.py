"""Malformed requests, wrong types and API keys, through the core client with no framework.

The engine here is a real ``DNA`` whose Docker client points at a socket
that no process listens on, and whose nginx commands are ``true``: every request that
passes validation ends at Docker with a 503, so any other 5xx is a bug.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import docker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dna_core.keys
from dna_core import (
    ALLOW_ALL,
    AUTH_HEADER,
    DNA,
    MAX_BODY_BYTES,
    ApiClient,
    LogsClient,
    NginxSettings,
    Request,
)

CLIENT_ADDRESS = "192.0.2.10"

#: Endpoint, field and whether a non-string value is a type error there.
STRING_FIELDS = [
    ("pull_image", "image"),
    ("pull_image", "tag"),
    ("run_deploy", "service"),
    ("run_deploy", "image"),
    ("start_service", "service"),
    ("stop_service", "service"),
    ("delete_service", "service"),
    ("add_domain", "service"),
    ("add_domain", "domain"),
    ("remove_domain", "service"),
    ("remove_domain", "domain"),
]

#: A valid body of each JSON endpoint, which the tests then spoil one field at a time.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "pull_image": {"image": "127.0.0.1:5999/web", "tag": "v1"},
    "build_image": {"options": {"path": "app", "tag": "web:v1"}},
    "run_deploy": {"service": "web", "image": "web:v1", "port": 80, "options": {}},
    "propagate_services": {},
    "start_service": {"service": "web"},
    "stop_service": {"service": "web"},
    "delete_service": {"service": "web"},
    "add_domain": {"service": "web", "domain": "web.example.test", "force_wildcard": False},
    "remove_domain": {"service": "web", "domain": "web.example.test"},
}

WRONG_TYPES: list[Any] = [123, 1.5, True, None, [], {}, ["web"], {"a": 1}]
HOSTILE_STRINGS = [
    "",
    "../../etc/passwd",
    "web;rm -rf /",
    "web\x00",
    "we\nb",
    "w" * 10_000,
    "²",
    "web.example.test; include /etc/nginx",
    "<script>alert(1)</script>",
]


@pytest.fixture
def offline_engine(tmp_path: Path) -> DNA:
    (tmp_path / "builds" / "app").mkdir(parents=True)
    dna = DNA(
        "offline",
        state_dir=tmp_path / "state",
        nginx=NginxSettings(
            include_dir=tmp_path / "sites",
            log_dir=tmp_path / "logs",
            test_command=("true",),
            reload_command=("true",),
        ),
        docker_client=docker.DockerClient(base_url=f"unix://{tmp_path}/nobody.sock", version="1.41", timeout=2),
        build_root=tmp_path / "builds",
    )
    dna.store.save_service("web", "web:v1", 80, "0" * 64, None, {})
    return dna


@pytest.fixture
def client(offline_engine: DNA) -> ApiClient:
    return ApiClient(offline_engine, precheck=ALLOW_ALL)


@pytest.fixture
def key(client: ApiClient) -> str:
    return client.keys.create(CLIENT_ADDRESS).key


def call(client: ApiClient, endpoint: str, body: Any, key: str, raw: bytes | None = None) -> Any:
    route = client.route(endpoint)
    path_params = {name: "web" for name in route.path_params}
    request = Request(
        method=route.methods[-1],
        path=f"/api{route.rule}",
        path_params=path_params,
        headers={AUTH_HEADER: key, "Content-Type": "application/json"},
        body=raw if raw is not None else json.dumps(body).encode(),
        remote_addr=CLIENT_ADDRESS,
    )
    return client.handle(endpoint, request)


def error_body(response: Any) -> dict[str, Any]:
    body = json.loads(response.data())
    assert isinstance(body["error"], str) and body["error"]
    return body


# Bodies


@pytest.mark.parametrize("endpoint", sorted(set(VALID_BODIES) - {"propagate_services"}))
@pytest.mark.parametrize(
    "raw, status",
    [
        (b"", 400),
        (b"   ", 400),
        (b"null", 400),
        (b"[]", 400),
        (b'"text"', 400),
        (b"42", 400),
        (b"{", 400),
        (b"{'service': 'web'}", 400),
        (b"\xff\xfe\x00", 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b"[" * 50_000 + b"]" * 50_000, 400),
        (b'{"service": "' + b"x" * MAX_BODY_BYTES + b'"}', 413),
    ],
)
def test_malformed_body_is_4xx(client: ApiClient, key: str, endpoint: str, raw: bytes, status: int) -> None:
    """Missing, malformed, non-object, too deep and oversized bodies get 400 or 413."""
    response = call(client, endpoint, None, key, raw=raw)

    assert response.status == status
    error_body(response)


@pytest.mark.parametrize("endpoint", sorted(VALID_BODIES))
def test_unknown_field_is_422(client: ApiClient, key: str, endpoint: str) -> None:
    """A field the endpoint does not take is named in a 422."""
    response = call(client, endpoint, {**VALID_BODIES[endpoint], "privileged": True}, key)

    assert response.status == 422
    assert error_body(response)["field"] == "privileged"


@pytest.mark.parametrize(
    "endpoint, field",
    [("run_deploy", "service"), ("run_deploy", "image"), ("run_deploy", "port"), ("add_domain", "domain"),
     ("build_image", "options"), ("pull_image", "image"), ("remove_domain", "service")],
)
def test_missing_field_is_400(client: ApiClient, key: str, endpoint: str, field: str) -> None:
    """A missing required field is named in a 400."""
    body = {name: value for name, value in VALID_BODIES[endpoint].items() if name != field}

    response = call(client, endpoint, body, key)

    assert response.status == 400
    assert error_body(response)["field"] == field


# Field types and values


@pytest.mark.parametrize(
    "endpoint, field, value",
    # A null tag is valid: it means 'latest'.
    [(endpoint, field, value) for endpoint, field in STRING_FIELDS for value in WRONG_TYPES
     if not (field == "tag" and value is None)],
)
def test_wrong_type_is_4xx(client: ApiClient, key: str, endpoint: str, field: str, value: Any) -> None:
    """A number, boolean, list or object where a string belongs gets a 4xx."""
    response = call(client, endpoint, {**VALID_BODIES[endpoint], field: value}, key)

    assert 400 <= response.status < 500, response.data()
    error_body(response)


@pytest.mark.parametrize("endpoint, field", STRING_FIELDS)
@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_hostile_string_is_rejected(client: ApiClient, key: str, endpoint: str, field: str, value: str) -> None:
    """Traversal, injection, control characters and huge strings get a 4xx naming the field."""
    response = call(client, endpoint, {**VALID_BODIES[endpoint], field: value}, key)

    assert 400 <= response.status < 500, response.data()
    body = error_body(response)
    assert body.get("field", field) == field


@pytest.mark.parametrize(
    "endpoint, field, value",
    [
        ("run_deploy", "port", value)
        for value in [0, 65536, -80, 80.5, "80a", "²", True, None, [80], {"port": 80}, "9" * 5000]
    ]
    + [("run_deploy", "options", value) for value in [[], "x", 1, True]]
    + [("build_image", "options", value) for value in [[], "x", 1, None, {}]]
    + [("add_domain", "force_wildcard", value) for value in ["yes", 1, None, []]]
    + [("add_domain", "force_provision", value) for value in ["no", 0, {}]]
    + [("add_domain", "proxy_set_header", value) for value in [[], "X-A: b", {"X-A": 1}, {"X A": "b"},
                                                               {"X-A": 'b"; include /etc'}, {"X-A": "b\nc"}]],
)
def test_invalid_value_is_4xx(client: ApiClient, key: str, endpoint: str, field: str, value: Any) -> None:
    """Ports, options, flags and headers of the wrong type or range get a 4xx."""
    response = call(client, endpoint, {**VALID_BODIES[endpoint], field: value}, key)

    assert 400 <= response.status < 500, response.data()
    error_body(response)


@pytest.mark.parametrize(
    "endpoint, options",
    [
        ("run_deploy", {"service": "other"}),
        ("run_deploy", {"port": 81}),
        ("run_deploy", {"privileged": True}),
        ("run_deploy", {"network_mode": "host"}),
        ("run_deploy", {"pid_mode": "host"}),
        ("run_deploy", {"ipc_mode": "host"}),
        ("run_deploy", {"devices": ["/dev/sda:/dev/sda"]}),
        ("run_deploy", {"cap_add": ["SYS_ADMIN"]}),
        ("run_deploy", {"volumes": ["/:/host"]}),
        ("run_deploy", {"labels": {"dna.instance": "other"}}),
        ("run_deploy", {"mem_limit": "lots"}),
        ("build_image", {"path": "app", "stream": False}),
        ("build_image", {"path": "../../"}),
        ("build_image", {"path": "app", "dockerfile": "../../../etc/passwd"}),
    ],
)
def test_refused_options_are_422(client: ApiClient, key: str, endpoint: str, options: dict[str, Any]) -> None:
    """Options that break isolation or collide with parameters are named in a 422."""
    body = {**VALID_BODIES[endpoint], "options": options}

    response = call(client, endpoint, body, key)

    assert response.status == 422, response.data()
    assert error_body(response)["field"].startswith("options")


def test_get_service_info_hostile_name(client: ApiClient, key: str) -> None:
    """A path parameter that is not a service name gets a 422."""
    request = Request(
        path="/api/get_service_info/x",
        path_params={"name": "../../etc"},
        headers={AUTH_HEADER: key},
        remote_addr=CLIENT_ADDRESS,
    )

    response = client.handle("get_service_info", request)

    assert response.status == 422


def test_valid_request_without_docker_is_503(client: ApiClient, key: str) -> None:
    """A valid request that needs the unreachable daemon gets the documented 503."""
    response = call(client, "start_service", {"service": "web"}, key)

    assert response.status == 503
    assert "Docker daemon" in error_body(response)["error"]


# Safety net


def test_unexpected_exception_is_clean_500(
    client: ApiClient, key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the engine becomes a logged, plain JSON 500 that reveals no details."""

    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("secret internal state")

    monkeypatch.setattr(client.dna, "stop_service", broken)

    with caplog.at_level(logging.ERROR, logger="dna_core.clients"):
        response = call(client, "stop_service", {"service": "web"}, key)

    assert response.status == 500
    assert "secret internal state" not in response.data().decode()
    assert "stop_service failed unexpectedly" in caplog.text
    assert "secret internal state" in caplog.text


# Logs pages


@pytest.mark.parametrize("lines", ["²", "٣", "9" * 5000, "-1", "0", "1e3", " 5", "abc"])
def test_logs_lines_parameter_is_400(offline_engine: DNA, lines: str) -> None:
    """A ``lines`` value that is not a whole number in range gets a 400 page."""
    logs = LogsClient(offline_engine)

    response = logs.handle("dna", Request(path="/dna", query={"lines": lines}, remote_addr=CLIENT_ADDRESS))

    assert response.status == 400


# API keys


def key_page(client: ApiClient, endpoint: str, method: str = "GET", remote_addr: str = CLIENT_ADDRESS,
             form: str = "", **kwargs: Any) -> Any:
    route = client.route(endpoint)
    request = Request(
        method=method,
        path=route.rule,
        body=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        remote_addr=remote_addr,
        **kwargs,
    )
    return client.handle(endpoint, request)


def test_key_stored_only_as_hash(client: ApiClient, offline_engine: DNA) -> None:
    """The database contains the SHA-256 of the key, never the key or its secret part."""
    created = client.keys.create(CLIENT_ADDRESS)
    secret = created.key.split("_", 2)[2]

    database = offline_engine.store.path.read_bytes()
    for suffix in ("-wal", "-shm"):
        wal = offline_engine.store.path.with_name(offline_engine.store.path.name + suffix)
        if wal.exists():
            database += wal.read_bytes()
    rows = sqlite3.connect(offline_engine.store.path).execute("SELECT * FROM api_keys").fetchall()

    assert secret.encode() not in database
    assert all(created.key not in map(str, row) for row in rows)
    assert created.record.key_hash == __import__("hashlib").sha256(created.key.encode()).hexdigest()


def test_key_compared_in_constant_time(client: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification compares hashes with hmac.compare_digest."""
    created = client.keys.create(CLIENT_ADDRESS)
    compared = []
    real = dna_core.keys.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(dna_core.keys.hmac, "compare_digest", spy)

    client.keys.verify(created.key, CLIENT_ADDRESS)

    assert compared == [(created.record.key_hash, created.record.key_hash)]


def test_key_shown_once(client: ApiClient) -> None:
    """The creation page shows the key; the index and key pages show only its id."""
    token = client.keys.csrf_token(CLIENT_ADDRESS)

    created = key_page(client, "new_key", "POST", form=f"csrf_token={token}")
    page = created.data().decode()
    key = next(word for word in page.replace("<", " ").replace(">", " ").split() if word.startswith("dna_"))
    key_id = key.split("_")[1]
    index = key_page(client, "keys").data().decode()
    manage = key_page(client, "manage_key", query={"key": key_id}).data().decode()

    assert created.status == 201
    assert key_id in index
    assert key_id in manage
    assert key not in index
    assert key not in manage
    assert key.split("_", 2)[2] not in index + manage


def test_key_manage_page_by_full_key_is_404(client: ApiClient) -> None:
    """A full key in the URL is not accepted as an id, so keys never need to be in URLs."""
    created = client.keys.create(CLIENT_ADDRESS)

    response = key_page(client, "manage_key", query={"key": created.key})

    assert response.status == 404
    assert created.key not in response.data().decode()


@pytest.mark.parametrize(
    "form",
    ["", "csrf_token=", "csrf_token=forged", "csrf_token=%C3%A9%00", "csrf_token=" + "a" * 64, "\xff"],
)
def test_key_create_needs_csrf_token(client: ApiClient, form: str) -> None:
    """POST without the form token, or with a forged one, is 403 and creates no key."""
    response = key_page(client, "new_key", "POST", form=form.encode("latin-1").decode("latin-1"))

    assert response.status in (400, 403)
    assert client.keys.store.active_keys() == []


def test_key_csrf_token_bound_to_address(client: ApiClient) -> None:
    """A token issued to one address does not work from another."""
    token = client.keys.csrf_token("192.0.2.99")

    response = key_page(client, "new_key", "POST", form=f"csrf_token={token}")

    assert response.status == 403
    assert client.keys.store.active_keys() == []


def test_key_get_pages_change_nothing(client: ApiClient) -> None:
    """GET on the create and revoke pages only shows a form."""
    created = client.keys.create(CLIENT_ADDRESS)
    route = client.route("revoke_key")

    new_page = key_page(client, "new_key")
    revoke_page = client.handle(
        "revoke_key",
        Request(path=route.rule, path_params={"key": created.record.key_id}, remote_addr=CLIENT_ADDRESS),
    )

    assert new_page.status == 200
    assert 'method="post"' in new_page.data().decode()
    assert revoke_page.status == 200
    assert 'method="post"' in revoke_page.data().decode()
    assert [record.key_id for record in client.keys.store.active_keys()] == [created.record.key_id]


def test_key_revoke_by_post(client: ApiClient, key: str) -> None:
    """POST with the token revokes; the key then gets 403 on the API."""
    key_id = key.split("_")[1]
    token = client.keys.csrf_token(CLIENT_ADDRESS)
    route = client.route("revoke_key")
    request = Request(
        method="POST", path=route.rule, path_params={"key": key_id},
        body=f"csrf_token={token}".encode(), remote_addr=CLIENT_ADDRESS,
    )

    revoked = client.handle("revoke_key", request)
    after = call(client, "start_service", {"service": "web"}, key)

    assert revoked.status == 200
    assert after.status == 403
    assert "revoked" in error_body(after)["error"]


def test_key_expires_after_configured_lifetime(offline_engine: DNA, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key works until its lifetime ends and gets 403 afterwards."""
    client = ApiClient(offline_engine, precheck=ALLOW_ALL, key_lifetime=120)
    now = [1_000_000.0]
    monkeypatch.setattr(dna_core.keys.time, "time", lambda: now[0])
    key = client.keys.create(CLIENT_ADDRESS).key

    now[0] += 119
    before = call(client, "start_service", {"service": "nope"}, key)
    now[0] += 2
    after = call(client, "start_service", {"service": "nope"}, key)

    assert before.status == 404
    assert after.status == 403
    assert "expired" in error_body(after)["error"]


@pytest.mark.parametrize("lifetime", [0, -1])
def test_key_lifetime_must_be_positive(offline_engine: DNA, lifetime: float) -> None:
    """A lifetime of zero or less is a configuration error."""
    with pytest.raises(ValueError, match="lifetime"):
        ApiClient(offline_engine, key_lifetime=lifetime)


def test_key_ignores_forwarded_for_by_default(client: ApiClient, key: str) -> None:
    """Without trusted proxies, X-Forwarded-For cannot move a key to another address."""
    request = Request(
        method="POST", path="/api/start_service",
        headers={AUTH_HEADER: key, "X-Forwarded-For": CLIENT_ADDRESS},
        body=b'{"service": "nope"}', remote_addr="198.51.100.7",
    )

    response = client.handle("start_service", request)

    assert response.status == 403
    assert "create a key from this address" in error_body(response)["error"]


def test_key_trusted_proxy_uses_rightmost_entry(offline_engine: DNA) -> None:
    """With one trusted proxy the address it appended counts, not what the client wrote."""
    client = ApiClient(offline_engine, precheck=ALLOW_ALL, trusted_proxies=1)
    key = client.keys.create(CLIENT_ADDRESS).key

    def send(forwarded: str) -> int:
        request = Request(
            method="POST", path="/api/start_service",
            headers={AUTH_HEADER: key, "X-Forwarded-For": forwarded},
            body=b'{"service": "nope"}', remote_addr="10.0.0.1",
        )
        return client.handle("start_service", request).status

    assert send(f"203.0.113.5, {CLIENT_ADDRESS}") == 404
    assert send(f"{CLIENT_ADDRESS}, 203.0.113.5") == 403
    assert send("not-an-address") == 403


@pytest.mark.parametrize("header", ["", "dna", "dna__", "dna_x_y", "Bearer abc", "dna_" + "a" * 5000, "dna_é_é"])
def test_key_malformed_header_is_403(client: ApiClient, header: str) -> None:
    """Malformed or unknown keys get 403 with a message that does not repeat them."""
    response = call(client, "start_service", {"service": "web"}, header)

    assert response.status == 403
    if header:
        assert header not in error_body(response)["error"]


def test_key_creation_from_non_ip_address_is_400(client: ApiClient) -> None:
    """A peer address that is not an IP (a unix socket) cannot own a key."""
    token = client.keys.csrf_token("unix:/run/app.sock")

    response = key_page(client, "new_key", "POST", remote_addr="unix:/run/app.sock", form=f"csrf_token={token}")

    assert response.status == 400


def test_key_never_logged(client: ApiClient, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """Failed and successful calls log nothing that contains the key."""
    with caplog.at_level(logging.DEBUG):
        call(client, "start_service", {"service": "web"}, key)
        call(client, "start_service", {"service": "web"}, key + "x")

    assert key.split("_", 2)[2] not in caplog.text


# Generated requests to the pages


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    service=st.text(max_size=80),
    log=st.text(max_size=20) | st.sampled_from(["docker", "nginx", "error"]),
    lines=st.none() | st.text(max_size=12),
)
def test_logs_pages_never_5xx(offline_engine: DNA, service: str, log: str, lines: str | None) -> None:
    """Any service, log type and ``lines`` value gets a page, a 4xx or the Docker 503."""
    logs = LogsClient(offline_engine, fallback=lambda name, kind: None)
    query = {} if lines is None else {"lines": lines}
    request = Request(path="/x/y", path_params={"service": service, "log": log}, query=query)

    response = logs.handle("service_log", request)

    assert response.status < 500 or response.status == 503
    assert "<script" not in response.data().decode()


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    endpoint=st.sampled_from(["keys", "new_key", "manage_key", "revoke_key"]),
    method=st.sampled_from(["GET", "POST"]),
    form=st.binary(max_size=200),
    key_id=st.text(max_size=40),
    remote_addr=st.sampled_from([CLIENT_ADDRESS, "::1", "", "unix:/run/app.sock", "999.1.1.1"]),
)
def test_key_pages_never_5xx(
    client: ApiClient, endpoint: str, method: str, form: bytes, key_id: str, remote_addr: str
) -> None:
    """Any form body, key id and peer address gets a page or a 4xx, and no key without a token."""
    request = Request(
        method=method,
        path=f"/{endpoint}",
        path_params={"key": key_id} if endpoint == "revoke_key" else {},
        query={"key": key_id},
        body=form,
        remote_addr=remote_addr,
    )

    response = client.handle(endpoint, request)

    assert response.status < 500
    assert response.status != 201
