#!/usr/bin/env bash
# Outbound S/MIME (sign + encrypt, 10 KB mails, RSA-3072) on one core,
# beside the RSA-3072 signature limit of `openssl speed` and a naive gateway
# that runs `openssl cms -sign | openssl cms -encrypt` once per mail.
# Usage: bench/smime/run.sh [seconds]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet -p siegel-crypto --example smime_bench
ours=$(target/release/examples/smime_bench --seconds "$SECS" --out "$WORK" | tee "$WORK/ours.txt" | awk -F= '/^mails_per_sec=/{print $2}')

# openssl speed: "rsa 3072 bits <sign s> <verify s> <sign/s> <verify/s>"
speed=$(openssl speed -seconds "$SECS" rsa3072 2>/dev/null | awk '/^rsa 3072 bits/{print $6}')

# the naive gateway: two openssl processes per mail
count=0
start=$(date +%s%N)
deadline=$((start + SECS * 1000000000))
while [ "$(date +%s%N)" -lt "$deadline" ]; do
  openssl cms -sign -in "$WORK/mail.eml" -signer "$WORK/alice.pem" -inkey "$WORK/alice.key" \
      -certfile "$WORK/ca.pem" \
    | openssl cms -encrypt -aes256 -out /dev/null "$WORK/bob.pem"
  count=$((count + 1))
done
end=$(date +%s%N)
naive=$(awk -v c="$count" -v ns="$((end - start))" 'BEGIN{printf "%.1f", c / (ns / 1e9)}')

echo "openssl:           $(openssl version)"
echo "cpu:               $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) ($(nproc) cores visible)"
echo "mail size:         $(awk -F= '/^mail_bytes=/{print $2}' "$WORK/ours.txt") bytes"
echo "siegel sign+encrypt:       $ours mails/s (1 core)"
echo "openssl speed rsa3072:     $speed signs/s (1 core)"
echo "naive openssl cms loop:    $naive mails/s"
echo "siegel / RSA sign limit:   $(awk -v a="$ours" -v b="$speed" 'BEGIN{printf "%.1f", 100 * a / b}') %   (target >= 70 %)"
echo "siegel / naive loop:       $(awk -v a="$ours" -v b="$naive" 'BEGIN{printf "%.1f", a / b}') x   (target >= 20 x)"
