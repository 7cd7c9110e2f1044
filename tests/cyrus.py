"""Start and stop a private Cyrus IMAP with CalDAV and CardDAV for tests, on 127.0.0.1.

Cyrus comes from Debian's packages (``cyrus-common``, ``cyrus-imapd``, ``cyrus-caldav``),
unpacked by tests/run.sh into ``CYRUS_TREE`` and run from there with ``LD_LIBRARY_PATH``:
installed, they would conflict with Dovecot's. Each instance has its configuration,
databases, mail, sockets and log under one folder, and two ports: ``httpd`` serving
CalDAV and CardDAV over plain HTTP, and ``imapd``, through which the admin creates each
user's INBOX (without it, a DAV home answers 500). Any password is accepted
(``sasl_pwcheck_method: alwaystrue``): these are test servers.

Scheduling mail (iMIP) goes to the ``sendmail`` program of imapd.conf, run as
``sendmail -bs``; here that program answers SMTP on its standard input and output and
writes each message it is given into the instance's capture folder, so that a test can
count the invitations a CalDAV write sent. ``caldav_historical_age: -1`` makes past events
schedule too, or a test of old events would pass for the wrong reason.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from tests.servers import (
    START_TIMEOUT,
    free_port,
    let_mail_user_traverse,
    mail_owner,
    port_free,
    proc_stat,
    tail,
    wait_greeting,
)


def _cyrus_tree() -> Path:
    """Where tests/run.sh unpacks Cyrus; it must compute the same folder.

    As root, Cyrus runs as ``nobody``, which cannot enter root's home: the tree is then in
    the system's cache folder. Otherwise it is in the user's cache folder."""
    if os.geteuid() == 0:
        return Path("/var/cache/bascule/cyrus-imapd")
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "bascule" / "cyrus-imapd"


CYRUS_TREE = _cyrus_tree()
PROGRAMS = CYRUS_TREE / "usr" / "lib" / "cyrus" / "bin"
ADMIN = ("admin", "admin-pw")
STOP_TIMEOUT = 15.0

# ``sendmail -bs`` for Cyrus: SMTP on standard input and output. Each message is written to
# a hidden file, then renamed, so that a reader never sees half a message; its envelope is
# kept as the first header lines, as a delivering MTA would. Bash, not Python: Cyrus runs
# it as its unprivileged user, who may not reach the tests' interpreter.
CAPTURE_PROGRAM = r"""#!/bin/bash
folder=@FOLDER@
count=0
sender=""
recipients=()
reply() { printf '%s\r\n' "$1"; }
reply "220 localhost capture ready"
while IFS= read -r line; do
    line=${line%$'\r'}
    case "${line^^}" in
    EHLO* | HELO*) reply "250 localhost" ;;
    "MAIL FROM:"*)
        sender=${line#*:}
        sender="${sender%%>*}>"
        recipients=()
        reply "250 sender ok" ;;
    "RCPT TO:"*)
        recipient=${line#*:}
        recipients+=("${recipient%%>*}>")
        reply "250 recipient ok" ;;
    DATA)
        reply "354 end with a dot"
        count=$((count + 1))
        part="$folder/.$$-$count"
        {
            printf 'Return-Path: %s\r\n' "$sender"
            for recipient in "${recipients[@]}"; do printf 'Envelope-To: %s\r\n' "$recipient"; done
            while IFS= read -r data; do
                data=${data%$'\r'}
                [ "$data" = . ] && break
                [ "${data:0:1}" = . ] && data=${data:1}
                printf '%s\r\n' "$data"
            done
        } >"$part"
        mv "$part" "$folder/$(date +%s%N)-$$-$count.eml"
        reply "250 captured" ;;
    RSET) sender=""; recipients=(); reply "250 reset" ;;
    QUIT) reply "221 bye"; exit 0 ;;
    *) reply "250 ok" ;;
    esac
