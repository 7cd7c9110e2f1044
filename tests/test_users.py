"""The users table as a DSI writes it, and every problem it may hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from mappings.users import UserMapping, UsersFileError, UsersFileInvalid, load_users
from reports.i18n import Text

HEADER = "source,target,source_secret,target_secret\n"


def write(tmp_path: Path, text: str, *, bom: bool = False, name: str = "users.csv") -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def problems(path: Path) -> list[tuple[str, int | None]]:
    with pytest.raises(UsersFileInvalid) as caught:
        load_users(path)
    return [(error.code, error.line) for error in caught.value.errors]


def said(error: UsersFileError) -> Text:
    return Text.of(error.code, **error.params)


def test_comma_file_in_order_with_references(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER
                 + "alice@m365.ville.fr,alice@ville.fr,env:ALICE_M365,file:secrets/alice\n"
                 + "bob@m365.ville.fr,bob@ville.fr,,\n")
    users = load_users(path)
    assert list(users) == [
        UserMapping("alice@m365.ville.fr", "alice@ville.fr", "env:ALICE_M365",
                    "file:secrets/alice", 2),
        UserMapping("bob@m365.ville.fr", "bob@ville.fr", None, None, 3),
    ]
    assert len(users) == 2


def test_french_excel_semicolons_bom_crlf_blank_lines_and_extra_columns(tmp_path: Path) -> None:
    text = ("Source;Target;Source_Secret;Target_Secret;Service\r\n"
            "\r\n"
            "élodie.dupré@m365.fr;elodie.dupre@mairie.fr;;env:ELODIE;Urbanisme, voirie\r\n"
            ";;;;\r\n"
            "jürgen@m365.fr;jurgen@mairie.fr;;;\r\n")
    users = load_users(write(tmp_path, text, bom=True))
    assert [(u.source, u.target, u.target_secret, u.line) for u in users] == [
        ("élodie.dupré@m365.fr", "elodie.dupre@mairie.fr", "env:ELODIE", 3),
        ("jürgen@m365.fr", "jurgen@mairie.fr", None, 5),
    ]


def test_secret_columns_may_be_left_out(tmp_path: Path) -> None:
    users = load_users(write(tmp_path, "target,source\nalice@ville.fr,alice@m365.fr\n"))
    mapping = users.lookup("alice@m365.fr")
    assert mapping is not None
    assert (mapping.target, mapping.source_secret, mapping.target_secret) == (
        "alice@ville.fr", None, None)


def test_quoted_cells_spanning_lines_keep_the_line_they_start_on(tmp_path: Path) -> None:
    text = HEADER + 'alice@m365.fr,alice@ville.fr,,\n"bob@m365.fr",bob@ville.fr,,\n' \
        + 'carol@m365.fr,,,"a note\nover two lines"\n' + "dan@m365.fr,,,\n"
    assert problems(write(tmp_path, text)) == [
        ("users_empty_target", 4), ("users_secret_not_reference", 4), ("users_empty_target", 6)]


def test_lookup_ignores_case_and_spaces(tmp_path: Path) -> None:
    users = load_users(write(tmp_path, HEADER + " Alice@M365.fr , alice@ville.fr,,\n"))
    found = users.lookup("ALICE@m365.FR ")
    assert found is not None and found.target == "alice@ville.fr"
    assert users.lookup("bob@m365.fr") is None


def test_subset_keeps_file_order_and_lists_every_unknown_name(tmp_path: Path) -> None:
    users = load_users(write(tmp_path, HEADER + "a@x,a@y,,\nb@x,b@y,,\nc@x,c@y,,\n"))
    assert [u.source for u in users.subset(["C@X", "a@x"])] == ["a@x", "c@x"]
    with pytest.raises(UsersFileInvalid) as caught:
        users.subset(["a@x", "zoe@x", "yann@x"])
    assert [e.code for e in caught.value.errors] == ["users_unknown_user"] * 2
    zoe, yann = (said(e) for e in caught.value.errors)
    assert "zoe@x" in zoe.en and "yann@x" in yann.fr


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "absent.csv") == [("users_file_missing", None)]


def test_empty_file_and_a_file_with_only_blank_lines(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "")) == [("users_file_empty", None)]
    assert problems(write(tmp_path, "\n\n;;\n")) == [("users_file_empty", None)]


def test_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(HEADER.encode() + "élodie@x,e@y,,\n".encode("cp1252"))
    assert problems(path) == [("users_file_not_utf8", 2)]


def test_missing_columns_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "login;password\nalice;secret\n")
    assert problems(path) == [("users_column_missing", 1), ("users_column_missing", 1)]


def test_every_problem_is_collected_with_its_line(tmp_path: Path) -> None:
    text = (HEADER
            + "alice@m365.fr,alice@ville.fr,env:ALICE,\n"       # 2 fine
            + ",nobody@ville.fr,,\n"                            # 3 empty source
            + "bob@m365.fr,,,\n"                                # 4 empty target
            + "ALICE@m365.fr,alice2@ville.fr,,\n"               # 5 same source twice
            + "carol@m365.fr,Alice@Ville.fr,,\n"                # 6 two sources, one target
            + "\n"                                              # 7 blank
            + "dan@m365.fr,dan@ville.fr,Hunter2!,env:DAN\n"      # 8 literal password
            + "eve@m365.fr,eve@ville.fr,env:EVE,file:\n")       # 9 empty file reference
    path = write(tmp_path, text)
    assert problems(path) == [
        ("users_empty_source", 3),
        ("users_empty_target", 4),
        ("users_duplicate_source", 5),
        ("users_duplicate_target", 6),
        ("users_secret_not_reference", 8),
        ("users_secret_not_reference", 9),
    ]


def test_messages_in_both_languages_name_file_line_and_never_the_password(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, HEADER + "a@x,a@y,,\nb@x,a@y,Hunter2!,\n")
    with pytest.raises(UsersFileInvalid) as caught:
        load_users(path)
    errors = {e.code: e for e in caught.value.errors}
    merge = errors["users_duplicate_target"]
    assert isinstance(merge, UsersFileError)
    assert (merge.file, merge.line) == (path, 3)
    assert "line 2" in said(merge).en and "ligne 2" in said(merge).fr
    assert said(merge).en.startswith(f"{path}:3: ")
    assert said(merge).fr.startswith(f"{path}:3 : ")
    everything = [str(caught.value)] + [str(e) for e in caught.value.errors] + [
        text for e in caught.value.errors for text in (said(e).en, said(e).fr)]
    assert not any("Hunter2!" in text for text in everything)
    assert "source_secret" in said(errors["users_secret_not_reference"]).fr


def test_a_header_column_twice(tmp_path: Path) -> None:
    path = write(tmp_path, "source,target,target\na@x,a@y,b@y\n")
    assert problems(path) == [("users_column_twice", 1)]
