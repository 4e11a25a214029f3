"""Falcon adapter: the docker-dna clients as Falcon resources.

Each responder builds a neutral request from the Falcon request's WSGI
environ, calls the core client and copies the neutral response into the
Falcon response::

    app = falcon.App()
    dna_falcon.add_routes(app, dna_falcon.create_logs_client(dna), prefix="/logs")
    dna_falcon.add_routes(app, dna_falcon.create_api_client(dna, precheck=guard), prefix="/api")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import falcon

from dna_core import ALLOW_ALL, ApiClient, Client, LogsClient, Request, Response

__all__ = ["Resources", "add_routes", "create_api_client", "create_logs_client"]

# Falcon templates name a field {name}; werkzeug rules write <name> or <converter:name>.
_RULE_FIELD = re.compile(r"<(?:[a-z_]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def _to_falcon(response: Response, resp: falcon.Response) -> None:
    resp.status = response.status
    for name, value in response.headers:
        resp.append_header(name, value)
    if response.is_stream:
        resp.stream = response.iter_bytes()
    else:
        resp.data = response.data()


class Resources:
    """The Falcon resources of one client, keyed by URI template.

    Templates are relative to the prefix that :func:`add_routes` adds.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.templates: dict[str, object] = {}
        for route in client.routes:
            self.templates[_RULE_FIELD.sub(r"{\1}", route.rule)] = self._resource(route.endpoint)

    def _resource(self, endpoint: str) -> object:
        client = self.client
        route = client.route(endpoint)

        def respond(resource: object, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
            # Falcon runs the responder after a before hook even when the hook
            # marked the response complete, as a hook may do to deny a request.
            if resp.complete:
                return
            _to_falcon(client.handle(endpoint, Request.from_environ(req.env, params)), resp)

        # Falcon, unlike werkzeug and Bottle, serves HEAD only where a responder exists.
        methods = route.methods + ("HEAD",) if "GET" in route.methods else route.methods
        responders = {f"on_{method.lower()}": respond for method in methods}
        resource_class = type(f"{endpoint}_resource", (), responders)
        if route.guarded and client.native_precheck is not None:
            resource_class = falcon.before(client.native_precheck)(resource_class)
        return resource_class()


class _AddSlash:
    """Redirect the bare prefix to the index, whose relative links need the slash."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = f"?{req.query_string}" if req.query_string else ""
        raise falcon.HTTPPermanentRedirect(f"{req.root_path}{req.path}/{query}")


def add_routes(app: falcon.App[Any, Any], resources: Resources, prefix: str = "") -> None:
    """Add every resource of ``resources`` to ``app`` under ``prefix``, such as ``/logs``."""
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError(f"prefix must start with '/' and not end with one, such as '/logs', not {prefix!r}")
    for template, resource in resources.templates.items():
        app.add_route(prefix + template, resource)
    if prefix:
        app.add_route(prefix, _AddSlash())


def create_logs_client(
    dna: Any,
    fallback: Callable[[str, str], Any] | None = None,
    precheck: Any = ALLOW_ALL,
    **options: Any,
) -> Resources:
    """Return the logs pages as Falcon resources for :func:`add_routes`.

    :param dna: the ``DNA`` engine.
    :param fallback: ``fallback(service_name, log)`` for unknown services
        and log types; without it they are 404.
    :param precheck: a ``dna_core.Precheck`` or a Falcon ``before`` hook
        ``hook(req, resp, resource, params)``; default: allow everyone.
    """
    return Resources(LogsClient(dna, fallback=fallback, precheck=precheck, **options))


def create_api_client(dna: Any, precheck: Any = None, **options: Any) -> Resources:
    """Return the deploy API and key pages as Falcon resources for :func:`add_routes`.

    :param dna: the ``DNA`` engine.
    :param precheck: guards the key pages: a ``dna_core.Precheck`` or a
        Falcon ``before`` hook; default: deny (403).
    :param options: ``key_lifetime`` and ``trusted_proxies`` of
        :class:`dna_core.ApiClient`.
    """
    return Resources(ApiClient(dna, precheck=precheck, **options))
