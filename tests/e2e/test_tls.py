"""STARTTLS in (smtplib, swaks, a configured certificate) and out
(opportunistic, and `required` with and without a verifiable next hop)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time

import pytest

from harness.smtp import connect, make_message, send, unverified_tls


def test_ehlo_advertises_starttls_and_mail_flows_over_tls(gateway):
    msg, mid = make_message("tls-in-smtplib", sender="x@far.test", to="bob@example.com")
    with connect(gateway.port) as c:
        assert c.has_extn("starttls")
        code, _ = c.starttls(context=unverified_tls())
        assert code == 220
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        c.ehlo()
        assert not c.has_extn("starttls"), "STARTTLS must not be offered again inside TLS"
        c.sendmail("x@far.test", ["bob@example.com"], msg)
    [got] = gateway.inbound.wait_for(1)
    assert got.message()["Message-ID"] == mid


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")
def test_swaks_with_starttls(gateway):
    token = f"swaks-tls-{time.time_ns()}"
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(gateway.port), "--tls",
         "--ehlo", "swaks.test", "--from", "someone@far.test", "--to", "bob@example.com",
         "--header", f"Subject: {token}", "--body", "sent by swaks over STARTTLS"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TLS started" in r.stdout, r.stdout
    [got] = gateway.inbound.wait_for(1)
    assert got.message()["Subject"] == token


def test_configured_certificate_is_presented(make_sink, make_siegel, pki):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound,
                    tls={"cert": str(pki["leaf"].cert), "key": str(pki["leaf"].key)})
    ctx = ssl.create_default_context(cafile=str(pki["ca"].cert))  # verifies chain and 127.0.0.1 SAN
    with connect(g.smtp_port) as c:
        c.starttls(context=ctx)
        c.ehlo()
        assert c.noop()[0] == 250


def test_outbound_starttls_is_used_when_offered(make_sink, make_siegel, pki):
    inbound, outbound = make_sink("in"), make_sink("out")
    tls_sink = make_sink("tls", tls=pki["leaf"])
    g = make_siegel(inbound=inbound, outbound=outbound,
                    routing={"routes": {"tls.example": tls_sink.addr}})
    msg, _ = make_message("tls-out", to="dave@tls.example")
    send(g.smtp_port, "alice@example.com", ["dave@tls.example"], msg)
    [got] = tls_sink.wait_for(1)
    assert got.tls, "opportunistic TLS: the next hop offered STARTTLS, so Siegel must have used it"
    assert outbound.count() == 0, "the per-domain route must win over outbound_relay"


def _mail_commands(sink) -> list[dict]:
    return [e for e in sink.events() if e["ev"] in ("mail", "rcpt", "data")]


def test_required_tls_never_sends_in_clear_and_finally_bounces(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    plain = make_sink("plain-no-starttls")
    g = make_siegel(inbound=inbound, outbound=outbound,
                    routing={"routes": {"secure.example": plain.addr}},
                    tls={"policy": {"secure.example": "required"}},
                    queue={"retry": ["1s"], "max_lifetime": "8s"})
    msg, mid = make_message("required-tls-plain", to="carol@secure.example")
    send(g.smtp_port, "alice@example.com", ["carol@secure.example"], msg)

    time.sleep(3)
    assert _mail_commands(plain) == [], "a required-TLS mail must never be sent without TLS"
    q = g.queue_list()
    assert len(q) == 1, q
    assert "defer" in q[0]["line"].lower(), f"expected a deferred entry: {q[0]['line']}"

    # after max_lifetime: a DSN to the (internal) sender, via the inbound relay
    [dsn] = inbound.wait_for(1, timeout=40)
    assert dsn.mail_from == ""
    assert dsn.rcpt_tos == ["alice@example.com"]
    assert dsn.message().get_content_type() == "multipart/report"
    assert "carol@secure.example" in dsn.raw.decode(errors="replace")
    assert _mail_commands(plain) == []
    assert plain.count() == 0
    g.wait_queue_empty()


def test_required_tls_refuses_unverifiable_certificate(make_sink, make_siegel, pki):
    inbound, outbound = make_sink("in"), make_sink("out")
    bad = make_sink("selfsigned", tls=pki["selfsigned"])
    g = make_siegel(inbound=inbound, outbound=outbound,
                    routing={"routes": {"untrusted.example": bad.addr}},
                    tls={"ca_files": [str(pki["ca"].cert)], "policy": {"untrusted.example": "required"}},
                    queue={"retry": ["1s"], "max_lifetime": "60s"})
    msg, _ = make_message("required-tls-untrusted", to="erin@untrusted.example")
    send(g.smtp_port, "alice@example.com", ["erin@untrusted.example"], msg)
    time.sleep(4)
    assert _mail_commands(bad) == [], "certificate not verifiable: nothing may be sent"
    assert bad.count() == 0
    assert len(g.queue_list()) == 1


def test_required_tls_delivers_to_verified_next_hop(make_sink, make_siegel, pki):
    inbound, outbound = make_sink("in"), make_sink("out")
    good = make_sink("trusted", tls=pki["leaf"])
    g = make_siegel(inbound=inbound, outbound=outbound,
                    routing={"routes": {"trusted.example": good.addr}},
                    tls={"ca_files": [str(pki["ca"].cert)], "policy": {"trusted.example": "required"}})
    msg, _ = make_message("required-tls-trusted", to="frank@trusted.example")
    send(g.smtp_port, "alice@example.com", ["frank@trusted.example"], msg)
    [got] = good.wait_for(1)
    assert got.tls
    assert got.rcpt_tos == ["frank@trusted.example"]
