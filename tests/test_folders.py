"""The folder plan: where each source folder lands on the target, and the reason given."""

from __future__ import annotations

import pytest

from mappings.folders import (
    NON_MAIL_NAMES,
    REASON_CODES,
    REPLACEMENT,
    WELL_KNOWN_NAMES,
    FolderDecision,
    FolderRules,
    FolderRulesError,
)
from reports.i18n import Text

DOVECOT_SPECIAL = {
    "sent": ("Sent",), "drafts": ("Drafts",), "trash": ("Trash",), "junk": ("Junk",),
    "archive": ("Archive",),
}


def plan(
    paths: list[str],
    rules: FolderRules | None = None,
    *,
    separator: str = "/",
    forbidden: str = "",
    special: dict[str, tuple[str, ...]] | None = None,
    roles: dict[str, str] | None = None,
) -> dict[str, FolderDecision]:
    """Decisions keyed by the source path joined with '/'."""
    roles = roles or {}
    folders = [(tuple(p.split("/")), roles.get(p)) for p in paths]
    decisions = (rules or FolderRules()).decide(
        folders,
        target_separator=separator,
        target_forbidden=forbidden,
        target_special=DOVECOT_SPECIAL if special is None else special,
    )
    assert len(decisions) == len(paths)
    return {"/".join(d.source): d for d in decisions}


def target(decision: FolderDecision) -> str | None:
    return None if decision.target is None else "/".join(decision.target)


@pytest.mark.parametrize(
    ("names", "lang"),
    [
        (["Inbox", "Sent Items", "Drafts", "Deleted Items", "Junk Email", "Archive"], "en"),
        (["Boîte de réception", "Éléments envoyés", "Brouillons", "Éléments supprimés",
          "Courrier indésirable", "Archives"], "fr"),
        (["Posteingang", "Gesendete Elemente", "Entwürfe", "Gelöschte Elemente",
          "Junk-E-Mail", "Archiv"], "de"),
        (["Bandeja de entrada", "Elementos enviados", "Borradores", "Elementos eliminados",
          "Correo no deseado", "Archivo"], "es"),
        (["Posta in arrivo", "Posta inviata", "Bozze", "Posta eliminata",
          "Posta indesiderata", "Archivio"], "it"),
        (["Postvak IN", "Verzonden items", "Concepten", "Verwijderde items",
          "Ongewenste e-mail", "Archief"], "nl"),
    ],
)
def test_well_known_names_land_on_the_targets_role_folders(names: list[str], lang: str) -> None:
    decisions = plan(names)
    landed = [target(decisions[name]) for name in names]
    assert landed == ["INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"], lang
    roles = [decisions[name].role for name in names]
    assert roles == ["inbox", "sent", "drafts", "trash", "junk", "archive"]
    assert all(decisions[name].reasons == ("well_known_name",) for name in names)


def test_names_are_matched_without_case_but_with_their_accents() -> None:
    decisions = plan(["ÉLÉMENTS ENVOYÉS", "Elements supprimes", "inbox"])
    assert target(decisions["ÉLÉMENTS ENVOYÉS"]) == "Sent"
    assert target(decisions["inbox"]) == "INBOX"
    assert decisions["Elements supprimes"].role is None
    assert target(decisions["Elements supprimes"]) == "Elements supprimes"


def test_children_of_a_well_known_folder_keep_their_names_under_the_role_folder() -> None:
    decisions = plan(["Boîte de réception", "Boîte de réception/Mairie",
                      "Éléments envoyés", "Éléments envoyés/2023/Janvier"])
    assert target(decisions["Boîte de réception/Mairie"]) == "INBOX/Mairie"
    assert target(decisions["Éléments envoyés/2023/Janvier"]) == "Sent/2023/Janvier"
    assert decisions["Éléments envoyés/2023/Janvier"].role is None


def test_a_well_known_name_below_the_top_level_is_an_ordinary_folder() -> None:
    decisions = plan(["Projets", "Projets/Brouillons", "Projets/Gesendete Elemente"])
    assert target(decisions["Projets/Brouillons"]) == "Projets/Brouillons"
    assert decisions["Projets/Brouillons"].role is None
    assert decisions["Projets/Gesendete Elemente"].reasons == ()


