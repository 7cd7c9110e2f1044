"""A GetItem answer read as it arrives: each item's ``MimeContent`` decoded from base64 into
a spool, its few properties kept, never the whole answer in memory.

EWS gives a message's MIME as base64 text inside the XML of a GetItem answer
(``web-service-reference/mimecontent``), one ``GetItemResponseMessage`` per id asked, in the
order asked (``web-service-reference/getitemresponse``), each ``Success`` with its item or
``Error`` with its ``ResponseCode`` (``ErrorItemNotFound`` for an item gone). A parser that
builds a tree holds the text, then its decoded bytes (a 143 MB message cost about 745 MB
through exchangelib). Here expat is fed the answer in chunks with ``buffer_text`` off, so that
the text of ``MimeContent`` comes in pieces no larger than a chunk; each piece is decoded in
runs of whole 4-character base64 groups, the rest kept for the next piece, and written to the
item's ``Spool`` (disk beyond its memory limit).
"""

from __future__ import annotations

import binascii
import re
import xml.parsers.expat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from connectors.ews.client import ERRORS_NS, MESSAGES_NS, SOAP_NS, TYPES_NS, EwsFault
from connectors.spool import Spool

SEPARATOR = "|"
FLAG_STATUS_TAG = 0x1090
"""PidTagFlagStatus (MS-OXPROPS 2.699): 0 not flagged, 1 complete, 2 flagged."""
FLAGGED = 2
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")


@dataclass
class ReadItem:
    """One item of a GetItem answer: its id and properties, its MIME in ``spool`` (sealed),
    or the ``error`` its response message gave."""

    item_id: str = ""
    spool: Spool | None = None
    is_read: bool = False
    is_draft: bool = False
    flag_status: int = 0
    categories: list[str] = field(default_factory=list)
    received: datetime | None = None
    size: int = 0
    error: str = ""
    message: str = ""

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def _tag(namespace: str, name: str) -> str:
    return f"{namespace}{SEPARATOR}{name}"


MIME = _tag(TYPES_NS, "MimeContent")
ITEM_ID = _tag(TYPES_NS, "ItemId")
IS_READ = _tag(TYPES_NS, "IsRead")
IS_DRAFT = _tag(TYPES_NS, "IsDraft")
CATEGORY = _tag(TYPES_NS, "String")
CATEGORIES = _tag(TYPES_NS, "Categories")
RECEIVED = _tag(TYPES_NS, "DateTimeReceived")
SIZE = _tag(TYPES_NS, "Size")
EXTENDED = _tag(TYPES_NS, "ExtendedProperty")
EXTENDED_URI = _tag(TYPES_NS, "ExtendedFieldURI")
VALUE = _tag(TYPES_NS, "Value")
RESPONSE_CODE = _tag(MESSAGES_NS, "ResponseCode")
MESSAGE_TEXT = _tag(MESSAGES_NS, "MessageText")
ITEMS = _tag(MESSAGES_NS, "Items")
FAULT = _tag(SOAP_NS, "Fault")
VERSION_INFO = _tag(TYPES_NS, "ServerVersionInfo")
ERROR_CODE = _tag(ERRORS_NS, "ResponseCode")
ERROR_MESSAGE = _tag(ERRORS_NS, "Message")
TEXT_KEPT = frozenset({IS_READ, IS_DRAFT, CATEGORY, RECEIVED, SIZE, VALUE, RESPONSE_CODE,
                       MESSAGE_TEXT, ERROR_CODE, ERROR_MESSAGE, "faultcode", "faultstring"})
"""Elements whose text is kept (short values); ``MimeContent``'s goes to the spool."""


