"""Every registered mail sink against its real target: the ``MailSink`` contract, each
outcome read back by an independent reader (``MailTarget``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from connectors.base import CHANGED, GONE, REMOVED, ContainerRefused, Message, PutResult
from connectors.lines import with_crlf
from connectors.protocols import MailSink, RemovingMailSink
from mappings.folders import FolderRules
from migrate.matching import TargetIndex
from tests.conformance.harness import Case
from tests.conformance.items import (
    BIG,
    HOSTILE_NAMES,
    MEMORY_BOUND,
    NAME_CHARACTERS,
    SUMMER,
    awkward_messages,
    big_message,
    message,
    peak_memory,
    plain,
)

INBOX = ("INBOX",)


def as_sent(sink: MailSink, raw: bytes, source_id: str = "m-1", **options: Any) -> Message:
    """The message as the engine hands it over: with CRLF line ends for a target that
    stores nothing else (``SinkCapabilities.crlf_only``)."""
    sent = message(raw, source_id, **options)
    return (with_crlf(sent) or sent) if sink.capabilities.crlf_only else sent


def put(sink: MailSink, native: str, messages: list[Message]) -> list[PutResult]:
    results = list(sink.put_many(native, messages))
    assert [(r.source_id, r.error) for r in results] == [(m.source_id, None) for m in messages]
    assert all(r.target_ref for r in results)
    return results


def test_ensure_container_twice_makes_one_folder(mail_sink: Case) -> None:
    target = mail_sink.harness
    before = target.folders()
    sink = mail_sink.open_sink()
    path = ("Projets", "Été 2024")
    first = sink.ensure_container(path)
    assert sink.ensure_container(path) == first
    assert mail_sink.open_sink().ensure_container(path) == first
    assert sink.native_name(path) == first
    after = target.folders()
    assert after.count(path) == 1
    made = {folder for folder in after if folder not in before} - {INBOX}
    assert made == {("Projets",), path}


def test_a_message_put_is_found_with_its_fingerprint_and_size(mail_sink: Case) -> None:
    sink = mail_sink.open_sink()
    native = sink.ensure_container(("Projets",))
    sent = as_sent(sink, plain("Compte rendu du conseil"))
    [result] = put(sink, native, [sent])

    assert sink.count(native) == 1
    [stored] = sink.inventory(native, fingerprints=True)
    assert (stored.target_ref, stored.fingerprint, stored.size) == (
        result.target_ref, sent.fingerprint, sent.size)
    assert list(sink.fingerprints(native, [result.target_ref])) == [
        (result.target_ref, sent.fingerprint)]
    assert [(m.fingerprint, m.size) for m in mail_sink.harness.messages(("Projets",))] == [
        (sent.fingerprint, sent.size)]


def test_the_same_message_sent_twice_shows_twice_where_the_engine_looks_first(
        mail_sink: Case) -> None:
    """A mail target keeps what it is given, twins included: the engine asks first
    (``TargetIndex``: count, inventory, fingerprints), so the sink must tell what it holds."""
    sink = mail_sink.open_sink()
    native = sink.ensure_container(("Projets",))
    sent = as_sent(sink, plain("Envoyé deux fois"))
    [first] = put(sink, native, [sent])
    found = TargetIndex(sink, native, claimed=set()).claim(sent.fingerprint, sent.size)
    assert found is not None and found.target_ref == first.target_ref
    assert sink.count(native) == 1

    [second] = put(sink, native, [sent])
    assert second.target_ref != first.target_ref
    assert sink.count(native) == 2
    assert sorted((s.target_ref, s.fingerprint) for s in sink.inventory(native, True)) == sorted(
        [(first.target_ref, sent.fingerprint), (second.target_ref, sent.fingerprint)])
    assert [m.fingerprint for m in mail_sink.harness.messages(("Projets",))] == [
        sent.fingerprint] * 2


def test_after_a_crash_between_put_and_record_a_new_sink_finds_the_message(
        mail_sink: Case) -> None:
    crashed = mail_sink.open_sink()  # left open: a killed process closes nothing
    native = crashed.ensure_container(("Projets",))
    sent = as_sent(crashed, plain("Envoyé avant la panne"))
    [result] = put(crashed, native, [sent])  # acknowledged, never recorded

    rerun = mail_sink.open_sink()
    assert rerun.native_name(("Projets",)) == native
    assert rerun.count(native) == 1
    found = TargetIndex(rerun, native, claimed=set()).claim(sent.fingerprint, sent.size)
    assert found is not None and found.target_ref == result.target_ref
    assert len(mail_sink.harness.messages(("Projets",))) == 1


def test_hostile_folder_names_land_as_named_or_are_refused_and_never_escape(
        mail_sink: Case) -> None:
    """A mail sink renames nothing itself (the engine does, from its capabilities): a name
    lands exactly, or ``ContainerRefused`` says the target will not have it."""
    target = mail_sink.harness
    before_files, before = target.snapshot(), target.folders()
    sink = mail_sink.open_sink()
    landed = {}
    for name in HOSTILE_NAMES:
        for path in ((name,), ("Hostile", name)):
            try:
                native = sink.ensure_container(path)
            except ContainerRefused:
                continue
            assert sink.ensure_container(path) == native, path
            put(sink, native, [as_sent(sink, plain(f"Dans {name!r}"))])
            landed[path] = native

    assert landed, "every hostile name refused: the case proves nothing"
    made = {folder for folder in target.folders() if folder not in before} - {INBOX}
    assert set(landed) <= made <= {*landed, ("Hostile",)}
    rerun = mail_sink.open_sink()
    assert rerun.capabilities.separator  # read from the target, hostile folders and all
    for path, native in landed.items():
        assert rerun.ensure_container(path) == native, path
        assert len(target.messages(path)) == 1, path
    assert target.escaped(before_files) == []


def test_names_changed_by_the_declared_rules_are_taken_and_each_change_is_reported(
        mail_sink: Case) -> None:
    """The separator and forbidden characters a sink declares are what the engine's name
    rules avoid: the names they give must not be refused, for any character."""
    target = mail_sink.harness
    before = target.folders()
    sink = mail_sink.open_sink()
    capabilities = sink.capabilities
    decisions = FolderRules().decide(
        [((name,), None) for name in NAME_CHARACTERS], target_separator=capabilities.separator,
        target_forbidden=capabilities.forbidden_chars,
        target_special=capabilities.special_folders)
    refused = {}
    for decision in decisions:
        assert decision.action == "copy" and decision.target is not None
        assert bool(decision.reasons) == (decision.target != decision.source), decision
        try:
            sink.ensure_container(decision.target)
        except ContainerRefused as error:
            refused[decision.source[-1]] = str(error)
    assert refused == {}
    made = {folder for folder in target.folders() if folder not in before} - {INBOX}
    assert made == {decision.target for decision in decisions}


def test_a_message_far_bigger_than_memory_allows_is_streamed(mail_sink: Case) -> None:
    sink = mail_sink.open_sink()
    native = sink.ensure_container(("Archives",))
    big = big_message()
    results, peak = peak_memory(lambda: list(sink.put_many(native, [big])))
    assert [r.error for r in results] == [None]
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held to store a {BIG >> 20} MiB message"

    ref = results[0].target_ref
    found, peak = peak_memory(lambda: list(sink.fingerprints(native, [ref])))
    assert found == [(ref, big.fingerprint)]
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held to hash a {BIG >> 20} MiB message"
    assert [(m.fingerprint, m.size) for m in mail_sink.harness.messages(("Archives",))] == [
        (big.fingerprint, BIG)]


def test_inventory_after_messages_are_deleted_on_the_target(mail_sink: Case) -> None:
    sink = mail_sink.open_sink()
    native = sink.ensure_container(("Projets",))
    sent = [as_sent(sink, plain(f"Note {n}"), f"m-{n}") for n in range(3)]
    results = put(sink, native, sent)
    assert len(list(sink.inventory(native))) == 3  # looked at before the user deletes
    mail_sink.harness.delete(("Projets",), sent[1].fingerprint)

    left = sorted([(results[0].target_ref, sent[0].fingerprint),
                   (results[2].target_ref, sent[2].fingerprint)])
    for looking in (sink, mail_sink.open_sink()):
        assert sorted((s.target_ref, s.fingerprint)
                      for s in looking.inventory(native, fingerprints=True)) == left
        assert looking.count(native) == 2
        assert sorted(looking.fingerprints(native, [r.target_ref for r in results])) == left


def test_a_sink_that_keeps_bytes_gives_back_the_bytes_it_was_given(mail_sink: Case) -> None:
    sink = mail_sink.open_sink()
    native = sink.ensure_container(("Octets",))
    sent = [as_sent(sink, raw, f"m-{n}") for n, raw in enumerate(awkward_messages())]
    put(sink, native, sent)
    landed = mail_sink.harness.messages(("Octets",))

    # What the sink says it holds is what an independent reader finds, whatever it keeps.
    assert Counter(s.fingerprint for s in sink.inventory(native, fingerprints=True)) == \
        Counter(m.fingerprint for m in landed)
    if mail_sink.harness.capabilities.keeps_bytes:
        assert sorted((m.fingerprint, m.size) for m in landed) == sorted(
            (m.fingerprint, m.size) for m in sent)
    else:
        assert len(landed) == len(sent)


def test_flags_keywords_and_internal_date_are_kept_as_the_capabilities_say(
        mail_sink: Case) -> None:
    sink = mail_sink.open_sink()
    native = sink.ensure_container(INBOX)
    system = frozenset({"\\Seen", "\\Answered", "\\Flagged"})
    keywords = frozenset({"$label1", "Projet"})
    sent = as_sent(sink, plain("Drapeaux"), flags=system | keywords, internal_date=SUMMER)
    put(sink, native, [sent])
    [landed] = mail_sink.harness.messages(INBOX)

    assert landed.modified == SUMMER  # the same instant
    offset_kept = landed.modified.utcoffset() == SUMMER.utcoffset()
    assert offset_kept == mail_sink.harness.capabilities.keeps_internal_date_offset
    assert landed.flags == system | (keywords if sink.capabilities.keywords else frozenset())
    [stored] = sink.inventory(native)
    assert (stored.flags, stored.internal_date) == (landed.flags, SUMMER)


def test_removal_takes_only_the_messages_named_and_unchanged(mail_sink: Case) -> None:
    """``remove_messages`` (``deletions = "remove"``): a message still as the sink gave it
    goes, also one a cut removal left marked deleted; one whose flags changed since stays;
    one gone already, or a ref the folder never held, is no error; a message marked deleted
    but not named stays."""
    sink = mail_sink.open_sink()
    assert isinstance(sink, RemovingMailSink)
    folder = ("Supprimés à la source",)
    native = sink.ensure_container(folder)
    flags = {"kept": frozenset({"\\Seen"}), "changed": frozenset({"\\Flagged"}),
             "gone": frozenset(), "cut": frozenset({"\\Answered"}),
             "unchanged": frozenset({"\\Seen"}), "stranger": frozenset({"\\Deleted"})}
    sent = {name: as_sent(sink, plain(f"Avis {name}"), name, flags=wanted)
            for name, wanted in flags.items()}
    refs = {r.source_id: r.target_ref for r in put(sink, native, list(sent.values())[:-1])}
    sink.set_flags(native, refs["changed"], frozenset({"\\Flagged", "\\Seen"}))
    mail_sink.harness.delete(folder, sent["gone"].fingerprint)  # (an IMAP user expunges)
    sink.set_flags(native, refs["cut"], frozenset({"\\Answered", "\\Deleted"}))
    put(sink, native, [sent["stranger"]])
    asked = {refs[name]: flags[name] for name in ("unchanged", "changed", "gone", "cut")}
    asked["0:1"] = frozenset()

    assert sink.remove_messages(native, asked) == {
        refs["unchanged"]: REMOVED, refs["changed"]: CHANGED, refs["gone"]: GONE,
        refs["cut"]: REMOVED, "0:1": GONE}
    landed = {m.fingerprint: m.flags for m in mail_sink.harness.messages(folder)}
    assert landed == {sent["kept"].fingerprint: frozenset({"\\Seen"}),
                      sent["changed"].fingerprint: frozenset({"\\Flagged", "\\Seen"}),
                      sent["stranger"].fingerprint: frozenset({"\\Deleted"})}
    assert mail_sink.open_sink().remove_messages(native, asked) == {
        refs["unchanged"]: GONE, refs["changed"]: CHANGED, refs["gone"]: GONE,
        refs["cut"]: GONE, "0:1": GONE}
    assert len(mail_sink.harness.messages(folder)) == 3