def test_special_use_role_wins_over_names_wherever_the_folder_is() -> None:
    decisions = plan(
        ["Archivage/Courrier envoyé", "Sent"], roles={"Archivage/Courrier envoyé": "\\Sent"}
    )
    sent = decisions["Archivage/Courrier envoyé"]
    assert (target(sent), sent.role, sent.reasons) == ("Sent", "sent", ("special_use",))
    # A second folder named for the role (a "Sent" made by an IMAP client) merges into it,
    # and the report says why.
    other = decisions["Sent"]
    assert (target(other), other.role, other.reasons) == ("Sent", "sent", ("well_known_name",))


def test_several_folders_of_one_role_merge_into_the_role_folder_without_suffix() -> None:
    decisions = plan(["Archive", "Archives", "Sent", "Sent Items"])
    assert target(decisions["Archive"]) == target(decisions["Archives"]) == "Archive"
    assert target(decisions["Sent"]) == target(decisions["Sent Items"]) == "Sent"
    assert not any("renamed_collision" in d.reasons for d in decisions.values())


def test_a_server_nesting_under_inbox_has_its_well_known_folders_one_level_down() -> None:
    decisions = plan(["INBOX", "INBOX/Sent", "INBOX/Trash", "INBOX/Clients"])
    assert target(decisions["INBOX/Sent"]) == "Sent"
    assert target(decisions["INBOX/Trash"]) == "Trash"
    assert target(decisions["INBOX/Clients"]) == "INBOX/Clients"


def test_an_exchange_inbox_child_named_like_a_well_known_folder_stays_a_child() -> None:
    decisions = plan(["Inbox", "Inbox/Sent Items", "Drafts"])
    assert target(decisions["Inbox/Sent Items"]) == "INBOX/Sent Items"
    assert decisions["Inbox/Sent Items"].role is None


def test_gmail_folders_one_level_down_and_its_virtual_folders() -> None:
    decisions = plan(["INBOX", "[Gmail]/Sent Mail", "[Gmail]/Spam", "[Gmail]/Trash",
                      "[Gmail]/All Mail", "[Gmail]/Starred", "Perso"])
    assert target(decisions["[Gmail]/Sent Mail"]) == "Sent"
    assert target(decisions["[Gmail]/Spam"]) == "Junk"
    assert target(decisions["[Gmail]/Trash"]) == "Trash"
    for virtual in ("[Gmail]/All Mail", "[Gmail]/Starred"):
        assert decisions[virtual].action == "skip"
        assert decisions[virtual].reasons == ("virtual_folder",)
    assert target(decisions["Perso"]) == "Perso"


def test_a_role_the_target_lacks_keeps_the_source_name() -> None:
    decisions = plan(["Archives", "Éléments envoyés"], special={"sent": ("Sent",)})
    archive = decisions["Archives"]
    assert (target(archive), archive.role) == ("Archives", "archive")
    assert archive.reasons == ("well_known_name", "role_not_on_target")
    assert target(decisions["Éléments envoyés"]) == "Sent"


def test_the_inbox_lands_on_INBOX_when_the_target_named_no_inbox() -> None:
    assert target(plan(["Posteingang"], special={})["Posteingang"]) == "INBOX"


def test_a_target_nesting_under_inbox_receives_the_role_folders_there() -> None:
    special = {"inbox": ("INBOX",), "sent": ("INBOX", "Sent"), "trash": ("INBOX", "Trash")}
    decisions = plan(["Inbox", "Gesendete Elemente", "Gelöschte Elemente/Alt"],
                     special=special, separator=".")
    assert target(decisions["Gesendete Elemente"]) == "INBOX/Sent"
    assert target(decisions["Gelöschte Elemente/Alt"]) == "INBOX/Trash/Alt"


@pytest.mark.parametrize(
    "name",
    ["Calendar", "Calendrier", "Kalender", "Calendario", "Contacts", "Kontakte",
     "Contactos", "Tâches", "Aufgaben", "Tareas", "Journal", "Notes", "Notizen", "Notas",
     "Sync Issues", "Problèmes de synchronisation", "Synchronisierungsprobleme",
     "Problemas de sincronización", "Conversation History", "Historique des conversations",
     "Unterhaltungsverlauf", "Outbox", "Boîte d'envoi", "Postausgang", "Bandeja de salida",
     "RSS Feeds", "Flux RSS", "Social Activity Notifications", "Yammer Root", "Files"],
)
def test_non_mail_folders_are_skipped_with_their_children(name: str) -> None:
    decisions = plan([name, f"{name}/Sous-dossier", "Clients"])
    assert decisions[name].action == "skip"
    assert decisions[name].target is None
    assert decisions[name].reasons == ("non_mail_folder",)
    child = decisions[f"{name}/Sous-dossier"]
    assert (child.action, child.reasons, child.detail) == ("skip", ("parent_skipped",), name)
    assert target(decisions["Clients"]) == "Clients"


