"""Two `siegel serve` processes on one PostgreSQL database (issue 3,
point 4): they start at the same time (the migrations race), both take mail
at the same time, and the shared state is neither corrupted nor duplicated —
every decision is recorded once, and one node can explain what the other did."""

from __future__ import annotations

import base64
import secrets
import subprocess
import threading

import pytest

from harness.smtp import make_message, send

PG = "postgres://postgres@127.0.0.1:5432"
MAILS_PER_NODE = 40


def psql(db: str, sql: str) -> str:
    r = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def shared_db():
    name = f"siegel_e2e_{secrets.token_hex(6)}"
    psql("postgres", f"CREATE DATABASE {name}")
    yield name
    psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_two_nodes_share_one_postgres_database(make_sink, make_siegel, shared_db, monkeypatch):
    # Both nodes must hold the same master key: it comes from the environment.
    monkeypatch.setenv("SIEGEL_MASTER_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    inbound, outbound = make_sink("in"), make_sink("out")
    db = {"url": f"{PG}/{shared_db}"}
    nodes = [make_siegel(inbound=inbound, outbound=outbound, start=False, name=f"node{i}", database=db,
                         policy={"gina_sender_domains": []}, smtp={"hostname": f"node{i}.test"})
             for i in range(2)]

    # Start both at once: the schema migration must be applied exactly once.
    errors: list[BaseException] = []

    def start(n):
        try:
            n.start()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # Every migration applied exactly once: one row per version, versions 1..n.
    assert psql(shared_db, "SELECT count(*) = count(DISTINCT version) AND count(*) = max(version) "
                           "AND count(*) >= 2 FROM _sqlx_migrations") == "t"

    # Both take mail concurrently; every decision is stored once.
    sent: dict[str, int] = {}

    def feed(idx: int, node) -> None:
        for i in range(MAILS_PER_NODE):
            msg, mid = make_message(f"two-nodes {idx}-{i}", to="bob@partner.test")
            send(node.smtp_port, "alice@example.com", ["bob@partner.test"], msg)
            sent[mid] = idx

    feeders = [threading.Thread(target=feed, args=(i, n)) for i, n in enumerate(nodes)]
    for t in feeders:
        t.start()
    for t in feeders:
        t.join(120)
    assert len(sent) == 2 * MAILS_PER_NODE
    outbound.wait_for(2 * MAILS_PER_NODE, timeout=60)
    for n in nodes:
        n.wait_queue_empty()

    rows = psql(shared_db, "SELECT message_id, node, count(*) FROM tracking WHERE method = 'tls_only' "
                           "GROUP BY message_id, node")
    decisions = {}
    for line in rows.splitlines():
        mid, node, count = line.split("|")
        assert int(count) == 1, f"decision for {mid} recorded {count} times"
        decisions[mid] = node
    assert set(decisions) == set(sent), "every mail's decision is stored exactly once"
    for mid, idx in sent.items():
        assert decisions[mid] == f"node{idx}.test", (mid, decisions[mid])

    # Node 1 explains a mail that node 0 handled, from the shared store.
    mid = next(m for m, idx in sent.items() if idx == 0)
    r = nodes[1].cli("track", mid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bob@partner.test" in r.stdout and "node0.test" in r.stdout, r.stdout
    assert "delivered" in r.stdout, r.stdout
