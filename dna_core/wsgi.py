"""A plain WSGI app for any WSGI host, built on werkzeug's routing.

:class:`WSGIApp` serves every route of one client from the path it is
mounted at, for example with werkzeug's ``DispatcherMiddleware``::

    app = DispatcherMiddleware(host_app, {
        "/logs": WSGIApp(LogsClient(dna)),
        "/api": WSGIApp(ApiClient(dna, precheck=allow_from("10.0.0.0/8"))),
    })
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Response as WerkzeugResponse

from .clients import Client
from .http import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["WSGIApp"]

#: The environ key, from the wsgiorg routing_args convention, that carries
#: the matched path parameters to the endpoint app and any native precheck.
ROUTING_ARGS = "wsgiorg.routing_args"


class WSGIApp:
    """Serve the routes of ``client`` as a WSGI application.

    :param client: a :class:`~dna_core.LogsClient` or :class:`~dna_core.ApiClient`.
        A native precheck given to the client is a WSGI middleware: a
        callable that takes a WSGI app and returns one, applied to every
        guarded route. The matched path parameters are in
        ``environ["wsgiorg.routing_args"][1]``.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.url_map = Map(
            [Rule(route.rule, endpoint=route.endpoint, methods=list(route.methods)) for route in client.routes]
        )
        self.endpoints: dict[str, WSGIApplication] = {}
        for route in client.routes:
            endpoint_app: WSGIApplication = self._endpoint_app(route.endpoint)
            if route.guarded and client.native_precheck is not None:
                endpoint_app = client.native_precheck(endpoint_app)
            self.endpoints[route.endpoint] = endpoint_app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Match the path and run the endpoint's app.

        werkzeug sends the 404, the 405 and the 308 redirect that adds a
        missing trailing slash.
        """
        try:
            endpoint, params = self.url_map.bind_to_environ(environ).match()
        except HTTPException as error:
            return error(environ, start_response)

        environ[ROUTING_ARGS] = ((), params)
        return self.endpoints[endpoint](environ, start_response)

    def _endpoint_app(self, endpoint: str) -> WSGIApplication:
        def endpoint_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            request = Request.from_environ(environ, environ[ROUTING_ARGS][1])
            return _to_werkzeug(self.client.handle(endpoint, request))(environ, start_response)

        return endpoint_app


def _to_werkzeug(response: Response) -> WerkzeugResponse:
    """Turn a neutral response into a werkzeug response; a stream stays a stream."""
    body: Any = response.iter_bytes() if response.is_stream else response.body
    return WerkzeugResponse(body, status=response.status, headers=response.headers)

