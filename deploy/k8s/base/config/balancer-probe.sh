#!/bin/sh
# Exec probe of the balancer pod (hostNetwork): a TCP probe of its port would reach whichever
# process holds the socket (during a hand-over the old pod's), so look inside this pod instead.
#   balancer-probe.sh ready PORT: a process of this pod holds the listening TCP socket on PORT
#                                 (after a hand-over: the socket it received).
#   balancer-probe.sh alive:      the edge process of this pod runs and is not a zombie.
# The pod has its own PID namespace, so /proc lists only this pod's processes.
set -u
case "${1:-}" in
alive)
  for s in /proc/[0-9]*/stat; do
    line=$(cat "$s" 2>/dev/null) || continue
    case "$line" in *"(edge) Z"*) ;; *"(edge) "*) exit 0 ;; esac
  done
  exit 1
  ;;
ready)
  port=$(printf '%04X' "$2")
  # /proc/net/tcp{,6}: local address is field 2 (ADDR:PORT in hex), state 0A is LISTEN.
  inodes=$(awk -v p=":$port" '$4 == "0A" && substr($2, length($2) - 4) == p {print $10}' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  [ -n "$inodes" ] || exit 1
  for fd in /proc/[0-9]*/fd/*; do
    link=$(readlink "$fd" 2>/dev/null) || continue
    for i in $inodes; do
      [ "$link" = "socket:[$i]" ] && exit 0
    done
  done
  exit 1
  ;;
*)
  echo "usage: balancer-probe.sh alive | ready PORT" >&2
  exit 2
  ;;
esac
