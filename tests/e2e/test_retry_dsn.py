"""Temporary failures are retried per recipient; permanent ones bounce with
a bilingual RFC 3464 report to the sender - never to the null sender."""

from __future__ import annotations

import re
import time

from harness.smtp import connect, make_message, send


def _data_attempts(sink) -> list[dict]:
    return [e for e in sink.events() if e["ev"] == "data"]


def test_451_then_250_is_delivered_after_retry(make_sink, make_siegel):
    inbound = make_sink("in")
    outbound = make_sink("out", script={"data": ["451 4.3.0 try again later", "250"]})
    g = make_siegel(inbound=inbound, outbound=outbound, queue={"retry": ["1s"], "max_lifetime": "60s"})
    msg, mid = make_message("retry-451", to="carol@partner.test")
    send(g.smtp_port, "alice@example.com", ["carol@partner.test"], msg)
    [got] = outbound.wait_for(1, timeout=30)
    assert got.message()["Message-ID"] == mid
    attempts = _data_attempts(outbound)
    assert [a["reply"][:3] for a in attempts] == ["451", "250"], attempts
    assert attempts[1]["t"] - attempts[0]["t"] >= 0.8, f"the retry must wait for the schedule: {attempts}"
    g.wait_queue_empty()
    assert inbound.count() == 0, "a delivered mail produces no DSN"


def test_temporary_failure_is_retried_per_recipient(make_sink, make_siegel):
    inbound = make_sink("in")
    outbound = make_sink("out", script={"rcpt": {"slow@partner.test": ["450 4.2.1 mailbox busy", "250"]}})
    g = make_siegel(inbound=inbound, outbound=outbound, queue={"retry": ["1s"], "max_lifetime": "60s"})
    msg, _ = make_message("retry-per-rcpt", to="fast@partner.test")
    send(g.smtp_port, "alice@example.com", ["fast@partner.test", "slow@partner.test"], msg)
    got = outbound.wait_for(2, timeout=30)
    delivered = [r for m in got for r in m.rcpt_tos]
    assert sorted(delivered) == ["fast@partner.test", "slow@partner.test"], \
        f"each recipient exactly once (the accepted one is not sent again): {delivered}"
    g.wait_queue_empty()
    assert sorted(r for m in outbound.messages() for r in m.rcpt_tos) == sorted(delivered)


def _dsn_texts(dsn):
    """(human-readable text parts, delivery-status text, original-headers text)."""
    msg = dsn.message()
    texts, status, original = [], "", ""
    for part in msg.walk():
        ct = part.get_content_type()
        if ct == "text/plain":
            texts.append(part.get_content())
        elif ct == "message/delivery-status":
            status += "\n".join(str(block) for block in part.get_payload())
        elif ct in ("text/rfc822-headers",):
            original += part.get_content() if hasattr(part, "get_content") else str(part.get_payload())
        elif ct == "message/rfc822":
            original += "\n".join(str(p) for p in part.get_payload())
    return msg, texts, status, original


GERMAN = ("konnte nicht", "nicht zugestellt", "unzustellbar", "zustellung", "empfänger", "nachricht")
ENGLISH = ("could not be delivered", "undeliverable", "delivery", "recipient", "message")


def test_permanent_failure_sends_bilingual_dsn_with_original_headers(make_sink, make_siegel):
    inbound = make_sink("in")
    outbound = make_sink("out", script={"rcpt": {"nobody@partner.test": ["550 5.1.1 no such user here"]}})
    g = make_siegel(inbound=inbound, outbound=outbound)
    token = f"dsn-original-subject-{time.time_ns()}"
    msg, mid = make_message(token, to="nobody@partner.test")
    send(g.smtp_port, "alice@example.com", ["nobody@partner.test", "ok@partner.test"], msg)

    [dsn] = inbound.wait_for(1, timeout=30)
    assert dsn.mail_from == "", "a DSN is sent from the null sender"
    assert dsn.rcpt_tos == ["alice@example.com"]
    msg_, texts, status, original = _dsn_texts(dsn)
    assert msg_.get_content_type() == "multipart/report"
    assert msg_.get_param("report-type") == "delivery-status"
    human = "\n".join(texts).lower()
    assert any(w in human for w in GERMAN), f"no German text in the DSN:\n{human}"
    assert any(w in human for w in ENGLISH), f"no English text in the DSN:\n{human}"
    low = status.lower()
    assert re.search(r"final-recipient:\s*rfc822;\s*nobody@partner\.test", low), status
    assert "action: failed" in low, status
    assert "status: 5.1.1" in low, status
    assert "550" in status, "Diagnostic-Code keeps the remote reply"
    assert "ok@partner.test" not in low, "the delivered recipient is not reported as failed"
    assert token in original, "the original headers (with the Subject) are in the DSN"
    assert mid in original
    # the good recipient got the mail exactly once; the bad one nothing
    [delivered] = outbound.wait_for(1)
    assert delivered.rcpt_tos == ["ok@partner.test"]
    g.wait_queue_empty()


def test_dsn_for_external_sender_goes_out_via_outbound_relay(make_sink, make_siegel):
    inbound = make_sink("in", script={"rcpt": {"gone@example.com": ["550 5.1.1 unknown"]}})
    outbound = make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound)
    msg, _ = make_message("dsn-external-sender", sender="writer@far.test", to="gone@example.com")
    send(g.smtp_port, "writer@far.test", ["gone@example.com"], msg, source="127.0.0.2")
    [dsn] = outbound.wait_for(1, timeout=30)
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["writer@far.test"]
    assert dsn.message().get_content_type() == "multipart/report"


def test_null_sender_failure_produces_no_dsn(make_sink, make_siegel):
    inbound = make_sink("in")
    outbound = make_sink("out", script={"rcpt": {"*": ["550 5.1.1 no such user"]}})
    g = make_siegel(inbound=inbound, outbound=outbound)
    msg, _ = make_message("null-sender-bounce", sender="", to="nobody@partner.test")
    with connect(g.smtp_port) as c:
        assert c.mail("<>")[0] == 250
        assert c.rcpt("nobody@partner.test")[0] == 250
        assert c.data(msg)[0] == 250
    # wait until the attempt happened and the mail left the queue
    deadline = time.monotonic() + 30
    while not any(e["ev"] == "rcpt" for e in outbound.events()) and time.monotonic() < deadline:
        time.sleep(0.1)
    g.wait_queue_empty(timeout=30)
    time.sleep(2)
    assert inbound.count() == 0 and outbound.count() == 0, "no DSN for a mail from <>"
    assert [e for e in inbound.events() if e["ev"] == "mail"] == []
    for sink in (inbound, outbound):
        assert not [e for e in sink.events() if e["ev"] == "rcpt" and e["addr"] in ("", "<>")], \
            "no attempt to send a DSN to the null sender"
