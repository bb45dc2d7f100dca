#!/usr/bin/env bash
# Classifies every image under an S3 prefix with a SageMaker Batch Transform job (one record
# per image, SplitType None), waits, and prints the output prefix, where <file>.out holds each.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --input S3_PREFIX --output S3_PREFIX [--name $DEFAULT_ENDPOINT_NAME]
         (--model-name MODEL | --model-data S3_URI [--image IMAGE_URI] [--role ROLE_ARN])
         [--instance-type ml.m5.xlarge] [--instance-count 1] [--content-type TYPE]
         [--max-payload-mb N] [--max-concurrent N] [--timeout 7200] [--poll-seconds 30]
         [--dry-run]
Start transform job NAME-<YYYYmmdd-HHMMSS>-<4 hex> over every object under --input: one
request per image (BatchStrategy SingleRecord, SplitType None), each answer written to
OUTPUT/<key relative to INPUT>.out as JSON. Waits and prints the output prefix last.
  --model-name   an existing SageMaker model (e.g. one deploy.sh made); otherwise model
                 NAME-<suffix> is created from --model-data, --image (default: latest in ECR
                 repository $DEFAULT_REPOSITORY) and --role (default: $DEFAULT_ROLE_NAME)
  --content-type default from the file names under --input: image/jpeg (.jpg/.jpeg),
                 image/png (.png), application/x-image when they are mixed (the container
                 tells JPEG from PNG by their bytes)
  --max-payload-mb, --max-concurrent  MaxPayloadInMB and MaxConcurrentTransforms; left out by
                 default, so SageMaker asks the container's GET /execution-parameters
Honours AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL.
USAGE
}

NAME=$DEFAULT_ENDPOINT_NAME INPUT="" OUTPUT="" MODEL="" MODEL_DATA="" IMAGE="" ROLE=""
INSTANCE_TYPE=ml.m5.xlarge INSTANCE_COUNT=1 CONTENT_TYPE="" MAX_PAYLOAD="" MAX_CONCURRENT=""
TIMEOUT=7200 POLL=30 DRY_RUN=0
declare -A SWITCHES=([--dry-run]=DRY_RUN)
set_option() {
  case "$1" in
    --name) NAME=$2 ;;
    --input) check_s3_uri "$1" "$2"; INPUT=${2%/} ;;
    --output) check_s3_uri "$1" "$2"; OUTPUT=${2%/} ;;
    --model-name) MODEL=$2 ;;
    --model-data) MODEL_DATA=$2 ;;
    --image) check_image_uri "$2"; IMAGE=$2 ;;
    --role) check_role_arn "$2"; ROLE=$2 ;;
    --instance-type) INSTANCE_TYPE=$2 ;;
    --instance-count) need_int "$1" "$2"; INSTANCE_COUNT=$2 ;;
    --content-type) CONTENT_TYPE=$2 ;;
    --max-payload-mb) need_int "$1" "$2"; MAX_PAYLOAD=$2 ;;
    --max-concurrent) need_int "$1" "$2"; MAX_CONCURRENT=$2 ;;
    *) wait_option "$1" "$2" ;;
  esac
}
parse_options "$@"
check_endpoint_name "$NAME"
[[ -n "$INPUT" && -n "$OUTPUT" ]] || die "--input and --output are required (see --help)"
[[ "$OUTPUT" != "$INPUT" && "$OUTPUT/" != "$INPUT/"* ]] ||
  die "--output must not be --input or under it (the outputs would be read as inputs)"
if [[ -n "$MODEL" ]]; then
  [[ -z "$MODEL_DATA$IMAGE$ROLE" ]] || die "give --model-name or --model-data/--image/--role"
else
  [[ -n "$MODEL_DATA" ]] || die "--model-name or --model-data is required (see --help)"
  [[ "$MODEL_DATA" =~ ^s3://[a-z0-9.-]+/[^\"\\]+\.tar\.gz$ ]] ||
    die "--model-data must be an s3://BUCKET/KEY.tar.gz URI (see package_model.sh)"
fi
check_instance_type ml.m5.xlarge
case "$CONTENT_TYPE" in
  "" | image/jpeg | image/png | application/x-image) ;;
  *) die "--content-type must be image/jpeg, image/png or application/x-image" ;;
esac
((MAX_PAYLOAD == 0 || MAX_PAYLOAD <= 100)) || die "--max-payload-mb must be 1-100"

run() {
  if ((DRY_RUN)); then printf '%q ' "$@" >&2; echo >&2; else "$@"; fi
}

check_credentials
check_s3_uri --input "$INPUT"
IN_BUCKET="$S3_BUCKET" IN_KEY="$S3_KEY"
# The file names decide the content type; an empty prefix is an error, not an empty job.
aws s3api list-objects-v2 --bucket "$IN_BUCKET" --prefix "${IN_KEY:+$IN_KEY/}" \
  --query 'Contents[].Key' --output text >"$WORK_DIR/keys" 2>"$WORK_DIR/list.err" ||
  die "cannot list $INPUT: $(last_line "$WORK_DIR/list.err")"
mapfile -t KEYS < <(tr '\t' '\n' <"$WORK_DIR/keys" | grep -v -e '^None$' -e '^$' || true)
[[ ${#KEYS[@]} -gt 0 ]] || die "no objects under $INPUT/"
if [[ -z "$CONTENT_TYPE" ]]; then
  CONTENT_TYPE="$(printf '%s\n' "${KEYS[@]}" | content_type_of_names)"
fi
log "${#KEYS[@]} object(s) under $INPUT/, content type $CONTENT_TYPE"

SUFFIX="$(resource_suffix)"
JOB="$NAME-$SUFFIX"
if [[ -z "$MODEL" ]]; then
  ROLE="${ROLE:-$(default_role)}"
  check_role "$ROLE"
  IMAGE="${IMAGE:-$(default_image)}"
  MODEL="$JOB"
  log "creating model $MODEL"
  run aws sagemaker create-model --model-name "$MODEL" --execution-role-arn "$ROLE" \
    --primary-container "{\"Image\":\"$IMAGE\",\"ModelDataUrl\":\"$MODEL_DATA\"}" \
    --tags "Key=flower-endpoint,Value=$NAME" >/dev/null
fi

ARGS=(--transform-job-name "$JOB" --model-name "$MODEL" --batch-strategy SingleRecord
  --transform-input "{\"DataSource\":{\"S3DataSource\":{\"S3DataType\":\"S3Prefix\",\"S3Uri\":\"$INPUT/\"}},\"ContentType\":\"$CONTENT_TYPE\",\"SplitType\":\"None\",\"CompressionType\":\"None\"}"
  --transform-output "{\"S3OutputPath\":\"$OUTPUT/\",\"Accept\":\"application/json\",\"AssembleWith\":\"None\"}"
  --transform-resources "{\"InstanceType\":\"$INSTANCE_TYPE\",\"InstanceCount\":$INSTANCE_COUNT}"
  --tags "Key=flower-endpoint,Value=$NAME")
[[ -z "$MAX_PAYLOAD" ]] || ARGS+=(--max-payload-in-mb "$MAX_PAYLOAD")
[[ -z "$MAX_CONCURRENT" ]] || ARGS+=(--max-concurrent-transforms "$MAX_CONCURRENT")
log "starting transform job $JOB with model $MODEL"
run aws sagemaker create-transform-job "${ARGS[@]}" >/dev/null
if ((DRY_RUN)); then echo "$OUTPUT/"; exit 0; fi

wait_for_job transform "$JOB" "$TIMEOUT" "$POLL"
echo "$OUTPUT/"
