"""Killed at any moment, run again: the target ends with exactly the source's messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from connectors.imap.session import ImapCredentials, ImapEndpoint
from connectors.imap.sink import ImapSink
from connectors.imap.source import ImapSource
from migrate.ledger import UNSETTLED, Ledger
from migrate.mail import MailUnit, container_key
from tests import mailboxes
from tests.corpus import CorpusFolder, build_corpus, build_mailbox
from tests.faults import kill_in_flight, run_with_signal
from tests.test_engine_imap import LANDING, batch_file

ROOT = Path(__file__).resolve().parent.parent


def test_sigkill_at_several_points_leaves_no_duplicate_and_no_gap(dovecot_factory, fault_proxy,
                                                                   tmp_path):
    source = dovecot_factory(users={"alice": "a"})
    target = dovecot_factory(users={"alice": "b"})
    proxy = fault_proxy(target)
    corpus = build_corpus(seed=7)
    corpus[0] = CorpusFolder(("INBOX",), "inbox",
                             corpus[0].messages + list(build_mailbox(1200, seed=11)))
    mailboxes.seed(source, "alice", corpus)
    mailboxes.write_users(tmp_path, [("alice", "alice", "env:A1", "env:A2")])
    batch = batch_file(tmp_path, source, proxy)
    env = {**os.environ, "A1": "a", "A2": "b", "PYTHONPATH": str(ROOT)}

    # Killed with batches in flight (the proxy holds them there): while the first messages
    # are on their way, then with 300 and 600 landed, each time in a run that resumes the
    # one before; then once more wherever the run is when 900 have landed.
    outcomes = [kill_in_flight(batch, env, proxy, start) for start in (
        lambda ledger: proxy.bytes_to_server >= 16384,
        lambda ledger: ledger.done >= 300, lambda ledger: ledger.done >= 600)]
    outcomes.append(run_with_signal(batch, env, signal.SIGKILL,
                                    lambda ledger: ledger.done >= 900))
    assert [outcome.returncode for outcome in outcomes] == [-signal.SIGKILL] * 4
    assert all(outcome.at_signal.inflight > 0 for outcome in outcomes[:3])
    assert max(outcome.at_signal.done for outcome in outcomes) < 1200, "make the mailbox larger"

    final = subprocess.run([sys.executable, "-m", "migrate", "run", str(batch)], cwd=ROOT,
                           env=env, capture_output=True, text=True, check=False)
    assert final.returncode == 0, final.stderr
    wanted = mailboxes.landed(mailboxes.contents(source, "alice"), LANDING)
    assert mailboxes.differences(wanted, mailboxes.contents(target, "alice")) == ""
    verify = subprocess.run([sys.executable, "-m", "migrate", "verify", str(batch)], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


class CrashAfterAck(Exception):
    """Stands for the process dying between the target's answer and the ledger's commit."""


class DyingSink:
    """A real IMAP sink whose process 'dies' after ``acks`` acknowledgements."""

    def __init__(self, sink: ImapSink, acks: int) -> None:
        self.sink = sink
        self.acks = acks
        self.capabilities = sink.capabilities

    def __getattr__(self, name: str):
        return getattr(self.sink, name)

    def put_many(self, native_name, messages):
        for count, result in enumerate(self.sink.put_many(native_name, messages), 1):
            if count > self.acks:
                raise CrashAfterAck()
            yield result


def test_items_acknowledged_but_not_recorded_are_found_not_resent(dovecot_factory, tmp_path):
    source = dovecot_factory(users={"alice": "a"})
    target = dovecot_factory(users={"alice": "b"})
    messages = list(build_mailbox(40, seed=3))
    duplicate = messages[5]
    messages.insert(20, duplicate)  # the same bytes twice: both must land, once each
    mailboxes.seed(source, "alice", [CorpusFolder(("INBOX",), "inbox", messages)])
    endpoint_s = ImapEndpoint("127.0.0.1", source.port, security="none")
    endpoint_t = ImapEndpoint("127.0.0.1", target.port, security="none")
    ledger = Ledger.in_folder(tmp_path / "work")

    def unit_run(acks: int | None) -> None:
        src = ImapSource(endpoint_s, ImapCredentials("alice", "a"))
        sink = ImapSink(endpoint_t, ImapCredentials("alice", "b"))
        try:
            container = next(c for c in src.containers() if c.path == ("INBOX",))
            unit = ledger.unit("alice", "mail", container_key(container.path))
            used = sink if acks is None else DyingSink(sink, acks)
            MailUnit(ledger, unit, src, used, container, ("INBOX",)).run()
        finally:
            src.close()
            sink.close()

    try:
        unit_run(acks=25)
    except CrashAfterAck:
        pass
    statuses = [r.status for r in ledger.items_of(ledger.all_units()[0].id).values()]
    assert sum(statuses.count(status) for status in UNSETTLED) > 0
    unit_run(acks=None)
    landed = mailboxes.contents(target, "alice")[("INBOX",)]
    assert landed == mailboxes.contents(source, "alice")[("INBOX",)]
    assert sum(landed.values()) == len(messages)
