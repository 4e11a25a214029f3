"""The two clients and their route table, shared by every adapter.

An adapter registers each :class:`Route` of a client under its framework,
builds a :class:`~dna_core.http.Request` for every call and passes it to
:meth:`Client.handle` with the route's endpoint name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs

from .errors import EngineError
from .handlers import api, keys, logs
from .http import HTTPError, PrecheckDenied, Request, Response, html_response
from .keys import AUTH_HEADER, KeyManager, client_address
from .openapi import openapi_document
from .precheck import ALLOW_ALL, DENY_ALL, split_precheck

__all__ = ["ApiClient", "Client", "LogsClient", "Route"]

logger = logging.getLogger(__name__)

Handler = Callable[[Any, Request], Response]


@attrs.frozen
class Route:
    """One endpoint of a client.

    :param endpoint: unique name within the client.
    :param rule: path in werkzeug rule syntax, such as ``/<service>/<log>``.
    :param methods: HTTP methods the endpoint accepts.
    :param guarded: whether the client's precheck applies.
    :param authenticated: whether an API key is required.
    :param streams: whether the response body may be streamed (log
        follows and downloads are; check :attr:`Response.is_stream`).
    """

    endpoint: str
    rule: str
    methods: tuple[str, ...]
    handler: Handler
    guarded: bool = False
    authenticated: bool = False
    streams: bool = False

    @property
    def path_params(self) -> tuple[str, ...]:
        """Names of the ``<...>`` parts of the rule, in order."""
        return tuple(part[1:-1].split(":")[-1] for part in self.rule.split("/") if part.startswith("<"))


class Client:
    """Routes requests to handlers, runs the precheck and renders errors."""

    routes: tuple[Route, ...] = ()

    def __init__(self, dna: Any, precheck: Any, default_precheck: Any) -> None:
        if dna is None or not hasattr(dna, "services"):
            raise TypeError(f"dna must be a DNA engine, not {dna!r}")
        self.dna = dna
        self.precheck, self.native_precheck = split_precheck(precheck, default_precheck)
        self._routes = {route.endpoint: route for route in self.routes}

    def route(self, endpoint: str) -> Route:
        """Return the route called ``endpoint``."""
        return self._routes[endpoint]

    def handle(self, endpoint: str, request: Request) -> Response:
        """Run the precheck, the authentication and the handler of ``endpoint``.

        Errors become responses here, so every adapter sends the same ones.
        """
        route = self._routes[endpoint]
        try:
            if route.guarded:
                self.precheck.check(request)
            if route.authenticated:
                self.authenticate(request)
            return route.handler(self, request)
        except PrecheckDenied as denial:
            return denial.to_response()
        except HTTPError as error:
            return self._render(error, route)
        except EngineError as error:
            logger.warning("%s failed: %s", endpoint, error)
            return self._render(HTTPError(error.status, str(error)), route)
        except Exception:
            # A safety net: every known failure maps to a 4xx or 503 above,
            # so reaching this is a bug, logged with its traceback.
            logger.exception("%s failed unexpectedly", endpoint)
            return self._render(HTTPError(500, "Internal error: see the server log."), route)

    def authenticate(self, request: Request) -> None:
        """Check the request's credentials; the base class requires none."""

    @staticmethod
    def _render(error: HTTPError, route: Route) -> Response:
        # Engine endpoints return JSON errors; pages return HTML.
        return error.to_json_response() if route.authenticated else error.to_html_response()


