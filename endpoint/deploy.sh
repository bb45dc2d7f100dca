#!/usr/bin/env bash
# Deploys the flower classifier image as a SageMaker real-time endpoint: a new model and
# endpoint config each run, then create-endpoint or a blue/green update-endpoint, and waits.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") (--checkpoint PATH [--names cat_to_name.json] | --model-data S3_URI)
         [--name $DEFAULT_ENDPOINT_NAME] [--image IMAGE_URI] [--role ROLE_ARN]
         [--instance-type ml.g4dn.xlarge] [--instance-count 1] [--workers 1]
         [--model-server-timeout 60] [--startup-timeout auto] [--download-timeout auto]
         [--ami-version auto|none|VERSION] [--timeout 1800] [--poll-seconds 15] [--dry-run]
Create model and endpoint config NAME-<timestamp>-<rand>, then create endpoint NAME or move
the existing one to the new config (update-endpoint: blue/green, no downtime), and wait for
InService. The last line printed is the endpoint name.
  --checkpoint PATH   checkpoint.pth to serve: checked with the server's own loader (one that
                      will not serve is refused), packed with its cat_to_name.json (--names, or
                      the one next to it) and uploaded to
                      s3://sagemaker-REGION-ACCOUNT/$DEFAULT_PREFIX/models/<content hash>/
  --model-data S3_URI an already uploaded model.tar.gz (endpoint/package_model.sh prints it)
  --image             default: the image tagged latest in ECR repository $DEFAULT_REPOSITORY
                      (what ./build_and_push.sh pushes), pinned by its digest
  --role              default: role $DEFAULT_ROLE_NAME (iam/create_role.sh) of this account
  --workers, --model-server-timeout  container env MODEL_SERVER_WORKERS (default: unset, one
                      worker per GPU), MODEL_SERVER_TIMEOUT
  --startup-timeout   ContainerStartupHealthCheckTimeoutInSeconds (60-3600); auto = 4 x the
                      measured cold start (${COLD_START_S}s) + 1 s per 20 MB of model, >= 120
  --download-timeout  ModelDataDownloadTimeoutInSeconds (60-3600); auto = 60 s + 2 x the
                      model's size at 25 MB/s, >= 120
  --ami-version       InferenceAmiVersion; auto = $GPU_AMI on GPU instance types
                      (the image's CUDA 13.0 wheels need driver >= 580), none on CPU
                      types; ml.p3 (Volta) is refused unless --ami-version is given: CUDA 13
                      no longer supports Volta (a cu126 build of the image does)
  --timeout, --poll-seconds  bound the wait for InService
  --serverless MEMORY_MB  a serverless endpoint (1024-6144, steps of 1024) with
                      --max-concurrency N (1-200, default 5), on the CPU image (default: the
                      image tagged latest-cpu, ./build_and_push.sh --cpu); payloads <= 4 MB
  --async S3_URI      asynchronous inference: answers to S3_URI/output, failures to
                      S3_URI/failure, [--sns-success ARN --sns-error ARN] notified,
                      --async-concurrency N requests per instance (default 4); the container
                      takes payloads up to 100 MB there
  --capture S3_URI    data capture of requests and answers to S3_URI, --capture-percent N
                      of them (default 20)
  --canary PERCENT | --linear PERCENT
                      on an update, shift traffic with deployment guardrails (canary: PERCENT
                      first, then the rest; linear: PERCENT per step), --bake-seconds apart
                      (default 300), rolled back automatically when alarm NAME-5xx
                      (Invocation5XXErrors >= 1 for 2 minutes) or NAME-latency (ModelLatency
                      over --latency-ms, default 2000) fires; the script creates both.
                      Without them an update is blue/green all at once
  --dry-run           print the AWS CLI calls that would change anything, make none
Honours AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL; PYTHON runs the checkpoint check.
USAGE
}

