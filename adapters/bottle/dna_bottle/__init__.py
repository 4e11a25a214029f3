"""Bottle adapter: the docker-dna clients as Bottle apps to mount.

Each route builds a neutral request from the WSGI environ of
``bottle.request``, calls the core client and returns the neutral response
as a ``bottle.HTTPResponse``. The environ, unlike Bottle's ``remote_addr``,
gives the connection's peer address, and its body is read only up to the
size limit::

    app = bottle.Bottle()
    app.mount("/logs/", dna_bottle.create_logs_client(dna))
    app.mount("/api/", dna_bottle.create_api_client(dna, precheck=login_required))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bottle

from dna_core import ALLOW_ALL, ApiClient, Client, LogsClient, Request, Response

__all__ = ["app_for", "create_api_client", "create_logs_client"]


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
            request = Request.from_environ(bottle.request.environ, path_params)
            return _to_bottle(client.handle(_endpoint, request))

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
