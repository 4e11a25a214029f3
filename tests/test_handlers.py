"""Handlers with no web framework: neutral requests against a stand-in engine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dna_core import (
    ALLOW_ALL,
    DENY_ALL,
    ApiClient,
    KeyManager,
    LogsClient,
    PrecheckDenied,
    Request,
    Response,
    ServiceInfo,
    ServiceNotFound,
    precheck,
)
from dna_core.store import Store


class StandInEngine:
    """Records calls and returns canned results, like DNA without Docker or nginx."""

    name = "standin"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.log_path = store.path.parent / "engine.log"
        self.log_path.write_text("deployed <web> & more\n")
        self.calls: list[tuple[Any, ...]] = []
        self.known = {"web": ServiceInfo("web", "web:v1", 80, ["app.example.test"], "abc", "running")}

    @property
    def services(self) -> list[ServiceInfo]:
        return list(self.known.values())

    def has_service(self, name: str) -> bool:
        return name in self.known

    def _service(self, name: str) -> ServiceInfo:
        if name not in self.known:
            raise ServiceNotFound(name)
        return self.known[name]

    def pull_image(self, image: str, tag: str | None = None, stream: bool = False) -> Iterator[str]:
        self.calls.append(("pull_image", image, tag))
        return iter(["layer 1 Pulling", "layer 1 Pull complete"])

    def build_image(self, stream: bool = False, **options: Any) -> Iterator[str]:
        self.calls.append(("build_image", options))
        return iter(["Step 1/2 : FROM scratch", "Successfully built 1234"])

    def run_deploy(self, service: str, image: str, port: int, **options: Any) -> bool:
        self.calls.append(("run_deploy", service, image, port, options))
        return True

    def propagate_services(self) -> bool:
        self.calls.append(("propagate_services",))
        return True

    def get_service_info(self, name: str) -> ServiceInfo:
        return self._service(name)

    def start_service(self, service: str) -> bool:
        self._service(service)
        self.calls.append(("start_service", service))
        return True

    def stop_service(self, service: str) -> bool:
        self._service(service)
        self.calls.append(("stop_service", service))
        return True

    def add_domain(self, service: str, domain: str, **options: Any) -> bool:
        self._service(service)
        self.calls.append(("add_domain", service, domain, options))
        return True

    def remove_domain(self, service: str, domain: str) -> bool:
        self._service(service)
        self.calls.append(("remove_domain", service, domain))
        return False

    def delete_service(self, service: str) -> bool:
        self._service(service)
        self.calls.append(("delete_service", service))
        return True

    def docker_logs(self, service: str, lines: int = 200) -> list[str]:
        return ["container says <b>hi</b>"][-lines:]

    def nginx_logs(self, service: str, error: bool = False, lines: int = 200) -> list[str]:
        kind = "error" if error else "access"
        return [f'{kind}: "GET /<script>alert(1)</script> HTTP/1.1" 404'][-lines:]

    def nginx_log_path(self, service: str, error: bool = False) -> Path:
        path = self.store.path.parent / f"{service}.{'error' if error else 'access'}.log"
        path.write_text("\n".join(self.nginx_logs(service, error)) + "\n")
        return path

    def dna_logs(self, lines: int = 200) -> list[str]:
        return ["deployed <web> & more"][-lines:]


@pytest.fixture
def engine(tmp_path: Path) -> StandInEngine:
    return StandInEngine(Store(tmp_path / "state.sqlite3"))


@pytest.fixture
def api(engine: StandInEngine) -> ApiClient:
    return ApiClient(engine, precheck=ALLOW_ALL)


@pytest.fixture
def key(api: ApiClient) -> str:
    return api.keys.create("127.0.0.1").key


def call(client: Any, endpoint: str, body: Any = None, key: str | None = None, **request: Any) -> Response:
    headers = {"App-Key-DNA": key} if key else {}
    if isinstance(body, bytes):
        raw = body
    elif body is None:
        raw = b""
    else:
        raw = json.dumps(body).encode()
    request.setdefault("method", "POST")
    request.setdefault("remote_addr", "127.0.0.1")
    return client.handle(endpoint, Request(headers=headers, body=raw, **request))


def payload(response: Response) -> Any:
    return json.loads(response.data())


def test_run_deploy_calls_engine(api: ApiClient, engine: StandInEngine, key: str) -> None:
    """run_deploy passes service, image, port and options to the engine."""
    body = {"service": "web", "image": "web:v2", "port": 8080, "options": {"init": True}}

    response = call(api, "run_deploy", body, key)

    assert response.status == 200
    assert payload(response) == {"success": True}
    assert engine.calls == [("run_deploy", "web", "web:v2", 8080, {"init": True})]


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        ("start_service", {"service": "web"}, {"success": True}),
        ("stop_service", {"service": "web"}, {"success": True}),
        ("add_domain", {"service": "web", "domain": "a.example.test"}, {"success": True}),
        (
            "remove_domain",
            {"service": "web", "domain": "a.example.test"},
            {"success": False, "error": "Domain 'a.example.test' is not routed to service 'web'."},
        ),
        ("delete_service", {"service": "web"}, {"success": True}),
        ("propagate_services", None, {"success": True}),
    ],
)
def test_engine_endpoints_answer_json(api: ApiClient, key: str, endpoint: str, body: Any, expected: Any) -> None:
    """Each engine endpoint returns the engine's result as JSON."""
    response = call(api, endpoint, body, key)

    assert response.status == 200
    assert payload(response) == expected


