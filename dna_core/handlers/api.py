"""Handlers of the engine endpoints: JSON in, JSON or streamed text out."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import CertificateFailed, EngineError
from ..http import HTTPError, Request, Response, json_response, text_response
from ..validation import InvalidField, validate_bool, validate_service_name

if TYPE_CHECKING:
    from ..clients import ApiClient

logger = logging.getLogger(__name__)


def _fields(request: Request, allowed: set[str], required: set[str]) -> dict[str, Any]:
    """Parse the JSON body and check it has ``required`` and only ``allowed`` keys."""
    body = request.json_or_empty() if not required else request.json()
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HTTPError(
            422,
            f"Unknown field {unknown[0]!r}: send only {', '.join(sorted(allowed)) or 'an empty body'}.",
            details={"field": unknown[0]},
        )
    missing = sorted(required - set(body))
    if missing:
        raise HTTPError(
            400, f"Missing field {missing[0]!r}: send it in the JSON body.", details={"field": missing[0]}
        )
    return body


def _stream(lines: Iterator[str], what: str) -> Iterator[bytes]:
    """Encode progress lines; an error after the first line ends the stream with it."""
    try:
        for line in lines:
            yield (line + "\n").encode("utf-8")
    except EngineError as error:
        logger.warning("%s failed while streaming: %s", what, error)
        yield f"error: {error}\n".encode("utf-8")
    except Exception:
        # The status line is already sent, so the error can only end the text.
        logger.exception("%s failed while streaming", what)
        yield f"error: {what} failed unexpectedly; see the engine log\n".encode("utf-8")


def _options(body: dict[str, Any], reserved: tuple[str, ...]) -> dict[str, Any]:
    """Return ``body["options"]``, rejecting keys that the engine takes as parameters."""
    options = body.get("options")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidField("options", options, "send an object of Docker options")
    for key in reserved:
        if key in options:
            raise InvalidField(f"options.{key}", options[key], "not an option: it is set by the endpoint itself")
    return options


def pull_image(client: ApiClient, request: Request) -> Response:
    """Pull an image and stream Docker's progress."""
    body = _fields(request, {"image", "tag"}, {"image"})
    lines = client.dna.pull_image(body["image"], body.get("tag"), stream=True)
    return text_response(_stream(lines, "pull"))


def build_image(client: ApiClient, request: Request) -> Response:
    """Build an image and stream Docker's progress."""
    body = _fields(request, {"options"}, {"options"})
    lines = client.dna.build_image(stream=True, **_options(body, ("stream",)))
    return text_response(_stream(lines, "build"))


def run_deploy(client: ApiClient, request: Request) -> Response:
    """Deploy an image as a service."""
    body = _fields(request, {"service", "image", "port", "options"}, {"service", "image", "port"})
    client.dna.run_deploy(body["service"], body["image"], body["port"], **_options(body, ("service", "image", "port")))
    return json_response({"success": True})


def propagate_services(client: ApiClient, request: Request) -> Response:
    """Reconcile the engine's records with Docker and nginx."""
    _fields(request, set(), set())
    client.dna.propagate_services()
    return json_response({"success": True})


def get_service_info(client: ApiClient, request: Request) -> Response:
    """Return one service as JSON."""
    name = validate_service_name(request.path_params["name"], "name")
    return json_response(client.dna.get_service_info(name).to_json())


def start_service(client: ApiClient, request: Request) -> Response:
    """Start a service's container."""
    body = _fields(request, {"service"}, {"service"})
    return json_response({"success": client.dna.start_service(body["service"])})


def stop_service(client: ApiClient, request: Request) -> Response:
    """Stop a service's container."""
    body = _fields(request, {"service"}, {"service"})
    return json_response({"success": client.dna.stop_service(body["service"])})


def add_domain(client: ApiClient, request: Request) -> Response:
    """Route a domain to a service and secure it."""
    body = _fields(
        request,
        {"service", "domain", "force_wildcard", "force_provision", "proxy_set_header"},
        {"service", "domain"},
    )
    try:
        success = client.dna.add_domain(
            body["service"],
            body["domain"],
            force_wildcard=validate_bool(body.get("force_wildcard", False), "force_wildcard"),
            force_provision=validate_bool(body.get("force_provision", False), "force_provision"),
            proxy_set_header=body.get("proxy_set_header"),
        )
    except CertificateFailed as error:
        # The domain is routed and serves plain HTTP, so this is no server
        # error. The body names what failed and the engine's log has the rest.
        return json_response({"success": False, "error": str(error)})
    return json_response({"success": success})


def remove_domain(client: ApiClient, request: Request) -> Response:
    """Stop routing a domain to a service."""
    body = _fields(request, {"service", "domain"}, {"service", "domain"})
    if client.dna.remove_domain(body["service"], body["domain"]):
        return json_response({"success": True})
    return json_response(
        {"success": False, "error": f"Domain {body['domain']!r} is not routed to service {body['service']!r}."}
    )


def delete_service(client: ApiClient, request: Request) -> Response:
    """Delete a service: its domains, containers and record."""
    body = _fields(request, {"service"}, {"service"})
    return json_response({"success": client.dna.delete_service(body["service"])})
