"""The French organisation the EWS test server is seeded with, and builders of the EWS XML
its non-mail items are stored as (series with exceptions, time zones, contacts, lists, tasks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.ews_server import EwsTenant

DOMAIN = "ville.fr"
SERVICE_LOGIN = f"svc-bascule@{DOMAIN}"
MAILBOXES = {
    "alice": "Alice Martin",
    "benoit": "Benoît Lefèvre",
    "chloe": "Chloé Durand",
}


def mime_message(sender: str, to: str, subject: str, body: str, when: datetime) -> bytes:
    """A plain text message as a mail client sends it (CRLF line ends)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = make_msgid(domain=DOMAIN)
    message.set_content(body)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def seed_french_tenant(tenant: EwsTenant) -> None:
    """French mailboxes: localised folder names, accents, a branch four folders deep, an
    archive, a public folder tree; alice also has a series with exceptions, a contact with a
    photo, a personal distribution list and a task (``tests.ews_seed`` builders)."""
    start = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    for index, (name, display) in enumerate(MAILBOXES.items()):
        address = f"{name}@{DOMAIN}"
        mailbox = tenant.add_mailbox(address, display, archive=name == "alice")
        for number in range(3):
            when = start + timedelta(hours=index * 10 + number)
            mailbox.deliver("inbox", mime_message(
                f"mairie@{DOMAIN}", address, f"Conseil municipal n°{number + 1} — ordre du jour",
                f"Bonjour {display},\r\nVoici l'ordre du jour.\r\n", when),
                is_read=number == 0, flagged=number == 1,
                categories=("Élus",) if number == 2 else (), received=when)
    alice = tenant.mailbox(f"alice@{DOMAIN}")
    deep = ("inbox", "Projets", "Voirie", "Été 2026", "Réunions")
    alice.add_folder(deep)
    alice.deliver(deep, mime_message(f"voirie@{DOMAIN}", f"alice@{DOMAIN}",
                                     "Réfection de la rue de l'Église", "Devis joint.\r\n",
                                     start), received=start)
    alice.deliver("sentitems", mime_message(f"alice@{DOMAIN}", f"benoit@{DOMAIN}",
                                            "Re: budget", "D'accord.\r\n", start),
                  is_read=True, received=start)
    alice.add_folder(("Archives 2019",), archive=True)
    alice.deliver(("Archives 2019",), mime_message(
        f"prefecture@{DOMAIN}", f"alice@{DOMAIN}", "Arrêté préfectoral 2019-42",
        "Pour information.\r\n", start - timedelta(days=2400)),
        is_read=True, archive=True, received=start - timedelta(days=2400))
    tenant.add_public_folder(("Mairie",))
    tenant.add_public_folder(("Mairie", "Délibérations"))
    tenant.add_public_folder(("Mairie", "Agenda des salles"), "IPF.Appointment")
    tenant.deliver_public(("Mairie", "Délibérations"), mime_message(
        f"secretariat@{DOMAIN}", f"mairie@{DOMAIN}", "Délibération 2026-01",
        "Adoptée à l'unanimité.\r\n", start), received=start)