def test_get_service_info(api: ApiClient, key: str) -> None:
    """get_service_info returns the service as JSON; an unknown one is 404."""
    found = call(api, "get_service_info", key=key, method="GET", path_params={"name": "web"})
    missing = call(api, "get_service_info", key=key, method="GET", path_params={"name": "nope"})

    assert payload(found)["domains"] == ["app.example.test"]
    assert missing.status == 404
    assert "nope" in payload(missing)["error"]


def test_streaming_endpoints(api: ApiClient, engine: StandInEngine, key: str) -> None:
    """pull_image and build_image stream the engine's lines as text."""
    pulled = call(api, "pull_image", {"image": "busybox", "tag": "1"}, key)
    built = call(api, "build_image", {"options": {"path": "ctx"}}, key)

    assert pulled.is_stream
    assert pulled.data() == b"layer 1 Pulling\nlayer 1 Pull complete\n"
    assert built.data().endswith(b"Successfully built 1234\n")
    assert engine.calls[0] == ("pull_image", "busybox", "1")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "empty"),
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"service": "web"}).encode(), 400, "Missing field 'image'"),
        (json.dumps({"service": "web", "image": "a", "port": 1, "extra": 1}).encode(), 422, "Unknown field 'extra'"),
        (json.dumps({"service": "web", "image": "a", "port": 1, "options": []}).encode(), 422, "options"),
        (b"{" + b" " * (1024 * 1024) + b"}", 413, "larger than"),
    ],
)
def test_bad_bodies_are_4xx(api: ApiClient, engine: StandInEngine, key: str, body: bytes, status: int, fragment: str) -> None:
    """Missing, malformed, incomplete, unknown or oversized bodies get a 4xx and change nothing."""
    response = call(api, "run_deploy", body, key)

    assert response.status == status
    assert fragment in payload(response)["error"]
    assert engine.calls == []


def test_auth_failures(api: ApiClient, engine: StandInEngine, key: str) -> None:
    """Missing, wrong, other-address, expired and revoked keys are 403."""
    other = api.keys.create("127.0.0.2").key
    expired = KeyManager(api.keys.store, lifetime=0.000001).create("127.0.0.1").key
    revoked = api.keys.create("127.0.0.1")
    api.keys.store.revoke_key(revoked.record.key_id)

    for bad in (None, "dna_x_y", key + "x", other, expired, revoked.key):
        response = call(api, "delete_service", {"service": "web"}, bad)
        assert response.status == 403
        assert bad is None or bad not in response.data().decode()
    assert engine.calls == []


def test_forwarded_header_ignored_unless_trusted(engine: StandInEngine) -> None:
    """X-Forwarded-For changes the client address only with trusted proxies configured."""
    plain = ApiClient(engine, precheck=ALLOW_ALL)
    proxied = ApiClient(engine, precheck=ALLOW_ALL, trusted_proxies=1)
    key = plain.keys.create("203.0.113.7").key
    request = Request(
        method="POST",
        headers={"App-Key-DNA": key, "X-Forwarded-For": "203.0.113.7"},
        remote_addr="127.0.0.1",
    )

    assert plain.handle("propagate_services", request).status == 403
    assert proxied.handle("propagate_services", request).status == 200


def test_key_pages_deny_by_default(engine: StandInEngine) -> None:
    """The key pages are 403 unless the application allows them."""
    client = ApiClient(engine)

    response = client.handle("keys", Request(remote_addr="127.0.0.1"))

    assert response.status == 403
    assert repr(client.precheck) == repr(DENY_ALL)


