"""S/MIME end to end through real SMTP, checked with the reference tools
(`openssl cms` and `gpgsm`): Siegel signs for its users, encrypts to
harvested or imported certificates, decrypts and verifies inbound mail that
either tool made, and never loses a mail whose S/MIME is broken."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from harness import gpgsm as gs
from harness.smtp import make_message, send


def _run(args: list[str], *, input: bytes | None = None) -> bytes:
    r = subprocess.run(args, input=input, capture_output=True)
    assert r.returncode == 0, f"{args}: {r.stderr.decode(errors='replace')}"
    return r.stdout


def _cli(g, *args: str) -> str:
    r = g.cli(*args)
    assert r.returncode == 0, f"siegel {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def partner_pki(tmp_path_factory) -> dict[str, Path]:
    """A correspondent's CA (trusted through [smime] trust_bundles) and
    bob@partner.example's RSA certificate, made with the openssl tool."""
    d = tmp_path_factory.mktemp("partner")
    ca, ca_key = d / "ca.pem", d / "ca.key"
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
          "-out", str(ca), "-days", "30", "-subj", "/CN=Partner Test CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    bob, bob_key, csr, ext = d / "bob.pem", d / "bob.key", d / "bob.csr", d / "bob.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=emailProtection\n"
                   "subjectAltName=email:bob@partner.example\n")
    _run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(bob_key),
          "-out", str(csr), "-subj", "/CN=Bob Partner/emailAddress=bob@partner.example"])
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-days", "30", "-out", str(bob), "-extfile", str(ext)])
    return {"ca": ca, "bob": bob, "bob_key": bob_key, "dir": d}


@pytest.fixture
def gpgsm():
    """A throw-away gpgsm home (CRL checks off, loopback pinentry)."""
    home = gs.GpgSM()
    yield home
    home.close()


@pytest.fixture
def bob_in_gpgsm(gpgsm, partner_pki):
    """gpgsm holding bob@partner.example's key (PKCS#12 made with the openssl
    tool) and trusting bob's CA, so that gpgsm signs and decrypts as bob."""
    gpgsm.trust_ca(partner_pki["ca"].read_bytes())
    gs.openssl_p12(partner_pki["bob"], partner_pki["bob_key"], gs.PASSPHRASE, gpgsm)
    return gpgsm


@pytest.fixture
def smime_gateway(make_sink, make_siegel, partner_pki):
    inbound = make_sink("inbound")
    outbound = make_sink("outbound")
    g = make_siegel(inbound=inbound, outbound=outbound,
                    smime={"trust_bundles": [str(partner_pki["ca"])]})
    return g, inbound, outbound


def _bob_signed(partner_pki, token: str, *, to: str = "alice@example.com") -> bytes:
    """A detached-signed mail from bob, as `openssl cms -sign` writes it."""
    entity = f"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Alice, {token}.\r\n".encode()
    signed = _run(["openssl", "cms", "-sign", "-binary", "-signer", str(partner_pki["bob"]),
                   "-inkey", str(partner_pki["bob_key"]), "-from", "bob@partner.example",
                   "-to", to, "-subject", f"signed {token}"], input=entity)
    mid = f"Message-ID: <{uuid.uuid4().hex}@partner.example>\r\n".encode()
    return mid + signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_user_mail_is_signed_and_verifies_with_openssl(smime_gateway, tmp_path):
    g, _, outbound = smime_gateway
    _cli(g, "user", "add", "alice@example.com", "--name", "Alice Example")
    ca = tmp_path / "siegel-ca.pem"
    ca.write_text(_cli(g, "ca", "export"))
    msg, _ = make_message("smime-sign-1", sender="alice@example.com", to="carol@partner.test",
                          body="Grüße, signed.\r\n".encode())
    send(g.smtp_port, "alice@example.com", ["carol@partner.test"], msg)
    got = outbound.wait_for(1)[0]
    assert b"multipart/signed" in got.raw
    mail = tmp_path / "signed.eml"
    mail.write_bytes(got.raw)
    content = _run(["openssl", "cms", "-verify", "-in", str(mail), "-CAfile", str(ca)])
    assert "Grüße, signed.".encode() in content or b"Gr=C3=BC=C3=9Fe" in content
    # The CRL named in the certificate is served by the admin listener.
    status, _ = g.http_get("/crl/ca.crl")
    assert status == 200
    listing = _cli(g, "cert", "list")
    assert "alice@example.com" in listing and "issued" in listing


