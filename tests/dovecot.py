"""Start and stop a private Dovecot IMAP server for tests, on 127.0.0.1 and a free port.

Each instance has its own configuration, sockets, state, log and mail folders under one
folder, and nothing of the system's Dovecot. Mail of user ``u`` lives under
``root/mail/u`` (Maildir; ``LAYOUT=fs`` when the separator is ``/``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.servers import (
    free_port,
    let_mail_user_traverse,
    mail_owner,
    port_free,
    proc_stat,
    tail,
    wait_greeting,
)

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
STOP_TIMEOUT = 15.0


@dataclass
class Dovecot:
    """A running private Dovecot."""

    host: str
    port: int
    root: Path
    users: dict[str, str]
    master: tuple[str, str] | None = None
    tls_port: int | None = None
    """The implicit-TLS (imaps) port when started with certificates; the plain port then
    offers STARTTLS."""

    @property
    def log(self) -> str:
        """The server's log so far, to explain a failing test."""
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def mail_dir(self, user: str) -> Path:
        return self.root / "mail" / user

    @property
    def running(self) -> bool:
        """Whether this instance's master process is alive."""
        return self._master_pid() is not None

    def stop(self) -> None:
        """Stop the server and wait until its port can be bound again. Safe to call twice.

        The master's children may linger a moment longer; they exit on their own.
        """
        pid = self._master_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._wait_ports_free(pid)
        (self.root / "run" / "master.pid").unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the master and every process it started, as a crash would; return once
        they are all dead and the ports can be bound again. Nothing is flushed or closed by
        Dovecot: the kernel closes its sockets (clients read end of file, or get a reset if
        they had sent bytes not read yet), and mail being written stays as it was on disk.
        Safe to call when not running.

        Only this instance's processes are touched: the master named by its pid file (and
        only if it runs this instance's configuration), frozen first so it forks no more,
        then its children.
        """
        pid = self._master_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while _state(pid) not in ("T", "Z", "") and time.monotonic() < deadline:
            time.sleep(0.001)
        processes = self.processes()
        for process in processes:
            try:
                os.kill(process, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while [p for p in processes if _state(p) not in ("Z", "X", "")]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot (pid {pid}) survived SIGKILL for {STOP_TIMEOUT}s")
            time.sleep(0.001)
        self._wait_ports_free(pid)
        (self.root / "run" / "master.pid").unlink(missing_ok=True)

    def restart(self) -> None:
        """Start this instance again with its configuration, users, mail and ports, after
        ``stop`` or ``kill`` (a running instance is stopped first); return once the plain
        port greets. Raises RuntimeError with the log's end if it does not start, e.g.
        because another program took the port meanwhile."""
        self.stop()
        if not _start(self.root, self.port):
            raise RuntimeError(f"dovecot did not restart on port {self.port}: "
                               + tail(self.root / "startup.log") + tail(self.root / "dovecot.log"))

    def processes(self) -> list[int]:
        """This instance's live processes: its master first, then the master's children;
        empty when not running."""
        pid = self._master_pid()
        return [] if pid is None else [pid, *_children(pid)]

    def _master_pid(self) -> int | None:
        """The pid of this instance's master if it is alive and runs this configuration."""
        pid_file = self.root / "run" / "master.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if (str(self.root / "dovecot.conf").encode() not in command
                or _state(pid) in ("Z", "X", "")):
            return None
        return pid

    def _wait_ports_free(self, pid: int | None) -> None:
        ports = [p for p in (self.port, self.tls_port) if p]
        deadline = time.monotonic() + STOP_TIMEOUT
        while not all(port_free(self.host, port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot (pid {pid}) still listening after {STOP_TIMEOUT}s")
            time.sleep(0.02)


@dataclass(frozen=True)
class AppTokens:
    """XOAUTH2 logins checked as Exchange Online checks an application's token, as far as
    Dovecot 2.3.19 can: a JWT signed by the tenant's key (``public_key_pem``, ``key_id``),
    from ``issuer``, unexpired; then the mailbox asked for must be one the application was
    given access to (``granted``). Password logins stay as they are, for seeding.

    Two of Exchange's checks are not made here, and no test relies on them. The ``roles``
    claim (``IMAP.AccessAsApp``) is a JSON array, which Dovecot 2.3.19's oauth2 passdb
    compares as one string: the build Debian 12 first shipped reads any array as an empty
    string, so a role check there refuses every real token; a later security update accepts
    an array holding only that role and still refuses one holding a second role. ``aud`` is
    compared with ``audience`` only by builds that carry that check (the same update)."""

    public_key_pem: bytes
    key_id: str
    audience: str
    issuer: str
    granted: tuple[str, ...]


def start_dovecot(
    base: Path,
    users: dict[str, str],
    *,
    separator: str = "/",
    capability: str | None = None,
    master: tuple[str, str] | None = None,
    max_mail_size: int | None = None,
    quota_bytes: int | None = None,
    tls: tuple[Path, Path] | None = None,
    app_tokens: AppTokens | None = None,
    acl: bool = False,
    acl_anyone: bool = True,
) -> Dovecot:
    """Start a Dovecot whose files all live in ``base`` (created if missing).

    ``tls`` is (certificate, key) in PEM: the server then also listens for imaps and offers
    STARTTLS on its plain port. ``app_tokens`` adds XOAUTH2 logins with application tokens.

    ``capability`` replaces what IMAP advertises (Dovecot's ``imap_capability``), to
    emulate servers without some extensions. ``master`` adds a master user: logging in
    as ``user*master_login`` with the master password opens ``user``'s mailbox.
    ``max_mail_size`` makes APPEND of bigger messages fail (quota plugin).
    ``quota_bytes`` gives each user that much storage (quota plugin, every folder counted):
    an APPEND that would go beyond it answers ``NO [OVERQUOTA]`` and stores nothing.
    ``acl`` adds the ACL extension (RFC 4314: the acl and imap_acl plugins, each folder's
    ACL in its ``dovecot-acl`` file); ``acl_anyone`` lets SETACL name ``anyone`` and
    ``authenticated`` (Dovecot refuses them otherwise).
    """
    if separator not in ("/", "."):
        raise ValueError(f"separator must be '/' or '.', not {separator!r}")
    root = Path(base)
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    mail_user, mail_group = mail_owner()
    if os.geteuid() == 0:
        let_mail_user_traverse(root, mail_user)
        for sub in ("mail", "home"):
            shutil.chown(root / sub, mail_user, mail_group)
    _write_passwd(root / "users.passwd", users)
    if master is not None:
        _write_passwd(root / "masters.passwd", {master[0]: master[1]})

    last_error = ""
    for _ in range(5):
        port = free_port()
        tls_port = free_port() if tls else None
        config = _config(root, port, separator, capability, master, max_mail_size, quota_bytes,
                         mail_user, mail_group, acl, acl_anyone)
        if tls:
            config = _with_tls(config, tls, tls_port)
        if app_tokens:
            config = _with_app_tokens(config, root, app_tokens)
        (root / "dovecot.conf").write_text(config)
        if _start(root, port):
            return Dovecot("127.0.0.1", port, root, dict(users), master, tls_port)
        last_error = tail(root / "startup.log") + tail(root / "dovecot.log")
        Dovecot("127.0.0.1", port, root, dict(users), master).stop()
    raise RuntimeError(f"dovecot did not start: {last_error}")


def _start(root: Path, port: int) -> bool:
    """Start the daemon configured in ``root``; whether it greets on ``port`` in time."""
    # The daemon inherits our descriptors: a pipe would never reach end of file.
    with open(root / "startup.log", "w") as startup_log:
        started = subprocess.run(
            [DOVECOT, "-c", str(root / "dovecot.conf")],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=startup_log,
            stderr=subprocess.STDOUT,
        )
    return started.returncode == 0 and wait_greeting("127.0.0.1", port)




def _state(pid: int) -> str:
    """The process's state letter (R, S, T for stopped, Z for a zombie), "" if gone."""
    fields = proc_stat(pid)
    return fields[0] if fields else ""


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields[1:2] == [str(pid)] and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def _config(
    root: Path,
    port: int,
    separator: str,
    capability: str | None,
    master: tuple[str, str] | None,
    max_mail_size: int | None,
    quota_bytes: int | None,
    mail_user: str,
    mail_group: str,
    acl: bool = False,
    acl_anyone: bool = True,
) -> str:
    layout = ":LAYOUT=fs" if separator == "/" else ""
    mailboxes = "".join(
        f"  mailbox {name} {{\n    special_use = {use}\n    auto = create\n  }}\n"
        for name, use in SPECIAL_USE.items()
    )
    # fcntl locks make Dovecot panic ("Resource deadlock avoided") when several sessions
    # of one user write at once, as the engine's parallel connections do; flock does not.
    imap_settings = f"  imap_capability = {capability}\n" if capability else ""
    config = f"""\
instance_name = bascule-test-{uuid.uuid4().hex[:12]}
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {root / "dovecot.log"}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
lock_method = flock
mail_uid = {mail_user}
mail_gid = {mail_group}
mail_location = maildir:{root / "mail"}/%u{layout}
namespace inbox {{
  inbox = yes
  separator = {separator}
{mailboxes}}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "users.passwd"}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={root / "home"}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    if master is not None:
        config += f"""\
auth_master_user_separator = *
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root / "masters.passwd"}
  master = yes
  pass = yes
}}
"""
    plugins, imap_plugins, settings = [], [], []
    if max_mail_size is not None or quota_bytes is not None:
        # A storage limit of 0 means none; "B" makes the number bytes, not kibibytes.
        # Without quota_grace = 0, Dovecot lets the message that crosses the limit in if it
        # stays within 10% more.
        plugins.append("quota")
        imap_plugins.append("imap_quota")
        settings += ["  quota = maildir:User quota",
                     f"  quota_rule = *:storage={quota_bytes or 0}B", "  quota_grace = 0"]
        if max_mail_size:
            settings.append(f"  quota_max_mail_size = {max_mail_size}")
    if acl:
        plugins.append("acl")
        imap_plugins.append("imap_acl")
        settings.append("  acl = vfile")
        if acl_anyone:
            settings.append("  acl_anyone = allow")
    if not plugins:
        return config + f"protocol imap {{\n  mail_plugins =\n{imap_settings}}}\n"
    return (
        config
        + f"mail_plugins = {' '.join(plugins)}\n"
        + f"protocol imap {{\n  mail_plugins = $mail_plugins {' '.join(imap_plugins)}\n"
        + f"{imap_settings}}}\n"
        + "plugin {\n" + "".join(f"{line}\n" for line in settings) + "}\n"
    )


def _with_tls(config: str, tls: tuple[Path, Path], tls_port: int | None) -> str:
    certificate, key = tls
    return (
        config.replace("ssl = no\n", f"ssl = yes\nssl_cert = <{certificate}\nssl_key = <{key}\n")
        .replace("  inet_listener imaps {\n    port = 0\n  }",
                 f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {tls_port}\n  }}")
    )


def _with_app_tokens(config: str, root: Path, tokens: AppTokens) -> str:
    # Dovecot's local validation reads the key at /shared/<azp:default>/<alg>/<kid>.
    keys = root / "token-keys"
    (keys / "default" / "RS256").mkdir(parents=True, exist_ok=True)
    (keys / "default" / "RS256" / tokens.key_id).write_bytes(tokens.public_key_pem)
    # An app-only token names no mailbox, and Dovecot compares the user it names with the
    # login: a username_format without variables makes both sides equal, and the grant is
    # the second passdb's list. No active_attribute: see AppTokens for why ``roles`` cannot
    # be one.
    (root / "app-tokens.conf.ext").write_text(f"""\
