"""Plain relaying: what goes in comes out, plus one Received header."""

from __future__ import annotations

from harness.smtp import connect, make_message, send


def test_outbound_relay_delivers_content_intact_with_received_header(gateway):
    # 8-bit text, a line starting with a dot (dot-stuffing both ways) and a
    # line that is only a dot inside the text.
    body = "Grüße aus Köln.\r\n.leading dot\r\n..two dots\r\nlast line\r\n".encode()
    msg, mid = make_message("relay-plain-1", sender="alice@example.com", to="carol@partner.test", body=body)
    refused = send(gateway.port, "alice@example.com", ["carol@partner.test"], msg)
    assert refused == {}

    [got] = gateway.outbound.wait_for(1)
    assert got.mail_from == "alice@example.com"
    assert got.rcpt_tos == ["carol@partner.test"]
    # The original bytes arrive unchanged after the trace header(s) Siegel prepends.
    assert got.raw.endswith(msg), got.raw[:600]
    added = got.raw[: len(got.raw) - len(msg)]
    assert added.startswith(b"Received: "), added
    assert b"siegel.test" in added, "the Received header names our hostname"
    assert gateway.inbound.count() == 0


def test_inbound_mail_from_anyone_goes_to_inbound_relay(gateway):
    msg, mid = make_message("relay-inbound", sender="someone@far.test", to="bob@example.com")
    send(gateway.port, "someone@far.test", ["bob@example.com"], msg, source="127.0.0.2")
    [got] = gateway.inbound.wait_for(1)
    assert got.rcpt_tos == ["bob@example.com"]
    assert got.message()["Message-ID"] == mid
    assert gateway.outbound.count() == 0


def test_recipients_for_one_next_hop_share_one_transaction(gateway):
    msg, _ = make_message("one-transaction", to="x@partner.test")
    rcpts = ["x@partner.test", "y@partner.test", "z@other.test"]  # all to the outbound relay
    send(gateway.port, "alice@example.com", rcpts, msg)
    gateway.siegel.wait_queue_empty()
    got = gateway.outbound.messages()
    assert sorted(r for m in got for r in m.rcpt_tos) == sorted(rcpts)
    assert len(got) == 1, f"expected one transaction for one next hop, got {[m.rcpt_tos for m in got]}"


def test_mixed_inbound_and_outbound_recipients_split_by_next_hop(gateway):
    msg, mid = make_message("split-hops")
    send(gateway.port, "alice@example.com", ["bob@example.com", "carol@partner.test"], msg)
    [i] = gateway.inbound.wait_for(1)
    [o] = gateway.outbound.wait_for(1)
    assert i.rcpt_tos == ["bob@example.com"]
    assert o.rcpt_tos == ["carol@partner.test"]
    assert i.message()["Message-ID"] == o.message()["Message-ID"] == mid


def test_envelope_dsn_parameters_are_passed_on(gateway):
    msg, _ = make_message("dsn-params", to="carol@partner.test")
    with connect(gateway.port) as c:
        assert c.has_extn("dsn"), "EHLO must advertise DSN"
        c.sendmail("alice@example.com", ["carol@partner.test"], msg,
                   mail_options=["RET=HDRS", "ENVID=e2e-envid-1"],
                   rcpt_options=["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;carol@partner.test"])
    [got] = gateway.outbound.wait_for(1)
    opts = " ".join(got.meta["mail_options"] + got.meta["rcpt_options"]).upper()
    assert "RET=HDRS" in opts and "ENVID=E2E-ENVID-1" in opts
    assert "NOTIFY=FAILURE,DELAY" in opts


def test_one_log_line_names_the_delivered_mail(gateway):
    msg, mid = make_message("log-line", to="carol@partner.test")
    send(gateway.port, "alice@example.com", ["carol@partner.test"], msg)
    gateway.outbound.wait_for(1)
    gateway.siegel.wait_queue_empty()
    log = gateway.siegel.log()
    lines = [ln for ln in log.splitlines() if "carol@partner.test" in ln]
    assert lines, f"no log line names the recipient:\n{log[-3000:]}"
    assert any(mid.strip("<>") in ln for ln in log.splitlines()), "no log line carries the Message-ID"


def test_ehlo_advertises_the_extensions(gateway):
    with connect(gateway.port) as c:
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "starttls", "dsn"):
            assert c.has_extn(ext), f"EHLO lacks {ext.upper()}: {c.esmtp_features}"
        assert not c.has_extn("auth"), "no AUTH on the public port"


def test_smtputf8_address_and_8bit_body_are_relayed(gateway):
    rcpt = "jörg@partner.test"
    body = "Überweisung: 100 €\r\n".encode()
    msg, mid = make_message("utf8", to="jorg@partner.test", body=body)
    with connect(gateway.port) as c:
        c.sendmail("alice@example.com", [rcpt], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [got] = gateway.outbound.wait_for(1)
    assert got.rcpt_tos == [rcpt]
    assert "SMTPUTF8" in got.meta["mail_options"], got.meta
    assert got.raw.endswith(msg)
