#!/usr/bin/env bash
# hack/trainer_crds.sh: Kubeflow Trainer's CRDs (TrainJob, TrainingRuntime, ClusterTrainingRuntime) from the
# released github.com/kubeflow/trainer/v2 module, cached, for the e2e tests (tests/e2e/test_trainjob.py): no
# Trainer controller runs there, the API server only has to serve the kinds embedops creates and reads.
#
#   hack/trainer_crds.sh        print the folder holding the CRD YAML files, fetching them first if missing
#
# The module comes through the Go module proxy (`go mod download`, which checks it against the checksum
# database); its manifests/base/crds/ are copied to
# ${EMBEDOPS_KUBE_CACHE:-$HOME/.cache/embedops/kube}/trainer/$VERSION/crds/ (like hack/cluster.sh's binaries).
set -euo pipefail

VERSION=v2.3.0
MODULE=github.com/kubeflow/trainer/v2
CACHE="${EMBEDOPS_KUBE_CACHE:-$HOME/.cache/embedops/kube}/trainer/$VERSION"
CRDS="$CACHE/crds"

if [[ ! -f "$CRDS/.complete" ]]; then
  command -v go >/dev/null || { echo "hack/trainer_crds.sh: needs go to fetch $MODULE@$VERSION" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # Outside any module, so that go mod download takes the module as it is released.
  dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d "$dir/manifests/base/crds" ]] || { echo "hack/trainer_crds.sh: no manifests/base/crds in $dir" >&2; exit 1; }
  mkdir -p "$CRDS"
  cp "$dir"/manifests/base/crds/trainer.kubeflow.org_*.yaml "$CRDS/"
  chmod u+w "$CRDS"/*.yaml
  touch "$CRDS/.complete"
fi
echo "$CRDS"
