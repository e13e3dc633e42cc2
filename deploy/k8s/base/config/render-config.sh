#!/bin/sh
# Renders an edge config template for this pod and validates it with `edge config check`:
#   render-config.sh ingest|balancer TEMPLATE OUT
# Environment (from the downward API): POD_NAME, POD_IP (ingest), NODE_NAME (balancer),
# EDGE_BALANCERS (ingest: the headless Service whose addresses are the balancers' host IPs).
# Runs in an init container, so a broken config keeps the pod from starting, with the reason.
set -eu
role=$1 template=$2 out=$3
# How long an ingest pod waits for the first balancer to appear in DNS (a fresh install starts
# nodes and balancers together); past that the init container fails and is retried.
BALANCER_WAIT_SECS=300
# The balancers' QUIC control-plane port (balancer.toml listen.control).
CONTROL_PORT=7000

case "$role" in
ingest)
  deadline=$(( $(date +%s) + BALANCER_WAIT_SECS ))
  while :; do
    ips=$(getent ahosts "$EDGE_BALANCERS" 2>/dev/null | awk '$2 == "STREAM" {print $1}' | sort -u || true)
    [ -n "$ips" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "render-config: no balancer address behind $EDGE_BALANCERS after ${BALANCER_WAIT_SECS}s" >&2
      exit 1
    fi
    sleep 2
  done
  balancers="" proxies=""
  for ip in $ips; do
    case "$ip" in *:*) addr="[$ip]:$CONTROL_PORT" ;; *) addr="$ip:$CONTROL_PORT" ;; esac
    balancers="$balancers${balancers:+, }\"$addr\""
    proxies="$proxies${proxies:+, }\"$ip\""
  done
  case "$POD_IP" in *:*) pod_ip="[$POD_IP]" ;; *) pod_ip=$POD_IP ;; esac
  sed -e "s|@POD_NAME@|$POD_NAME|g" -e "s|@POD_IP@|$pod_ip|g" \
      -e "s|@BALANCERS@|$balancers|g" -e "s|@TRUSTED_PROXIES@|$proxies|g" "$template" >"$out"
  ;;
balancer)
  # A machine name may have dots; a balancer ID is at most 64 of [A-Za-z0-9_-].
  id=$(printf '%s' "$NODE_NAME" | tr -c 'A-Za-z0-9_-' '-' | cut -c1-64)
  sed -e "s|@BALANCER_ID@|$id|g" "$template" >"$out"
  ;;
*)
  echo "render-config: role must be ingest or balancer" >&2
  exit 2
  ;;
esac
if [ "$role" = balancer ]; then
  edge config check --balancer "$out"
else
  edge config check "$out"
fi
