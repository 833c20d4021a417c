#!/usr/bin/env python3
"""Side-by-side relay benchmark: Siegel vs. a private Postfix, same machine,
same run, same load (Postfix's smtp-source → relay → Postfix's smtp-sink).

Postfix runs with its default durability (its cleanup daemon fsyncs every
queue file before smtpd answers 250), which is the same promise Siegel makes:
no 250 before the mail is on disk.

The clock runs from the first connection of smtp-source until the *sink*
has received every mail (smtp-sink's message counter) and the relay's queue
is empty - i.e. end to end, not just acceptance. Acceptance time (smtp-source
finished) is printed too.

Also measures Siegel's peak RSS (VmHWM) while it relays one 100 MB mail:
the spool is streamed, so it must stay far below 100 MB.

Usually run via bench/relay.sh, which builds the release binary first.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness.ports import free_port  # noqa: E402
from harness.postfix import Postfix  # noqa: E402
from harness.siegel import Siegel, base_config, deep_merge  # noqa: E402
from harness.smtpsink import SmtpSink  # noqa: E402


def smtp_source(port: int, n: int, sessions: int, size: int, rcpts: int) -> float:
    t0 = time.monotonic()
    r = subprocess.run(["smtp-source", "-s", str(sessions), "-l", str(size), "-m", str(n), "-r", str(rcpts),
                        "-M", "bench.test", "-f", "sender@example.com", "-t", "rcpt@partner.test",
                        f"127.0.0.1:{port}"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {r.stdout}{r.stderr}")
    return time.monotonic() - t0


def warm_up(port: int, sink: SmtpSink) -> None:
    """One mail through the relay before the clock starts, so that both
    relays are measured in their steady state: Siegel's first mail to the
    recipients' domain waits for its WKD lookup (answered from the cache
    afterwards; on a machine whose DNS hangs, up to the fetch timeout), and
    Postfix starts its smtpd/cleanup/smtp processes."""
    import smtplib
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.sendmail("sender@example.com", ["rcpt@partner.test"],
                   b"From: <sender@example.com>\r\nTo: <rcpt@partner.test>\r\nSubject: warm-up\r\n\r\nwarm-up\r\n")
    wait_until(lambda: sink.mesg >= 1, 60, "the warm-up mail")


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timeout waiting for {what}")
        time.sleep(0.05)


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return None
    total, seen = 0.0, False
    for line in body.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})?\s+(\S+)", line)
        if m:
            total += float(m.group(2))
            seen = True
    return total if seen else None


def siegel_config(work: Path, sink_port: int) -> dict:
    cfg = base_config(work, inbound=f"127.0.0.1:{sink_port}", outbound=f"127.0.0.1:{sink_port}")
    return deep_merge(cfg, {"smtp": {"max_message_size": 200 * 1024 * 1024, "max_recipients": 1000},
                            "queue": {"retry": ["5s", "30s"], "max_lifetime": "1h"}})


def run_siegel(binary: str, work: Path, n: int, sessions: int, size: int, rcpts: int,
               count_fsync: bool = False) -> dict:
    sink = SmtpSink(free_port())
    g = Siegel(binary, work, siegel_config(work, sink.port))
    tracer = None
    try:
        g.start()
        if count_fsync and g.proc is not None:
            # count the sync calls while the load runs: evidence that 250 is
            # backed by fsync (and how much group commit batches them)
            trace_out = work / "strace.txt"
            tracer = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range,syncfs",
                                       "-o", str(trace_out), "-p", str(g.proc.pid)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # let strace attach to all threads
        warm_up(g.smtp_port, sink)
        t0 = time.monotonic()
        accept = smtp_source(g.smtp_port, n, sessions, size, rcpts)

        def done() -> bool:
            if sink.mesg < n + 1:
                return False
            d = metric(g.admin_port, "siegel_recipients_delivered_total")
            return d is None or d >= n * rcpts + 1

        wait_until(done, 1800, "Siegel to deliver everything")
        total = time.monotonic() - t0
        res = {"accept_s": accept, "total_s": total, "sink_mesg": sink.mesg}
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
            text = (work / "strace.txt").read_text()
            # strace -c table rows: % time, seconds, usecs/call, calls, [errors], syscall
            res["syncs"] = sum(int(m.group(1)) for m in
                               re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$",
                                           text, re.M) if m.group(2) != "total")
        return res
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
        g.stop()
        sink.stop()


def run_postfix(work: Path, n: int, sessions: int, size: int, rcpts: int) -> dict:
    sink = SmtpSink(free_port())
    base = Path(tempfile.mkdtemp(prefix="siegel-bench-postfix-", dir=work))
    pf = Postfix(f"[127.0.0.1]:{sink.port}", relay_domains="partner.test", base=base)
    try:
        pf.start()
        warm_up(pf.port, sink)
        wait_until(lambda: pf.queued() == 0, 60, "Postfix to empty its queue after the warm-up")
        t0 = time.monotonic()
        accept = smtp_source(pf.port, n, sessions, size, rcpts)
        wait_until(lambda: sink.mesg >= n + 1 and pf.queued() == 0, 1800, "Postfix to deliver everything")
        total = time.monotonic() - t0
        return {"accept_s": accept, "total_s": total, "sink_mesg": sink.mesg}
    finally:
        pf.stop()
        sink.stop()
        pf.cleanup()


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def run_big_mail(binary: str, work: Path, mb: int) -> dict:
    """One mail of `mb` MiB streamed in over a raw socket (the client holds
    one 64 KiB chunk at a time), relayed to smtp-sink."""
    sink = SmtpSink(free_port())
    g = Siegel(binary, work, siegel_config(work, sink.port))
    try:
        g.start()
        assert g.proc is not None
        pid = g.proc.pid
        baseline = vm_hwm_kib(pid)
        peak = [baseline]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], vm_hwm_kib(pid))
                except OSError:
                    return
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()
        s = socket.create_connection(("127.0.0.1", g.smtp_port), timeout=300)
        f = s.makefile("rb")

        def reply() -> str:
            lines = []
            while True:
                line = f.readline().decode(errors="replace")
                lines.append(line)
                if len(line) < 4 or line[3] != "-":
                    return "".join(lines)

        reply()
        for cmd in ("EHLO bench.test", "MAIL FROM:<sender@example.com>", "RCPT TO:<big@partner.test>", "DATA"):
            s.sendall(cmd.encode() + b"\r\n")
            r = reply()
            if not r[:1] in ("2", "3"):
                raise RuntimeError(f"{cmd}: {r}")
        line = b"X" * 76 + b"\r\n"
        chunk = b"Subject: big\r\nMessage-ID: <big@bench.test>\r\n\r\n" + line * (65536 // len(line))
        sent = 0
        t0 = time.monotonic()
        while sent < mb * 1024 * 1024:
            s.sendall(chunk)
            sent += len(chunk)
            chunk = line * (65536 // len(line))
        s.sendall(b".\r\n")
        final = reply()
        accept = time.monotonic() - t0
        s.sendall(b"QUIT\r\n")
        s.close()
        if not final.startswith("250"):
            raise RuntimeError(f"big mail refused: {final}")
        wait_until(lambda: sink.mesg >= 1, 600, "the big mail to reach the sink")
        total = time.monotonic() - t0
        stop.set()
        peak[0] = max(peak[0], vm_hwm_kib(pid))
        return {"bytes": sent, "baseline_kib": baseline, "peak_kib": peak[0], "accept_s": accept,
                "total_s": total}
    finally:
        g.stop()
        sink.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="mails per run (default 5000)")
    ap.add_argument("-s", "--sessions", type=int, default=20)
    ap.add_argument("-l", "--size", type=int, default=10240)
    ap.add_argument("-r", "--rcpts", default="1,5", help="recipient counts to run, comma separated")
    ap.add_argument("--big-mb", type=int, default=100, help="size of the big mail (0 = skip)")
    ap.add_argument("--count-fsync", action="store_true",
                    help="run Siegel under strace -c and report its fsync/fdatasync calls (slows it down)")
    ap.add_argument("--bin", default=None, help="siegel binary (default: release build)")
    a = ap.parse_args()

    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    binary = a.bin or str(target / "release" / "siegel")
    if not Path(binary).exists():
        print(f"no binary at {binary}; run bench/relay.sh (builds it)", file=sys.stderr)
        return 2
    for tool in ("smtp-source", "smtp-sink", "postfix"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} missing: apt-get install postfix", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="siegel-bench-"))
    os.chmod(work, 0o755)
    print(f"# siegel relay benchmark: N={a.n}, {a.size} B bodies, {a.sessions} sessions, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# binary: {binary}")
    print(f"{'rcpts':>5} {'relay':>8} {'accept s':>9} {'total s':>8} {'mails/s':>8}")
    rows = []
    try:
        for r in [int(x) for x in a.rcpts.split(",") if x]:
            sg = run_siegel(binary, work / f"siegel-r{r}", a.n, a.sessions, a.size, r)
            if a.count_fsync:
                # a separate, traced run (strace slows the process down)
                tr = run_siegel(binary, work / f"siegel-r{r}-traced", a.n, a.sessions, a.size, r, True)
                print(f"# siegel under strace: {tr.get('syncs', 0)} fsync-family calls for {a.n} mails "
                      f"({a.n / max(tr.get('syncs', 0), 1):.2f} mails per call)", flush=True)
            pf = run_postfix(work, a.n, a.sessions, a.size, r)
            for name, res in (("siegel", sg), ("postfix", pf)):
                print(f"{r:>5} {name:>8} {res['accept_s']:>9.2f} {res['total_s']:>8.2f} "
                      f"{a.n / res['total_s']:>8.1f}", flush=True)
            ratio = pf["total_s"] / sg["total_s"]
            rows.append((r, a.n / sg["total_s"], a.n / pf["total_s"], ratio))
            print(f"{r:>5} {'ratio':>8} {'':>9} {'':>8} {ratio:>7.2f}x  (siegel/postfix mails/s)", flush=True)
        if a.big_mb:
            big = run_big_mail(binary, work / "siegel-big", a.big_mb)
            print(f"# {big['bytes'] / 1048576:.0f} MiB mail: accepted in {big['accept_s']:.1f}s, delivered in "
                  f"{big['total_s']:.1f}s; siegel VmHWM {big['baseline_kib'] / 1024:.1f} MiB before, "
                  f"{big['peak_kib'] / 1024:.1f} MiB peak")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("# summary: " + "; ".join(f"{r} rcpt: siegel {s:.0f}/s, postfix {p:.0f}/s, ratio {x:.2f}"
                                    for r, s, p, x in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
