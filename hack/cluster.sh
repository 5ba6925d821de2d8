#!/usr/bin/env bash
# hack/cluster.sh: a real Kubernetes control plane on this machine, for development and CI.
# Linux; no root, Docker, systemd or sudo; needs go (to build), openssl, setsid (util-linux).
#
#   hack/cluster.sh build        build the binaries that are missing (a no-op takes ~0.1 s)
#   hack/cluster.sh up [DIR]     build if needed; start a cluster in DIR (default: .cluster in
#                                the repo root, git-ignored); return when it is ready (~5 s)
#   hack/cluster.sh down [DIR]   stop its processes (by PID file) and delete DIR (~1.5 s)
#   hack/cluster.sh env [DIR]    print DIR/env
#
# BINARIES. hack/k8s/go.mod pins k8s.io/kubernetes v1.37.2 (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) with a replace line per k8s.io staging
# module (v0.37.2); hack/k8s/etcd: etcd v3.7.3 (Kubernetes 1.37 is built and tested with
# etcd 3.7.0); hack/k8s/kwok: kwok v0.8.0. go.sum files are complete and builds are
# -mod=readonly, CGO_ENABLED=0, -trimpath -ldflags='-s -w' (Kubernetes' version stamped in).
# Output: ${EMBEDOPS_KUBE_CACHE:-$HOME/.cache/embedops/kube}/v1.37.2/bin/; a binary is
# rebuilt only when it is missing or its hack/k8s module changed. Cold build on 2 cores:
# ~16 min and ~0.6 GB of modules, ~4.6 GB of Go build cache.
#
# UP. All servers listen on 127.0.0.1 only, on free ports picked in 20000-31999, and run
# detached (setsid) with their output in DIR/logs/<name>.log. `up` on a DIR whose cluster is
# running says so and exits 0; on any other existing DIR it fails (run `down` first). A
# failed `up` stops what it started and keeps DIR/logs. DIR holds:
#   kubeconfig   admin (client cert O=system:masters), CA embedded, namespace default
#   env          plain KEY=value lines (`set -a; . DIR/env; set +a` or split on '='):
#                KUBECONFIG, EMBEDOPS_KUBE_SERVER (https://127.0.0.1:PORT),
#                EMBEDOPS_KUBE_VERSION, EMBEDOPS_KUBE_BIN (kubectl is there),
#                EMBEDOPS_KUBE_CA, EMBEDOPS_KWOK_NODE_ANNOTATION, EMBEDOPS_SA_ISSUER,
#                ETCD_URL, ETCD_PID, KUBE_APISERVER_PID, KUBE_CONTROLLER_MANAGER_PID,
#                KUBE_SCHEDULER_PID, KWOK_PID; written last, so its presence means ready
#   pki/         ca.crt/key, apiserver.crt/key, admin.crt/key, sa.key/sa.pub (token signing)
#   logs/ run/ (PID files) etcd/ (data) flexvolume/
# Ready means: /readyz ok and ServiceAccount default/default exists.
#
# THE CLUSTER. kube-apiserver: --authorization-mode=Node,RBAC; ServiceAccount tokens
# (TokenRequest, `kubectl create token`) with issuer and audience
# https://kubernetes.default.svc.cluster.local; service CIDR 10.96.0.0/16 (no kube-proxy, no
# DNS: Services get IPs that route nowhere); --endpoint-reconciler-type=none (a loopback
# address may not be an endpoint). kube-controller-manager: all default controllers (Jobs
# make Pods, garbage collection, ServiceAccounts, ...), no leader election, admin
# credentials. kube-scheduler: default profile. etcd: --unsafe-no-fsync (a throwaway
# cluster). No kubelet and no container ever runs: kwok plays the kubelet.
#
# KWOK manages the nodes annotated kwok.x-k8s.io/node=fake, and the pods bound to them.
# Create such a Node yourself, status included, e.g.
#   {apiVersion: v1, kind: Node, metadata: {name: gpu-0, annotations: {kwok.x-k8s.io/node: fake},
#    labels: {nvidia.com/gpu.present: "true"}}, spec: {taints: [{key: nvidia.com/gpu,
#    value: present, effect: NoSchedule}]}, status: {capacity: {cpu: "32", memory: 256Gi,
#    pods: "110", nvidia.com/gpu: "2"}, allocatable: <the same>}}
# Its stages (hack/k8s/kwok/stages.yaml) do this:
#   node: Ready at once, Lease renewed; capacity/allocatable as created (1k cpu, 1Ti, 1M pods
#     when none). The scheduler then binds pods by requests, taints and selectors as usual.
#   pod bound to the node: Running and Ready at once, pod IP from 10.244.0.0/16.
#   Running pod annotated kwok.embedops.dev/exit-code=N (on the pod, or on a Job's pod
#     template): every container terminated with exit code N and the message of annotation
#     kwok.embedops.dev/message (the termination message, verbatim), phase Succeeded (N=0,
#     reason Completed) or Failed (reason Error). The Job controller then counts it.
#   deleted pod: gone at once (finalizers cleared, no grace period).
#   Nothing else ends a pod: a Job's pod runs until the test ends it, with the annotations
#   or by writing the status itself, which kwok leaves alone once the pod is terminal:
#     kubectl patch pod P --subresource=status --type=merge -p '{"status":{"phase":
#       "Succeeded","containerStatuses":[{"name":"C","image":"I","ready":false,
#       "restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed",
#       "message":"..."}}}]}}'
#   kwok's own default pod stages (what kwokctl runs) also turn every Running Job pod into
#   Succeeded at once (exit 0, no message); EMBEDOPS_KWOK_COMPLETE_JOBS=1 at `up` adds
#   that stage (hack/k8s/kwok/complete-jobs.yaml) for pods without the exit-code annotation.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODDIR=$ROOT/hack/k8s
KUBE_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3} $1 == "k8s.io/kubernetes" {print $2}' "$MODDIR/go.mod" | head -n1)
KUBE_CACHE=${EMBEDOPS_KUBE_CACHE:-$HOME/.cache/embedops/kube}
BIN=$KUBE_CACHE/$KUBE_VERSION/bin

