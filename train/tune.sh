#!/usr/bin/env bash
# Hyperparameter tuning on SageMaker with this repo's image: learning rate, hidden units and
# epochs searched to maximise validation accuracy (a metric definition of the job); prints the
# best training job and its model artifact, the artifact's S3 URI last.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") --data DIR_OR_S3 [--name $DEFAULT_ENDPOINT_NAME] [--image IMAGE_URI]
         [--role ROLE_ARN] [--output S3_URI] [--max-jobs 10] [--parallel-jobs 2]
         [--learning-rate 0.0001:0.01] [--hidden-units 128:1024] [--epochs 3:10]
         [--hyperparameters k=v,...] [--instance-type ml.g4dn.xlarge] [--max-runtime 86400]
         [--strategy Bayesian] [--timeout 172800] [--poll-seconds 60] [--dry-run]
Start tuning job NAME-<MMDDHHMMSS>-<4 hex> (NAME cut to 16 characters: the API allows 32) and
wait for it. Each training job is what train/sagemaker_train.sh runs: the same channels
(--data: a folder synced to OUTPUT/data/NAME/, or an s3:// prefix with train/ and valid/),
image, role and metric definitions. The objective is validation:accuracy (the top-1 % the
training log prints after each epoch), maximised.
  --learning-rate MIN:MAX  continuous, logarithmic scale
  --hidden-units MIN:MAX   integer (the head's hidden layer)
  --epochs MIN:MAX         integer
  --hyperparameters        fixed ones for every job, e.g. arch=vgg16 (not the tuned three)
  --output                 default s3://sagemaker-REGION-ACCOUNT/$DEFAULT_PREFIX/tuning
Prints the best job's name and objective, then its model artifact's S3 URI as the last line
(what endpoint/deploy.sh --model-data takes). Honours AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL.
USAGE
}

NAME=$DEFAULT_ENDPOINT_NAME DATA="" IMAGE="" ROLE="" OUTPUT="" MAX_JOBS=10 PARALLEL=2
LR=0.0001:0.01 HIDDEN=128:1024 EPOCHS=3:10 HYPER="" INSTANCE_TYPE=ml.g4dn.xlarge
MAX_RUNTIME=86400 STRATEGY=Bayesian TIMEOUT=172800 POLL=60 DRY_RUN=0
declare -A SWITCHES=([--dry-run]=DRY_RUN)
set_option() {
  case "$1" in
    --max-jobs) need_int "$1" "$2"; MAX_JOBS=$2 ;;
    --parallel-jobs) need_int "$1" "$2"; PARALLEL=$2 ;;
    --learning-rate) LR=$2 ;;
    --hidden-units) HIDDEN=$2 ;;
    --epochs) EPOCHS=$2 ;;
    --strategy) STRATEGY=$2 ;;
    *) training_option "$1" "$2" ;;
  esac
}
parse_options "$@"
[[ -n "$DATA" ]] || die "--data is required (see --help)"
check_endpoint_name "$NAME"
check_training_data "$DATA"
[[ -z "$OUTPUT" ]] || check_s3_uri --output "$OUTPUT"
((PARALLEL <= MAX_JOBS)) || die "--parallel-jobs ($PARALLEL) must not exceed --max-jobs ($MAX_JOBS)"
case "$STRATEGY" in Bayesian | Random | Hyperband | Grid) ;;
  *) die "--strategy must be Bayesian, Random, Hyperband or Grid" ;; esac
check_instance_type

