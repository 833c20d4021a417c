"""The filter's parts that the binary has today: the private scanner
daemons of the harness (checked with the scanners' own clients), the
`[filter]` configuration, and the quarantine CLI on a running and a stopped
gateway. (Scanning in the pipeline is the pipeline stage's; its tests use
the `clamd`, `spamd` and `scanners` fixtures.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from harness.scanners import CUSTOM_NAME, EICAR, EICAR_NAME, GTUBE, CUSTOM
from harness.smtp import make_message, send, wait_until


def _client(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not shutil.which(path):
        pytest.fail(f"{name} is not installed (scripts/test installs it)", pytrace=False)
    return path


def _mail(body: bytes) -> bytes:
    return (b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.org>\r\n"
            b"Subject: Meeting tomorrow\r\nDate: Tue, 1 Dec 2026 10:00:00 +0100\r\n"
            b"Message-ID: <20261201.4711@mail.example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body)


def test_private_clamd_answers_clamdscan(clamd, tmp_path):
    clamdscan = _client("clamdscan")
    eicar = tmp_path / "eicar.com"
    eicar.write_bytes(EICAR)
    custom = tmp_path / "custom.txt"
    custom.write_bytes(b"some text " + CUSTOM)
    r = subprocess.run([clamdscan, "--no-summary", "--stream", f"--config-file={clamd.conf}",
                        str(eicar), str(custom)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{EICAR_NAME} FOUND" in r.stdout and f"{CUSTOM_NAME} FOUND" in r.stdout, r.stdout
    r = subprocess.run([clamdscan, "--no-summary", "--stream", f"--config-file={clamd.conf}", "-"],
                       input=_mail(b"Hi Bob, see you tomorrow.\r\n"), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_private_spamd_answers_spamc(spamd):
    spamc = _client("spamc")
    r = subprocess.run([spamc, "-d", "127.0.0.1", "-p", str(spamd.port), "-c"],
                       input=_mail(GTUBE + b"\r\n"), capture_output=True, timeout=60)
    assert r.returncode == 1, r
    score, threshold = r.stdout.decode().strip().split("/")
    assert float(score) >= 1000 and float(threshold) == 5.0
    r = subprocess.run([spamc, "-U", str(spamd.socket), "-c"],
                       input=_mail(b"Hi Bob,\r\n\r\nshall we meet tomorrow at ten to go through the "
                                   b"quarterly figures?\r\n\r\nAlice\r\n"),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r


def test_filter_config_with_the_private_scanners_passes_check(siegel_bin, tmp_path, scanners):
    f = tmp_path / "filter.toml"
    f.write_text(f'[filter]\nclamd = "{scanners["clamd"]}"\nspamd = "{scanners["spamd"]}"\n'
                 f'virus_action = "quarantine"\nspam_action = "tag"\nspam_reject_score = 15\n')
    r = subprocess.run([siegel_bin, "--config", str(f), "config", "check"], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("snippet,key", [
    ('[filter]\nclamd = "unix:clamd.ctl"\n', "filter.clamd"),
    ('[filter]\nspamd = "spamd.example"\n', "filter.spamd"),
    ('[filter]\nvirus_action = "tag"\n', "filter.virus_action"),
    ('[filter]\nspam_reject_score = -3\n', "filter.spam_reject_score"),
    ('[filter]\nspam_directions = ["sideways"]\n', "filter.spam_directions"),
])
def test_filter_config_errors_name_the_key(siegel_bin, tmp_path, snippet, key):
    f = tmp_path / "broken.toml"
    f.write_text(snippet)
    r = subprocess.run([siegel_bin, "--config", str(f), "config", "check"], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path)
    assert r.returncode != 0
    assert key in r.stdout + r.stderr and "broken.toml" in r.stdout + r.stderr


# ---- quarantine CLI ---------------------------------------------------------

@pytest.fixture
def stuck(make_sink, make_siegel):
    """Outbound next hop down, retries an hour apart: a sent mail stays in
    the queue, where the test can turn it into a quarantined one."""
    inbound = make_sink("in")
    outbound = make_sink("out", start=False)
    g = make_siegel(inbound=inbound, outbound=outbound, queue={"retry": ["1h"], "max_lifetime": "2h"})
    return g, outbound


def _queue_mail(g, rcpt: str, subject: str) -> str:
    msg, _ = make_message(subject, to=rcpt)
    send(g.smtp_port, "alice@example.com", [rcpt], msg)
    entry = wait_until(lambda: [e for e in g.queue_list() if rcpt in e["line"]], what=f"{rcpt} in queue")
    return entry[0]["id"]


def _quarantine_by_hand(g, qid: str, why: str) -> None:
    """What the filter stage does with a Quarantine verdict (the gateway is
    stopped): the entry becomes Held with a `quarantine: …` note, its
    recipients pending, the pipeline's Received: line kept in `prepend`."""
    path = g.data_dir / "spool" / "state" / f"{qid}.json"
    state = json.loads(path.read_text())
    assert state["prepend"].startswith("Received:"), state
    state["stage"] = "Held"
    state["note"] = f"quarantine: {why}"
    state["recipients"] = ["Pending" for _ in state["recipients"]]
    path.write_text(json.dumps(state))


