"""The French organisation the EWS test server is seeded with, and builders of the EWS XML
its non-mail items are stored as (series with exceptions, time zones, contacts, lists, tasks).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

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


# --- time zones as EWS gives them (ref: timezonedefinition, periods, transitionsgroups) ----

def paris_zone(tag: str = "StartTimeZone") -> str:
    """Romance Standard Time as Exchange 2010 and later define it on an item: UTC+1, UTC+2
    from the last Sunday of March to the last Sunday of October (Bias is UTC minus local)."""
    rule = "trule:Microsoft/Registry/Romance Standard Time/2006"
    return (f'<t:{tag} Id="Romance Standard Time" Name="(UTC+01:00) Bruxelles, Copenhague, '
            f'Madrid, Paris"><t:Periods>'
            f'<t:Period Bias="-PT1H" Name="Standard" Id="{rule}-Standard"/>'
            f'<t:Period Bias="-PT2H" Name="Daylight" Id="{rule}-Daylight"/></t:Periods>'
            '<t:TransitionsGroups><t:TransitionsGroup Id="0">'
            f'<t:RecurringDayTransition><t:To Kind="Period">{rule}-Daylight</t:To>'
            "<t:TimeOffset>PT2H</t:TimeOffset><t:Month>3</t:Month><t:DayOfWeek>Sunday"
            "</t:DayOfWeek><t:Occurrence>-1</t:Occurrence></t:RecurringDayTransition>"
            f'<t:RecurringDayTransition><t:To Kind="Period">{rule}-Standard</t:To>'
            "<t:TimeOffset>PT3H</t:TimeOffset><t:Month>10</t:Month><t:DayOfWeek>Sunday"
            "</t:DayOfWeek><t:Occurrence>-1</t:Occurrence></t:RecurringDayTransition>"
            "</t:TransitionsGroup></t:TransitionsGroups>"
            '<t:Transitions><t:Transition><t:To Kind="Group">0</t:To></t:Transition>'
            f"</t:Transitions></t:{tag}>")


def custom_zone(tag: str = "StartTimeZone") -> str:
    """A zone no Windows id names, as Outlook stores one it was given by an invitation from
    another system: UTC+03:30 all year, Id "Customized Time Zone"."""
    return (f'<t:{tag} Id="Customized Time Zone" Name="Fuseau personnalisé (UTC+03:30)">'
            '<t:Periods><t:Period Bias="-PT3H30M" Name="Standard" '
            'Id="trule:Custom/Standard"/></t:Periods>'
            '<t:TransitionsGroups><t:TransitionsGroup Id="0"><t:Transition>'
            '<t:To Kind="Period">trule:Custom/Standard</t:To></t:Transition>'
            "</t:TransitionsGroup></t:TransitionsGroups>"
            '<t:Transitions><t:Transition><t:To Kind="Group">0</t:To></t:Transition>'
            f"</t:Transitions></t:{tag}>")


def utc_zone(tag: str = "StartTimeZone") -> str:
    """Coordinated Universal Time, as Exchange defines it: one period, no transition."""
    return (f'<t:{tag} Id="UTC" Name="(UTC) Temps universel coordonné"><t:Periods>'
            '<t:Period Bias="PT0H" Name="Standard" Id="trule:Microsoft/Registry/UTC/1-Standard"/>'
            '</t:Periods><t:TransitionsGroups><t:TransitionsGroup Id="0"><t:Transition>'
            '<t:To Kind="Period">trule:Microsoft/Registry/UTC/1-Standard</t:To></t:Transition>'
            '</t:TransitionsGroup></t:TransitionsGroups><t:Transitions><t:Transition>'
            f'<t:To Kind="Group">0</t:To></t:Transition></t:Transitions></t:{tag}>')


SERVER_ZONES = {"Romance Standard Time": paris_zone, "UTC": utc_zone}
"""The Windows zones the test server's GetServerTimeZones knows, by Id."""


