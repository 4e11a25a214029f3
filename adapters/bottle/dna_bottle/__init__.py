"""Bottle adapter: the docker-dna clients as Bottle apps to mount.

Each route turns ``bottle.request`` into a neutral request, calls the core
client and returns the neutral response as a ``bottle.HTTPResponse``::

    app = bottle.Bottle()
    app.mount("/logs/", dna_bottle.create_logs_client(dna))
    app.mount("/api/", dna_bottle.create_api_client(dna, precheck=login_required))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bottle

from dna_core import ALLOW_ALL, ApiClient, Client, LogsClient, Request, Response, read_body

__all__ = ["app_for", "create_api_client", "create_logs_client"]


def _to_request(path_params: dict[str, Any]) -> Request:
    incoming = bottle.request
    environ = incoming.environ
    # Bottle's content_length is -1 without a Content-Length header.
    length = incoming.content_length
    return Request(
        method=incoming.method,
        path=incoming.fullpath,
        path_params={name: str(value) for name, value in path_params.items()},
        query={name: incoming.query.getunicode(name, default="") for name in incoming.query},
        headers=list(incoming.headers.items()),
        # Bottle's request.body buffers the whole upload; read_body stops
        # one byte past the limit instead.
        body=read_body(environ["wsgi.input"], length if length >= 0 else 0),
        # Bottle's remote_addr trusts X-Forwarded-For, which any client can
        # set, so take the peer address of the connection.
        remote_addr=environ.get("REMOTE_ADDR") or "",
    )


def _to_bottle(response: Response) -> bottle.HTTPResponse:
    body: Any = response.iter_bytes() if response.is_stream else response.data()
    result = bottle.HTTPResponse(body, status=response.status)
    for name, value in response.headers:
        result.add_header(name, value)
    return result


def app_for(client: Client) -> bottle.Bottle:
    """Return a Bottle app that serves every route of ``client``."""
    app = bottle.Bottle()
    for route in client.routes:
        endpoint = route.endpoint

        def callback(_endpoint: str = endpoint, **path_params: Any) -> bottle.HTTPResponse:
            return _to_bottle(client.handle(_endpoint, _to_request(path_params)))

        if route.guarded and client.native_precheck is not None:
            callback = client.native_precheck(callback)
        app.route(route.rule, list(route.methods), callback, name=endpoint)
    return app


def create_logs_client(
    dna: Any,
    fallback: Callable[[str, str], Any] | None = None,
    precheck: Any = ALLOW_ALL,
    **options: Any,
) -> bottle.Bottle:
    """Return the logs pages as a Bottle app to mount under a prefix ending in ``/``.

    :param dna: the ``DNA`` engine.
    :param fallback: ``fallback(service_name, log)`` for unknown services
        and log types; without it they are 404.
    :param precheck: a ``dna_core.Precheck`` or a Bottle route decorator;
        default: allow everyone.
    """
    return app_for(LogsClient(dna, fallback=fallback, precheck=precheck, **options))


def create_api_client(dna: Any, precheck: Any = None, **options: Any) -> bottle.Bottle:
    """Return the deploy API and key pages as a Bottle app to mount under a prefix.

    :param dna: the ``DNA`` engine.
    :param precheck: guards the key pages: a ``dna_core.Precheck`` or a
        Bottle route decorator; default: deny (403).
    :param options: ``key_lifetime`` and ``trusted_proxies`` of
        :class:`dna_core.ApiClient`.
    """
    return app_for(ApiClient(dna, precheck=precheck, **options))
