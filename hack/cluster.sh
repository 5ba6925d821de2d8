#!/usr/bin/env bash
# hack/cluster.sh: a real Kubernetes control plane on this machine, for development and CI.
# Linux; no root, Docker, systemd or sudo; needs go (to build), openssl, setsid (util-linux).
#
#   hack/cluster.sh build        build the binaries that are missing (a no-op takes ~0.1 s)
#   hack/cluster.sh up [DIR]     build if needed; start a cluster in DIR (default: .cluster in
#                                the repo root, git-ignored; a relative DIR is taken from the
#                                current directory); return when it is ready (~5 s)
#   hack/cluster.sh down [DIR]   stop its processes (by PID file) and delete DIR (~1.5 s)
#   hack/cluster.sh env [DIR]    print DIR/env
#
# BINARIES. hack/k8s/go.mod pins k8s.io/kubernetes v1.37.2 (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) with a replace line per k8s.io staging
# module (v0.37.2); hack/k8s/etcd: etcd v3.7.3 (Kubernetes 1.37 is built and tested with
# etcd 3.7.0); hack/k8s/kwok: kwok v0.8.0; hack/k8s/helm: helm v4.3.1 (for the chart's tests). go.sum files are complete and builds are
# -mod=readonly, CGO_ENABLED=0, -trimpath -ldflags='-s -w' (Kubernetes' version stamped in).
# Output: ${EMBEDOPS_KUBE_CACHE:-$HOME/.cache/embedops/kube}/v1.37.2/bin/; a binary is
# rebuilt only when it is missing or its hack/k8s module changed. Measured on 2 cores:
# cold (empty Go module and build caches) 15 min, fetching ~1 GB of modules and filling
# ~4.6 GB of build cache (kube-apiserver 490 s, controller-manager 154 s, scheduler 14 s,
# kubectl 41 s, etcd 56 s, kwok 150 s); with a warm build cache 51 s (mostly linking).
# The binaries are reproducible: a cold build gives the same bytes.
#
# UP. All servers listen on 127.0.0.1 only, on free ports picked in 20000-31999, and run
# detached (setsid) with their output in DIR/logs/<name>.log. `up` on a DIR whose cluster is
# running says so and exits 0; on any other existing DIR it fails (run `down` first). A
# failed `up` stops what it started and keeps DIR/logs. DIR holds:
#   kubeconfig   admin (client cert O=system:masters), CA embedded, namespace default
#   env          plain KEY=value lines (`set -a; . DIR/env; set +a` or split on '='):
#                KUBECONFIG, KUBECACHEDIR (kubectl's cache, in DIR),
#                EMBEDOPS_KUBE_SERVER (https://127.0.0.1:PORT),
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
  "helm|helm|helm.sh/helm/v4/cmd/helm"
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
  if [[ $1 == helm ]]; then # helm's own release stamp (its Makefile's LDFLAGS)
    flags+=" -X helm.sh/helm/v4/internal/version.version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" {print $3}' "$MODDIR/helm/go.mod")"
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

# ---------------------------------------------------------------------------------------
# up / down

KWOK_NODE_ANNOTATION=kwok.x-k8s.io/node=fake
SA_ISSUER=https://kubernetes.default.svc.cluster.local
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

