"""Test certificates made with the openssl command line tool.

Real openssl-made certificates (not ones our own Rust code generated), so the
TLS tests check interoperability, not agreement of a program with itself.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
_DEFAULT_SANS = ["DNS:localhost", "IP:127.0.0.1"]


@dataclass
class CertPair:
    cert: Path
    key: Path


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True)


def make_ca(dirpath: Path, name: str = "Siegel Test CA") -> CertPair:
    dirpath.mkdir(parents=True, exist_ok=True)
    cert, key = dirpath / "ca.pem", dirpath / "ca.key"
    _run(["openssl", "req", "-x509", *_EC, "-keyout", str(key), "-out", str(cert),
          "-days", "30", "-subj", f"/CN={name}",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return CertPair(cert, key)


def make_leaf(dirpath: Path, stem: str, ca: CertPair, names: list[str]) -> CertPair:
    """A server certificate signed by `ca`, valid for `names` plus localhost."""
    dirpath.mkdir(parents=True, exist_ok=True)
    cert, key, csr = dirpath / f"{stem}.pem", dirpath / f"{stem}.key", dirpath / f"{stem}.csr"
    ext = dirpath / f"{stem}.ext"
    sans = [f"DNS:{n}" for n in names] + _DEFAULT_SANS
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(sans)}\n"
    )
    _run(["openssl", "req", "-new", *_EC, "-keyout", str(key), "-out", str(csr),
          "-subj", f"/CN={names[0] if names else 'localhost'}"])
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
          "-CAcreateserial", "-days", "30", "-out", str(cert), "-extfile", str(ext)])
    return CertPair(cert, key)


def make_self_signed(dirpath: Path, stem: str, names: list[str]) -> CertPair:
    """A self-signed certificate: usable for TLS, but verifiable by nobody."""
    dirpath.mkdir(parents=True, exist_ok=True)
    cert, key = dirpath / f"{stem}.pem", dirpath / f"{stem}.key"
    sans = [f"DNS:{n}" for n in names] + _DEFAULT_SANS
    _run(["openssl", "req", "-x509", *_EC, "-keyout", str(key), "-out", str(cert),
          "-days", "30", "-subj", f"/CN={names[0] if names else 'localhost'}",
          "-addext", f"subjectAltName={','.join(sans)}"])
    return CertPair(cert, key)
