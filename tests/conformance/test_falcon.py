"""Run the conformance cases against the Falcon adapter."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.cases import NATIVE_DENIED, Adapter, ConformanceCases, LoopbackClient
from fakes import FakeDNA

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

    def test_hook_completing_response_denies(self, dna: FakeDNA) -> None:
        """A before hook that marks the response complete keeps the page from running."""

        def deny(req: Any, resp: Any, resource: Any, params: Any) -> None:
            resp.status = NATIVE_DENIED
            resp.text = "Log in first."
            resp.complete = True

        client = LoopbackClient(self.adapter.make_app({"dna": dna, "precheck": deny}, {"dna": dna}))

        response = client.get("/logs/web/docker")

        assert response.status_code == NATIVE_DENIED
        assert response.get_data(as_text=True) == "Log in first."
        assert dna.calls_to("docker_logs") == []

    def test_prefix_must_not_end_with_slash(self, dna: FakeDNA) -> None:
        """add_routes rejects a prefix that would double the slash or lacks the leading one."""
        resources = dna_falcon.create_logs_client(dna)

        for prefix in ("/logs/", "logs"):
            with pytest.raises(ValueError, match="prefix must start with '/'"):
                dna_falcon.add_routes(falcon.App(), resources, prefix=prefix)
