"""S/MIME end to end through real SMTP, checked with the reference tool
(`openssl cms`): Siegel signs for its users, encrypts to harvested
certificates, decrypts and verifies inbound mail, and never loses a mail
whose S/MIME is broken."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

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
