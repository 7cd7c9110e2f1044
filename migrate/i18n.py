"""Every sentence a person reads, in English and French, looked up by a stable code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mappings.calendar import NOTE_TEXTS as CALENDAR_NOTES
from mappings.contacts import NOTE_TEXTS as CONTACT_NOTES
from mappings.folders import REASONS

CATALOGUE: dict[str, tuple[str, str]] = {
    # batch file
    "batch_unreadable": ("cannot read the batch file: {reason}",
                         "impossible de lire le fichier de lot : {reason}"),
    "batch_not_toml": ("not valid TOML: {reason}", "TOML invalide : {reason}"),
    "batch_key_missing": ("key {key} is missing", "la clé {key} manque"),
    "batch_key_unknown": ("key {key} is not known (misspelt?)",
                          "la clé {key} est inconnue (faute de frappe ?)"),
    "batch_bad_type": ("{key}: type must be one of {expected}",
                       "{key} : le type doit être l'un de {expected}"),
    "batch_bad_value": ("{key}: {expected}", "{key} : {expected}"),
    # plan
    "no_target": ("the batch has no [target] section: only audit can run without one",
                  "le lot n'a pas de section [target] : seul audit peut s'en passer"),
    "unmapped_user": ("user {user} is not in the users table",
                      "l'utilisateur {user} n'est pas dans la table des utilisateurs"),
    "too_big_for_target": ("larger than the target accepts ({limit} bytes)",
                           "plus gros que ce que la cible accepte ({limit} octets)"),
    "internal_date_offset_lost": (
        "the target keeps dates in UTC: the time-zone offset of internal dates is not kept",
        "la cible garde les dates en UTC : le fuseau des dates internes n'est pas conservé"),
    # connection and items
    "unreachable": ("server unreachable: {detail}", "serveur injoignable : {detail}"),
    "auth_failed": ("login refused: {detail}", "connexion refusée : {detail}"),
    "tls_failed": ("TLS could not be verified: {detail}",
                   "TLS n'a pas pu être vérifié : {detail}"),
    "too_big": ("the target refused it as too big: {detail}",
                "la cible l'a refusé, trop gros : {detail}"),
    "invalid_message": ("the target refused the message: {detail}",
                        "la cible a refusé le message : {detail}"),
    "server_error": ("server error: {detail}", "erreur du serveur : {detail}"),
    "name_refused": ("the target refused the folder name: {detail}",
                     "la cible a refusé le nom de dossier : {detail}"),
    "secret_error": ("secret: {detail}", "secret : {detail}"),
    "deleted_at_source": ("deleted at the source since it was copied (left on the target)",
                          "supprimé à la source depuis sa copie (laissé sur la cible)"),
    "line_endings_converted": (
        "bare LF line endings sent as CRLF: the target stores no other kind",
        "fins de ligne LF seules envoyées en CRLF : la cible n'en garde pas d'autres"),
    "in_place_archive": (
        ("this mailbox has an In-Place Archive ({detail}), which Graph cannot read: export it "
        "another way (eDiscovery, PST) before the tenant closes"),
        ("cette boîte a une archive en ligne ({detail}), que Graph ne sait pas lire : "
        "l'exporter autrement (eDiscovery, PST) avant la fermeture du locataire")),
    "in_place_archive_unknown": (
        "could not tell whether this mailbox has an In-Place Archive ({detail})",
        "impossible de savoir si cette boîte a une archive en ligne ({detail})"),
    "flags_not_kept": ("flags the target cannot keep, left off: {detail}",
                       "drapeaux que la cible ne peut garder, laissés de côté : {detail}"),
    "hidden_folder_skipped": (
        "hidden folder left out (applications' data, not the user's mail)",
        "dossier caché laissé de côté (données d'applications, pas le courrier de l'utilisateur)"),
    "search_folder_skipped": (
        "search folder left out: its messages are in other folders",
        "dossier de recherche laissé de côté : ses messages sont dans d'autres dossiers"),
    "unreadable_item": ("the source would not give this item's content: {detail}",
                        "la source n'a pas fourni le contenu de cet élément : {detail}"),
    "keyword_renamed": ("category made a valid IMAP keyword: {detail}",
                        "catégorie changée en mot-clé IMAP valide : {detail}"),
    "removed_at_source": (("{detail} messages deleted at the source since the last pass "
                           "(left on the target)"),
                          ("{detail} messages supprimés à la source depuis le dernier passage "
                           "(laissés sur la cible)")),
    "error": ("{detail}", "{detail}"),
    # verify
    "missing_on_target": ("missing on the target", "absent de la cible"),
    "fingerprint_mismatch": ("bytes differ on the target", "octets différents sur la cible"),
    "flags_mismatch": ("flags differ: source {source}, target {target}",
                       "drapeaux différents : source {source}, cible {target}"),
    "changed_since_copy": ("changed at the source since it was copied: run again",
                           "modifié à la source depuis sa copie : relancer"),
    "renamed_file_name": ("file name the target cannot hold, renamed (was: {detail})",
                          "nom de fichier impossible sur la cible, renommé (avant : {detail})"),
    # CLI
    "cli_bad_batch": ("{path}: the batch file has problems:",
                      "{path} : le fichier de lot a des problèmes :"),
    "cli_reports": ("reports: {json} and {csv}", "rapports : {json} et {csv}"),
    "cli_run_summary": ("{copied} copied, {flags} flag updates, {failed} failed, {skipped} skipped",
                        ("{copied} copiés, {flags} drapeaux mis à jour, {failed} en échec, "
                         "{skipped} ignorés")),
    "cli_verify_summary": ("{checked} checked, {mismatches} mismatches",
                           "{checked} vérifiés, {mismatches} écarts"),
    "cli_plan_summary": (("{units} folders, {messages} messages, {bytes} to copy; "
                          "{errors} blocking errors, {warnings} warnings"),
                         ("{units} dossiers, {messages} messages, {bytes} à copier ; "
                          "{errors} erreurs bloquantes, {warnings} avertissements")),
    "cli_audit_summary": (("{users} users, {containers} folders, calendars, address books or "
                          "drives, {items} items, {bytes}; {errors} errors"),
                          ("{users} utilisateurs, {containers} dossiers, agendas, carnets ou "
                          "espaces de fichiers, {items} éléments, {bytes} ; {errors} erreurs")),
    "cli_init_written": ("wrote {batch} and {users}", "{batch} et {users} écrits"),
    "cli_init_exists": ("{path} exists already; nothing written",
                        "{path} existe déjà ; rien n'a été écrit"),
    "cli_demo_done": ("demo done: the target is in {target}",
                      "démonstration terminée : la cible est dans {target}"),
    "cli_unknown_user": ("--users names {user}, not in the users table",
                         "--users désigne {user}, absent de la table des utilisateurs"),
}
CATALOGUE.update(REASONS)
CATALOGUE.update(CALENDAR_NOTES)
CATALOGUE.update(CONTACT_NOTES)
CATALOGUE.update({
    "mailbox_zone_unknown": ("the mailbox's time zone ({detail}) is unknown: UTC is used",
                             "fuseau de la boîte ({detail}) inconnu : UTC est utilisé"),
    "online_meeting_link_total": (
        "{detail} events carry an online-meeting link that stops working when the tenant closes",
        ("{detail} événements portent un lien de réunion en ligne qui cessera de fonctionner "
        "à la fermeture du locataire")),
    "orphan_occurrence_total": ("{detail} occurrences without their series, kept as single events",
                                ("{detail} occurrences sans leur série, gardées comme événements "
                                "simples")),
    "zone_unknown_total": (("{detail} events in a time zone that is not known, read in the "
                           "mailbox's zone"),
                           "{detail} événements dans un fuseau inconnu, lus dans celui de la boîte"),
    "series_start_moved_total": ("{detail} series start on their first real occurrence",
                                 "{detail} séries commencent à leur première occurrence réelle"),
    "recurrence_unknown_total": ("{detail} series with a pattern that could not be read",
                                 "{detail} séries dont la récurrence n'a pu être lue"),
    "sensitivity_personal_total": ("{detail} personal events marked private",
                                   "{detail} événements personnels marqués privés"),
    "kept_as_x_property_total": ("{detail} contact fields kept as X- properties",
                                 "{detail} champs de contact gardés en propriétés X-"),
    "dropped_total": ("{detail} contact fields with no vCard equivalent, dropped",
                      "{detail} champs de contact sans équivalent vCard, abandonnés"),
    "display_name_missing_total": ("{detail} contacts without a display name, one was made",
                                   "{detail} contacts sans nom affiché, un nom a été composé"),
    "im_address_assumed_sip_total": ("{detail} instant-messaging addresses taken as SIP",
                                     "{detail} adresses de messagerie instantanée lues comme SIP"),
    "birthday_ambiguous_total": ("{detail} birthdays whose day may be off by one",
                                 "{detail} anniversaires dont le jour peut être décalé d'un jour"),
    "birthday_unreadable_total": ("{detail} birthdays that could not be read",
                                  "{detail} anniversaires illisibles"),
    "photo_type_unknown_total": ("{detail} contact photos of an unknown image type",
                                 "{detail} photos de contact d'un type d'image inconnu"),
    "not_a_file": ("not a file (e.g. a OneNote notebook): not copied",
                   "pas un fichier (par exemple un bloc-notes OneNote) : non copié"),
    "hash_mismatch": ("the content read does not match the hash the source gives: {detail}",
                      ("le contenu lu ne correspond pas à l'empreinte donnée par la source : "
                      "{detail}")),
    # local stores
    "store_is_symlink": ("the store is a symbolic link (to {detail}): not followed, not read",
                         ("le dossier source est un lien symbolique (vers {detail}) : non suivi, "
                          "non lu")),
    "symlink_skipped": ("symbolic link (to {detail}): not followed, left out",
                        "lien symbolique (vers {detail}) : non suivi, laissé de côté"),
    "hidden_file_skipped": ("hidden file (its name starts with a dot): left out",
                            "fichier caché (son nom commence par un point) : laissé de côté"),
    "special_file_skipped": (("not a regular file (a pipe, a socket, a device or a folder): "
                              "left out"),
                             ("pas un fichier ordinaire (tube, socket, périphérique ou dossier) : "
                              "laissé de côté")),
    "empty_file_skipped": ("empty file: no message in it, left out",
                           "fichier vide : aucun message dedans, laissé de côté"),
    "not_a_message_skipped": ("does not start like a mail message (a header line): left out",
                              ("ne commence pas comme un message (par une ligne d'en-tête) : "
                               "laissé de côté")),
    "not_mbox_skipped": ("not an mbox file (it does not start with a \"From \" line): left out",
                         ("pas un fichier mbox (il ne commence pas par une ligne « From ») : "
                          "laissé de côté")),
    "not_eml_skipped": ("not an .eml file: left out", "pas un fichier .eml : laissé de côté"),
    "not_maildir_skipped": (("not part of a Maildir (a message belongs in cur/ or new/, a folder "
                             "is a .Name directory with cur/ or new/): left out"),
                            ("ne fait pas partie d'un Maildir (un message va dans cur/ ou new/, un "
                             "dossier est un répertoire .Nom avec cur/ ou new/) : laissé de côté")),
    "outlook_msg_skipped": (("Outlook .msg file: convert it to .eml first (e.g. with msgconvert), "
                             "then run again; left out"),
                            ("fichier Outlook .msg : le convertir d'abord en .eml (par exemple avec "
                             "msgconvert), puis relancer ; laissé de côté")),
    "outlook_pst_skipped": (("Outlook data file (.pst, .ost): convert it first (e.g. with readpst) "
                             "into an mbox or .eml export; left out"),
                            ("fichier de données Outlook (.pst, .ost) : le convertir d'abord (par "
                             "exemple avec readpst) en export mbox ou .eml ; laissé de côté")),
})


class _Params(dict):
    """Placeholders a note does not give are filled with its detail, its only text."""

    def __missing__(self, key: str) -> object:
        return self.get("detail", "")


def language() -> str:
    """``fr`` or ``en``: BASCULE_LANG first, then the locale variables."""
    for name in ("BASCULE_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            return "fr" if value.lower().startswith("fr") else "en"
    return "en"


@dataclass(frozen=True)
class Text:
    """A sentence to show, kept as its code and parameters until it is rendered."""

    code: str
    params: dict[str, object] = field(default_factory=dict)
    written: tuple[str, str] | None = None
    """English and French already written by the layer that found the problem."""

    @classmethod
    def of(cls, code: str, **params: object) -> Text:
        return cls(code, params)

    @classmethod
    def both(cls, code: str, en: str, fr: str) -> Text:
        return cls(code, {}, (en, fr))

    def render(self, lang: str) -> str:
        if self.written:
            return self.written[1] if lang == "fr" else self.written[0]
        en, fr = CATALOGUE.get(self.code, ("{detail}", "{detail}"))
        template = fr if lang == "fr" else en
        params = _Params({"detail": "", **self.params})
        try:
            return template.format_map(params)
        except (IndexError, ValueError):
            return template

    @property
    def en(self) -> str:
        return self.render("en")

    @property
    def fr(self) -> str:
        return self.render("fr")

    def __str__(self) -> str:
        return self.render(language())
