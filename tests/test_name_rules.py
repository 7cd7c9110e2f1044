"""The stated rule that renames what a target of files refuses (``mappings.names``): each
case of the rule, on each set of rules a target declares."""

from __future__ import annotations

import pytest

from mappings.names import (
    NEXTCLOUD,
    NEXTCLOUD_WINDOWS,
    POSIX,
    RENAMED_CHARACTER,
    RENAMED_ENDING,
    RENAMED_LONG,
    RENAMED_RESERVED,
    WINDOWS,
    NameRules,
    PathTooLong,
    distinct,
)


@pytest.mark.parametrize(("rules", "name", "renamed", "code"), [
    (POSIX, "Budget: 2024?.xlsx", "Budget: 2024?.xlsx", None),
    (POSIX, "a/b\0c", "a_b_c", RENAMED_CHARACTER),
    (POSIX, "..", "_..", RENAMED_RESERVED),
    (POSIX, "", "_", RENAMED_RESERVED),
    (WINDOWS, "Budget: 2024?.xlsx", "Budget_ 2024_.xlsx", RENAMED_CHARACTER),
    (WINDOWS, "tab\there", "tab_here", RENAMED_CHARACTER),
    (WINDOWS, "CON", "CON_", RENAMED_RESERVED),
    (WINDOWS, "lpt\u00b9.tar.gz", "lpt\u00b9_.tar.gz", RENAMED_RESERVED),
    (WINDOWS, "console.txt", "console.txt", None),
    (WINDOWS, "notes.", "notes._", RENAMED_ENDING),
    (WINDOWS, "fin ", "fin _", RENAMED_ENDING),
    (WINDOWS, "Film.PART", "Film.PART", None),
    (NEXTCLOUD, "Film.PART", "Film.PART_", RENAMED_ENDING),
    (NEXTCLOUD, "a\\b:c", "a_b:c", RENAMED_CHARACTER),
    (NEXTCLOUD, ".HTACCESS", "_.HTACCESS", RENAMED_RESERVED),
    (NEXTCLOUD, "CON.txt", "CON.txt", None),
    (NEXTCLOUD_WINDOWS, "CON.txt", "CON_.txt", RENAMED_RESERVED),
    (NEXTCLOUD_WINDOWS, "x.filepart", "x.filepart_", RENAMED_ENDING),
    (POSIX, "Cafe\u0301.txt", "Cafe\u0301.txt", None),  # the form the source gave
])
def test_each_case_of_the_rule(rules, name, renamed, code):
    assert rules.rename(name) == (renamed, code)
    assert rules.rename(renamed) == (renamed, None)  # a second pass finds the same name


def test_a_long_name_keeps_its_extension_and_two_alike_stay_apart():
    first, code = POSIX.rename("é" * 200 + ".docx")
    second, _ = POSIX.rename("é" * 199 + "e.docx")
    assert code == RENAMED_LONG and first != second
    assert all(len(n.encode()) <= 255 and n.endswith(".docx") for n in (first, second))
    wide, _ = NEXTCLOUD.rename("e" * 252)
    assert len(wide) == 250 and "~" in wide  # 250 characters there
    accented, _ = NEXTCLOUD.rename("é" * 200)
    assert len(accented.encode()) <= 255 and "~" in accented  # and 255 bytes


def test_a_path_over_the_longest_is_fitted_by_its_last_name_or_refused():
    rules = NameRules("short-paths", max_path_characters=40)
    names, changes = rules.path(["Drive", "Dossier", "un nom bien trop long pour tenir.pdf"])
    assert len("/".join(names)) == 40 and names[-1].endswith(".pdf")
    assert changes == [(names[-1], "un nom bien trop long pour tenir.pdf", RENAMED_LONG)]
    with pytest.raises(PathTooLong):
        rules.path(["Drive", "un dossier bien trop long pour tenir", "a.pdf"])


def test_a_name_kept_apart_keeps_its_extension():
    assert distinct("budget.pdf", "01ABC") == f"budget~{distinct('x', '01ABC')[2:]}.pdf"
    assert distinct("LISEZMOI", "id").startswith("LISEZMOI~")
    assert distinct("budget.pdf", "a") != distinct("budget.pdf", "b")
