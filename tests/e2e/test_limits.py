"""Size and recipient limits: refused with the right code, before and after DATA."""

from __future__ import annotations


import pytest

from harness.smtp import connect, make_message, server_alive

LIMIT = 100_000


@pytest.fixture
def small(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound,
                    smtp={"max_message_size": LIMIT, "max_recipients": 3})
    return g, inbound


def test_size_is_advertised(small):
    g, _ = small
    with connect(g.smtp_port) as c:
        assert c.has_extn("size")
        assert int(c.esmtp_features["size"]) == LIMIT


def test_mail_from_with_too_big_size_gets_552(small):
    g, inbound = small
    with connect(g.smtp_port) as c:
        code, text = c.mail("alice@example.com", [f"SIZE={LIMIT * 2}"])
        assert code == 552, text
        assert b"5.3.4" in text
        # the session goes on: a fitting declaration is accepted afterwards
        assert c.mail("alice@example.com", [f"SIZE={LIMIT // 2}"])[0] == 250


def test_too_large_body_gets_552_and_is_not_delivered(small):
    g, inbound = small
    msg, _ = make_message("too-big", body=(b"y" * 998 + b"\r\n") * 150)
    assert len(msg) > LIMIT
    with connect(g.smtp_port) as c:
        c.mail("alice@example.com")
        c.rcpt("bob@example.com")
        code, text = c.data(msg)
        assert code == 552, text
        assert c.noop()[0] == 250, "the session survives a too-large message"
        # and a fitting one still goes through on the same connection
        ok, mid = make_message("fits")
        c.sendmail("alice@example.com", ["bob@example.com"], ok)
    got = inbound.wait_for(1)
    assert [m.message()["Message-ID"] for m in got] == [mid]
    assert server_alive(g.smtp_port)


def test_too_many_recipients(small):
    g, inbound = small
    with connect(g.smtp_port) as c:
        c.mail("alice@example.com")
        for i in range(3):
            assert c.rcpt(f"r{i}@example.com")[0] == 250
        code, text = c.rcpt("r3@example.com")
        assert code in (452, 552), f"4th recipient over max_recipients=3: {code} {text!r}"
        msg, _ = make_message("max-rcpt")
        assert c.data(msg)[0] == 250
    [got] = inbound.wait_for(1)
    assert sorted(got.rcpt_tos) == ["r0@example.com", "r1@example.com", "r2@example.com"]


@pytest.fixture
def impatient(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, smtp={"command_timeout": "1s", "data_timeout": "2s"})
    return g, inbound


def _read_until_closed(sock, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except (TimeoutError, OSError):
        return data + b"<still open>"


def test_idle_client_is_dropped_after_command_timeout(impatient):
    from harness.smtp import RawSMTP

    g, _ = impatient
    with RawSMTP(g.smtp_port) as s:
        s.cmd("EHLO client.test")
        rest = _read_until_closed(s.sock, 6)
    assert b"<still open>" not in rest, "the connection must be closed after command_timeout"
    assert rest == b"" or rest.startswith(b"421"), rest


def test_stalled_data_is_dropped_after_data_timeout(impatient):
    from harness.smtp import RawSMTP

    g, inbound = impatient
    with RawSMTP(g.smtp_port) as s:
        s.cmd("EHLO client.test")
        s.cmd("MAIL FROM:<alice@example.com>")
        s.cmd("RCPT TO:<bob@example.com>")
        assert s.cmd("DATA")[0] == 354
        s.send(b"Subject: stalled\r\n\r\npart of a message\r\n")  # ...and then nothing
        rest = _read_until_closed(s.sock, 8)
    assert b"<still open>" not in rest
    assert rest == b"" or rest.startswith(b"421"), rest
    import time

    time.sleep(1)
    assert inbound.count() == 0, "a message cut off by the timeout must not be delivered"


def test_connection_limit(make_sink, make_siegel):
    from harness.smtp import RawSMTP

    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, smtp={"max_connections": 3})
    held = [RawSMTP(g.smtp_port) for _ in range(3)]
    try:
        assert all(h.greeting[0] == 220 for h in held)
        try:
            with RawSMTP(g.smtp_port, timeout=5) as extra:
                greeting = extra.greeting
        except (ConnectionError, OSError) as e:  # closed without a word is acceptable too
            greeting = (0, repr(e))
        assert greeting[0] in (0, 421), f"4th connection over max_connections=3: {greeting}"
    finally:
        for h in held:
            h.close()
    # capacity comes back once the others are gone
    import time

    time.sleep(0.5)
    assert server_alive(g.smtp_port)
