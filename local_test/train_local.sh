#!/usr/bin/env bash
# Run the SageMaker training contract locally: `docker run IMAGE train` with local_test/test_dir
# mounted at /opt/ml (hyperparameters in input/config, data in input/data/{train,valid}).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

usage() {
    cat <<USAGE
Usage: local_test/train_local.sh [--help] [IMAGE]

Runs IMAGE (default $DEFAULT_REPOSITORY:latest) with 'train', mounting local_test/test_dir at
/opt/ml; adds --gpus all when Docker has an NVIDIA runtime. Without IMAGE it first builds the
default image from this checkout (as serve_local.sh does); a named IMAGE is built only if
missing. Expects images in
  local_test/test_dir/input/data/train/<class>/*.jpg  and  .../valid/<class>/*.jpg
and hyperparameters in local_test/test_dir/input/config/hyperparameters.json.
The model (checkpoint.pth, cat_to_name.json) lands in local_test/test_dir/model; on failure
the reason is in local_test/test_dir/output/failure. TEST_DIR overrides the directory mounted
at /opt/ml (default local_test/test_dir).
USAGE
}

local_run_args "$@"
data=$test_dir/input/data
[[ -d $data/train ]] || die "no training data in $data/train/<class>/*.jpg" \
    "(and valid/<class>/ for validation), e.g. the flower_data train/ and valid/ folders"

docker_gpus
local_image "$@"

mkdir -p "$test_dir/model" "$test_dir/output"
rm -f "$test_dir/output/failure"
if docker run --rm "${GPUS[@]}" -v "$test_dir:/opt/ml" "$image" train; then
    echo "model written to $test_dir/model" >&2
else
    rc=$?
    echo "error: training failed (exit $rc)" >&2
    [[ ! -f $test_dir/output/failure ]] || cat "$test_dir/output/failure" >&2
    exit "$rc"
fi
