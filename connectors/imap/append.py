"""A pipelined IMAP APPEND writer: many messages in flight on one connection.

Dovecot's APPEND is fsync-bound at a few hundred messages a second; a client that waits
for each reply before sending the next message falls to a few dozen a second as soon as a
WAN round trip separates it from the server (see SERVERS.md). imapclient waits for each
reply, so the sink writes its messages through this small dedicated client instead: it
keeps a window of APPEND commands outstanding, streams each body from ``Message.open()``
in chunks, and matches the tagged replies to the messages, in order.

Where the server has MULTIAPPEND (RFC 3502) and LITERAL+, messages go in batches, many in
one APPEND command: one transaction and one reply for the batch, which is stored whole or
not at all. A batch refused for a reason that may be one message's is sent again message
by message, so that each refusal is that message's own.

One thread does everything: between chunks it reads whatever the server has answered, so
the server never blocks on a full output buffer while we block on a full input buffer (the
window bounds what the server can have to say to a few kilobytes anyway).
"""

from __future__ import annotations

import base64
import re
import select
import socket
import ssl
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from imapclient import imap_utf7

from connectors.base import ConnectError, ItemRejected, Message, SendUnconfirmed
from connectors.imap.session import (
    ImapCredentials,
    ImapEndpoint,
    TokenProvider,
    TokenRefused,
    ssl_context,
    without_delay,
)

CHUNK_SIZE = 1 << 16
WINDOW_MESSAGES = 256
"""Messages sent and not yet acknowledged, per connection: four batches of small messages
(64 had the 20 ms round trip bound a folder of 8,000 small ones)."""
WINDOW_BYTES = 8 << 20
"""Bytes sent and not yet acknowledged, per connection: ten times what a 20 ms round trip at
40 MB/s holds in flight, and the bound on what waiting messages keep in memory."""
BATCH_MESSAGES = 64
BATCH_BYTES = 4 << 20
"""Bounds of one MULTIAPPEND command (RFC 3502): messages and bytes. A message bigger than
``BATCH_BYTES`` goes alone, in an APPEND of its own."""
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ATOM_SPECIALS = frozenset(b'(){ %*"\\]')
TOO_BIG_CODES = frozenset({"TOOBIG", "LIMIT"})
OVER_QUOTA_CODES = frozenset({"OVERQUOTA"})
LOGOUT_TIMEOUT = 2.0
"""A goodbye is not worth waiting for: a server that does not answer it within this is left."""

_TAGGED = re.compile(rb"^(\S+) (OK|NO|BAD)(?: \[([^\]]*)\])? ?(.*)$", re.IGNORECASE)
_GREETING_CAPABILITY = re.compile(rb"^\* (?:OK|PREAUTH) \[CAPABILITY ([^\]]*)\]", re.IGNORECASE)
_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")


class AppendConnectionLost(ConnectError):
    """The connection broke, or the server stopped answering, while messages were in
    flight; their fate is unknown. Code ``connection_lost`` or ``timeout``.

    ``unsent`` holds the messages taken from the caller's iterable but never sent (or sent
    in a batch the server refused whole): they can go through another connection.
    """

    code = "connection_lost"

    def __init__(self, detail: str = "", *, code: str | None = None, where: str = "",
                 unsent: list[Message] | None = None) -> None:
        super().__init__(detail, code=code, where=where)
        self.unsent = unsent or []


@dataclass(frozen=True)
class AppendReceipt:
    """The server's answer to one APPEND: where the message went, or why it did not."""

    uidvalidity: int | None = None
    uid: int | None = None
    error: ItemRejected | SendUnconfirmed | None = None


@dataclass(frozen=True)
class _Reply:
    status: str
    code: str
    text: str


@dataclass
class _InFlight:
    message: Message
    tag: str | None
    receipt: AppendReceipt | None = None
    batch: int = 1
    """For the first message of a MULTIAPPEND batch, how many messages share its tag."""