def test_onboarding_signs_a_new_senders_first_mail_and_leaves_others_alone(make_sink, make_siegel, tmp_path):
    """`[users] onboard` names who becomes a user on their own first mail:
    carol (not added by anyone) is signed on her first mail, with a
    certificate issued on the spot; noreply (excluded) and a sender of the
    internal domain the list does not name pass unsigned."""
    outbound = make_sink("outbound")
    g = make_siegel(inbound=make_sink("inbound"), outbound=outbound,
                    users={"onboard": ["carol@example.com", "noreply@example.com"],
                           "exclude": ["noreply@*"]})
    ca = tmp_path / "siegel-ca.pem"
    ca.write_text(_cli(g, "ca", "export"))
    for i, sender in enumerate(["carol@example.com", "noreply@example.com", "printer@example.com"]):
        msg, _ = make_message(f"onboard-{i}", sender=sender, to="dan@partner.test",
                              body=f"From {sender}.\r\n".encode())
        send(g.smtp_port, sender, ["dan@partner.test"], msg)
    got = {m.mail_from: m for m in outbound.wait_for(3)}
    carol = got["carol@example.com"]
    assert b"multipart/signed" in carol.raw, carol.raw[:600]
    mail = tmp_path / "carol.eml"
    mail.write_bytes(carol.raw)
    signer = tmp_path / "signer.pem"
    content = _run(["openssl", "cms", "-verify", "-in", str(mail), "-CAfile", str(ca),
                    "-signer", str(signer)])
    assert b"From carol@example.com." in content
    subject = _run(["openssl", "x509", "-in", str(signer), "-noout", "-ext", "subjectAltName"])
    assert b"carol@example.com" in subject
    for other in ["noreply@example.com", "printer@example.com"]:
        assert b"multipart/signed" not in got[other].raw, other
    users = _cli(g, "user", "list")
    assert "carol@example.com" in users and "licensed" in users, users
    assert "noreply@example.com" in users and "excluded" in users, users
    assert "printer@example.com" not in users, users


def test_harvested_certificate_makes_the_next_mail_encrypted(smime_gateway, partner_pki, tmp_path):
    g, inbound, outbound = smime_gateway
    _cli(g, "user", "add", "alice@example.com", "--name", "Alice Example")
    # 1. bob writes to alice, signed: Siegel verifies and harvests bob's certificate.
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], _bob_signed(partner_pki, "harvest"))
    got = inbound.wait_for(1)[0]
    assert got.header("X-Siegel-Signature") == "valid; signer=bob@partner.example", got.raw[:800]
    listing = _cli(g, "cert", "list")
    assert "bob@partner.example" in listing and "harvested" in listing, listing
    # 2. alice writes to bob: the mail leaves S/MIME-encrypted, bob's key opens it.
    msg, _ = make_message("smime-enc-1", sender="alice@example.com", to="bob@partner.example",
                          body=b"For Bob only.\r\n")
    send(g.smtp_port, "alice@example.com", ["bob@partner.example"], msg)
    out = outbound.wait_for(1)[0]
    assert b"application/pkcs7-mime" in out.raw and b"For Bob only" not in out.raw
    mail = tmp_path / "enc.eml"
    mail.write_bytes(out.raw)
    plain = _run(["openssl", "cms", "-decrypt", "-in", str(mail), "-recip", str(partner_pki["bob"]),
                  "-inkey", str(partner_pki["bob_key"])])
    assert b"multipart/signed" in plain  # signed by alice inside
    assert b"For Bob only." in plain


def test_inbound_encrypted_mail_is_decrypted_and_tampering_is_stamped(smime_gateway, partner_pki, tmp_path):
    g, inbound, _ = smime_gateway
    _cli(g, "user", "add", "alice@example.com")
    alice = tmp_path / "alice.pem"
    alice.write_text(_cli(g, "cert", "export", "alice@example.com"))
    entity = b"Content-Type: text/plain\r\n\r\nSecret for Alice.\r\n"
    enc = _run(["openssl", "cms", "-encrypt", "-aes256", "-binary", "-from", "bob@partner.example",
                "-to", "alice@example.com", "-subject", "encrypted", str(alice)], input=entity)
    enc = enc.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], enc)
    got = inbound.wait_for(1)[0]
    assert got.header("X-Siegel-Encryption") == "smime", got.raw[:800]
    assert b"Secret for Alice." in got.raw

    # A signed mail changed on the way: delivered, stamped invalid.
    signed = _bob_signed(partner_pki, "tamper")
    tampered = signed.replace(b"Hello Alice, tamper.", b"Hello Alice, TAMPER.")
    assert tampered != signed
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], tampered)
    got = inbound.wait_for(2)[1]
    assert (got.header("X-Siegel-Signature") or "").startswith("invalid; reason="), got.raw[:800]

    # Garbage claiming to be S/MIME still arrives, with the reason.
    junk, _ = make_message("junk", sender="bob@partner.example", to="alice@example.com",
                           body=b"AAAA not cms\r\n",
                           extra_headers=[])
    junk = junk.replace(b"Content-Type: text/plain; charset=utf-8",
                        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data")
    junk = junk.replace(b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: base64")
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], junk)
    got = inbound.wait_for(3)[2]
    assert (got.header("X-Siegel-Encryption") or "").startswith("failed; reason="), got.raw[:800]


