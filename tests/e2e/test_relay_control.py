"""No open relay: foreign domains only from trusted networks (or after AUTH)."""

from __future__ import annotations

import time

import pytest

from harness.smtp import connect, make_message

UNTRUSTED = "127.0.0.2"  # the client binds here; only 127.0.0.1/32 is trusted


@pytest.fixture
def narrow(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, smtp={"trusted_networks": ["127.0.0.1/32"]})
    return g, inbound, outbound


def test_untrusted_client_cannot_relay_to_external_domain(narrow):
    g, inbound, outbound = narrow
    with connect(g.smtp_port, source=UNTRUSTED) as c:
        assert c.sock.getsockname()[0] == UNTRUSTED
        assert c.mail("spammer@far.test")[0] == 250
        code, text = c.rcpt("victim@partner.test")
        assert code == 554, text
        assert b"5.7.1" in text
        # no recipient accepted → DATA must be refused too
        assert c.docmd("DATA")[0] in (503, 554)
    time.sleep(1)
    assert outbound.count() == 0 and inbound.count() == 0
    assert g.queue_list() == []


def test_untrusted_client_can_send_to_internal_domain(narrow):
    g, inbound, outbound = narrow
    msg, mid = make_message("inbound-from-untrusted", sender="x@far.test", to="bob@example.com")
    with connect(g.smtp_port, source=UNTRUSTED) as c:
        c.mail("x@far.test")
        assert c.rcpt("bob@EXAMPLE.com")[0] == 250, "domains compare case-insensitively"
        assert c.rcpt("carol@partner.test")[0] == 554
        assert c.data(msg)[0] == 250
    [got] = inbound.wait_for(1)
    assert got.message()["Message-ID"] == mid
    assert [r.lower() for r in got.rcpt_tos] == ["bob@example.com"]
    time.sleep(0.5)
    assert outbound.count() == 0


def test_trusted_client_may_relay(narrow):
    g, inbound, outbound = narrow
    msg, _ = make_message("outbound-from-trusted", to="carol@partner.test")
    with connect(g.smtp_port, source="127.0.0.1") as c:
        c.sendmail("alice@example.com", ["carol@partner.test"], msg)
    outbound.wait_for(1)


def test_lookalike_domains_are_not_internal(narrow):
    g, _, outbound = narrow
    with connect(g.smtp_port, source=UNTRUSTED) as c:
        c.mail("x@far.test")
        code, _ = c.rcpt("bob@evil.example.com.partner.test")
        assert code == 554
        code, _ = c.rcpt("bob@notexample.com")
        assert code == 554
