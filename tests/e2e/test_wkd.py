"""WKD serving by the real `siegel serve`, checked with GnuPG's own tools.

`gpg --locate-keys --auto-key-locate clear,wkd` cannot be pointed at the
portal without real DNS: dirmngr resolves `openpgpkey.example.com` itself
and has no host-to-address override. So the test asks GnuPG for the URLs
(`gpg-wks-client --print-wkd-url`, the exact URL gpg would fetch, advanced
and direct method), fetches them from the running portal over HTTPS with
the Host header gpg would send, and imports the answer with `gpg --import`
into a temporary GNUPGHOME.

The internal user and their key are made the way an administrator makes
them: `siegel user add` and `siegel pgp export` (which generates the key
of a licensed user).
"""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

WKS_CLIENT = shutil.which("gpg-wks-client") or "/usr/lib/gnupg/gpg-wks-client"
pytestmark = pytest.mark.skipif(
    not shutil.which("gpg") or not Path(WKS_CLIENT).exists(),
    reason="needs gpg and gpg-wks-client",
)


def gpg(home: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", *args],
                          input=input, capture_output=True, timeout=60)


def user_key(g, address: str) -> str:
    """A licensed user of ours and the fingerprint of the key Siegel made."""
    for args in (("user", "add", address), ("pgp", "export", address)):
        r = g.cli(*args)
        assert r.returncode == 0, f"siegel {args}: {r.stdout}{r.stderr}"
    listing = g.cli("pgp", "list").stdout
    line = next(line for line in listing.splitlines() if line.lower().startswith(address.lower() + "\t"))
    return line.split("\t")[1]


def wkd_urls(address: str) -> tuple[str, str]:
    """GnuPG's URLs for the address: (advanced, direct)."""
    r = subprocess.run([WKS_CLIENT, "--print-wkd-url", address], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    advanced = r.stdout.decode().strip().splitlines()[0]
    parts = urlsplit(advanced)
    domain = address.rsplit("@", 1)[1]
    assert parts.hostname == f"openpgpkey.{domain}", advanced
    direct_path = parts.path.replace(f"/.well-known/openpgpkey/{domain}/hu/", "/.well-known/openpgpkey/hu/")
    direct = f"https://{domain}{direct_path}?{parts.query}"
    return advanced, direct


def fetch(portal_port: int, url: str) -> tuple[int, dict, bytes]:
    """GETs `url` from the portal, with the URL's host as Host header
    (instead of resolving it)."""
    parts = urlsplit(url)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the portal's test certificate
    c = http.client.HTTPSConnection("127.0.0.1", portal_port, context=ctx, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        c.request("GET", target, headers={"Host": parts.hostname})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_gpg_finds_an_internal_users_key_by_both_wkd_methods(gateway, tmp_path):
    g = gateway.siegel
    address = "Wkd.User@example.com"
    fpr = user_key(g, address)
    portal_port = int(urlsplit(g.portal_url).port)

    for url in wkd_urls(address):
        status, headers, body = fetch(portal_port, url)
        assert status == 200, (url, status, body[:200])
        assert headers["content-type"] == "application/octet-stream", headers
        home = tmp_path / f"peer-{len(os.listdir(tmp_path))}"
        home.mkdir(mode=0o700)
        r = gpg(home, "--import", input=body)
        assert r.returncode == 0, r.stderr
        r = gpg(home, "--with-colons", "--list-keys", address)
        assert r.returncode == 0, r.stderr
        assert f"fpr:::::::::{fpr}:" in r.stdout.decode(), r.stdout
        # public only: no secret key arrived
        assert gpg(home, "--list-secret-keys", address).returncode != 0

    # The policy file of the advanced method says example.com takes part.
    status, _, _ = fetch(portal_port, "https://openpgpkey.example.com/.well-known/openpgpkey/example.com/policy")
    assert status == 200
    # Unknown users and foreign domains: 404.
    other_adv, other_direct = wkd_urls("nobody@example.com")
    assert fetch(portal_port, other_adv)[0] == 404
    assert fetch(portal_port, other_direct)[0] == 404
    foreign_adv, _ = wkd_urls("someone@partner.example")
    assert fetch(portal_port, foreign_adv)[0] == 404
