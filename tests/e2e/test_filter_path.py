"""Virus and spam filtering in the mail path (issue 4's inbound AV/AS stage
and PRODUCT.md "reject at SMTP time where possible, else quarantine"),
through real SMTP with the private clamd and spamd of the harness.

- Inbound and outbound, a virus is refused with 550 while the sending
  server waits: nothing is delivered and no bounce goes to a forged sender.
- A clean mail arrives stamped `X-Siegel-Virus: clean`, spam is tagged
  `X-Siegel-Spam: yes`; stamps forged by the sender are replaced.
- A scanner that is down makes the sender retry (451), never a delivery
  of an unscanned mail.
- Scanning after the 250 (scan_at_smtp = false) quarantines inbound
  rejects instead of bouncing them; a release delivers the mail marked.
- A virus inside an S/MIME-encrypted mail is found after decryption.
"""

from __future__ import annotations

import base64
import smtplib
import subprocess

import pytest

from harness.ports import free_port
from harness.scanners import EICAR, EICAR_NAME, GTUBE
from harness.smtp import make_message, send, wait_until

ATTACHMENT = base64.encodebytes(EICAR).replace(b"\n", b"\r\n")


def _with_attachment(subject: str, sender: str, to: str, payload: bytes = ATTACHMENT,
                     extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 1 Dec 2026 10:00:00 +0100\r\nMessage-ID: <{subject.replace(' ', '.')}@e2e.test>\r\n"
            f"{extra}MIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
            "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe invoice is attached.\r\n"
            "--b1\r\nContent-Type: application/octet-stream; name=\"invoice.com\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"invoice.com\"\r\n\r\n").encode() \
        + payload + b"--b1--\r\n"


def _refused(port: int, sender: str, rcpts: list[str], msg: bytes) -> smtplib.SMTPDataError:
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(port, sender, rcpts, msg)
    return e.value


def _normal(subject: str, sender: str = "bob@partner.example", to: str = "alice@example.com",
            body: bytes = b"Hi Alice,\r\n\r\nshall we meet tomorrow at ten to go through the quarterly "
                          b"figures?\r\n\r\nBob\r\n", extra: list[str] | None = None) -> bytes:
    msg, _ = make_message(subject, sender=sender, to=to, body=body, extra_headers=extra or [])
    return msg


@pytest.fixture
def filtered(make_sink, make_siegel, scanners):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, filter=scanners)
    return g, inbound, outbound


def test_inbound_virus_is_refused_at_smtp_time_without_a_bounce(filtered):
    g, inbound, outbound = filtered
    err = _refused(g.smtp_port, "bob@partner.example", ["alice@example.com"],
                   _with_attachment("invoice 1", "bob@partner.example", "alice@example.com"))
    assert err.smtp_code == 550, err
    assert b"5.7.1" in err.smtp_error and EICAR_NAME.encode() in err.smtp_error, err.smtp_error
    # A sender claiming our own domain gets no bounce either: the refusal
    # went to the connecting server, nothing is queued.
    err = _refused(g.smtp_port, "alice@example.com", ["carol@example.com"],
                   _with_attachment("invoice 2", "alice@example.com", "carol@example.com"))
    assert err.smtp_code == 550
    g.wait_queue_empty()
    assert inbound.count() == 0 and outbound.count() == 0


def test_outbound_virus_is_refused_to_the_internal_client(filtered):
    g, _, outbound = filtered
    err = _refused(g.smtp_port, "alice@example.com", ["bob@partner.example"],
                   _with_attachment("offer", "alice@example.com", "bob@partner.example"))
    assert err.smtp_code == 550 and EICAR_NAME.encode() in err.smtp_error
    g.wait_queue_empty()
    assert outbound.count() == 0