class AppendPipeline:
    """One logged-in connection that appends messages, many at a time.

    ``window`` and ``window_bytes`` bound what is sent and not yet answered; a message
    bigger than ``window_bytes`` is sent alone.
    """

    def __init__(
        self,
        endpoint: ImapEndpoint,
        credentials: ImapCredentials,
        *,
        window: int = WINDOW_MESSAGES,
        window_bytes: int = WINDOW_BYTES,
    ) -> None:
        self._endpoint = endpoint
        self._window = window
        self._window_bytes = window_bytes
        self._buffer = bytearray()
        self._out = bytearray()
        """What ``_send`` holds back until a command ends or a reply is awaited (the socket
        sends each write at once: ``without_delay``)."""
        self._replies: dict[str, _Reply] = {}
        self._continuations = 0
        self._tag_counter = 0
        self._closed = False
        self._eof = False
        self.capabilities: frozenset[str] = frozenset()
        self._untagged: list[bytes] | None = None
        """Untagged LIST, STATUS and OK answers, while ``list_folders`` collects them."""
        self._sock = self._open_socket(endpoint)
        try:
            self._login(credentials)
        except BaseException:
            self._sock.close()
            raise

    @property
    def literal_plus(self) -> bool:
        return "LITERAL+" in self.capabilities

    @property
    def uidplus(self) -> bool:
        return "UIDPLUS" in self.capabilities

    @property
    def multiappend(self) -> bool:
        """Whether batches go in one command: the server has MULTIAPPEND, and LITERAL+ so
        that a batch's literals need no continuation each."""
        return (self._endpoint.multiappend and self.literal_plus
                and "MULTIAPPEND" in self.capabilities)

    @property
    def append_limit(self) -> int | None:
        """The biggest message the server accepts (RFC 7889 APPENDLIMIT), if it says."""
        for capability in self.capabilities:
            name, _, value = capability.partition("=")
            if name == "APPENDLIMIT" and value.isdigit():
                return int(value)
        return None

    def append(self, mailbox: str, messages: Iterable[Message]) -> Iterator[
            tuple[Message, AppendReceipt]]:
        """Append each message to ``mailbox`` (a Unicode name); yield each with its receipt,
        in order, as replies arrive.

        A message the server refuses gets a receipt with ``error`` and the next ones go on.
        When the connection breaks, every message sent and not yet answered is yielded with
        a ``SendUnconfirmed`` receipt (it may or may not be stored) and
        ``AppendConnectionLost`` is raised; messages not yet taken from ``messages`` are
        left there, and those taken but not sent are the exception's ``unsent``.
        """
        pending: deque[_InFlight] = deque()
        encoded_mailbox = _quoted(imap_utf7.encode(mailbox))
        limit = self.append_limit
        batch: list[Message] = []
        again: deque[Message] = deque()
        """Messages of a batch refused whole, to send one by one."""
        taken: list[Message] = []
        """Taken from ``messages`` or ``again`` and not yet sent: what a broken connection
        hands back as unsent."""
        source = iter(messages)
        try:
            while True:
                alone = bool(again)  # a batch refused whole: its messages go one by one
                message = again.popleft() if again else next(source, None)
                if message is None:
                    break
                taken.append(message)
                if limit is not None and message.size > limit:
                    taken.remove(message)
                    pending.append(_InFlight(message, None, AppendReceipt(error=ItemRejected(
                        f"{message.size} bytes, the server accepts at most {limit}",
                        code="too_big"))))
                elif self.multiappend and message.size <= BATCH_BYTES and not alone:
                    batch.append(message)
                    if len(batch) >= BATCH_MESSAGES or sum(m.size for m in batch) >= BATCH_BYTES:
                        self._send_batch(pending, batch, encoded_mailbox, taken)
                        batch = []
                else:
                    self._send_batch(pending, batch, encoded_mailbox, taken)
                    batch = []
                    self._send_batch(pending, [message], encoded_mailbox, taken)
                self._poll()
                yield from self._answered(pending, again)
            self._send_batch(pending, batch, encoded_mailbox, taken)
            batch = []
            while pending or again:
                if again:
                    message = again.popleft()
                    taken.append(message)
                    self._send_batch(pending, [message], encoded_mailbox, taken)
                elif pending[0].receipt is None and pending[0].tag not in self._replies:
                    self._wait()
                yield from self._answered(pending, again)
        except (OSError, AppendConnectionLost) as error:
            self._closed = True
            silent = isinstance(error, TimeoutError) or (
                isinstance(error, AppendConnectionLost) and error.code == "timeout")
            # A server silent for a whole timeout will not answer now: a short last look.
            self._drain_until_closed(LOGOUT_TIMEOUT if silent else None)
            self._sock.close()
            yield from self._answered(pending, again)
            for entry in pending:
                yield entry.message, entry.receipt or AppendReceipt(error=SendUnconfirmed(
                    f"connection lost before the server answered ({error})"))
            code = error.code if isinstance(error, AppendConnectionLost) else (
                "timeout" if isinstance(error, TimeoutError) else "connection_lost")
            raise AppendConnectionLost(str(error), code=code, where=self._endpoint.where,
                                       unsent=[*taken, *again]) from error

    def _send_batch(self, pending: deque[_InFlight], batch: list[Message], mailbox: bytes,
                    taken: list[Message]) -> None:
        """Send ``batch`` in one APPEND command (one message: a plain APPEND). A message
        whose body cannot be opened is refused alone, before anything of it is sent; the
        messages around it go in commands of their own, so that answers stay in order."""
        if not batch:
            return
        self._make_room(pending, sum(m.size for m in batch))
        run: list[tuple[Message, IO[bytes]]] = []
        for message in batch:
            try:
                run.append((message, message.open()))
            except OSError as error:
                self._send_command(pending, run, mailbox, taken)
                run = []
                taken.remove(message)
                pending.append(_InFlight(message, None, AppendReceipt(error=ItemRejected(
                    f"the message cannot be read at the source: {error}",
                    code="invalid_message"))))
        self._send_command(pending, run, mailbox, taken)

    def _send_command(self, pending: deque[_InFlight], run: list[tuple[Message, IO[bytes]]],
                      mailbox: bytes, taken: list[Message]) -> None:
        if not run:
            return
        tag = self._next_tag()
        entries = [_InFlight(message, tag) for message, _ in run]
        entries[0].batch = len(entries)
        for message, _ in run:
            taken.remove(message)
        pending.extend(entries)
        try:
            self._send(b"%s APPEND %s" % (tag.encode(), mailbox))
            for entry, (_, stream) in zip(entries, run, strict=True):
                if not self._send_literal(entry, stream):
                    return  # refused before its body: the command has ended
            self._send(b"\r\n")
            self._flush()
        finally:
            for _, stream in run:
                stream.close()

    def _send_literal(self, entry: _InFlight, stream: IO[bytes]) -> bool:
        """One message of the command; ``False`` when the server refused it before its
        body (no LITERAL+, and a tagged reply came instead of the continuation)."""
        message = entry.message
        header = b" (%s)" % " ".join(storable_flags(message.flags)).encode()
        if message.internal_date is not None:
            header += b' "%s"' % _imap_date_time(message.internal_date).encode()
        if self.literal_plus:
            self._send(header + b" {%d+}\r\n" % message.size)
        else:
            self._send(header + b" {%d}\r\n" % message.size)
            if not self._wait_continuation(entry.tag):
                return False
        self._stream_body(entry, stream)
        return True

    def _answered(self, pending: deque[_InFlight], again: deque[Message]) -> Iterator[
            tuple[Message, AppendReceipt]]:
        """The messages answered at the head of ``pending``, in order. A batch refused
        whole for a reason that may be one message's goes to ``again``, to be sent one by
        one; a full mailbox refuses every message of it."""
        while pending:
            entry = pending[0]
            if entry.receipt is None:
                reply = self._replies.pop(entry.tag, None) if entry.tag else None
                if reply is None:
                    return
                group = [pending[n] for n in range(entry.batch)]
                receipts = _batch_receipts(reply, len(group), self.uidplus)
                if receipts is None:
                    for member in group:
                        pending.popleft()
                        again.append(member.message)
                    continue
                for member, receipt in zip(group, receipts, strict=True):
                    member.receipt = receipt
            pending.popleft()
            yield entry.message, entry.receipt

    def create_folders(self, mailboxes: list[str]) -> set[str]:
        """CREATE and SUBSCRIBE each mailbox (Unicode names, parents before children), all
        commands sent at once: one round trip for a whole tree where imapclient pays two
        per folder. Answers the mailboxes the server created; one it refused (or already
        had) is left to the caller, which asks again one by one to learn why. Raises
        ``AppendConnectionLost`` when the connection breaks; the pipeline is closed then."""
        tags: list[tuple[str, str, str]] = []
        try:
            for mailbox in mailboxes:
                name = _quoted(imap_utf7.encode(mailbox))
                create, subscribe = self._next_tag(), self._next_tag()
                tags.append((mailbox, create, subscribe))
                self._send(b"%s CREATE %s\r\n%s SUBSCRIBE %s\r\n" % (
                    create.encode(), name, subscribe.encode(), name))
            while tags and tags[-1][2] not in self._replies:
                self._wait()
        except (OSError, AppendConnectionLost) as error:
            self._closed = True
            self._sock.close()
            raise AppendConnectionLost(str(error), where=self._endpoint.where) from error
        created = set()
        for mailbox, create, subscribe in tags:
            if self._replies.pop(create).status == "OK":
                created.add(mailbox)
            self._replies.pop(subscribe)
        return created

    def list_folders(self) -> FolderList:
        """The account's folders with their message counts (``LIST ... RETURN (STATUS
        (MESSAGES))``, RFC 5819) and INBOX's PERMANENTFLAGS (a read-write SELECT, then
        UNSELECT where the server has it), in one round trip: what the sink's control
        connection used to ask, asked here so that a first pass needs no connection of
        its own to the target beside its APPENDs. The server must have LIST-STATUS.
        Raises ``AppendConnectionLost`` (the pipeline is closed then) and, for a LIST the
        server refuses, ``ListRefused``."""
        special = b"SPECIAL-USE " if "SPECIAL-USE" in self.capabilities else b""
        listing, select = self._next_tag(), self._next_tag()
        commands = [b'%s LIST "" "*" RETURN (%sSTATUS (MESSAGES))\r\n' % (
            listing.encode(), special), b'%s SELECT "INBOX"\r\n' % select.encode()]
        tags = [listing, select]
        if "UNSELECT" in self.capabilities:
            tags.append(self._next_tag())
            commands.append(b"%s UNSELECT\r\n" % tags[-1].encode())
        self._untagged = []
        try:
            self._send(b"".join(commands))
            while tags[-1] not in self._replies:
                self._wait()
        except (OSError, AppendConnectionLost) as error:
            self._closed = True
            self._sock.close()
            raise AppendConnectionLost(str(error), where=self._endpoint.where) from error
        finally:
            untagged, self._untagged = self._untagged, None
        replies = [self._replies.pop(tag) for tag in tags]
        if replies[0].status != "OK":
            raise ListRefused(replies[0].text)
        return _folder_list(untagged, selected=replies[1].status == "OK")

    def logout(self) -> None:
        """Say goodbye and close. Safe to call twice, and after the connection broke."""
        if self._closed:
            return
        self._closed = True
        try:
            tag = self._next_tag()
            self._sock.settimeout(LOGOUT_TIMEOUT)
            self._send(f"{tag} LOGOUT\r\n".encode())
            while tag not in self._replies:
                self._wait(LOGOUT_TIMEOUT)
        except (OSError, AppendConnectionLost):
            pass
        finally:
            self._sock.close()

    def _open_socket(self, endpoint: ImapEndpoint) -> socket.socket:
        where = endpoint.where
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port),
                                            timeout=endpoint.greeting_timeout)
        except TimeoutError as error:
            raise ConnectError(f"{where}: no connection within {endpoint.greeting_timeout:g} s",
                               where=where) from error
        except OSError as error:
            raise ConnectError(f"{where}: {error}", where=where) from error
        without_delay(sock)
        try:
            if endpoint.security == "tls":
                sock = ssl_context(endpoint).wrap_socket(sock, server_hostname=endpoint.host)
            self._sock = sock
            try:
                greeting = self._read_line()
            except TimeoutError as error:
                raise ConnectError(
                    f"{where} accepts connections but sent no IMAP greeting within "
                    f"{endpoint.greeting_timeout:g} s", code="no_greeting", where=where) from error
            if not greeting.upper().startswith((b"* OK", b"* PREAUTH")):
                raise ConnectError(f"unexpected greeting: {greeting!r}", where=where)
            self.capabilities = _greeting_capabilities(greeting)
            sock.settimeout(endpoint.timeout)
            if endpoint.security == "starttls":
                self.capabilities = frozenset()  # what was said in clear is asked again
                reply = self._command(b"STARTTLS")
                if reply.status != "OK":
                    raise ConnectError(f"STARTTLS refused: {reply.text}", code="tls_failed",
                                       where=where)
                sock = ssl_context(endpoint).wrap_socket(sock, server_hostname=endpoint.host)
                self._sock = sock
        except ssl.SSLError as error:
            sock.close()
            raise ConnectError(str(error), code="tls_failed", where=where) from error
        except ConnectError:
            sock.close()
            raise
        except OSError as error:
            sock.close()
            code = "timeout" if isinstance(error, TimeoutError) else "connection_lost"
            raise ConnectError(f"{where}: {error}", code=code, where=where) from error
        except BaseException:
            sock.close()
            raise
        return sock

    def _login(self, credentials: ImapCredentials) -> None:
        try:
            # The greeting's list when it gave one (one round trip fewer per connection).
            pre_login = self.capabilities or self._ask_capabilities()
            self.capabilities = frozenset()
            if credentials.token is not None:
                reply = self._token_login(credentials.login, credentials.token, pre_login)
            elif credentials.authzid or "LOGINDISABLED" in pre_login:
                reply = self._authenticate(b"PLAIN", b"\0".join((
                    (credentials.authzid or "").encode(), credentials.login.encode(),
                    credentials.password.encode())), pre_login)
            else:
                reply = self._command_with_strings(
                    b"LOGIN", credentials.login.encode(), credentials.password.encode())
            if reply.status != "OK":
                raise ConnectError(f"login refused: {reply.text}", code="auth_failed")
            if reply.code.upper().startswith("CAPABILITY "):
                self.capabilities = _capability_set(reply.code[len("CAPABILITY "):])
            elif not self.capabilities:
                # Not in the reply, nor in an untagged CAPABILITY before it (Dovecot sends
                # that one to a client that asked before logging in).
                self.capabilities = self._ask_capabilities()
        except AppendConnectionLost as error:
            raise ConnectError(f"connection lost during login: {error}", code=error.code,
                               where=self._endpoint.where) from error
        except OSError as error:
            code = "timeout" if isinstance(error, TimeoutError) else "connection_lost"
            raise ConnectError(f"connection lost during login: {error}", code=code,
                               where=self._endpoint.where) from error

    def _token_login(self, login: str, tokens: TokenProvider,
                     capabilities: frozenset[str]) -> _Reply:
        """XOAUTH2 with the cached token, then once with a fresh one (as the session does)."""
        for refresh in (False, True):
            token = tokens(refresh=refresh)
            reply = self._authenticate(
                b"XOAUTH2", f"user={login}\x01auth=Bearer {token}\x01\x01".encode(), capabilities)
            if reply.status == "OK":
                return reply
        raise TokenRefused(login, reply.text.replace(token, "***"))

    def _authenticate(self, mechanism: bytes, response: bytes,
                      capabilities: frozenset[str]) -> _Reply:
        tag = self._next_tag()
        encoded = base64.b64encode(response) or b"="
        if "SASL-IR" in capabilities:
            self._send(b"%s AUTHENTICATE %s %s\r\n" % (tag.encode(), mechanism, encoded))
        else:
            self._send(b"%s AUTHENTICATE %s\r\n" % (tag.encode(), mechanism))
            if self._wait_continuation(tag):
                self._send(encoded + b"\r\n")
        # A failing XOAUTH2 sends its error as a challenge and waits for an empty answer.
        while self._wait_continuation(tag):
            self._send(b"\r\n")
        return self._replies.pop(tag)

    def _ask_capabilities(self) -> frozenset[str]:
        self.capabilities = frozenset()
        self._command(b"CAPABILITY")
        return self.capabilities

    def _command(self, command: bytes) -> _Reply:
        tag = self._next_tag()
        self._send(b"%s %s\r\n" % (tag.encode(), command))
        while tag not in self._replies:
            self._wait()
        return self._replies.pop(tag)

    def _command_with_strings(self, command: bytes, *arguments: bytes) -> _Reply:
        """A command whose arguments are strings sent quoted, or as synchronising literals
        when quoting cannot carry them (8-bit, CR, LF)."""
        tag = self._next_tag()
        line = b"%s %s" % (tag.encode(), command)
        for argument in arguments:
            if _quotable(argument):
                line += b" " + _quoted(argument)
                continue
            self._send(line + b" {%d}\r\n" % len(argument))
            if not self._wait_continuation(tag):
                return self._replies.pop(tag)
            line = argument
        self._send(line + b"\r\n")
        while tag not in self._replies:
            self._wait()
        return self._replies.pop(tag)

    def _stream_body(self, entry: _InFlight, stream: IO[bytes]) -> None:
        """Send exactly ``size`` bytes of the body. A source whose stream is not that long
        cannot be completed: the connection is cut, so the server drops the partial APPEND
        instead of storing a wrong message."""
        message = entry.message
        remaining = message.size
        while remaining:
            chunk = stream.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            self._send(chunk)
            remaining -= len(chunk)
            self._poll()
        longer = bool(stream.read(1))
        if remaining or longer:
            entry.receipt = AppendReceipt(error=ItemRejected(
                f"the source stream is not the {message.size} bytes it announced",
                code="invalid_message"))
            self._drain_until_closed()
            raise AppendConnectionLost("message aborted: source size mismatch")

    def _drain_until_closed(self, timeout: float | None = None) -> None:
        """Stop writing and collect the replies the server sent for earlier commands, each
        awaited ``timeout`` seconds at most (the endpoint's timeout unless told)."""
        try:
            self._flush()
            self._sock.shutdown(socket.SHUT_WR)
            while not self._eof:
                self._wait(timeout)
        except (OSError, AppendConnectionLost):
            pass

    def _make_room(self, pending: deque[_InFlight], size: int) -> None:
        while True:
            unanswered = [entry for entry in pending
                          if entry.receipt is None and entry.tag not in self._replies]
            if not unanswered:
                return
            in_flight_bytes = sum(entry.message.size for entry in unanswered)
            if len(unanswered) < self._window and in_flight_bytes + size <= self._window_bytes:
                return
            self._wait()

    def _wait_continuation(self, tag: str) -> bool:
        """Wait for a ``+`` (True) or for the command's tagged reply (False)."""
        while not self._continuations and tag not in self._replies:
            self._wait()
        if self._continuations:
            self._continuations -= 1
            return True
        return False

    def _next_tag(self) -> str:
        self._tag_counter += 1
        return f"B{self._tag_counter}"

    def _send(self, data: bytes) -> None:
        """Written with what came before it in writes of up to ``CHUNK_SIZE``: with Nagle's
        algorithm off, a command line, each message's flags and date, its body and the
        command's end would each go as a packet of its own (on 8,000 small messages, four
        packets a message for the server to read)."""
        self._out += data
        if len(self._out) >= CHUNK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            self._sock.sendall(self._out)
            self._out.clear()

    def _poll(self) -> None:
        """Read what the server already answered, without waiting."""
        while self._readable(0):
            self._receive()

    def _wait(self, timeout: float | None = None) -> None:
        """Wait for the server to say something (the endpoint's timeout at most, unless
        told), then read all of it."""
        timeout = self._endpoint.timeout if timeout is None else timeout
        self._flush()
        if not self._readable(timeout):
            raise AppendConnectionLost(f"no reply within {timeout:g} s", code="timeout")
        self._receive()
        self._poll()

    def _readable(self, timeout: float) -> bool:
        if self._eof:
            raise AppendConnectionLost("the server closed the connection")
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.pending():
            return True
        return bool(select.select([self._sock], [], [], timeout)[0])

    def _receive(self) -> None:
        data = self._sock.recv(CHUNK_SIZE)
        if not data:
            self._eof = True
        self._buffer += data
        while (response := self._take_response()) is not None:
            self._dispatch(response)
        if self._eof:
            raise AppendConnectionLost("the server closed the connection")

    def _take_response(self) -> bytes | None:
        """One complete response from the buffer (its literals inlined), or None."""
        end = 0
        while True:
            newline = self._buffer.find(b"\r\n", end)
            if newline < 0:
                return None
            literal = _LITERAL_AT_END.search(self._buffer, end, newline)
            if literal is None:
                response = bytes(self._buffer[:newline])
                del self._buffer[:newline + 2]
                return response
            end = newline + 2 + int(literal.group(1))
            if len(self._buffer) < end:
                return None

    def _read_line(self) -> bytes:
        """The greeting, read before anything else is sent."""
        while (newline := self._buffer.find(b"\r\n")) < 0:
            data = self._sock.recv(CHUNK_SIZE)
            if not data:
                raise AppendConnectionLost("the server closed the connection")
            self._buffer += data
        line = bytes(self._buffer[:newline])
        del self._buffer[:newline + 2]
        return line

    def _dispatch(self, response: bytes) -> None:
        if response.startswith(b"+"):
            self._continuations += 1
            return
        if response.startswith(b"* "):
            words = response[2:].split(b" ", 1)
            keyword = words[0].upper()
            if self._untagged is not None and keyword in (b"LIST", b"STATUS", b"OK"):
                self._untagged.append(response)
            if keyword == b"CAPABILITY" and len(words) > 1:
                self.capabilities = _capability_set(words[1].decode("ascii", "replace"))
            elif keyword == b"BYE":
                self._eof = True
            return
        match = _TAGGED.match(response)
        if match:
            tag, status, code, text = match.groups()
            self._replies[tag.decode("ascii", "replace")] = _Reply(
                status.decode().upper(), (code or b"").decode("utf-8", "replace"),
                text.decode("utf-8", "replace"))


