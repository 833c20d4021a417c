#!/usr/bin/env bash
# GINA benchmark (issue 6), on this machine, release build:
#   1. containers built per second for 100 KB mails (one core; beside the
#      bare AES-256-GCM rate of the same core);
#   2. portal logins/s and container opens/s by a logged-in recipient, with
#      wrk (a real HTTP load generator) over HTTPS on loopback against
#      `siegel serve`.
#   bench/gina/run.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
SECS="${1:-20}"
CONNS="${2:-16}"
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk; scripts/test installs it)"; exit 1; }
cargo build --release -q -p siegel
cargo build --release -q -p siegel-gina --example bench_seal
T="${CARGO_TARGET_DIR:-target}/release"

echo "== containers (100 KB mails)"
"$T/examples/bench_seal" 102400 5

echo "== portal (wrk, ${CONNS} connections, ${SECS}s each)"
python3 bench/gina/portal.py --siegel "$T/siegel" --seconds "$SECS" --connections "$CONNS"