def test_pki_commands_p12_revocation_crl_and_domain_certificates(smime_gateway, partner_pki, tmp_path):
    g, _, outbound = smime_gateway
    out = _cli(g, "user", "add", "dora@example.com", "--name", "Dora")
    fingerprint = out.split()[2]
    # PKCS#12 for the user's own client, protected by the password.
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    p12 = tmp_path / "dora.p12"
    _cli(g, "user", "export-p12", "dora@example.com", "--out", str(p12), "--password-file", str(pw))
    info = subprocess.run(["openssl", "pkcs12", "-in", str(p12), "-passin", "pass:s3cret", "-nodes"],
                          capture_output=True)
    if info.returncode != 0:  # OpenSSL 3 without the legacy provider for 3DES
        info = subprocess.run(["openssl", "pkcs12", "-legacy", "-in", str(p12), "-passin", "pass:s3cret",
                               "-nodes"], capture_output=True)
    assert info.returncode == 0, info.stderr
    assert b"PRIVATE KEY" in info.stdout and b"dora@example.com" in info.stdout
    wrong = subprocess.run(["openssl", "pkcs12", "-in", str(p12), "-passin", "pass:nope", "-nodes"],
                           capture_output=True)
    assert wrong.returncode != 0
    # Revocation puts the serial on the CRL the admin listener serves.
    _cli(g, "cert", "revoke", fingerprint)
    assert "revoked" in _cli(g, "cert", "list")
    crl = tmp_path / "ca.crl"
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{g.admin_port}/crl/ca.crl", timeout=10) as r:
        crl.write_bytes(r.read())
    ca = tmp_path / "ca.pem"
    ca.write_text(_cli(g, "ca", "export"))
    text = _run(["openssl", "crl", "-inform", "DER", "-in", str(crl), "-CAfile", str(ca), "-noout", "-text"])
    assert b"Revoked Certificates" in text
    # Our domain certificate, and a partner gateway's for domain encryption.
    own = _cli(g, "domain-cert", "export", "example.com")
    assert own.startswith("-----BEGIN CERTIFICATE-----")
    assert _cli(g, "domain-cert", "export", "example.com") == own, "created once, then reused"
    _cli(g, "domain-cert", "import", "partner.example", str(partner_pki["bob"]))
    msg, _ = make_message("smime-domain-1", sender="erin@example.com", to="zoe@partner.example",
                          body=b"Via the partner gateway.\r\n")
    send(g.smtp_port, "erin@example.com", ["zoe@partner.example"], msg)
    got = outbound.wait_for(1)[0]
    mail = tmp_path / "domain.eml"
    mail.write_bytes(got.raw)
    plain = _run(["openssl", "cms", "-decrypt", "-in", str(mail), "-recip", str(partner_pki["bob"]),
                  "-inkey", str(partner_pki["bob_key"])])
    assert b"Via the partner gateway." in plain


# ---- gpgsm, both directions, through SMTP -----------------------------------

def _gpgsm_entity(text: str) -> bytes:
    return f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n".encode()


def test_gpgsm_signed_mails_arrive_verified(smime_gateway, bob_in_gpgsm):
    g, inbound, _ = smime_gateway
    entity = _gpgsm_entity("Detached, signed by gpgsm.")
    detached = gs.headers("bob@partner.example", "alice@example.com", "gpgsm detached") + \
        gs.multipart_signed(entity, bob_in_gpgsm.detach_sign("bob@partner.example", entity))
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], detached)
    opaque_entity = _gpgsm_entity("Opaque, signed by gpgsm.")
    opaque = gs.headers("bob@partner.example", "alice@example.com", "gpgsm opaque") + \
        gs.pkcs7_mime(bob_in_gpgsm.sign_opaque("bob@partner.example", opaque_entity), "signed-data")
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], opaque)
    tampered = detached.replace(b"Detached, signed by gpgsm.", b"Detached, signed by gpgsm!") \
        .replace(b"Subject: gpgsm detached", b"Subject: gpgsm tampered")
    assert b"signed by gpgsm!" in tampered
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], tampered)

    got = {m.header("Subject"): m for m in inbound.wait_for(3)}
    d = got["gpgsm detached"]
    assert d.header("X-Siegel-Signature") == "valid; signer=bob@partner.example", d.raw[:1500]
    assert b"Detached, signed by gpgsm." in d.raw
    o = got["gpgsm opaque"]
    assert o.header("X-Siegel-Signature") == "valid; signer=bob@partner.example", o.raw[:1500]
    # the opaque signature is unwrapped, so the recipient can read it
    assert b"Opaque, signed by gpgsm." in o.raw and b"pkcs7-mime" not in o.raw.lower()
    # the tampered copy is delivered with the reason, not dropped
    t = got["gpgsm tampered"]
    assert t.header("X-Siegel-Signature") == "invalid; reason=bad-signature", t.raw[:1500]
    assert b"signed by gpgsm!" in t.raw


