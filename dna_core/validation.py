"""Validators for every value that reaches a file name, nginx or Docker.

Each validator returns the normalised value or raises :class:`InvalidField`,
an :class:`~dna_core.http.HTTPError` with status 422 that names the field,
shows the value and says what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .http import HTTPError

__all__ = [
    "InvalidField",
    "LABEL_PREFIX",
    "validate_build_options",
    "validate_domain",
    "validate_image",
    "validate_port",
    "validate_proxy_headers",
    "validate_run_options",
    "validate_service_name",
]

#: Prefix of the labels the engine puts on its containers; key holders may not set them.
LABEL_PREFIX = "dna."

_SERVICE_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Docker's reference grammar, simplified: [registry[:port]/]path[:tag][@digest].
_IMAGE_RE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?"
)
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}")
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
# Printable ASCII without quotes, backslashes, semicolons or braces, so a value
# can never end the nginx directive it sits in.
_HEADER_VALUE_RE = re.compile(r"[\x20-\x7e]{0,1024}")
_HEADER_VALUE_FORBIDDEN = set("\"'\\;{}")


class InvalidField(HTTPError):
    """A request field whose value is not allowed (HTTP 422)."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        shown = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if isinstance(shown, str) and len(shown) > 200:
            shown = shown[:200] + "..."
        super().__init__(
            422,
            f"Invalid {field} {shown!r}: {allowed}",
            details={"field": field, "value": shown, "allowed": allowed},
        )
        self.field = field


