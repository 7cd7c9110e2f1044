"""Start and stop a private Xandikos (CalDAV and CardDAV, from PyPI) for tests, on 127.0.0.1.

Each instance runs ``tests/xandikos_server.py`` in a process of its own: several users, each
behind HTTP Basic (SHA-1 htpasswd lines: a test server), their collections in one folder,
and the scheduling mail Xandikos sends (iMIP, RFC 6047) written by a capture program into
the instance's ``capture`` folder, one file a message.

What Xandikos 0.4 does, as these tests find it:
- it schedules (RFC 6638) for a user whose principal has a ``calendar-user-address-set``:
  an event that user organises is mailed to every attendee, users of the same server
  among them (tests/test_scheduling.py);
- it ignores ``SCHEDULE-AGENT=CLIENT``: with it on the ORGANIZER and every ATTENDEE it
  still mails them;
- a user without a ``calendar-user-address-set`` schedules nothing; the fixture gives each
  user one, as a deployment would.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import requests

from tests.servers import HttpServer, free_port, tail

DOMAIN = "xandikos.test"
CAPTURE_PROGRAM = """#!/bin/sh
# sendmail -t -i for tests: the message on standard input is kept, nothing is sent.
exec cat > "@FOLDER@/$(date +%s%N)-$$.eml"
"""
PROPPATCH_ADDRESS = """<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>
<C:calendar-user-address-set><D:href>mailto:{address}</D:href></C:calendar-user-address-set>
</D:prop></D:set></D:propertyupdate>"""


@dataclass
class Xandikos(HttpServer):
    @property
    def capture_folder(self) -> Path:
        return self.root / "capture"

    @property
    def log(self) -> str:
        return tail(self.root / "xandikos.log", 40)

    def address(self, login: str) -> str:
        """The calendar user address the fixture gives ``login``: the login when it is an
        address, else the login at the test domain."""
        return login if "@" in login else f"{login}@{DOMAIN}"

    def captured(self) -> list[EmailMessage]:
        """Every message Xandikos handed to its sendmail, oldest first."""
        return [message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[misc]
                for path in sorted(self.capture_folder.glob("*.eml"))]

    def add_user(self, login: str, password: str) -> None:
        """A new account with its principal and its calendar user address (Xandikos makes
        the principal at the user's first request)."""
        self.users[login] = password
        _write_users(self.root, self.users)
        session = requests.Session()
        session.trust_env = False
        session.auth = (login, password)
        principal = f"{self.base_url}/{login}/"
        answer = session.request("PROPFIND", principal, headers={"Depth": "0"})
        if answer.status_code != 207:
            raise RuntimeError(f"xandikos: no principal for {login}: {answer.status_code}")
        answer = session.request(
            "PROPPATCH", principal, headers={"Content-Type": "application/xml"},
            data=PROPPATCH_ADDRESS.format(address=self.address(login)).encode())
        if answer.status_code != 207 or " 200 " not in answer.text:
            raise RuntimeError(f"xandikos: address of {login} refused: {answer.text[:300]}")


def start_xandikos(base: Path, users: dict[str, str]) -> Xandikos:
    """Start a Xandikos whose files all live in ``base`` (created if missing), for ``users``
    (login: password). Raises RuntimeError with the log's end when it does not start."""
    root = Path(base)
    for folder in ("storage", "capture"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    sendmail = root / "sendmail"
    sendmail.write_text(CAPTURE_PROGRAM.replace("@FOLDER@", str(root / "capture")))
    sendmail.chmod(0o755)
    _write_users(root, {})
    for _ in range(5):
        port = free_port()
        with open(root / "xandikos.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.xandikos_server", str(root / "storage"),
                 str(port), str(root / "users"), str(sendmail)],
                cwd=Path(__file__).parent.parent, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        server = Xandikos("127.0.0.1", port, root, {}, process)
        if server.listening():
            for login, password in users.items():
                server.add_user(login, password)
            return server
        server.stop()
    raise RuntimeError(f"xandikos did not start: {tail(root / 'xandikos.log')}")


def _write_users(root: Path, users: dict[str, str]) -> None:
    lines = "".join(
        f"{login}:{{SHA}}{base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()}\n"
        for login, password in users.items())
    (root / "users").write_text(lines)
