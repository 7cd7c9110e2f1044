"""The reports as functions of what the engine hands them: the rows, totals and summaries of
plan, audit, run, verify and status, from the engine's own records (ledger units and items,
unit results, verify checks, source notes), with no server and no ledger file."""

from __future__ import annotations

import csv

from connectors.base import BasculeError, ItemRejected, SourceNote
from connectors.graph.auth import GraphAuthError
from mappings.folders import FolderDecision
from mappings.users import UserMapping
from migrate.compare import Finding, FolderCheck
from migrate.documents import ItemCheck
from migrate.ledger import ItemRecord, Unit
from migrate.mail import UnitResult
from reports.audit import AuditReport
from reports.files import CsvStream
from reports.i18n import Duration, Text
from reports.plan import PlanReport, container_row, target_not_empty_row, too_big_row
from reports.rows import decided, note_rows, refusal_text, skip_row
from reports.run import RunReport
from reports.status import status_report
from reports.summary import summary_text
from reports.verify import FAULTS, FINDING_TOTALS, ITEM_COLUMNS, VerifyTally

ALICE = UserMapping("alice@ville.fr", "alice", None, None, 2)
BASE = {"principal": "alice@ville.fr", "target": "alice", "folder": "INBOX",
        "target_folder": "INBOX"}


def unit(container: str, status: str, copied: int = 0, size: int = 0, failed: int = 0,
         last_error: str | None = None) -> Unit:
    return Unit(id=1, principal="alice@ville.fr", workload="mail", container=container,
                target_container=container.replace("\x1f", "."), status=status, cursor=None,
                copied=copied, bytes=size, failed=failed, last_error=last_error)


def failed_item(source_id: str, code: str | None, detail: str | None) -> ItemRecord:
    return ItemRecord(source_id=source_id, fingerprint=None, size=None, flags=frozenset(),
                      internal_date=None, version=None, target_ref=None, status="failed",
                      error_code=code, error_detail=detail, attempts=1)


def shown(key: str) -> str:
    return key.replace("\x1f", "/")


LAST_RUN = {"id": 3, "started_at": "2025-01-06T08:00:00", "ended_at": None,
            "status": "running", "batch": "ville"}


def test_status_counts_units_and_shows_a_dead_run_as_interrupted() -> None:
    units = [unit("INBOX", "done", copied=10, size=2048),
             unit("Projets\x1fÉté", "failed", copied=1, size=100, failed=2, last_error="boom"),
             unit("Sent", "running", copied=3, size=300)]
    failed = [(units[1], failed_item("42", "too_big", "5 MB > 1 MB")),
              (units[1], failed_item("43", None, None))]

    document, rows = status_report("ville", units, failed, LAST_RUN, alive=False,
                                   folder_of=shown)

    assert document["summary"] == {"units": 3, "done": 1, "failed_units": 1, "copied": 14,
                                   "bytes": 2448, "failed_items": 2}
    assert document["last_run"] == {"id": 3, "started_at": "2025-01-06T08:00:00",
                                    "ended_at": None, "status": "interrupted"}
    assert [(r["folder"], r["action"]) for r in rows] == [
        ("INBOX", "done"), ("Projets/Été", "failed"), ("Sent", "interrupted"),
        ("Projets/Été", "failed"), ("Projets/Été", "failed")]
    assert rows[1]["message_en"] == "boom" and "code" not in rows[1]
    assert (rows[3]["source_id"], rows[3]["code"]) == ("42", "too_big")
    assert rows[3]["message_en"] == "the target refused it as too big: 5 MB > 1 MB"
    assert rows[4]["code"] == "error"


def test_status_while_a_command_holds_the_work_folder_keeps_running() -> None:
    document, rows = status_report("ville", [unit("INBOX", "running")], [], LAST_RUN,
                                   alive=True, folder_of=shown)
    assert document["last_run"]["status"] == "running"
    assert rows[0]["action"] == "running"
    assert document["summary"]["done"] == 0
    empty, _ = status_report("ville", [], [], None, alive=False, folder_of=shown)
    assert empty["last_run"] is None
    assert empty["summary"] == dict.fromkeys(document["summary"], 0)


