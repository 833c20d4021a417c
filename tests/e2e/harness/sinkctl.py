"""Test-side control of a recording sink (sink.py) running in a subprocess."""

from __future__ import annotations

import email
import email.policy
import json
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .ports import free_port

SINK_PY = Path(__file__).with_name("sink.py")


@dataclass
class Received:
    """One transaction the sink accepted."""

    meta: dict
    raw: bytes

    @property
    def mail_from(self) -> str:
        return self.meta["mail_from"]

    @property
    def rcpt_tos(self) -> list[str]:
        return self.meta["rcpt_tos"]

    @property
    def tls(self) -> bool:
        return bool(self.meta.get("tls"))

    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    def header(self, name: str) -> str | None:
        v = self.message()[name]
        return None if v is None else str(v)


class Sink:
    """A recording SMTP sink on 127.0.0.1:port, restartable on the same port
    and directory (messages received before a restart stay visible)."""

    def __init__(self, dirpath: Path, *, port: int | None = None, cert=None, script: dict | None = None,
                 name: str = "sink") -> None:
        self.dir = dirpath
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.cert = cert
        self.name = name
        self.script_path = self.dir / "script.json"
        self.set_script(script or {})
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_script(self, script: dict) -> None:
        """Change the sink's scripted replies (takes effect on the next command)."""
        tmp = self.script_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(script))
        tmp.replace(self.script_path)
        # make sure the mtime changes even within one clock tick
        now = time.time_ns()
        import os

        os.utime(self.script_path, ns=(now, now))

    def start(self, timeout: float = 15.0) -> "Sink":
        args = [sys.executable, str(SINK_PY), "--port", str(self.port), "--dir", str(self.dir),
                "--script", str(self.script_path)]
        if self.cert is not None:
            args += ["--cert", str(self.cert.cert), "--key", str(self.cert.key)]
        log = open(self.dir / "sink.log", "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if b"sink: ready" not in line:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {line!r}\n{self.log()}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        p = self.dir / "sink.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    # ---- what was received -------------------------------------------------
    def messages(self) -> list[Received]:
        out = []
        for meta_path in sorted((self.dir / "msgs").glob("*.json")):
            meta = json.loads(meta_path.read_text())
            raw = meta_path.with_suffix(".eml").read_bytes()
            out.append(Received(meta, raw))
        return out

    def count(self) -> int:
        d = self.dir / "msgs"
        return len(list(d.glob("*.json"))) if d.exists() else 0

    def events(self) -> list[dict]:
        p = self.dir / "events.jsonl"
        if not p.exists():
            return []
        evs = []
        for line in p.read_text().splitlines():
            try:
                evs.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written right now
        return evs

    def wait_for(self, n: int = 1, timeout: float = 20.0, pred=None) -> list[Received]:
        """Wait until at least n received messages (matching pred, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if pred is not None:
                msgs = [m for m in msgs if pred(m)]
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: expected {n} message(s) within {timeout}s, got {len(msgs)}; "
                    f"events: {self.events()[-10:]}")
            time.sleep(0.1)

    def find(self, token: str) -> list[Received]:
        t = token.encode()
        return [m for m in self.messages() if t in m.raw]
