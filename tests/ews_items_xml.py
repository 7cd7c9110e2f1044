"""EWS items as Microsoft's EWS reference shows them in GetItem answers (``CalendarItem``,
``Contact``, ``DistributionList``, ``Task``): for the unit tests of ``connectors.ews.items``
and for seeding the EWS test server (``declared`` gives an item its namespace)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

T = "http://schemas.microsoft.com/exchange/services/2006/types"


def declared(xml: str) -> str:
    """One item's XML with the types namespace declared on its element."""
    text = xml.strip()
    name_end = text.index(">")
    return f'{text[:name_end]} xmlns:t="{T}"{text[name_end:]}'


def element(xml: str) -> ET.Element:
    return ET.fromstring(declared(xml))


CUSTOM_PARIS = """
<t:StartTimeZone Id="Customized Time Zone" Name="Customized Time Zone">
  <t:Periods>
    <t:Period Bias="-P0DT1H0M0.0S" Name="Standard" Id="Std" />
    <t:Period Bias="-P0DT2H0M0.0S" Name="Daylight" Id="Dlt/1" />
  </t:Periods>
  <t:TransitionsGroups>
    <t:TransitionsGroup Id="0">
      <t:RecurringDayTransition>
        <t:To Kind="Period">Dlt/1</t:To><t:TimeOffset>P0DT2H0M0.0S</t:TimeOffset>
        <t:Month>3</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek><t:Occurrence>-1</t:Occurrence>
      </t:RecurringDayTransition>
      <t:RecurringDayTransition>
        <t:To Kind="Period">Std</t:To><t:TimeOffset>P0DT3H0M0.0S</t:TimeOffset>
        <t:Month>10</t:Month><t:DayOfWeek>Sunday</t:DayOfWeek><t:Occurrence>-1</t:Occurrence>
      </t:RecurringDayTransition>
    </t:TransitionsGroup>
  </t:TransitionsGroups>
  <t:Transitions><t:Transition><t:To Kind="Group">0</t:To></t:Transition></t:Transitions>
</t:StartTimeZone>"""

ROMANCE = '<t:StartTimeZone Id="Romance Standard Time" Name="(UTC+01:00) Brussels, Paris" />'

ATTENDEES = """
<t:Organizer><t:Mailbox><t:Name>Alice Martin</t:Name>
  <t:EmailAddress>alice@ville.fr</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType>
</t:Mailbox></t:Organizer>
<t:RequiredAttendees>
  <t:Attendee><t:Mailbox><t:Name>Bruno Petit</t:Name>
    <t:EmailAddress>bruno@agglo.fr</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType>
  </t:Mailbox><t:ResponseType>Accept</t:ResponseType></t:Attendee>
  <t:Attendee><t:Mailbox><t:Name>Chantal Roux</t:Name>
    <t:EmailAddress>/o=Mairie/ou=Exchange Administrative Group/cn=Recipients/cn=croux</t:EmailAddress>
    <t:RoutingType>EX</t:RoutingType>
  </t:Mailbox><t:ResponseType>Tentative</t:ResponseType></t:Attendee>
</t:RequiredAttendees>
<t:OptionalAttendees>
  <t:Attendee><t:Mailbox><t:Name>Denis</t:Name>
    <t:EmailAddress>denis@ville.fr</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType>
  </t:Mailbox><t:ResponseType>NoResponseReceived</t:ResponseType></t:Attendee>
</t:OptionalAttendees>
<t:Resources>
  <t:Attendee><t:Mailbox><t:Name>Salle du conseil</t:Name>
    <t:EmailAddress>salle.conseil@ville.fr</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType>
  </t:Mailbox><t:ResponseType>Accept</t:ResponseType></t:Attendee>
</t:Resources>"""


OCCURRENCES = """  <t:ModifiedOccurrences><t:Occurrence>
    <t:ItemId Id="AAMkException=" ChangeKey="DwAAABYA2" />
    <t:Start>2025-01-21T13:00:00Z</t:Start><t:End>2025-01-21T14:00:00Z</t:End>
    <t:OriginalStart>2025-01-20T09:00:00Z</t:OriginalStart>
  </t:Occurrence></t:ModifiedOccurrences>
  <t:DeletedOccurrences><t:DeletedOccurrence><t:Start>2025-02-03T09:00:00Z</t:Start>
  </t:DeletedOccurrence></t:DeletedOccurrences>"""
"""The master's ModifiedOccurrences and DeletedOccurrences as Exchange gives them; the test
server writes its own from what it stores (``add_series``)."""


