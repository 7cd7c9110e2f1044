"""Bad input on the way to a CalDAV server: each object the server cannot take is one clear
line in the report, and the run goes on with the others."""

from __future__ import annotations

import re

import pytest
import requests

from tests.cli import bascule, report

LOGIN = "amelie.lefevre@ville-exemple.fr"
PASSWORD = "amelie-target"


def vevent(uid: str | None, extra: str = "", start: str = "DTSTART:20300105T100000Z") -> bytes:
    uid_line = f"UID:{uid}\r\n" if uid else ""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bascule//tests//EN\r\n"
            f"BEGIN:VEVENT\r\n{uid_line}DTSTAMP:20300101T090000Z\r\n{start}\r\n"
            f"DURATION:PT1H\r\nSUMMARY:Conseil\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
            ).encode()


BAD = {
    "sans-uid.ics": vevent(None),
    "regle-invalide.ics": vevent("regle-invalide", "RRULE:FREQ=SOUVENT;COUNT=deux\r\n"),
    "fuseau-inconnu.ics": vevent("fuseau-inconnu",
                                 start="DTSTART;TZID=Mars/Olympus_Mons:20300105T100000"),
}


@pytest.mark.parametrize("server_name", ["cyrus", "radicale"])
def test_each_refused_object_is_a_line_and_the_others_land(server_name, request, tmp_path,
                                                          monkeypatch):
    home = {"cyrus": f"/dav/calendars/user/{LOGIN}/", "radicale": f"/{LOGIN}/"}
    if server_name == "cyrus":
        server = request.getfixturevalue("cyrus_factory")({LOGIN: PASSWORD})
    else:
        server = request.getfixturevalue("radicale")
        server.add_user(LOGIN, PASSWORD)
    agenda = tmp_path / "export" / LOGIN / "calendar" / "Agenda"
    agenda.mkdir(parents=True)
    for number in range(3):
        (agenda / f"bon-{number}.ics").write_bytes(vevent(f"bon-{number}"))
    for name, body in BAD.items():
        (agenda / name).write_bytes(body)
    # One event in two calendars, under one UID: Cyrus keeps one per UID across a user's
    # calendars, Radicale one per calendar.
    mairie = agenda.parent / "Mairie"
    mairie.mkdir()
    for folder in (agenda, mairie):
        (folder / "partage.ics").write_bytes(vevent("partage"))
    (tmp_path / "users.csv").write_text(
        f"source,target,source_secret,target_secret\n{LOGIN},{LOGIN},,env:TARGET\n",
        encoding="utf-8")
    monkeypatch.setenv("TARGET", PASSWORD)
    batch = tmp_path / "batch.toml"
    batch.write_text(f"""
name = "mauvais"
workloads = ["calendar"]
[source]
type = "folder"
path = "export"
[targets.calendar]
type = "dav"
url = "{server.base_url}/"
[run]
work_dir = "work"
""", encoding="utf-8")
    code, output = bascule("run", str(batch))
    assert code == 1, output
    run = report(tmp_path, "run")
    one_per_user = server_name == "cyrus"
    assert (run["summary"]["copied"], run["summary"]["failed"]) == (
        (5, 3) if one_per_user else (6, 2))
    said = {(entry.get("source_id"), entry.get("code")): entry for entry in run["entries"]
            if entry.get("code")}
    taken = [entry for entry in run["entries"] if entry.get("code") == "dav_uid_taken"]
    assert len(taken) == (1 if one_per_user else 0), taken
    if taken:
        assert taken[0]["source_id"] == "partage.ics"
        assert "même UID" in taken[0]["message_fr"] and "/partage.ics" in taken[0]["message_fr"]
    assert said[("sans-uid.ics", "dav_no_uid")]["message_fr"].startswith("sans UID")
    refused = said[("regle-invalide.ics", "dav_invalid_object")]
    assert refused["message_en"].startswith("the server refused it as invalid: ")
    unknown = said[("fuseau-inconnu.ics", "object_zone_unknown")]
    assert "Mars/Olympus_Mons" in unknown["message_fr"]
    # What landed, read with plain HTTP: the three good ones and the one with an unknown zone.
    def members(path: str) -> list[str]:
        answer = requests.request("PROPFIND", server.base_url + path, headers={"Depth": "1"},
                                  auth=(LOGIN, PASSWORD), timeout=30)
        assert answer.status_code == 207, answer.text
        return re.findall(r"<(?:\w+:)?href>([^<]+)</", answer.text)[1:]

    landed = sorted(re.sub(r".*/|\.ics$", "", href) for collection in members(home[server_name])
                    if collection.rstrip("/").endswith("-0fdf485f")
                    for href in members(collection) if href.endswith(".ics"))
    assert [name for name in landed if name != "partage"] == [
        "bon-0", "bon-1", "bon-2", "fuseau-inconnu"], landed
