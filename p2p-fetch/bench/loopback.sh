#!/bin/sh
# p2p-fetch vs curl+nginx on loopback, measured side by side: a 256 MiB file served by
# `host-sim --listen` (p2p-core's server session over the kernel's TCP) and by nginx; runs alternate and the median of each is printed. Then p2p-fetch's peak RSS
# downloading a 1 GiB file.
#
# Usage: p2p-fetch/bench/loopback.sh [RUNS]   (needs nginx and curl: apt-get install nginx curl)
set -eu
runs=${1:-7}
size_mib=256
p2p_port=18891
http_port=18892
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
work=$(mktemp -d)
chmod 755 "$work" # nginx's workers read it as an unprivileged user
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

for tool in nginx curl bc; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx curl bc)" >&2; exit 1; }
done
(cd "$root" && cargo build --quiet --release -p p2p-fetch -p host-sim)
head -c $((size_mib << 20)) /dev/urandom > "$work/file"

"$target/release/host-sim" --listen "127.0.0.1:$p2p_port" --file "$work/file" 2>/dev/null &
server_pid=$!
mkdir -p "$work/logs"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    server { listen 127.0.0.1:$http_port; root $work; }
}
CONF
nginx -c "$work/nginx.conf" -p "$work/"
sleep 0.5

elapsed() { # command... -> seconds
    start=$(date +%s.%N); "$@"; end=$(date +%s.%N); echo "$end - $start" | bc
}
: > "$work/times"
for _ in $(seq "$runs"); do
    rm -f "$work/curl.out" "$work/p2p.out"
    echo "curl $(elapsed curl -sf -o "$work/curl.out" "http://127.0.0.1:$http_port/file")" >> "$work/times"
    echo "p2p-fetch $(elapsed "$target/release/p2p-fetch" "127.0.0.1:$p2p_port" -q -o "$work/p2p.out")" >> "$work/times"
    cmp -s "$work/file" "$work/p2p.out" || { echo "p2p-fetch output differs" >&2; exit 1; }
    cmp -s "$work/file" "$work/curl.out" || { echo "curl output differs" >&2; exit 1; }
done
median() {
    grep "^$1 " "$work/times" | cut -d' ' -f2 | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}
curl_s=$(median curl)
p2p_s=$(median p2p-fetch)

# Peak memory downloading a 1 GiB file.
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
rm -f "$work/file" "$work/curl.out" "$work/p2p.out"
head -c $((1 << 30)) /dev/urandom > "$work/big"
"$target/release/host-sim" --listen "127.0.0.1:$p2p_port" --file "$work/big" 2>/dev/null &
server_pid=$!
sleep 0.5
rss_kb=$( { /usr/bin/time -f %M "$target/release/p2p-fetch" "127.0.0.1:$p2p_port" -q -o "$work/big.out"; } 2>&1 | tail -1)
cmp -s "$work/big" "$work/big.out" || { echo "p2p-fetch output of the 1 GiB file differs" >&2; exit 1; }
echo "file: $size_mib MiB, $runs runs each, medians"
echo "curl (nginx):  $curl_s s"
echo "p2p-fetch:     $p2p_s s  (includes fsync of the output)"
echo "ratio:         $(echo "scale=2; $p2p_s / $curl_s" | bc)"
echo "p2p-fetch peak RSS downloading 1 GiB: $rss_kb KiB"
