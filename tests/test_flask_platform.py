"""End to end through Flask: real Docker daemon, real private nginx."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerThread, nginx_get, wait_for, write_context

flask = pytest.importorskip("flask", reason="the Flask end-to-end tests need Flask installed")

import dna_flask  # noqa: E402
from dna_core import ALLOW_ALL, LABEL_INSTANCE, KeyManager  # noqa: E402

pytestmark = pytest.mark.docker


def make_app(engine: Any, fallback: Any = None) -> Any:
    app = flask.Flask(__name__)
    app.register_blueprint(dna_flask.create_logs_client(engine, fallback=fallback), url_prefix="/logs")
    app.register_blueprint(dna_flask.create_api_client(engine, precheck=ALLOW_ALL), url_prefix="/api")
    return app


def api_key(engine: Any, ip: str = "127.0.0.1") -> str:
    return KeyManager(engine.store).create(ip).key


def post(client: Any, path: str, key: str, body: Any) -> Any:
    return client.post(f"/api/{path}", json=body, headers={"App-Key-DNA": key})


def nginx_file(engine: Any, service: str) -> Path:
    return engine.nginx.path_for(engine.name, service)


def test_build_streams_progress_while_building(engine: Any, docker_client: Any) -> None:
    """The first build line reaches the client before the image exists."""
    write_context(engine.build_root / "slow", "slow", extra='RUN ["/bin/busybox", "sleep", "3"]')
    tag = f"{engine.name}/slow:v1"
    key = api_key(engine)
    import docker.errors
    import requests

    with ServerThread(make_app(engine)) as server:
        response = requests.post(
            f"{server.url}/api/build_image",
            json={"options": {"path": "slow", "tag": tag}},
            headers={"App-Key-DNA": key},
            stream=True,
            timeout=60,
        )
        lines = response.iter_lines(decode_unicode=True)
        first = next(lines)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(tag)
        rest = list(lines)

    try:
        assert response.status_code == 200
        assert first.startswith("Step 1/")
        assert any(line.startswith("Successfully tagged") for line in rest)
        assert docker_client.images.get(tag)
    finally:
        docker_client.images.remove(tag, force=True)


def test_platform_end_to_end(engine: Any, docker_client: Any, private_nginx: Any) -> None:
    """Build, deploy, route, inspect, redeploy, stop, start, unroute and delete."""
    client = make_app(engine).test_client()
    key = api_key(engine)
    tags = [f"{engine.name}/web:v1", f"{engine.name}/web:v2"]
    write_context(engine.build_root / "v1", "hello from v1")
    write_context(engine.build_root / "v2", "hello from v2")

    try:
        for version, tag in zip(("v1", "v2"), tags):
            built = post(client, "build_image", key, {"options": {"path": version, "tag": tag}})
            assert built.status_code == 200
            assert "Successfully tagged" in built.get_data(as_text=True)

        deployed = post(client, "run_deploy", key, {"service": "web", "image": tags[0], "port": 80, "options": {"init": True}})
        assert deployed.status_code == 200
        assert deployed.get_json() == {"success": True}

        routed = post(client, "add_domain", key, {"service": "web", "domain": "app.example.test"})
        assert routed.get_json() == {"success": True}
        engine.nginx.test()
        wait_for(lambda: nginx_get(private_nginx, "app.example.test").text == "hello from v1")

        index = client.get("/logs/").get_data(as_text=True)
        for kind in ("nginx", "error", "docker"):
            assert f'href="web/{kind}"' in index
        assert 'href="dna"' in index
        # A hostile user agent lands in the access log; the page must escape it.
        # The request repeats until it succeeds, because a worker of the
        # configuration before add_domain may still accept it and respond 404.
        access = wait_for(
            lambda: nginx_get_with_agent(private_nginx, "app.example.test", "<script>alert(1)</script>").ok
            and _page_with(client, "/logs/web/nginx", "alert(1)")
        )
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in access
        assert "<script>alert" not in access
        container_log = wait_for(lambda: _page_with(client, "/logs/web/docker", "response:200"))
        assert "response:200" in container_log
        assert client.get("/logs/web/error").status_code == 200
        assert "deployed web" in client.get("/logs/dna").get_data(as_text=True)

        info = client.get("/api/get_service_info/web", headers={"App-Key-DNA": key}).get_json()
        assert info["image"] == tags[0]
        assert info["domains"] == ["app.example.test"]
        first_container = info["container_id"]

        redeployed = post(client, "run_deploy", key, {"service": "web", "image": tags[1], "port": 80, "options": {"init": True}})
        assert redeployed.get_json() == {"success": True}
        wait_for(lambda: nginx_get(private_nginx, "app.example.test").text == "hello from v2")
        engine.nginx.test()
        remaining = docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={engine.name}"})
        assert [container.id for container in remaining] != [first_container]
        assert len(remaining) == 1

        assert post(client, "stop_service", key, {"service": "web"}).get_json() == {"success": True}
        wait_for(lambda: nginx_get(private_nginx, "app.example.test").status_code == 502)
        assert post(client, "start_service", key, {"service": "web"}).get_json() == {"success": True}
        wait_for(lambda: nginx_get(private_nginx, "app.example.test").text == "hello from v2")
        engine.nginx.test()

        removed = post(client, "remove_domain", key, {"service": "web", "domain": "app.example.test"})
        assert removed.get_json() == {"success": True}
        wait_for(lambda: nginx_get(private_nginx, "app.example.test").status_code == 404)
        assert "app.example.test" not in nginx_file(engine, "web").read_text()
        engine.nginx.test()

        deleted = post(client, "delete_service", key, {"service": "web"})
        assert deleted.get_json() == {"success": True}
        engine.nginx.test()
        assert docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={engine.name}"}) == []
        assert not nginx_file(engine, "web").exists()
        assert engine.store.get_service("web") is None
        assert client.get("/api/get_service_info/web", headers={"App-Key-DNA": key}).status_code == 404
    finally:
        for tag in tags:
            try:
                docker_client.images.remove(tag, force=True)
            except Exception:
                pass


def nginx_get_with_agent(nginx: Any, host: str, agent: str) -> Any:
    import requests

    return requests.get(f"http://{nginx.listen}/", headers={"Host": host, "User-Agent": agent}, timeout=5)


def _page_with(client: Any, path: str, text: str) -> str | None:
    page = client.get(path).get_data(as_text=True)
    return page if text in page else None


@pytest.fixture
def deployed(engine: Any, image_factory: Any) -> Any:
    """An engine with service ``web`` running the first test image."""
    engine.run_deploy("web", image_factory("deployed page"), 80, init=True)
    return engine


def test_log_fallback_and_404(deployed: Any) -> None:
    """Unknown log types and services go to the fallback, else 404."""
    calls = []

    def fallback(service: str, log: str) -> str:
        calls.append((service, log))
        return f"fallback for {service}/{log}"

    with_fallback = make_app(deployed, fallback=fallback).test_client()
    without = make_app(deployed).test_client()

    assert with_fallback.get("/logs/web/metrics").get_data(as_text=True) == "fallback for web/metrics"
    assert with_fallback.get("/logs/nosuch/docker").get_data(as_text=True) == "fallback for nosuch/docker"
    assert calls == [("web", "metrics"), ("nosuch", "docker")]
    assert without.get("/logs/web/metrics").status_code == 404
    assert without.get("/logs/nosuch/docker").status_code == 404
    assert without.get("/logs/web/docker").status_code == 200


BAD_KEYS = ["missing", "wrong", "other_ip", "expired", "revoked"]


@pytest.mark.parametrize("case", BAD_KEYS)
def test_bad_key_is_403_and_changes_nothing(case: str, deployed: Any, docker_client: Any) -> None:
    """Every kind of bad key gets 403 and leaves services and containers as they were."""
    manager = KeyManager(deployed.store)
    headers: dict[str, str] = {}
    if case == "wrong":
        headers["App-Key-DNA"] = "dna_000000000000_notakey"
    elif case == "other_ip":
        headers["App-Key-DNA"] = manager.create("127.0.0.2").key
    elif case == "expired":
        created = manager.create("127.0.0.1")
        with deployed.store.transaction() as db:
            db.execute("UPDATE api_keys SET expires_at = 0 WHERE key_id = ?", (created.record.key_id,))
        headers["App-Key-DNA"] = created.key
    elif case == "revoked":
        created = manager.create("127.0.0.1")
        deployed.store.revoke_key(created.record.key_id)
        headers["App-Key-DNA"] = created.key
    client = make_app(deployed).test_client()
    containers_before = _container_ids(docker_client, deployed.name)

    responses = [
        client.post("/api/delete_service", json={"service": "web"}, headers=headers),
        client.post("/api/stop_service", json={"service": "web"}, headers=headers),
        client.post("/api/run_deploy", json={"service": "other", "image": "x", "port": 80}, headers=headers),
        client.get("/api/get_service_info/web", headers=headers),
    ]

    assert [response.status_code for response in responses] == [403] * 4
    assert all("error" in response.get_json() for response in responses)
    assert "dna_" not in responses[0].get_data(as_text=True).replace("App-Key-DNA", "")
    assert [service.name for service in deployed.store.list_services()] == ["web"]
    assert _container_ids(docker_client, deployed.name) == containers_before
    running = docker_client.containers.get(containers_before[0])
    assert running.status == "running"


def _container_ids(docker_client: Any, instance: str) -> list[str]:
    found = docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"})
    return sorted(container.id for container in found)


def test_key_pages_create_and_revoke(engine: Any) -> None:
    """A key made through the pages works once shown, and stops working once revoked."""
    client = make_app(engine).test_client()

    form = client.get("/api/new_key").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form).group(1)
    assert client.post("/api/new_key", data={}).status_code == 403
    created = client.post("/api/new_key", data={"csrf_token": token})
    key = re.search(r'class="key">([^<]+)<', created.get_data(as_text=True)).group(1)
    key_id = key.split("_")[1]

    assert created.status_code == 201
    assert client.post("/api/propagate_services", headers={"App-Key-DNA": key}).status_code == 200
    assert key not in client.get("/api/").get_data(as_text=True)
    assert key_id in client.get("/api/").get_data(as_text=True)
    assert key not in client.get(f"/api/manage_key?key={key_id}").get_data(as_text=True)
    assert client.get(f"/api/revoke_key/{key_id}").status_code == 200
    assert client.post(f"/api/revoke_key/{key_id}", data={"csrf_token": token}).status_code == 200
    assert client.post("/api/propagate_services", headers={"App-Key-DNA": key}).status_code == 403


def test_key_pages_deny_by_default(engine: Any) -> None:
    """Without a precheck the key pages are 403; a Flask decorator can guard them too."""
    import functools

    app = flask.Flask(__name__)
    app.register_blueprint(dna_flask.create_api_client(engine), url_prefix="/default")

    def login_required(view: Any) -> Any:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if flask.request.headers.get("X-User") != "admin":
                return flask.redirect("/login")
            return view(*args, **kwargs)

        return wrapper

    app.register_blueprint(dna_flask.create_api_client(engine, precheck=login_required), url_prefix="/guarded", name="guarded")
    client = app.test_client()

    assert client.get("/default/").status_code == 403
    assert client.get("/default/new_key").status_code == 403
    assert client.get("/guarded/").status_code == 302
    assert client.get("/guarded/", headers={"X-User": "admin"}).status_code == 200
