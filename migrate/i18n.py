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
    "no_greeting": (("not an IMAP server answering on this port, or a stalled one: {detail}"),
                    ("pas un serveur IMAP qui répond sur ce port, ou un serveur bloqué : "
                     "{detail}")),
    "timeout": ("the server stopped answering: {detail}",
                "le serveur a cessé de répondre : {detail}"),
    "connection_lost": ("connection to the server lost: {detail}",
                        "connexion au serveur perdue : {detail}"),
    "unconfirmed": (("sent, but the target never answered ({detail}): it is looked for on the "
                     "target before being sent again"),
                    ("envoyé, mais la cible n'a jamais répondu ({detail}) : il est recherché "
                     "sur la cible avant tout nouvel envoi")),
    "over_quota": ("the target mailbox is full: {detail}",
                   "la boîte de la cible est pleine : {detail}"),
    "no_store": ("no export for this user: {detail}", "pas d'export pour cet utilisateur : {detail}"),
    "unsafe_name": ("name refused, it would leave its folder: {detail}",
                    "nom refusé, il sortirait de son dossier : {detail}"),
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
    # run: faults and how it ended
    "mailbox_full": (("the target mailbox is full: {count} messages ({size} bytes) not copied; "
                      "raise its quota and run again"),
                     ("la boîte de la cible est pleine : {count} messages ({size} octets) non "
                      "copiés ; augmenter son quota et relancer")),
    "found_on_target": (("{count} messages already on the target, found by content: recorded, "
                         "not sent again"),
                        ("{count} messages déjà sur la cible, retrouvés par leur contenu : "
                         "enregistrés, pas renvoyés")),
    "target_not_empty": (("target folder not empty: {count} messages the ledger does not "
                          "know of, matched by content (none will be copied twice)"),
                         ("dossier cible non vide : {count} messages inconnus du registre, "
                          "rapprochés par leur contenu (aucun ne sera copié deux fois)")),
    "unit_not_started": ("not started: the run stopped before it (the next run does it)",
                         ("non commencé : l'exécution s'est arrêtée avant (la suivante s'en "
                          "charge)")),
    "stopped_by_signal": (("stopped by {signal}: messages in flight were answered or left in "
                           "flight; nothing is lost, run again to go on"),
                          ("arrêté par {signal} : les messages en vol ont reçu leur réponse ou "
                           "restent en vol ; rien n'est perdu, relancer pour continuer")),
    "server_down": (("stopped: {where} failed {count} times in a row ({detail}); nothing is "
                     "lost, run again once it answers"),
                    ("arrêté : {where} a échoué {count} fois de suite ({detail}) ; rien n'est "
                     "perdu, relancer quand il répondra")),
    "dead_run_closed": (("the previous run ended without finishing (its process died): marked "
                         "interrupted; this run looks on the target for what it had in flight"),
                        ("l'exécution précédente s'est terminée sans finir (son processus est "
                         "mort) : marquée interrompue ; celle-ci cherche sur la cible ce "
                         "qu'elle avait en vol")),
    "lock_taken_over": (("the work folder's lock was left by {command} (PID {pid} on {host}, "
                         "started {started}), which is no longer running: taken over"),
                        ("le verrou du dossier de travail avait été laissé par {command} (PID "
                         "{pid} sur {host}, lancé le {started}), qui ne tourne plus : repris")),
    "work_dir_busy": (("{path} is in use by {command} (PID {pid} on {host}, started {started}): "
                       "one command at a time per batch; wait for it or stop it"),
                      ("{path} est utilisé par {command} (PID {pid} sur {host}, lancé le "
                       "{started}) : une commande à la fois par lot ; attendre ou l'arrêter")),
    "work_dir_not_folder": (("the work folder {path} is a file: give run.work_dir a folder"),
                            ("le dossier de travail {path} est un fichier : donner un dossier "
                             "à run.work_dir")),
    "work_dir_unusable": ("the work folder {path} cannot be used: {detail}",
                          "le dossier de travail {path} est inutilisable : {detail}"),
    "ledger_disk_full": (("the disk holding the ledger is full ({location}): nothing is lost; "
                          "free some space and run again"),
                         ("le disque du registre est plein ({location}) : rien n'est perdu ; "
                          "libérer de la place et relancer")),
    "ledger_damaged": (("the ledger {location} is damaged ({detail}) and there is no copy of "
                        "it: move it away to start a new one (the next run then matches the "
                        "target by content, copying nothing twice)"),
                       ("le registre {location} est endommagé ({detail}) et n'a pas de copie : "
                        "le déplacer pour en commencer un nouveau (l'exécution suivante "
                        "rapproche alors la cible par le contenu, sans rien copier deux fois)")),
    "ledger_damaged_backup": (("the ledger {location} is damaged ({detail}). The copy made at "
                               "the start of the last run is {backup}: put it in its place to "
                               "go on from there, or move the damaged file away to start a new "
                               "one; either way the next run matches the target by content"),
                              ("le registre {location} est endommagé ({detail}). La copie faite "
                               "au début de la dernière exécution est {backup} : la mettre à sa "
                               "place pour repartir de là, ou déplacer le fichier endommagé "
                               "pour en commencer un nouveau ; dans les deux cas l'exécution "
                               "suivante rapproche la cible par le contenu")),
    "ledger_unwritable": ("the ledger {location} cannot be written: {detail}",
                          "le registre {location} ne peut être écrit : {detail}"),
    "ledger_driver_missing": (("the ledger {location} needs a database driver that is not "
                               "installed ({detail}): install it in bascule's environment"),
                              ("le registre {location} demande un pilote de base de données "
                               "absent ({detail}) : l'installer dans l'environnement de "
                               "bascule")),
    "ledger_unavailable": ("the ledger {location} cannot be used: {detail}",
                           "le registre {location} est inutilisable : {detail}"),
    "cleartext_to_network": (("the {side} {host} is reached with security = \"none\": "
                              "passwords and mail cross the network in clear"),
                             ("{side} {host} est joint avec security = \"none\" : mots de "
                              "passe et courrier traversent le réseau en clair")),
    # verify
    "missing_on_target": ("missing on the target", "absent de la cible"),
    "duplicate_on_target": ("on the target more often than at the source",
                            "plus souvent sur la cible qu'à la source"),
    "not_in_source": ("on the target, not at the source, unknown to the ledger",
                      "sur la cible, absent de la source, inconnu du registre"),
    "date_mismatch": ("internal dates differ: source {source}, target {target}",
                      "dates internes différentes : source {source}, cible {target}"),
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
    "cli_verify_summary": (("{checked} checked, {mismatches} mismatches: {missing} missing, "
                            "{duplicates} duplicated, {extra} not at the source, {flags} flags "
                            "and {dates} dates differ"),
                           ("{checked} vérifiés, {mismatches} écarts : {missing} manquants, "
                            "{duplicates} en double, {extra} absents de la source, {flags} "
                            "drapeaux et {dates} dates différents")),
    "cli_stopping": (("{signal}: stopping; messages in flight get their answer (at most {grace} "
                      "s). Again to stop at once."),
                     ("{signal} : arrêt en cours ; les messages en vol reçoivent leur réponse "
                      "(au plus {grace} s). Encore une fois pour arrêter tout de suite.")),
    "cli_init_no_folder": ("{path}: the folder {folder} does not exist; nothing written",
                           "{path} : le dossier {folder} n'existe pas ; rien n'a été écrit"),
    "cli_cannot_write": ("{path} cannot be written: {detail}",
                         "{path} ne peut être écrit : {detail}"),
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


_chosen: list[str | None] = [None]


def choose_language(lang: str | None) -> None:
    """The language asked for on the command line (``--lang``), for this command only."""
    _chosen[0] = lang


def language() -> str:
    """``fr`` or ``en``: ``--lang`` first, then BASCULE_LANG, then the locale variables."""
    if _chosen[0]:
        return _chosen[0]
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
