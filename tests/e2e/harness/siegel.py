"""Start, stop, kill and query a real `siegel` process.

Everything goes through the binary's public surface (CLI, SMTP, HTTP), never
through its internals: these tests must keep passing while the crates behind
the binary are rewritten.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from .ports import free_port

QUEUE_ID = re.compile(r"\b[0-9A-F]{20}\b")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else '"' + k.replace('"', '\\"') + '"'


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(d: dict, prefix: str = "") -> str:
    """A minimal TOML writer (tomllib only reads): scalars and lists first,
    then sub-tables, then arrays of tables (lists of dicts)."""
    lines: list[str] = []
    tables, arrays = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            arrays.append((k, v))
        elif v is not None:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        out += f"\n[{name}]\n" + to_toml(v, name)
    for k, v in arrays:
        name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
        for item in v:
            out += f"\n[[{name}]]\n" + to_toml(item, name)
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class SiegelError(RuntimeError):
    pass


class Siegel:
    """One gateway: a config file, a data dir, and (while started) a process."""

    def __init__(self, binary: str, workdir: Path, config: dict) -> None:
        self.binary = str(Path(binary).resolve())  # the process runs with cwd=workdir
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = workdir / "siegel.toml"
        self.config_path.write_text(to_toml(config))
        self.proc: subprocess.Popen | None = None
        self.stdout_lines: list[str] = []
        self.log_path = workdir / "siegel.stderr.log"
        self.starts = 0

    # ---- addresses from the config ---------------------------------------
    @staticmethod
    def _port(addr: str) -> int:
        return int(addr.rsplit(":", 1)[1])

    @property
    def smtp_port(self) -> int:
        return self._port(self.config["smtp"]["listen"][0])

    @property
    def submission_port(self) -> int:
        return self._port(self.config["smtp"]["submission"]["listen"][0])

    @property
    def admin_port(self) -> int:
        return self._port(self.config["admin"]["listen"])

    @property
    def portal_url(self) -> str:
        return self.config["portal"]["public_url"]

    @property
    def data_dir(self) -> Path:
        return Path(self.config["server"]["data_dir"])

    # ---- process control ---------------------------------------------------
    def start(self, timeout: float = 30.0) -> "Siegel":
        """Start `siegel serve` and wait for its `siegel: ready` line."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.stdout_lines = []
        err = open(self.log_path, "ab")
        err.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
        err.flush()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            [self.binary, "--config", str(self.config_path), "serve"],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            cwd=self.workdir, env=env, text=True, bufsize=1,
        )
        err.close()
        ready = threading.Event()
        proc = self.proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.stdout_lines.append(line.rstrip("\n"))
                if line.strip() == "siegel: ready":
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {proc.returncode}" if proc.poll() is not None
                       else f"not ready after {timeout}s")
                self.stop()
                raise SiegelError(f"siegel serve {why}\n--- stdout:\n" + "\n".join(self.stdout_lines)
                                  + "\n--- stderr (tail):\n" + self.log_tail())
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 8000) -> str:
        return self.log()[-n:]

    # ---- CLI -----------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=self.workdir)

    def queue_list(self) -> list[dict]:
        """Parsed `siegel queue list`: one dict per mail (id, line)."""
        r = self.cli("queue", "list")
        if r.returncode != 0:
            raise SiegelError(f"queue list failed ({r.returncode}): {r.stdout}{r.stderr}")
        out = []
        for line in r.stdout.splitlines():
            m = QUEUE_ID.search(line)
            if m and line.strip().startswith(m.group(0)):
                out.append({"id": m.group(0), "line": line})
        return out

    def wait_queue_empty(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            q = self.queue_list()
            if not q:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"queue not empty after {timeout}s: {q}")
            time.sleep(0.2)

    # ---- HTTP admin ----------------------------------------------------------
    def http_get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Prometheus text → {name: value}, summing over label sets and also
        keeping each `name{labels}` key."""
        status, body = self.http_get("/metrics")
        if status != 200:
            raise SiegelError(f"/metrics answered {status}")
        out: dict[str, float] = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if not m:
                continue
            try:
                val = float(m.group(3))
            except ValueError:
                continue
            name = m.group(1)
            if m.group(2):
                out[name + m.group(2)] = val
            out[name] = out.get(name, 0.0) + val if m.group(2) else val
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def wait_metric(self, name: str, at_least: float, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name)
            if v >= at_least:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} = {v}, expected >= {at_least} within {timeout}s")
            time.sleep(0.2)


def base_config(tmp: Path, *, inbound: str, outbound: str, **over) -> dict:
    """The config most tests start from: loopback only, short retries."""
    cfg = {
        "server": {"data_dir": str(tmp / "data")},
        "smtp": {
            "listen": [f"127.0.0.1:{free_port()}"],
            "hostname": "siegel.test",
            "trusted_networks": ["127.0.0.0/8"],
            "max_message_size": 50 * 1024 * 1024,
            "max_recipients": 100,
        },
        "domains": {"internal": ["example.com"]},
        "routing": {"inbound_relay": inbound, "outbound_relay": outbound},
        "queue": {"retry": ["1s", "2s"], "max_lifetime": "60s"},
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
    }
    portal_port = free_port()
    cfg["portal"] = {"listen": f"127.0.0.1:{portal_port}", "public_url": f"https://127.0.0.1:{portal_port}"}
    return deep_merge(cfg, over)
