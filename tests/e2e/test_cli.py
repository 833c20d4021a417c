"""`siegel queue …` on a running and a stopped gateway, and `siegel config …`."""

from __future__ import annotations

import os
import subprocess
import time
import tomllib

import pytest

from harness.ports import free_port, wait_port
from harness.smtp import make_message, send, wait_until


@pytest.fixture
def stuck(make_sink, make_siegel):
    """Outbound next hop down (sink created, not started), retries an hour
    apart: mail stays deferred until someone says `queue retry`."""
    inbound = make_sink("in")
    outbound = make_sink("out", start=False)
    g = make_siegel(inbound=inbound, outbound=outbound, queue={"retry": ["1h"], "max_lifetime": "2h"})
    return g, inbound, outbound


def _queue_mail(g, rcpt: str, subject: str) -> str:
    msg, _ = make_message(subject, to=rcpt)
    send(g.smtp_port, "alice@example.com", [rcpt], msg)
    entry = wait_until(lambda: [e for e in g.queue_list() if rcpt in e["line"]], what=f"{rcpt} in queue list")
    return entry[0]["id"]


def test_queue_list_on_empty_queue(gateway):
    r = gateway.siegel.cli("queue", "list")
    assert r.returncode == 0, r.stderr
    assert "queue is empty" in r.stdout


def test_queue_list_show_and_retry_on_running_gateway(stuck):
    g, _, outbound = stuck
    qid = _queue_mail(g, "carol@partner.test", "cli-running")
    [entry] = [e for e in g.queue_list() if e["id"] == qid]
    assert "alice@example.com" in entry["line"] and "carol@partner.test" in entry["line"]
    time.sleep(1)  # let the first attempt fail
    show = g.cli("queue", "show", qid)
    assert show.returncode == 0, show.stderr
    assert "alice@example.com" in show.stdout and "carol@partner.test" in show.stdout
    assert "defer" in show.stdout.lower(), show.stdout

    outbound.start()
    time.sleep(2)
    assert outbound.count() == 0, "next retry is an hour away; nothing should have been sent yet"
    r = g.cli("queue", "retry", qid)
    assert r.returncode == 0, r.stdout + r.stderr
    outbound.wait_for(1, timeout=20)
    g.wait_queue_empty()


def test_queue_delete_on_running_gateway(stuck):
    g, _, outbound = stuck
    qid = _queue_mail(g, "dan@partner.test", "cli-delete-running")
    r = g.cli("queue", "delete", qid)
    assert r.returncode == 0, r.stdout + r.stderr
    # a running gateway picks the request up asynchronously (control file)
    wait_until(lambda: all(e["id"] != qid for e in g.queue_list()), timeout=10,
               what="the deleted mail to leave the queue list")
    outbound.start()
    g.cli("queue", "retry", qid)  # must not resurrect it
    time.sleep(3)
    assert outbound.count() == 0


def test_queue_commands_on_stopped_gateway(stuck):
    g, _, outbound = stuck
    keep = _queue_mail(g, "erin@partner.test", "cli-stopped-keep")
    drop = _queue_mail(g, "frank@partner.test", "cli-stopped-drop")
    assert g.stop() is not None
    assert not g.running()

    ids = {e["id"] for e in g.queue_list()}
    assert ids == {keep, drop}
    show = g.cli("queue", "show", keep)
    assert show.returncode == 0 and "erin@partner.test" in show.stdout
    assert g.cli("queue", "delete", drop).returncode == 0
    assert {e["id"] for e in g.queue_list()} == {keep}
    assert g.cli("queue", "retry", keep).returncode == 0

    outbound.start()
    g.start()
    [got] = outbound.wait_for(1, timeout=20)
    assert got.rcpt_tos == ["erin@partner.test"]
    g.wait_queue_empty()
    time.sleep(1)
    assert outbound.count() == 1, "the deleted mail must never be sent"


def test_queue_show_unknown_id_fails(gateway):
    r = gateway.siegel.cli("queue", "show", "0123456789ABCDEF0123")
    assert r.returncode != 0
    r = gateway.siegel.cli("queue", "show", "not-an-id")
    assert r.returncode != 0


# ---- config ---------------------------------------------------------------

def _run(siegel_bin, *args, env=None, cwd=None):
    return subprocess.run([siegel_bin, *args], capture_output=True, text=True, timeout=30,
                          env=env, cwd=cwd)


def test_config_example_is_valid_toml_and_passes_check(siegel_bin, tmp_path):
    r = _run(siegel_bin, "config", "example")
    assert r.returncode == 0, r.stderr
    parsed = tomllib.loads(r.stdout)
    for table in ("server", "smtp", "domains", "routing", "tls", "queue", "admin"):
        assert table in parsed or f"[{table}" in r.stdout, f"example lacks [{table}]"
    assert r.stdout.count("#") >= 10, "the example is meant to be commented"
    f = tmp_path / "example.toml"
    f.write_text(r.stdout)
    c = _run(siegel_bin, "--config", str(f), "config", "check", cwd=tmp_path)
    assert c.returncode == 0, c.stdout + c.stderr


@pytest.mark.parametrize("snippet,key", [
    ('[smtp]\nmax_message_size = "lots"\n', "max_message_size"),
    ('[smtp]\nlisten = ["not-an-address"]\n', "listen"),
    ('[smtp]\ntrusted_networks = ["10.0.0.0/99"]\n', "trusted_networks"),
    ('[queue]\nretry = ["soon"]\n', "retry"),
    ('[tls.policy]\n"secure.example" = "maybe"\n', "secure.example"),
])
def test_config_check_names_file_and_key(siegel_bin, tmp_path, snippet, key):
    f = tmp_path / "broken.toml"
    f.write_text(snippet)
    r = _run(siegel_bin, "--config", str(f), "config", "check", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert str(f) in out or "broken.toml" in out, out
    assert key in out, out


def test_config_syntax_error_names_file(siegel_bin, tmp_path):
    f = tmp_path / "syntax.toml"
    f.write_text("[smtp\nlisten = \n")
    r = _run(siegel_bin, "config", "check", "--config", str(f), cwd=tmp_path)  # option after subcommand
    assert r.returncode != 0
    assert "syntax.toml" in r.stdout + r.stderr


def test_siegel_config_env_variable(siegel_bin, tmp_path):
    f = tmp_path / "env.toml"
    f.write_text('[smtp]\nmax_message_size = "lots"\n')
    env = dict(os.environ, SIEGEL_CONFIG=str(f))
    r = _run(siegel_bin, "config", "check", env=env, cwd=tmp_path)
    assert r.returncode != 0
    assert "env.toml" in r.stdout + r.stderr


def test_serve_with_broken_config_exits_nonzero_and_listens_nowhere(siegel_bin, tmp_path):
    port = free_port()
    f = tmp_path / "half.toml"
    f.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n[smtp]\nlisten = ["127.0.0.1:{port}"]\n'
                 f'max_message_size = "lots"\n')
    p = subprocess.Popen([siegel_bin, "--config", str(f), "serve"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("serve with a broken config kept running")
    assert p.returncode != 0
    assert "max_message_size" in out + err
    assert "siegel: ready" not in out
    assert not wait_port(port, timeout=0.5), "nothing may be half-started"
