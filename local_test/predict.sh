#!/usr/bin/env bash
# Send one payload to a locally running endpoint's /invocations, as SageMaker would.
# Content type is guessed from the file extension unless given; prints the JSON reply.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

usage() {
    cat <<USAGE
Usage: local_test/predict.sh [--help] PAYLOAD [CONTENT_TYPE]

POSTs PAYLOAD to http://localhost:\$PORT/invocations (PORT default 8080).
CONTENT_TYPE defaults by extension: .jpg/.jpeg image/jpeg, .png image/png,
.json application/json, anything else application/x-image.
TOP_K=N adds the header 'X-Amzn-SageMaker-Custom-Attributes: top_k=N'.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac

payload=$1
[[ -f $payload ]] || die "payload file not found: $payload"
if [[ -n ${2:-} ]]; then
    content_type=$2
else
    case "${payload,,}" in
        *.json) content_type=application/json ;;
        *) content_type=$(content_type_of_names <<<"$payload") ;;
    esac
fi

headers=(-H "Content-Type: $content_type")
[[ -z ${TOP_K:-} ]] || headers+=(-H "X-Amzn-SageMaker-Custom-Attributes: top_k=$TOP_K")

curl -sS --fail-with-body "${headers[@]}" --data-binary "@$payload" \
    "http://localhost:${PORT:-8080}/invocations"
echo
