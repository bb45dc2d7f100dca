#!/usr/bin/env bash
# Checks and packs a model directory into model.tar.gz with train/package_model.py (the same
# code, the server's own loader), uploads it under an S3 prefix and prints its s3:// URI last.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") MODEL_DIR S3_PREFIX
Check MODEL_DIR/checkpoint.pth (+ cat_to_name.json when present) with train/package_model.py,
which loads it with the server's own loader and refuses one that will not serve, pack them into
model.tar.gz, upload it to S3_PREFIX/model.tar.gz and print that s3:// URI as the last line.
The bucket must exist.
Example: $(basename "$0") ./model s3://sagemaker-us-east-1-123456789012/$DEFAULT_PREFIX/v1
Honours AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL; PYTHON (default python3) runs the check.
USAGE
}

args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ ${#args[@]} -eq 2 ]] || { usage >&2; die "expected MODEL_DIR and S3_PREFIX"; }
MODEL_DIR="${args[0]}" S3_PREFIX="${args[1]%/}"

[[ -d "$MODEL_DIR" ]] || die "MODEL_DIR '$MODEL_DIR' is not a directory"
check_s3_uri S3_PREFIX "$S3_PREFIX"
BUCKET="$S3_BUCKET"

make_work_dir
"${PYTHON:-python3}" "$HERE/../train/package_model.py" "$MODEL_DIR" \
  --output "$WORK_DIR/model.tar.gz" >&2 || die "$MODEL_DIR is not a model the server can load"

check_credentials
if ! aws s3api head-bucket --bucket "$BUCKET" >/dev/null 2>"$WORK_DIR/head.err"; then
  die "bucket '$BUCKET' is missing or not accessible ($(last_line "$WORK_DIR/head.err"));" \
    "create it with: aws s3 mb s3://$BUCKET"
fi

URI="$S3_PREFIX/model.tar.gz"
aws s3 cp --only-show-errors "$WORK_DIR/model.tar.gz" "$URI" >&2
echo "$URI"
