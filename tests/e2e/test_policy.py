"""The policy in the mail path (issue 4): classification, the decision per
recipient, splitting, inbound anti-spoofing and message tracking, through
real SMTP with the recording sinks.

GINA is on for the internal domains by default (test_gina.py covers it);
most tests here switch it off (`gina_sender_domains = []`) to test the
no-method path: a confidential mail nobody can carry is bounced (or held)
and never downgraded.
"""

from __future__ import annotations

import time

from harness.smtp import make_message, send, wait_until

NO_GINA = {"gina_sender_domains": []}


def _dsn_text(dsn) -> str:
    return "\n".join(p.get_content() for p in dsn.message().walk() if p.get_content_type() == "text/plain")


def test_secure_mail_without_method_bounces_bilingually_and_never_leaves(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, policy=NO_GINA)
    msg, mid = make_message("[secure] offer", to="bob@partner.example")
    send(g.smtp_port, "alice@example.com", ["bob@partner.example"], msg)
    [dsn] = inbound.wait_for(1, timeout=30)
    assert dsn.mail_from == "" and dsn.rcpt_tos == ["alice@example.com"]
    text = _dsn_text(dsn)
    assert "could not be encrypted for bob@partner.example" in text, text
    assert "konnte nicht verschlüsselt werden" in text, text
    g.wait_queue_empty()
    assert outbound.count() == 0, "a confidential mail without a method must not leave in clear"

    out = g.cli("track", mid)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bob@partner.example" in out.stdout
    assert "method:     refused" in out.stdout, out.stdout
    assert "not higher: S/MIME: no S/MIME certificate" in out.stdout, out.stdout
    assert "bounced by policy" in out.stdout, out.stdout


def test_normal_mail_goes_tls_only_with_subject_intact_and_is_tracked(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, policy=NO_GINA)
    subject = f"lunch on friday {time.time_ns()}"
    msg, mid = make_message(subject, to="bob@partner.example")
    send(g.smtp_port, "alice@example.com", ["bob@partner.example"], msg)
    [got] = outbound.wait_for(1)
    assert got.header("Subject") == subject
    g.wait_queue_empty()

    def tracked():
        out = g.cli("track", mid).stdout
        return out if "delivery:   delivered" in out else None

    out = wait_until(tracked, timeout=10, what="the delivery result in tracking")
    assert "method:     tls_only" in out, out
    assert "not higher: S/MIME" in out, out


def test_one_mail_is_split_per_recipient_situation(make_sink, make_siegel, pki):
    """Three recipients, three fates: a colleague (internal: unchanged, to
    the internal server), a partner with verified TLS (TLS only over a
    verified connection), a partner without any method (bounced)."""
    inbound, outbound = make_sink("in"), make_sink("out")
    good = make_sink("trusted", tls=pki["leaf"])
    g = make_siegel(
        inbound=inbound, outbound=outbound,
        routing={"routes": {"trusted.example": good.addr}},
        tls={"ca_files": [str(pki["ca"].cert)], "policy": {"trusted.example": "required"}},
        policy={"verified_tls_enough": ["trusted.example"], **NO_GINA},
    )
    msg, mid = make_message("[confidential] split", to="undisclosed-recipients:;")
    rcpts = ["colleague@example.com", "frank@trusted.example", "bob@partner.example"]
    send(g.smtp_port, "alice@example.com", rcpts, msg)
    [tls_copy] = good.wait_for(1)
    assert tls_copy.tls and tls_copy.rcpt_tos == ["frank@trusted.example"]
    assert tls_copy.header("Subject") == "split"
    copies = inbound.wait_for(2, timeout=30)
    [internal] = [m for m in copies if m.mail_from == "alice@example.com"]
    [dsn] = [m for m in copies if m.mail_from == ""]
    assert internal.rcpt_tos == ["colleague@example.com"]
    assert internal.header("Subject") == "split"
    text = _dsn_text(dsn)
    assert "bob@partner.example" in text and "frank@trusted.example" not in text, text
    for m in (tls_copy, internal):
        assert b"bob@partner.example" not in m.raw, "no recipient becomes visible in another copy"
    g.wait_queue_empty()
    assert outbound.count() == 0
    out = g.cli("track", mid).stdout
    for want in ("method:     plain", "method:     tls_only", "method:     refused", "copy:       queued as"):
        assert want in out, out


