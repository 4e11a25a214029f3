"""TLS certificates from an ACME server through the certbot command line.

:class:`Certbot` finds a certificate that already covers a domain by reading
the files certbot keeps (``renewal/NAME.conf`` and the PEM files it points
to) with ``cryptography``, and runs ``certbot certonly`` when none does. It
never imports certbot: the command line and the files on disk are the whole
interface.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs
from cryptography import x509

from .errors import CertificateFailed
from .nginx import server_names

__all__ = ["Certbot", "CertificateInfo"]

logger = logging.getLogger(__name__)

#: Accepted values of ``Certbot(on_remove=...)``, see :meth:`Certbot.release`.
REMOVAL_POLICIES = ("keep", "revoke")

# A bare plugin selector such as --dns-cloudflare, as opposed to one of its
# options such as --dns-cloudflare-credentials.
_DNS_PLUGIN_RE = re.compile(r"--dns-[a-z0-9]+")


@attrs.frozen
class CertificateInfo:
    """A certificate lineage that certbot manages."""

    name: str
    names: frozenset[str]
    not_after: datetime.datetime
    fullchain: Path
    privkey: Path


def covers(certificate_names: frozenset[str], name: str, wildcard: bool = True) -> bool:
    """Check whether ``certificate_names`` covers ``name`` exactly or, if allowed, by a one-level wildcard."""
    if name in certificate_names:
        return True
    if not wildcard or name.startswith("*.") or "." not in name:
        return False
    return "*." + name.split(".", 1)[1] in certificate_names


def _renewal_paths(conf: Path, live: Path) -> tuple[Path, Path]:
    """Return the fullchain and private key paths that a renewal file names.

    The renewal file is an INI-like ``key = value`` file; only the two
    top-level path entries are read. Lineages without them fall back to
    certbot's default layout under ``live/NAME/``.
    """
    paths = {"fullchain": live / "fullchain.pem", "privkey": live / "privkey.pem"}
    for line in conf.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            break
        key, sep, value = line.partition("=")
        if sep and key.strip() in paths:
            paths[key.strip()] = Path(value.strip())
    return paths["fullchain"], paths["privkey"]


def read_certificate(conf: Path, config_dir: Path) -> CertificateInfo | None:
    """Read the lineage that ``renewal/NAME.conf`` describes; ``None`` when unreadable."""
    name = conf.name[: -len(".conf")]
    fullchain, privkey = _renewal_paths(conf, config_dir / "live" / name)
    if not privkey.is_file():
        return None
    try:
        leaf = x509.load_pem_x509_certificates(fullchain.read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return None
    names = frozenset(entry.lower() for entry in san.get_values_for_type(x509.DNSName))
    not_after = getattr(leaf, "not_valid_after_utc", None)
    if not_after is None:
        not_after = leaf.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return CertificateInfo(name=name, names=names, not_after=not_after, fullchain=fullchain, privkey=privkey)


class Certbot:
    """Finds or provisions certificates with the certbot command line.

    Reuse comes first: a certificate whose names include the domain (and
    ``www.`` of a two-label domain), else one that covers them by a
    one-level wildcard. Otherwise certbot provisions one: HTTP-01 through
    the nginx webroot, or DNS-01 for ``domain`` plus ``*.domain`` when a
    wildcard is requested.

    :param server: ACME directory URL, passed to every certbot run so that
        certbot never falls back to its default CA.
    :param directory: base directory; certbot's config, work and logs dirs
        default to its ``config``, ``work`` and ``logs`` subdirectories.
    :param email: account contact; ``None`` registers without one.
    :param command: the certbot executable and any leading arguments.
    :param extra_args: arguments added to every ``certonly`` run.
    :param dns_args: arguments added to DNS-01 runs: a DNS plugin and its
        options, or ``--manual-auth-hook`` and ``--manual-cleanup-hook``.
        Without a plugin selector, ``--manual`` is used. The engine's
        ``cb_args`` are appended here.
    :param webroot: directory that nginx serves under
        ``/.well-known/acme-challenge/``; the engine fills it in.
    :param env: environment variables added to certbot's, such as
        ``REQUESTS_CA_BUNDLE`` for an ACME server with a private CA.
    :param timeout: seconds one certbot run may take before it is killed.
    :param on_remove: ``"keep"`` leaves a certificate that no domain uses
        any more on disk, so a later ``add_domain`` can reuse it.
        ``"revoke"`` revokes it at the ACME server and deletes its files.
    :param min_validity: a certificate expiring sooner than this is not
        reused.
    :param retry_delay: seconds to wait after a domain's first failure
        before certbot runs for it again; the delay doubles with every
        further failure, up to ``max_retry_delay``. With the defaults a
        domain gets at most four failed attempts in any hour. Let's Encrypt
        allows 5 failed validations per account, host name and hour
        (https://letsencrypt.org/docs/failed-validation-limit/).
    :param log: logger for certbot's commands and output; the engine
        passes its own.

    NOTE: nothing here renews certificates or reloads nginx afterwards.
    Schedule ``certbot renew`` with the same ``--server`` and directories
    and a ``--deploy-hook`` that reloads nginx. Failure counts for the
    retry delay live in memory, so a restarted process starts afresh.
    """

    def __init__(
        self,
        server: str,
        directory: str | Path,
        *,
        email: str | None = None,
        command: Sequence[str] = ("certbot",),
        config_dir: str | Path | None = None,
        work_dir: str | Path | None = None,
        logs_dir: str | Path | None = None,
        extra_args: Sequence[str] = (),
        dns_args: Sequence[str] = (),
        webroot: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        on_remove: str = "keep",
        min_validity: datetime.timedelta = datetime.timedelta(days=7),
        retry_delay: float = 300.0,
        max_retry_delay: float = 3600.0,
        log: logging.Logger | None = None,
    ) -> None:
        if not server.startswith("https://"):
            raise ValueError(f"Certbot(server={server!r}): send the https:// URL of an ACME directory")
        if on_remove not in REMOVAL_POLICIES:
            raise ValueError(f"Certbot(on_remove={on_remove!r}): send one of {', '.join(REMOVAL_POLICIES)}")
        if isinstance(command, str):
            command = shlex.split(command)
        base = Path(directory).resolve()
        self.server = server
        self.email = email
        self.command = tuple(command)
        self.config_dir = Path(config_dir or base / "config").resolve()
        self.work_dir = Path(work_dir or base / "work").resolve()
        self.logs_dir = Path(logs_dir or base / "logs").resolve()
        self.extra_args = tuple(extra_args)
        self.dns_args = tuple(dns_args)
        self.webroot = Path(webroot).resolve() if webroot else None
        self.env = dict(env or {})
        self.timeout = timeout
        self.on_remove = on_remove
        self.min_validity = min_validity
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.log = log or logger
        # certbot takes a lock on its directories, so runs are serialised here
        # instead of failing with "another instance is already running".
        self._run_lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}

    def attach(self, log: logging.Logger, cb_args: Sequence[str], webroot: Path | None) -> None:
        """Take the engine's logger, its ``cb_args`` and its nginx webroot."""
        self.log = log
        self.dns_args = self.dns_args + tuple(arg for arg in cb_args if arg not in self.dns_args)
        if self.webroot is None and webroot is not None:
            self.webroot = webroot

    # Reading certbot's files

    def certificates(self) -> list[CertificateInfo]:
        """Return every lineage under ``renewal/`` whose files can be read."""
        renewal = self.config_dir / "renewal"
        if not renewal.is_dir():
            return []
        found = []
        for conf in sorted(renewal.glob("*.conf")):
            info = read_certificate(conf, self.config_dir)
            if info is None:
                self.log.warning("certificate %s: cannot read its files, skipping it", conf.stem)
            else:
                found.append(info)
        return found

    def files(self, name: str) -> tuple[Path, Path] | None:
        """Return the fullchain and private key files of lineage ``name``, if both exist."""
        conf = self.config_dir / "renewal" / f"{name}.conf"
        if "/" in name or not conf.is_file():
            return None
        fullchain, privkey = _renewal_paths(conf, self.config_dir / "live" / name)
        if fullchain.is_file() and privkey.is_file():
            return fullchain, privkey
        return None

    def find(self, domain: str, wildcard: bool = False) -> CertificateInfo | None:
        """Return the longest-lived valid certificate that covers ``domain``.

        With ``wildcard``, the certificate must name ``domain`` and
        ``*.domain``. Otherwise an exact match of every name the domain
        serves wins over a one-level wildcard match.
        """
        deadline = datetime.datetime.now(datetime.timezone.utc) + self.min_validity
        valid = [info for info in self.certificates() if info.not_after > deadline]
        if wildcard:
            required = [domain, f"*.{domain}"]
            passes = [False]
        else:
            required = server_names(domain)
            passes = [False, True]
        for allow_wildcard in passes:
            matches = [info for info in valid if all(covers(info.names, n, allow_wildcard) for n in required)]
            if matches:
                return max(matches, key=lambda info: info.not_after)
        return None

    # Provisioning

    def ensure(self, domain: str, force_wildcard: bool = False, force_provision: bool = False) -> str:
        """Return the name of a certificate covering ``domain``, provisioning one if needed.

        :param force_wildcard: require a certificate for ``domain`` and
            ``*.domain``, provisioned over DNS-01 when none exists.
        :param force_provision: skip reuse and always ask the ACME server.
        :raises CertificateFailed: when certbot fails or times out, or when
            the domain is still backing off from an earlier failure.
        """
        if domain.startswith("*."):
            # Only DNS-01 can prove control of a wildcard name, and the
            # certificate for ``*.base`` also names ``base``.
            domain, force_wildcard = domain[2:], True
        if not force_provision:
            existing = self.find(domain, wildcard=force_wildcard)
            if existing is not None:
                self.log.info("certificate %s covers %s: reusing it", existing.name, domain)
                return existing.name
        self._check_backoff(domain)
        if force_wildcard:
            name, arguments = self._dns01_arguments(domain)
        else:
            name, arguments = self._http01_arguments(domain)
        try:
            self._certbot(["certonly", *arguments, "--cert-name", name, "--force-renewal", *self.extra_args])
        except CertificateFailed:
            self._record_failure(domain)
            raise
        self._failures.pop(domain, None)
        if self.files(name) is None:
            self._record_failure(domain)
            raise CertificateFailed(f"certbot reported success for {domain} but wrote no files for {name!r}.")
        return name

    def _http01_arguments(self, domain: str) -> tuple[str, list[str]]:
        if self.webroot is None:
            raise CertificateFailed(
                f"Cannot provision {domain} over HTTP-01: no webroot is set. Give Certbot(webroot=...) "
                "or an nginx that serves /.well-known/acme-challenge/."
            )
        arguments = ["--webroot", "-w", str(self.webroot)]
        for name in server_names(domain):
            arguments += ["-d", name]
        return domain, arguments

    def _dns01_arguments(self, domain: str) -> tuple[str, list[str]]:
        if not self.dns_args:
            raise CertificateFailed(
                f"Cannot provision *.{domain}: a wildcard needs DNS-01 validation. Give cb_args with a "
                "certbot DNS plugin or --manual-auth-hook and --manual-cleanup-hook."
            )
        selects_plugin = any(
            arg in ("--manual", "-a", "--authenticator")
            or arg.startswith("--authenticator=")
            or _DNS_PLUGIN_RE.fullmatch(arg)
            for arg in self.dns_args
        )
        arguments = [] if selects_plugin else ["--manual"]
        arguments += ["--preferred-challenges", "dns", *self.dns_args, "-d", domain, "-d", f"*.{domain}"]
        # A separate lineage name keeps the wildcard from replacing an
        # HTTP-01 certificate of the same domain.
        return f"wildcard.{domain}", arguments

    def _check_backoff(self, domain: str) -> None:
        if domain not in self._failures:
            return
        count, last = self._failures[domain]
        delay = min(self.retry_delay * 2 ** (count - 1), self.max_retry_delay)
        wait = last + delay - time.time()
        if wait > 0:
            self.log.warning(
                "certificate for %s: skipping certbot, %d failed attempts, next attempt in %.0f s",
                domain, count, wait,
            )
            raise CertificateFailed(
                f"Certificate for {domain} not requested: the last {count} attempts failed (see the engine's"
                f" log); the next attempt is allowed in {wait:.0f} s."
            )

    def _record_failure(self, domain: str) -> None:
        count = self._failures.get(domain, (0, 0.0))[0] + 1
        self._failures[domain] = (count, time.time())

    # Removal

    def release(self, name: str) -> None:
        """Keep or revoke certificate ``name``, which no domain uses any more.

        A failed revocation is logged and not raised: the domain is gone
        already, and the certificate expires on its own.
        """
        if self.on_remove == "keep":
            self.log.info("certificate %s is no longer used: keeping it for reuse", name)
            return
        if self.files(name) is None:
            return
        self.log.info("certificate %s is no longer used: revoking it", name)
        try:
            self._certbot(["revoke", "--cert-name", name, "--delete-after-revoke"])
        except CertificateFailed as error:
            self.log.error("revoking certificate %s failed: %s", name, error)

    # Running certbot

    def _certbot(self, arguments: list[str]) -> None:
        """Run certbot with the common arguments; log its output.

        :raises CertificateFailed: when certbot exits non-zero, cannot start
            or runs longer than ``timeout``.
        """
        common = [
            "--server", self.server,
            "--config-dir", str(self.config_dir),
            "--work-dir", str(self.work_dir),
            "--logs-dir", str(self.logs_dir),
            "--non-interactive",
            "--agree-tos",
        ]
        common += ["-m", self.email] if self.email else ["--register-unsafely-without-email"]
        command = [*self.command, *arguments, *common]
        with self._run_lock:
            self.log.info("running %s", shlex.join(command))
            output, code = self._run(command)
        for line in output.splitlines():
            self.log.info("certbot: %s", line)
        if code is None:
            self.log.error("certbot %s timed out after %g s", arguments[0], self.timeout)
            raise CertificateFailed(f"certbot {arguments[0]} timed out after {self.timeout:g} s.")
        if code != 0:
            self.log.error("certbot %s exited %d", arguments[0], code)
            detail = _last_error(output)
            raise CertificateFailed(f"certbot {arguments[0]} exited {code}: {detail}")

    def _run(self, command: list[str]) -> tuple[str, int | None]:
        """Run ``command``; return its output and exit code, ``None`` after a timeout."""
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                text=True,
                start_new_session=True,
            )
        except OSError as error:
            raise CertificateFailed(f"certbot could not run ({shlex.join(command[:1])}): {error}") from None
        try:
            output, _ = process.communicate(timeout=self.timeout)
            return output, process.returncode
        except subprocess.TimeoutExpired:
            # Kill the whole session: certbot's auth hooks run as its children.
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            return output, None


def _last_error(output: str) -> str:
    """Return the most telling lines of certbot's output for an error message."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith(("Certbot failed", "Detail:", "An unexpected error", "Error")):
            return " ".join(lines[index : index + 4])[:600]
    return " ".join(lines[-3:])[:600] or "no output"