def test_key_creation_needs_post_and_token(api: ApiClient) -> None:
    """GET shows a form; POST without the token is 403; with it the key is shown once."""
    form = api.handle("new_key", Request(remote_addr="127.0.0.1")).data().decode()
    token = re.search(r'value="([0-9a-f]{64})"', form).group(1)

    refused = call(api, "new_key", b"csrf_token=wrong")
    created = call(api, "new_key", f"csrf_token={token}".encode())
    shown = re.search(r'class="key">([^<]+)<', created.data().decode()).group(1)
    listing = api.handle("keys", Request(remote_addr="127.0.0.1")).data().decode()

    assert refused.status == 403
    assert created.status == 201
    assert api.keys.verify(shown, "127.0.0.1").key_id in listing
    assert shown not in listing


def test_revoke_key_by_post(api: ApiClient, key: str) -> None:
    """revoke_key confirms on GET and revokes on POST with the form token."""
    key_id = key.split("_")[1]
    token = api.keys.csrf_token("127.0.0.1")

    confirm = call(api, "revoke_key", method="GET", path_params={"key": key_id})
    revoked = call(api, "revoke_key", f"csrf_token={token}".encode(), path_params={"key": key_id})

    assert confirm.status == 200
    assert revoked.status == 200
    assert api.keys.store.get_key(key_id).revoked_at is not None


def test_logs_pages_escape_lines(engine: StandInEngine) -> None:
    """Every log page escapes the log text."""
    logs = LogsClient(engine)
    pages = [
        logs.handle("dna", Request()),
        logs.handle("service_log", Request(path_params={"service": "web", "log": "nginx"})),
        logs.handle("service_log", Request(path_params={"service": "web", "log": "error"})),
        logs.handle("service_log", Request(path_params={"service": "web", "log": "docker"})),
    ]

    texts = [page.data().decode() for page in pages]

    assert all(page.status == 200 for page in pages)
    assert "deployed &lt;web&gt; &amp; more" in texts[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in texts[1]
    assert "<script>" not in "".join(texts)
    assert "container says &lt;b&gt;hi&lt;/b&gt;" in texts[3]


def test_logs_index_links_three_logs(engine: StandInEngine) -> None:
    """The index links the engine log and each service's three logs."""
    page = LogsClient(engine).handle("index", Request()).data().decode()

    assert 'href="dna"' in page
    for kind in ("nginx", "error", "docker"):
        assert f'href="web/{kind}"' in page


def test_logs_fallback(engine: StandInEngine) -> None:
    """Unknown services and log types go to the fallback, else 404."""
    seen = []
    with_fallback = LogsClient(engine, fallback=lambda service, log: seen.append((service, log)) or "custom")
    without = LogsClient(engine)

    other_type = with_fallback.handle("service_log", Request(path_params={"service": "web", "log": "metrics"}))
    other_service = with_fallback.handle("service_log", Request(path_params={"service": "x", "log": "docker"}))
    missing = without.handle("service_log", Request(path_params={"service": "x", "log": "docker"}))

    assert other_type.data() == b"custom"
    assert other_service.data() == b"custom"
    assert seen == [("web", "metrics"), ("x", "docker")]
    assert missing.status == 404


def test_logs_precheck_protocol(engine: StandInEngine) -> None:
    """A core precheck guards every logs page; its denial is sent as is."""

    class TeamOnly:
        pass

    def deny(request: Request) -> None:
        raise PrecheckDenied(401, "log in first", [("WWW-Authenticate", "Basic")])

    guarded = LogsClient(engine, precheck=precheck(lambda request: request.header("x-team") == "ops"))
    custom = LogsClient(engine, precheck=precheck(deny))

    assert guarded.handle("index", Request()).status == 403
    assert guarded.handle("index", Request(headers={"X-Team": "ops"})).status == 200
    denied = custom.handle("dna", Request())
    assert denied.status == 401
    assert denied.header("WWW-Authenticate") == "Basic"
    with pytest.raises(TypeError, match="precheck"):
        LogsClient(engine, precheck=TeamOnly())


def test_lines_parameter(engine: StandInEngine) -> None:
    """?lines= must be a whole number within the maximum."""
    logs = LogsClient(engine, max_lines=10)

    assert logs.handle("dna", Request(query={"lines": "5"})).status == 200
    assert logs.handle("dna", Request(query={"lines": "11"})).status == 400
    assert logs.handle("dna", Request(query={"lines": "-1"})).status == 400
