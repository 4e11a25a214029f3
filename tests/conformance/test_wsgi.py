"""Run the conformance cases against the plain WSGI app of dna_core."""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from conformance.cases import NATIVE_DENIED, Adapter, ConformanceCases
from dna_core import ApiClient, LogsClient, WSGIApp


class WSGIAdapter(Adapter):
    def make_app(self, logs: dict[str, Any], api: dict[str, Any]) -> Any:
        mounts = {"/logs": WSGIApp(LogsClient(**logs)), "/api": WSGIApp(ApiClient(**api))}
        return DispatcherMiddleware(NotFound(), mounts)

    def native_precheck(self) -> Any:
        def admin_required(app: Any) -> Any:
            def guarded(environ: dict[str, Any], start_response: Any) -> Any:
                if environ.get("HTTP_X_USER") != "admin":
                    start_response(f"{NATIVE_DENIED} Unauthorized", [("Content-Type", "text/plain")])
                    return [b"Log in first."]
                return app(environ, start_response)

            return guarded

        return admin_required


class TestWSGI(ConformanceCases):
    adapter = WSGIAdapter()