# Cold start (process start to the first 200 on /ping) of the seed's vgg16 on a 2-core CPU,
# measured by bench/run.py (README, Performance): loading, warm-up and int8 calibration.
COLD_START_S=12
GPU_AMI=al2023-ami-sagemaker-inference-gpu-4-1 # NVIDIA driver 580, CUDA 13.0
NAME=$DEFAULT_ENDPOINT_NAME IMAGE="" MODEL_DATA="" ROLE="" INSTANCE_TYPE=ml.g4dn.xlarge INSTANCE_COUNT=1
WORKERS=auto SERVER_TIMEOUT=60 STARTUP_TIMEOUT=auto DOWNLOAD_TIMEOUT=auto AMI=auto TIMEOUT=1800
POLL=15 DRY_RUN=0 CHECKPOINT="" NAMES="" SERVERLESS_MB="" MAX_CONCURRENCY=5 ASYNC_OUTPUT=""
SNS_SUCCESS="" SNS_ERROR="" ASYNC_CONCURRENCY=4 CAPTURE="" CAPTURE_PERCENT=20 CANARY="" LINEAR=""
BAKE=300 LATENCY_MS=2000 INSTANCE_SET=0
declare -A SWITCHES=([--dry-run]=DRY_RUN)
set_option() {
  case "$1" in
    --name) NAME=$2 ;;
    --image) IMAGE=$2 ;;
    --model-data) MODEL_DATA=$2 ;;
    --role) ROLE=$2 ;;
    --instance-type) INSTANCE_TYPE=$2; INSTANCE_SET=1 ;;
    --instance-count) need_int "$1" "$2"; INSTANCE_COUNT=$2; INSTANCE_SET=1 ;;
    --serverless) need_int "$1" "$2"; SERVERLESS_MB=$2 ;;
    --max-concurrency) need_int "$1" "$2"; MAX_CONCURRENCY=$2 ;;
    --async) check_s3_uri "$1" "$2"; ASYNC_OUTPUT=${2%/} ;;
    --sns-success) SNS_SUCCESS=$2 ;;
    --sns-error) SNS_ERROR=$2 ;;
    --async-concurrency) need_int "$1" "$2"; ASYNC_CONCURRENCY=$2 ;;
    --capture) check_s3_uri "$1" "$2"; CAPTURE=${2%/} ;;
    --capture-percent) need_int "$1" "$2"; CAPTURE_PERCENT=$2 ;;
    --canary) need_int "$1" "$2"; CANARY=$2 ;;
    --linear) need_int "$1" "$2"; LINEAR=$2 ;;
    --bake-seconds) need_int "$1" "$2"; BAKE=$2 ;;
    --latency-ms) need_int "$1" "$2"; LATENCY_MS=$2 ;;
    --workers) need_int "$1" "$2"; WORKERS=$2 ;;
    --model-server-timeout) need_int "$1" "$2"; SERVER_TIMEOUT=$2 ;;
    --startup-timeout) [[ "$2" == auto ]] || need_int "$1" "$2"; STARTUP_TIMEOUT=$2 ;;
    --download-timeout) [[ "$2" == auto ]] || need_int "$1" "$2"; DOWNLOAD_TIMEOUT=$2 ;;
    --checkpoint) CHECKPOINT=$2 ;;
    --names) NAMES=$2 ;;
    --ami-version) AMI=$2 ;;
    *) wait_option "$1" "$2" ;;
  esac
}
parse_options "$@"

check_endpoint_name "$NAME"
if [[ -n "$CHECKPOINT" ]]; then
  [[ -z "$MODEL_DATA" ]] || die "give --checkpoint or --model-data, not both"
  [[ -f "$CHECKPOINT" ]] || die "--checkpoint '$CHECKPOINT' is not a file"
  [[ -n "$NAMES" || ! -f "$(dirname "$CHECKPOINT")/cat_to_name.json" ]] ||
    NAMES="$(dirname "$CHECKPOINT")/cat_to_name.json"
  [[ -z "$NAMES" || -f "$NAMES" ]] || die "--names '$NAMES' is not a file"
