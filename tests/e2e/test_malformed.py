"""Hostile and broken input gets the right 5xx - never a crash or a hang."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from harness.smtp import RawSMTP, make_message, server_alive


@pytest.fixture
def raw(gateway):
    with RawSMTP(gateway.port) as s:
        assert s.greeting[0] == 220
        assert s.cmd("EHLO client.test")[0] == 250
        yield s
    assert server_alive(gateway.port), "the server must survive this"


def _is_5xx(reply) -> bool:
    return 500 <= reply[0] <= 599


def test_binary_garbage(gateway):
    with RawSMTP(gateway.port) as s:
        junk = bytes([0x16, 0x03, 0x01, 0x00, 0xFF]) + os.urandom(200).replace(b"\n", b"")
        s.send(junk + b"\r\n")
        reply = s.reply()
        assert _is_5xx(reply), reply
        assert reply[0] in (500, 501, 502), reply
    assert server_alive(gateway.port)


def test_ten_megabyte_line_without_newline(gateway):
    """10 MB of 'A' and no CRLF: the server must answer 5xx (line too long)
    instead of buffering it all, and stay up. The reply usually comes while
    we are still sending, so read concurrently."""
    s = socket.create_connection(("127.0.0.1", gateway.port), timeout=30)
    s.recv(4096)  # greeting
    sent = [0]

    def pump():
        chunk = b"A" * 65536
        try:
            for _ in range(160):  # 10 MiB
                s.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass  # the server closed on us: fine, that is its right

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    data = b""
    deadline = time.monotonic() + 30
    while b"\n" not in data and time.monotonic() < deadline:
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    t.join(30)
    s.close()
    assert data[:1] == b"5", f"expected a 5xx reply to an endless line, got {data!r} after {sent[0]} bytes"
    assert server_alive(gateway.port)


def test_overlong_command_line(raw):
    reply = raw.cmd(b"RCPT TO:<" + b"a" * 5000 + b"@example.com>")
    assert reply[0] in (500, 501), reply


def test_rcpt_before_mail_is_503(raw):
    reply = raw.cmd("RCPT TO:<bob@example.com>")
    assert reply[0] == 503, reply
    assert raw.alive()


def test_data_without_rcpt_is_503(raw):
    assert raw.cmd("MAIL FROM:<alice@example.com>")[0] == 250
    reply = raw.cmd("DATA")
    assert reply[0] == 503, reply
    assert raw.alive()


def test_data_without_mail_is_503(raw):
    assert raw.cmd("DATA")[0] == 503


def test_nested_mail_is_503(raw):
    assert raw.cmd("MAIL FROM:<alice@example.com>")[0] == 250
    assert raw.cmd("MAIL FROM:<alice@example.com>")[0] == 503


def test_nul_bytes_in_command(raw):
    reply = raw.cmd(b"MAIL FROM:<al\x00ice@example.com>")
    assert _is_5xx(reply), reply
    assert raw.alive()


def test_bad_address_syntax_is_501(raw):
    assert raw.cmd("MAIL FROM:<alice@example.com>")[0] == 250
    for bad in ("RCPT TO:bob", "RCPT TO:<bob@@example.com>", "RCPT TO:<bob@example.com"):
        reply = raw.cmd(bad)
        assert _is_5xx(reply), (bad, reply)


def test_unknown_command_and_vrfy(raw):
    assert raw.cmd("FROBNICATE now")[0] in (500, 502)
    assert raw.cmd("VRFY bob")[0] != 250
    assert raw.cmd("EXPN staff")[0] != 250


def test_auth_not_offered_on_port_25(raw):
    reply = raw.cmd("AUTH PLAIN AGJvYgBzZWNyZXQ=")
    assert _is_5xx(reply), reply


def test_bare_lf_dot_does_not_end_data(gateway):
    """SMTP smuggling: `<LF>.<LF>` inside DATA must not end the message, so
    the 'MAIL FROM' after it cannot start a second, smuggled transaction."""
    with RawSMTP(gateway.port) as s:
        s.cmd("EHLO client.test")
        assert s.cmd("MAIL FROM:<alice@example.com>")[0] == 250
        assert s.cmd("RCPT TO:<bob@example.com>")[0] == 250
        assert s.cmd("DATA")[0] == 354
        s.send(b"Subject: smuggle\r\n\r\nfirst\n.\nMAIL FROM:<ceo@example.com>\r\n"
               b"RCPT TO:<bob@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n")
        first = s.reply()
        # Either the whole thing is one message (250) or it is refused (5xx) -
        # but never the start of a second transaction.
        assert first[0] == 250 or _is_5xx(first), first
        s.send(b"NOOP\r\n")
        assert s.reply()[0] == 250, "exactly one reply for the DATA, then NOOP's"
    time.sleep(2)
    subjects = [m.message()["Subject"] for m in gateway.inbound.messages()]
    assert "smuggled" not in subjects, subjects
    assert len(subjects) <= 1


def test_pipelined_garbage_after_valid_transaction(gateway):
    msg, mid = make_message("before-garbage")
    with RawSMTP(gateway.port) as s:
        s.cmd("EHLO client.test")
        s.send(b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        assert [s.reply()[0] for _ in range(3)] == [250, 250, 354]
        s.send(msg + b".\r\n\xff\xfe\x00garbage\r\n")
        assert s.reply()[0] == 250
        assert _is_5xx(s.reply())
    [got] = gateway.inbound.wait_for(1)
    assert got.message()["Message-ID"] == mid
