#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) and runs `edge dev`: a local ingest node on
# rtmp/1935, srt/9000, http/8080 and admin/8081 with the embedded dev config.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --locked -- dev "$@"
