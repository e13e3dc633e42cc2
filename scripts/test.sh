#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) and runs every test: unit tests, and end-to-end
# tests that run the real `edge` binary with real encoders (ffmpeg, GStreamer, srt-live-transmit)
# and real players (ffprobe, hls.js in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The end-to-end tests start GStreamer pipelines and encoders; two at a time fit 2 cores.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --workspace --locked