else
  [[ -z "$NAMES" ]] || die "--names goes with --checkpoint"
  [[ -n "$MODEL_DATA" ]] || die "--checkpoint or --model-data is required (see --help)"
  [[ "$MODEL_DATA" =~ ^s3://[a-z0-9.-]+/[^\"\\]+\.tar\.gz$ ]] ||
    die "--model-data must be an s3://BUCKET/KEY.tar.gz URI (see package_model.sh)"
fi
[[ -z "$IMAGE" ]] || check_image_uri "$IMAGE"
[[ -z "$ROLE" ]] || check_role_arn "$ROLE"
check_instance_type
[[ "$INSTANCE_TYPE" != ml.p3.* || "$AMI" != auto ]] ||
  die "$INSTANCE_TYPE has Volta GPUs, which the image's CUDA 13.0 build cannot use; pick ml.g5 or" \
    "newer, or build the image with TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 and" \
    "pass --ami-version al2-ami-sagemaker-inference-gpu-2"
for t in "$STARTUP_TIMEOUT" "$DOWNLOAD_TIMEOUT"; do
  [[ "$t" == auto ]] || ((t >= 60 && t <= 3600)) || die "--startup-timeout and --download-timeout must be 60-3600"
done
if [[ -n "$SERVERLESS_MB" ]]; then
  ((SERVERLESS_MB >= 1024 && SERVERLESS_MB <= 6144 && SERVERLESS_MB % 1024 == 0)) ||
    die "--serverless memory must be 1024, 2048, 3072, 4096, 5120 or 6144 MB"
  ((MAX_CONCURRENCY <= 200)) || die "--max-concurrency must be 1-200"
  ((!INSTANCE_SET)) || die "--serverless has no instances; drop --instance-type/--instance-count"
  [[ -z "$ASYNC_OUTPUT$CANARY$LINEAR" ]] ||
    die "--serverless does not go with --async, --canary or --linear"
  AMI=none
fi
for arn in "$SNS_SUCCESS" "$SNS_ERROR"; do
  [[ -z "$arn" ]] || [[ "$arn" =~ ^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$ ]] ||
    die "--sns-success/--sns-error must be SNS topic ARNs, got '$arn'"
done
[[ -n "$ASYNC_OUTPUT" || -z "$SNS_SUCCESS$SNS_ERROR" ]] || die "--sns-success/--sns-error go with --async"
((CAPTURE_PERCENT <= 100)) || die "--capture-percent must be 1-100"
[[ -z "$CANARY" || -z "$LINEAR" ]] || die "give --canary or --linear, not both"
((${CANARY:-1} <= 99 && ${LINEAR:-1} <= 99)) || die "--canary/--linear PERCENT must be 1-99"
if [[ "$AMI" == auto ]]; then
  # Instance families the GPU inference AMIs support; CPU types keep the default AMI.
  if [[ "$INSTANCE_TYPE" =~ ^ml\.(g4dn|g5|g6|g6e|p4d|p4de|p5)\. ]]; then AMI=$GPU_AMI; else AMI=none; fi
fi
[[ "$AMI" == none || "$AMI" =~ ^al2[0-9]*-ami-sagemaker-inference-[a-z0-9-]+$ ]] ||
  die "--ami-version must be auto, none or e.g. $GPU_AMI, got '$AMI'"

# run: execute an AWS CLI call that changes something, or only print it with --dry-run.
run() {
  if ((DRY_RUN)); then
    local arg line=""
    for arg in "$@"; do
      [[ "$arg" =~ ^[A-Za-z0-9_./:=,@+-]+$ ]] || arg="'${arg//\'/\'\\\'\'}'"
      line+="$arg "
    done
    echo "${line% }" >&2
  else
    "$@"
  fi
}

check_credentials
ROLE="${ROLE:-$(default_role)}"
check_role "$ROLE"

STATUS="$(endpoint_field "$NAME" EndpointStatus)"
case "$STATUS" in
  "" | InService) ;;
  Failed) die "endpoint $NAME is Failed; remove it with endpoint/delete.sh --name $NAME first" ;;
  *) die "endpoint $NAME is $STATUS; wait until it is InService and run again" ;;