def _mailbox(name: str, address: str) -> str:
    return (f"<t:Mailbox><t:Name>{escape(name)}</t:Name><t:EmailAddress>{address}"
            "</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType></t:Mailbox>")


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Series:
    """A weekly series in Paris time, some occurrences moved and some cancelled: the XML the
    server stores, and the occurrence starts (UTC) a client should end with."""

    master: str
    exceptions: list[str]
    deleted: list[str]
    starts: list[datetime]


DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
"""DaysOfWeek values (ref: daysofweek), whatever the process's locale."""


def weekly_series(subject: str, first: datetime, count: int, *, organiser: tuple[str, str],
                  attendees: list[tuple[str, str]], moved: dict[int, timedelta],
                  cancelled: list[int], location: str = "",
                  moved_location: str | None = None) -> Series:
    """``count`` weekly occurrences from ``first`` (aware, in Paris time, two hours long);
    occurrence ``n`` (0-based) of ``moved`` shifted by its delta (and held in
    ``moved_location`` if given), those of ``cancelled`` deleted (ref: calendaritem,
    recurrence-recurrencetype, weeklyrecurrence, numberedrecurrence)."""
    length = timedelta(hours=2)
    original = [first + timedelta(weeks=n) for n in range(count)]
    people = "".join(f"<t:Attendee>{_mailbox(*a)}<t:ResponseType>Accept</t:ResponseType>"
                     "</t:Attendee>" for a in attendees)
    day = DAYS[first.weekday()]
    uid = f"{first:%Y%m%d}-{len(subject)}-bascule@ville.fr"

    def occurrence(start: datetime, where: str) -> str:
        return (f"<t:Subject>{escape(subject)}</t:Subject>"
                f'<t:Body BodyType="Text">{escape(where)}</t:Body>'
                f"<t:UID>{uid}</t:UID><t:Start>{_utc(start)}</t:Start>"
                f"<t:End>{_utc(start + length)}</t:End>")

    master = (f"<t:CalendarItem>{occurrence(first, location)}"
              f"<t:IsAllDayEvent>false</t:IsAllDayEvent>"
              f"<t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus>"
              f"<t:Location>{escape(location)}</t:Location>"
              "<t:IsMeeting>true</t:IsMeeting><t:IsRecurring>true</t:IsRecurring>"
              "<t:CalendarItemType>RecurringMaster</t:CalendarItemType>"
              f"<t:Organizer>{_mailbox(*organiser)}</t:Organizer>"
              f"<t:RequiredAttendees>{people}</t:RequiredAttendees>"
              "<t:Recurrence><t:WeeklyRecurrence><t:Interval>1</t:Interval>"
              f"<t:DaysOfWeek>{day}</t:DaysOfWeek><t:FirstDayOfWeek>Monday</t:FirstDayOfWeek>"
              "</t:WeeklyRecurrence><t:NumberedRecurrence>"
              f"<t:StartDate>{first.isoformat()[:10]}{first.isoformat()[-6:]}</t:StartDate>"
              f"<t:NumberOfOccurrences>{count}</t:NumberOfOccurrences>"
              "</t:NumberedRecurrence></t:Recurrence>"
              f"{paris_zone('StartTimeZone')}{paris_zone('EndTimeZone')}</t:CalendarItem>")
    exceptions = []
    for index, delta in moved.items():
        start = original[index] + delta
        where = location if moved_location is None else moved_location
        exceptions.append(
            f"<t:CalendarItem>{occurrence(start, where)}"
            f"<t:OriginalStart>{_utc(original[index])}</t:OriginalStart>"
            f"<t:Location>{escape(where)}</t:Location>"
            "<t:IsRecurring>true</t:IsRecurring>"
            "<t:CalendarItemType>Exception</t:CalendarItemType>"
            f"<t:Organizer>{_mailbox(*organiser)}</t:Organizer>"
            f"{paris_zone('StartTimeZone')}{paris_zone('EndTimeZone')}</t:CalendarItem>")
    deleted = [_utc(original[n]) for n in cancelled]
    starts = sorted(original[n] + moved.get(n, timedelta()) for n in range(count)
                    if n not in cancelled)
    return Series(master, exceptions, deleted, [s.astimezone(UTC) for s in starts])


