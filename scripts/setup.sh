#!/usr/bin/env bash
# Installs everything edge needs on a fresh Debian 12 machine (as root): the GStreamer 1.22
# development files and plugins the ingest pipeline uses, ffmpeg and srt-tools (real encoders for
# the tests), Chromium and hls.js (the real player for the browser test), HAProxy (the peer the
# balancer benchmark compares against), nginx-light with libnginx-mod-rtmp (the passthrough
# benchmark's peer; its service stays off), and for deploy/: Prometheus (promtool and a real server for
# the scrape test), debootstrap (the runtime root filesystem check), systemd (systemd-analyze checks
# the unit in deploy/systemd; nothing is started) and kubernetes-validate (in a
# virtualenv at .venv, for the manifest test; schemathesis there too, for the API test). Safe to
# run again: apt, pip and npm skip what is there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

need_apt=0
for p in libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base \
         gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly \
         gstreamer1.0-libav gstreamer1.0-tools ffmpeg srt-tools chromium pkg-config \
         haproxy curl prometheus debootstrap python3-venv systemd nginx-light libnginx-mod-rtmp; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends \
    build-essential pkg-config curl ca-certificates \
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools \
    ffmpeg srt-tools chromium haproxy \
    prometheus debootstrap python3 python3-venv systemd nginx-light libnginx-mod-rtmp
  # Debian starts the prometheus service on install; the tests run their own servers on
  # loopback ports, so the packaged one (it listens on :9090 and scrapes nothing of ours) stays off;
  # so does nginx's (:80), which only the passthrough benchmark runs, in the foreground.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus prometheus-node-exporter nginx >/dev/null 2>&1 || true
  fi
fi

# deploy/ tests validate rendered manifests with kubernetes-validate (PyPI), pinned here; a
# virtualenv keeps it off the system Python (Debian 12 refuses a system-wide pip install).
KUBERNETES_VALIDATE_VERSION=1.37.0
venv="$here/.venv"
if ! "$venv/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx "Version: $KUBERNETES_VALIDATE_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
# tests/openapi.rs runs schemathesis (PyPI) against both admin APIs, in the same virtualenv.
SCHEMATHESIS_VERSION=4.32.5
if ! "$venv/bin/pip" show schemathesis 2>/dev/null | grep -qx "Version: $SCHEMATHESIS_VERSION"; then
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# A current ffmpeg (7.x, static, with x265, SVT-AV1/libaom, Enhanced RTMP and RTMPS) from the
# imageio-ffmpeg wheel: Debian 12's ffmpeg 5.1 cannot send HEVC or AV1 over RTMP, which
# tests/enhanced_rtmp.rs publishes. Tests find it under .venv (common::modern_ffmpeg).
IMAGEIO_FFMPEG_VERSION=0.6.0
if ! "$venv/bin/pip" show imageio-ffmpeg 2>/dev/null | grep -qx "Version: $IMAGEIO_FFMPEG_VERSION"; then
  "$venv/bin/pip" install -q --disable-pip-version-check "imageio-ffmpeg==$IMAGEIO_FFMPEG_VERSION"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

# The browser test drives Debian's Chromium with playwright-core and plays with hls.js; both
# come from npm and are pinned in tests/player/package.json.
if [ -f "$here/tests/player/package.json" ] && [ ! -d "$here/tests/player/node_modules" ]; then
  (cd "$here/tests/player" && npm install --no-audit --no-fund --loglevel=error)
fi
