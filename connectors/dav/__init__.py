"""CalDAV and CardDAV servers (RFC 4791, RFC 6352) as targets of calendars and contacts."""
