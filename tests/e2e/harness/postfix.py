"""A private Postfix instance (`postfix -c DIR`) for the tests and the bench.

It never touches the system Postfix: its own config dir, queue dir and data
dir, listening only on 127.0.0.1:PORT. Directories live under a 0755 path
because Postfix's daemons run as the `postfix` user and must reach them
(pytest's own tmp dirs are 0700).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .ports import free_port, wait_port

# All services unchained (chroot = n): a chroot would need copies of /etc
# files inside our temporary queue dir.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_available() -> bool:
    return shutil.which("postfix") is not None or Path("/usr/sbin/postfix").exists()


class Postfix:
    """A relay-only Postfix: accepts mail for `relay_domains` (and from
    127.0.0.0/8 for anything) and relays all of it to `relayhost`."""

    def __init__(self, relayhost: str, *, port: int | None = None, relay_domains: str = "example.com",
                 extra: dict[str, str] | None = None, base: Path | None = None) -> None:
        self.port = port or free_port()
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="siegel-postfix-"))
        os.chmod(self.base, 0o755)
        self.conf = self.base / "etc"
        self.queue = self.base / "queue"
        self.data = self.base / "data"
        self.maillog = self.base / "maillog"
        for d in (self.conf, self.queue):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        self.data.mkdir(exist_ok=True)
        shutil.chown(self.data, "postfix", "postfix")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "shlib_directory": "/usr/lib/postfix",
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.test",
            "mydomain": "postfix.test",
            "myorigin": "postfix.test",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": relay_domains,
            "relayhost": relayhost,
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            # no DNS on this machine: relayhost is an address, don't look it up
            "disable_dns_lookups": "yes",
            "smtp_host_lookup": "native",
            "smtputf8_enable": "no",
            "biff": "no",
            "append_dot_mydomain": "no",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "message_size_limit": str(200 * 1024 * 1024),
            "default_process_limit": "100",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtp_destination_concurrency_limit": "20",
            "default_destination_concurrency_limit": "20",
            "relay_destination_concurrency_limit": "20",
        }
        if extra:
            settings.update(extra)
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))

    def _postfix(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run(["postfix", "-c", str(self.conf), *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
                               f"\n--- maillog:\n{self.log()[-3000:]}")
        return r

    def start(self) -> "Postfix":
        self._postfix("check")
        self._postfix("start")
        if not wait_port(self.port, timeout=20):
            raise RuntimeError(f"postfix did not listen on {self.port}\n{self.log()[-3000:]}")
        return self

    def stop(self) -> None:
        r = self._postfix("stop", check=False)
        if r.returncode != 0:
            self._postfix("abort", check=False)
        # master exits asynchronously; wait for its pid file to go
        pid = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 15
        while pid.exists() and time.monotonic() < deadline:
            try:
                os.kill(int(pid.read_text().split()[0]), 0)
            except (ProcessLookupError, ValueError, IndexError):
                break
            time.sleep(0.1)

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def queued(self) -> int:
        """Number of messages still in the queue (files, no postqueue needed)."""
        n = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            d = self.queue / sub
            if d.exists():
                n += sum(len(files) for _, _, files in os.walk(d))
        return n

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.conf), "-f"], capture_output=True, timeout=30)
