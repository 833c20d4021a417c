"""Real Postfix on either side of Siegel: as the client in front of it, and
as the next hop behind it."""

from __future__ import annotations

import re

import pytest

from harness.smtp import make_message, send

pytestmark = pytest.mark.postfix


def test_postfix_in_front_relays_inbound_mail_through_siegel(gateway, postfix_factory):
    pf = postfix_factory(f"[127.0.0.1]:{gateway.port}", relay_domains="example.com")
    msg, mid = make_message("via-postfix-inbound", sender="x@far.test", to="bob@example.com")
    send(pf.port, "x@far.test", ["bob@example.com"], msg)
    [got] = gateway.inbound.wait_for(1, timeout=60)
    m = got.message()
    assert m["Message-ID"] == mid
    received = m.get_all("Received")
    assert len(received) >= 2, received
    assert "siegel.test" in received[0] and "postfix.test" in received[1], received
    log = pf.log()
    assert re.search(rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{gateway.port}.*status=sent", log), log[-2000:]
    # Postfix offers STARTTLS opportunistically (smtp_tls_security_level=may):
    # it must have negotiated TLS with Siegel.
    assert "TLS connection established to 127.0.0.1" in log, log[-2000:]


def test_postfix_in_front_relays_outbound_mail_with_several_recipients(gateway, postfix_factory):
    pf = postfix_factory(f"[127.0.0.1]:{gateway.port}")
    rcpts = ["a@partner.test", "b@partner.test", "c@partner.test"]
    msg, mid = make_message("via-postfix-outbound", to=", ".join(rcpts))
    send(pf.port, "alice@example.com", rcpts, msg)
    gateway.outbound.wait_for(1, timeout=60)
    gateway.siegel.wait_queue_empty(timeout=30)
    got = gateway.outbound.messages()
    assert sorted(r for m in got for r in m.rcpt_tos) == rcpts
    assert all(m.message()["Message-ID"] == mid for m in got)


def test_siegel_delivers_to_postfix_next_hop_over_starttls(make_sink, make_siegel, postfix_factory, pki):
    final = make_sink("final")
    pf = postfix_factory(
        f"[127.0.0.1]:{final.port}", relay_domains="partner.test",
        extra={"smtpd_tls_cert_file": str(pki["leaf"].cert), "smtpd_tls_key_file": str(pki["leaf"].key),
               "smtpd_tls_security_level": "may", "smtpd_tls_loglevel": "1"})
    inbound = make_sink("in")
    g = make_siegel(inbound=inbound, outbound=f"127.0.0.1:{pf.port}")
    msg, mid = make_message("siegel-to-postfix", to="carol@partner.test")
    send(g.smtp_port, "alice@example.com", ["carol@partner.test"], msg)
    [got] = final.wait_for(1, timeout=60)
    assert got.message()["Message-ID"] == mid
    assert "siegel.test" in got.message().get_all("Received")[1]
    log = pf.log()
    assert re.search(r"TLS connection established from localhost\[127\.0\.0\.1\]", log), log[-2000:]


def test_burst_to_postfix_smtp_sink(make_sink, make_siegel, smtp_sink):
    """200 mails with 5 recipients each, from 4 clients, relayed to Postfix's
    smtp-sink (a different SMTP server implementation, with PIPELINING):
    every one arrives, as one transaction per mail."""
    import threading
    import time

    from harness.smtp import connect

    inbound = make_sink("in")
    g = make_siegel(inbound=inbound, outbound=smtp_sink.addr)
    n, per_client = 200, 50
    rcpts = [f"r{i}@partner.test" for i in range(5)]
    failures: list[str] = []

    def client(k: int) -> None:
        try:
            with connect(g.smtp_port) as c:
                for i in range(per_client):
                    msg, _ = make_message(f"burst-{k}-{i}", to=rcpts[0])
                    c.sendmail("alice@example.com", rcpts, msg)
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n // per_client)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    g.wait_metric("siegel_recipients_delivered_total", n * len(rcpts), timeout=60)
    g.wait_queue_empty()
    time.sleep(0.5)
    assert smtp_sink.mesg == n, f"smtp-sink counted {smtp_sink.mesg} transactions for {n} mails"
