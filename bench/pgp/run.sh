#!/bin/sh
# Outbound OpenPGP benchmark: prints mails/s, gpg baseline and ratios.
# Pinned to one core so "per core" means one core. Figures go to README.md.
set -eu
cd "$(dirname "$0")/../.."
cargo build --release -p siegel-openpgp --example pgp_bench
exec taskset -c 0 "${CARGO_TARGET_DIR:-target}/release/examples/pgp_bench" "$@"
