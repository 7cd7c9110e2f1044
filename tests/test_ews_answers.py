"""The GetItem answer reader: MIME decoded from base64 piece by piece into a spool, however
the answer is cut, item properties read, errors and faults told, on answers shaped as
Microsoft's EWS reference shows them (getitem-operation, getitemresponse, soap fault of a
busy server in ews-throttling-in-exchange)."""

from __future__ import annotations

import base64
import hashlib
import tracemalloc
from collections.abc import Iterator

import pytest

from connectors.ews.answers import GetItemReader
from connectors.ews.client import EwsFault
from connectors.spool import Spool

HEAD = (b'<?xml version="1.0" encoding="utf-8"?>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        b'<s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="1" '
        b'MajorBuildNumber="2507" MinorBuildNumber="6" Version="V2017_07_11" '
        b'xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" '
        b'xmlns="http://schemas.microsoft.com/exchange/services/2006/types"/></s:Header>'
        b'<s:Body><m:GetItemResponse '
        b'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
        b'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
        b'<m:ResponseMessages>')
TAIL = b"</m:ResponseMessages></m:GetItemResponse></s:Body></s:Envelope>"

MIME = (b"From: =?utf-8?q?Am=C3=A9lie?= <amelie@ville.fr>\r\nTo: paul@ville.fr\r\n"
        b"Subject: =?utf-8?q?R=C3=A9union_du_conseil?=\r\n\r\nOrdre du jour : budget.\r\n")


def success(item_id: str, mime: bytes, *, read: bool = True, flag: int = 2,
            categories: tuple[str, ...] = ("Rouge", "Conseil municipal"),
            folded: bool = False) -> bytes:
    encoded = base64.b64encode(mime)
    if folded:  # a writer that wraps its base64 at 76 characters, as MIME does
        encoded = b"\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    strings = b"".join(b"<t:String>" + c.encode() + b"</t:String>" for c in categories)
    return (b'<m:GetItemResponseMessage ResponseClass="Success">'
            b"<m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>"
            b'<t:MimeContent CharacterSet="UTF-8">' + encoded + b"</t:MimeContent>"
            b'<t:ItemId Id="' + item_id.encode() + b'" ChangeKey="CQAAABYAAAA"/>'
            b"<t:Subject>R\xc3\xa9union</t:Subject>"
            b"<t:DateTimeReceived>2024-03-01T08:15:00Z</t:DateTimeReceived>"
            b"<t:Size>" + str(len(mime) + 410).encode() + b"</t:Size>"
            b"<t:Categories>" + strings + b"</t:Categories>"
            b"<t:IsDraft>false</t:IsDraft>"
            b'<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="0x1090" '
            b'PropertyType="Integer"/><t:Value>' + str(flag).encode() + b"</t:Value>"
            b"</t:ExtendedProperty>"
            b"<t:IsRead>" + (b"true" if read else b"false") + b"</t:IsRead>"
            b"</t:Message></m:Items></m:GetItemResponseMessage>")


GONE = (b'<m:GetItemResponseMessage ResponseClass="Error">'
        b"<m:MessageText>The specified object was not found in the store.</m:MessageText>"
        b"<m:ResponseCode>ErrorItemNotFound</m:ResponseCode>"
        b"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:Items/>"
        b"</m:GetItemResponseMessage>")

BUSY = (b'<?xml version="1.0" encoding="utf-8"?>'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        b'<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">'
        b"a:ErrorServerBusy</faultcode>"
        b"<faultstring xml:lang=\"en-US\">The server cannot service this request right now. "
        b"Try again later.</faultstring><detail>"
        b'<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        b"ErrorServerBusy</e:ResponseCode>"
        b'<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
        b"The server cannot service this request right now. Try again later.</e:Message>"
        b'<t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
        b'<t:Value Name="BackOffMilliseconds">1234</t:Value></t:MessageXml>'
        b"</detail></s:Fault></s:Body></s:Envelope>")


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def read(answer: bytes, size: int, **spool: int) -> GetItemReader:
    reader = GetItemReader(lambda: Spool(**spool))
    for piece in pieces(answer, size):
        reader.feed(piece)
    reader.close()
    return reader


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1 << 16])
def test_every_item_comes_whole_however_the_answer_is_cut(size: int) -> None:
    second = bytes(range(256)) * 40  # not text: every byte value, across group boundaries
    answer = HEAD + success("AAMk1", MIME) + GONE + success(
        "AAMk3", second, read=False, flag=0, categories=(), folded=True) + TAIL
    reader = read(answer, size)
    assert reader.fault is None
    assert reader.version["MajorVersion"] == "15"
    first, gone, third = reader.items
    assert first.item_id == "AAMk1" and first.error == ""
    assert first.spool is not None
    with first.spool.open() as body:
        assert body.read() == MIME
    assert first.spool.fingerprint == "sha256:" + hashlib.sha256(MIME).hexdigest()
    assert (first.is_read, first.flag_status, first.is_draft) == (True, 2, False)
    assert first.categories == ["Rouge", "Conseil municipal"]
    assert first.received is not None and first.received.isoformat() == \
        "2024-03-01T08:15:00+00:00"
    assert first.size == len(MIME) + 410
    assert gone.error == "ErrorItemNotFound" and gone.spool is None
    assert gone.message.startswith("The specified object")
    assert third.spool is not None
    with third.spool.open() as body:
        assert body.read() == second
    assert (third.is_read, third.flag_status, third.categories) == (False, 0, [])


def test_a_busy_server_fault_gives_its_back_off() -> None:
    reader = read(BUSY, 50)
    assert reader.items == []
    assert isinstance(reader.fault, EwsFault)
    assert reader.fault.ews_code == "ErrorServerBusy"
    assert reader.fault.back_off == pytest.approx(1.234)


def test_a_broken_answer_is_refused_and_its_spools_released() -> None:
    reader = GetItemReader()
    reader.feed(HEAD + success("AAMk1", MIME)[:300])
    with pytest.raises(EwsFault) as refused:
        reader.feed(b"</not-open>")
    assert refused.value.ews_code == "ErrorInvalidResponse"


def test_a_large_body_is_decoded_in_bounded_memory() -> None:
    """32 MiB of MIME as a server streams it: the reader holds a chunk's worth, not the
    body, nor its base64 (the spool spills to disk past its memory limit)."""
    block = (b"Ligne de texte accentu\xc3\xa9 pour un long message.\r\n" * 1200)[:48 * 1024]
    count = (32 << 20) // len(block)
    digest = hashlib.sha256()

    def answer() -> Iterator[bytes]:
        yield HEAD + (b'<m:GetItemResponseMessage ResponseClass="Success">'
                      b"<m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message>"
                      b"<t:MimeContent>")
        for _ in range(count):
            digest.update(block)
            yield base64.b64encode(block)
        yield (b'</t:MimeContent><t:ItemId Id="AAMkBig"/><t:IsRead>false</t:IsRead>'
               b"</t:Message></m:Items></m:GetItemResponseMessage>" + TAIL)

    tracemalloc.start()
    try:
        reader = GetItemReader()
        for piece in answer():
            reader.feed(piece)
        reader.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [item] = reader.items
    assert item.spool is not None
    assert item.spool.size == count * len(block)
    assert item.spool.fingerprint == "sha256:" + digest.hexdigest()
    assert peak < 8 << 20, f"{peak >> 20} MiB held for a {item.spool.size >> 20} MiB body"
    item.discard()
