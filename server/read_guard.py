"""Read timeouts and a connection cap for uvicorn's httptools protocol.

uvicorn closes a keep-alive connection that stays silent after a response
(``timeout_keep_alive``), but nothing else: a client that opens a connection
and sends nothing, or sends its headers a byte at a time (slowloris), or
announces a body and never finishes it, holds a descriptor and a connection
slot for as long as it likes. This protocol adds three limits:

* the request line and headers must arrive within ``header_timeout`` seconds
  of the connection opening (or, on a kept-alive connection, of the request's
  first byte); else the client gets ``408 Request Timeout`` and the
  connection is closed;
* the body must arrive within ``body_timeout`` seconds of the headers; else
  the connection is closed (the app sees the client disconnect, and answers
  nothing);
* the request line and headers may take at most ``max_header_bytes``
  (64 KiB): more, and the client gets ``431 Request Header Fields Too Large``
  and the connection is closed (nothing else bounds what the parser keeps of
  them until the timeout);
* a worker holds at most ``max_connections`` open connections. At the cap, a
  new connection takes the place of the oldest one still waiting for its
  request line and headers (closed: a slowloris client holding every slot
  locks no one else out); when every connection has a request under way, the
  new one is closed as soon as it is accepted.

The limits come from the settings (``PLEDGEQL_HEADER_TIMEOUT``,
``PLEDGEQL_BODY_TIMEOUT``, ``PLEDGEQL_MAX_CONNECTIONS``) the first time a
connection is made in a worker; ``guarded_protocol`` makes a class with
limits of its own (tests).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("pledgeql.http")

# What a client whose request line and headers did not arrive in time gets.
TIMEOUT_BODY = (
    b'{"errors":[{"message":"The request line and headers did not arrive in time",'
    b'"extensions":{"code":"BAD_USER_INPUT"}}]}'
)
# The most a request line and headers may take.
MAX_HEADER_BYTES = 64 * 1024
# What a client whose request line and headers passed ``max_header_bytes`` gets.
TOO_LARGE_BODY = (
    b'{"errors":[{"message":"The request line and headers are too large: send a long document '
    b'with POST, in the body","extensions":{"code":"BAD_USER_INPUT"}}]}'
)
# What a request the HTTP parser refuses gets (a control character in a header's value, a
# malformed request line): the API's error shape, BAD_USER_INPUT, rather than uvicorn's plain text.
MALFORMED_BODY = (
    b'{"errors":[{"message":"The request is not valid HTTP/1.1: a header holds a control character '
    b'(U+0000 to U+001F, U+007F) or the request line or a header is malformed",'
    b'"extensions":{"code":"BAD_USER_INPUT"}}]}'
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body read timeouts and a connection cap."""

    header_timeout: ClassVar[float | None] = None  # None: read from the settings on first use
    body_timeout: ClassVar[float] = 30.0
    max_connections: ClassVar[int] = 1000
    max_header_bytes: ClassVar[int] = MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.header_timeout is None:
            cls.configure_from_settings()
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading_headers = False
        self._header_bytes = 0

    @classmethod
    def configure_from_settings(cls) -> None:
        from server.settings import Settings

        settings = Settings.from_env()
        cls.header_timeout = settings.header_timeout
        cls.body_timeout = settings.body_timeout
        cls.max_connections = settings.max_connections

    # ------------------------------------------------------------ timers

    def _arm(self, seconds: float, headers: bool) -> None:
        self._disarm()
        self._reading_headers = headers
        self._read_timer = self.loop.call_later(seconds, self._timed_out)
        if headers:
            self._header_bytes = 0
            _waiting(self.server_state)[id(self)] = self  # the newest to wait for its headers

    def _disarm(self) -> None:
        _waiting(self.server_state).pop(id(self), None)
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._reading_headers and (self.cycle is None or self.cycle.response_complete):
            # Nothing has reached the app: say why before closing.
            self._answer_and_close(b"408 Request Timeout", TIMEOUT_BODY)
        else:
            # The app has the request and waits for its body: closing tells it the client is gone.
            self.transport.abort()

    def _make_room(self) -> bool:
        """At the cap: close the oldest connection still waiting for its request line and headers,
        whose place the new one takes. False when every connection has a request under way."""
        waiting = _waiting(self.server_state)
        while waiting:
            oldest = waiting.pop(next(iter(waiting)))
            oldest._disarm()
            if oldest.transport is not None and not oldest.transport.is_closing():
                oldest.transport.abort()
                return True
        return False

    # ------------------------------------------------------------ protocol hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= type(self).max_connections and not self._make_room():
            transport.abort()
            return
        super().connection_made(transport)
        self._arm(float(type(self).header_timeout or 0), headers=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is None:  # refused in connection_made: uvicorn never saw it
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        reading = self._reading_headers
        super().data_received(data)
        if not (reading and self._reading_headers):
            return  # not reading a request line and headers, or done with them in this chunk
        self._header_bytes += len(data)
        if self._header_bytes > type(self).max_header_bytes and not self.transport.is_closing():
            self._disarm()
            if self.cycle is None or self.cycle.response_complete:
                self._answer_and_close(b"431 Request Header Fields Too Large", TOO_LARGE_BODY)
            else:  # a response of the previous request is still being written: only close
                self.transport.abort()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_headers or self._read_timer is None:
            # A kept-alive connection's next request: its headers' time starts now.
            self._arm(float(type(self).header_timeout or 0), headers=True)

    def on_headers_complete(self) -> None:
        self._arm(type(self).body_timeout, headers=False)
        super().on_headers_complete()
        if getattr(self.server_state, "draining", False) and self.cycle is not None:
            # The worker is stopping (server.workers._Server.shutdown): this response ends the connection.
            self.cycle.keep_alive = False

    def handle_websocket_upgrade(self) -> None:
        # The connection becomes a WebSocket, served by another protocol object: no read timer of
        # this one may close it later.
        self._disarm()
        super().handle_websocket_upgrade()

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_headers = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """The parser refused the request before the app saw it: 400 BAD_USER_INPUT as JSON, with
        a request id of the server's own as every response has, then the connection closes."""
        self._disarm()
        self._answer_and_close(b"400 Bad Request", MALFORMED_BODY)

    def _answer_and_close(self, status: bytes, body: bytes) -> None:
        """An answer the app never saw: the API's error shape, with a request id of the server's own
        as every response has; then the connection closes."""
        head = [
            b"HTTP/1.1 " + status + b"\r\n",
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"x-request-id: " + uuid.uuid4().hex.encode("ascii") + b"\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _waiting(server_state: Any) -> dict[int, GuardedHttpToolsProtocol]:
    """A server's connections waiting for a request line and headers, oldest first."""
    waiting: dict[int, GuardedHttpToolsProtocol] | None = getattr(server_state, "pledgeql_waiting", None)
    if waiting is None:
        waiting = {}
        server_state.pledgeql_waiting = waiting
    return waiting


def guarded_protocol(header_timeout: float, body_timeout: float, max_connections: int) -> type[HttpToolsProtocol]:
    """A protocol class with these limits rather than the settings' (module level classes only pickle,
    so this serves in-process servers: tests)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections},
    )
