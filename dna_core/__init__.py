"""docker-dna core: the deploy engine and framework-neutral HTTP handlers.

This package imports no web framework. Adapters (``dna_flask``,
``dna_falcon``, ``dna_bottle``) turn its clients into framework routes, and
:class:`WSGIApp` serves a client in any other WSGI host.
"""

from __future__ import annotations

from .certificates import Certbot, CertificateInfo
from .clients import ApiClient, Client, LogsClient, Route
from .engine import DNA, LABEL_INSTANCE, LABEL_SERVICE, LABEL_STATE, CertificateProvider, ServiceInfo
from .errors import (
    CertificateFailed,
    DeployFailed,
    DockerFailed,
    DockerRejected,
    DockerUnavailable,
    DomainConflict,
    EngineError,
    ExternalCommandFailed,
    ImageNotFound,
    ServiceNotFound,
)
from .http import (
    MAX_BODY_BYTES,
    EnvironHeaders,
    HTTPError,
    PrecheckDenied,
    Request,
    Response,
    html_response,
    json_response,
    read_body,
    text_response,
)
from .keys import AUTH_HEADER, KeyManager, client_address
from .nginx import NginxError, NginxSettings, PrivateNginx, ServerBlock
from .precheck import ALLOW_ALL, DENY_ALL, Precheck, allow_from, precheck, split_precheck
from .validation import InvalidField
from .wsgi import WSGIApp

__all__ = [
    "ALLOW_ALL",
    "AUTH_HEADER",
    "DENY_ALL",
    "DNA",
    "LABEL_INSTANCE",
    "LABEL_SERVICE",
    "LABEL_STATE",
    "MAX_BODY_BYTES",
    "ApiClient",
    "Certbot",
    "CertificateFailed",
    "CertificateInfo",
    "CertificateProvider",
    "Client",
    "DeployFailed",
    "DockerFailed",
    "DockerRejected",
    "DockerUnavailable",
    "DomainConflict",
    "EngineError",
    "EnvironHeaders",
    "ExternalCommandFailed",
    "HTTPError",
    "ImageNotFound",
    "InvalidField",
    "KeyManager",
    "LogsClient",
    "NginxError",
    "NginxSettings",
    "Precheck",
    "PrecheckDenied",
    "PrivateNginx",
    "Request",
    "Response",
    "Route",
    "ServerBlock",
    "ServiceInfo",
    "ServiceNotFound",
    "WSGIApp",
    "allow_from",
    "client_address",
    "html_response",
    "json_response",
    "precheck",
    "read_body",
    "split_precheck",
    "text_response",
]

__version__ = "0.1.0"