def test_a_unit_result_becomes_its_rows_and_the_run_totals() -> None:
    report = RunReport()
    result = UnitResult(copied=3, copied_bytes=3000, recovered=2, flag_updates=1, failed=1,
                        deleted_at_source=1, quota_left=4, quota_left_bytes=4000,
                        converted=["7", "8"],
                        notes=[SourceNote("removed_at_source", "9"),
                               SourceNote("unreadable_item", "10", "bad MIME")],
                        errors=[("11", ItemRejected("5 MB", code="too_big"))])
    rename = [Text.of("renamed_by_batch", detail="Boîte")]

    report.add(BASE, "rename", rename, result)
    report.add({**BASE, "folder": "Sent"}, "error", [Text.of("timeout", detail="60 s")],
               UnitResult(copied=1, copied_bytes=10), failed_unit=True)
    report.not_started({**BASE, "folder": "Drafts"})

    assert report.totals == {
        "copied": 4, "bytes": 3010, "flag_updates": 1, "failed": 1, "skipped": 0,
        "recovered": 2, "units_failed": 1, "units_interrupted": 0, "units_not_started": 1,
        "over_quota": 4, "over_quota_bytes": 4000}
    actions = [(r["folder"], r["action"], r.get("code")) for r in report.rows]
    assert actions == [
        ("INBOX", "rename", "renamed_by_batch"), ("INBOX", "note", "removed_at_source"),
        ("INBOX", "note", "unreadable_item"), ("INBOX", "note", "found_on_target"),
        ("INBOX", "note", "line_endings_converted"), ("INBOX", "note", "deleted_at_source"),
        ("INBOX", "failed", "too_big"), ("Sent", "error", "timeout"),
        ("Drafts", "not_started", "unit_not_started")]
    outcome = report.rows[0]
    assert (outcome["copied"], outcome["bytes"], outcome["failed"]) == (3, 3000, 1)
    assert report.rows[1]["source_id"] == "" and report.rows[2]["source_id"] == "10"
    assert report.rows[4]["source_id"] == "7 8" and report.rows[4]["messages"] == 2
    assert report.rows[3]["message_fr"] == (
        "2 messages déjà sur la cible, retrouvés par leur contenu : enregistrés, pas renvoyés")

    [full] = report.quota_rows()
    assert (full["action"], full["messages"], full["bytes"]) == ("over_quota", 4, 4000)
    assert "4 messages (4 kB) not copied" in full["message_en"]
    assert report.entries() == [*report.rows, full]


def test_how_a_run_ends() -> None:
    report = RunReport()
    assert report.status(signalled=False, stopped=False) == "done"
    report.planned([skip_row(BASE, [])], skipped=1)
    assert report.totals["skipped"] == 1
    assert report.status(signalled=False, stopped=False) == "done"
    report.principal_failed(ALICE, Text.of("unreachable", detail="refused"))
    assert report.rows[-1]["action"] == "error" and report.totals["units_failed"] == 1
    assert report.status(signalled=False, stopped=False) == "failed"
    assert report.status(signalled=False, stopped=True) == "stopped"
    assert report.status(signalled=True, stopped=True) == "interrupted"
    document = report.document("ville", 7, "stopped", Text.of("unit_not_started"),
                               [Text.of("dead_run_closed")])
    assert document["stopped"]["code"] == "unit_not_started"
    assert [n["code"] for n in document["notices"]] == ["dead_run_closed"]
    assert "stopped" not in report.document("ville", 7, "done", None, [])


def test_a_target_folder_checked_counts_its_faults_apart_from_what_only_informs() -> None:
    tally = VerifyTally()
    check = FolderCheck(source_messages=5, target_messages=6, findings=[
        Finding("missing_on_target", "1"), Finding("duplicate_on_target", "", "t9"),
        Finding("deleted_at_source", "", "t3"),
        Finding("flags_mismatch", "2", "t2", {"source": "\\Seen", "target": ""})])

    tally.add(BASE, check)
    tally.add_error(ALICE, Text.of("unreachable", detail="refused"))

    assert [(r["action"], r.get("code")) for r in tally.rows] == [
        ("verified", None), ("mismatch", "missing_on_target"),
        ("mismatch", "duplicate_on_target"), ("note", "deleted_at_source"),
        ("mismatch", "flags_mismatch"), ("error", "unreachable")]
    assert (tally.rows[0]["messages"], tally.rows[0]["copied"], tally.rows[0]["failed"]) == (
        5, 6, 3)
    assert tally.summary(users=1) == {
        "checked": 5, "target_items": 6, "mismatches": 4, "missing": 1, "content_differs": 0,
        "duplicates": 1, "not_in_source": 0, "flags_differ": 1, "dates_differ": 0, "changed_at_source": 0,
        "deleted_at_source": 1, "errors": 1, "read_back_sha256": 0, "read_back_meaning": 0,
        "not_verified": 0, "source_hash_matched": 0, "no_source_hash": 0,
        "source_check_not_recorded": 0, "users": 1}