def test_secure_mail_to_verified_tls_domain_goes_over_verified_tls_without_keyword(make_sink, make_siegel, pki):
    inbound, outbound = make_sink("in"), make_sink("out")
    good = make_sink("trusted", tls=pki["leaf"])
    g = make_siegel(
        inbound=inbound, outbound=outbound,
        routing={"routes": {"trusted.example": good.addr}},
        tls={"ca_files": [str(pki["ca"].cert)], "policy": {"trusted.example": "required"}},
        policy={"verified_tls_enough": ["trusted.example"], **NO_GINA},
    )
    msg, mid = make_message("[secure] Q3 figures", to="frank@trusted.example")
    send(g.smtp_port, "alice@example.com", ["frank@trusted.example"], msg)
    [got] = good.wait_for(1)
    assert got.tls
    assert got.rcpt_tos == ["frank@trusted.example"]
    assert got.header("Subject") == "Q3 figures"
    assert b"[secure]" not in got.raw
    assert outbound.count() == 0
    out = g.cli("track", mid).stdout
    assert "method:     tls_only" in out, out
    assert "verified TLS" in out, out


def test_verified_tls_enough_without_required_tls_is_a_config_error(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, start=False,
                    policy={"verified_tls_enough": ["partner.example"]})
    r = g.cli("config", "check")
    assert r.returncode != 0
    assert "policy.verified_tls_enough[0]" in r.stdout + r.stderr


def test_confidential_mail_without_keys_goes_gina_by_default(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound)  # default: GINA for every internal domain
    msg, mid = make_message("[vertraulich] angebot", to="bob@partner.example",
                            body="Unser Angebot: 1,2 Mio.\r\n")
    send(g.smtp_port, "alice@example.com", ["bob@partner.example"], msg)
    [carrier] = outbound.wait_for(1, timeout=30)
    assert carrier.rcpt_tos == ["bob@partner.example"]
    assert carrier.header("X-Siegel-Gina-Container"), carrier.raw[:1200]
    assert b"Unser Angebot" not in carrier.raw and b"angebot" not in carrier.raw, "never in clear"
    # the first GINA mail to bob: his initial password goes to the sender
    [notice] = inbound.wait_for(1, timeout=30)
    assert notice.rcpt_tos == ["alice@example.com"] and notice.mail_from == "siegel@example.com"
    assert b"bob@partner.example" in notice.raw
    g.wait_queue_empty()
    out = g.cli("track", mid).stdout
    assert "method:     gina" in out, out


def test_confidential_without_method_can_be_held_instead(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound,
                    policy={"confidential_without_method": "hold", **NO_GINA})
    msg, _ = make_message("[vertraulich] angebot", to="bob@partner.example")
    send(g.smtp_port, "alice@example.com", ["bob@partner.example"], msg)

    def held():
        for e in g.queue_list():
            show = g.cli("queue", "show", e["id"]).stdout
            if "stage:       Held" in show:
                return show
        return None

    show = wait_until(held, timeout=10, what="the mail to be held")
    time.sleep(1)
    assert outbound.count() == 0 and inbound.count() == 0, show


def test_spoofed_siegel_headers_from_outside_are_removed(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound)
    token = f"spoof-{time.time_ns()}"
    msg, _ = make_message(token, sender="mallory@far.test", to="bob@example.com",
                          extra_headers=["X-Siegel-Signature: valid (signed by ceo@example.com)",
                                         "x-siegel-verified: yes"],
                          body="X-Siegel-Signature: in the body stays\r\n")
    send(g.smtp_port, "mallory@far.test", ["bob@example.com"], msg)
    [got] = inbound.wait_for(1)
    assert got.header("X-Siegel-Signature") is None
    assert got.header("X-Siegel-Verified") is None
    assert got.header("Subject") == token
    assert got.raw.endswith(b"X-Siegel-Signature: in the body stays\r\n")


def test_policy_explain_prints_the_decision_and_sends_nothing(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound, start=False, policy=NO_GINA)
    r = g.cli("policy", "explain", "--from", "alice@example.com", "--to", "b@partner.example",
              "--to", "c@other.example", "--subject", "[secure] x")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "classification: confidential (subject keyword [secure])" in out, out
    assert "subject sent:   x" in out, out
    assert "decision:   refused" in out, out
    assert "(deutsch):  Die vertrauliche Nachricht" in out, out
    assert "refused: b@partner.example, c@other.example" in out, out
    assert "(nothing was sent)" in out

    r = g.cli("policy", "explain", "--from", "alice@example.com", "--to", "b@partner.example",
              "--header", "Sensitivity: Company-Confidential")
    assert "classification: confidential (Sensitivity: Company-Confidential)" in r.stdout, r.stdout

    r = g.cli("policy", "explain", "--from", "alice@example.com", "--to", "b@partner.example",
              "--subject", "hello")
    assert "classification: not confidential" in r.stdout
    assert "decision:   TLS only" in r.stdout
    assert "1. TLS only → b@partner.example" in r.stdout
    assert outbound.count() == 0 and inbound.count() == 0
