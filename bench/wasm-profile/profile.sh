#!/bin/sh
# Where the filter's own time goes in V8: the exchange benchmark compiled to
# wasm32-wasip1, run N times in Node's V8 with --cpu-prof (Node >= 20).
#   bench/wasm-profile/profile.sh [bench/configs/full-nocache.json] [target/bench/body-1024.json]
set -eu
config=${1:-bench/configs/full-nocache.json}
body=${2:-target/bench/body-1024.json}
out=target/wasm-profile
CARGO_PROFILE_RELEASE_STRIP=false cargo build -q --release --target wasm32-wasip1 \
  --example exchange_bench --target-dir "$out/build"
test -f "$body" || { echo "no $body: run make bench once (it writes the bodies)"; exit 1; }
rm -rf "$out/prof"
node --no-warnings --cpu-prof --cpu-prof-dir="$out/prof" bench/wasm-profile/run.mjs \
  "$out/build/wasm32-wasip1/release/examples/exchange_bench.wasm" "$config" "$body"
python3 bench/wasm-profile/top.py "$out"/prof/*.cpuprofile
