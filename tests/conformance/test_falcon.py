"""Run the conformance cases against the Falcon adapter."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.cases import NATIVE_DENIED, Adapter, ConformanceCases

falcon = pytest.importorskip("falcon", reason="the Falcon adapter needs Falcon installed")

import dna_falcon  # noqa: E402


class FalconAdapter(Adapter):
    def make_app(self, logs: dict[str, Any], api: dict[str, Any]) -> Any:
        app = falcon.App()
        dna_falcon.add_routes(app, dna_falcon.create_logs_client(**logs), prefix="/logs")
        dna_falcon.add_routes(app, dna_falcon.create_api_client(**api), prefix="/api")
        return app

    def native_precheck(self) -> Any:
        def admin_required(req: Any, resp: Any, resource: Any, params: Any) -> None:
            if req.get_header("X-User") != "admin":
                raise falcon.HTTPError(NATIVE_DENIED, title="Log in first.")

        return admin_required


class TestFalcon(ConformanceCases):
    adapter = FalconAdapter()