class GetItemReader:
    """Feed it a GetItem answer chunk by chunk (``feed``), then ``close``: ``items`` holds one
    ``ReadItem`` per response message, in order, and ``fault`` the SOAP fault, if the answer
    was one (``EwsFault``, with a busy server's back-off). ``make_spool`` makes each body's
    spool (tests give a small memory limit)."""

    def __init__(self, make_spool: Callable[[], Spool] = Spool) -> None:
        self.items: list[ReadItem] = []
        self.fault: EwsFault | None = None
        self.version: dict[str, str] = {}
        self._make_spool = make_spool
        self._parser = xml.parsers.expat.ParserCreate(namespace_separator=SEPARATOR)
        self._parser.buffer_text = False
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._text
        self._stack: list[str] = []
        self._item: ReadItem | None = None
        self._in_item = 0
        """Depth of the item element inside ``m:Items`` (0: not in one)."""
        self._spool: Spool | None = None
        self._pending = b""
        self._text_parts: list[str] = []
        self._extended_tag: int | None = None
        self._fault_parts: dict[str, str] = {}
        self._back_off: float | None = None
        self._value_name = ""
        self._faulted = False

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.Parse(chunk, False)
        except xml.parsers.expat.ExpatError as error:
            self.discard()
            raise EwsFault("ErrorInvalidResponse", f"unreadable answer: {error}") from None

    def close(self) -> None:
        try:
            self._parser.Parse(b"", True)
        except xml.parsers.expat.ExpatError as error:
            self.discard()
            raise EwsFault("ErrorInvalidResponse", f"unreadable answer: {error}") from None
        if self._faulted:
            ews_code = self._fault_parts.get(ERROR_CODE) or self._fault_parts.get(
                "faultcode", "SOAPFault").split(":")[-1]
            message = self._fault_parts.get(ERROR_MESSAGE) or self._fault_parts.get(
                "faultstring", "")
            self.fault = EwsFault(ews_code.strip(), message.strip(), self._back_off)

    @property
    def back_off(self) -> float | None:
        """The ``BackOffMilliseconds`` the answer gave (a fault's, or a throttled response
        message's), in seconds."""
        return self._back_off

    def discard(self) -> None:
        """Release every spool read so far (an answer abandoned half way, or unwanted)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        for item in self.items:
            item.discard()

    # --- expat handlers

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        parent = self._stack[-1] if self._stack else ""
        self._stack.append(name)
        if name == FAULT:
            self._faulted = True
        elif name == VERSION_INFO:
            self.version = dict(attributes)
        elif name.startswith(MESSAGES_NS) and name.endswith("ResponseMessage") \
                and "ResponseClass" in attributes:
            self._item = ReadItem()
            self.items.append(self._item)
        elif parent == ITEMS and self._item is not None:
            self._in_item = len(self._stack)
        elif self._item is not None and self._in_item:
            if name == ITEM_ID and len(self._stack) == self._in_item + 1:
                self._item.item_id = attributes.get("Id", "")
            elif name == MIME:
                self._spool = self._make_spool()
                self._pending = b""
            elif name == EXTENDED_URI:
                try:
                    self._extended_tag = int(attributes.get("PropertyTag", ""), 0)
                except ValueError:
                    self._extended_tag = None
        if name == VALUE:
            self._value_name = attributes.get("Name", "")
        self._text_parts = []

    def _text(self, data: str) -> None:
        if self._spool is not None:
            self._decode(data.encode("ascii", "ignore"))
        elif self._stack and self._stack[-1] in TEXT_KEPT:
            self._text_parts.append(data)

    def _decode(self, data: bytes) -> None:
        """Decode the whole 4-character groups of what came, keep the rest for later."""
        data = self._pending + _NOT_BASE64.sub(b"", data)
        whole = len(data) - len(data) % 4
        self._pending = data[whole:]
        if whole:
            self._write(data[:whole])

    def _write(self, encoded: bytes) -> None:
        assert self._spool is not None
        try:
            self._spool.write(binascii.a2b_base64(encoded))
        except binascii.Error as error:
            self._spool.close()
            self._spool = None
            if self._item is not None:
                self._item.error, self._item.message = "ErrorInvalidResponse", str(error)

    def _end(self, name: str) -> None:
        text = "".join(self._text_parts)
        self._text_parts = []
        self._stack.pop()
        item = self._item
        if name == MIME and self._spool is not None:
            if self._pending:
                self._write(self._pending + b"=" * (-len(self._pending) % 4))
            if self._spool is not None and item is not None:
                item.spool = self._spool.seal()
            self._spool = None
            self._pending = b""
            return
        if name in (ERROR_CODE, ERROR_MESSAGE, "faultcode", "faultstring"):
            self._fault_parts[name] = text
        elif name == VALUE and self._value_name == "BackOffMilliseconds":
            try:
                self._back_off = int(text) / 1000.0
            except ValueError:
                self._back_off = None
        if item is None:
            return
        if name == RESPONSE_CODE:
            item.error = "" if text.strip() == "NoError" else text.strip()
        elif name == MESSAGE_TEXT:
            item.message = text.strip()
        elif self._in_item:
            self._item_property(item, name, text)
            if len(self._stack) < self._in_item:
                self._in_item = 0

    def _item_property(self, item: ReadItem, name: str, text: str) -> None:
        if name == IS_READ:
            item.is_read = text.strip().lower() == "true"
        elif name == IS_DRAFT:
            item.is_draft = text.strip().lower() == "true"
        elif name == CATEGORY and self._stack and self._stack[-1] == CATEGORIES:
            item.categories.append(text)
        elif name == RECEIVED:
            item.received = instant(text)
        elif name == SIZE:
            try:
                item.size = int(text)
            except ValueError:
                item.size = 0
        elif name == VALUE and self._extended_tag == FLAG_STATUS_TAG:
            try:
                item.flag_status = int(text)
            except ValueError:
                item.flag_status = 0
        elif name == EXTENDED:
            self._extended_tag = None


def instant(text: str | None) -> datetime | None:
    """An ``xs:dateTime`` as EWS writes it (``2024-03-01T08:15:00Z``), aware; ``None`` when
    absent or unreadable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
