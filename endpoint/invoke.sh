#!/usr/bin/env bash
# Sends one JPEG or PNG image to the flower classifier endpoint with
# aws sagemaker-runtime invoke-endpoint and prints the JSON predictions.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--name $DEFAULT_ENDPOINT_NAME] IMAGE_FILE [--top-k K] [--content-type TYPE]
Classify IMAGE_FILE (.jpg/.jpeg/.png; other names need --content-type image/jpeg|image/png|
application/x-image) with endpoint NAME and print the JSON response. --top-k K asks the
container for K classes (custom attribute top_k=K). Honours AWS_REGION, AWS_PROFILE and
AWS_ENDPOINT_URL. The same call by hand:
  aws sagemaker-runtime invoke-endpoint --endpoint-name NAME --content-type image/jpeg \\
    --accept application/json --body fileb://flower.jpg /dev/stdout
USAGE
}

NAME=$DEFAULT_ENDPOINT_NAME IMAGE="" TOP_K="" CONTENT_TYPE=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --name) need_arg "$1" "${2:-}"; NAME=$2; shift 2 ;;
    --top-k) need_arg "$1" "${2:-}"; need_int "$1" "$2"; TOP_K=$2; shift 2 ;;
    --content-type) need_arg "$1" "${2:-}"; CONTENT_TYPE=$2; shift 2 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [[ -z "$IMAGE" ]] || die "only one IMAGE_FILE expected, got '$1' too"; IMAGE=$1; shift ;;
  esac
done
[[ -n "$IMAGE" ]] || die "IMAGE_FILE is required (see --help)"
[[ -f "$IMAGE" && -r "$IMAGE" ]] || die "image file '$IMAGE' not found or not readable"
if [[ -z "$CONTENT_TYPE" ]]; then
  case "${IMAGE,,}" in
    *.jpg | *.jpeg) CONTENT_TYPE=image/jpeg ;;
    *.png) CONTENT_TYPE=image/png ;;
    *) die "cannot tell the image type of '$IMAGE' from its name; pass --content-type" ;;
  esac
fi
case "$CONTENT_TYPE" in
  image/jpeg | image/png | application/x-image) ;;
  *) die "--content-type must be image/jpeg, image/png or application/x-image" ;;
esac
check_credentials

extra=()
[[ -z "$TOP_K" ]] || extra=(--custom-attributes "top_k=$TOP_K")
if ! aws sagemaker-runtime invoke-endpoint --endpoint-name "$NAME" \
  --content-type "$CONTENT_TYPE" --accept application/json --body "fileb://$IMAGE" \
  ${extra[@]+"${extra[@]}"} "$WORK_DIR/response.json" >/dev/null 2>"$WORK_DIR/invoke.err"; then
  die "invoke-endpoint $NAME failed: $(last_line "$WORK_DIR/invoke.err")"
fi
cat "$WORK_DIR/response.json"
echo