def test_sync_issues_children_in_french_are_skipped_with_their_parent() -> None:
    parent = "Problèmes de synchronisation"
    children = ["Conflits", "Échecs locaux", "Échecs du serveur"]
    decisions = plan([parent] + [f"{parent}/{c}" for c in children])
    assert all(d.action == "skip" for d in decisions.values())


def test_a_non_mail_name_below_the_top_level_is_mail() -> None:
    decisions = plan(["Mairie", "Mairie/Calendrier"])
    assert target(decisions["Mairie/Calendrier"]) == "Mairie/Calendrier"


def test_include_non_mail_copies_them() -> None:
    decisions = plan(["Kalender", "Kalender/Feiertage", "Notizen"],
                     FolderRules(include_non_mail=True))
    assert target(decisions["Kalender"]) == "Kalender"
    assert target(decisions["Kalender/Feiertage"]) == "Kalender/Feiertage"
    assert decisions["Notizen"].action == "copy"


def test_exclude_globs_on_the_path_and_on_the_last_segment() -> None:
    rules = FolderRules(exclude=["Archives/20*", "brouillon*"])
    decisions = plan(
        ["Archives", "Archives/2019", "Archives/2019/Q1", "Archives/Anciens",
         "Projets", "Projets/Brouillons v2", "Projets/Final"],
        rules,
    )
    excluded = decisions["Archives/2019"]
    assert (excluded.action, excluded.reasons, excluded.detail) == (
        "skip", ("excluded",), "Archives/20*")
    assert decisions["Archives/2019/Q1"].action == "skip"
    assert decisions["Projets/Brouillons v2"].detail == "brouillon*"
    kept = {k for k, d in decisions.items() if d.action == "copy"}
    assert kept == {"Archives", "Archives/Anciens", "Projets", "Projets/Final"}


def test_exclude_skips_a_well_known_folder_too() -> None:
    decisions = plan(["Junk Email", "Inbox"], FolderRules(exclude=["junk*"]))
    assert decisions["Junk Email"].action == "skip"
    assert decisions["Junk Email"].reasons == ("excluded",)


def test_renames_move_a_folder_and_its_children() -> None:
    rules = FolderRules(renames={"Ancien/Projets": "Archives/Projets 2019"})
    decisions = plan(["Ancien", "Ancien/Projets", "Ancien/Projets/Voirie", "Ancien/Autre"], rules)
    assert target(decisions["Ancien/Projets"]) == "Archives/Projets 2019"
    assert decisions["Ancien/Projets"].reasons == ("renamed_by_batch",)
    assert target(decisions["Ancien/Projets/Voirie"]) == "Archives/Projets 2019/Voirie"
    assert target(decisions["Ancien/Autre"]) == "Ancien/Autre"


def test_a_rename_forces_a_folder_the_rules_would_skip_or_place() -> None:
    rules = FolderRules(renames={"Journal": "Journal", "Brouillons": "Brouillons papier"})
    decisions = plan(["Journal", "Brouillons"], rules)
    assert target(decisions["Journal"]) == "Journal"
    assert target(decisions["Brouillons"]) == "Brouillons papier"
    assert decisions["Brouillons"].role is None


def test_a_rename_target_still_follows_the_target_name_rules() -> None:
    rules = FolderRules(renames={"Vieux": "Archives/v1.2"})
    decision = plan(["Vieux"], rules, separator=".")["Vieux"]
    assert target(decision) == "Archives/v1_2"
    assert decision.reasons == ("renamed_by_batch", "renamed_separator")
    assert decision.detail == "Archives/v1.2"


@pytest.mark.parametrize("bad", [{"A": ""}, {"": "B"}, {"A": "B//C"}])
def test_a_rename_with_an_empty_side_is_refused_in_both_languages(bad: dict[str, str]) -> None:
    with pytest.raises(FolderRulesError) as caught:
        FolderRules(renames=bad)
    assert caught.value.code == "folder_rename_invalid"
    said = Text.of(caught.value.code, **caught.value.params)
    assert "renommage" in said.fr and "rename" in said.en


