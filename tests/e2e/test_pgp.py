"""OpenPGP end to end through real SMTP, checked with the reference tools
(`gpg` in a throw-away GNUPGHOME, and `sq` where Debian's package is
installed): Siegel signs and encrypts PGP/MIME for gpg and sq users with
RSA and Curve25519 keys, decrypts and verifies what they send to our
users, learns correspondents' keys from real Thunderbird mail (Autocrypt),
and never loses a mail whose OpenPGP is broken."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.smtp import make_message, send

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
TB = TESTDATA / "thunderbird/mail/test/browser/openpgp/data"
BOB_FPR = "D1A66E1A23B182C9980F788CFBFCC82A015E7330"


def _cli(g, *args: str) -> str:
    r = g.cli(*args)
    assert r.returncode == 0, f"siegel {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


class Gpg:
    """gpg with its own home; no agent prompts (empty passphrases, loopback)."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="siegel-gpg-"))
        self.home.chmod(0o700)

    def run(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes",
                            "--pinentry-mode", "loopback", "--passphrase", "",
                            "--trust-model", "always", "--status-fd", "2", *args],
                           input=input, capture_output=True, timeout=60)
        if check:
            assert r.returncode == 0, f"gpg {args}: {r.stderr.decode(errors='replace')}"
        return r

    def generate(self, address: str, algo: str) -> str:
        self.run("--quick-generate-key", f"<{address}>", algo, "default", "never")
        out = self.run("--with-colons", "--list-keys", address).stdout.decode()
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        if algo != "future-default":
            # An explicit algorithm gives a signing primary key only.
            self.run("--quick-add-key", fpr, algo, "encr", "never")
        return fpr

    def export(self, address: str) -> bytes:
        return self.run("--armor", "--export", address).stdout

    def import_(self, data: bytes) -> None:
        self.run("--import", input=data)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def gpg():
    g = Gpg()
    yield g
    g.close()


def _armoured_part(raw: bytes) -> bytes:
    m = re.search(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", raw, re.S)
    assert m, raw[:2000]
    return m.group(0)


def _pgp_mime(sender: str, to: str, subject: str, armoured: bytes) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"pgp\"\r\n"
            "\r\n--pgp\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
            "--pgp\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n").encode() \
        + armoured.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n--pgp--\r\n"


@pytest.fixture(params=["cv25519", "rsa3072"])
def key_type(request) -> str:
    return request.param