esac

if [[ -z "$IMAGE" ]]; then
  TAG_WANTED=latest
  [[ -z "$SERVERLESS_MB" ]] || TAG_WANTED=latest-cpu # serverless: CPU only, 10 GB image limit
  IMAGE="$(default_image "$TAG_WANTED")"
  log "image: $IMAGE ($TAG_WANTED in $DEFAULT_REPOSITORY)"
fi

if [[ -n "$CHECKPOINT" ]]; then
  # The key is the inputs' content hash: deploying the same checkpoint again reuses it.
  mkdir "$WORK_DIR/model"
  cp "$CHECKPOINT" "$WORK_DIR/model/checkpoint.pth"
  [[ -z "$NAMES" ]] || cp "$NAMES" "$WORK_DIR/model/cat_to_name.json"
  HASH="$(cat "$WORK_DIR"/model/* | sha256sum | cut -c1-16)"
  PREFIX_URI="s3://$(default_bucket)/$DEFAULT_PREFIX/models/$HASH"
  MODEL_DATA="$PREFIX_URI/model.tar.gz"
  if ((DRY_RUN)); then
    "${PYTHON:-python3}" "$HERE/../train/package_model.py" "$WORK_DIR/model" \
      --output "$WORK_DIR/model.tar.gz" >&2 || die "$CHECKPOINT will not serve; not deploying it"
    run "$HERE/package_model.sh" "$WORK_DIR/model" "$PREFIX_URI"
  else
    "$HERE/package_model.sh" "$WORK_DIR/model" "$PREFIX_URI" >/dev/null ||
      die "could not package and upload $CHECKPOINT (see above)"
  fi
fi

# Start-up timeouts from the model's size (local archive, else its S3 listing).
if [[ -f "$WORK_DIR/model.tar.gz" ]]; then
  SIZE="$(wc -c <"$WORK_DIR/model.tar.gz")"
elif [[ -n "$CHECKPOINT" ]]; then
  SIZE="$(cat "$WORK_DIR"/model/* | wc -c)"
else
  SIZE="$(aws s3 ls "$MODEL_DATA" 2>/dev/null | awk '{print $3; exit}')" || SIZE=""
  [[ "$SIZE" =~ ^[0-9]+$ ]] || { log "warning: cannot read the size of $MODEL_DATA"; SIZE=0; }
fi
MB=$((SIZE / 1000000))
clamp() { local v=$1; ((v < 120)) && v=120; ((v > 3600)) && v=3600; echo "$v"; }
[[ "$STARTUP_TIMEOUT" != auto ]] || STARTUP_TIMEOUT="$(clamp $((4 * COLD_START_S + MB / 20)))"
[[ "$DOWNLOAD_TIMEOUT" != auto ]] || DOWNLOAD_TIMEOUT="$(clamp $((60 + 2 * MB / 25)))"
log "model $MB MB: startup health check timeout ${STARTUP_TIMEOUT}s, download timeout ${DOWNLOAD_TIMEOUT}s"


SUFFIX="$(resource_suffix)"
RESOURCE="$NAME-$SUFFIX"
TAG="Key=flower-endpoint,Value=$NAME" # delete.sh finds resources by name prefix; tag for humans
ENVIRONMENT="\"MODEL_SERVER_TIMEOUT\":\"$SERVER_TIMEOUT\""
# unset, the container runs one worker per GPU (one on a CPU instance)
[[ $WORKERS == auto ]] || ENVIRONMENT="\"MODEL_SERVER_WORKERS\":\"$WORKERS\",$ENVIRONMENT"
# Asynchronous requests may be far over real-time's 6 MB; the container takes up to 100 MB.
[[ -z "$ASYNC_OUTPUT" ]] || ENVIRONMENT+=",\"SAGEMAKER_MAX_PAYLOAD_IN_MB\":\"100\""
CONTAINER="$(printf '{"Image":"%s","ModelDataUrl":"%s","Environment":{%s}}' "$IMAGE" \
  "$MODEL_DATA" "$ENVIRONMENT")"
