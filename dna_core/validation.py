"""Validators for every value that reaches a file name, nginx or Docker.

Each validator returns the normalised value or raises :class:`InvalidField`,
an :class:`~dna_core.http.HTTPError` with status 422 that names the field,
shows the value and states what is allowed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
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
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?"
)
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}")
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
# Printable ASCII without quotes, backslashes, semicolons or braces, so a value
# can never end the nginx directive it sits in, and without '$', which nginx
# expands as a variable and rejects when the variable is unknown.
_HEADER_VALUE_RE = re.compile(r"[\x20-\x7e]{0,1024}")
_HEADER_VALUE_FORBIDDEN = set("\"'\\;{}$")
_CONTAINER_PATH_RE = re.compile(r"/[\x20-\x7e]{0,4095}")
_MOUNT_MODES = {"ro", "rw"}
_SIZE_RE = re.compile(r"[0-9]{1,15}[bkmgBKMG]?")
_SIGNAL_RE = re.compile(r"SIG[A-Z0-9+-]{1,16}|[0-9]{1,2}")
_HOSTNAME_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?")
_ENV_NAME_RE = re.compile(r"[^=\x00]{1,256}")
_TMPFS_OPTIONS_RE = re.compile(r"[a-zA-Z0-9=,]{0,256}")
_HEALTHCHECK_DURATIONS = ("interval", "timeout", "start_period")
#: Largest value Docker accepts for its 64-bit integer fields.
_INT64_MAX = 2**63 - 1


class InvalidField(HTTPError):
    """A request field whose value is not allowed (HTTP 422)."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        # The message shows strings quoted and everything else as JSON, the
        # form the client sent; the "value" field keeps small JSON values as they are.
        try:
            encoded = json.dumps(value)
            serializable = True
        except (TypeError, ValueError):
            encoded = json.dumps(repr(value))
            serializable = False
        shown: Any = value if serializable and len(encoded) <= 200 and not isinstance(value, str) else None
        if isinstance(value, str) or shown is None:
            text = value if isinstance(value, str) else encoded
            shown = text[:200] + "..." if len(text) > 200 else text
        if isinstance(value, str):
            in_message = repr(shown)
        elif len(encoded) <= 200:
            in_message = encoded
        else:
            in_message = shown
        super().__init__(
            422,
            f"Invalid {field} {in_message}: {allowed}",
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
    # isascii() keeps out digits such as '²' that isdigit() accepts but int() rejects.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
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
                "use printable ASCII without quotes, backslashes, ';', '{', '}' or '$'",
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
    mounts: list[tuple[Any, Any, Any]] = []
    if isinstance(value, Mapping):
        for source, spec in value.items():
            if not isinstance(spec, Mapping) or set(spec) - {"bind", "mode"}:
                raise InvalidField(field, {source: spec}, "send {'SOURCE': {'bind': '/path', 'mode': 'rw'}}")
            mounts.append((source, spec.get("bind"), spec.get("mode", "rw")))
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        for item in value:
            parts = item.split(":")
            if len(parts) not in (2, 3):
                raise InvalidField(field, item, "send 'SOURCE:/path' or 'SOURCE:/path:mode'")
            mounts.append((parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"))
    else:
        raise InvalidField(field, value, "send a list of 'SOURCE:/path[:mode]' or an object")
    for source, target, mode in mounts:
        if not isinstance(source, str) or not source or "\x00" in source:
            raise InvalidField(field, source, "name a volume or a directory")
        if "/" in source or source.startswith("."):
            if not _inside(source, volume_root):
                where = f"inside {volume_root}" if volume_root else "(bind mounts are disabled)"
                raise InvalidField(
                    field, source, f"bind mounts must name a directory {where}; or use a named volume"
                )
        elif not _SERVICE_RE.fullmatch(source):
            raise InvalidField(field, source, "a named volume uses letters, digits, '_', '.' or '-'")
        if not isinstance(target, str) or not _CONTAINER_PATH_RE.fullmatch(target):
            raise InvalidField(field, target, "mount at an absolute path inside the container")
        if mode not in _MOUNT_MODES:
            raise InvalidField(field, mode, "use mode " + " or ".join(sorted(_MOUNT_MODES)))
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
        else:
            _check_run_value(key, option, field)
        options[key] = option
    return options


def _is_text(value: Any, pattern: re.Pattern[str] | None = None) -> bool:
    """Return whether ``value`` is a string without NUL that matches ``pattern``, if given."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    return pattern is None or pattern.fullmatch(value) is not None


def _is_int(value: Any, low: int = 0, high: int = _INT64_MAX) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_run_value(key: str, option: Any, field: str) -> None:
    """Check the content of one run option whose type is already checked.

    The Docker SDK turns some malformed values into exceptions before it
    talks to the daemon, and a NUL byte can never reach a process, so both
    are rejected here with a message rather than failing inside Docker.
    """
    types, allowed = RUN_OPTIONS[key]
    if key == "environment":
        if isinstance(option, Mapping):
            for name, value in option.items():
                if not _is_text(name, _ENV_NAME_RE):
                    raise InvalidField(field, name, "variable names are 1-256 characters without '='")
                if not (value is None or _is_text(value) or isinstance(value, (int, float))):
                    raise InvalidField(f"{field}.{name}", value, "send a string, a number or null")
        elif not all(_is_text(item) and "=" in item for item in option):
            raise InvalidField(field, option, allowed)
    elif key in ("command", "entrypoint"):
        items = [option] if isinstance(option, str) else option
        if not items or not all(_is_text(item) for item in items):
            raise InvalidField(field, option, "send a non-empty string or list of strings without NUL bytes")
        if isinstance(option, str):
            # The Docker SDK splits a string command with shlex.
            try:
                shlex.split(option)
            except ValueError as error:
                raise InvalidField(field, option, f"the command cannot be split into words ({error})") from None
    elif key == "working_dir":
        if not _is_text(option, _CONTAINER_PATH_RE):
            raise InvalidField(field, option, allowed)
    elif key == "user":
        if not (_is_int(option, 0, 2**32 - 1) or _is_text(option, re.compile(r"[a-zA-Z0-9_.:-]{1,64}"))):
            raise InvalidField(field, option, "send a user name, 'user:group' or a numeric id")
    elif key in ("mem_limit", "memswap_limit", "shm_size"):
        if not (_is_int(option, -1) or _is_text(option, _SIZE_RE)):
            raise InvalidField(field, option, allowed)
    elif key in ("nano_cpus", "cpu_shares", "cpu_period", "cpu_quota", "pids_limit"):
        if not _is_int(option, -1):
            raise InvalidField(field, option, "send an integer from -1 to 2**63-1")
    elif key == "restart_policy":
        if set(option) - {"Name", "MaximumRetryCount"} or option.get("Name") not in _RESTART_NAMES:
            raise InvalidField(
                field, option, "send {'Name': NAME} with NAME one of " + ", ".join(sorted(_RESTART_NAMES))
            )
        if not _is_int(option.get("MaximumRetryCount", 0), 0, 10_000):
            raise InvalidField(field, option, "MaximumRetryCount must be an integer from 0 to 10000")
    elif key == "healthcheck":
        _check_healthcheck(option, field)
    elif key == "stop_signal":
        if not _is_text(option, _SIGNAL_RE):
            raise InvalidField(field, option, allowed)
    elif key == "hostname":
        if not _is_text(option, _HOSTNAME_RE):
            raise InvalidField(field, option, "send a host name of letters, digits, '.' and '-'")
    elif key == "tmpfs":
        for path, mount_options in option.items():
            if not _is_text(path, _CONTAINER_PATH_RE) or not _is_text(mount_options, _TMPFS_OPTIONS_RE):
                raise InvalidField(field, {path: mount_options}, "send {'/path': 'size=64m'}")


def _check_healthcheck(option: Mapping[str, Any], field: str) -> None:
    allowed = "send {'test': ['CMD', ...], 'interval': NS, 'timeout': NS, 'retries': N, 'start_period': NS}"
    if set(option) - {"test", *_HEALTHCHECK_DURATIONS, "retries"}:
        raise InvalidField(field, option, allowed)
    test = option.get("test", [])
    tests = [test] if isinstance(test, str) else test
    if not isinstance(tests, list) or not all(_is_text(item) for item in tests):
        raise InvalidField(f"{field}.test", test, "send a command string or a list of strings")
    for name in _HEALTHCHECK_DURATIONS:
        if name in option and not _is_int(option[name]):
            raise InvalidField(f"{field}.{name}", option[name], "send a duration in nanoseconds")
    if "retries" in option and not _is_int(option["retries"], 0, 10_000):
        raise InvalidField(f"{field}.retries", option["retries"], "send an integer from 0 to 10000")


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
        raise HTTPError(
            400,
            "Missing field 'options.path': send the build context directory, relative to the build root.",
            details={"field": "options.path"},
        )
    for name in ("path", "dockerfile", "target"):
        if name in options and (not options[name] or "\x00" in options[name]):
            raise InvalidField(f"options.{name}", options[name], "send a non-empty string without NUL bytes")
    if "timeout" in options and not _is_int(options["timeout"], 1, 86_400):
        raise InvalidField("options.timeout", options["timeout"], "send a number of seconds from 1 to 86400")
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
    # Docker reports a missing Dockerfile as a server error (500), so check first.
    if not os.path.isfile(os.path.join(context, dockerfile or "Dockerfile")):
        field = "options.dockerfile" if dockerfile else "options.path"
        raise InvalidField(
            field, dockerfile or path, "the build context has no such Dockerfile: add one or send options.dockerfile"
        )
    if "tag" in options:
        validate_image(options["tag"], "options.tag")
    if "labels" in options:
        options["labels"] = _validate_labels(options["labels"], "options.labels")
    if "buildargs" in options and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options["buildargs"].items()
    ):
        raise InvalidField("options.buildargs", options["buildargs"], "send string names and values")
    for name, value in options.get("buildargs", {}).items():
        if "\x00" in name or "\x00" in value:
            raise InvalidField("options.buildargs", name, "send names and values without NUL bytes")
    return options