class ListRefused(Exception):
    """The server refused ``LIST ... RETURN (STATUS ...)``: the caller lists another way."""


@dataclass(frozen=True)
class FolderList:
    """``AppendPipeline.list_folders``'s answer. ``folders`` are as imapclient's
    ``list_folders`` gives them: (flags, delimiter, name decoded from modified UTF-7)."""

    folders: list[tuple[tuple[bytes, ...], bytes | None, str]]
    counts: dict[str, int]
    permanent_flags: tuple[bytes, ...] | None
    """INBOX's, or None when its SELECT failed."""


_LIST_ANSWER = re.compile(rb'^\* LIST \(([^)]*)\) (NIL|"(?:[^"\\]|\\.)*") (.+)$',
                          re.IGNORECASE | re.DOTALL)
_STATUS_ANSWER = re.compile(rb"^\* STATUS (.+) \(([^()]*)\)$", re.IGNORECASE | re.DOTALL)
_PERMANENT_FLAGS = re.compile(rb"^\* OK \[PERMANENTFLAGS \(([^)]*)\)\]", re.IGNORECASE)
_LITERAL_NAME = re.compile(rb"^\{\d+\+?\}\r\n", re.DOTALL)


def _astring(raw: bytes) -> bytes:
    """A mailbox name as the server wrote it (atom, quoted string or literal), unwrapped."""
    literal = _LITERAL_NAME.match(raw)
    if literal:
        return raw[literal.end():]
    if len(raw) >= 2 and raw.startswith(b'"') and raw.endswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw


