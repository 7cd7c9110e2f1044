"""What the tests' private servers (tests/dovecot.py, tests/cyrus.py, tests/radicale.py,
tests/xandikos.py, tests/sabredav.py) share: free ports on 127.0.0.1, the wait for a
greeting, the unprivileged user their mail belongs to when the tests run as root, what
``/proc`` says of a process, and the start and stop of an HTTP server's process."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

START_TIMEOUT = 15.0
"""How long a server may take to greet its first client."""


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (state, parent, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def mail_owner() -> tuple[str, str]:
    """Who owns the mail of a test server: the current user, or nobody when the tests run
    as root (Dovecot and Cyrus will not keep mail as root)."""
    if os.geteuid() == 0:
        return "nobody", "nogroup"
    user = pwd.getpwuid(os.geteuid())
    return user.pw_name, grp.getgrgid(user.pw_gid).gr_name


def let_mail_user_traverse(root: Path, mail_user: str) -> None:
    """pytest's temporary folders are private to root; the mail user must reach its folder.

    Only the search bit is added, and only on folders inside the system's temporary folder.
    """
    temp = Path(tempfile.gettempdir()).resolve()
    folder = root.resolve()
    while folder != temp and temp in folder.parents:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod((mode & 0o7777) | 0o001)
        folder = folder.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Whether a new server could listen there (Dovecot binds with SO_REUSEADDR too).

    Binding, not connecting: a connection would start a login process and slow the shutdown.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def wait_greeting(host: str, port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                if conn.recv(1024).startswith(b"* OK"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


STOP_TIMEOUT = 15.0
"""How long a server may take to stop, then to free its port."""


@dataclass
class HttpServer:
    """A private HTTP server of the tests (Radicale, Xandikos, SabreDAV): one process, one
    port on 127.0.0.1, one folder, its users (login: password)."""

    host: str
    port: int
    root: Path
    users: dict[str, str]
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and wait until its port is free. Safe to
        call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + STOP_TIMEOUT
        while not port_free(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} (pid {self.process.pid}) left its "
                                   "port taken")
            time.sleep(0.02)

    def listening(self) -> bool:
        """Whether it accepts connections before ``START_TIMEOUT``; ``False`` as soon as
        its process ends."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=2):
                    return True
            except OSError:
                time.sleep(0.05)
        return False


def dav_members(request: Callable[..., Any], path: str) -> list[tuple[str, set[str], str]]:
    """(path, resource types, display name) of what a DAV collection holds, read by an
    independent reader: one PROPFIND through ``request(method, path, **options)`` (a
    requests call with the reader's own credentials)."""
    answer = request("PROPFIND", path, headers={
        "Depth": "1", "Content-Type": "application/xml"}, data=(
        b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/>'
        b"<displayname/></prop></propfind>"))
    assert answer.status_code == 207, (answer.status_code, answer.text)
    found = []
    for response in ElementTree.fromstring(answer.content).iter("{DAV:}response"):
        href = urllib.parse.unquote(response.findtext("{DAV:}href") or "")
        kinds = {child.tag for child in response.iter("{DAV:}resourcetype") for child in child}
        found.append((href, kinds, response.findtext(".//{DAV:}displayname") or ""))
    return [member for member in found if member[0].rstrip("/") != path.rstrip("/")]
