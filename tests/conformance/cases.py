"""HTTP cases that every adapter must pass the same way.

Each adapter's test module subclasses :class:`ConformanceCases` with an
:class:`Adapter` that mounts the logs client at ``/logs`` and the API client
at ``/api``. Requests go through werkzeug's test client, which drives any
WSGI app; the streaming case runs a real loopback server. The cases use the
stand-in engine of ``tests/fakes.py`` except the one marked ``docker``.

A case an adapter cannot support is overridden in its module with
``pytest.mark.skip(reason=...)``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from conftest import ServerThread
from dna_core import ALLOW_ALL, AUTH_HEADER, MAX_BODY_BYTES, KeyManager, precheck
from fakes import FakeDNA

#: Status the native prechecks of the adapter modules send when they deny.
NATIVE_DENIED = 401


class Adapter:
    """How one adapter builds an app; subclasses implement both methods."""

    def make_app(self, logs: dict[str, Any], api: dict[str, Any]) -> Any:
        """Return a WSGI app with the logs client at ``/logs`` and the API client at ``/api``.

        :param logs: keyword arguments of the adapter's ``create_logs_client``.
        :param api: keyword arguments of the adapter's ``create_api_client``.
        """
        raise NotImplementedError

    def native_precheck(self) -> Any:
        """Return the framework's own guard that lets only ``X-User: admin`` through.

        It denies with :data:`NATIVE_DENIED`.
        """
        raise NotImplementedError


def admin_only(request: Any) -> bool:
    """Tell whether a neutral request comes from the admin user."""
    return bool(request.header("X-User") == "admin")


ADMIN = {"X-User": "admin"}

# (endpoint, JSON body, engine method, positional arguments, keyword arguments)
ENGINE_CALLS = [
    ("run_deploy", {"service": "api", "image": "api:v2", "port": 8000}, "run_deploy", ("api", "api:v2", 8000), {}),
    (
        "run_deploy",
        {"service": "api", "image": "api:v2", "port": 8000, "options": {"init": True}},
        "run_deploy",
        ("api", "api:v2", 8000),
        {"init": True},
    ),
    ("propagate_services", None, "propagate_services", (), {}),
    ("start_service", {"service": "web"}, "start_service", ("web",), {}),
    ("stop_service", {"service": "web"}, "stop_service", ("web",), {}),
    (
        "add_domain",
        {"service": "web", "domain": "app.example.test", "force_wildcard": True},
        "add_domain",
        ("web", "app.example.test"),
        {"force_wildcard": True, "force_provision": False, "proxy_set_header": None},
    ),
    ("remove_domain", {"service": "web", "domain": "app.example.test"}, "remove_domain", ("web", "app.example.test"), {}),
    ("delete_service", {"service": "web"}, "delete_service", ("web",), {}),
]

BAD_KEYS = ["missing", "wrong", "other_ip", "expired", "revoked", "forwarded_for"]


class LoopbackClient(Client):
    """werkzeug's test client, sending from 127.0.0.1 as a real loopback client would."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        # werkzeug's test client sends no REMOTE_ADDR unless the caller sets one.
        kwargs.setdefault("environ_base", {"REMOTE_ADDR": "127.0.0.1"})
        return super().open(*args, **kwargs)