def test_gpgsm_encrypted_mails_to_an_internal_user_arrive_decrypted(smime_gateway, bob_in_gpgsm):
    g, inbound, _ = smime_gateway
    _cli(g, "user", "add", "alice@example.com", "--name", "Alice Example")
    # gpgsm encrypts only to certificates that chain to a trusted root
    bob_in_gpgsm.trust_ca(_cli(g, "ca", "export").encode())
    bob_in_gpgsm.import_cert(_cli(g, "cert", "export", "alice@example.com").encode())

    plain = _gpgsm_entity("Encrypted by gpgsm for Alice.")
    mail = gs.headers("bob@partner.example", "alice@example.com", "gpgsm encrypted") + \
        gs.pkcs7_mime(bob_in_gpgsm.encrypt("alice@example.com", plain), "enveloped-data")
    assert b"Encrypted by gpgsm" not in mail
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], mail)

    # signed by bob, then encrypted to alice: both stamps
    inner = _gpgsm_entity("Signed, then encrypted by gpgsm.")
    signed_entity = gs.multipart_signed(inner, bob_in_gpgsm.detach_sign("bob@partner.example", inner))
    mail = gs.headers("bob@partner.example", "alice@example.com", "gpgsm signed+encrypted") + \
        gs.pkcs7_mime(bob_in_gpgsm.encrypt("alice@example.com", signed_entity), "enveloped-data")
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], mail)

    got = {m.header("Subject"): m for m in inbound.wait_for(2)}
    e = got["gpgsm encrypted"]
    assert e.header("X-Siegel-Encryption") == "smime", e.raw[:1500]
    assert b"Encrypted by gpgsm for Alice." in e.raw and b"pkcs7-mime" not in e.raw.lower()
    assert e.header("X-Siegel-Signature") is None
    se = got["gpgsm signed+encrypted"]
    assert se.header("X-Siegel-Encryption") == "smime", se.raw[:1500]
    assert se.header("X-Siegel-Signature") == "valid; signer=bob@partner.example", se.raw[:1500]
    assert b"Signed, then encrypted by gpgsm." in se.raw


def test_siegel_signs_and_encrypts_and_gpgsm_decrypts_and_verifies(smime_gateway, partner_pki,
                                                                   bob_in_gpgsm):
    g, _, outbound = smime_gateway
    _cli(g, "user", "add", "alice@example.com", "--name", "Alice Example")
    _cli(g, "cert", "import", str(partner_pki["bob"]))
    bob_in_gpgsm.trust_ca(_cli(g, "ca", "export").encode())

    msg, _ = make_message("for gpgsm", sender="alice@example.com", to="bob@partner.example",
                          body="Grüße an Bob, from Siegel.\r\n".encode())
    send(g.smtp_port, "alice@example.com", ["bob@partner.example"], msg)
    out = outbound.wait_for(1)[0]
    assert "Grüße".encode() not in out.raw and b"from Siegel" not in out.raw
    head = out.raw.partition(b"\r\n\r\n")[0]
    assert b"application/pkcs7-mime; smime-type=enveloped-data" in head, head

    entity = bob_in_gpgsm.decrypt(gs.pkcs7_body(out.raw))
    assert entity.lower().startswith(b"content-type: multipart/signed"), entity[:300]
    content, signature = gs.split_signed(entity)
    report = bob_in_gpgsm.verify_detached(signature, content)
    assert "alice@example.com" in report, report
    # 8-bit text was made quoted-printable before signing
    assert b"Gr=C3=BC=C3=9Fe an Bob, from Siegel." in content, content
    # a changed byte and gpgsm refuses: the check can fail
    with pytest.raises(gs.GpgSMError):
        bob_in_gpgsm.verify_detached(signature, content.replace(b"Bob", b"Rob"))