def test_siegel_signs_and_encrypts_what_gpg_decrypts_and_verifies(make_sink, make_siegel, gpg, key_type):
    inbound, outbound = make_sink("inbound"), make_sink("outbound")
    g = make_siegel(inbound=inbound, outbound=outbound, openpgp={"key_type": key_type})
    _cli(g, "user", "add", "alice@example.com", "--name", "Alice Example")
    carol_fpr = gpg.generate("carol@partner.test", "future-default" if key_type == "cv25519" else "rsa3072")
    (g.workdir / "carol.asc").write_bytes(gpg.export("carol@partner.test"))
    assert carol_fpr in _cli(g, "pgp", "import", str(g.workdir / "carol.asc"))
    alice_key = _cli(g, "pgp", "export", "alice@example.com")
    assert alice_key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in alice_key
    gpg.import_(alice_key.encode())
    shown = gpg.run("--with-colons", "--list-keys", "alice@example.com").stdout.decode()
    want_algo = "22" if key_type == "cv25519" else "1"  # EdDSA / RSA
    assert any(line.startswith("pub:") and line.split(":")[3] == want_algo for line in shown.splitlines()), shown

    msg, mid = make_message("[secure] Board minutes", sender="alice@example.com", to="carol@partner.test",
                            body="Grüße, only for Carol.\r\n".encode())
    send(g.smtp_port, "alice@example.com", ["carol@partner.test"], msg)
    got = outbound.wait_for(1)[0]
    assert b"multipart/encrypted" in got.raw and b"only for Carol" not in got.raw
    assert got.header("Subject") == "...", "the subject travels protected inside"
    assert (got.header("Autocrypt") or "").startswith("addr=alice@example.com; keydata=")
    r = gpg.run("--decrypt", input=_armoured_part(got.raw))
    status = r.stderr.decode(errors="replace")
    assert "[GNUPG:] DECRYPTION_OKAY" in status and "[GNUPG:] GOODSIG" in status, status
    # VALIDSIG …: the last field is the primary key's fingerprint.
    validsig = next(line for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG"))
    assert f"alice@example.com\t{validsig.split()[-1]}\tissued" in _cli(g, "pgp", "list"), status
    plain = r.stdout.decode(errors="replace")
    assert "Subject: Board minutes" in plain, plain
    assert "Grüße, only for Carol." in plain, plain
    track = _cli(g, "track", mid)
    assert "carol@partner.test" in track and "OpenPGP" in track, track


def test_gpg_mail_to_our_user_arrives_decrypted_verified_and_teaches_bobs_key(make_sink, make_siegel, gpg):
    inbound, outbound = make_sink("inbound"), make_sink("outbound")
    g = make_siegel(inbound=inbound, outbound=outbound)
    _cli(g, "user", "add", "alice@example.com")
    gpg.import_(_cli(g, "pgp", "export", "alice@example.com").encode())
    gpg.generate("bob@partner.example", "rsa3072")
    bob_key = gpg.export("bob@partner.example").decode()
    # PGP/MIME as Enigmail/Thunderbird build it: a MIME entity (with Bob's
    # key attached) signed and encrypted in one OpenPGP message.
    entity = ("Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n"
              "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello Alice, from gpg.\r\n"
              "--inner\r\nContent-Type: application/pgp-keys; name=\"bob.asc\"\r\n\r\n"
              f"{bob_key}\r\n--inner--\r\n").encode()
    enc = gpg.run("--armor", "--encrypt", "--sign", "-u", "bob@partner.example",
                  "-r", "alice@example.com", input=entity).stdout
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"],
         _pgp_mime("bob@partner.example", "alice@example.com", "from gpg", enc))
    got = inbound.wait_for(1)[0]
    assert got.header("X-Siegel-Encryption") == "pgp", got.raw[:1500]
    assert got.header("X-Siegel-Signature") == "valid; signer=bob@partner.example", got.raw[:1500]
    assert b"Hello Alice, from gpg." in got.raw
    listing = _cli(g, "pgp", "list")
    assert re.search(r"bob@partner\.example\t[0-9A-F]{40}\tharvested \(attachment\)\tvalid", listing), listing

    # Inline PGP (an armoured block in a text body), now from a known key.
    inline = gpg.run("--armor", "--encrypt", "--sign", "-u", "bob@partner.example",
                     "-r", "alice@example.com", input=b"Inline, from gpg.\n").stdout
    mail = (b"From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: inline\r\n"
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\n") + inline.replace(b"\n", b"\r\n")
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"], mail)
    got = inbound.wait_for(2)[1]
    assert got.header("X-Siegel-Encryption") == "pgp", got.raw[:1500]
    assert got.header("X-Siegel-Signature") == "valid; signer=bob@partner.example", got.raw[:1500]
    assert b"Inline, from gpg." in got.raw and b"BEGIN PGP MESSAGE" not in got.raw

    # Encrypted to a key we do not hold, and corrupt packets: delivered as
    # they came, with the reason, never dropped.
    gpg.generate("zed@elsewhere.test", "rsa3072")
    other = gpg.run("--armor", "--encrypt", "-r", "zed@elsewhere.test", input=b"not for us\n").stdout
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"],
         _pgp_mime("bob@partner.example", "alice@example.com", "not ours", other))
    junk = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0garbage0000000000000000000000000000\r\n-----END PGP MESSAGE-----\r\n"
    send(g.smtp_port, "bob@partner.example", ["alice@example.com"],
         _pgp_mime("bob@partner.example", "alice@example.com", "junk", junk))
    got = {m.header("Subject"): m for m in inbound.wait_for(4)[2:]}
    assert got["not ours"].header("X-Siegel-Encryption") == "failed; reason=no-key", got["not ours"].raw[:800]
    assert got["junk"].header("X-Siegel-Encryption") == "failed; reason=malformed", got["junk"].raw[:800]
    assert b"multipart/encrypted" in got["junk"].raw


def test_thunderbird_autocrypt_key_makes_the_next_confidential_mail_pgp_instead_of_gina(
        make_sink, make_siegel, gpg):
    inbound, outbound = make_sink("inbound"), make_sink("outbound")
    g = make_siegel(inbound=inbound, outbound=outbound)  # GINA on by default
    _cli(g, "user", "add", "alice@example.com")

    def confidential(n: int) -> bytes:
        msg, _ = make_message("[secure] contract", sender="alice@example.com", to="bob@openpgp.example",
                              body=b"The contract, for Bob.\r\n")
        send(g.smtp_port, "alice@example.com", ["bob@openpgp.example"], msg)
        return outbound.wait_for(n)[n - 1].raw

    before = confidential(1)
    assert b"multipart/encrypted" not in before and b"The contract, for Bob." not in before
    assert b"text/html" in before, "without a key: a GINA carrier"

    # A real Thunderbird mail of Bob's: signed, with his Autocrypt header.
    tb = (TB / "eml/signed-by-0xfbfcc82a015e7330-to-0xf231550c4f47e38e-unencrypted-with-key.eml").read_bytes()
    send(g.smtp_port, "bob@openpgp.example", ["alice@example.com"], tb)
    tbmail = inbound.wait_for(1, pred=lambda m: m.header("Subject") == "Signed Unencrypted With Key")[0]
    assert tbmail.header("X-Siegel-Signature") == "valid; signer=bob@openpgp.example", tbmail.raw[:1500]
    listing = _cli(g, "pgp", "list")
    assert f"bob@openpgp.example\t{BOB_FPR}\tharvested (autocrypt)\tvalid" in listing, listing
    explained = _cli(g, "policy", "explain", "--from", "alice@example.com", "--to", "bob@openpgp.example",
                     "--subject", "[secure] x")
    assert "OpenPGP" in explained, explained

    after = confidential(2)
    assert b"multipart/encrypted" in after and b"The contract, for Bob." not in after
    gpg.import_((TB / "keys/bob@openpgp.example-0xfbfcc82a015e7330-secret.asc").read_bytes())
    gpg.import_(_cli(g, "pgp", "export", "alice@example.com").encode())
    r = gpg.run("--decrypt", input=_armoured_part(after))
    assert b"The contract, for Bob." in r.stdout
    status = r.stderr.decode(errors="replace")
    assert "[GNUPG:] DECRYPTION_OKAY" in status and "[GNUPG:] GOODSIG" in status, status