def _ours(received) -> int:
    """How many Received: lines Siegel (smtp.hostname "siegel.test") added."""
    return sum("by siegel.test (Siegel)" in h for h in received.message().get_all("Received", []))


def test_quarantine_list_release_and_delete_on_a_stopped_and_a_running_gateway(stuck):
    g, outbound = stuck
    early = _queue_mail(g, "carol@partner.test", "quarantine-release-stopped")
    late = _queue_mail(g, "dan@partner.test", "quarantine-release-running")
    gone = _queue_mail(g, "erin@partner.test", "quarantine-delete")
    time.sleep(1)  # first attempts fail; state files written
    assert g.stop() is not None
    for qid in (early, late, gone):
        _quarantine_by_hand(g, qid, f"virus {EICAR_NAME}")

    r = g.cli("quarantine", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3, r.stdout
    assert all(f"| virus {EICAR_NAME}" in line for line in lines), r.stdout
    assert all("Held" in e["line"] for e in g.queue_list())
    show = g.cli("quarantine", "show", late)
    assert show.returncode == 0 and "note:        quarantine: virus" in show.stdout, show.stdout

    # Released while stopped: the pipeline takes it at the next start.
    r = g.cli("quarantine", "release", early)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "released" in r.stdout
    outbound.start()
    g.start()
    [first] = outbound.wait_for(1, timeout=20)
    assert first.rcpt_tos == ["carol@partner.test"]
    assert _ours(first) == 1, "a released mail gets one Received: line of ours, not two"

    # Held mail stays held on a running gateway…
    time.sleep(2)
    assert outbound.count() == 1
    # …until released: the running gateway carries the request out.
    r = g.cli("quarantine", "release", late)
    assert r.returncode == 0, r.stdout + r.stderr
    [_, second] = outbound.wait_for(2, timeout=20)
    assert second.rcpt_tos == ["dan@partner.test"]
    assert _ours(second) == 1

    r = g.cli("quarantine", "delete", gone)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_until(lambda: all(e["id"] != gone for e in g.queue_list()), timeout=10,
               what="the deleted mail to leave the queue")
    time.sleep(2)
    assert outbound.count() == 2, "a deleted quarantined mail is never sent"
    r = g.cli("quarantine", "list")
    assert r.returncode == 0 and "quarantine is empty" in r.stdout, r.stdout


def test_quarantine_refuses_mail_that_is_not_quarantined(stuck):
    g, _ = stuck
    qid = _queue_mail(g, "frank@partner.test", "not-quarantined")
    for verb in ("show", "release", "delete"):
        r = g.cli("quarantine", verb, qid)
        assert r.returncode != 0, f"{verb}: {r.stdout}"
        assert "not in the quarantine" in r.stderr, r.stderr
    assert any(e["id"] == qid for e in g.queue_list()), "nothing happened to it"