def validate_service_name(value: Any, field: str = "service") -> str:
    """Return ``value`` if it is a valid service name.

    Service names follow Docker's container-name rule, limited to 63
    characters so that they also fit a DNS label and a file name.
    """
    allowed = (
        "use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )
    if not isinstance(value, str) or not _SERVICE_RE.fullmatch(value):
        raise InvalidField(field, value, allowed)
    return value


def validate_domain(value: Any, field: str = "domain", allow_wildcard: bool = True) -> str:
    """Return ``value`` lower-cased if it is an RFC 1123 host name.

    A single leading ``*.`` is accepted when ``allow_wildcard`` is true. The
    name needs at least two labels, as a certificate authority requires.
    """
    allowed = (
        "send a host name such as app.example.com: 2 or more dot-separated labels "
        "of letters, digits and inner hyphens, at most 253 characters"
        + (", optionally starting with '*.'" if allow_wildcard else "")
    )
    if not isinstance(value, str):
        raise InvalidField(field, value, allowed)
    name = value.lower()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if allow_wildcard and labels[0] == "*":
        labels = labels[1:]
    if len(name) > 253 or len(labels) < 2:
        raise InvalidField(field, value, allowed)
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InvalidField(field, value, allowed)
    if labels[-1].isdigit():
        raise InvalidField(field, value, allowed)
    return name


def validate_image(value: Any, field: str = "image") -> str:
    """Return ``value`` if it is a Docker image reference."""
    allowed = "send an image reference such as 'name', 'name:tag' or 'registry:5000/name:tag'"
    if not isinstance(value, str) or len(value) > 512 or not _IMAGE_RE.fullmatch(value):
        raise InvalidField(field, value, allowed)
    return value


def validate_tag(value: Any, field: str = "tag") -> str | None:
    """Return ``value`` if it is ``None`` or a Docker image tag."""
    if value is None:
        return None
    if not isinstance(value, str) or not _TAG_RE.fullmatch(value):
        raise InvalidField(
            field, value, "use up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )
    return value


def validate_port(value: Any, field: str = "port") -> int:
    """Return ``value`` as an ``int`` if it is a TCP port (1-65535)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidField(field, value, "send an integer from 1 to 65535")
    return value


def validate_bool(value: Any, field: str) -> bool:
    """Return ``value`` if it is a JSON boolean."""
    if not isinstance(value, bool):
        raise InvalidField(field, value, "send true or false")
    return value


def validate_proxy_headers(value: Any, field: str = "proxy_set_header") -> dict[str, str]:
    """Return ``value`` if it maps safe header names to safe header values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidField(field, value, "send an object of header names to values")
    result: dict[str, str] = {}
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME_RE.fullmatch(name):
            raise InvalidField(f"{field} name", name, "use 1-64 letters, digits or '-'")
        if (
            not isinstance(header_value, str)
            or not _HEADER_VALUE_RE.fullmatch(header_value)
            or _HEADER_VALUE_FORBIDDEN & set(header_value)
        ):
            raise InvalidField(
                f"{field}[{name}]",
                header_value,
                "use printable ASCII without quotes, backslashes, ';', '{' or '}'",
            )
        result[name] = header_value
    return result


def _validate_labels(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidField(field, value, "send an object of string keys to string values")
    for key in value:
        if key.startswith(LABEL_PREFIX):
            raise InvalidField(
                field, key, f"labels starting with {LABEL_PREFIX!r} belong to the engine"
            )
    return dict(value)


def _inside(path: str, root: Path | None) -> bool:
    if root is None:
        return False
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def _validate_volumes(value: Any, field: str, volume_root: Path | None) -> Any:
    """Accept named volumes anywhere, and bind mounts only under ``volume_root``."""
    if isinstance(value, Mapping):
        sources = list(value)
        for source, spec in value.items():
            if not isinstance(spec, Mapping) or not isinstance(spec.get("bind"), str):
                raise InvalidField(field, {source: spec}, "send {'SOURCE': {'bind': '/path', 'mode': 'rw'}}")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        sources = [item.split(":", 1)[0] for item in value]
    else:
        raise InvalidField(field, value, "send a list of 'SOURCE:/path[:mode]' or an object")
    for source in sources:
        if not isinstance(source, str) or not source:
            raise InvalidField(field, source, "name a volume or a directory")
        if "/" in source or source.startswith("."):
            if not _inside(source, volume_root):
                where = f"inside {volume_root}" if volume_root else "(bind mounts are disabled)"
                raise InvalidField(
                    field, source, f"bind mounts must name a directory {where}; or use a named volume"
                )
        elif not _SERVICE_RE.fullmatch(source):
            raise InvalidField(field, source, "a named volume uses letters, digits, '_', '.' or '-'")
    return value


def _check_type(value: Any, field: str, types: tuple[type, ...], allowed: str) -> Any:
    if isinstance(value, bool) and bool not in types:
        raise InvalidField(field, value, allowed)
    if not isinstance(value, types):
        raise InvalidField(field, value, allowed)
    return value


_STRING_OR_LIST = ((str, list), "send a string or a list of strings")
_INT = ((int,), "send an integer")
_SIZE = ((int, str), "send a byte count or a size such as '256m'")

#: Options of ``run_deploy`` a key holder may set, with their accepted types.
RUN_OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "environment": ((dict, list), "send an object of names to values or a list of 'NAME=value'"),
    "command": _STRING_OR_LIST,
    "entrypoint": _STRING_OR_LIST,
    "working_dir": ((str,), "send an absolute path"),
    "user": ((str, int), "send a user name or id"),
    "mem_limit": _SIZE,
    "memswap_limit": _SIZE,
    "shm_size": _SIZE,
    "nano_cpus": _INT,
    "cpu_shares": _INT,
    "cpu_period": _INT,
    "cpu_quota": _INT,
    "pids_limit": _INT,
    "restart_policy": ((dict,), "send {'Name': 'on-failure', 'MaximumRetryCount': 3}"),
    "labels": ((dict,), "send an object of string keys to string values"),
    "volumes": ((dict, list), "send a list of 'SOURCE:/path[:mode]' or an object"),
    "healthcheck": ((dict,), "send a Docker healthcheck object"),
    "stop_signal": ((str,), "send a signal name such as 'SIGTERM'"),
    "hostname": ((str,), "send a host name"),
    "init": ((bool,), "send true or false"),
    "read_only": ((bool,), "send true or false"),
    "tmpfs": ((dict,), "send an object of paths to mount options"),
}

#: Options that break the container's isolation, with the reason shown to the client.
FORBIDDEN_RUN_OPTIONS = {
    "privileged": "privileged containers can take over the host",
    "network_mode": "containers must stay on the instance's own network",
    "pid_mode": "sharing the host's process namespace is not allowed",
    "ipc_mode": "sharing the host's IPC namespace is not allowed",
    "userns_mode": "changing the user namespace is not allowed",
    "uts_mode": "sharing the host's UTS namespace is not allowed",
    "devices": "host devices are not allowed",
    "device_requests": "host devices are not allowed",
    "cap_add": "adding capabilities is not allowed",
    "security_opt": "changing security options is not allowed",
    "ports": "the engine publishes the service port itself",
    "publish_all_ports": "the engine publishes the service port itself",
    "network": "containers must stay on the instance's own network",
    "name": "the engine names containers itself",
    "mounts": "use 'volumes' instead",
    "volumes_from": "sharing another container's volumes is not allowed",
    "sysctls": "changing kernel parameters is not allowed",
    "cgroup_parent": "changing the cgroup parent is not allowed",
}

_RESTART_NAMES = {"no", "always", "unless-stopped", "on-failure"}


def validate_run_options(value: Any, volume_root: Path | None = None) -> dict[str, Any]:
    """Return ``value`` if every key is an allowed ``docker run`` option."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidField("options", value, "send an object of Docker run options")
    options: dict[str, Any] = {}
    for key, option in value.items():
        field = f"options.{key}"
        if key in FORBIDDEN_RUN_OPTIONS:
            raise InvalidField(field, option, f"not allowed: {FORBIDDEN_RUN_OPTIONS[key]}")
        if key not in RUN_OPTIONS:
            raise InvalidField(
                field, option, "unknown or not allowed; allowed: " + ", ".join(sorted(RUN_OPTIONS))
            )
        types, allowed = RUN_OPTIONS[key]
        _check_type(option, field, types, allowed)
        if key == "labels":
            option = _validate_labels(option, field)
        elif key == "volumes":
            option = _validate_volumes(option, field, volume_root)
        elif key == "restart_policy" and option.get("Name") not in _RESTART_NAMES:
            raise InvalidField(field, option, "Name must be one of " + ", ".join(sorted(_RESTART_NAMES)))
        options[key] = option
    return options


#: Options of ``build_image`` a key holder may set.
BUILD_OPTIONS: dict[str, tuple[tuple[type, ...], str]] = {
    "path": ((str,), "send the build context directory"),
    "tag": ((str,), "send an image reference such as 'name:tag'"),
    "dockerfile": ((str,), "send a Dockerfile path relative to the context"),
    "buildargs": ((dict,), "send an object of build argument names to values"),
    "nocache": ((bool,), "send true or false"),
    "rm": ((bool,), "send true or false"),
    "forcerm": ((bool,), "send true or false"),
    "pull": ((bool,), "send true or false"),
    "labels": ((dict,), "send an object of string keys to string values"),
    "target": ((str,), "send the name of a build stage"),
    "timeout": ((int,), "send a number of seconds"),
}


def validate_build_options(value: Any, build_root: Path | None) -> dict[str, Any]:
    """Return ``value`` if it is a safe set of Docker build options.

    The context ``path`` must lie inside ``build_root`` and the Dockerfile
    inside the context.
    """
    if not isinstance(value, Mapping):
        raise InvalidField("options", value, "send an object of Docker build options with a 'path'")
    options: dict[str, Any] = {}
    for key, option in value.items():
        field = f"options.{key}"
        if key not in BUILD_OPTIONS:
            raise InvalidField(
                field, option, "unknown or not allowed; allowed: " + ", ".join(sorted(BUILD_OPTIONS))
            )
        types, allowed = BUILD_OPTIONS[key]
        _check_type(option, field, types, allowed)
        options[key] = option

    path = options.get("path")
    if path is None:
        raise InvalidField("options.path", None, "send the build context directory")
    if build_root is None:
        raise InvalidField("options.path", path, "builds are disabled: the engine has no build root")
    context = os.path.realpath(Path(build_root) / path)
    if not _inside(context, build_root) or not os.path.isdir(context):
        raise InvalidField(
            "options.path", path, f"send an existing directory inside the build root {build_root}"
        )
    options["path"] = context
    dockerfile = options.get("dockerfile")
    if dockerfile is not None and not _inside(os.path.join(context, dockerfile), Path(context)):
        raise InvalidField("options.dockerfile", dockerfile, "the Dockerfile must lie inside the context")
    if "tag" in options:
        validate_image(options["tag"], "options.tag")
    if "labels" in options:
        options["labels"] = _validate_labels(options["labels"], "options.labels")
    if "buildargs" in options and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options["buildargs"].items()
    ):
        raise InvalidField("options.buildargs", options["buildargs"], "send string names and values")
    return options
