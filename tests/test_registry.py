"""The registry of connectors: a connector defined only here, registered at run time, is a
target a batch may name, validated, shown in the schema and run through the command line,
with nothing under ``migrate/`` knowing it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from connectors import registry
from connectors.base import (
    ContainerRefused,
    Message,
    PutResult,
    SinkCapabilities,
    StoredItem,
    fingerprint_bytes,
)
from connectors.config import Section
from connectors.registry import Account, Capabilities, Connector, Context
from tests import mailboxes
from tests.cli import bascule, report
from tests.corpus import CorpusFolder, build_mailbox, write_maildir


@dataclass
class Stored:
    raw: bytes
    flags: frozenset[str]
    internal_date: datetime


@dataclass
class MemoryServer:
    """What the in-memory target holds: login → folder → stored messages, in order."""

    accounts: dict[str, dict[str, list[Stored]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


SERVER = MemoryServer()


class MemoryConfig(Section):
    type: Literal["memory"]
    refuse: list[str] = Field(default_factory=list, description="Folder names refused.")


class MemorySink:
    """A ``MailSink`` keeping messages in ``SERVER``; folder names joined with ``/``."""

    capabilities = SinkCapabilities(separator="/", keywords=True)

    def __init__(self, config: MemoryConfig, login: str) -> None:
        self.refuse = set(config.refuse)
        with SERVER.lock:
            self.folders = SERVER.accounts.setdefault(login, {})

    def native_name(self, path: Path) -> str:
        if any(name in self.refuse for name in path):
            raise ContainerRefused(code="name_refused", params={"detail": "/".join(path)})
        return "/".join(path)

    def ensure_container(self, path: Path) -> str:
        name = self.native_name(path)
        with SERVER.lock:
            self.folders.setdefault(name, [])
        return name

    def put_many(self, native_name: str, messages: Iterable[Message]) -> Iterator[PutResult]:
        for message in messages:
            with message.open() as body:
                raw = body.read()
            with SERVER.lock:
                folder = self.folders[native_name]
                folder.append(Stored(raw, message.flags, message.internal_date))
                ref = str(len(folder))
            yield PutResult(message.source_id, ref)

    def count(self, native_name: str) -> int:
        with SERVER.lock:
            return len(self.folders.get(native_name, []))

    def _items(self, native_name: str) -> list[tuple[str, Stored]]:
        with SERVER.lock:
            return [(str(n), s) for n, s in enumerate(self.folders.get(native_name, []), 1)]

    def fingerprints(self, native_name: str, target_refs: Sequence[str]
                     ) -> Iterator[tuple[str, str]]:
        wanted = set(target_refs)
        for ref, stored in self._items(native_name):
            if ref in wanted:
                yield ref, fingerprint_bytes(stored.raw)

    def set_flags(self, native_name: str, target_ref: str, flags: frozenset[str]) -> None:
        with SERVER.lock:
            self.folders[native_name][int(target_ref) - 1].flags = flags

    def inventory(self, native_name: str, fingerprints: bool = False) -> Iterator[StoredItem]:
        for ref, stored in self._items(native_name):
            yield StoredItem(ref, len(stored.raw), stored.flags,
                             fingerprint_bytes(stored.raw) if fingerprints else None,
                             stored.internal_date)

    def close(self) -> None:
        pass


def _open_sink(context: Context, account: Account, workload: str) -> Any:
    return MemorySink(account.config, account.login)


MEMORY = Connector(
    type="memory", config=MemoryConfig,
    summary=("Messages kept in memory (tests)", "Messages gardés en mémoire (tests)"),
    writes=frozenset({"mail"}), open_sink=_open_sink,
    capabilities=Capabilities(keeps_bytes=True),
    example='refuse = []\n',
)


@pytest.fixture
def memory_connector() -> Iterator[MemoryServer]:
    SERVER.accounts.clear()
    registry.register(MEMORY)
    try:
        yield SERVER
    finally:
        registry.unregister("memory")
        SERVER.accounts.clear()


FOLDERS = [
    CorpusFolder(("INBOX",), "inbox", list(build_mailbox(12, seed=1))),
    CorpusFolder(("Projets", "Été 2024"), None, list(build_mailbox(5, seed=2))),
    CorpusFolder(("Refusé",), None, list(build_mailbox(2, seed=3))),
]


def memory_batch(folder: Path) -> Path:
    write_maildir(folder / "source" / "alice", FOLDERS)
    mailboxes.write_users(folder, [("alice", "alice@ville.example", "", "")])
    path = folder / "batch.toml"
    path.write_text("""
name = "memoire"
[source]
type = "maildir"
path = "source"
[target]
type = "memory"
refuse = ["Refusé"]
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def landed(server: MemoryServer) -> dict[str, list[tuple[str, frozenset[str], datetime]]]:
    """Each folder's messages, sorted: a Maildir source gives them in the order of its file
    names, whose microseconds are not zero-padded, not in the order they were written."""
    return {name: sorted((fingerprint_bytes(s.raw), s.flags, s.internal_date) for s in items)
            for name, items in server.accounts["alice@ville.example"].items()}


def test_a_sink_registered_by_the_tests_receives_a_batch_run_from_the_command_line(
        tmp_path, memory_connector):
    batch = memory_batch(tmp_path)

    code, output = bascule("run", str(batch))
    assert code == 1, output  # one folder refused by the target, said, the rest moved
    expected = {"/".join(f.path): sorted((m.fingerprint, m.flags, m.internal_date)
                                         for m in f.messages) for f in FOLDERS[:2]}
    expected["Projets"] = []  # the parent, an empty folder of the source
    assert landed(memory_connector) == expected
    refused = [row for row in report(tmp_path, "run")["entries"] if row.get("code") == "name_refused"]
    assert [row["folder"] for row in refused] == ["Refusé"]

    # Run again: found on the target, nothing sent twice.
    bascule("run", str(batch))
    assert landed(memory_connector) == expected
    code, output = bascule("verify", str(batch))
    summary = report(tmp_path, "verify")["summary"]
    # What the refused folder holds is missing, and said so; nothing else differs.
    assert (code, summary["checked"], summary["missing"], summary["mismatches"]) == (1, 19, 2, 2)


def test_the_schema_and_the_batch_know_a_registered_sink_and_forget_it_after(
        tmp_path, memory_connector):
    code, output = bascule("schema")
    assert code == 0
    assert "memory" in json.dumps(json.loads(output)["$defs"]["MemoryConfig"])
    code, output = bascule("connectors")
    assert "memory: Messages kept in memory (tests)" in output

    batch = memory_batch(tmp_path)
    batch.write_text(batch.read_text(encoding="utf-8").replace('refuse = ["Refusé"]',
                                                               'refuse = "Refusé"'))
    code, output = bascule("plan", str(batch))
    assert code == 2 and "target.refuse" in output, output

    registry.unregister("memory")
    code, output = bascule("plan", str(batch))
    assert code == 2 and "target: type must be one of imap, maildir" in output, output
