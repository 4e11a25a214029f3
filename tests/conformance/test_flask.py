"""Run the conformance cases against the Flask adapter."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from conformance.cases import NATIVE_DENIED, Adapter, ConformanceCases

flask = pytest.importorskip("flask", reason="the Flask adapter needs Flask installed")

import dna_flask  # noqa: E402


class FlaskAdapter(Adapter):
    def make_app(self, logs: dict[str, Any], api: dict[str, Any]) -> Any:
        app = flask.Flask(__name__)
        app.register_blueprint(dna_flask.create_logs_client(**logs), url_prefix="/logs")
        app.register_blueprint(dna_flask.create_api_client(**api), url_prefix="/api")
        return app

    def native_precheck(self) -> Any:
        def admin_required(view: Any) -> Any:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                if flask.request.headers.get("X-User") != "admin":
                    return flask.Response("Log in first.", status=NATIVE_DENIED)
                return view(*args, **kwargs)

            return guarded

        return admin_required


class TestFlask(ConformanceCases):
    adapter = FlaskAdapter()
