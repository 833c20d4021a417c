#!/bin/sh
# Filter benchmark: 10 KB mails through our clamd/spamd clients vs.
# `clamdscan --stream` and `spamc` called once per mail, against the same
# private daemons (tests/e2e/harness/scanners.py). Figures go to README.md.
#   BENCH_MAILS=1000 BENCH_SPAM_MAILS=200 BENCH_PARALLEL=4 bench/filter/run.sh
set -eu
cd "$(dirname "$0")/../.."
cargo build --release -p siegel-filter --example filter_bench
exec "${CARGO_TARGET_DIR:-target}/release/examples/filter_bench" "$@"
