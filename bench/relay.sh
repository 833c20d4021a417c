#!/usr/bin/env bash
# Relay benchmark: Siegel vs. Postfix with the same durability, same machine,
# same run. Builds the release binary, then runs bench/relay.py.
#   bench/relay.sh                 N=5000, 1 and 5 recipients, 100 MB mail
#   bench/relay.sh -n 1000 --big-mb 0
# Needs: postfix (smtp-source, smtp-sink), python3. Run as root (smtp-sink
# drops to the postfix user; the private Postfix runs its own master).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then
    echo "postfix tools missing: scripts/test installs them (or apt-get install postfix)" >&2
    exit 2
fi
export PATH=$PATH:/usr/sbin
cargo build --release -p siegel
exec python3 bench/relay.py "$@"
