#!/usr/bin/env bash
# Runs a SageMaker training job with this repo's image (`train`): uploads a local data folder as
# the train and valid channels, sets hyperparameters and metric definitions, waits, prints the
# model artifact's S3 URI last (what endpoint/deploy.sh --model-data takes).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --data DIR_OR_S3 [--name $DEFAULT_ENDPOINT_NAME] [--image IMAGE_URI]
         [--role ROLE_ARN] [--output S3_URI] [--hyperparameters k=v,...]
         [--instance-type ml.g4dn.xlarge] [--volume-gb 30] [--max-runtime 86400]
         [--spot [--checkpoint-s3 S3_URI] [--max-wait SECONDS]] [--wait]
         [--timeout 86400] [--poll-seconds 30] [--dry-run]
Start training job NAME-<YYYYmmdd-HHMMSS>-<4 hex> with the image's 'train' entrypoint.
  --data      a folder with train/<class>/*.jpg and valid/<class>/*.jpg (+ cat_to_name.json),
              synced to OUTPUT/data/NAME/ (only new or changed files are sent; files removed
              locally stay in S3: use a new --name for a new data set), or an s3://
              prefix that holds train/ and valid/, used as it is
  --output    S3 prefix of the job's outputs (default
              s3://sagemaker-REGION-ACCOUNT/$DEFAULT_PREFIX/training); the model lands in
              OUTPUT/<job>/output/model.tar.gz
  --image     default: the image tagged latest in ECR repository $DEFAULT_REPOSITORY
  --role      default: role $DEFAULT_ROLE_NAME of this account
  --hyperparameters  e.g. arch=vgg16,epochs=5,learning_rate=0.001,hidden_units=512 (the
              container's names; unknown ones are refused before the job starts)
  --spot      managed spot training; checkpoints sync between /opt/ml/checkpoints and
              --checkpoint-s3 (default OUTPUT/checkpoints/NAME) so an interrupted job resumes
  --max-wait  spot: the most seconds to wait for capacity plus training (default 2x runtime)
  --wait      wait for the job, showing its status, and print the model artifact's URI last;
              without it the job name is printed last
  --dry-run   upload nothing, start nothing: print the create-training-job call
Metrics (CloudWatch and the console) come from the training log: train:loss,
validation:loss, validation:accuracy (top-1 %), validation:top5 (top-5 %).
Honours AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL; PYTHON checks the hyperparameters.
USAGE
}

NAME=$DEFAULT_ENDPOINT_NAME DATA="" IMAGE="" ROLE="" OUTPUT="" HYPER="" INSTANCE_TYPE=ml.g4dn.xlarge
VOLUME=30 MAX_RUNTIME=86400 SPOT=0 CHECKPOINT_S3="" MAX_WAIT="" WAIT=0 TIMEOUT=86400 POLL=30
DRY_RUN=0
declare -A SWITCHES=([--spot]=SPOT [--wait]=WAIT [--dry-run]=DRY_RUN)
set_option() {
  case "$1" in
    --volume-gb) need_int "$1" "$2"; VOLUME=$2 ;;
    --checkpoint-s3) CHECKPOINT_S3=${2%/} ;;
    --max-wait) need_int "$1" "$2"; MAX_WAIT=$2 ;;
    *) training_option "$1" "$2" ;;
  esac
}
parse_options "$@"
[[ -n "$DATA" ]] || die "--data is required (see --help)"
check_endpoint_name "$NAME"
check_instance_type
check_training_data "$DATA"
[[ -z "$OUTPUT" ]] || check_s3_uri --output "$OUTPUT"
[[ -z "$CHECKPOINT_S3" ]] || check_s3_uri --checkpoint-s3 "$CHECKPOINT_S3"
((SPOT)) || [[ -z "$CHECKPOINT_S3$MAX_WAIT" ]] || die "--checkpoint-s3 and --max-wait go with --spot"
MAX_WAIT=${MAX_WAIT:-$((2 * MAX_RUNTIME))}
((!SPOT || MAX_WAIT >= MAX_RUNTIME)) || die "--max-wait must be at least --max-runtime"

make_work_dir
HYPER_JSON="$(hyperparameters_json "$HYPER")"

training_defaults training

JOB="$NAME-$(resource_suffix)"
ARGS=(--training-job-name "$JOB" --role-arn "$ROLE"
  --algorithm-specification "$(algorithm_specification "$IMAGE")"
  --hyper-parameters "$HYPER_JSON"
  --input-data-config "$(input_channels "$CHANNELS")"
  --output-data-config "{\"S3OutputPath\":\"$OUTPUT\"}"
  --resource-config "{\"InstanceType\":\"$INSTANCE_TYPE\",\"InstanceCount\":1,\"VolumeSizeInGB\":$VOLUME}"
  --tags "Key=flower-training,Value=$NAME")
if ((SPOT)); then
  CHECKPOINT_S3="${CHECKPOINT_S3:-$OUTPUT/checkpoints/$NAME}"
  ARGS+=(--enable-managed-spot-training
    --checkpoint-config "{\"S3Uri\":\"$CHECKPOINT_S3/\",\"LocalPath\":\"/opt/ml/checkpoints\"}"
    --stopping-condition "{\"MaxRuntimeInSeconds\":$MAX_RUNTIME,\"MaxWaitTimeInSeconds\":$MAX_WAIT}")
else
  ARGS+=(--stopping-condition "{\"MaxRuntimeInSeconds\":$MAX_RUNTIME}")
fi

dry_run_job "$JOB" aws sagemaker create-training-job "${ARGS[@]}"
log "starting training job $JOB ($INSTANCE_TYPE$( ((SPOT)) && echo ", spot"))"
aws sagemaker create-training-job "${ARGS[@]}" >/dev/null
if ((!WAIT)); then
  log "started; follow it with: aws sagemaker describe-training-job --training-job-name $JOB"
  echo "$JOB"
  exit 0
fi

wait_for_job training "$JOB" "$TIMEOUT" "$POLL"
aws sagemaker describe-training-job --training-job-name "$JOB" \
  --query 'FinalMetricDataList[].[MetricName,Value]' --output text >&2 || true
log "training job $JOB completed"
aws sagemaker describe-training-job --training-job-name "$JOB" \
  --query ModelArtifacts.S3ModelArtifacts --output text
