#!/bin/sh
# The certificate Job's first step (edge image): issue the control plane's certificates with
# `edge certs` and write a kustomization that turns them into Secrets, which the Job's second
# step applies with `kubectl apply -k` (the kubectl image has no shell).
#   certs.sh OUT
# Environment: EDGE_NODES (how many ingest pods may exist: the autoscaler's maximum),
# EDGE_STATEFULSET (their name prefix), and /etc/edge/ca: the existing CA Secret, if any (reused,
# so re-running the Job re-issues leaf certificates without re-keying the cluster).
set -eu
out=$1
mkdir -p "$out/certs"
if [ -f /etc/edge/ca/ca.pem ] && [ -f /etc/edge/ca/ca.key ]; then
  cp /etc/edge/ca/ca.pem /etc/edge/ca/ca.key "$out/certs/"
fi
set --
i=0
while [ "$i" -lt "$EDGE_NODES" ]; do
  set -- "$@" --node "$EDGE_STATEFULSET-$i"
  i=$((i + 1))
done
edge certs --out "$out/certs" "$@" --balancer edge-balancer
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "generatorOptions: {disableNameSuffixHash: true, labels: {app.kubernetes.io/part-of: edge}}"
  echo "secretGenerator:"
  echo "- {name: edge-ca, files: [certs/ca.pem, certs/ca.key]}"
  echo "- name: edge-balancer-certs"
  echo "  files: [certs/ca.pem, certs/balancer-edge-balancer.pem, certs/balancer-edge-balancer.key]"
  echo "- name: edge-ingest-certs"
  echo "  files:"
  echo "  - certs/ca.pem"
  i=0
  while [ "$i" -lt "$EDGE_NODES" ]; do
    echo "  - certs/node-$EDGE_STATEFULSET-$i.pem"
    echo "  - certs/node-$EDGE_STATEFULSET-$i.key"
    i=$((i + 1))
  done
} >"$out/kustomization.yaml"
echo "certs: issued for $EDGE_NODES node(s) and the balancers; kustomization in $out"
