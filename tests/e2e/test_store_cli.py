"""The store through the binary: schema applied at start-up, `siegel db
check`, `backup`/`restore`, `master-key rotate`, and a wrong master key
refused at start with a clear error (never silent garbage)."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess


def test_store_created_at_start_and_checked(gateway):
    g = gateway.siegel
    assert any("store sqlite" in line for line in g.stdout_lines), g.stdout_lines
    db = g.data_dir / "siegel.db"
    key = g.data_dir / "master.key"
    assert db.exists() and key.exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    r = g.cli("db", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "store ok" in r.stdout
    # the schema is the one this program expects (whatever its number)
    assert re.search(r"schema version: (\d+) \(this program expects \1\)", r.stdout), r.stdout


def test_db_check_fails_on_a_damaged_schema(make_sink, make_siegel):
    g = make_siegel(inbound=make_sink("in"), outbound=make_sink("out"))
    g.stop()
    con = sqlite3.connect(g.data_dir / "siegel.db")
    con.execute("DROP TABLE gina_accounts")
    con.commit()
    con.close()
    r = g.cli("db", "check")
    assert r.returncode != 0, r.stdout
    assert "gina_accounts" in (r.stdout + r.stderr)


def test_backup_and_restore(make_sink, make_siegel, tmp_path):
    g = make_siegel(inbound=make_sink("in"), outbound=make_sink("out"))
    backup = tmp_path / "backup.db"
    r = g.cli("backup", "--out", str(backup))  # online, while the gateway runs
    assert r.returncode == 0, r.stdout + r.stderr
    assert sqlite3.connect(backup).execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    r = g.cli("restore", "--from", str(backup))
    assert r.returncode != 0 and "running" in r.stderr, "restore must refuse while the gateway runs"

    g.stop()
    db = g.data_dir / "siegel.db"
    con = sqlite3.connect(db)
    con.execute("INSERT INTO settings(key, value, updated_at) VALUES ('marker', '1', 0)")
    con.commit()
    con.close()
    r = g.cli("restore", "--from", str(backup))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM settings WHERE key = 'marker'").fetchone()[0]
    assert rows == 0, "restore must bring back the state of the backup"
    g.start()


def test_master_key_rotation_and_wrong_key(make_sink, make_siegel):
    g = make_siegel(inbound=make_sink("in"), outbound=make_sink("out"))
    g.stop()
    key = g.data_dir / "master.key"
    before = key.read_bytes()
    r = g.cli("master-key", "rotate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rotated" in r.stdout
    assert key.read_bytes() != before
    assert g.cli("db", "check").returncode == 0
    g.start()  # starts with the new key
    g.stop()

    key.write_bytes(before)  # the old key no longer opens the store
    env = dict(os.environ)
    r = subprocess.run([g.binary, "--config", str(g.config_path), "serve"], capture_output=True, text=True,
                       timeout=30, env=env, cwd=g.workdir)
    assert r.returncode != 0
    assert "master key" in r.stderr.lower(), r.stderr
    assert "siegel: ready" not in r.stdout, "nothing may start with a wrong master key"