done
"""


class CyrusMissing(RuntimeError):
    """Cyrus is not unpacked where the tests look for it (tests/run.sh unpacks it)."""


@dataclass
class Cyrus:
    """A running private Cyrus. ``users`` maps each login (``name@domain``, whose INBOX
    exists) to a password; every password is accepted."""

    host: str
    http_port: int
    imap_port: int
    root: Path
    users: dict[str, str]
    master: subprocess.Popen[bytes] = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def calendar_url(self, user: str, calendar: str = "Default") -> str:
        """A calendar collection of ``user``; ``Default`` is created on first use."""
        return f"{self.base_url}/dav/calendars/user/{user}/{calendar}/"

    def addressbook_url(self, user: str, addressbook: str = "Default") -> str:
        """An address book of ``user``; ``Default`` is created on first use."""
        return f"{self.base_url}/dav/addressbooks/user/{user}/{addressbook}/"

    @property
    def capture_folder(self) -> Path:
        """Where each message Cyrus sends (iMIP invitations, replies, cancellations) is
        written, one ``.eml`` file per message, its envelope first as ``Return-Path`` and
        ``Envelope-To`` headers."""
        return self.root / "capture"

    def captured(self) -> list[EmailMessage]:
        """The messages Cyrus has sent so far, oldest first."""
        return [
            email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            for path in sorted(self.capture_folder.glob("*.eml"))
        ]

    @property
    def log(self) -> str:
        """What the master and its services printed, to explain a failing test (Cyrus
        logs the rest to syslog)."""
        path = self.root / "log" / "master.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def running(self) -> bool:
        return self.master.poll() is None

    def processes(self) -> list[int]:
        """This instance's live processes: the master first, then every process it started
        and theirs (``httpd``, ``imapd``, the capture program); empty once stopped.

        The master leads a session of its own, which its descendants stay in even once
        orphaned; no new process can take the session's id while one of them lives. Once
        the master is reaped and they are all gone, a process of that pid is someone
        else's, and so is its session."""
        if self.master.returncode is not None and Path(f"/proc/{self.master.pid}").exists():
            return []
        session = str(self.master.pid)
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = proc_stat(int(entry.name))
                if fields[3:4] == [session] and fields[0] not in ("Z", "X"):
                    found.append(int(entry.name))
        return sorted(found, key=lambda pid: pid != self.master.pid)

    def create_inbox(self, user: str) -> None:
        """Create ``user``'s INBOX as the admin, over IMAP: Cyrus keeps a user's DAV
        collections under it."""
        with imaplib.IMAP4(self.host, self.imap_port) as imap:
            imap.login(*ADMIN)
            status, answer = imap.create(f"user/{user}")
            if status != "OK":
                raise RuntimeError(f"cyrus did not create the INBOX of {user}: {answer!r}")

    def stop(self) -> None:
        """Stop the master, which stops its services; return once every process of this
        instance has ended and its ports can be bound again. Safe to call twice.

        Only this instance's processes are signalled, by pid: the master (SIGTERM, then
        SIGKILL after ``STOP_TIMEOUT`` seconds), then any of its descendants still alive
        ``STOP_TIMEOUT`` seconds later (SIGKILL)."""
        if self.master.poll() is None:
            self.master.terminate()
            try:
                self.master.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.master.kill()
                self.master.wait()
        deadline = time.monotonic() + STOP_TIMEOUT
        while remaining := self.processes():
            if time.monotonic() > deadline + STOP_TIMEOUT:
                raise RuntimeError(f"cyrus processes {remaining} survived SIGKILL")
            if time.monotonic() > deadline:
                for pid in remaining:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.02)
        while not all(port_free(self.host, port) for port in (self.http_port, self.imap_port)):
            if time.monotonic() > deadline + STOP_TIMEOUT:
                raise RuntimeError(f"cyrus (pid {self.master.pid}) left its ports taken")
            time.sleep(0.02)


