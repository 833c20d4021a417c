"""Portal load: starts `siegel serve` (release) on a fresh data folder,
seals a 100 KB mail for a recipient, registers the recipient through the
portal, then measures with wrk over HTTPS on loopback:

* logins/s: POST /login with the right password (argon2id verify, new
  session row, audit event) — the expensive path;
* opens/s: POST /read of the container by the logged-in recipient (session
  and account lookup, container record and key, decryption, MIME parsing,
  sanitising, the page).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PW = "Tr7$kq!vPz2m-Bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CTX = ssl._create_unverified_context()


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, str, bytes]:
        ctype, body = multipart(fields)
        req = urllib.request.Request(self.base + path, data=body, method="POST")
        req.add_header("Content-Type", ctype)
        req.add_header("Sec-Fetch-Site", "same-origin")
        if self.cookies:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None

        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=CTX), NoRedirect)
        try:
            r = opener.open(req, timeout=60)
            status, headers, data = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, data = e.code, e.headers, e.read()
        for c in headers.get_all("Set-Cookie") or []:
            k, v = c.split(";")[0].split("=", 1)
            if v:
                self.cookies[k] = v
        return status, data.decode(errors="replace"), body


BOUNDARY = "siegelBenchBoundary"


def multipart(fields: dict[str, str]) -> tuple[str, bytes]:
    out = b""
    for k, v in fields.items():
        out += f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
    out += f"--{BOUNDARY}--\r\n".encode()
    return f"multipart/form-data; boundary={BOUNDARY}", out


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def wrk(url: str, lua: Path, seconds: int, conns: int) -> tuple[float, str]:
    r = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                       capture_output=True, text=True, check=True)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
    if "Non-2xx" in r.stdout:
        raise SystemExit("wrk saw error responses:\n" + r.stdout)
    return rate, r.stdout


def lua(path: Path, body: bytes, cookies: dict[str, str]) -> Path:
    bodyfile = path.with_suffix(".body")
    bodyfile.write_bytes(body)
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    path.write_text(f"""
wrk.method = "POST"
local f = io.open("{bodyfile}", "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary={BOUNDARY}"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
{'wrk.headers["Cookie"] = "' + cookie + '"' if cookie else ''}
""")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--siegel", required=True)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="siegel-bench-gina-"))
    port = free_port()
    cfg = work / "siegel.toml"
    cfg.write_text(f"""
[server]
data_dir = "{work}/data"
[smtp]
listen = ["127.0.0.1:{free_port()}"]
hostname = "siegel.bench"
[domains]
internal = ["example.com"]
[routing]
inbound_relay = "127.0.0.1:9"
outbound_relay = "127.0.0.1:9"
[admin]
listen = "off"
[log]
level = "warn"
[portal]
listen = "127.0.0.1:{port}"
public_url = "https://127.0.0.1:{port}"
[gina]
default_language = "en"
client_limit = 100000
""")
    body = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 1800  # ~100 KB
    mail = (b"From: Alice <alice@example.com>\r\nTo: bob@partner.example\r\nSubject: Figures\r\n"
            b"Message-ID: <bench-1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)
    out = work / "msg.html"
    r = subprocess.run([a.siegel, "-c", str(cfg), "gina", "seal", "--from", "alice@example.com",
                        "--to", "bob@partner.example", "--out", str(out)], input=mail, capture_output=True, check=True)
    initial = re.search(r"initial password: (\S+)", r.stdout.decode()).group(1)
    text = out.read_text()
    container = re.search(r"readonly>\s*(.*?)</textarea>", text, re.S).group(1)
    proc = subprocess.Popen([a.siegel, "-c", str(cfg), "serve"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        for line in proc.stdout:
            if line.strip() == "siegel: ready":
                break
        base = f"https://127.0.0.1:{port}"
        c = Client(base)
        st, page, _ = c.post("/open", {"container": container})
        assert st == 200, page[:500]
        st, page, _ = c.post("/read", {"csrf": csrf(page), "container": container, "action": "login",
                                       "email": "bob@partner.example", "password": initial})
        st, page, _ = c.post("/register", {"csrf": csrf(page), "container": container, "new_password": PW,
                                           "new_password_confirm": PW, "security_question": "q",
                                           "security_answer": "a"})
        assert st == 200 and "iframe" in page or "body-text" in page, page[:800]
        session_csrf = csrf(page)
        # Opens by the logged-in recipient.
        _, body_open = multipart({"csrf": session_csrf, "container": container})
        open_lua = lua(work / "open.lua", body_open, c.cookies)
        # Logins: a fresh browser with a valid pre-login token each time.
        anon = Client(base)
        req = urllib.request.Request(base + "/")
        page = urllib.request.urlopen(req, context=CTX).read().decode()
        _, body_login = multipart({"csrf": csrf(page), "email": "bob@partner.example", "password": PW})
        login_lua = lua(work / "login.lua", body_login, {})
        print(f"container: {len(container)} bytes of base64 ({len(mail)} bytes of mail)")
        rate, outp = wrk(base + "/read", open_lua, a.seconds, a.connections)
        print(f"opens/s: {rate:.0f}")
        print("\n".join(l for l in outp.splitlines() if "%" in l and "ms" in l or "Latency" in l))
        rate, outp = wrk(base + "/login", login_lua, a.seconds, a.connections)
        print(f"logins/s: {rate:.0f}")
        print("\n".join(l for l in outp.splitlines() if "%" in l and "ms" in l or "Latency" in l))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