class LogsClient(Client):
    """The read-only log pages.

    :param dna: the engine.
    :param fallback: ``fallback(service_name, log)`` called for an unknown
        service or log type; it returns HTML text or a :class:`Response`.
        Without it such pages are 404.
    :param precheck: guards every page; default :data:`ALLOW_ALL`.
    :param max_lines: largest ``?lines=`` value a page accepts.
    :param follow_timeout: seconds after which a ``?follow=1`` response ends.
    :param follow_keepalive: seconds without a new line after which a
        followed page sends a keepalive, which reveals a client that left.
    :param search_max_bytes: bytes of a log that one ``?q=`` search scans
        at most, from the end of the log.
    :param search_timeout: seconds one ``?q=`` search runs at most.
    :param max_follows: ``?follow=1`` responses open at once; more get 503,
        because each one occupies a server thread until it ends.
    """

    routes = (
        Route("index", "/", ("GET",), logs.index, guarded=True),
        Route("dna", "/dna", ("GET",), logs.engine_log, guarded=True, streams=True),
        Route("service_log", "/<service>/<log>", ("GET",), logs.service_log, guarded=True, streams=True),
    )

    def __init__(
        self,
        dna: Any,
        fallback: Callable[[str, str], Any] | None = None,
        precheck: Any = ALLOW_ALL,
        max_lines: int = 5000,
        follow_timeout: float = 3600.0,
        follow_keepalive: float = 15.0,
        search_max_bytes: int = 64 * 1024 * 1024,
        search_timeout: float = 5.0,
        max_follows: int = 32,
    ) -> None:
        super().__init__(dna, precheck, ALLOW_ALL)
        if fallback is not None and not callable(fallback):
            raise TypeError(f"fallback must be a callable fallback(service_name, log), not {fallback!r}")
        if max_lines < 1:
            raise ValueError(f"max_lines must be at least 1, not {max_lines!r}")
        if not isinstance(max_follows, int) or max_follows < 1:
            raise ValueError(f"max_follows must be an int of at least 1, not {max_follows!r}")
        for option, value in (
            ("follow_timeout", follow_timeout),
            ("follow_keepalive", follow_keepalive),
            ("search_max_bytes", search_max_bytes),
            ("search_timeout", search_timeout),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{option} must be a positive number, not {value!r}")
        self.fallback = fallback
        self.max_lines = max_lines
        self.follow_timeout = float(follow_timeout)
        self.follow_keepalive = float(follow_keepalive)
        self.search_max_bytes = int(search_max_bytes)
        self.search_timeout = float(search_timeout)
        self.max_follows = max_follows
        self._follows = 0
        self._follows_lock = threading.Lock()

    def acquire_follow(self) -> Callable[[], None]:
        """Reserve one of the ``max_follows`` follow slots; return the function that frees it.

        Calling the returned function more than once frees the slot once.

        :raises HTTPError: 503 when every slot is taken.
        """
        with self._follows_lock:
            if self._follows >= self.max_follows:
                raise HTTPError(
                    503,
                    f"Too many followed logs: {self.max_follows} are open, the maximum. Try again"
                    " later, or read the log without follow=1.",
                    headers=[("Retry-After", "30")],
                )
            self._follows += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._follows_lock:
                if not released:
                    released = True
                    self._follows -= 1

        return release

    def fall_back(self, service: str, log: str) -> Response:
        """Return the fallback's page for a page the client does not serve, or raise 404."""
        if self.fallback is None:
            if log in logs.LOG_TYPES:
                raise HTTPError(404, f"Service {service!r} not found: the index lists the deployed services.")
            kinds = ", ".join(logs.LOG_TYPES)
            raise HTTPError(404, f"Unknown log {log!r} of service {service!r}: use one of {kinds}.")
        result = self.fallback(service, log)
        if isinstance(result, Response):
            return result
        if result is None:
            raise HTTPError(404, f"No log {log!r} of a service {service!r}.")
        return html_response(str(result))


class ApiClient(Client):
    """The JSON deploy API and the key management pages.

    :param dna: the engine.
    :param precheck: guards the key pages; default :data:`DENY_ALL` (403).
    :param key_lifetime: seconds a new API key stays valid.
    :param trusted_proxies: how many proxies in front of the app append to
        ``X-Forwarded-For``; 0 uses the connection's peer address.
    """

    routes = (
        Route("keys", "/", ("GET",), keys.keys_index, guarded=True),
        Route("new_key", "/new_key", ("GET", "POST"), keys.new_key, guarded=True),
        Route("manage_key", "/manage_key", ("GET",), keys.manage_key, guarded=True),
        Route("revoke_key", "/revoke_key/<key>", ("GET", "POST"), keys.revoke_key, guarded=True),
        Route("pull_image", "/pull_image", ("POST",), api.pull_image, authenticated=True, streams=True),
        Route("build_image", "/build_image", ("POST",), api.build_image, authenticated=True, streams=True),
        Route("run_deploy", "/run_deploy", ("POST",), api.run_deploy, authenticated=True),
        Route("propagate_services", "/propagate_services", ("POST",), api.propagate_services, authenticated=True),
        Route("get_service_info", "/get_service_info/<name>", ("GET",), api.get_service_info, authenticated=True),
        Route("start_service", "/start_service", ("POST",), api.start_service, authenticated=True),
        Route("stop_service", "/stop_service", ("POST",), api.stop_service, authenticated=True),
        Route("add_domain", "/add_domain", ("POST",), api.add_domain, authenticated=True),
        Route("remove_domain", "/remove_domain", ("POST",), api.remove_domain, authenticated=True),
        Route("delete_service", "/delete_service", ("POST",), api.delete_service, authenticated=True),
        Route("openapi", "/openapi.json", ("GET",), openapi_document),
    )

    def __init__(
        self,
        dna: Any,
        precheck: Any = None,
        key_lifetime: float = 3600.0,
        trusted_proxies: int = 0,
        keys: KeyManager | None = None,
    ) -> None:
        super().__init__(dna, precheck, DENY_ALL)
        if not isinstance(trusted_proxies, int) or trusted_proxies < 0:
            raise ValueError(f"trusted_proxies must be a non-negative int, not {trusted_proxies!r}")
        self.trusted_proxies = trusted_proxies
        self.keys = keys or KeyManager(dna.store, lifetime=key_lifetime)

    def client_ip(self, request: Request) -> str:
        """Return the client's address as configured by ``trusted_proxies``."""
        return client_address(request, self.trusted_proxies)

    def authenticate(self, request: Request) -> None:
        """Require an active API key bound to the client's address."""
        self.keys.verify(request.header(AUTH_HEADER), self.client_ip(request))
