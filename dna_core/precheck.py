"""The precheck protocol: who may open the logs pages and the key pages.

A core precheck is a :class:`Precheck`: its :meth:`Precheck.check` takes the
neutral :class:`~dna_core.http.Request` and returns to allow it or raises
:class:`~dna_core.http.PrecheckDenied` to deny it. Anything else passed as a
precheck is treated as the framework's own view decorator by the adapters
(a Flask decorator, a Falcon ``before`` hook, a Bottle decorator, or a WSGI
middleware for :class:`~dna_core.WSGIApp`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from .http import PrecheckDenied, Request

__all__ = ["ALLOW_ALL", "DENY_ALL", "Precheck", "allow_from", "precheck", "split_precheck"]


class Precheck:
    """Base of core prechecks: override :meth:`check`."""

    def check(self, request: Request) -> None:
        """Return to allow ``request``; raise :class:`PrecheckDenied` to deny it."""


class _AllowAll(Precheck):
    def check(self, request: Request) -> None:
        return None

    def __repr__(self) -> str:
        return "ALLOW_ALL"


class _DenyAll(Precheck):
    def check(self, request: Request) -> None:
        raise PrecheckDenied(
            403,
            "Forbidden: these pages are disabled until the application passes a precheck "
            "that allows them.",
        )

    def __repr__(self) -> str:
        return "DENY_ALL"


#: Allows every request: the default of the logs client.
ALLOW_ALL: Precheck = _AllowAll()
#: Denies every request with 403: the default of the key pages.
DENY_ALL: Precheck = _DenyAll()


class _FunctionPrecheck(Precheck):
    def __init__(self, function: Callable[[Request], Any]) -> None:
        self.function = function

    def check(self, request: Request) -> None:
        if not self.function(request):
            raise PrecheckDenied(403)

    def __repr__(self) -> str:
        return f"precheck({self.function!r})"


def precheck(function: Callable[[Request], Any]) -> Precheck:
    """Make a core precheck from ``function(request)``: truthy allows, falsy denies (403)."""
    return _FunctionPrecheck(function)


class _AllowFrom(Precheck):
    def __init__(self, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.networks = networks

    def check(self, request: Request) -> None:
        try:
            address = ipaddress.ip_address(request.remote_addr)
        except ValueError:
            raise PrecheckDenied(403) from None
        if not any(address in network for network in self.networks):
            raise PrecheckDenied(403, f"Forbidden: {address} may not open these pages.")

    def __repr__(self) -> str:
        return f"allow_from({', '.join(map(str, self.networks))})"


def allow_from(*networks: str) -> Precheck:
    """Allow only clients whose peer address lies in one of ``networks`` (CIDR)."""
    parsed = []
    for network in networks:
        try:
            parsed.append(ipaddress.ip_network(network, strict=False))
        except ValueError:
            raise ValueError(f"allow_from: {network!r} is not an IP network such as 127.0.0.0/8") from None
    return _AllowFrom(parsed)


def split_precheck(value: Any, default: Precheck, parameter: str = "precheck") -> tuple[Precheck, Any]:
    """Split a precheck argument into (core precheck, native decorator or ``None``).

    ``None`` selects ``default``; a :class:`Precheck` runs in the core; any
    other callable is returned for the adapter to apply natively, and the
    core then allows every request it lets through.

    :raises TypeError: when ``value`` is neither.
    """
    if value is None:
        return default, None
    if isinstance(value, Precheck):
        return value, None
    if callable(value):
        return ALLOW_ALL, value
    raise TypeError(
        f"{parameter} must be a dna_core.Precheck or the framework's view decorator, not {value!r}"
    )
