"""Private ClamAV (clamd) and SpamAssassin (spamd) daemons for tests and
benchmarks — never the system services.

Each daemon gets its own folder (0755: spamd's children run as `nobody`
when we are root), listens on 127.0.0.1 on a high port *and* on a Unix
socket in that folder, and is stopped at the end.

clamd: there is no internet, so freshclam cannot fetch signatures. The
daemon gets a database folder with one small signature file written here
(`siegel-test.ndb`: the EICAR test string and a custom test signature),
which makes it a real clamd with a real, tiny database; it starts in well
under a second. clamd reports names from such a file with `.UNOFFICIAL`
appended: `Siegel.Test.EICAR.UNOFFICIAL`.

spamd: the rules ship in Debian's `spamassassin` package
(/usr/share/spamassassin, no sa-update needed), the plugin loaders
(`*.pre`) in /etc/spamassassin; both are used read-only. The site config is
our own folder (`--siteconfigpath`) holding copies of the `.pre` files and
a local.cf without Bayes, auto-learning or network tests; spamd runs with
`-L` (local tests only) and `-x` (no user config). It starts in 1-5 s
(it compiles the rule set).

Use from Python:

    with Clamd(tmp_path / "clamd") as clamd:
        clamd.tcp      # "tcp:127.0.0.1:PORT"
        clamd.unix     # "unix:/…/clamd.sock"

or as a program, for tests in other languages (the Rust crate's tests):

    python3 scanners.py clamd DIR [--stream-max 1M]
    python3 scanners.py spamd DIR [--children 2]

which prints one JSON line `{"tcp": "...", "unix": "...", "pid": N}` once the
daemon answers PING, and stops it when its standard input is closed (so a
test process that dies takes its daemon with it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__:
    from .ports import free_port
else:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ports import free_port  # type: ignore[no-redef]

# The EICAR anti-virus test file (68 octets) and the GTUBE spam test string.
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# A string no real mail contains, for a signature of our own.
CUSTOM = b"SIEGEL-CUSTOM-TEST-SIGNATURE-5e1f0c27"
EICAR_NAME = "Siegel.Test.EICAR.UNOFFICIAL"
CUSTOM_NAME = "Siegel.Test.Custom.UNOFFICIAL"

SA_RULES = Path("/usr/share/spamassassin")
SA_SITE = Path("/etc/spamassassin")

LOCAL_CF = """\
# Siegel test spamd: deterministic, offline.
use_bayes 0
bayes_auto_learn 0
skip_rbl_checks 1
dns_available no
use_auto_whitelist 0
"""


def _find(binary: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        p = Path(d) / binary
        if p.exists():
            return str(p)
    found = shutil.which(binary)
    if not found:
        raise RuntimeError(f"{binary} not found: install the Debian package (scripts/test does)")
    return found


def _open_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path


class _Daemon:
    name = "daemon"

    def __init__(self, base: Path) -> None:
        self.base = _open_dir(Path(base))
        self.port = free_port()
        self.socket = self.base / f"{self.name}.sock"
        self.log_path = self.base / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    @property
    def tcp(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix:{self.socket}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ping(self, conn: socket.socket) -> bool:
        raise NotImplementedError

    def _answers(self, family: str) -> bool:
        try:
            if family == "unix":
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(2)
                conn.connect(str(self.socket))
            else:
                conn = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                conn.settimeout(2)
            with conn:
                return self._ping(conn)
        except OSError:
            return False

    def start(self, timeout: float = 90.0) -> "_Daemon":
        cmd = self._command()
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {' '.join(cmd)}\n"
                                   f"{self.log()[-4000:]}")
            if self._answers("unix") and self._answers("tcp"):
                self.start_seconds = time.monotonic() - started
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer PING within {timeout}s\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        # The whole process group: spamd's children too.
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Clamd(_Daemon):
    """clamd with a database of two test signatures."""

    name = "clamd"

    def __init__(self, base: Path, *, stream_max: str = "20M", threads: int = 4) -> None:
        super().__init__(base)
        self.db = _open_dir(self.base / "db")
        hexed = lambda b: b.hex()  # noqa: E731
        (self.db / "siegel-test.ndb").write_text(
            f"Siegel.Test.EICAR:0:*:{hexed(EICAR)}\n"
            f"Siegel.Test.Custom:0:*:{hexed(CUSTOM)}\n")
        self.conf = self.base / "clamd.conf"
        self.conf.write_text("\n".join([
            "Foreground yes",
            f"LocalSocket {self.socket}",
            "LocalSocketMode 666",
            f"TCPSocket {self.port}",
            "TCPAddr 127.0.0.1",
            f"DatabaseDirectory {self.db}",
            f"LogFile {self.log_path}",
            "LogTime yes",
            f"PidFile {self.base / 'clamd.pid'}",
            f"StreamMaxLength {stream_max}",
            f"MaxThreads {threads}",
            "ScanMail yes",
            "SelfCheck 0",
            "",
        ]))

    def _command(self) -> list[str]:
        return [_find("clamd"), "-c", str(self.conf)]

    def _ping(self, conn: socket.socket) -> bool:
        conn.sendall(b"zPING\0")
        return conn.recv(64).startswith(b"PONG")


class Spamd(_Daemon):
    """spamd with the packaged rules, offline, no user config."""

    name = "spamd"

    def __init__(self, base: Path, *, children: int = 2) -> None:
        super().__init__(base)
        if not any(SA_RULES.glob("*.cf")):
            raise RuntimeError(f"no SpamAssassin rules in {SA_RULES}: install the spamassassin package")
        pres = sorted(SA_SITE.glob("*.pre"))
        if not pres:
            raise RuntimeError(f"no plugin loaders (*.pre) in {SA_SITE}: reinstall the spamassassin package")
        # spamd drops to `nobody` before it reads the site config, so that
        # config (and the socket) must sit where `nobody` can reach them;
        # the caller's folder may be private (pytest's and Rust's temp
        # folders are 0700). A fresh 0755 folder under /tmp, removed at stop.
        self.site = Path(tempfile.mkdtemp(prefix="siegel-spamd-"))
        os.chmod(self.site, 0o755)
        self.socket = self.site / "spamd.sock"
        for pre in pres:
            shutil.copy(pre, self.site / pre.name)
        (self.site / "local.cf").write_text(LOCAL_CF)
        for f in self.site.iterdir():
            os.chmod(f, 0o644)
        self.children = children

    def _command(self) -> list[str]:
        cmd = [_find("spamd"),
               f"--configpath={SA_RULES}", f"--siteconfigpath={self.site}",
               "--local", "--nouser-config",
               f"--listen=127.0.0.1:{self.port}", f"--socketpath={self.socket}",
               "--allowed-ips=127.0.0.1",
               f"--max-children={self.children}", f"--min-children={min(self.children, 2)}",
               "--syslog=stderr"]
        if os.geteuid() == 0:
            # spamd will not scan as root; its children become nobody.
            cmd.append("--username=nobody")
        return cmd

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.site, ignore_errors=True)

    def _ping(self, conn: socket.socket) -> bool:
        conn.sendall(b"PING SPAMC/1.5\r\n\r\n")
        return b" 0 PONG" in conn.recv(128)


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("daemon", choices=["clamd", "spamd"])
    p.add_argument("dir", type=Path)
    p.add_argument("--stream-max", default="20M", help="clamd StreamMaxLength")
    p.add_argument("--children", type=int, default=2, help="spamd --max-children")
    a = p.parse_args(argv)
    d: _Daemon = (Clamd(a.dir, stream_max=a.stream_max) if a.daemon == "clamd"
                  else Spamd(a.dir, children=a.children))
    try:
        d.start()
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        return 1
    try:
        print(json.dumps({"tcp": d.tcp, "unix": d.unix, "pid": d.proc.pid if d.proc else None,
                          "start_seconds": d.start_seconds}), flush=True)
        # Until the caller closes our standard input (or dies).
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