def test_clean_mail_is_stamped_spam_is_tagged_and_forged_stamps_are_replaced(filtered):
    g, inbound, _ = filtered
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"],
         _normal("meeting", extra=["X-Siegel-Spam: no; forged", "X-Siegel-Virus: clean; forged"]))
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"],
         _normal("cheap offer", body=b"Buy now!\r\n" + GTUBE + b"\r\n",
                 extra=["X-Siegel-Spam: no; score=0.0; threshold=5.0"]))
    got = {m.header("Subject"): m for m in inbound.wait_for(2)}
    clean, spam = got["meeting"], got["cheap offer"]
    assert clean.header("X-Siegel-Virus") == "clean", clean.raw[:600]
    assert (clean.header("X-Siegel-Spam") or "").startswith("no; score="), clean.raw[:600]
    assert b"forged" not in clean.raw
    assert (spam.header("X-Siegel-Spam") or "").startswith("yes; score="), spam.raw[:600]
    assert spam.raw.count(b"X-Siegel-Spam:") == 1, spam.raw[:600]
    # the stamps sit above the original header, under our Received line
    head = clean.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0].startswith(b"Received: ")
    names = [line.split(b":", 1)[0] for line in head if line[:1] not in (b" ", b"\t")]
    assert names.index(b"X-Siegel-Virus") < names.index(b"From")


def test_a_scanner_that_is_down_makes_the_sender_retry(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    dead = f"tcp:127.0.0.1:{free_port()}"
    g = make_siegel(inbound=inbound, outbound=outbound, filter={"clamd": dead, "connect_timeout": "2s"})
    err = _refused(g.smtp_port, "bob@partner.example", ["alice@example.com"], _normal("while clamd is down"))
    assert err.smtp_code == 451 and b"4.7.1" in err.smtp_error, err
    g.wait_queue_empty()
    assert inbound.count() == 0


def test_after_acceptance_inbound_viruses_are_quarantined_and_can_be_released(make_sink, make_siegel,
                                                                               scanners):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound,
                    filter=dict(scanners, scan_at_smtp=False, virus_action="reject"))
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"],
         _with_attachment("invoice 3", "bob@partner.example", "alice@example.com"))

    def quarantined():
        out = g.cli("quarantine", "list")
        return out.stdout if out.returncode == 0 and EICAR_NAME in out.stdout else None

    listing = wait_until(quarantined, timeout=30, what="the mail in the quarantine")
    qid = next(line.split()[0] for line in listing.splitlines() if EICAR_NAME in line)
    # nothing delivered, and no bounce to the (forged) sender
    assert inbound.count() == 0 and outbound.count() == 0
    r = g.cli("quarantine", "release", qid)
    assert r.returncode == 0, r.stdout + r.stderr
    [got] = inbound.wait_for(1, timeout=30)
    assert got.header("X-Siegel-Quarantine") == "released", got.raw[:800]
    assert (got.header("X-Siegel-Virus") or "").startswith("infected"), got.raw[:800]
    assert got.raw.count(b"Received: from") == 1


def test_a_virus_inside_an_encrypted_mail_is_found_after_decryption(make_sink, make_siegel, scanners,
                                                                    tmp_path):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, filter=scanners)
    r = g.cli("user", "add", "alice@example.com")
    assert r.returncode == 0, r.stdout + r.stderr
    cert = tmp_path / "alice.pem"
    cert.write_text(g.cli("cert", "export", "alice@example.com").stdout)
    entity = (b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
              b"Content-Type: application/octet-stream; name=\"x.com\"\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n" + ATTACHMENT + b"--b1--\r\n")
    enc = subprocess.run(["openssl", "cms", "-encrypt", "-aes256", "-binary", "-from", "bob@partner.example",
                          "-to", "alice@example.com", "-subject", "encrypted invoice", str(cert)],
                         input=entity, capture_output=True, check=True).stdout
    enc = enc.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    # The ciphertext is clean to clamd, so the sender hears 250 ...
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], enc)

    # ... and the decrypted virus goes to the quarantine, never to Alice.
    def quarantined():
        out = g.cli("quarantine", "list")
        return out.stdout if out.returncode == 0 and EICAR_NAME in out.stdout else None

    wait_until(quarantined, timeout=30, what="the decrypted virus in the quarantine")
    assert inbound.count() == 0 and outbound.count() == 0
