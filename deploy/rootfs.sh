#!/usr/bin/env bash
# Proves the runtime half of deploy/Containerfile without a container engine: builds the same
# Debian 12 root filesystem with debootstrap from the same package list
# (deploy/runtime-packages.txt), copies the edge binary in, mounts it read-only (as Kubernetes'
# readOnlyRootFilesystem does, with a tmpfs on /tmp), runs `edge ingest` in it with chroot as the
# image's non-root user under tini, publishes two test streams from the host (RTMP with AAC into
# flvdemux/aacparse, SRT MPEG-TS with MP2 audio into tsdemux/decodebin/avenc_aac) to the chroot's
# loopback ports, and checks that every rendition playlist of both streams has segments: every
# library the binary links is in the image (ldd) and every GStreamer element it makes is found.
#
# Usage (as root, from the repository root): bash deploy/rootfs.sh
#   EDGE_BIN=path       the binary to test (default: target/debug/edge, built if missing)
#   EDGE_ROOTFS_DIR=dir where the root filesystem is kept (default: target/rootfs); it is rebuilt
#                       only when runtime-packages.txt or this script changes
#   EDGE_ROOTFS_PORT=n  first of four loopback ports (rtmp, srt, http, admin; default 31935)
# Exit status 0 and "rootfs: ok" on success; the node's log is printed on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's archive and the release the Containerfile's runtime stage uses (debian:12-slim).
MIRROR=${EDGE_ROOTFS_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The image's user (deploy/Containerfile creates the same one; the manifests' runAsUser).
EDGE_UID=10001
# How long the streams have to produce segments in every rendition: the node starts in about a
# second and a segment is 2 s, but two x264 ladders share 2 cores with two ffmpeg encoders.
SERVE_DEADLINE_SECS=90
# How long the node has to open its admin port after start.
START_DEADLINE_SECS=30

bin=${EDGE_BIN:-target/debug/edge}
root=${EDGE_ROOTFS_DIR:-target/rootfs}
port=${EDGE_ROOTFS_PORT:-31935}
rtmp_port=$port srt_port=$((port + 1)) http_port=$((port + 2)) admin_port=$((port + 3))
packages=$(sed -e 's/#.*//' deploy/runtime-packages.txt | xargs)
stamp=$(cat deploy/runtime-packages.txt deploy/rootfs.sh | sha256sum | cut -c1-16)
start=$(date +%s)
say() { echo "rootfs: $* ($(($(date +%s) - start)) s)"; }

for tool in debootstrap chroot ffmpeg curl; do
  command -v "$tool" >/dev/null || { echo "rootfs: $tool missing (run scripts/setup.sh)" >&2; exit 1; }
done

# 1. The root filesystem, as the Containerfile's runtime stage builds it.
if [ "$(cat "$root/.edge-stamp" 2>/dev/null)" != "$stamp" ]; then
  say "building $root with debootstrap ($SUITE) and: $packages"
  rm -rf "$root"
  mkdir -p "$root"
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$root.debootstrap.log" 2>&1 ||
    { tail -20 "$root.debootstrap.log"; exit 1; }
  # shellcheck disable=SC2086 # the package list is meant to split into words
  chroot "$root" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $packages >"$root.apt.log" 2>&1 ||
    { tail -20 "$root.apt.log"; exit 1; }
  chroot "$root" apt-get clean
  chroot "$root" useradd --uid "$EDGE_UID" --user-group --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin edge
  mkdir -p "$root/etc/edge"
  echo "$stamp" >"$root/.edge-stamp"
  say "root filesystem built: $(du -sh "$root" | cut -f1)"
else
  say "reusing $root (package list unchanged)"
fi
if [ ! -x "$bin" ]; then
  flock /tmp/edge-cargo.lock cargo build --locked --bin edge
fi
install -m 0755 "$bin" "$root/usr/local/bin/edge"

# 2. Every library the binary links resolves inside the image.
if chroot "$root" ldd /usr/local/bin/edge | grep -q 'not found'; then
  chroot "$root" ldd /usr/local/bin/edge | grep 'not found' >&2
  echo "rootfs: FAIL: libraries missing from the image" >&2
  exit 1
fi
say "every linked library found"

