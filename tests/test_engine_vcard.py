"""End to end: a folder of .vcf files as old and new exports leave them (2.1, 3.0 with a
photo, 4.0 with a photo, a 4.0 group, a broken photo) moved by ``bascule run`` into a real
Cyrus and a real Radicale, then ``bascule verify``; the target read back with plain HTTP and
vobject."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import bascule, report
from tests.test_dav_contacts import (
    CARDS,
    GROUPS,
    PHOTOS,
    Account,
    card_at,
    kind_and_members,
    photo_of,
)
from tests.test_engine_dav import collections

AMELIE = "amelie.lefevre@ville-exemple.fr"
PASSWORD = "amelie-target"
FOLDER = "Carnet"


def write_batch(folder: Path, base_url: str, profile: str) -> Path:
    export = folder / "export" / AMELIE / "contacts" / FOLDER
    export.mkdir(parents=True)
    for name, text in CARDS.items():
        (export / name).write_bytes(text.encode("utf-8"))
    (folder / "users.csv").write_text(
        "source,target,source_secret,target_secret\n"
        f"{AMELIE},{AMELIE},,env:AMELIE_TARGET\n", encoding="utf-8")
    path = folder / "batch.toml"
    path.write_text(f"""
name = "carnets"
workloads = ["contacts"]
[source]
type = "folder"
path = "export"
[targets.contacts]
type = "dav"
url = "{base_url}/"
profile = "{profile}"
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


@pytest.mark.parametrize("server", ["cyrus", "radicale"])
def test_a_folder_of_mixed_vcards_lands_and_verifies(server, request, tmp_path, monkeypatch):
    if server == "cyrus":
        target = request.getfixturevalue("cyrus_factory")({AMELIE: PASSWORD})
    else:
        target = request.getfixturevalue("radicale")
        target.add_user(AMELIE, PASSWORD)
    monkeypatch.setenv("AMELIE_TARGET", PASSWORD)
    batch = write_batch(tmp_path, target.base_url, server)

    code, output = bascule("run", str(batch))
    assert code == 0, output
    ran = report(tmp_path, "run")
    assert ran["summary"]["copied"] == len(CARDS)
    assert [(row["source_id"], row["code"]) for row in ran["entries"]
            if row.get("code") == "photo_unreadable"] == [("abimee.vcf", "photo_unreadable")]

    code, output = bascule("verify", str(batch))
    assert code == 0, output
    verified = report(tmp_path, "verify")["summary"]
    assert (verified["checked"], verified["mismatches"]) == (len(CARDS), 0)

    reader = Account(server, target.base_url, AMELIE, PASSWORD)
    home = (f"/dav/addressbooks/user/{AMELIE}/" if server == "cyrus" else f"/{AMELIE}/")
    book = collections(target, home)[FOLDER].path
    for name, image in PHOTOS.items():
        assert photo_of(reader, book + name) == image, name
    for name, members in GROUPS.items():
        assert kind_and_members(card_at(reader, book + name)) == ("group", members), name
    assert card_at(reader, book + "sebastien.vcf").fn.value == "Sébastien Côté"
    assert photo_of(reader, book + "abimee.vcf") is None

    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert report(tmp_path, "run")["summary"]["copied"] == 0
