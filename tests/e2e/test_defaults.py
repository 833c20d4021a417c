"""`siegel serve` without any config: embedded defaults."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import pytest

from harness.smtp import RawSMTP, connect, unverified_tls


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_on_embedded_defaults(siegel_bin, tmp_path):
    if _port_busy(2525):
        pytest.skip("127.0.0.1:2525 is taken by another process on this machine")
    p = subprocess.Popen([siegel_bin, "serve"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=open(tmp_path / "stderr.log", "wb"), text=True, env={"PATH": "/usr/bin:/bin"})
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip() == "siegel: ready":
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(30), f"not ready: {lines}\n{(tmp_path / 'stderr.log').read_text()[-3000:]}"
        assert any("smtp listening on 127.0.0.1:2525" in ln for ln in lines), lines
        assert any(ln.startswith("siegel: relay") for ln in lines), lines
        assert (tmp_path / "siegel-data").is_dir()
        pems = list((tmp_path / "siegel-data").rglob("*.pem")) + list((tmp_path / "siegel-data").rglob("*.crt"))
        assert pems, "a self-signed certificate is generated into the data folder"
        with RawSMTP(2525) as r:
            assert r.greeting[0] == 220
        with connect(2525) as c:
            c.starttls(context=unverified_tls())
            c.ehlo()
            assert c.noop()[0] == 250
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            pytest.fail("SIGTERM did not stop siegel within 15 s")
    assert p.returncode == 0 or p.returncode == -signal.SIGTERM
    time.sleep(0.2)
    assert not _port_busy(2525), "stopped gateway still listening"
