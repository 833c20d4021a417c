"""The real `gpgsm` (GnuPG's S/MIME tool) in a throw-away GNUPGHOME, and the
byte-exact MIME cutting the S/MIME interop tests need around it.

gpgsm reads and writes raw CMS; the MIME wrapping (multipart/signed,
application/pkcs7-mime) is done here exactly as RFC 8551 says, so that what
gpgsm signs is byte for byte what travels in the mail.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from email.utils import formatdate
from pathlib import Path

PASSPHRASE = "test"


class GpgSMError(AssertionError):
    pass


class GpgSM:
    """One GNUPGHOME with CRL checks off (our test CAs publish CRLs on
    loopback ports gpgsm's dirmngr is not set up for) and loopback pinentry."""

    def __init__(self) -> None:
        if not shutil.which("gpgsm"):
            raise GpgSMError("gpgsm is not installed (scripts/test installs gpgsm)")
        # short path: gpg-agent's socket path must fit in sun_path
        self.home = Path(tempfile.mkdtemp(prefix="gh", dir="/tmp"))
        (self.home / "gpgsm.conf").write_text("disable-crl-checks\n")
        (self.home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"],
                       env={**os.environ, "GNUPGHOME": str(self.home)}, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def run(self, *args: str, input: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["gpgsm", "--batch", "--pinentry-mode", "loopback", *args],
                           input=input, capture_output=True,
                           env={**os.environ, "GNUPGHOME": str(self.home)})
        if check and r.returncode != 0:
            raise GpgSMError(f"gpgsm {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stderr.decode(errors='replace')}")
        return r

    def path(self, name: str, data: bytes) -> str:
        p = self.home / name
        p.write_bytes(data)
        return str(p)

    # ---- keys and trust ------------------------------------------------------
    def trust_ca(self, ca_pem: bytes) -> None:
        """Imports a CA certificate and marks it trusted for S/MIME."""
        self.run("--import", self.path(f"ca-{uuid.uuid4().hex}.pem", ca_pem))
        der = base64.b64decode(b"".join(
            line for line in ca_pem.splitlines() if line and not line.startswith(b"-----")))
        fpr = hashlib.sha1(der).hexdigest().upper()
        fpr = ":".join(fpr[i:i + 2] for i in range(0, len(fpr), 2))
        with open(self.home / "trustlist.txt", "a") as f:
            f.write(f"{fpr} S\n")

    def import_cert(self, pem: bytes) -> None:
        self.run("--import", self.path(f"cert-{uuid.uuid4().hex}.pem", pem))

    def import_p12(self, p12: bytes, password: str) -> subprocess.CompletedProcess:
        r = self.run("--passphrase-fd", "0", "--import", self.path(f"k-{uuid.uuid4().hex}.p12", p12),
                     input=(password + "\n").encode(), check=False)
        if "secret keys imported: 1" not in r.stderr.decode(errors="replace"):
            raise GpgSMError(f"gpgsm did not import the PKCS#12 key:\n{r.stderr.decode(errors='replace')}")
        return r

    # ---- the four operations ------------------------------------------------
    def detach_sign(self, signer: str, data: bytes) -> bytes:
        return self.run("--passphrase-fd", "0", "--local-user", signer, "--detach-sign",
                        self.path("tosign", data), input=f"{PASSPHRASE}\n".encode()).stdout

    def sign_opaque(self, signer: str, data: bytes) -> bytes:
        return self.run("--passphrase-fd", "0", "--local-user", signer, "--sign",
                        self.path("tosign", data), input=f"{PASSPHRASE}\n".encode()).stdout

    def encrypt(self, recipient: str, data: bytes) -> bytes:
        return self.run("--recipient", recipient, "--encrypt", self.path("toencrypt", data)).stdout

    def decrypt(self, der: bytes, password: str = PASSPHRASE) -> bytes:
        return self.run("--passphrase-fd", "0", "--decrypt", self.path("enc.p7m", der),
                        input=(password + "\n").encode()).stdout

    def verify_detached(self, signature: bytes, content: bytes) -> str:
        """gpgsm's report; raises unless it says "Good signature"."""
        r = self.run("--verify", self.path("sig.p7s", signature), self.path("signed", content),
                     check=False)
        err = r.stderr.decode(errors="replace")
        if r.returncode != 0 or "Good signature" not in err:
            raise GpgSMError(f"gpgsm --verify did not accept the signature ({r.returncode}):\n{err}")
        return err


def openssl_p12(cert: Path, key: Path, password: str, gpgsm: GpgSM, attempts: int = 8) -> None:
    """Exports a key with the openssl tool (3DES/SHA-1, what gpgsm 2.2 reads)
    and imports it into gpgsm. gpgsm 2.2 cannot derive the key for about 2 %
    of random PKCS#12 salts (see siegel_crypto::pki::p12_gpgsm_compatible,
    which Siegel's own export avoids); the openssl tool has no such check, so
    a file gpgsm refuses is exported again with fresh salts."""
    last = None
    for _ in range(attempts):
        p12 = subprocess.run(
            ["openssl", "pkcs12", "-export", "-legacy", "-inkey", str(key), "-in", str(cert),
             "-passout", f"pass:{password}", "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES",
             "-macalg", "sha1"], capture_output=True)
        assert p12.returncode == 0, p12.stderr
        try:
            gpgsm.import_p12(p12.stdout, password)
            return
        except GpgSMError as e:
            last = e
    raise AssertionError(f"gpgsm refused {attempts} fresh exports: {last}")


# ---- MIME around raw CMS -----------------------------------------------------

def b64_lines(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"".join(text[i:i + 76] + b"\r\n" for i in range(0, len(text), 76))


def headers(sender: str, to: str, subject: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {formatdate(localtime=False)}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@gpgsm.test>\r\nMIME-Version: 1.0\r\n").encode()


def multipart_signed(entity: bytes, signature: bytes) -> bytes:
    """`entity` (CRLF, ends with CRLF) and its detached signature as the body
    of a multipart/signed (RFC 8551 §3.5.3), Content-Type line included."""
    b = f"----=_gpgsm_{uuid.uuid4().hex}"
    return (f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            f'micalg=sha-256; boundary="{b}"\r\n\r\n').encode() + \
        f"--{b}\r\n".encode() + entity + f"\r\n--{b}\r\n".encode() + \
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n' \
        b"Content-Transfer-Encoding: base64\r\n" \
        b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n' + \
        b64_lines(signature) + f"--{b}--\r\n".encode()


def pkcs7_mime(der: bytes, smime_type: str) -> bytes:
    return (f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n').encode() + b64_lines(der)


def split_signed(entity: bytes) -> tuple[bytes, bytes]:
    """The signed bytes and the DER signature of a multipart/signed entity
    or message, cut at the boundaries as RFC 1847 defines them."""
    head, _, body = entity.partition(b"\r\n\r\n")
    m = re.search(rb'boundary="?([^";\r\n]+)"?', head, re.I)
    if not m:
        raise AssertionError(f"no boundary in {head!r}")
    delim = b"--" + m.group(1)
    first = body.index(delim + b"\r\n") + len(delim) + 2
    second = body.index(b"\r\n" + delim + b"\r\n", first)
    content = body[first:second]
    sig_part = body[second + len(delim) + 4:]
    sig_body = sig_part[sig_part.index(b"\r\n\r\n") + 4:sig_part.index(delim + b"--")]
    return content, base64.b64decode(b"".join(sig_body.split()))


def pkcs7_body(message: bytes) -> bytes:
    """The DER inside an application/pkcs7-mime message."""
    head, _, body = message.partition(b"\r\n\r\n")
    if b"application/pkcs7-mime" not in head.lower():
        raise AssertionError(f"not application/pkcs7-mime: {head[:500]!r}")
    return base64.b64decode(b"".join(body.split()))

