"""Validators: property tests with hypothesis, and tables of rejected values."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import free_port
from docker.models.containers import _create_container_args
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dna_core.nginx import Nginx, PrivateNginx, ServerBlock, render_service
from dna_core.http import HTTPError
from dna_core.validation import (
    BUILD_OPTIONS,
    FORBIDDEN_RUN_OPTIONS,
    RUN_OPTIONS,
    InvalidField,
    validate_build_options,
    validate_domain,
    validate_image,
    validate_port,
    validate_proxy_headers,
    validate_run_options,
    validate_service_name,
)

#: Examples per property; DNA_PROPERTY_EXAMPLES raises it for a longer run.
PROPERTY_EXAMPLES = int(os.environ.get("DNA_PROPERTY_EXAMPLES", "300"))
PROPERTY = settings(
    max_examples=PROPERTY_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

# Characters that could end an nginx directive or a block, start a variable,
# or leave a directory.
NGINX_SPECIAL = set(" \t\r\n;{}\"'\\$#/")

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
top_label = st.from_regex(r"[a-z][a-z0-9]{1,10}", fullmatch=True)
valid_domains = st.builds(
    lambda wildcard, labels, top: ("*." if wildcard else "") + ".".join([*labels, top]),
    st.booleans(),
    st.lists(label, min_size=1, max_size=4),
    top_label,
)
header_names = st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


# Domains


@PROPERTY
@given(st.text(max_size=300))
def test_domain_accepted_text_is_safe(value: str) -> None:
    """Any text is rejected or comes back as a host name nginx cannot misread."""
    try:
        name = validate_domain(value)
    except InvalidField as error:
        assert error.status == 422
        assert error.details["field"] == "domain"
        return
    assert len(name) <= 253
    assert not NGINX_SPECIAL & set(name)
    assert name == name.lower()
    assert re.fullmatch(r"(\*\.)?[a-z0-9.-]+", name)
    assert ".." not in name


@PROPERTY
@given(valid_domains)
def test_domain_valid_names_accepted(domain: str) -> None:
    """Host names built from RFC 1123 labels are accepted unchanged."""
    assert validate_domain(domain) == domain
    assert validate_domain(domain.upper()) == domain


@pytest.mark.parametrize(
    "value",
    [
        "localhost",
        "*.com",
        "a..b.com",
        "-a.example.com",
        "a-.example.com",
        "example.123",
        "*.*.example.com",
        "a.example.com/../../etc",
        "example.com;include /etc/passwd",
        "example.com{",
        "ex ample.com",
        "example.com\n",
        "a" * 64 + ".com",
        ("a" * 63 + ".") * 4 + "com",
        "exämple.com",
        "",
        None,
        42,
        ["example.com"],
    ],
)
def test_domain_rejects(value: Any) -> None:
    """Malformed host names, injections and wrong types are rejected with 422."""
    with pytest.raises(InvalidField) as caught:
        validate_domain(value)

    assert caught.value.status == 422
    assert caught.value.details["allowed"]


# Service names


@PROPERTY
@given(st.text(max_size=80))
def test_service_accepted_text_is_safe_file_name(value: str) -> None:
    """An accepted service name keeps its nginx file inside the include directory."""
    include_dir = Path("/srv/nginx/sites")
    try:
        name = validate_service_name(value)
    except InvalidField:
        return
    path = include_dir / f"dna-inst-{name}.conf"
    assert os.path.normpath(path).startswith(str(include_dir) + "/")
    assert len(name) <= 63
    assert not NGINX_SPECIAL & set(name)
    assert name[0].isalnum()


@pytest.mark.parametrize("value", ["", ".", "..", "-web", "_web", "a/b", "a b", "web;", "w" * 64, 7, None, ["web"]])
def test_service_rejects(value: Any) -> None:
    """Path parts, separators, overlong names and wrong types are rejected."""
    with pytest.raises(InvalidField):
        validate_service_name(value)


# Images and ports


@pytest.mark.parametrize(
    "value",
    ["busybox", "busybox:1.36", "library/busybox", "127.0.0.1:5000/team/web:v2", "web@sha256:" + "a" * 64],
)
def test_image_accepts(value: str) -> None:
    """Docker references with a registry, a path, a tag or a digest are accepted."""
    assert validate_image(value) == value


@pytest.mark.parametrize(
    "value", ["", "Busybox", "busybox:", "busybox tag", "busybox;rm", "-v", "../x", "x" * 600, 5, None]
)
def test_image_rejects(value: Any) -> None:
    """Upper case paths, spaces, empty tags and wrong types are rejected."""
    with pytest.raises(InvalidField):
        validate_image(value)


@PROPERTY
@given(st.text(max_size=600))
def test_image_accepted_text_has_no_spaces(value: str) -> None:
    """An accepted reference has no whitespace or control characters."""
    try:
        image = validate_image(value)
    except InvalidField:
        return
    assert image.isprintable()
    assert not any(character.isspace() for character in image)


@PROPERTY
@given(json_values | st.text(max_size=8))
def test_port_accepts_only_tcp_ports(value: Any) -> None:
    """Any JSON value is rejected or becomes an int from 1 to 65535."""
    try:
        port = validate_port(value)
    except InvalidField:
        return
    assert type(port) is int
    assert 1 <= port <= 65535


@pytest.mark.parametrize("value", [0, 65536, -1, True, 80.0, "²", "٣", "8" * 5000, "80 ", None])
def test_port_rejects(value: Any) -> None:
    """Out-of-range numbers, booleans, floats and non-ASCII digits are rejected."""
    with pytest.raises(InvalidField):
        validate_port(value)


# Headers and nginx


@PROPERTY
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4))
def test_proxy_headers_accepted_text_is_safe(value: dict[str, str]) -> None:
    """Accepted header values cannot end the directive they are quoted in."""
    try:
        headers = validate_proxy_headers(value)
    except InvalidField:
        return
    for name, header_value in headers.items():
        assert re.fullmatch(r"[A-Za-z0-9-]+", name)
        assert not set("\"'\\;{}$\r\n") & set(header_value)


@pytest.fixture(scope="module")
def nginx_checker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("nginx") is None:
        pytest.skip("needs the nginx binary")
    private = PrivateNginx(tmp_path_factory.mktemp("nginx-check"), listen=f"127.0.0.1:{free_port()}")
    yield Nginx(private.settings)


@pytest.mark.nginx
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(valid_domains | st.text(max_size=60), min_size=1, max_size=3),
    st.dictionaries(header_names | st.text(max_size=10), header_values, max_size=3),
    st.text(max_size=70),
)
def test_accepted_values_pass_nginx_test(
    nginx_checker: Any, domains: list[str], headers: dict[str, str], service: str
) -> None:
    """Whatever the validators accept renders to a file that nginx -t accepts."""
    try:
        service = validate_service_name(service)
        names = sorted({validate_domain(domain) for domain in domains})
        headers = validate_proxy_headers(headers)
    except InvalidField:
        assume(False)
    settings_ = nginx_checker.settings
    blocks = [ServerBlock(domain=name, proxy_headers=headers) for name in names]
    text = render_service("check", service, [8081], blocks, settings_)
    path = settings_.include_dir / "dna-check-service.conf"
    path.write_text(text)

    try:
        nginx_checker.test()
    finally:
        path.unlink()


@pytest.mark.nginx
def test_longest_domain_passes_nginx_test(nginx_checker: Any) -> None:
    """A 253-character name and a long wildcard fit the private nginx's name hash."""
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 56, "test"])
    wildcard = "*." + longest[2:]
    names = [validate_domain(longest), validate_domain(wildcard)]
    assert len(names[0]) == 253
    settings_ = nginx_checker.settings
    path = settings_.include_dir / "dna-check-long.conf"
    path.write_text(render_service("check", "long", [8081], [ServerBlock(name) for name in names], settings_))

    try:
        nginx_checker.test()
    finally:
        path.unlink()