# name | module directory (under hack/k8s) | main package
BINARIES=(
  "kube-apiserver|.|k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager|.|k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler|.|k8s.io/kubernetes/cmd/kube-scheduler"
  "kubectl|.|k8s.io/kubernetes/cmd/kubectl"
  "etcd|etcd|go.etcd.io/etcd/server/v3"
  "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok"
)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

ldflags_for() { # $1: module directory
  local flags="-s -w"
  if [[ $1 == . ]]; then
    # What kubernetes' hack/lib/version.sh stamps; without it the binaries call
    # themselves v0.0.0-master (kubectl version, /version, kwok's view of the server).
    local v=${KUBE_VERSION#v} pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=${v%%.*}"
      flags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$v") -X $pkg.gitTreeState=clean"
    done
  fi
  printf '%s' "$flags"
}

stamp_for() { # $1: module directory; what a binary was built from
  { cat "$MODDIR/$1/go.mod" "$MODDIR/$1/go.sum"; ldflags_for "$1"; } | sha256sum | cut -d' ' -f1
}

missing_binaries() { # sets MISSING: the BINARIES entries that are absent or out of date
  local entry name dir pkg
  MISSING=()
  for entry in "${BINARIES[@]}"; do
    IFS='|' read -r name dir pkg <<<"$entry"
    if [[ ! -x $BIN/$name || "$(cat "$BIN/.$name.stamp" 2>/dev/null)" != "$(stamp_for "$dir")" ]]; then
      MISSING+=("$entry")
    fi
  done
}

cmd_build() {
  local entry name dir pkg t0 t lock
  missing_binaries
  if ((${#MISSING[@]} == 0)); then
    log "binaries up to date in $BIN"
    return 0
  fi
  command -v go >/dev/null || die "go is not on PATH (needed to build: ${MISSING[*]%%|*})"
  mkdir -p "$BIN"
  # One build at a time per cache (parallel test runs may all call `up`). The lock is
  # closed before `up` starts any server, so that no server inherits it.
  exec {lock}>"$BIN/.build.lock"
  if command -v flock >/dev/null; then
    flock "$lock"
    missing_binaries # built meanwhile by the holder of the lock?
    ((${#MISSING[@]} > 0)) || log "binaries up to date in $BIN (built by another run)"
  fi
  t0=$(now)
  ((${#MISSING[@]} == 0)) || log "building ${#MISSING[@]} binaries into $BIN with $(go env GOVERSION)"
  for entry in "${MISSING[@]}"; do
    IFS='|' read -r name dir pkg <<<"$entry"
    t=$(now)
    # -mod=readonly: go.sum is committed complete; a build never edits go.mod.
    (cd "$MODDIR/$dir" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
      go build -trimpath -ldflags="$(ldflags_for "$dir")" -o "$BIN/.$name.tmp" "$pkg") \
      || die "go build $pkg failed"
    mv -f "$BIN/.$name.tmp" "$BIN/$name"
    stamp_for "$dir" >"$BIN/.$name.stamp"
    log "built $name in $(elapsed "$t")s"
  done
  ((${#MISSING[@]} == 0)) || log "build done in $(elapsed "$t0")s"
  exec {lock}>&-
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-0}"
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    build) cmd_build "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    env) cmd_env "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 ;;
  esac
}

main "$@"
