"""The ``dna`` command: run the platform, manage API keys."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .keys import KeyManager
from .store import Store

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dna", description="docker-dna: a deploy platform on Docker and nginx.")
    parser.add_argument("--state-dir", default=".dna", help="directory of the database and logs (default: ./.dna)")
    parser.add_argument("--name", default="dna", help="instance name that prefixes containers and files (default: dna)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the logs pages and the deploy API in a Flask app")
    serve.add_argument("--host", default="127.0.0.1", help="address the web app listens on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port the web app listens on (default: 8000)")
    serve.add_argument(
        "--nginx-listen", default="127.0.0.1:8080",
        help="address:port of the private nginx that serves deployed domains (default: 127.0.0.1:8080)",
    )
    serve.add_argument(
        "--nginx-include-dir", type=Path,
        help="use the system nginx instead: directory its nginx.conf includes inside 'http'",
    )
    serve.add_argument("--nginx-log-dir", type=Path, help="with --nginx-include-dir: directory for service logs")
    serve.add_argument("--nginx-reload-command", default="nginx -s reload", help="with --nginx-include-dir")
    serve.add_argument("--nginx-test-command", default="nginx -t", help="with --nginx-include-dir")
    serve.add_argument("--build-root", type=Path, help="directory build contexts must lie in (default: STATE_DIR/builds)")
    serve.add_argument("--default-domain", help="domain nginx serves for unknown host names")
    serve.add_argument(
        "--key-pages-from", action="append", metavar="CIDR",
        help="network allowed to open the key pages; repeat for more (default: 127.0.0.0/8 and ::1)",
    )
    serve.add_argument("--key-lifetime", type=float, default=3600, help="seconds an API key stays valid (default: 3600)")
    tls = serve.add_argument_group("TLS", "domains stay on plain HTTP unless --acme-server is given")
    tls.add_argument("--acme-server", metavar="URL", help="ACME directory URL that certbot requests certificates from")
    tls.add_argument(
        "--https-listen", default="127.0.0.1:8443",
        help="address:port that the TLS server blocks listen on (default: 127.0.0.1:8443)",
    )
    tls.add_argument("--certbot-dir", type=Path, help="certbot's config, work and logs dirs (default: STATE_DIR/certbot)")
    tls.add_argument("--certbot-command", default="certbot", help="the certbot executable (default: certbot)")
    tls.add_argument("--certbot-email", help="ACME account contact (default: register without one)")
    tls.add_argument(
        "--certbot-arg", action="append", default=[], metavar="ARG",
        help="extra certbot argument for wildcard (DNS-01) runs, such as --certbot-arg=--dns-cloudflare; repeat for more",
    )
    tls.add_argument(
        "--on-remove", choices=("keep", "revoke"), default="keep",
        help="keep or revoke a certificate that no domain uses any more (default: keep)",
    )

    _add_instance_options(serve)

    keys = commands.add_parser("keys", help="create, list or revoke API keys")
    key_commands = keys.add_subparsers(dest="key_command", required=True)
    new = key_commands.add_parser("new", help="create a key and print it")
    new.add_argument("--ip", required=True, help="client address the key is bound to")
    new.add_argument("--lifetime", type=float, default=3600, help="seconds the key stays valid (default: 3600)")
    listing = key_commands.add_parser("list", help="list the active keys")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for command in (new, listing, revoke):
        _add_instance_options(command)
    return parser


def _add_instance_options(parser: argparse.ArgumentParser) -> None:
    # Accepted after the command too (`dna serve --state-dir X`), where they
    # override the same options given before it.
    parser.add_argument("--state-dir", default=argparse.SUPPRESS, help="as for dna --state-dir")
    parser.add_argument("--name", default=argparse.SUPPRESS, help="as for dna --name")


def _keys(args: argparse.Namespace) -> int:
    store = Store(Path(args.state_dir) / f"{args.name}.sqlite3")
    if args.key_command == "new":
        try:
            created = KeyManager(store, lifetime=args.lifetime).create(args.ip)
        except ValueError as error:
            print(f"dna keys new: {error}", file=sys.stderr)
            return 2
        print(created.key)
        return 0
    if args.key_command == "list":
        for record in store.active_keys():
            expires = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.expires_at))
            print(f"{record.key_id}  {record.ip}  expires {expires} UTC")
        return 0
    if not store.revoke_key(args.key_id):
        print(f"dna keys revoke: no active key has the id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked key {args.key_id}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    # Imported here so that the core package itself imports no web framework.
    import flask
    from werkzeug.serving import run_simple

    import dna_flask

    from .certificates import Certbot
    from .engine import DNA
    from .errors import EngineError
    from .nginx import NginxSettings, PrivateNginx
    from .precheck import allow_from

    state_dir = Path(args.state_dir).resolve()
    build_root = args.build_root or state_dir / "builds"
    build_root.mkdir(parents=True, exist_ok=True)
    certificates = None
    if args.acme_server:
        try:
            certificates = Certbot(
                args.acme_server,
                args.certbot_dir or state_dir / "certbot",
                email=args.certbot_email,
                command=shlex.split(args.certbot_command),
                on_remove=args.on_remove,
            )
        except ValueError as error:
            print(f"dna serve: {error}", file=sys.stderr)
            return 2

    private = None
    https_listen = args.https_listen if args.acme_server else None
    nginx: PrivateNginx | NginxSettings
    if args.nginx_include_dir:
        nginx = NginxSettings(
            include_dir=args.nginx_include_dir,
            log_dir=args.nginx_log_dir or state_dir / "nginx-logs",
            test_command=tuple(shlex.split(args.nginx_test_command)),
            reload_command=tuple(shlex.split(args.nginx_reload_command)),
            https_listen=https_listen,
        )
    else:
        private = nginx = PrivateNginx(state_dir / "nginx", listen=args.nginx_listen, https_listen=https_listen)
        private.start()
        logger.info("private nginx serves deployed domains on %s", args.nginx_listen)

    dna = DNA(
        args.name,
        default=args.default_domain,
        cb_args=args.certbot_arg,
        state_dir=state_dir,
        nginx=nginx,
        build_root=build_root,
        certificates=certificates,
    )
    try:
        dna.propagate_services()
    except EngineError as error:
        logger.warning("could not reconcile services at start: %s", error)

    app = flask.Flask("dna")
    key_pages = allow_from(*(args.key_pages_from or ["127.0.0.0/8", "::1"]))
    app.register_blueprint(dna_flask.create_logs_client(dna), url_prefix="/logs")
    app.register_blueprint(
        dna_flask.create_api_client(dna, precheck=key_pages, key_lifetime=args.key_lifetime), url_prefix="/api"
    )
    app.add_url_rule("/", "home", lambda: flask.redirect("/logs/"))
    dna.log.info(
        "serving the logs pages on http://%s:%d/logs/ and the API on http://%s:%d/api/",
        args.host, args.port, args.host, args.port,
    )
    # SIGTERM (plain `kill`) stops the server like Ctrl+C, so the private nginx stops too.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        run_simple(args.host, args.port, app, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        dna.log.info("stopping the web app")
        if private is not None:
            private.stop()
            dna.log.info("stopped the private nginx")
    return 0


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dna`` command with ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "keys":
        return _keys(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
