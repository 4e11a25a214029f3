"""Handlers of the logs client: read-only pages, every log line escaped."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from ..http import HTTPError, Request, Response, html_response
from ..pages import escape, log_page, page

if TYPE_CHECKING:
    from ..clients import LogsClient

#: Log types of a service, with their titles, in index order.
LOG_TYPES = {"nginx": "nginx access log", "error": "nginx error log", "docker": "container log"}
DEFAULT_LINES = 200


def requested_lines(request: Request, maximum: int) -> int:
    """Return the ``lines`` query parameter, 1 to ``maximum`` (default 200)."""
    raw = request.query.get("lines")
    if raw is None:
        return min(DEFAULT_LINES, maximum)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= maximum:
        raise HTTPError(400, f"Invalid lines {raw!r}: send a whole number from 1 to {maximum}.")
    return int(raw)


def index(client: LogsClient, request: Request) -> Response:
    """List the engine's log and the three logs of every service."""
    rows = []
    for service in client.dna.services:
        link = quote(service.name)
        cells = "".join(
            f'<td><a href="{link}/{kind}">{escape(title)}</a></td>' for kind, title in LOG_TYPES.items()
        )
        rows.append(f"<tr><td>{escape(service.name)}</td>{cells}</tr>")
    table = (
        "<table><tr><th>service</th><th colspan=3>logs</th></tr>" + "".join(rows) + "</table>"
        if rows
        else '<p class="muted">No services are deployed yet.</p>'
    )
    body = f'<p><a href="dna">Engine log</a></p>{table}'
    return html_response(page(f"Logs of {client.dna.name}", body))


def engine_log(client: LogsClient, request: Request) -> Response:
    """Show the engine's own log."""
    lines = client.dna.dna_logs(requested_lines(request, client.max_lines))
    return html_response(log_page(f"Engine log of {client.dna.name}", lines, "./"))


def service_log(client: LogsClient, request: Request) -> Response:
    """Show one log of one service, or hand the request to the fallback."""
    service = request.path_params["service"]
    kind = request.path_params["log"]
    if kind not in LOG_TYPES or not client.dna.has_service(service):
        return client.fall_back(service, kind)

    lines = requested_lines(request, client.max_lines)
    if kind == "docker":
        text = client.dna.docker_logs(service, lines)
    else:
        text = client.dna.nginx_logs(service, error=kind == "error", lines=lines)
    return html_response(log_page(f"{service}: {LOG_TYPES[kind]}", text, "../"))