def start_cyrus(base: Path, users: dict[str, str]) -> Cyrus:
    """Start a Cyrus whose files all live in ``base`` (created if missing) and create the
    INBOX of each of ``users`` (logins ``name@domain``). Raises CyrusMissing when Cyrus is
    not unpacked, RuntimeError with the log's end when it does not start."""
    if not (PROGRAMS / "master").exists():
        raise CyrusMissing(f"Cyrus is not unpacked in {CYRUS_TREE}: run tests/run.sh")
    root = Path(base)
    owner, group = mail_owner()
    folders = ("config", "config/socket", "spool", "sieve", "tmp", "capture", "log", "run")
    for sub in folders:
        (root / sub).mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        let_mail_user_traverse(root, owner)
        for sub in folders:
            shutil.chown(root / sub, owner, group)
    sendmail = root / "sendmail"
    sendmail.write_text(CAPTURE_PROGRAM.replace("@FOLDER@", shlex.quote(str(root / "capture"))))
    sendmail.chmod(0o755)

    last_error = ""
    for _ in range(5):
        http_port, imap_port = free_port(), free_port()
        if http_port == imap_port:
            continue
        (root / "imapd.conf").write_text(_imapd_conf(root, owner, group))
        (root / "cyrus.conf").write_text(_cyrus_conf(root, http_port, imap_port))
        server = Cyrus("127.0.0.1", http_port, imap_port, root, dict(users), _start_master(root))
        if wait_greeting("127.0.0.1", imap_port) and _wait_listening("127.0.0.1", http_port):
            try:
                for user in users:
                    server.create_inbox(user)
            except BaseException:
                server.stop()
                raise
            return server
        last_error = tail(root / "log" / "master.log")
        server.stop()
    raise RuntimeError(f"cyrus did not start: {last_error}")


def _start_master(root: Path) -> subprocess.Popen[bytes]:
    """The master in the foreground (``-D``: its output and its services' go to the log),
    leading a session of its own so that ``Cyrus.processes`` finds every descendant."""
    libraries = [str(folder.parent) for folder in CYRUS_TREE.glob("usr/lib/*/libcyrus.so.0")]
    environment = dict(os.environ)
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(
        [*libraries, *filter(None, [environment.get("LD_LIBRARY_PATH")])])
    with open(root / "log" / "master.log", "ab") as log:
        return subprocess.Popen(
            [str(PROGRAMS / "master"), "-C", str(root / "imapd.conf"),
             "-M", str(root / "cyrus.conf"), "-p", str(root / "run" / "master.pid"), "-D"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )


def _imapd_conf(root: Path, owner: str, group: str) -> str:
    return f"""\
configdirectory: {root / "config"}
partition-default: {root / "spool"}
defaultpartition: default
sievedir: {root / "sieve"}
temp_path: {root / "tmp"}
cyrus_user: {owner}
cyrus_group: {group}
syslog_prefix: bascule-cyrus-{uuid.uuid4().hex[:12]}
servername: localhost
admins: {ADMIN[0]}
virtdomains: userid
allowplaintext: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN
httpmodules: caldav carddav
caldav_historical_age: -1
sendmail: {root / "sendmail"}
"""


def _cyrus_conf(root: Path, http_port: int, imap_port: int) -> str:
    # The master does not hand its -C on to the programs it starts.
    config = f"-C {root / 'imapd.conf'}"
    return f"""\
START {{
  recover cmd="{PROGRAMS / 'ctl_cyrusdb'} {config} -r"
}}
SERVICES {{
  imap cmd="{PROGRAMS / 'imapd'} {config}" listen="127.0.0.1:{imap_port}" prefork=0
  http cmd="{PROGRAMS / 'httpd'} {config}" listen="127.0.0.1:{http_port}" prefork=0
}}
EVENTS {{
}}
"""


def _wait_listening(host: str, port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except OSError:
            time.sleep(0.05)
    return False

