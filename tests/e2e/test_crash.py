"""kill -9 with 1,000 mails in flight: every mail that got its 250 is
delivered after a restart. Duplicates are allowed (at-least-once) but
counted and reported."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from collections import Counter

import pytest

from harness import report
from harness.smtp import make_message

N_MAILS = 1000
CLIENTS = 8
KILL_AFTER = 400  # acknowledged mails before the kill
MID_RE = re.compile(rb"^Message-ID:\s*(<[^>]+>)", re.M | re.I)


@pytest.mark.slow
@pytest.mark.parametrize("next_hop", ["slow", "down"])
def test_kill9_loses_no_acknowledged_mail(make_sink, make_siegel, next_hop):
    inbound = make_sink("in")
    # slow: many mails are queued or mid-delivery at the kill;
    # down: everything is deferred in the queue when the kill comes
    outbound = make_sink("out", script={"data_delay": 0.05}, start=(next_hop == "slow"))
    g = make_siegel(inbound=inbound, outbound=outbound,
                    queue={"retry": ["1s", "2s"], "max_lifetime": "30m"})

    acked: set[str] = set()
    ambiguous: set[str] = set()  # the connection broke before DATA's reply
    lock = threading.Lock()
    killed = threading.Event()
    deadline = time.monotonic() + 180
    errors: list[str] = []

    def client(idx: int) -> None:
        conn = None
        todo = [make_message(f"crash-{idx}-{i}", to=f"user{i % 5}@partner.test")
                for i in range(idx, N_MAILS, CLIENTS)]
        while todo and time.monotonic() < deadline:
            msg, mid = todo[0]
            try:
                if conn is None:
                    conn = smtplib.SMTP("127.0.0.1", g.smtp_port, timeout=20, local_hostname="crash.test")
                    conn.ehlo()
                in_data = False
                code, _ = conn.mail("alice@example.com")
                if code != 250:
                    raise smtplib.SMTPException(f"MAIL {code}")
                code, _ = conn.rcpt(f"user{len(todo) % 5}@partner.test")
                if code != 250:
                    raise smtplib.SMTPException(f"RCPT {code}")
                in_data = True
                code, text = conn.data(msg)
                if code == 250:
                    with lock:
                        acked.add(mid)
                    todo.pop(0)
                else:
                    raise smtplib.SMTPException(f"DATA {code} {text!r}")
            except (OSError, smtplib.SMTPException) as e:
                if in_data:
                    with lock:
                        ambiguous.add(mid)
                if not killed.is_set() and not isinstance(e, OSError):
                    errors.append(f"client {idx}: {e!r}")
                try:
                    if conn is not None:
                        conn.close()
                except OSError:
                    pass
                conn = None
                time.sleep(0.1)
        if conn is not None:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                pass

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while len(acked) < KILL_AFTER and time.monotonic() < deadline and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    delivered_before_kill = outbound.count()
    g.kill9()
    killed.set()
    acked_at_kill = len(acked)
    time.sleep(0.5)
    g.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    accept_time = time.monotonic() - t0
    assert len(acked) == N_MAILS, f"clients could not hand over all mails: {len(acked)} acked; {errors[:5]}"
    assert not errors, errors[:5]

    outbound.set_script({})  # fast again
    if next_hop == "down":
        assert outbound.count() == 0
        outbound.start()
    wait_deadline = time.monotonic() + 150
    while True:
        received = [m.group(1).decode() for m in
                    (MID_RE.search(msg.raw) for msg in outbound.messages()) if m]
        missing = acked - set(received)
        if not missing or time.monotonic() > wait_deadline:
            break
        time.sleep(0.5)
    counts = Counter(received)
    dups = sum(c - 1 for c in counts.values() if c > 1)
    report.note(f"crash test ({next_hop} next hop): {N_MAILS} mails by {CLIENTS} clients in {accept_time:.1f}s; kill -9 after "
                f"{acked_at_kill} acks ({delivered_before_kill} delivered by then); "
                f"{len(ambiguous)} ambiguous (connection lost in DATA, resent); "
                f"received {len(received)}, unique {len(counts)}, duplicates {dups}, "
                f"lost {len(missing)}")
    assert not missing, f"{len(missing)} acknowledged mails lost, e.g. {sorted(missing)[:5]}"
    assert set(counts) <= acked | ambiguous, "the sink got mail nobody sent"
    g.wait_queue_empty(timeout=60)