# range FLAG MIN:MAX KIND: check a range (KIND int or float, MIN < MAX, both > 0).
range() {
  local number='[0-9]+' lo hi
  [[ $3 == int ]] || number='[0-9]*\.?[0-9]+([eE]-?[0-9]+)?'
  [[ "$2" =~ ^($number):($number)$ ]] || die "$1 must be MIN:MAX, got '$2'"
  lo=${BASH_REMATCH[1]} hi=${2#*:}
  awk -v a="$lo" -v b="$hi" 'BEGIN {exit !(a > 0 && a < b)}' || die "$1 needs 0 < MIN < MAX, got '$2'"
}
range --learning-rate "$LR" float
range --hidden-units "$HIDDEN" int
range --epochs "$EPOCHS" int

make_work_dir
STATIC="$(hyperparameters_json "$HYPER")"
for tuned in learning_rate hidden_units epochs; do
  [[ "$STATIC" != *"\"$tuned\""* ]] || die "--hyperparameters must not set $tuned: it is tuned"
done

training_defaults tuning

JOB="${NAME:0:16}"
JOB="${JOB%-}-$(resource_suffix short)"
RANGES="{\"ContinuousParameterRanges\":[{\"Name\":\"learning_rate\",\"MinValue\":\"${LR%%:*}\",\"MaxValue\":\"${LR#*:}\",\"ScalingType\":\"Logarithmic\"}],"
RANGES+="\"IntegerParameterRanges\":[{\"Name\":\"hidden_units\",\"MinValue\":\"${HIDDEN%%:*}\",\"MaxValue\":\"${HIDDEN#*:}\",\"ScalingType\":\"Auto\"},"
RANGES+="{\"Name\":\"epochs\",\"MinValue\":\"${EPOCHS%%:*}\",\"MaxValue\":\"${EPOCHS#*:}\",\"ScalingType\":\"Auto\"}]}"
CONFIG="{\"Strategy\":\"$STRATEGY\",\"HyperParameterTuningJobObjective\":{\"Type\":\"Maximize\",\"MetricName\":\"validation:accuracy\"},"
CONFIG+="\"ResourceLimits\":{\"MaxNumberOfTrainingJobs\":$MAX_JOBS,\"MaxParallelTrainingJobs\":$PARALLEL},\"ParameterRanges\":$RANGES}"
DEFINITION="{\"StaticHyperParameters\":$STATIC,\"AlgorithmSpecification\":$(algorithm_specification "$IMAGE"),"
DEFINITION+="\"RoleArn\":\"$ROLE\",\"InputDataConfig\":$(input_channels "$CHANNELS"),"
DEFINITION+="\"OutputDataConfig\":{\"S3OutputPath\":\"$OUTPUT\"},"
DEFINITION+="\"ResourceConfig\":{\"InstanceType\":\"$INSTANCE_TYPE\",\"InstanceCount\":1,\"VolumeSizeInGB\":30},"
DEFINITION+="\"StoppingCondition\":{\"MaxRuntimeInSeconds\":$MAX_RUNTIME}}"
ARGS=(--hyper-parameter-tuning-job-name "$JOB" --hyper-parameter-tuning-job-config "$CONFIG"
  --training-job-definition "$DEFINITION" --tags "Key=flower-training,Value=$NAME")

dry_run_job "$JOB" aws sagemaker create-hyper-parameter-tuning-job "${ARGS[@]}"
log "starting tuning job $JOB: $MAX_JOBS jobs, $PARALLEL at a time, learning_rate $LR," \
  "hidden_units $HIDDEN, epochs $EPOCHS"
aws sagemaker create-hyper-parameter-tuning-job "${ARGS[@]}" >/dev/null

describe() { describe_job tuning "$JOB" "$1"; }
wait_for_job tuning "$JOB" "$TIMEOUT" "$POLL"
read -r BEST VALUE <<<"$(describe '[BestTrainingJob.TrainingJobName,BestTrainingJob.FinalHyperParameterTuningJobObjectiveMetric.Value]')"
[[ -n "$BEST" && "$BEST" != None ]] || die "tuning job $JOB finished without a best training job"
log "best training job: $BEST (validation:accuracy $VALUE)"
log "its hyperparameters: $(describe BestTrainingJob.TunedHyperParameters)"
echo "$OUTPUT/$BEST/output/model.tar.gz"
