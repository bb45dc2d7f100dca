#!/usr/bin/env bash
# Batch Transform on this machine, the way SageMaker runs it: the real container (or a server
# already running), GET /execution-parameters, one POST per file, each answer in <file>.out.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$here/../lib/common.sh"

usage() {
    cat <<USAGE
Usage: local_test/batch_transform.sh [--help] INPUT_DIR OUTPUT_DIR [--model-dir DIR]
         [--image IMAGE] [--url URL] [--content-type TYPE]

Classifies every file under INPUT_DIR and writes OUTPUT_DIR/<relative path>.out (the JSON
answer), as a SageMaker transform job with SplitType None and BatchStrategy SingleRecord does:
  1. runs IMAGE with 'serve' (without --image: $DEFAULT_REPOSITORY:latest, built from this
     checkout first, as local_test/serve_local.sh does; a named IMAGE is built only if it is
     missing; extra 'docker build' arguments from \$BUILD_ARGS), DIR (default
     local_test/test_dir/model) mounted at /opt/ml/model and SAGEMAKER_BATCH=true, on a free
     loopback port (--gpus all when Docker has an NVIDIA runtime); --url URL uses a server that
     is already running instead (e.g. local_test/serve_local.sh's http://localhost:8080);
  2. reads MaxPayloadInMB and MaxConcurrentTransforms from GET /execution-parameters;
  3. POSTs each file to /invocations with one content type for the job (from the file names,
     as endpoint/batch_transform.sh picks it; --content-type overrides), at most
     MaxConcurrentTransforms at a time; a file over MaxPayloadInMB fails, as it fails the job.
Files that fail are listed and the exit status is 1; the others' .out files are written.
USAGE
}

args=() model_dir=$here/test_dir/model image=$DEFAULT_REPOSITORY:latest named=() url=""
content_type=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --model-dir | --image | --url | --content-type)
            need_arg "$1" "${2:-}"
            case "$1" in
                --model-dir) model_dir=$2 ;;
                --image) image=$2 named=("$2") ;;
                --url) url=${2%/} ;;
                --content-type) content_type=$2 ;;
            esac
            shift 2 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ ${#args[@]} -eq 2 ]] || { usage >&2; die "expected INPUT_DIR and OUTPUT_DIR"; }
input=${args[0]%/} output=${args[1]%/}
[[ -d $input ]] || die "INPUT_DIR '$input' is not a directory"
mkdir -p "$output"
[[ "$(cd "$output" && pwd)/" != "$(cd "$input" && pwd)/"* ]] ||
    die "OUTPUT_DIR must not be INPUT_DIR or under it"
command -v curl >/dev/null 2>&1 || die "curl not found on PATH"
make_work_dir

mapfile -t files < <(cd "$input" && find . -type f ! -name '.*' | sed 's|^\./||' | sort)
((${#files[@]})) || die "no files under $input"
[[ -n $content_type ]] || content_type=$(printf '%s\n' "${files[@]}" | content_type_of_names)

if [[ -z $url ]]; then
    [[ -f $model_dir/checkpoint.pth ]] || die "no checkpoint.pth in --model-dir $model_dir"
    require_docker
    docker_gpus
    local_image "${named[@]}"
    container=$(docker run -d --rm "${GPUS[@]}" -p 127.0.0.1::8080 \
        -v "$(cd "$model_dir" && pwd):/opt/ml/model:ro" -e SAGEMAKER_BATCH=true \
        -e SAGEMAKER_BATCH_STRATEGY=SINGLE_RECORD "$image" serve)
    trap 'docker rm -f "$container" >/dev/null 2>&1 || true; rm -rf "$WORK_DIR"' EXIT
    url="http://$(docker port "$container" 8080/tcp | head -n1)"
    log "started $image as ${container:0:12} on $url"
fi

ready() {
    POLL_STATUS="waiting for $url/ping"
    curl -fsS -o /dev/null --max-time 5 "$url/ping" 2>/dev/null || return 1
    POLL_STATUS="ready on $url"
}
poll_until "server" 300 1 ready

params=$(curl -fsS --max-time 10 "$url/execution-parameters") ||
    die "GET $url/execution-parameters failed; is this the flower classifier container?"
max_payload_mb=$(sed -n 's/.*"MaxPayloadInMB": *\([0-9]*\).*/\1/p' <<<"$params")
concurrency=$(sed -n 's/.*"MaxConcurrentTransforms": *\([0-9]*\).*/\1/p' <<<"$params")
[[ $max_payload_mb =~ ^[0-9]+$ && $concurrency =~ ^[0-9]+$ ]] ||
    die "unexpected /execution-parameters answer: $params"
log "${#files[@]} file(s), $content_type; MaxPayloadInMB $max_payload_mb," \
    "MaxConcurrentTransforms $concurrency"

# transform_one FILE: POST INPUT/FILE, write OUTPUT/FILE.out, or note FILE in failures.
transform_one() {
    local file=$1 size status body="$WORK_DIR/answer.$BASHPID"
    size=$(wc -c <"$input/$file")
    mkdir -p "$(dirname "$output/$file")"
    if ((size > max_payload_mb * 1024 * 1024)); then
        echo "$file: $size bytes is over MaxPayloadInMB $max_payload_mb" >>"$WORK_DIR/failures"
        return 0
    fi
    status=$(curl -sS --max-time 120 -o "$body" -w '%{http_code}' \
        -H "Content-Type: $content_type" -H "Accept: application/json" \
        --data-binary "@$input/$file" "$url/invocations") || status=000
    if [[ $status == 200 ]]; then
        mv "$body" "$output/$file.out"
    else
        echo "$file: HTTP $status $(head -c 300 "$body" 2>/dev/null)" \
            >>"$WORK_DIR/failures"
    fi
}
export -f transform_one
export input output url content_type max_payload_mb WORK_DIR
# At most MaxConcurrentTransforms requests at a time (and no more than 8 on one machine).
parallel=$((concurrency < 1 ? 1 : concurrency > 8 ? 8 : concurrency))
# shellcheck disable=SC2016  # $1 is expanded by the inner bash, one file per call
printf '%s\0' "${files[@]}" | xargs -0 -n 1 -P "$parallel" bash -c 'transform_one "$1"' _

if [[ -s $WORK_DIR/failures ]]; then
    log "failed:"
    cat "$WORK_DIR/failures" >&2
    die "$(wc -l <"$WORK_DIR/failures") of ${#files[@]} file(s) failed; the rest are in $output"
fi
log "wrote ${#files[@]} .out file(s) to $output"
echo "$output"