def body_of(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def json_of(response: TestResponse) -> Any:
    return json.loads(response.get_data())


class ConformanceCases:
    """The shared cases; a subclass sets :attr:`adapter`."""

    adapter: Adapter

    @pytest.fixture
    def dna(self, tmp_path: Path) -> FakeDNA:
        fake = FakeDNA(tmp_path)
        fake.add_service("web", domains=["app.example.test"])
        return fake

    @pytest.fixture
    def key(self, dna: FakeDNA) -> str:
        return KeyManager(dna.store).create("127.0.0.1").key

    def client(self, dna: Any, logs: dict[str, Any] | None = None, api: dict[str, Any] | None = None) -> Client:
        """Return a test client of an app built with the given client arguments."""
        logs_arguments = {"dna": dna, **(logs or {})}
        api_arguments = {"dna": dna, "precheck": ALLOW_ALL, **(api or {})}
        return LoopbackClient(self.adapter.make_app(logs_arguments, api_arguments))

    # Logs client

    def test_index_lists_service_logs(self, dna: FakeDNA) -> None:
        """The index links the engine log and every log of every service."""
        response = self.client(dna).get("/logs/")

        assert response.status_code == 200
        assert response.mimetype == "text/html"
        page = body_of(response)
        assert 'href="dna"' in page
        for kind in ("nginx", "error", "docker"):
            assert f'href="web/{kind}"' in page

    def test_index_without_slash_redirects(self, dna: FakeDNA) -> None:
        """The bare prefix redirects to the index, whose links are relative."""
        response = self.client(dna).get("/logs")

        assert response.status_code in (301, 308)
        assert response.headers["Location"].endswith("/logs/")

    def test_head_sends_no_body(self, dna: FakeDNA) -> None:
        """HEAD of a page succeeds like GET, without the body."""
        response = self.client(dna).head("/logs/")

        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert response.get_data() == b""

    def test_engine_log_is_escaped(self, dna: FakeDNA) -> None:
        """The engine log page shows the lines as text, never as markup."""
        dna.log_lines["dna"] = ["deployed web", "<script>alert(1)</script>"]

        response = self.client(dna).get("/logs/dna")

        assert response.status_code == 200
        page = body_of(response)
        assert "deployed web" in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script>alert" not in page

    @pytest.mark.parametrize("kind", ["docker", "nginx", "error"])
    def test_service_log_is_escaped(self, dna: FakeDNA, kind: str) -> None:
        """Each log page of a service shows its own log, escaped."""
        for other in ("docker", "nginx", "error"):
            dna.log_lines[other] = [f"{other} line <b>"]

        response = self.client(dna).get(f"/logs/web/{kind}")

        assert response.status_code == 200
        page = body_of(response)
        assert f"{kind} line &lt;b&gt;" in page
        assert "<b>" not in page
        assert sum(f"{other} line" in page for other in ("docker", "nginx", "error")) == 1

    def test_lines_parameter_reaches_engine(self, dna: FakeDNA) -> None:
        """The ``lines`` query parameter sets how many lines a page shows."""
        dna.log_lines["error"] = [f"error line {number:02d}" for number in range(10)]
        client = self.client(dna)

        docker_page = client.get("/logs/web/docker?lines=5")
        error_page = body_of(client.get("/logs/web/error?lines=7"))

        assert docker_page.status_code == 200
        assert dna.calls_to("docker_logs") == [(("web", 5), {})]
        assert "error line 03" in error_page
        assert "error line 09" in error_page
        assert "error line 02" not in error_page

    @pytest.mark.parametrize("lines", ["0", "abc", "999999"])
    def test_invalid_lines_is_400(self, dna: FakeDNA, lines: str) -> None:
        """A ``lines`` value outside 1 to the maximum is a client error."""
        response = self.client(dna).get(f"/logs/web/docker?lines={lines}")

        assert response.status_code == 400
        assert lines in body_of(response)
        assert dna.calls_to("docker_logs") == []

    def test_fallback_serves_unknown_pages(self, dna: FakeDNA) -> None:
        """An unknown log type or service goes to the fallback."""
        requested: list[tuple[str, str]] = []

        def fallback(service: str, log: str) -> str:
            requested.append((service, log))
            return f"fallback for {service}/{log}"

        client = self.client(dna, logs={"fallback": fallback})

        assert body_of(client.get("/logs/web/metrics")) == "fallback for web/metrics"
        assert body_of(client.get("/logs/nosuch/docker")) == "fallback for nosuch/docker"
        assert requested == [("web", "metrics"), ("nosuch", "docker")]

    def test_unknown_page_without_fallback_is_404(self, dna: FakeDNA) -> None:
        """Without a fallback an unknown log type or service is 404."""
        client = self.client(dna)

        assert client.get("/logs/web/metrics").status_code == 404
        assert client.get("/logs/nosuch/docker").status_code == 404
        assert dna.calls_to("docker_logs") == []

    def test_logs_core_precheck(self, dna: FakeDNA) -> None:
        """A core precheck allows the admin and denies everyone else with 403."""
        client = self.client(dna, logs={"precheck": precheck(admin_only)})

        assert client.get("/logs/", headers=ADMIN).status_code == 200
        assert client.get("/logs/web/docker", headers=ADMIN).status_code == 200
        assert client.get("/logs/").status_code == 403
        assert client.get("/logs/dna").status_code == 403
        assert client.get("/logs/web/docker").status_code == 403
        assert len(dna.calls_to("docker_logs")) == 1
        assert dna.calls_to("dna_logs") == []

    def test_logs_native_precheck(self, dna: FakeDNA) -> None:
        """The framework's own guard allows the admin and denies everyone else."""
        client = self.client(dna, logs={"precheck": self.adapter.native_precheck()})

        assert client.get("/logs/", headers=ADMIN).status_code == 200
        assert client.get("/logs/web/docker", headers=ADMIN).status_code == 200
        assert client.get("/logs/").status_code == NATIVE_DENIED
        assert client.get("/logs/dna").status_code == NATIVE_DENIED
        assert client.get("/logs/web/docker").status_code == NATIVE_DENIED
        assert len(dna.calls_to("docker_logs")) == 1
        assert dna.calls_to("dna_logs") == []

    # Key pages

    def test_key_pages_deny_by_default(self, dna: FakeDNA) -> None:
        """Without a precheck every key page is 403."""
        client = self.client(dna, api={"precheck": None})

        for path in ("/api/", "/api/new_key", "/api/manage_key?key=abc", "/api/revoke_key/abc"):
            assert client.get(path, headers=ADMIN).status_code == 403, path
        assert client.post("/api/new_key", headers=ADMIN).status_code == 403
        assert dna.store.active_keys() == []

    def test_key_pages_core_precheck(self, dna: FakeDNA) -> None:
        """A core precheck on the key pages allows the admin only."""
        client = self.client(dna, api={"precheck": precheck(admin_only)})

        assert client.get("/api/", headers=ADMIN).status_code == 200
        assert client.get("/api/new_key", headers=ADMIN).status_code == 200
        assert client.get("/api/").status_code == 403
        assert client.get("/api/new_key").status_code == 403

    def test_key_pages_native_precheck(self, dna: FakeDNA) -> None:
        """The framework's own guard on the key pages allows the admin only."""
        client = self.client(dna, api={"precheck": self.adapter.native_precheck()})

        assert client.get("/api/", headers=ADMIN).status_code == 200
        assert client.get("/api/new_key", headers=ADMIN).status_code == 200
        assert client.get("/api/").status_code == NATIVE_DENIED
        assert client.post("/api/new_key").status_code == NATIVE_DENIED
        assert dna.store.active_keys() == []

    def test_native_precheck_spares_engine_endpoints(self, dna: FakeDNA, key: str) -> None:
        """The key pages' guard does not apply to the key-authenticated endpoints."""
        client = self.client(dna, api={"precheck": self.adapter.native_precheck()})

        response = client.get("/api/get_service_info/web", headers={AUTH_HEADER: key})

        assert response.status_code == 200

    def test_key_created_and_revoked_through_pages(self, dna: FakeDNA) -> None:
        """A key made through the pages works, is never shown again, and stops once revoked."""
        client = self.client(dna)

        form = body_of(client.get("/api/new_key"))
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form)
        assert token is not None
        assert client.post("/api/new_key", data={}).status_code == 403
        created = client.post("/api/new_key", data={"csrf_token": token.group(1)})
        key_match = re.search(r'class="key">([^<]+)<', body_of(created))
        assert created.status_code == 201
        assert key_match is not None
        key = key_match.group(1)
        key_id = key.split("_")[1]

        assert client.post("/api/propagate_services", headers={AUTH_HEADER: key}).status_code == 200
        assert key_id in body_of(client.get("/api/"))
        assert key not in body_of(client.get("/api/"))
        assert key not in body_of(client.get(f"/api/manage_key?key={key_id}"))
        assert client.get(f"/api/revoke_key/{key_id}").status_code == 200
        assert client.post(f"/api/revoke_key/{key_id}", data={"csrf_token": token.group(1)}).status_code == 200
        assert client.post("/api/propagate_services", headers={AUTH_HEADER: key}).status_code == 403

    # Engine endpoints

    def test_get_service_info(self, dna: FakeDNA, key: str) -> None:
        """The service comes back as JSON."""
        response = self.client(dna).get("/api/get_service_info/web", headers={AUTH_HEADER: key})

        assert response.status_code == 200
        assert response.mimetype == "application/json"
        assert json_of(response) == dna.infos["web"].to_json()

    @pytest.mark.parametrize(("endpoint", "body", "method", "args", "kwargs"), ENGINE_CALLS)
    def test_engine_endpoint_succeeds(
        self, dna: FakeDNA, key: str, endpoint: str, body: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Each JSON endpoint calls the engine once with the body's values and reports success."""
        response = self.client(dna).post(f"/api/{endpoint}", json=body, headers={AUTH_HEADER: key})

        assert response.status_code == 200, body_of(response)
        assert json_of(response) == {"success": True}
        assert dna.calls_to(method) == [(args, kwargs)]

    def test_engine_failure_flag_is_reported(self, dna: FakeDNA, key: str) -> None:
        """An engine call that returns False is reported as ``success: false``."""
        dna.success = False

        response = self.client(dna).post("/api/stop_service", json={"service": "web"}, headers={AUTH_HEADER: key})

        assert response.status_code == 200
        assert json_of(response) == {"success": False}

    @pytest.mark.parametrize(
        ("endpoint", "body", "call"),
        [
            ("pull_image", {"image": "busybox", "tag": "1.36"}, ("pull_image", ("busybox", "1.36"), {"stream": True})),
            (
                "build_image",
                {"options": {"path": "app", "tag": "app:v1"}},
                ("build_image", (), {"stream": True, "path": "app", "tag": "app:v1"}),
            ),
        ],
    )
    def test_progress_endpoint_returns_lines(
        self, dna: FakeDNA, key: str, endpoint: str, body: Any, call: tuple[str, tuple[Any, ...], dict[str, Any]]
    ) -> None:
        """Pull and build return the engine's progress as plain-text lines."""
        response = self.client(dna).post(f"/api/{endpoint}", json=body, headers={AUTH_HEADER: key})

        assert response.status_code == 200
        assert response.mimetype == "text/plain"
        assert body_of(response) == "step 1\nstep 2\ndone\n"
        assert dna.calls == [call]

    def test_stream_reaches_client_before_it_ends(self, dna: FakeDNA, key: str) -> None:
        """The first progress line arrives while the engine is still producing the last."""
        import requests

        release = threading.Event()
        last_produced = threading.Event()

        def progress() -> Iterator[str]:
            yield "first"
            release.wait(timeout=10)
            last_produced.set()
            yield "last"

        dna.progress = progress
        app = self.adapter.make_app({"dna": dna}, {"dna": dna})

        with ServerThread(app) as server:
            response = requests.post(
                f"{server.url}/api/pull_image",
                json={"image": "busybox"},
                headers={AUTH_HEADER: key},
                stream=True,
                timeout=30,
            )
            lines = response.iter_lines(decode_unicode=True)
            first = next(lines)
            produced_before_first_read = last_produced.is_set()
            release.set()
            rest = list(lines)

        assert response.status_code == 200
        assert first == "first"
        assert not produced_before_first_read
        assert rest == ["last"]

    @pytest.mark.parametrize("case", BAD_KEYS)
    def test_bad_key_is_403(self, dna: FakeDNA, case: str) -> None:
        """Every kind of bad key gets a JSON 403 that never echoes the key, and the engine is not called."""
        manager = KeyManager(dna.store)
        headers: dict[str, str] = {}
        if case == "wrong":
            headers[AUTH_HEADER] = "dna_000000000000_notakey"
        elif case == "other_ip":
            headers[AUTH_HEADER] = manager.create("127.0.0.2").key
        elif case == "expired":
            created = manager.create("127.0.0.1")
            with dna.store.transaction() as db:
                db.execute("UPDATE api_keys SET expires_at = 0 WHERE key_id = ?", (created.record.key_id,))
            headers[AUTH_HEADER] = created.key
        elif case == "revoked":
            created = manager.create("127.0.0.1")
            dna.store.revoke_key(created.record.key_id)
            headers[AUTH_HEADER] = created.key
        elif case == "forwarded_for":
            # Any client can send X-Forwarded-For; without trusted proxies it must not count.
            headers[AUTH_HEADER] = manager.create("127.0.0.2").key
            headers["X-Forwarded-For"] = "127.0.0.2"
        client = self.client(dna)
        calls_before = list(dna.calls)

        responses = [
            client.post("/api/delete_service", json={"service": "web"}, headers=headers),
            client.post("/api/pull_image", json={"image": "busybox"}, headers=headers),
            client.get("/api/get_service_info/web", headers=headers),
        ]

        for response in responses:
            assert response.status_code == 403
            assert response.mimetype == "application/json"
            assert "error" in json_of(response)
            if headers.get(AUTH_HEADER):
                assert headers[AUTH_HEADER] not in body_of(response)
        assert dna.calls == calls_before
        assert dna.has_service("web")

    def test_missing_json_is_400(self, dna: FakeDNA, key: str) -> None:
        """An empty body where JSON is required is a 400 that names what to send."""
        response = self.client(dna).post("/api/stop_service", headers={AUTH_HEADER: key})

        assert response.status_code == 400
        assert "JSON" in json_of(response)["error"]
        assert dna.calls == []

    @pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b"\xff\xfe"])
    def test_malformed_json_is_400(self, dna: FakeDNA, key: str, payload: bytes) -> None:
        """A body that is not a JSON object is a 400, not a crash."""
        response = self.client(dna).post(
            "/api/stop_service", data=payload, headers={AUTH_HEADER: key, "Content-Type": "application/json"}
        )

        assert response.status_code == 400
        assert "error" in json_of(response)
        assert dna.calls == []

    def test_missing_field_is_400(self, dna: FakeDNA, key: str) -> None:
        """A body without a required field names the field."""
        response = self.client(dna).post("/api/add_domain", json={"service": "web"}, headers={AUTH_HEADER: key})

        assert response.status_code == 400
        assert json_of(response)["field"] == "domain"
        assert dna.calls == []

    def test_oversized_body_is_413(self, dna: FakeDNA, key: str) -> None:
        """A body over the limit is refused before it is parsed."""
        payload = json.dumps({"service": "web", "padding": "x" * MAX_BODY_BYTES}).encode()

        response = self.client(dna).post(
            "/api/stop_service", data=payload, headers={AUTH_HEADER: key, "Content-Type": "application/json"}
        )

        assert response.status_code == 413
        assert dna.calls == []

    def test_unknown_service_is_404(self, dna: FakeDNA, key: str) -> None:
        """An unknown service is a JSON 404 naming it."""
        client = self.client(dna)

        info = client.get("/api/get_service_info/nosuch", headers={AUTH_HEADER: key})
        stop = client.post("/api/stop_service", json={"service": "nosuch"}, headers={AUTH_HEADER: key})

        for response in (info, stop):
            assert response.status_code == 404
            assert "nosuch" in json_of(response)["error"]

    def test_unknown_path_is_404(self, dna: FakeDNA, key: str) -> None:
        """Paths outside the route table are 404."""
        client = self.client(dna)

        assert client.get("/api/nosuch", headers={AUTH_HEADER: key}).status_code == 404
        assert client.get("/logs/web/docker/extra").status_code == 404
        assert client.get("/api/get_service_info/web/extra", headers={AUTH_HEADER: key}).status_code == 404

    def test_wrong_method_is_405(self, dna: FakeDNA, key: str) -> None:
        """A known path with a method it does not accept is 405 with an ``Allow`` header."""
        client = self.client(dna)

        deploy = client.get("/api/run_deploy", headers={AUTH_HEADER: key})
        index = client.delete("/logs/")

        assert deploy.status_code == 405
        assert "POST" in deploy.headers["Allow"]
        assert index.status_code == 405
        assert "GET" in index.headers["Allow"]
        assert dna.calls == []

    # Real engine

    @pytest.mark.docker
    def test_real_engine_pages_and_api(self, engine: Any) -> None:
        """On the real engine the index, the engine log and the API respond."""
        key = KeyManager(engine.store).create("127.0.0.1").key
        client = self.client(engine)

        index = client.get("/logs/")
        propagated = client.post("/api/propagate_services", headers={AUTH_HEADER: key})
        unknown = client.get("/api/get_service_info/nosuch", headers={AUTH_HEADER: key})

        assert index.status_code == 200
        assert "No services are deployed yet." in body_of(index)
        assert client.get("/logs/dna").status_code == 200
        assert json_of(propagated) == {"success": True}
        assert unknown.status_code == 404