def test_domain_keys_both_ways_with_gpg(make_sink, make_siegel, gpg):
    inbound, outbound = make_sink("inbound"), make_sink("outbound")
    g = make_siegel(inbound=inbound, outbound=outbound, policy={"gina_sender_domains": []})
    ours = _cli(g, "domain-key", "export", "example.com")
    assert ours.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert _cli(g, "domain-key", "export", "example.com") == ours, "created once, then reused"
    bad = g.cli("domain-key", "export", "partner.test")
    assert bad.returncode != 0 and "not an internal domain" in (bad.stdout + bad.stderr)
    # A partner gateway's key: mail to anyone there leaves encrypted to it.
    gpg.generate("postmaster@partner.test", "future-default")
    (g.workdir / "partner.asc").write_bytes(gpg.export("postmaster@partner.test"))
    _cli(g, "domain-key", "import", "partner.test", str(g.workdir / "partner.asc"))
    msg, _ = make_message("[secure] via the gateway", sender="erin@example.com", to="zoe@partner.test",
                          body=b"Via the partner gateway.\r\n")
    send(g.smtp_port, "erin@example.com", ["zoe@partner.test"], msg)
    out = outbound.wait_for(1)[0]
    assert b"multipart/encrypted" in out.raw
    assert b"Via the partner gateway." in gpg.run("--decrypt", input=_armoured_part(out.raw)).stdout
    # The partner gateway encrypts to our domain key: opened for the user.
    gpg.import_(ours.encode())
    enc = gpg.run("--armor", "--encrypt", "-r", "postmaster@example.com",
                  input=b"Content-Type: text/plain\r\n\r\nTo your gateway.\r\n").stdout
    send(g.smtp_port, "zoe@partner.test", ["erin@example.com"],
         _pgp_mime("zoe@partner.test", "erin@example.com", "domain in", enc))
    got = inbound.wait_for(1)[0]
    assert got.header("X-Siegel-Encryption") == "domain-pgp", got.raw[:1000]
    assert b"To your gateway." in got.raw


@pytest.mark.skipif(shutil.which("sq") is None, reason="Debian package sq not installed")
def test_sq_both_ways(make_sink, make_siegel, tmp_path):
    inbound, outbound = make_sink("inbound"), make_sink("outbound")
    g = make_siegel(inbound=inbound, outbound=outbound)
    _cli(g, "user", "add", "alice@example.com")
    alice = tmp_path / "alice.asc"
    alice.write_text(_cli(g, "pgp", "export", "alice@example.com"))
    dave_key, dave_cert = tmp_path / "dave.key", tmp_path / "dave.cert"

    def sq(*args: str, input: bytes | None = None) -> bytes:
        r = subprocess.run(["sq", *args], input=input, capture_output=True, timeout=60)
        assert r.returncode == 0, f"sq {args}: {r.stderr.decode(errors='replace')}"
        return r.stdout

    sq("key", "generate", "--userid", "<dave@partner.test>", "--export", str(dave_key))
    sq("key", "extract-cert", "--output", str(dave_cert), str(dave_key))
    _cli(g, "pgp", "import", str(dave_cert))
    # sq → Siegel: signed and encrypted to alice, inline in a text body.
    armoured = sq("encrypt", "--recipient-cert", str(alice), "--signer-key", str(dave_key),
                  input=b"Hello Alice, from sq.\n")
    mail = (b"From: dave@partner.test\r\nTo: alice@example.com\r\nSubject: from sq\r\n"
            b"Content-Type: text/plain\r\n\r\n") + armoured.replace(b"\n", b"\r\n")
    send(g.smtp_port, "dave@partner.test", ["alice@example.com"], mail)
    got = inbound.wait_for(1)[0]
    assert got.header("X-Siegel-Encryption") == "pgp", got.raw[:1000]
    assert got.header("X-Siegel-Signature") == "valid; signer=dave@partner.test", got.raw[:1000]
    assert b"Hello Alice, from sq." in got.raw
    # Siegel → sq: sq decrypts and verifies alice's signature.
    msg, _ = make_message("[secure] for sq", sender="alice@example.com", to="dave@partner.test",
                          body=b"Hello Dave, from Siegel.\r\n")
    send(g.smtp_port, "alice@example.com", ["dave@partner.test"], msg)
    out = outbound.wait_for(1)[0]
    r = subprocess.run(["sq", "decrypt", "--recipient-key", str(dave_key), "--signer-cert", str(alice)],
                       input=_armoured_part(out.raw), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert b"Hello Dave, from Siegel." in r.stdout
    assert b"Good signature" in r.stderr, r.stderr