def series_xml(zone_xml: str, *, occurrences: bool = True) -> str:
    """A weekly meeting on Monday 10:00-11:00 Paris time from 6 January 2025, ten times, the
    third moved to Tuesday 14:00 and the fifth cancelled (the EWS reference's
    ``RecurringMaster`` with ``ModifiedOccurrences`` and ``DeletedOccurrences``)."""
    return f"""
<t:CalendarItem>
  <t:ItemId Id="AAMkMaster=" ChangeKey="DwAAABYA1" />
  <t:Subject>Commission urbanisme</t:Subject>
  <t:Body BodyType="HTML">&lt;p&gt;Ordre du jour&amp;nbsp;: PLU&lt;/p&gt;</t:Body>
  <t:Categories><t:String>Élus</t:String><t:String>Urbanisme</t:String></t:Categories>
  <t:Importance>High</t:Importance>
  <t:Sensitivity>Private</t:Sensitivity>
  <t:DateTimeCreated>2024-12-01T09:00:00Z</t:DateTimeCreated>
  <t:HasAttachments>false</t:HasAttachments>
  <t:LastModifiedTime>2025-01-20T16:30:00Z</t:LastModifiedTime>
  <t:ReminderIsSet>true</t:ReminderIsSet>
  <t:ReminderMinutesBeforeStart>15</t:ReminderMinutesBeforeStart>
  <t:UID>040000008200E00074C5B7101A82E0080000000012345</t:UID>
  <t:Start>2025-01-06T09:00:00Z</t:Start>
  <t:End>2025-01-06T10:00:00Z</t:End>
  <t:IsAllDayEvent>false</t:IsAllDayEvent>
  <t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus>
  <t:Location>Salle du conseil</t:Location>
  <t:IsCancelled>false</t:IsCancelled>
  <t:CalendarItemType>RecurringMaster</t:CalendarItemType>
  {ATTENDEES}
  <t:Recurrence>
    <t:WeeklyRecurrence><t:Interval>1</t:Interval><t:DaysOfWeek>Monday</t:DaysOfWeek>
      <t:FirstDayOfWeek>Monday</t:FirstDayOfWeek></t:WeeklyRecurrence>
    <t:NumberedRecurrence><t:StartDate>2025-01-06+01:00</t:StartDate>
      <t:NumberOfOccurrences>10</t:NumberOfOccurrences></t:NumberedRecurrence>
  </t:Recurrence>
{OCCURRENCES if occurrences else ""}
  {zone_xml}
</t:CalendarItem>"""


EXCEPTION = f"""
<t:CalendarItem>
  <t:ItemId Id="AAMkException=" ChangeKey="DwAAABYA2" />
  <t:Subject>Commission urbanisme (déplacée)</t:Subject>
  <t:UID>040000008200E00074C5B7101A82E0080000000012345</t:UID>
  <t:Start>2025-01-21T13:00:00Z</t:Start><t:End>2025-01-21T14:00:00Z</t:End>
  <t:OriginalStart>2025-01-20T09:00:00Z</t:OriginalStart>
  <t:IsAllDayEvent>false</t:IsAllDayEvent>
  <t:LegacyFreeBusyStatus>Busy</t:LegacyFreeBusyStatus>
  <t:Location>Salle B</t:Location>
  <t:CalendarItemType>Exception</t:CalendarItemType>
  {ATTENDEES}
  {ROMANCE}
</t:CalendarItem>"""


CONTACT = """
<t:Contact>
  <t:ItemId Id="AAMkContact=" ChangeKey="EQAAABYA" />
  <t:Categories><t:String>Partenaires</t:String></t:Categories>
  <t:LastModifiedTime>2025-02-01T10:00:00Z</t:LastModifiedTime>
  <t:FileAs>Lefèvre, Hélène</t:FileAs>
  <t:DisplayName>Hélène Lefèvre</t:DisplayName>
  <t:GivenName>Hélène</t:GivenName>
  <t:CompanyName>Agglo Sud</t:CompanyName>
  <t:EmailAddresses>
    <t:Entry Key="EmailAddress2">h.lefevre@perso.fr</t:Entry>
    <t:Entry Key="EmailAddress1">helene.lefevre@agglo-sud.fr</t:Entry>
  </t:EmailAddresses>
  <t:PhysicalAddresses>
    <t:Entry Key="Business"><t:Street>1 place de la Mairie</t:Street><t:City>Albi</t:City>
      <t:CountryOrRegion>France</t:CountryOrRegion><t:PostalCode>81000</t:PostalCode></t:Entry>
  </t:PhysicalAddresses>
  <t:PhoneNumbers>
    <t:Entry Key="BusinessPhone">+33 5 63 00 00 00</t:Entry>
    <t:Entry Key="MobilePhone">+33 6 00 00 00 00</t:Entry>
    <t:Entry Key="HomePhone" />
  </t:PhoneNumbers>
  <t:JobTitle>Directrice générale des services</t:JobTitle>
  <t:Surname>Lefèvre</t:Surname>
</t:Contact>"""


GROUP = """
<t:DistributionList>
  <t:ItemId Id="AAMkGroup=" ChangeKey="EgAAAB" />
  <t:DisplayName>Bureau municipal</t:DisplayName>
  <t:Members>
    <t:Member Key="a"><t:Mailbox><t:Name>Hélène Lefèvre</t:Name>
      <t:EmailAddress>helene.lefevre@agglo-sud.fr</t:EmailAddress>
      <t:RoutingType>SMTP</t:RoutingType><t:MailboxType>Contact</t:MailboxType>
      <t:ItemId Id="AAMkContact=" ChangeKey="EQAAABYA" /></t:Mailbox>
      <t:Status>Normal</t:Status></t:Member>
    <t:Member Key="b"><t:Mailbox><t:Name>Accueil</t:Name>
      <t:EmailAddress>accueil@ville.fr</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType>
      <t:MailboxType>OneOff</t:MailboxType></t:Mailbox></t:Member>
  </t:Members>
</t:DistributionList>"""


TASK = """
<t:Task>
  <t:ItemId Id="AAMkTask=" ChangeKey="EwAAAB" />
  <t:Subject>Préparer le conseil municipal</t:Subject>
  <t:Importance>High</t:Importance>
  <t:DueDate>2025-03-13T23:00:00Z</t:DueDate>
  <t:PercentComplete>40</t:PercentComplete>
  <t:StartDate>2025-03-02T23:00:00Z</t:StartDate>
  <t:Status>InProgress</t:Status>
</t:Task>"""
