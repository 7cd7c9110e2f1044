"""Start and stop a private Radicale (CalDAV and CardDAV, from PyPI) for tests, on 127.0.0.1.

Each instance runs in a process of its own (``python -m radicale``, the interpreter running
the tests) with its configuration, its htpasswd file (plain passwords: a test server) and
its storage in one folder. Radicale keeps every collection as a folder and every item as a
file, written through one lock.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.servers import HttpServer, free_port, tail


@dataclass
class Radicale(HttpServer):
    @property
    def storage(self) -> Path:
        """Where Radicale keeps every user's collections (``collection-root/<login>/``)."""
        return self.root / "storage"

    @property
    def log(self) -> str:
        return tail(self.root / "radicale.log", 40)

    def add_user(self, login: str, password: str) -> None:
        """A new account; Radicale reads its htpasswd file again on each login."""
        self.users[login] = password
        _write_users(self.root, self.users)


def start_radicale(base: Path, users: dict[str, str]) -> Radicale:
    """Start a Radicale whose files all live in ``base`` (created if missing), for
    ``users`` (login: password). Raises RuntimeError with the log's end when it does not
    start."""
    root = Path(base)
    root.mkdir(parents=True, exist_ok=True)
    (root / "storage").mkdir(exist_ok=True)
    _write_users(root, users)
    for _ in range(5):
        port = free_port()
        (root / "config").write_text(_config(root, port))
        with open(root / "radicale.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "radicale", "--config", str(root / "config")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        server = Radicale("127.0.0.1", port, root, dict(users), process)
        if server.listening():
            return server
        server.stop()
    raise RuntimeError(f"radicale did not start: {tail(root / 'radicale.log')}")


def _write_users(root: Path, users: dict[str, str]) -> None:
    (root / "users").write_text("".join(f"{login}:{password}\n"
                                        for login, password in users.items()))


def _config(root: Path, port: int) -> str:
    return f"""\
[server]
hosts = 127.0.0.1:{port}
[auth]
type = htpasswd
htpasswd_filename = {root / "users"}
htpasswd_encryption = plain
[storage]
filesystem_folder = {root / "storage"}
[rights]
type = owner_only
[logging]
level = warning
"""