VARIANT="$(printf '{"VariantName":"AllTraffic","ModelName":"%s","InstanceType":"%s",%s%s%s}' \
  "$RESOURCE" "$INSTANCE_TYPE" \
  "\"InitialInstanceCount\":$INSTANCE_COUNT,\"InitialVariantWeight\":1," \
  "\"ContainerStartupHealthCheckTimeoutInSeconds\":$STARTUP_TIMEOUT," \
  "\"ModelDataDownloadTimeoutInSeconds\":$DOWNLOAD_TIMEOUT")"
[[ "$AMI" == none ]] || VARIANT="${VARIANT%\}},\"InferenceAmiVersion\":\"$AMI\"}"
if [[ -n "$SERVERLESS_MB" ]]; then
  VARIANT="{\"VariantName\":\"AllTraffic\",\"ModelName\":\"$RESOURCE\",\"ServerlessConfig\":"
  VARIANT+="{\"MemorySizeInMB\":$SERVERLESS_MB,\"MaxConcurrency\":$MAX_CONCURRENCY}}"
fi
CONFIG_ARGS=()
if [[ -n "$ASYNC_OUTPUT" ]]; then
  OUTPUT_CONFIG="\"S3OutputPath\":\"$ASYNC_OUTPUT/output/\",\"S3FailurePath\":\"$ASYNC_OUTPUT/failure/\""
  if [[ -n "$SNS_SUCCESS$SNS_ERROR" ]]; then
    NOTIFY="${SNS_SUCCESS:+\"SuccessTopic\":\"$SNS_SUCCESS\"}"
    [[ -z "$SNS_ERROR" ]] || NOTIFY+="${NOTIFY:+,}\"ErrorTopic\":\"$SNS_ERROR\""
    OUTPUT_CONFIG+=",\"NotificationConfig\":{$NOTIFY}"
  fi
  CONFIG_ARGS+=(--async-inference-config "{\"OutputConfig\":{$OUTPUT_CONFIG},\"ClientConfig\":{\"MaxConcurrentInvocationsPerInstance\":$ASYNC_CONCURRENCY}}")
fi
if [[ -n "$CAPTURE" ]]; then
  CONFIG_ARGS+=(--data-capture-config "{\"EnableCapture\":true,\"InitialSamplingPercentage\":$CAPTURE_PERCENT,\"DestinationS3Uri\":\"$CAPTURE/\",\"CaptureOptions\":[{\"CaptureMode\":\"Input\"},{\"CaptureMode\":\"Output\"}],\"CaptureContentTypeHeader\":{\"JsonContentTypes\":[\"application/json\"]}}")
fi

if [[ -n "$SERVERLESS_MB" ]]; then
  log "model and endpoint config: $RESOURCE (serverless, $SERVERLESS_MB MB, concurrency $MAX_CONCURRENCY)"
else
  log "model and endpoint config: $RESOURCE (instance $INSTANCE_TYPE x$INSTANCE_COUNT, AMI $AMI)"
fi
run aws sagemaker create-model --model-name "$RESOURCE" --execution-role-arn "$ROLE" \
  --primary-container "$CONTAINER" --tags "$TAG" >/dev/null
run aws sagemaker create-endpoint-config --endpoint-config-name "$RESOURCE" \
  --production-variants "[$VARIANT]" ${CONFIG_ARGS[@]+"${CONFIG_ARGS[@]}"} --tags "$TAG" >/dev/null

