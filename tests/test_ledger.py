"""The ledger: in flight before sending, done after the acknowledgement, attempts counted."""

from migrate.ledger import DONE, FAILED, INFLIGHT, Ledger


def record(sid: str, size: int = 10) -> dict:
    return {"source_id": sid, "fingerprint": f"sha256:{sid}", "size": size,
            "flags": frozenset({"\\Seen"}), "internal_date": None}


def test_items_go_inflight_then_done_or_failed_and_attempts_count(tmp_path):
    ledger = Ledger.in_folder(tmp_path)
    unit = ledger.unit("alice", "mail", "INBOX")
    ledger.update_unit(unit.id, target_container="INBOX")
    ledger.mark_inflight(unit.id, [record("1:1"), record("1:2"), record("1:3")])
    assert {r.status for r in ledger.items_of(unit.id).values()} == {INFLIGHT}
    ledger.record_outcomes(unit.id, [
        {"source_id": "1:1", "target_ref": "9:1"},
        {"source_id": "1:2", "error_code": "too_big", "error_detail": "limit"},
        {"source_id": "1:4", "error_code": "too_big", "error_detail": "refused before"},
    ])
    items = ledger.items_of(unit.id)
    assert (items["1:1"].status, items["1:1"].target_ref) == (DONE, "9:1")
    assert (items["1:2"].status, items["1:2"].error_code) == (FAILED, "too_big")
    assert items["1:3"].status == INFLIGHT
    assert items["1:4"].status == FAILED
    ledger.mark_inflight(unit.id, [record("1:2")])
    assert ledger.items_of(unit.id)["1:2"].attempts == 2
    assert ledger.claimed_refs("alice", "INBOX") == {"9:1"}
    ledger.refresh_counts(unit.id)
    [stored] = ledger.all_units()
    assert (stored.copied, stored.bytes, stored.failed) == (1, 10, 1)
    assert [i.source_id for _, i in ledger.failed_items()] == ["1:4"]


def test_rekey_moves_rows_to_new_ids_even_when_they_swap(tmp_path):
    ledger = Ledger.in_folder(tmp_path)
    unit = ledger.unit("alice", "mail", "INBOX")
    ledger.mark_inflight(unit.id, [record("1:1"), record("1:2"), record("1:3")])
    ledger.record_outcomes(unit.id, [{"source_id": "1:1", "target_ref": "a"},
                                     {"source_id": "1:2", "target_ref": "b"}])
    ledger.rekey(unit.id, {"1:1": "1:2", "1:2": "1:1"}, forget=["1:3"])
    items = ledger.items_of(unit.id)
    assert (items["1:1"].target_ref, items["1:2"].target_ref) == ("b", "a")
    assert "1:3" not in items


def test_a_cursor_survives_reopening(tmp_path):
    ledger = Ledger.in_folder(tmp_path)
    unit = ledger.unit("alice", "mail", "INBOX")
    ledger.update_unit(unit.id, cursor={"uidvalidity": 7, "uidnext": 42})
    ledger.close()
    again = Ledger.in_folder(tmp_path).unit("alice", "mail", "INBOX")
    assert again.cursor == {"uidvalidity": 7, "uidnext": 42}


def test_only_marking_in_flight_waits_for_the_disk(tmp_path):
    """The writes that commit with SQLite's FULL sync: marking items in flight (what a power
    cut must not lose); every other write commits with NORMAL, flushed by the next mark."""
    from sqlalchemy import event

    ledger = Ledger.in_folder(tmp_path)
    # Each connection starts at FULL; a write changes it only when it needs another level.
    level: dict[int, str] = {}
    writes: list[tuple[str, str]] = []

    def seen(connection, cursor, statement, *args):
        words = statement.split()
        now = level.setdefault(id(connection.connection.dbapi_connection), "FULL")
        if statement.startswith("PRAGMA synchronous="):
            level[id(connection.connection.dbapi_connection)] = statement.split("=", 1)[1]
        elif words[0] in {"INSERT", "UPDATE"}:
            writes.append((words[2 if words[0] == "INSERT" else 1], now))

    ledger.close()
    event.listen(ledger.engine, "before_cursor_execute", seen)
    unit = ledger.unit("alice", "mail", "INBOX")
    writes.clear()
    ledger.update_unit(unit.id, status="running")
    ledger.mark_inflight(unit.id, [record("1:1")])
    ledger.record_outcomes(unit.id, [{"source_id": "1:1", "target_ref": "9:1"}])
    ledger.refresh_counts(unit.id)
    assert writes == [("units", "NORMAL"), ("items", "FULL"), ("items", "NORMAL"),
                      ("units", "NORMAL")]
