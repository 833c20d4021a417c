#!/usr/bin/env bash
# Store benchmark (issue 3) on both engines.
#   bench/store/run.sh [N] [SECONDS]
# N GINA accounts are loaded into a fresh SQLite file and a fresh PostgreSQL
# database (siegel_bench on $SIEGEL_BENCH_PG, default 127.0.0.1:5432, user
# postgres, trust auth), then lookups are timed for SECONDS with 2 readers and
# 1 writer. The issue's figure is N=10000000; the default keeps a run short.
set -euo pipefail
N="${1:-1000000}"
SECONDS_LOOKUP="${2:-20}"
PG_HOST="${SIEGEL_BENCH_PG:-127.0.0.1}"
cd "$(dirname "$0")/../.."

cargo build --release -q -p siegel-store --example bench_store
BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_store"

DIR="$(mktemp -d -t siegel-bench-store.XXXXXX)"
trap 'rm -rf "$DIR"' EXIT

echo "== SQLite, N=$N"
"$BIN" --url "sqlite://$DIR/siegel.db" --data-dir "$DIR" --n "$N" --seconds "$SECONDS_LOOKUP"
ls -l "$DIR/siegel.db" | awk '{printf "database file: %.0f MiB\n", $5/1048576}'

echo "== PostgreSQL, N=$N"
psql -h "$PG_HOST" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS siegel_bench" \
    -c "CREATE DATABASE siegel_bench"
"$BIN" --url "postgres://postgres@$PG_HOST:5432/siegel_bench" --data-dir "$DIR" --n "$N" \
    --seconds "$SECONDS_LOOKUP"
psql -h "$PG_HOST" -U postgres -d siegel_bench -Atc \
    "SELECT 'database size: ' || pg_size_pretty(pg_database_size('siegel_bench'))"
psql -h "$PG_HOST" -U postgres -d postgres -qc "DROP DATABASE siegel_bench"
