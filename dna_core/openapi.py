"""The OpenAPI 3 document of the API client, built from its route table.

Paths and methods come from :attr:`ApiClient.routes`, so a new route appears
in the document on its own. Request bodies, parameters and responses come
from :data:`REQUEST_BODIES` and the tables below; the patterns are the ones
the validators in :mod:`dna_core.validation` enforce.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .http import Request, Response, json_response
from .keys import AUTH_HEADER
from .validation import RUN_OPTIONS

if TYPE_CHECKING:
    from .clients import Client, Route

__all__ = ["REQUEST_BODIES", "build_document", "openapi_document"]

OPENAPI_VERSION = "3.0.3"

_SERVICE = {
    "type": "string",
    "pattern": r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$",
    "description": "Service name: Docker's container-name rule, at most 63 characters.",
    "example": "web",
}
_DOMAIN = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.?$",
    "description": (
        "RFC 1123 host name of two or more labels, optionally starting with '*.'; "
        "stored lower-cased, without a trailing dot."
    ),
    "example": "app.example.test",
}
_IMAGE = {
    "type": "string",
    "maxLength": 512,
    "description": "Docker image reference: [registry[:port]/]name[:tag][@sha256:digest].",
    "example": "registry.example.test:5000/web:v1",
}
_OPTIONS = {
    "type": "object",
    "description": "Docker options from an allowlist; privileged mode, host namespaces, devices,"
    " added capabilities, bind mounts outside the volume root and 'dna.' labels are rejected.",
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


#: JSON request body schema of each engine endpoint, by endpoint name.
REQUEST_BODIES: dict[str, dict[str, Any]] = {
    "pull_image": _body({"image": _IMAGE, "tag": {"type": "string", "nullable": True}}, ["image"]),
    "build_image": _body(
        {
            "options": {
                **_OPTIONS,
                "properties": {
                    "path": {"type": "string", "description": "Context directory inside the build root."},
                    "tag": _IMAGE,
                    "dockerfile": {"type": "string", "description": "Dockerfile path inside the context."},
                    "buildargs": {"type": "object", "additionalProperties": {"type": "string"}},
                    "nocache": {"type": "boolean"},
                    "pull": {"type": "boolean"},
                },
                "required": ["path"],
            }
        },
        ["options"],
    ),
    "run_deploy": _body(
        {
            "service": _SERVICE,
            "image": _IMAGE,
            "port": {
                "oneOf": [
                    {"type": "integer", "minimum": 1, "maximum": 65535},
                    {"type": "string", "pattern": "^[0-9]{1,5}$", "description": "digits, 1 to 65535"},
                ],
                "example": 80,
            },
            "options": {
                **_OPTIONS,
                "description": f"{_OPTIONS['description']} Allowed keys: {', '.join(sorted(RUN_OPTIONS))}.",
                "properties": {
                    "environment": {
                        "oneOf": [
                            {"type": "object", "additionalProperties": {"type": "string"}},
                            {"type": "array", "items": {"type": "string"}},
                        ]
                    },
                    "command": {"type": "array", "items": {"type": "string"}},
                    "mem_limit": {"type": "string", "pattern": r"^[0-9]{1,15}[bkmgBKMG]?$"},
                    "init": {"type": "boolean"},
                },
            },
        },
        ["service", "image", "port"],
    ),
    "propagate_services": {"type": "object", "additionalProperties": False},
    "start_service": _body({"service": _SERVICE}, ["service"]),
    "stop_service": _body({"service": _SERVICE}, ["service"]),
    "delete_service": _body({"service": _SERVICE}, ["service"]),
    "add_domain": _body(
        {
            "service": _SERVICE,
            "domain": _DOMAIN,
            "force_wildcard": {"type": "boolean"},
            "force_provision": {"type": "boolean"},
            "proxy_set_header": {
                "type": "object",
                "description": "Extra headers nginx sends upstream; names of letters, digits and '-',"
                " values of printable ASCII without quotes, backslashes, ';', '{', '}' or '$'.",
                "additionalProperties": {"type": "string", "pattern": r"^[ !#%&(-:<-\[\]-z|~]{0,1024}$"},
            },
        },
        ["service", "domain"],
    ),
    "remove_domain": _body({"service": _SERVICE, "domain": _DOMAIN}, ["service", "domain"]),
}

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What was wrong and what to send instead."},
        "title": {"type": "string"},
        "field": {"type": "string", "description": "The rejected field, for 400 and 422."},
        "value": {"description": "The rejected value, shortened to 200 characters."},
        "allowed": {"type": "string", "description": "What the field accepts."},
    },
    "required": ["error", "title"],
}

#: Error statuses of the engine endpoints and when each is sent.
ENGINE_ERRORS = {
    "400": "Missing, empty or malformed JSON body, or a missing field.",
    "403": "Missing, invalid, expired or revoked API key, or a key bound to another address.",
    "404": "Unknown service or image.",
    "409": "The domain is bound to another service.",
    "413": "The request body is larger than 1 MiB.",
    "422": "A field has an invalid value, an option is not allowed, or Docker rejected the request.",
    "502": (
        "nginx, certbot or Docker failed, such as a registry Docker cannot reach; "
        "the previous nginx configuration stays in place."
    ),
    "503": "The Docker daemon is down or did not answer in time.",
}

_SUCCESS = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean"},
        "error": {"type": "string", "description": "Why the call did not succeed, when it did not."},
    },
    "required": ["success"],
}
_SERVICE_INFO = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "port": {"type": "integer"},
        "domains": {"type": "array", "items": {"type": "string"}},
        "container_id": {"type": "string", "nullable": True},
        "state": {"type": "object", "nullable": True},
    },
    "required": ["name", "image", "port", "domains"],
}


def _path(rule: str) -> str:
    """Turn a werkzeug rule such as ``/x/<path:name>`` into ``/x/{name}``."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def _engine_operation(route: Route) -> dict[str, Any]:
    if route.streams:
        success = {
            "description": "Docker's progress, one line at a time; a failure after the first line"
            " ends the text with a line starting 'error:'.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    else:
        schema = _SERVICE_INFO if route.endpoint == "get_service_info" else _SUCCESS
        success = {"description": "Done.", "content": {"application/json": {"schema": schema}}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    operation: dict[str, Any] = {
        "operationId": route.endpoint,
        "tags": ["engine"],
        "security": [{"apiKey": []}],
        "responses": {
            "200": success,
            **{status: {"description": text, **error} for status, text in ENGINE_ERRORS.items()},
        },
    }
    if route.endpoint in REQUEST_BODIES:
        operation["requestBody"] = {
            "required": route.endpoint != "propagate_services",
            "content": {"application/json": {"schema": REQUEST_BODIES[route.endpoint]}},
        }
    return operation


def _page_operation(route: Route, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{route.endpoint}_{method.lower()}",
        "tags": ["keys"],
        "description": "HTML page, guarded by the client's precheck (403 by default).",
        "responses": {
            "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
            "400": {"description": "A missing key id or form field."},
            "403": {"description": "Denied by the precheck, or a missing or invalid form token."},
            "404": {"description": "No key has that id."},
        },
    }
    if route.endpoint == "manage_key":
        operation["parameters"] = [
            {"name": "key", "in": "query", "required": True, "schema": {"type": "string"}}
        ]
    if method == "POST":
        operation["responses"]["201"] = {
            "description": "The key was created; the page shows it once.",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"csrf_token": {"type": "string"}},
                        "required": ["csrf_token"],
                    }
                }
            },
        }
    return operation


def build_document(client: Client, server_url: str = "/") -> dict[str, Any]:
    """Return the OpenAPI 3 document of ``client``'s routes.

    :param server_url: URL prefix the client is mounted under, such as ``/api``.
    """
    paths: dict[str, dict[str, Any]] = {}
    for route in client.routes:
        if route.endpoint == "openapi":
            continue
        item = paths.setdefault(_path(route.rule), {})
        for name in route.path_params:
            item.setdefault("parameters", []).append(
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            )
        for method in route.methods:
            if route.authenticated:
                item[method.lower()] = _engine_operation(route)
            else:
                item[method.lower()] = _page_operation(route, method)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "docker-dna deploy API",
            "version": "1",
            "description": f"Deploy images as services behind nginx. Engine endpoints need an API key"
            f" in the {AUTH_HEADER} header, used from the address it is bound to.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": AUTH_HEADER}},
        },
    }


def openapi_document(client: Client, request: Request) -> Response:
    """Serve the document, with the server URL taken from where it is mounted."""
    prefix = request.path.rsplit("/", 1)[0] or "/"
    return json_response(build_document(client, prefix))