introspection_mode = local
local_validation_key_dict = fs:posix:prefix={keys}/
client_id = {tokens.audience}
issuers = {tokens.issuer}
username_attribute = sub
username_format = any-mailbox
""")
    (root / "granted.passwd").write_text(
        "".join(f"{mailbox}:::::::nopassword=y\n" for mailbox in tokens.granted))
    (root / "granted.passwd").chmod(0o644)
    token_passdbs = f"""\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root / "app-tokens.conf.ext"}
  result_success = continue-ok
  result_failure = return-fail
  result_internalfail = return-fail
}}
passdb {{
  driver = passwd-file
  mechanisms = xoauth2 oauthbearer
  args = username_format=%u {root / "granted.passwd"}
  result_failure = return-fail
  result_internalfail = return-fail
}}
passdb {{
  mechanisms = plain login
"""
    return (config.replace("auth_mechanisms = plain login\n",
                           "auth_mechanisms = plain login xoauth2 oauthbearer\nauth_verbose = yes\n"
                           # Refusals are what these tests are about: answer them at once,
                           # and do not slow the next logins from the same address down.
                           "auth_failure_delay = 0\nservice anvil {\n  unix_listener "
                           "anvil-auth-penalty {\n    mode = 0\n  }\n}\n")
            .replace("passdb {\n", token_passdbs, 1))






def _write_passwd(path: Path, users: dict[str, str]) -> None:
    path.write_text(
        "".join(f"{login}:{{PLAIN}}{password}::::::\n" for login, password in users.items())
    )
    # Dovecot's auth process runs as its own user and must read it; these are test passwords.
    path.chmod(0o644)







