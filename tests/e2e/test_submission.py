"""The submission listener: AUTH only after STARTTLS, and AUTH grants relaying."""

from __future__ import annotations

import smtplib

import pytest

from harness.ports import free_port
from harness.smtp import make_message, unverified_tls

USER, PASSWORD = "u@example.com", "correct horse battery staple"
UNTRUSTED = "127.0.0.2"


def _hash(password: str) -> str:
    argon2 = pytest.importorskip("argon2")
    # argon2id, the parameters Siegel itself uses (m=19 MiB, t=2, p=1)
    return argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(password)


@pytest.fixture
def sub(make_sink, make_siegel):
    inbound, outbound = make_sink("in"), make_sink("out")
    g = make_siegel(inbound=inbound, outbound=outbound,
                    smtp={"trusted_networks": ["127.0.0.1/32"],
                          "submission": {"listen": [f"127.0.0.1:{free_port()}"],
                                         "users": [{"name": USER, "password_hash": _hash(PASSWORD)}]}})
    return g, inbound, outbound


def _client(g, tls=True) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", g.submission_port, timeout=30, source_address=(UNTRUSTED, 0),
                     local_hostname="mua.test")
    c.ehlo()
    if tls:
        assert c.has_extn("starttls")
        c.starttls(context=unverified_tls())
        c.ehlo()
    return c


def test_auth_refused_before_starttls(sub):
    g, _, _ = sub
    with _client(g, tls=False) as c:
        assert not c.has_extn("auth"), "AUTH must not be offered in clear"
        code, _ = c.docmd("AUTH", "PLAIN AHUAZXhhbXBsZS5jb20AeA==")
        assert 500 <= code <= 599, code


def test_auth_plain_and_login_advertised_after_starttls(sub):
    g, _, _ = sub
    with _client(g) as c:
        mechs = c.esmtp_features.get("auth", "").upper().split()
        assert "PLAIN" in mechs and "LOGIN" in mechs, mechs


def test_wrong_password_is_535(sub):
    g, _, _ = sub
    with _client(g) as c:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login(USER, "wrong")
        assert e.value.smtp_code == 535


def test_unauthenticated_submission_cannot_relay(sub):
    g, _, outbound = sub
    with _client(g) as c:
        c.mail(USER)
        code, _ = c.rcpt("carol@partner.test")
        assert 500 <= code <= 599, code


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_authenticated_user_may_relay_from_untrusted_address(sub, mech):
    g, _, outbound = sub
    msg, mid = make_message(f"submission-{mech}", sender=USER, to="carol@partner.test")
    with _client(g) as c:
        c.user, c.password = USER, PASSWORD
        auth = c.auth_plain if mech == "PLAIN" else c.auth_login
        code, _ = c.auth(mech, auth, initial_response_ok=(mech == "PLAIN"))
        assert code == 235
        c.sendmail(USER, ["carol@partner.test"], msg)
    [got] = outbound.wait_for(1)
    assert got.message()["Message-ID"] == mid


def test_port_25_still_refuses_relay_from_untrusted(sub):
    g, _, _ = sub
    c = smtplib.SMTP("127.0.0.1", g.smtp_port, timeout=30, source_address=(UNTRUSTED, 0))
    with c:
        c.ehlo()
        c.mail("x@far.test")
        assert c.rcpt("carol@partner.test")[0] == 554