# Run options


def docker_config(options: dict[str, Any]) -> dict[str, Any]:
    """Build the container config exactly as ``containers.create`` does, without a daemon."""
    api = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    arguments = _create_container_args(
        {
            **options,
            "image": "web",
            "name": "dna-check-web",
            "network": "dna-check",
            "ports": {"80/tcp": ("127.0.0.1", 8081)},
            "version": "1.41",
        }
    )
    sent: list[dict[str, Any]] = []
    # Stop where the SDK would send the finished config to the daemon.
    api.create_container_from_config = lambda config, name, platform=None: sent.append(config)  # type: ignore[method-assign]
    api.create_container(**arguments)
    json.dumps(sent[0])
    return sent[0]


TYPE_STRATEGIES = {
    str: st.text(max_size=30),
    int: st.integers(),
    bool: st.booleans(),
    list: st.lists(json_scalars, max_size=4),
    dict: st.dictionaries(st.text(max_size=12), json_values, max_size=4),
}


def typed_values(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    """Values of the accepted JSON types most of the time, so they get past the type check."""
    return st.one_of(*(TYPE_STRATEGIES[kind] for kind in types)) | json_values


run_option_values = st.lists(
    st.sampled_from(sorted(RUN_OPTIONS)).flatmap(
        lambda key: st.tuples(st.just(key), typed_values(RUN_OPTIONS[key][0]))
    ),
    max_size=3,
).map(dict)


@PROPERTY
@given(run_option_values)
def test_run_options_accepted_values_build_config(options: dict[str, Any]) -> None:
    """Allowed keys with any JSON value are rejected or build a Docker config."""
    try:
        accepted = validate_run_options(options, Path("/srv/volumes"))
    except InvalidField as error:
        assert error.status == 422
        return
    config = docker_config(accepted)
    assert config["HostConfig"].get("Privileged") in (None, False)
    assert config["HostConfig"]["NetworkMode"] == "dna-check"


@pytest.mark.parametrize("key", sorted(FORBIDDEN_RUN_OPTIONS))
def test_run_options_forbidden_keys(key: str) -> None:
    """Each forbidden option is rejected with its reason."""
    with pytest.raises(InvalidField) as caught:
        validate_run_options({key: True})

    assert caught.value.details["field"] == f"options.{key}"
    assert FORBIDDEN_RUN_OPTIONS[key] in caught.value.details["allowed"]


@pytest.mark.parametrize(
    "options",
    [
        {"volumes": ["/:/host"]},
        {"volumes": ["/etc:/etc:ro"]},
        {"volumes": ["ROOT/../etc:/data"]},
        {"volumes": {"/var/run/docker.sock": {"bind": "/var/run/docker.sock"}}},
        {"volumes": ["ROOT/escape:/data"]},
        {"volumes": ["data:relative/path"]},
        {"volumes": ["data:/data:z,shared"]},
        {"labels": {"dna.instance": "other"}},
        {"labels": {"dna.service": "other"}},
        {"restart_policy": {"Name": "sometimes"}},
        {"mem_limit": "lots"},
        {"environment": {"A=B": "c"}},
        {"command": ["sh", "-c", "x\x00y"]},
        {"command": "sh -c 'unbalanced"},
        {"entrypoint": '"'},
        {"user": -1},
        {"privileged": False},
        {"cap_drop": ["ALL"]},
        {"unknown": 1},
    ],
)
def test_run_options_rejects(options: dict[str, Any], tmp_path: Path) -> None:
    """Bind mounts outside the root, engine labels and malformed values are rejected."""
    root = tmp_path / "volumes"
    (root / "inside").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    text = json.dumps(options).replace("ROOT", str(root))

    with pytest.raises(InvalidField) as caught:
        validate_run_options(json.loads(text), root)

    assert caught.value.status == 422


def test_run_options_bind_inside_root(tmp_path: Path) -> None:
    """A bind mount of a directory inside the volume root and named volumes are accepted."""
    root = tmp_path / "volumes"
    (root / "data").mkdir(parents=True)
    options = {"volumes": [f"{root}/data:/data:ro", "cache:/cache"], "environment": {"A": "1"}}

    assert validate_run_options(options, root) == options
    assert docker_config(options)["HostConfig"]["Binds"] == [f"{root}/data:/data:ro", "cache:/cache"]


def test_run_options_bind_without_root() -> None:
    """Without a volume root every bind mount is rejected."""
    with pytest.raises(InvalidField) as caught:
        validate_run_options({"volumes": ["/srv/data:/data"]}, None)

    assert "disabled" in caught.value.details["allowed"]


# Build options


@pytest.fixture
def build_root(tmp_path: Path) -> Path:
    root = tmp_path / "builds"
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text("FROM scratch\n")
    (root / "link").symlink_to(tmp_path)
    (tmp_path / "outside").mkdir()
    return root


@pytest.mark.parametrize(
    "options",
    [
        {"path": "../outside"},
        {"path": "/etc"},
        {"path": "link"},
        {"path": "link/outside"},
        {"path": "missing"},
        {"path": ""},
        {"path": "app\x00"},
        {"path": "app", "dockerfile": "../../outside/Dockerfile"},
        {"path": "app", "dockerfile": "/etc/passwd"},
        {"path": "app", "tag": "Bad Tag"},
        {"path": "app", "buildargs": {"A": 1}},
        {"path": "app", "labels": {"dna.instance": "x"}},
        {"path": "app", "timeout": -1},
        {"path": "app", "network_mode": "host"},
        {"path": "app", "container_limits": {"memory": 1}},
        {"tag": "web"},
    ],
)
def test_build_options_rejects(options: dict[str, Any], build_root: Path) -> None:
    """Contexts outside the build root, escaping Dockerfiles, unknown keys and a missing path are rejected."""
    with pytest.raises(HTTPError) as caught:
        validate_build_options(options, build_root)

    assert caught.value.status == (400 if "path" not in options else 422)


def test_build_options_context_inside_root(build_root: Path) -> None:
    """A context inside the root comes back as its real path."""
    options = validate_build_options({"path": "app", "dockerfile": "sub/../Dockerfile", "tag": "web:v1"}, build_root)

    assert options["path"] == os.path.realpath(build_root / "app")


def test_build_options_disabled_without_root() -> None:
    """Without a build root every build is rejected."""
    with pytest.raises(InvalidField) as caught:
        validate_build_options({"path": "app"}, None)

    assert "disabled" in caught.value.details["allowed"]


@PROPERTY
@given(st.dictionaries(st.sampled_from(sorted(BUILD_OPTIONS)), json_values | st.text(max_size=30), max_size=4))
def test_build_options_accepted_context_inside_root(options: dict[str, Any]) -> None:
    """Any accepted option set has its context and Dockerfile inside the build root."""
    root = Path(__file__).resolve().parent
    try:
        accepted = validate_build_options(options, root)
    except HTTPError:
        return
    context = Path(accepted["path"])
    assert context == root or root in context.parents
    if "dockerfile" in accepted:
        dockerfile = Path(os.path.realpath(context / accepted["dockerfile"]))
        assert dockerfile == context or context in dockerfile.parents


@pytest.mark.parametrize("value", ["$nosuchvar", "a$", "$host", 'a"b', "a;b", "a{b", "a}b", "a\\b", "a'b", "\t", "é"])
def test_proxy_headers_rejects_values(value: str) -> None:
    """Variables, quotes, separators, braces, control and non-ASCII characters are rejected."""
    with pytest.raises(InvalidField) as caught:
        validate_proxy_headers({"X-Test": value})

    assert caught.value.details["field"] == "proxy_set_header[X-Test]"


def test_invalid_field_body_names_field_value_allowed() -> None:
    """The 422 body carries the field, the value and what is allowed."""
    with pytest.raises(InvalidField) as caught:
        validate_port(70000)

    body = json.loads(caught.value.to_json_response().body)
    assert body["field"] == "port"
    assert body["value"] == 70000
    assert body["allowed"] == "send an integer from 1 to 65535"
    assert "70000" in body["error"]