def single_event(subject: str, start: datetime, end: datetime, zone: str) -> str:
    """A single appointment with ``zone`` as its StartTimeZone and EndTimeZone elements."""
    return (f"<t:CalendarItem><t:Subject>{escape(subject)}</t:Subject>"
            f"<t:Start>{_utc(start)}</t:Start><t:End>{_utc(end)}</t:End>"
            "<t:IsAllDayEvent>false</t:IsAllDayEvent>"
            "<t:CalendarItemType>Single</t:CalendarItemType>"
            f"{zone}</t:CalendarItem>")


PHOTO = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b"
    "0b0c1912130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e3334"
    "32ffc0000b080001000101011100ffc4001f0000010501010101010100000000000000000102030405060708"
    "090a0bffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114"
    "328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748"
    "494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999a"
    "a2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8"
    "e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00fbd0ffd9")
"""A 1×1 JPEG: the contact's photo."""


def contact(given: str, surname: str, email: str, *, company: str = "", job: str = "",
            phone: str = "", photo: bytes | None = None) -> str:
    """A contact (ref: contact, emailaddresses, phonenumbers); its photo, if any, a file
    attachment marked IsContactPhoto (ref: iscontactphoto)."""
    attachments = ""
    if photo is not None:
        attachments = ("<t:Attachments><t:FileAttachment><t:Name>ContactPicture.jpg</t:Name>"
                       "<t:ContentType>image/jpeg</t:ContentType><t:Size>"
                       f"{len(photo)}</t:Size><t:IsInline>false</t:IsInline>"
                       "<t:IsContactPhoto>true</t:IsContactPhoto>"
                       f"<t:Content>{base64.b64encode(photo).decode()}</t:Content>"
                       "</t:FileAttachment></t:Attachments>"
                       "<t:HasAttachments>true</t:HasAttachments>")
    phones = (f'<t:PhoneNumbers><t:Entry Key="BusinessPhone">{escape(phone)}</t:Entry>'
              "</t:PhoneNumbers>" if phone else "")
    return (f"<t:Contact><t:Subject>{escape(given)} {escape(surname)}</t:Subject>{attachments}"
            f"<t:FileAs>{escape(surname)}, {escape(given)}</t:FileAs>"
            f"<t:DisplayName>{escape(given)} {escape(surname)}</t:DisplayName>"
            f"<t:GivenName>{escape(given)}</t:GivenName>"
            f"<t:CompanyName>{escape(company)}</t:CompanyName>"
            f'<t:EmailAddresses><t:Entry Key="EmailAddress1">{email}</t:Entry>'
            f"</t:EmailAddresses>{phones}<t:JobTitle>{escape(job)}</t:JobTitle>"
            f"<t:Surname>{escape(surname)}</t:Surname>"
            f"<t:HasPicture>{'true' if photo is not None else 'false'}</t:HasPicture>"
            "</t:Contact>")


def distribution_list(name: str, members: list[tuple[str, str]]) -> str:
    """A personal distribution list (ref: distributionlist, members-ex15websvcsotherref)."""
    entries = "".join(f"<t:Member>{_mailbox(*m)[:-len('</t:Mailbox>')]}"
                      "<t:MailboxType>OneOff</t:MailboxType></t:Mailbox>"
                      "<t:Status>Normal</t:Status></t:Member>" for m in members)
    return (f"<t:DistributionList><t:Subject>{escape(name)}</t:Subject>"
            f"<t:DisplayName>{escape(name)}</t:DisplayName><t:FileAs>{escape(name)}</t:FileAs>"
            f"<t:Members>{entries}</t:Members></t:DistributionList>")