def test_a_target_item_whose_content_differs_is_counted_as_such_not_as_missing() -> None:
    tally = VerifyTally()
    tally.add(BASE, FolderCheck(source_messages=2, target_messages=2, findings=[
        Finding("fingerprint_mismatch", "1", "t1")]))

    summary = tally.summary(users=1)
    assert (summary["mismatches"], summary["content_differs"], summary["missing"]) == (1, 1, 0)
    assert summary_text("verify", summary).en.startswith(
        "2 checked, 1 mismatch: 0 missing, 1 content difference, 0 duplicated")


def test_each_item_of_a_document_container_is_a_row_saying_how_it_was_verified(
        tmp_path) -> None:
    """Rows go to the file as they come; each says what was compared (hashes, never sizes),
    how the source was checked when read, in both languages; the summary counts each way."""
    written = "sha256:" + "ab" * 32
    items = [
        ItemCheck("q1", "OneDrive/a.txt", "match", "read_back_sha256", "item_verified", 5, 5,
                  "quickXorHash:AAAA", written, written),
        ItemCheck("q2", "OneDrive/b.txt", "mismatch", "read_back_sha256",
                  "fingerprint_mismatch", 5, 5, "", written, "sha256:" + "cd" * 32),
        ItemCheck("q3", "", "missing", "not_verified", "missing_on_target", 7),
        ItemCheck("q4", "Agenda/e.ics", "match", "read_back_meaning", "item_verified", 90, 95,
                  None, written, "ical:" + "ef" * 32),
        ItemCheck("", "OneDrive/x.txt", "extra", "not_verified", "not_in_source", None, 3,
                  None, None, "sha256:" + "01" * 32),
    ]
    with CsvStream(tmp_path, "verify-files", ITEM_COLUMNS) as stream:
        tally = VerifyTally(stream)
        for item in items:
            tally.add_item({"principal": "alice@ville.fr", "workload": "files",
                            "container": "OneDrive"}, item)
        assert tally.rows == []  # written out, none kept for the end
    assert tally.document("ville", 1, None)["items_report"] == stream.path.name
    with open(tmp_path / "verify-files-latest.csv", encoding="utf-8-sig", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ITEM_COLUMNS
    assert [(r["source_id"], r["outcome"], r["verified_by"], r["source_check"])
            for r in rows] == [
        ("q1", "match", "read_back_sha256", "source_hash_matched"),
        ("q2", "mismatch", "read_back_sha256", "no_source_hash"),
        ("q3", "missing", "not_verified", ""),
        ("q4", "match", "read_back_meaning", "source_check_not_recorded"),
        ("", "extra", "not_verified", "")]
    assert (rows[0]["written_sha256"], rows[0]["target_sha256"]) == ("ab" * 32, "ab" * 32)
    assert (rows[1]["source_size"], rows[1]["target_size"], rows[1]["target_sha256"]) == (
        "5", "5", "cd" * 32)
    assert rows[3]["target_sha256"] == ""  # a meaning's fingerprint is no SHA-256
    assert rows[0]["message_en"] == (
        "verified, its bytes read back from the target hash to the SHA-256 of the bytes "
        "written; when read, its bytes matched the source's own quickXorHash")
    assert rows[0]["message_fr"] == (
        "vérifié, ses octets relus sur la cible ont le SHA-256 des octets écrits ; à la "
        "lecture, ses octets correspondaient au quickXorHash donné par la source")
    assert rows[1]["message_en"] == "bytes differ on the target"
    summary = tally.summary(users=1)
    assert {key: summary[key] for key in (
        "read_back_sha256", "read_back_meaning", "not_verified", "source_hash_matched",
        "no_source_hash", "source_check_not_recorded")} == {
        "read_back_sha256": 2, "read_back_meaning": 1, "not_verified": 1,
        "source_hash_matched": 1, "no_source_hash": 1, "source_check_not_recorded": 1}
    said = summary_text("verify", summary)
    assert said.en.splitlines()[1] == (
        "documents (files, events, contacts, tasks): 2 compared by their bytes read back "
        "(SHA-256), 1 compared by its meaning read back, 1 not verified; at the source, "
        "1 checked against its own hash as read, 1 without a hash to check it against, "
        "1 copied before bascule recorded that check")
    assert said.fr.splitlines()[1].startswith(
        "documents (fichiers, événements, contacts, tâches) : 2 comparés par leurs octets "
        "relus (SHA-256), 1 comparé par son sens relu, 1 non vérifié ; à la source, 1 vérifié")


def test_every_fault_has_its_total_and_only_deleted_at_source_informs() -> None:
    assert set(FINDING_TOTALS) - set(FAULTS) == {"deleted_at_source"}


def test_a_plan_opens_with_what_blocks_the_batch_and_counts_each_warning_once() -> None:
    report = PlanReport([Text.of("no_target")], [Text.of("dead_run_closed")])
    rows = [container_row(report.totals, BASE, "copy", [], messages=3, size=3000, to_copy=2,
                          to_copy_bytes=2000),
            too_big_row(BASE, "9", 5_000_000, 1_000_000),
            target_not_empty_row(ALICE, "INBOX", 1)]
    report.add(rows, [Text.of("internal_date_offset_lost")])
    report.add([], [Text.of("internal_date_offset_lost")])
    report.refused(ALICE, Text.of("unreachable", detail="refused"))
    estimate = {"seconds": 5400.0, "range_seconds": [3564.0, 8316.0],
                "basis": {"kind": "history", "runs": [4, 3]},
                "principals": [{"principal": "alice@ville.fr", "target": "alice", "units": 1,
                                "items": 2, "bytes": 2000, "seconds": 95.0}]}
    report.estimated(estimate, Text.of("estimate_from_history", count=2))

    assert [(r["principal"], r["action"]) for r in report.rows] == [
        ("", "error"), ("alice@ville.fr", "copy"), ("alice@ville.fr", "too_big"),
        ("alice@ville.fr", "note"), ("alice@ville.fr", "error"), ("alice@ville.fr", "estimate")]
    assert report.rows[5]["messages"] == 2 and report.rows[5]["bytes"] == 2000
    assert report.rows[5]["message_en"] == "about 2 min for this user run alone"
    assert report.rows[5]["message_fr"] == "environ 2\xa0min pour cet utilisateur seul"
    assert "code" not in report.rows[1]
    assert report.rows[2]["message_fr"] == "plus gros que ce que la cible accepte (1\u202fMo)"
    assert ": 1 message the ledger does not know of" in report.rows[3]["message_en"]
    summary = report.summary(users=2)
    assert summary == {"units": 1, "messages": 3, "bytes": 3000, "to_copy": 2,
                       "to_copy_bytes": 2000, "errors": 2, "warnings": 2, "users": 2,
                       "estimated_seconds": 5400.0, "estimate": {
                           "code": "estimate_range",
                           "message_en": "about 1 hr 30 min, likely 59 min to 2 hr 20 min "
                                         "(estimate from the last 2 runs)",
                           "message_fr": "environ 1\u202fh 30\xa0min, probablement de 59\xa0min "
                                         "à 2\u202fh 20\xa0min (estimation d'après les 2 "
                                         "dernières exécutions)"}}
    document = report.document("ville", 2, None)
    assert document["estimate"] == estimate
    assert document["summary"] == summary and "stopped" not in document
    assert [w["code"] for w in document["warnings"]] == [
        "dead_run_closed", "internal_date_offset_lost"]
    assert [e["code"] for e in document["errors"]] == ["no_target", "unreachable"]


def test_an_audit_counts_containers_and_principals_it_could_not_list() -> None:
    report = AuditReport([], users=2)
    row = report.container(ALICE, "mail:INBOX", 4, 1500)
    report.refused(ALICE, Text.of("unreachable", detail="refused"))
    assert row == {"principal": "alice@ville.fr", "folder": "mail:INBOX",
                   "action": "inventory", "messages": 4, "bytes": 1500}
    assert report.summary() == {"users": 2, "containers": 1, "items": 4, "bytes": 1500,
                                "errors": 1}
    assert report.document("ville") == {"batch": "ville", "summary": report.summary()}
    assert [r["action"] for r in report.rows] == ["error"]


def test_folder_rules_become_an_action_and_its_reasons() -> None:
    renamed = FolderDecision(("Boîte de réception",), ("INBOX",), "inbox", "copy",
                             ("renamed_by_batch",), "Boîte de réception")
    assert decided(renamed)[0] == "rename"
    assert decided(renamed)[1][0].code == "renamed_by_batch"
    kept = FolderDecision(("Projets",), ("Projets",), None, "copy", ())
    assert decided(kept) == ("copy", [])
    assert skip_row(BASE, []) == {**BASE, "action": "skip"}


def test_source_notes_name_a_skipped_folder_or_an_item() -> None:
    rows = note_rows(ALICE, [SourceNote("hidden_folder_skipped", "Sync Issues"),
                             SourceNote("unreadable_item", "12", "bad MIME")])
    assert [(r["action"], r["folder"], r["source_id"], r["code"]) for r in rows] == [
        ("skip", "Sync Issues", "", "hidden_folder_skipped"),
        ("note", "", "12", "unreadable_item")]


def test_an_error_explained_by_its_connector_keeps_both_languages() -> None:
    explained = refusal_text(GraphAuthError("AADSTS7000215", "wrong secret", "mauvais secret"))
    assert (explained.code, explained.en, explained.fr) == (
        "auth_failed", "AADSTS7000215: wrong secret", "AADSTS7000215: mauvais secret")
    coded = refusal_text(BasculeError("no route", code="unreachable"))
    assert (coded.en, coded.fr) == ("server unreachable: no route",
                                    "serveur injoignable : no route")


def test_each_summary_counts_each_thing_in_its_language() -> None:
    run = summary_text("run", {"copied": 1, "flag_updates": 2, "failed": 0, "units_failed": 1,
                               "skipped": 0})
    assert run.en == "1 copied, 2 flag updates, 1 failed, 0 skipped"
    assert run.fr == "1 copié, 2 drapeaux mis à jour, 1 en échec, 0 ignoré"
    status = summary_text("status", {"copied": 2, "failed_items": 1})
    assert status.fr == "2 copiés, 0 drapeau mis à jour, 1 en échec, 0 ignoré"
    audit = summary_text("audit", {"users": 1, "containers": 2, "items": 1, "bytes": 0,
                                   "errors": 0})
    assert audit.en == ("1 user, 2 folders, calendars, address books or drives, 1 item, "
                        "0 bytes; 0 errors")
    assert audit.fr == ("1 utilisateur, 2 dossiers, agendas, carnets ou espaces de fichiers, "
                        "1 élément, 0\xa0octet ; 0 erreur")
    verify = summary_text("verify", {"checked": 1, "mismatches": 3, "missing": 1,
                                     "content_differs": 1, "duplicates": 0, "not_in_source": 1,
                                     "flags_differ": 0, "dates_differ": 2})
    assert verify.en == ("1 checked, 3 mismatches: 1 missing, 1 content difference, 0 "
                         "duplicated, 1 not at the source, 0 flag differences, 2 date "
                         "differences")
    assert verify.fr == ("1 vérifié, 3 écarts : 1 manquant, 1 écart de contenu, 0 en double, "
                         "1 absent de la source, 0 écart de drapeaux, 2 écarts de date")
    probed = Text.of("estimate_range", duration=Duration(44.6), low=Duration(28.1),
                     high=Duration(84.3), basis=Text.of("estimate_from_probe", count=1))
    plan = summary_text("plan", {"units": 2, "to_copy": 1, "to_copy_bytes": 0, "errors": 1,
                                 "warnings": 0, "estimate": {"code": "estimate_range",
                                                             "message_en": probed.en,
                                                             "message_fr": probed.fr}})
    assert plan.fr == ("2 dossiers, 1 message, 0\xa0octet à copier, environ 45\u202fs, "
                       "probablement de 28\u202fs à 1\xa0min (estimation d'après une mesure des deux serveurs pour 1 utilisateur, "
                       "aux débits de copie par défaut) ; 1 erreur bloquante, 0 avertissement")


def test_an_estimate_states_its_range_unless_both_ends_read_the_same() -> None:
    short = PlanReport([], [])
    short.estimated({"seconds": 1.0, "range_seconds": [0.7, 1.3], "principals": []},
                    Text.of("estimate_from_probe", count=3))
    assert short.estimate_text is not None
    assert short.estimate_text.code == "estimate"
    assert short.estimate_text.en == ("about 1 sec (estimate from a probe of both servers for "
                                      "3 users, at default copy rates)")
    long = PlanReport([], [])
    long.estimated({"seconds": 600.0, "range_seconds": [378.0, 1134.0], "principals": []},
                   Text.of("estimate_from_probe", count=3))
    assert long.estimate_text is not None
    assert long.estimate_text.fr.startswith("environ 10\xa0min, probablement de 6\xa0min à "
                                            "19\xa0min (estimation")