def test_a_segment_holding_the_target_separator_is_renamed() -> None:
    decisions = plan(["Projets", "Projets/v1.2", "Projets/v1.2/Notes"], separator=".")
    renamed = decisions["Projets/v1.2"]
    assert target(renamed) == f"Projets/v1{REPLACEMENT}2"
    assert renamed.reasons == ("renamed_separator",)
    assert renamed.detail == "v1.2"
    # Children follow the renamed parent.
    assert target(decisions["Projets/v1.2/Notes"]) == "Projets/v1_2/Notes"


def test_forbidden_characters_and_reserved_names_are_replaced() -> None:
    decisions = plan(["Factures: 2024*", "..", "A/."], forbidden=":*")
    assert target(decisions["Factures: 2024*"]) == "Factures_ 2024_"
    assert decisions["Factures: 2024*"].reasons == ("renamed_forbidden_char",)
    assert target(decisions[".."]) == "__"
    assert decisions[".."].reasons == ("renamed_reserved_name",)
    assert target(decisions["A/."]) == "A/_"


def test_a_collision_gives_the_renamed_folder_a_suffix_not_the_valid_one() -> None:
    decisions = plan(["v1.2", "v1_2", "v1:2"], separator=".", forbidden=":")
    assert target(decisions["v1_2"]) == "v1_2"
    assert decisions["v1_2"].reasons == ()
    assert target(decisions["v1.2"]) == "v1_2 (2)"
    assert decisions["v1.2"].reasons == ("renamed_separator", "renamed_collision")
    assert decisions["v1.2"].detail == "v1_2"
    assert target(decisions["v1:2"]) == "v1_2 (3)"
    assert decisions["v1:2"].reasons == ("renamed_forbidden_char", "renamed_collision")


def test_a_collision_with_a_folder_the_batch_renamed() -> None:
    rules = FolderRules(renames={"Old": "Clients"})
    decisions = plan(["Old", "Clients", "Clients/Dupont"], rules)
    assert target(decisions["Old"]) == "Clients"
    assert target(decisions["Clients"]) == "Clients (2)"
    assert target(decisions["Clients/Dupont"]) == "Clients (2)/Dupont"


def test_replacement_character_refused_by_the_target_is_an_error() -> None:
    with pytest.raises(FolderRulesError) as caught:
        plan(["A"], forbidden="_")
    assert caught.value.code == "folder_replacement_refused"


def test_order_is_parents_before_children_whatever_the_input_order() -> None:
    paths = ["Z/Y/X", "Inbox/B", "Z", "Inbox", "A", "Z/Y"]
    forward = list(plan(paths))
    backward = list(plan(list(reversed(paths))))
    assert forward == backward
    for key in forward:
        if "/" in key:
            assert forward.index(key.rsplit("/", 1)[0]) < forward.index(key)


def test_a_folder_whose_parent_is_not_listed_is_placed_under_the_parents_name() -> None:
    # Servers leave out \Noselect parents; their children are still listed.
    decisions = plan(["Clients/Dupont", "Calendrier/Anniversaires"])
    assert target(decisions["Clients/Dupont"]) == "Clients/Dupont"
    assert decisions["Calendrier/Anniversaires"].reasons == ("parent_skipped",)


def test_every_reason_code_has_english_and_french_text() -> None:
    decisions = plan(
        ["Inbox", "Sent", "Calendar", "Calendar/Sub", "v1.2", "v1_2", "x:", "..", "Old",
         "[Gmail]/All Mail", "Archives", "Junk"],
        FolderRules(exclude=["Junk"], renames={"Old": "New"}),
        separator=".", forbidden=":", special={}, roles={"Sent": "\\Sent"},
    )
    used = {reason for d in decisions.values() for reason in d.reasons}
    assert used <= set(REASON_CODES)
    assert {"special_use", "well_known_name", "non_mail_folder", "excluded", "renamed_by_batch",
            "renamed_separator", "renamed_collision", "parent_skipped"} <= used
    said = [Text.of(code, detail="x") for code in REASON_CODES]
    assert all(text.en and text.fr and text.en != text.fr for text in said)


def test_name_tables_hold_no_name_twice() -> None:
    names = [n.casefold() for names in WELL_KNOWN_NAMES.values() for n in names]
    names += [n.casefold() for n in NON_MAIL_NAMES]
    assert len(names) == len(set(names))
