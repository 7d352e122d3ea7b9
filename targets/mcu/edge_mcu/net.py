"""HTTP/1.1 to central over ``asyncio`` streams: one request per connection.

``Http(url).request(method, path, body_parts, headers)`` returns ``(status, body)``, the body
a memoryview of the client's one answer buffer, valid until the next request. The whole
exchange runs under one timeout; a refused connection, a reset, a timeout, a body cut short
or an answer past ``max_body`` raises ``NetError`` (a link failure: retry later). https://
URLs use MicroPython's ``ssl`` (mbedTLS), verifying central against ``ca_file`` when given.
``sent`` and ``received`` count every byte of requests and answers (TLS overhead not).
"""

import asyncio

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated, nothing to import
    pass


class NetError(Exception):
    """The request or its answer did not make it across."""


def split_url(url: str) -> tuple[bool, str, int, str]:
    """(tls, host, port, base path) of an http(s) URL."""
    tls = url.startswith("https://")
    rest = url[8:] if tls else url[7:]
    slash = rest.find("/")
    hostport, base = (rest, "") if slash < 0 else (rest[:slash], rest[slash:].rstrip("/"))
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port = hostport[1:end], hostport[end + 2 :]
    elif ":" in hostport:
        host, port = hostport.rsplit(":", 1)
    else:
        host, port = hostport, ""
    return tls, host, int(port) if port else (443 if tls else 80), base


class Http:
    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        ca_file: str | None = None,
        answer_buffer: bytearray | None = None,
    ) -> None:
        self.tls, self.host, self.port, self.base = split_url(url)
        self.timeout = timeout
        # Answers are read into one buffer kept for the program's life (frames are
        # decrypted in place there): no allocation per answer, no fragmentation.
        self._rbuf = answer_buffer if answer_buffer is not None else bytearray(2048)
        self.max_body = len(self._rbuf)
        self.sent = 0
        self.received = 0
        self.requests = 0
        self._ctx = None
        if self.tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if ca_file:
                with open(ca_file, "rb") as f:
                    ctx.load_verify_locations(cadata=f.read())
                # the stubs lack verify_mode; MicroPython's SSLContext has it
                ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
            else:
                ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]
            self._ctx = ctx

    async def request(
        self,
        method: str,
        path: str,
        parts: Any = (),
        headers: dict[str, str] | None = None,
    ) -> tuple[int, memoryview]:
        self.requests += 1
        try:
            return await asyncio.wait_for(
                self._exchange(method, path, parts, headers), self.timeout
            )
        except asyncio.TimeoutError:
            raise NetError(
                "no answer from %s:%d within %ss" % (self.host, self.port, self.timeout)
            ) from None
        except OSError as exc:
            raise NetError("the link to %s:%d failed: %r" % (self.host, self.port, exc)) from None
        except EOFError:
            raise NetError("central closed the connection mid-answer") from None

    async def _exchange(
        self, method: str, path: str, parts: Any, headers: dict[str, str] | None
    ) -> tuple[int, memoryview]:
        if self._ctx is not None:
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._ctx)
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            length = sum(len(p) for p in parts)
            lines = (
                "%s %s%s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\nContent-Length: %d\r\n"
                % (method, self.base, path, self.host, self.port, length)
            )
            for name, value in (headers or {}).items():
                lines += "%s: %s\r\n" % (name, value)
            head = (lines + "\r\n").encode()
            del lines
            writer.write(head)
            for part in parts:
                writer.write(part)
            await writer.drain()
            self.sent += len(head) + length
            return await self._answer(reader)
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass

    async def _answer(self, reader: Any) -> tuple[int, memoryview]:
        status_line = await reader.readline()
        self.received += len(status_line)
        if not status_line.endswith(b"\n"):
            raise NetError("central's answer was cut inside its status line")
        fields = status_line.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
            raise NetError("central's answer has no HTTP status line (%r)" % status_line[:40])
        status = int(fields[1])
        length = None
        while True:
            line = await reader.readline()
            self.received += len(line)
            if not line.endswith(b"\n"):
                raise NetError("central closed the connection inside the answer's headers")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                digits = value.strip()
                if not digits.isdigit():
                    raise NetError("central's Content-Length %r is not a number" % digits[:20])
                length = int(digits)
        if length is None:
            raise NetError("central's answer has no Content-Length")
        if length > self.max_body:
            raise NetError(
                "central's answer is %d bytes, past this device's %d" % (length, self.max_body)
            )
        view = memoryview(self._rbuf)
        got = 0
        while got < length:
            n = await reader.readinto(view[got:length])
            if not n:
                raise NetError(
                    "central closed the connection after %d of %d answer bytes" % (got, length)
                )
            got += n
        self.received += length
        return status, view[:length]