# 3. Run the node in the image: read-only root, tmpfs /tmp, config bind-mounted like a ConfigMap.
run=$(mktemp -d /tmp/edge-rootfs.XXXXXX)
mnt="$run/root"
mkdir -p "$mnt" "$run/etc"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for m in "$mnt/etc/edge" "$mnt/tmp" "$mnt/dev" "$mnt/proc" "$mnt"; do
    mountpoint -q "$m" && umount -l "$m"
  done
  rm -rf "$run"
}
trap cleanup EXIT
cat >"$run/etc/node.toml" <<EOF
[node]
id = "rootfs-node"
capacity_units = 8

[listen]
rtmp = "127.0.0.1:$rtmp_port"
srt = "127.0.0.1:$srt_port"
http = "127.0.0.1:$http_port"
admin = "127.0.0.1:$admin_port"

[admin]
token = "rootfs-admin-token-0123456789"

[[ladder]]
name = "360p"
height = 360
video_kbps = 600

[[streams]]
key = "rootfs-rtmp-key"
playback_id = "rtmp"

[[streams]]
key = "rootfs-srt-key"
playback_id = "srt"
EOF
chmod 0644 "$run/etc/node.toml"
mount --bind "$root" "$mnt"
mount -o remount,bind,ro "$mnt"
mount -t proc proc "$mnt/proc"
mount --rbind /dev "$mnt/dev"
mount -t tmpfs -o mode=1777 tmpfs "$mnt/tmp"
mount --bind "$run/etc" "$mnt/etc/edge"
# The same environment the Containerfile sets: GStreamer's registry cache on the writable /tmp.
chroot --userspec="$EDGE_UID:$EDGE_UID" "$mnt" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
  HOME=/tmp GST_REGISTRY_1_0=/tmp/gstreamer-registry.bin RUST_LOG=info \
  /usr/bin/tini -- /usr/local/bin/edge ingest --config /etc/edge/node.toml >"$run/node.log" 2>&1 &
pids+=($!)
fail() {
  echo "rootfs: FAIL: $*" >&2
  echo "--- node log" >&2
  tail -40 "$run/node.log" >&2
  exit 1
}
deadline=$(($(date +%s) + START_DEADLINE_SECS))
until curl -fsS "http://127.0.0.1:$admin_port/healthz" >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "node did not answer /healthz within $START_DEADLINE_SECS s"
  kill -0 "${pids[0]}" 2>/dev/null || fail "node exited"
  sleep 0.2
done
say "edge ingest runs in the image as uid $EDGE_UID on a read-only root"

# 4. Publish from the host into the chroot's loopback ports.
src=(-hide_banner -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=30)
ffmpeg "${src[@]}" -f lavfi -i sine=frequency=440 -t "$SERVE_DEADLINE_SECS" \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -c:a aac \
  -f flv "rtmp://127.0.0.1:$rtmp_port/live/rootfs-rtmp-key" >"$run/rtmp.log" 2>&1 &
pids+=($!)
ffmpeg "${src[@]}" -f lavfi -i sine=frequency=660 -t "$SERVE_DEADLINE_SECS" \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 30 -c:a mp2 \
  -f mpegts "srt://127.0.0.1:$srt_port?streamid=rootfs-srt-key&pkt_size=1316" >"$run/srt.log" 2>&1 &
pids+=($!)

# 5. Every rendition of both streams is served with segments.
deadline=$(($(date +%s) + SERVE_DEADLINE_SECS))
for id in rtmp srt; do
  base="http://127.0.0.1:$http_port/live/$id"
  while :; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "stream $id: no segments in every rendition within $SERVE_DEADLINE_SECS s"
    if master=$(curl -fsS "$base/index.m3u8" 2>/dev/null); then
      renditions=$(printf '%s\n' "$master" | grep -v '^#' | grep m3u8 | sort -u)
      if printf '%s\n' "$master" | grep -q 'TYPE=AUDIO'; then
        renditions="$renditions $(printf '%s\n' "$master" | sed -n 's/.*TYPE=AUDIO.*URI="\([^"]*\)".*/\1/p')"
      fi
      ok=1
      for r in $renditions; do
        curl -fsS "$base/$r" 2>/dev/null | grep -q '^#EXTINF' || ok=0
      done
      if [ "$ok" = 1 ] && [ -n "$renditions" ]; then
        say "stream $id serves segments in: $(echo $renditions | tr '\n' ' ')"
        break
      fi
    fi
    sleep 0.5
  done
done
grep -qi 'missing element\|no such element' "$run/node.log" && fail "a GStreamer element is missing"
say "ok"
