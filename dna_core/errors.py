"""Errors the engine raises; each carries the HTTP status a handler sends."""

from __future__ import annotations

__all__ = [
    "CertificateFailed",
    "DeployFailed",
    "DockerFailed",
    "DockerRejected",
    "DockerUnavailable",
    "DomainConflict",
    "EngineError",
    "ExternalCommandFailed",
    "ImageNotFound",
    "ServiceNotFound",
]


class EngineError(Exception):
    """Base of the engine's errors; ``status`` is the HTTP status to send."""

    status = 500


class ServiceNotFound(EngineError):
    """No service of that name is recorded."""

    status = 404

    def __init__(self, service: str) -> None:
        super().__init__(f"Service {service!r} not found: deploy it with run_deploy first.")
        self.service = service


class ImageNotFound(EngineError):
    """The image is not in the local Docker image store or the registry."""

    status = 404


class DomainConflict(EngineError):
    """The domain is bound to another service."""

    status = 409


class DeployFailed(EngineError):
    """The new container did not start or did not listen on its port."""

    status = 422


class DockerRejected(EngineError):
    """Docker rejected the request as invalid, such as a Dockerfile that does not parse."""

    status = 422


class DockerFailed(EngineError):
    """The Docker daemon responded with a server error, such as an unreachable registry."""

    status = 502


class DockerUnavailable(EngineError):
    """The Docker daemon is down or did not respond in time."""

    status = 503


class ExternalCommandFailed(EngineError):
    """nginx or certbot failed; the message carries its output."""

    status = 502


class CertificateFailed(EngineError):
    """No certificate could be found or provisioned; the domain stays on plain HTTP.

    The API returns ``{"success": false, "error": ...}`` with status 200
    for ``add_domain``, because the domain itself was routed.
    """

    status = 502