def task(subject: str, *, start: datetime, due: datetime, percent: int, status: str,
         body: str = "") -> str:
    """A task (ref: task, status-taskstatustype)."""
    return (f"<t:Task><t:Subject>{escape(subject)}</t:Subject>"
            f'<t:Body BodyType="Text">{escape(body)}</t:Body>'
            "<t:Importance>High</t:Importance>"
            f"<t:DueDate>{_utc(due)}</t:DueDate><t:PercentComplete>{percent}</t:PercentComplete>"
            f"<t:StartDate>{_utc(start)}</t:StartDate><t:Status>{status}</t:Status></t:Task>")


# --- the organisation -----------------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")
COUNCIL = weekly_series(
    "Conseil municipal", datetime(2026, 1, 5, 18, 0, tzinfo=PARIS), 10,
    organiser=("Alice Martin", f"alice@{DOMAIN}"),
    attendees=[("Benoît Lefèvre", f"benoit@{DOMAIN}"), ("Chloé Durand", f"chloe@{DOMAIN}")],
    moved={2: timedelta(days=1, minutes=30)}, cancelled=[4], location="Salle du conseil",
    moved_location="Salle des mariages")
"""Alice's series: Mondays 18:00 Paris from 5 January 2026, ten of them, the third moved to
the Tuesday 18:30 in another room, the fifth cancelled."""


def seed_french_tenant(tenant: EwsTenant) -> None:
    """French mailboxes: localised folder names, accents, a branch four folders deep, an
    archive, a public folder tree; alice also has a series with exceptions, a single event in
    a custom zone, a contact with a photo, a personal distribution list, a task, and benoit as
    her delegate (Editor of her calendar, Reviewer of her inbox); chloe's mailbox has the
    folders Exchange and Outlook add beside the user's (system_folders)."""
    start = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    for index, (name, display) in enumerate(MAILBOXES.items()):
        address = f"{name}@{DOMAIN}"
        mailbox = tenant.add_mailbox(address, display, archive=name == "alice",
                                     system_folders=name == "chloe")
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
    alice.add_series("calendar", COUNCIL.master, exceptions=COUNCIL.exceptions,
                     deleted=COUNCIL.deleted)
    alice.add_item("calendar", single_event(
        "Visio avec Téhéran", datetime(2026, 3, 10, 6, 30, tzinfo=UTC),
        datetime(2026, 3, 10, 7, 30, tzinfo=UTC),
        custom_zone("StartTimeZone") + custom_zone("EndTimeZone")))
    alice.add_item("contacts", contact("Jean", "Dupont", "jean.dupont@exemple.fr",
                                       company="Préfecture", job="Secrétaire général",
                                       phone="+33 1 23 45 67 89", photo=PHOTO))
    alice.add_item("contacts", distribution_list("Commission voirie", [
        ("Benoît Lefèvre", f"benoit@{DOMAIN}"), ("Chloé Durand", f"chloe@{DOMAIN}")]))
    alice.add_item("tasks", task("Préparer le budget 2027", start=datetime(2026, 10, 1,
                                                                           tzinfo=UTC),
                                 due=datetime(2026, 11, 30, tzinfo=UTC), percent=40,
                                 status="InProgress", body="Chiffrer la voirie."))
    alice.add_delegate(f"benoit@{DOMAIN}", calendar="Editor", inbox="Reviewer",
                       receive_copies=True)
    tenant.add_public_folder(("Mairie",))
    tenant.add_public_folder(("Mairie", "Délibérations"))
    tenant.add_public_folder(("Mairie", "Agenda des salles"), "IPF.Appointment")
    tenant.deliver_public(("Mairie", "Délibérations"), mime_message(
        f"secretariat@{DOMAIN}", f"mairie@{DOMAIN}", "Délibération 2026-01",
        "Adoptée à l'unanimité.\r\n", start), received=start)
