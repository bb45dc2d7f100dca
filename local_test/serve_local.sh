#!/usr/bin/env bash
# Serve the model in local_test/test_dir/model the way SageMaker does: `docker run IMAGE serve`
# with test_dir mounted at /opt/ml and port 8080 published (Ctrl-C stops it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$here/../lib/common.sh"

usage() {
    cat <<USAGE
Usage: local_test/serve_local.sh [--help] [IMAGE]

Runs IMAGE (default $DEFAULT_REPOSITORY:latest) with 'serve', mounting local_test/test_dir at
/opt/ml and publishing localhost:\$PORT (default 8080) -> 8080; adds --gpus all when Docker has an
NVIDIA runtime. Without IMAGE it first builds the default image from this checkout, every
time, so it never serves older code (quick when nothing changed); a named IMAGE is served as it
is, built only if missing. Builds the CPU variant unless an NVIDIA runtime is present; extra
'docker build' arguments from \$BUILD_ARGS. If test_dir/model has no checkpoint.pth, trains
one first with local_test/train_local.sh.
TEST_DIR overrides the directory mounted at /opt/ml (default local_test/test_dir).
Then, from another shell: local_test/predict.sh local_test/payloads/rose.jpg
USAGE
}

local_run_args "$@"
root=$(dirname "$here")
port=${PORT:-8080}
docker_gpus
local_image "$@"

if [[ ! -f $test_dir/model/checkpoint.pth ]]; then
    echo "no model at $test_dir/model/checkpoint.pth; training one with train_local.sh first ..." >&2
    "$here/train_local.sh" "$image"
fi

# the server recognises the bundled demo by its SHA-256 (model_info.py); say so here too
demo_sha=$(sed -n 's/^DEMO_CHECKPOINT_SHA256 = "\([0-9a-f]*\)"$/\1/p' \
    "$root/container/flower_classifier/serving/model_info.py")
if [[ $(sha256sum "$test_dir/model/checkpoint.pth" | cut -d' ' -f1) == "$demo_sha" ]]; then
    echo "model: the bundled demo model (EfficientNet-Lite0; see README, The demo model)" >&2
fi
echo "serving $image on http://localhost:$port (POST /invocations, GET /ping); Ctrl-C stops" >&2
exec docker run --rm "${GPUS[@]}" --stop-timeout 30 \
    -v "$test_dir:/opt/ml" -p "127.0.0.1:$port:8080" "$image" serve
