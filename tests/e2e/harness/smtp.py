"""Client-side helpers: building test messages, sending with smtplib, and a
raw-socket SMTP client for the things smtplib refuses to do (pipelining in one
write, garbage, NUL bytes, endless lines)."""

from __future__ import annotations

import socket
import smtplib
import ssl
import time
import uuid
from email.utils import formatdate


def make_message(subject: str = "test", *, sender: str = "alice@example.com", to: str = "bob@example.com",
                 body: str | bytes = "Hello.\r\n", mid: str | None = None,
                 extra_headers: list[str] | None = None) -> tuple[bytes, str]:
    """A small RFC 5322 message with CRLF line ends; returns (bytes, Message-ID)."""
    mid = mid or f"<{uuid.uuid4().hex}@e2e.test>"
    headers = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ] + (extra_headers or [])
    if isinstance(body, str):
        body = body.encode()
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body, mid


def unverified_tls() -> ssl.SSLContext:
    """Siegel's default certificate is self-signed; the tests check TLS is
    *used*, the outbound tests check verification separately."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int, *, source: str | None = None, timeout: float = 30) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", port, timeout=timeout,
                     source_address=(source, 0) if source else None, local_hostname="client.test")
    c.ehlo()
    return c


def send(port: int, sender: str, rcpts: list[str], msg: bytes, *, source: str | None = None,
         tls: bool = False) -> dict:
    """sendmail() over a fresh connection; raises on refusal like smtplib."""
    with connect(port, source=source) as c:
        if tls:
            c.starttls(context=unverified_tls())
            c.ehlo()
        return c.sendmail(sender, rcpts, msg)


class RawSMTP:
    """A bare socket speaking SMTP: reads multi-line replies, sends bytes as given."""

    def __init__(self, port: int, *, source: str | None = None, timeout: float = 20) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; partial: {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: (code, text with lines joined by \\n)."""
        lines = []
        while True:
            line = self._line()
            lines.append(line.decode(errors="replace"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        code = int(lines[0][:3]) if lines[0][:3].isdigit() else -1
        return code, "\n".join(lines)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def alive(self) -> bool:
        try:
            return self.cmd("NOOP")[0] == 250
        except OSError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawSMTP":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def server_alive(port: int) -> bool:
    """A new connection gets a 220 greeting and a 250 for EHLO."""
    try:
        with RawSMTP(port, timeout=10) as r:
            return r.greeting[0] == 220 and r.cmd("EHLO client.test")[0] == 250
    except OSError:
        return False


def wait_until(pred, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
