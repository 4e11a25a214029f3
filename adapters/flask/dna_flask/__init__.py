"""Flask adapter: the docker-dna clients as Flask Blueprints.

Each view turns ``flask.request`` into a neutral request, calls the core
client and turns the neutral response into a Flask response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask

from dna_core import (
    ALLOW_ALL,
    ApiClient,
    Client,
    LogsClient,
    Request,
    Response,
)

__all__ = ["blueprint_for", "create_api_client", "create_logs_client"]


def _to_request(path_params: dict[str, Any]) -> Request:
    return Request.from_environ(flask.request.environ, path_params)


def _to_flask(response: Response) -> flask.Response:
    if response.is_stream:
        body: Any = flask.stream_with_context(response.iter_bytes())
    else:
        body = response.body
    return flask.Response(body, status=response.status, headers=response.headers)


def blueprint_for(client: Client, name: str) -> flask.Blueprint:
    """Return a Blueprint called ``name`` that serves every route of ``client``."""
    blueprint = flask.Blueprint(name, __name__)
    for route in client.routes:
        endpoint = route.endpoint

        def view(_endpoint: str = endpoint, **path_params: Any) -> flask.Response:
            return _to_flask(client.handle(_endpoint, _to_request(path_params)))

        view.__name__ = endpoint
        if route.guarded and client.native_precheck is not None:
            view = client.native_precheck(view)
        blueprint.add_url_rule(route.rule, endpoint, view, methods=list(route.methods))
    return blueprint


def create_logs_client(
    dna: Any,
    fallback: Callable[[str, str], Any] | None = None,
    precheck: Any = ALLOW_ALL,
    **options: Any,
) -> flask.Blueprint:
    """Return the logs pages as a Blueprint called ``dna_logs``.

    :param dna: the ``DNA`` engine.
    :param fallback: ``fallback(service_name, log)`` for unknown services
        and log types; without it they are 404.
    :param precheck: a ``dna_core.Precheck`` or a Flask view decorator such
        as ``flask_login.login_required``; default: allow everyone.
    """
    return blueprint_for(LogsClient(dna, fallback=fallback, precheck=precheck, **options), "dna_logs")


def create_api_client(dna: Any, precheck: Any = None, **options: Any) -> flask.Blueprint:
    """Return the deploy API and key pages as a Blueprint called ``dna_api``.

    :param dna: the ``DNA`` engine.
    :param precheck: guards the key pages: a ``dna_core.Precheck`` or a
        Flask view decorator; default: deny (403).
    :param options: ``key_lifetime`` and ``trusted_proxies`` of
        :class:`dna_core.ApiClient`.
    """
    return blueprint_for(ApiClient(dna, precheck=precheck, **options), "dna_api")
