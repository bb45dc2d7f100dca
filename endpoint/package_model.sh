#!/usr/bin/env bash
# Packs checkpoint.pth and cat_to_name.json into model.tar.gz (files at the archive root),
# uploads it under an S3 prefix and prints its s3:// URI as the last line.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/common.sh
source "$HERE/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") MODEL_DIR S3_PREFIX
Pack MODEL_DIR/checkpoint.pth and MODEL_DIR/cat_to_name.json into model.tar.gz, upload it to
S3_PREFIX/model.tar.gz and print that s3:// URI as the last line. The bucket must exist.
Example: $(basename "$0") ./model s3://sagemaker-us-east-1-123456789012/flower-classifier/v1
Honours AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL.
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
for f in checkpoint.pth cat_to_name.json; do
  [[ -s "$MODEL_DIR/$f" ]] || die "$MODEL_DIR/$f is missing or empty"
done
[[ "$S3_PREFIX" =~ ^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?$ ]] ||
  die "S3_PREFIX must look like s3://BUCKET/PREFIX, got '$S3_PREFIX'"
BUCKET="${BASH_REMATCH[1]}"

check_credentials
if ! aws s3api head-bucket --bucket "$BUCKET" >/dev/null 2>"$WORK_DIR/head.err"; then
  die "bucket '$BUCKET' is missing or not accessible ($(last_line "$WORK_DIR/head.err"));" \
    "create it with: aws s3 mb s3://$BUCKET"
fi

"${PYTHON:-python3}" "$HERE/../train/inspect_checkpoint.py" "$MODEL_DIR" >&2 ||
  die "$MODEL_DIR/checkpoint.pth will not serve (see above); nothing was uploaded"
tar -czf "$WORK_DIR/model.tar.gz" -C "$MODEL_DIR" checkpoint.pth cat_to_name.json
log "packed $(du -h "$WORK_DIR/model.tar.gz" | cut -f1) from $MODEL_DIR"
URI="$S3_PREFIX/model.tar.gz"
aws s3 cp --only-show-errors "$WORK_DIR/model.tar.gz" "$URI" >&2
echo "$URI"