UPDATE_ARGS=()
if [[ -n "$CANARY$LINEAR" ]]; then
  # Alarms that roll a guarded update back: 5xx errors, and model latency (microseconds).
  DIMENSIONS=("Name=EndpointName,Value=$NAME" "Name=VariantName,Value=AllTraffic")
  run aws cloudwatch put-metric-alarm --alarm-name "$NAME-5xx" --namespace AWS/SageMaker \
    --metric-name Invocation5XXErrors --dimensions "${DIMENSIONS[@]}" --statistic Sum \
    --period 60 --evaluation-periods 2 --threshold 1 \
    --comparison-operator GreaterThanOrEqualToThreshold --treat-missing-data notBreaching
  run aws cloudwatch put-metric-alarm --alarm-name "$NAME-latency" --namespace AWS/SageMaker \
    --metric-name ModelLatency --dimensions "${DIMENSIONS[@]}" --statistic Average \
    --period 60 --evaluation-periods 2 --threshold $((LATENCY_MS * 1000)) \
    --comparison-operator GreaterThanThreshold --treat-missing-data notBreaching
  if [[ -n "$CANARY" ]]; then
    ROUTING="{\"Type\":\"CANARY\",\"CanarySize\":{\"Type\":\"CAPACITY_PERCENT\",\"Value\":$CANARY},\"WaitIntervalInSeconds\":$BAKE}"
  else
    ROUTING="{\"Type\":\"LINEAR\",\"LinearStepSize\":{\"Type\":\"CAPACITY_PERCENT\",\"Value\":$LINEAR},\"WaitIntervalInSeconds\":$BAKE}"
  fi
  UPDATE_ARGS=(--deployment-config "{\"BlueGreenUpdatePolicy\":{\"TrafficRoutingConfiguration\":$ROUTING,\"TerminationWaitInSeconds\":$BAKE,\"MaximumExecutionTimeoutInSeconds\":$TIMEOUT},\"AutoRollbackConfiguration\":{\"Alarms\":[{\"AlarmName\":\"$NAME-5xx\"},{\"AlarmName\":\"$NAME-latency\"}]}}")
  [[ -n "$STATUS" ]] || log "note: guardrails apply to updates; this run creates the endpoint"
fi
if [[ -z "$STATUS" ]]; then
  log "creating endpoint $NAME"
  run aws sagemaker create-endpoint --endpoint-name "$NAME" --endpoint-config-name "$RESOURCE" \
    --tags "$TAG" >/dev/null
else
  log "updating endpoint $NAME to $RESOURCE (blue/green; the old fleet serves until the new one is healthy)"
  if ! run aws sagemaker update-endpoint --endpoint-name "$NAME" \
    --endpoint-config-name "$RESOURCE" ${UPDATE_ARGS[@]+"${UPDATE_ARGS[@]}"} \
    >/dev/null 2>"$WORK_DIR/update.err"; then
    die "update-endpoint failed for $NAME: $(last_line "$WORK_DIR/update.err")" \
      "(model and config $RESOURCE were created; endpoint/delete.sh removes them)"
  fi
  cat "$WORK_DIR/update.err" >&2 # warnings, or the command itself with --dry-run
fi
if ((DRY_RUN)); then echo "$NAME"; exit 0; fi

LOGS="/aws/sagemaker/Endpoints/$NAME"
endpoint_ready() {
  local info status config
  info="$(endpoint_field "$NAME" '[EndpointStatus,EndpointConfigName]')"
  read -r status config <<<"$info"
  POLL_STATUS="${status:-missing}"
  case "$status" in
    InService)
      [[ "$config" == "$RESOURCE" ]] && return 0
      # SageMaker rolls a failed update back to the old config and reports InService.
      die "update to $RESOURCE was rolled back: $(endpoint_field "$NAME" FailureReason);" \
        "logs: CloudWatch log group $LOGS (region $REGION)" ;;
    "") die "endpoint $NAME disappeared while waiting" ;;
    Failed)
      die "endpoint $NAME failed: $(endpoint_field "$NAME" FailureReason);" \
        "logs: CloudWatch log group $LOGS (region $REGION)" ;;
  esac
  return 1
}
poll_until "endpoint $NAME" "$TIMEOUT" "$POLL" endpoint_ready
log "endpoint $NAME is InService with config $RESOURCE"
echo "$NAME"