def _mailbox_name(raw: bytes) -> str:
    name = _astring(raw)
    return "INBOX" if name.upper() == b"INBOX" else imap_utf7.decode(name)


def _folder_list(untagged: list[bytes], selected: bool) -> FolderList:
    folders: list[tuple[tuple[bytes, ...], bytes | None, str]] = []
    counts: dict[str, int] = {}
    permanent: tuple[bytes, ...] | None = None
    for response in untagged:
        if listed := _LIST_ANSWER.match(response):
            flags, delimiter, name = listed.groups()
            folders.append((tuple(flags.split()),
                            None if delimiter.upper() == b"NIL" else _astring(delimiter),
                            _mailbox_name(name)))
        elif status := _STATUS_ANSWER.match(response):
            words = status.group(2).split()
            numbers = {key.upper(): value for key, value in zip(words[::2], words[1::2],
                                                                strict=False)}
            if numbers.get(b"MESSAGES", b"").isdigit():
                counts[_mailbox_name(status.group(1))] = int(numbers[b"MESSAGES"])
        elif flags := _PERMANENT_FLAGS.match(response):
            permanent = tuple(flags.group(1).split())
    return FolderList(folders, counts, (permanent or ()) if selected else None)


def _batch_receipts(reply: _Reply, size: int, uidplus: bool) -> list[AppendReceipt] | None:
    """The receipts a tagged reply means for the ``size`` messages of one command, or
    ``None`` for a batch refused whole for a reason that may be one message's (it is sent
    again message by message). A full mailbox refuses them all."""
    if size == 1:
        return [_receipt(reply, uidplus)]
    if reply.status == "OK":
        code_name, _, code_args = reply.code.partition(" ")
        uids = _uid_set(code_args.split()[1]) if (
            uidplus and code_name.upper() == "APPENDUID" and len(code_args.split()) > 1) else []
        if len(uids) == size:
            uidvalidity = int(code_args.split()[0])
            return [AppendReceipt(uidvalidity, uid) for uid in uids]
        return [AppendReceipt() for _ in range(size)]
    receipt = _receipt(reply, uidplus)
    if receipt.error is not None and receipt.error.code == "over_quota":
        return [receipt] * size
    return None