cluster_dir() { # $1: DIR argument (optional) -> absolute path
  local dir=${1:-$ROOT/.cluster}
  [[ $dir == /* ]] || dir=$PWD/$dir
  # The env file holds plain KEY=value lines (no quoting), so keep paths plain.
  [[ $dir =~ ^[A-Za-z0-9_./+@:-]+$ ]] || die "DIR must be a plain path (letters, digits, _ . / + @ : -): $dir"
  printf '%s' "${dir%/}"
}

free_port() { # $1: variable to set to a TCP port on 127.0.0.1 that has no listener
  local port
  for _ in $(seq 1 500); do
    port=$((20000 + RANDOM % 12000)) # below Linux' ephemeral range (32768-60999)
    [[ " $USED_PORTS " == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      USED_PORTS+=" $port"
      printf -v "$1" '%s' "$port"
      return 0
    fi
  done
  die "found no free port on 127.0.0.1"
}

gen_certs() { # $1: pki dir
  local pki=$1 ext
  (
    cd "$pki"
    umask 077
    # TLS keys are ECDSA P-256 (quick to make); the token signing key is RSA (RS256).
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=embedops-dev-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out ca.crt 2>/dev/null
    sign() { # name subject extensions
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
      openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days 3650 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature"
    sign apiserver "/CN=kube-apiserver" "$ext
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
    sign admin "/O=system:masters/CN=embedops-admin" "$ext
extendedKeyUsage=clientAuth"
    # Service-account token signing key pair: kube-apiserver signs and verifies tokens;
    # the controller-manager signs legacy token Secrets with the same private key.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ca.srl
  ) || fail_up "certificate generation with openssl failed"
}

write_kubeconfig() { # $1: file, $2: server URL, $3: pki dir
  local b64='base64 -w0'
  cat >"$1" <<EOF_KC
apiVersion: v1
kind: Config
clusters:
- name: embedops-dev
  cluster:
    server: $2
    certificate-authority-data: $($b64 <"$3/ca.crt")
users:
- name: embedops-admin
  user:
    client-certificate-data: $($b64 <"$3/admin.crt")
    client-key-data: $($b64 <"$3/admin.key")
contexts:
- name: embedops-dev
  context:
    cluster: embedops-dev
    user: embedops-admin
    namespace: default
current-context: embedops-dev
EOF_KC
  chmod 600 "$1"
}

start() { # name, then the command; detached, logs to DIR/logs/<name>.log
  local name=$1 pid
  shift
  # setsid: a session of its own, so that nothing sent to the caller's process group
  # (Ctrl-C in a terminal, a test runner ending its group) reaches the cluster: only
  # `down` stops it. All three standard streams are redirected, so a caller that reads
  # this script's output through a pipe is not held open by the servers.
  setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$DIR/run/$name.pid"
  for _ in $(seq 1 50); do # until the forked shell has exec'd the binary
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${name:0:15}" ]] && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.02
  done
  fail_up "$name did not start"
}

pid_of() { cat "$1/run/$2.pid" 2>/dev/null || true; }

alive() { # dir, name: is the process of that PID file still running our binary?
  local pid stat comm state
  pid=$(pid_of "$1" "$2")
  [[ -n $pid ]] && stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  comm=${stat#*\(}
  comm=${comm%\)*}
  state=${stat##*\) }
  state=${state%% *}
  # A zombie has exited (PID 1 of a container may be slow to reap it); a recycled PID
  # runs something else.
  [[ $comm == "${2:0:15}" && $state != Z ]]
}

stop() { # dir, names...: SIGTERM, up to 15 s to exit, then SIGKILL
  local dir=$1 name left=()
  shift
  for name in "$@"; do
    if alive "$dir" "$name"; then kill -TERM "$(pid_of "$dir" "$name")" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 150); do
    left=()
    for name in "$@"; do alive "$dir" "$name" && left+=("$name"); done
    ((${#left[@]} == 0)) && return 0
    sleep 0.1
  done
  for name in "${left[@]}"; do
    log "$name did not stop on SIGTERM within 15s; killing it"
    kill -KILL "$(pid_of "$dir" "$name")" 2>/dev/null || true
  done
}

stop_all() { # dir; etcd last, so that kube-apiserver can shut down cleanly
  stop "$1" kwok kube-scheduler kube-controller-manager kube-apiserver
  stop "$1" etcd
}

show_logs() {
  local name
  for name in "${COMPONENTS[@]}"; do
    [[ -s $DIR/logs/$name.log ]] || continue
    printf -- '----- %s (last 15 lines of %s)\n' "$name" "$DIR/logs/$name.log" >&2
    tail -n 15 "$DIR/logs/$name.log" >&2
  done
}

fail_up() {
  log "error: $*"
  show_logs
  stop_all "$DIR"
  rm -f "$DIR/env"
  die "the cluster did not come up; logs are in $DIR/logs; 'hack/cluster.sh down $DIR' removes it"
}

wait_for() { # what, seconds, command...
  local what=$1 timeout=$2 deadline name
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    for name in "${COMPONENTS[@]}"; do
      if [[ -f $DIR/run/$name.pid ]] && ! alive "$DIR" "$name"; then
        fail_up "$name exited while waiting for $what"
      fi
    done
    ((SECONDS < deadline)) || fail_up "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
}

cmd_up() {
  DIR=$(cluster_dir "${1:-}")
  local t0 name dead=()
  t0=$(now)
  if [[ -f $DIR/env ]]; then
    for name in "${COMPONENTS[@]}"; do alive "$DIR" "$name" || dead+=("$name"); done
    if ((${#dead[@]} == 0)); then
      log "already up: $DIR/env (KUBECONFIG=$DIR/kubeconfig)"
      return 0
    fi
    die "$DIR holds a cluster that is not running (${dead[*]} down); run 'hack/cluster.sh down $DIR' first"
  fi
  [[ -e $DIR ]] && die "$DIR exists but holds no running cluster; run 'hack/cluster.sh down $DIR' first"
  export KUBECACHEDIR=$DIR/kube-cache # kubectl's discovery cache: not in ~/.kube
  command -v openssl >/dev/null || die "openssl is needed (Debian: apt-get install openssl)"
  command -v setsid >/dev/null || die "setsid is needed (Debian: util-linux)"
  cmd_build

  mkdir -p "$DIR"/{pki,logs,run,etcd}
  chmod 700 "$DIR" "$DIR/etcd"
  echo "created by hack/cluster.sh; 'hack/cluster.sh down' deletes this directory" >"$DIR/.embedops-cluster"

  local etcd_port etcd_peer_port api_port server stages
  USED_PORTS=""
  free_port etcd_port
  free_port etcd_peer_port
  free_port api_port
  server=https://127.0.0.1:$api_port
  local kc=$DIR/kubeconfig pki=$DIR/pki

  start etcd "$BIN/etcd" --name=embedops --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="embedops=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --auto-compaction-retention=1 --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) \
    --log-level=warn

  gen_certs "$pki" # while etcd starts
  write_kubeconfig "$kc" "$server" "$pki"

  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer="$SA_ISSUER" --api-audiences="$SA_ISSUER" \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true --profiling=false

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port=0 \
    --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --flex-volume-plugin-dir="$DIR/flexvolume" \
    --profiling=false

  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port=0 \
    --leader-elect=false --profiling=false

  wait_for "kube-apiserver /readyz" 90 "$BIN/kubectl" --kubeconfig="$kc" get --raw /readyz

  stages=--config="$MODDIR/kwok/stages.yaml"
  [[ ${EMBEDOPS_KWOK_COMPLETE_JOBS:-0} == 1 ]] && stages+=",$MODDIR/kwok/complete-jobs.yaml"
  start kwok "$BIN/kwok" "$stages" \
    --kubeconfig="$kc" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector="$KWOK_NODE_ANNOTATION" \
    --node-lease-duration-seconds=40 --cidr=10.244.0.1/16

  wait_for "the default ServiceAccount (kube-controller-manager)" 90 \
    "$BIN/kubectl" --kubeconfig="$kc" -n default get serviceaccount default

  local tmp=$DIR/.env.tmp var
  {
    echo "# hack/cluster.sh up $DIR (plain KEY=value lines)"
    echo "KUBECONFIG=$kc"
    echo "KUBECACHEDIR=$DIR/kube-cache" # kubectl's discovery cache, gone with DIR
    echo "EMBEDOPS_KUBE_SERVER=$server"
    echo "EMBEDOPS_KUBE_VERSION=$KUBE_VERSION"
    echo "EMBEDOPS_KUBE_BIN=$BIN"
    echo "EMBEDOPS_KUBE_CA=$pki/ca.crt"
    echo "EMBEDOPS_KWOK_NODE_ANNOTATION=$KWOK_NODE_ANNOTATION"
    echo "EMBEDOPS_SA_ISSUER=$SA_ISSUER"
    echo "ETCD_URL=http://127.0.0.1:$etcd_port"
    for name in "${COMPONENTS[@]}"; do
      var=${name^^}
      echo "${var//-/_}_PID=$(pid_of "$DIR" "$name")"
    done
  } >"$tmp"
  mv "$tmp" "$DIR/env"
  log "up in $(elapsed "$t0")s: $server; use: export KUBECONFIG=$kc (all settings: $DIR/env)"
}

cmd_down() {
  local dir
  dir=$(cluster_dir "${1:-}")
  if [[ ! -e $dir ]]; then
    log "nothing to do: $dir does not exist"
    return 0
  fi
  [[ -f $dir/.embedops-cluster ]] || die "$dir was not made by hack/cluster.sh up; not removing it"
  stop_all "$dir"
  rm -rf "$dir"
  log "down: stopped the cluster and removed $dir"
}

cmd_env() {
  local dir
  dir=$(cluster_dir "${1:-}")
  [[ -f $dir/env ]] || die "no cluster is up in $dir"
  cat "$dir/env"
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

# On one line with exit: bash reads a script as it runs, and an edit to this file while
# a long build runs must not make it read on.
main "$@"; exit
