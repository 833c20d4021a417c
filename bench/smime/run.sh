#!/usr/bin/env bash
# Outbound S/MIME (sign + encrypt, 10 KB mails) on ONE core, beside
#   * `openssl speed` for the key type (the signature limit of that core),
#   * a naive gateway: `openssl cms -sign | openssl cms -encrypt` per mail,
# all pinned to the same core with taskset, in interleaved rounds, reported
# as medians. Rates are per CPU-second (what `openssl speed` reports by
# default: it counts user CPU time), so other load on a shared machine does
# not count against whoever ran while the core was busy; wall-clock rates
# are printed too.
#
# Usage: bench/smime/run.sh [seconds-per-measurement] [rounds]   (3, 5)
# Env:   KEY=rsa3072|p256 (default rsa3072)   CPU=<core> (default: the last)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-3}
ROUNDS=${2:-5}
KEY=${KEY:-rsa3072}
CPU=${CPU:-$(($(nproc) - 1))}
PIN=(taskset -c "$CPU")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --quiet -p siegel-crypto --example smime_bench
BENCH=$TARGET/release/examples/smime_bench
"$BENCH" --dir "$WORK" --key "$KEY" --seconds 0.1 >/dev/null # keys + mail, once

case $KEY in
rsa3072) SPEED_ALG=rsa3072 ;;
p256) SPEED_ALG=ecdsap256 ;;
*) echo "KEY must be rsa3072 or p256" >&2; exit 2 ;;
esac

ours() { # -> "cpu_rate wall_rate"
    "${PIN[@]}" "$BENCH" --dir "$WORK" --seconds "$SECS" |
        awk -F= '/^mails_per_cpu_sec=/{c=$2} /^mails_per_sec=/{w=$2} END{print c, w}'
}

speed() { # -> signatures per CPU-second
    "${PIN[@]}" openssl speed -seconds "$SECS" "$SPEED_ALG" 2>/dev/null |
        awk '/^rsa 3072 bits/{print $6} /ecdsa \(nistp256\)/{print $(NF-1)}'
}

# The naive gateway as a shell loop: no process is started in the loop but
# the two openssl processes per mail (the clock is bash's $EPOCHREALTIME,
# the CPU time bash's `times`: the loop's own share plus its children's).
NAIVE='
D=$1 SECS=$2 MODE=$3
start=${EPOCHREALTIME/[.,]/}
end=$((start + SECS * 1000000))
n=0
while :; do
    t=${EPOCHREALTIME/[.,]/}
    ((t < end)) || break
    case $MODE in
    pair) openssl cms -sign -in "$D/mail.eml" -signer "$D/alice.pem" -inkey "$D/alice.key" \
              -certfile "$D/ca.pem" | openssl cms -encrypt -aes256 -out /dev/null "$D/bob.pem" ;;
    sign) openssl cms -sign -in "$D/mail.eml" -signer "$D/alice.pem" -inkey "$D/alice.key" \
              -certfile "$D/ca.pem" -out /dev/null ;;
    encrypt) openssl cms -encrypt -aes256 -in "$D/mail.eml" -out /dev/null "$D/bob.pem" ;;
    version) openssl version >/dev/null ;;
    true) /bin/true ;;
    esac
    n=$((n + 1))
done
stop=${EPOCHREALTIME/[.,]/}
echo "n=$n wall_us=$((stop - start))"
times
'

naive() { # MODE -> "cpu_rate wall_rate cpu_ms_per_call"
    "${PIN[@]}" bash -c "$NAIVE" _ "$WORK" "$SECS" "$1" | awk '
        /^n=/ { split($1, a, "="); n = a[2]; split($2, b, "="); us = b[2] }
        /m[0-9.]+s/ { for (i = 1; i <= NF; i++) { split($i, t, "m"); sub("s", "", t[2]); cpu += t[1] * 60 + t[2] } }
        END { printf "%.1f %.1f %.2f\n", n / cpu, n / (us / 1e6), 1000 * cpu / n }'
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "openssl: $(openssl version) | cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
echo "key: $KEY | pinned to core $CPU of $(nproc) | $ROUNDS rounds of ${SECS}s each | load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "mail: $(wc -c <"$WORK/mail.eml") bytes"
echo
printf '%-6s %14s %14s %14s %14s %14s\n' round "siegel/cpu-s" "speed/cpu-s" "naive/cpu-s" "siegel/wall-s" "naive/wall-s"
: >"$WORK/r"
for r in $(seq "$ROUNDS"); do
    read -r oc ow <<<"$(ours)"
    sp=$(speed)
    read -r nc nw _ <<<"$(naive pair)"
    printf '%-6s %14s %14s %14s %14s %14s\n' "$r" "$oc" "$sp" "$nc" "$ow" "$nw"
    echo "$oc $sp $nc $ow $nw" >>"$WORK/r"
done
col() { awk -v c="$1" '{print $c}' "$WORK/r" | median; }
OC=$(col 1) SP=$(col 2) NC=$(col 3) OW=$(col 4) NW=$(col 5)
printf '%-6s %14s %14s %14s %14s %14s\n' median "$OC" "$SP" "$NC" "$OW" "$NW"
echo
echo "naive gateway, CPU per call (ms), median of 3:"
for m in true version encrypt sign pair; do
    v=$(for _ in 1 2 3; do naive "$m" | awk '{print $3}'; done | median)
    printf '  %-8s %8s ms\n' "$m" "$v"
done
echo
awk -v o="$OC" -v s="$SP" -v n="$NC" -v ow="$OW" -v nw="$NW" 'BEGIN {
    printf "siegel / signature limit (per CPU-s): %.1f %%   (target >= 70 %%)\n", 100 * o / s
    printf "siegel / naive gateway   (per CPU-s): %.1f x    (target >= 20 x)\n", o / n
    printf "siegel / naive gateway   (wall)     : %.1f x\n", ow / nw
}'