def _uid_set(text: str) -> list[int]:
    """The UIDs of an APPENDUID set, in order (RFC 4315: ``101:103,107``)."""
    uids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        if not first.isdigit() or (last and not last.isdigit()):
            return []
        start, end = int(first), int(last or first)
        step = 1 if end >= start else -1
        uids.extend(range(start, end + step, step))
    return uids


def _receipt(reply: _Reply, uidplus: bool) -> AppendReceipt:
    """The receipt a tagged reply means. APPENDUID is read only from a server that
    advertises UIDPLUS: one that does not has not promised what the UIDs mean."""
    code_name, _, code_args = reply.code.partition(" ")
    if reply.status == "OK":
        if uidplus and code_name.upper() == "APPENDUID":
            uidvalidity, uid = code_args.split()[:2]
            if uid.isdigit():
                return AppendReceipt(int(uidvalidity), int(uid))
        return AppendReceipt()
    detail = f"{reply.status} {'[' + reply.code + '] ' if reply.code else ''}{reply.text}"
    code = ("too_big" if code_name.upper() in TOO_BIG_CODES
            else "over_quota" if code_name.upper() in OVER_QUOTA_CODES else "invalid_message")
    return AppendReceipt(error=ItemRejected(detail, code=code))


def _greeting_capabilities(greeting: bytes) -> frozenset[str]:
    """The capabilities a greeting lists in its response code (``* OK [CAPABILITY ...]``),
    or none."""
    match = _GREETING_CAPABILITY.match(greeting)
    return _capability_set(match.group(1).decode("ascii", "replace")) if match else frozenset()


def _capability_set(text: str) -> frozenset[str]:
    return frozenset(word.upper() for word in text.split())


def storable_flags(flags: Iterable[str]) -> list[str]:
    """Flags the server can set on APPEND: ``\\Recent`` belongs to the server, and a keyword
    that is not an IMAP atom cannot be written (the mapping layer renames categories)."""
    kept = []
    for flag in sorted(flags):
        if flag.lower() == "\\recent":
            continue
        name = flag.removeprefix("\\")
        raw = name.encode("utf-8")
        if raw and all(0x20 < byte < 0x7F and byte not in ATOM_SPECIALS for byte in raw):
            kept.append(flag)
    return kept


def _imap_date_time(moment: datetime) -> str:
    """RFC 3501 date-time, keeping the offset the source gave (UTC when it gave none)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    offset = moment.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return (f"{moment.day:02d}-{MONTHS[moment.month - 1]}-{moment.year:04d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
            f"{sign}{hours:02d}{minutes:02d}")


def _quotable(value: bytes) -> bool:
    return all(0 < byte < 0x80 and byte not in (0x0A, 0x0D) for byte in value)


def _quoted(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
