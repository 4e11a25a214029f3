"""Compare each adapter's throughput with a hand-written route in the same framework.

For every framework (and the plain WSGI app) this builds two apps on one
stand-in engine: one through the docker-dna adapter, one with native routes
written by hand that make the same engine call and the same API key check.
Requests are direct WSGI calls in this process, so there is no network
noise, and both sides of a ratio pay the same engine cost. Rounds alternate
adapter and native, and the best round of each counts.

Run: ``python bench/adapters.py [--requests N] [--rounds R]``. It needs
Flask, Falcon and Bottle installed (``pip install -e '.[flask,falcon,bottle]'``).
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import io
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bottle
import falcon
import flask
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.routing import Map, Rule
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response as WerkzeugResponse

import dna_bottle
import dna_falcon
import dna_flask
from dna_core import ALLOW_ALL, AUTH_HEADER, ApiClient, HTTPError, KeyManager, LogsClient, ServiceInfo, WSGIApp
from dna_core.pages import log_page
from dna_core.store import Store

SERVICE = "web"
LOG_LINES = 200
TARGET = 0.80


class BenchEngine:
    """The engine methods that the two benchmarked routes call, returning fixed values."""

    def __init__(self, state_dir: Path) -> None:
        self.name = "bench"
        self.store = Store(state_dir / "bench.sqlite3")
        self.info = ServiceInfo(name=SERVICE, image="web:v1", port=80, domains=["app.example.test"], state="running")
        self.lines = [f'127.0.0.1 - - "GET /page/{number} HTTP/1.1" 200 612 "-" "<agent>"' for number in range(LOG_LINES)]

    @property
    def services(self) -> list[ServiceInfo]:
        return [self.info]

    def has_service(self, name: str) -> bool:
        return name == SERVICE

    def get_service_info(self, name: str) -> ServiceInfo:
        return self.info

    def docker_logs(self, service: str, lines: int = 200) -> list[str]:
        return self.lines[-lines:]


# Native routes: the same key check, engine call and page as the handlers.


def native_info(dna: BenchEngine, keys: KeyManager, key: str | None, remote_addr: str, name: str) -> tuple[int, str]:
    try:
        keys.verify(key, remote_addr)
    except HTTPError as error:
        return error.status, json.dumps({"error": error.description})
    return 200, json.dumps(dna.get_service_info(name).to_json(), sort_keys=True)


def native_log(dna: BenchEngine, service: str) -> str:
    if not dna.has_service(service):
        return f"<p>No service {html.escape(service)}</p>"
    return log_page(f"{service}: container log", dna.docker_logs(service, LOG_LINES), "../")


def flask_apps(dna: BenchEngine, keys: KeyManager) -> tuple[Any, Any]:
    adapted = flask.Flask("adapted")
    adapted.register_blueprint(dna_flask.create_logs_client(dna), url_prefix="/logs")
    adapted.register_blueprint(dna_flask.create_api_client(dna, precheck=ALLOW_ALL), url_prefix="/api")

    native = flask.Flask("native")

    @native.get("/api/get_service_info/<name>")
    def info(name: str) -> flask.Response:
        status, body = native_info(dna, keys, flask.request.headers.get(AUTH_HEADER), flask.request.remote_addr or "", name)
        return flask.Response(body, status=status, mimetype="application/json")

    @native.get("/logs/<service>/docker")
    def docker_log(service: str) -> flask.Response:
        return flask.Response(native_log(dna, service), mimetype="text/html")

    return adapted, native


def falcon_apps(dna: BenchEngine, keys: KeyManager) -> tuple[Any, Any]:
    adapted = falcon.App()
    dna_falcon.add_routes(adapted, dna_falcon.create_logs_client(dna), prefix="/logs")
    dna_falcon.add_routes(adapted, dna_falcon.create_api_client(dna, precheck=ALLOW_ALL), prefix="/api")

    class Info:
        def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
            resp.status, resp.text = native_info(dna, keys, req.get_header(AUTH_HEADER), req.remote_addr, name)

    class DockerLog:
        def on_get(self, req: falcon.Request, resp: falcon.Response, service: str) -> None:
            resp.content_type = falcon.MEDIA_HTML
            resp.text = native_log(dna, service)

    native = falcon.App()
    native.add_route("/api/get_service_info/{name}", Info())
    native.add_route("/logs/{service}/docker", DockerLog())
    return adapted, native


def bottle_apps(dna: BenchEngine, keys: KeyManager) -> tuple[Any, Any]:
    adapted = bottle.Bottle()
    adapted.mount("/logs/", dna_bottle.create_logs_client(dna))
    adapted.mount("/api/", dna_bottle.create_api_client(dna, precheck=ALLOW_ALL))

    native = bottle.Bottle()

    @native.get("/api/get_service_info/<name>")
    def info(name: str) -> Any:
        remote_addr = bottle.request.environ.get("REMOTE_ADDR", "")
        status, body = native_info(dna, keys, bottle.request.get_header(AUTH_HEADER), remote_addr, name)
        return bottle.HTTPResponse(body, status=status, headers={"Content-Type": "application/json"})

    @native.get("/logs/<service>/docker")
    def docker_log(service: str) -> str:
        return native_log(dna, service)

    return adapted, native


def wsgi_apps(dna: BenchEngine, keys: KeyManager) -> tuple[Any, Any]:
    adapted = DispatcherMiddleware(
        NotFound(),
        {"/logs": WSGIApp(LogsClient(dna)), "/api": WSGIApp(ApiClient(dna, precheck=ALLOW_ALL))},
    )
    url_map = Map([Rule("/api/get_service_info/<name>", endpoint="info"), Rule("/logs/<service>/docker", endpoint="log")])

    def native(environ: dict[str, Any], start_response: Any) -> Any:
        request = WerkzeugRequest(environ)
        try:
            endpoint, params = url_map.bind_to_environ(environ).match()
        except HTTPException as error:
            return error(environ, start_response)
        if endpoint == "info":
            status, body = native_info(dna, keys, request.headers.get(AUTH_HEADER), request.remote_addr or "", params["name"])
            response = WerkzeugResponse(body, status=status, mimetype="application/json")
        else:
            response = WerkzeugResponse(native_log(dna, params["service"]), mimetype="text/html")
        return response(environ, start_response)

    return adapted, native


FRAMEWORKS: dict[str, Callable[[BenchEngine, KeyManager], tuple[Any, Any]]] = {
    "flask": flask_apps,
    "falcon": falcon_apps,
    "bottle": bottle_apps,
    "wsgi": wsgi_apps,
}


def make_environ(path: str, headers: dict[str, str]) -> dict[str, Any]:
    environ: dict[str, Any] = EnvironBuilder(path=path, headers=headers).get_environ()
    environ["REMOTE_ADDR"] = "127.0.0.1"
    return environ


def call(app: Any, template: dict[str, Any]) -> tuple[str, bytes]:
    """Send one request to ``app`` and return its status line and body."""
    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO()
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(line)
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return status[0], body


def requests_per_second(app: Any, template: dict[str, Any], count: int) -> float:
    # CPU time of this process, so that other processes on the machine do not skew the ratio.
    start = time.process_time()
    for _ in range(count):
        call(app, template)
    return count / (time.process_time() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per app; the best counts (default 7)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as state_dir:
        dna = BenchEngine(Path(state_dir))
        keys = KeyManager(dna.store)
        key = keys.create("127.0.0.1").key
        requests = {
            "GET /get_service_info/<name>": make_environ(f"/api/get_service_info/{SERVICE}", {AUTH_HEADER: key}),
            f"GET /<service>/docker ({LOG_LINES} lines)": make_environ(f"/logs/{SERVICE}/docker", {}),
        }

        versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("flask", "falcon", "bottle", "werkzeug"))
        print(f"Python {platform.python_version()} on {platform.machine()}; {versions}")
        print(f"{options.requests} requests x best of {options.rounds} rounds, CPU time of this process")
        print(f"{'framework':<8} {'request':<34} {'native req/s':>12} {'adapter req/s':>13} {'ratio':>6}")
        below_target = []
        for framework, build in FRAMEWORKS.items():
            adapted, native = build(dna, keys)
            for label, template in requests.items():
                # Both apps must return 200, or the comparison means nothing.
                adapted_status, _ = call(adapted, template)
                native_status, _ = call(native, template)
                if not adapted_status.startswith("200") or not native_status.startswith("200"):
                    raise SystemExit(f"{framework} {label}: adapter sent {adapted_status!r}, native {native_status!r}")

                adapter_best = native_best = 0.0
                for _ in range(options.rounds):
                    adapter_best = max(adapter_best, requests_per_second(adapted, template, options.requests))
                    native_best = max(native_best, requests_per_second(native, template, options.requests))
                ratio = adapter_best / native_best
                if ratio < TARGET:
                    below_target.append(f"{framework} {label}")
                print(f"{framework:<8} {label:<34} {native_best:>12.0f} {adapter_best:>13.0f} {ratio:>6.0%}")

    if below_target:
        print(f"below the {TARGET:.0%} target: {', '.join(below_target)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
