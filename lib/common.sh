# The one shell library of the repo's scripts (build_and_push.sh, iam/, endpoint/, train/,
# local_test/): shared defaults, errors, argument checks, region/account lookup, polling, Docker.
# shellcheck shell=bash
# Source it; it does nothing on its own (no commands run at source time).

# ---- Shared defaults: every script and README command takes its names from here. ----------
# shellcheck disable=SC2034  # the defaults are read by the scripts that source this file
DEFAULT_REPOSITORY=flower-classifier            # ECR repository build_and_push.sh pushes to
DEFAULT_ROLE_NAME=SageMakerFlowerClassifierRole # execution role iam/create_role.sh makes
DEFAULT_PREFIX=flower-classifier                # S3 key prefix of every artifact and job
DEFAULT_ENDPOINT_NAME=flowers                   # endpoint deploy.sh creates
# The bucket is SageMaker's default, sagemaker-REGION-ACCOUNT_ID (see default_bucket); the
# region is the AWS CLI's: AWS_REGION, AWS_DEFAULT_REGION, then the profile (resolve_region).

die() { echo "error: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

# make_work_dir: set WORK_DIR to a scratch directory removed when the script exits.
make_work_dir() {
  [[ -z "${WORK_DIR:-}" ]] || return 0
  WORK_DIR="$(mktemp -d)"
  trap 'rm -rf "$WORK_DIR"' EXIT
}

# last_line FILE: the last non-empty line of FILE (the useful part of an AWS CLI error).
last_line() { grep -v '^[[:space:]]*$' "$1" | tail -n 1; }

# need_arg FLAG VALUE: fail unless option FLAG was given a value.
need_arg() {
  [[ -n "${2:-}" && "${2:0:2}" != "--" ]] || die "$1 needs a value (see --help)"
}

# need_int FLAG VALUE: fail unless VALUE is a positive integer.
need_int() {
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

# parse_options "$@": the scripts' one option loop. -h/--help prints the script's usage; a flag
# in the script's SWITCHES (FLAG -> variable) sets its variable to 1; any other --option needs a
# value, handed to the script's set_option FLAG VALUE, which sets its variable and returns 1 for
# an option it does not know.
parse_options() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --*)
        if [[ -n "${SWITCHES[$1]:-}" ]]; then
          printf -v "${SWITCHES[$1]}" 1
          shift
          continue
        fi
        need_arg "$1" "${2:-}"
        set_option "$1" "$2" || die "unknown option '$1' (see --help)"
        shift 2 ;;
      *) die "unexpected argument '$1' (see --help)" ;;
    esac
  done
}

# wait_option FLAG VALUE: --timeout and --poll-seconds (TIMEOUT and POLL, seconds), for the
# set_option of a script that waits; returns 1 for any other FLAG.
wait_option() {
  # shellcheck disable=SC2034  # TIMEOUT and POLL are read by the scripts that source this
  case "$1" in
    --timeout) need_int "$1" "$2"; TIMEOUT=$2 ;;
    --poll-seconds) need_int "$1" "$2"; POLL=$2 ;;
    *) return 1 ;;
  esac
}

# resolve_region: set and export REGION from AWS_REGION, AWS_DEFAULT_REGION or the profile.
resolve_region() {
  REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  [[ -n "$REGION" ]] || REGION="$(aws configure get region 2>/dev/null || true)"
  [[ -n "$REGION" ]] ||
    die "no AWS region: set AWS_REGION or a region for profile '${AWS_PROFILE:-default}'"
  export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
}

# check_credentials: fail clearly without the AWS CLI or working credentials; set REGION,
# ACCOUNT_ID and PARTITION. Makes WORK_DIR.
check_credentials() {
  command -v aws >/dev/null 2>&1 ||
    die "AWS CLI not found on PATH; install it (https://aws.amazon.com/cli/)"
  make_work_dir
  resolve_region
  local arn
  if ! arn="$(aws sts get-caller-identity --query Arn --output text 2>"$WORK_DIR/sts.err")"; then
    die "no usable AWS credentials (aws sts get-caller-identity failed):" \
      "$(last_line "$WORK_DIR/sts.err"); run 'aws configure' or set AWS_PROFILE"
  fi
  # shellcheck disable=SC2034  # PARTITION and ACCOUNT_ID are used by the sourcing scripts
  IFS=: read -r _ PARTITION _ _ ACCOUNT_ID _ <<<"$arn"
  [[ "$ACCOUNT_ID" =~ ^[0-9]{12}$ ]] || die "unexpected caller identity ARN: $arn"
}

# default_bucket: SageMaker's default bucket for this account and region (after check_credentials).
default_bucket() { echo "sagemaker-$REGION-$ACCOUNT_ID"; }

# ecr_registry: the account's ECR registry host (after check_credentials); ECR_REGISTRY overrides.
ecr_registry() {
  local domain=amazonaws.com
  [[ "$REGION" != cn-* ]] || domain=amazonaws.com.cn
  echo "${ECR_REGISTRY:-$ACCOUNT_ID.dkr.ecr.$REGION.$domain}"
}

# default_image [TAG]: the image tagged TAG (default latest; latest-cpu is the CPU variant) in
# $DEFAULT_REPOSITORY, what build_and_push.sh pushes, pinned by digest, so a later push does
# not change what a model or job runs.
default_image() {
  local digest tag=${1:-latest} how=./build_and_push.sh
  [[ "$tag" != *-cpu ]] || how="./build_and_push.sh --cpu"
  if ! digest="$(aws ecr describe-images --repository-name "$DEFAULT_REPOSITORY" \
    --image-ids "imageTag=$tag" --query 'imageDetails[0].imageDigest' --output text \
    2>"$WORK_DIR/image.err")"; then
    die "no image tagged $tag in ECR repository $DEFAULT_REPOSITORY" \
      "($(last_line "$WORK_DIR/image.err")); push one with $how or pass --image"
  fi
  echo "$(ecr_registry)/$DEFAULT_REPOSITORY@$digest"
}

# default_role: the ARN of $DEFAULT_ROLE_NAME in this account (after check_credentials).
default_role() { echo "arn:$PARTITION:iam::$ACCOUNT_ID:role/$DEFAULT_ROLE_NAME"; }

# check_image_uri URI, check_role_arn ARN: fail unless they look right.
check_image_uri() {
  [[ "$1" =~ ^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$ ]] ||
    die "--image must be an image URI like ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG"
}
check_role_arn() {
  [[ "$1" =~ ^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$ ]] ||
    die "--role must be an IAM role ARN (see iam/create_role.sh), got '$1'"
}

# check_role ARN: fail if the role does not exist; warn if it cannot be read.
check_role() {
  local name="${1##*/}"
  if aws iam get-role --role-name "$name" >/dev/null 2>"$WORK_DIR/role.err"; then :
  elif grep -q NoSuchEntity "$WORK_DIR/role.err"; then
    die "role '$1' does not exist; create it with iam/create_role.sh"
  else
    log "warning: cannot check role $name ($(last_line "$WORK_DIR/role.err")); continuing"
  fi
}

# check_s3_uri FLAG URI: fail unless URI is s3://BUCKET[/KEY]; sets S3_BUCKET and S3_KEY.
check_s3_uri() {
  [[ "$2" =~ ^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/([^\"\\]*))?$ ]] ||
    die "$1 must look like s3://BUCKET/PREFIX, got '$2'"
  S3_BUCKET="${BASH_REMATCH[1]}" S3_KEY="${BASH_REMATCH[3]}"
}

# poll_until WHAT TIMEOUT SECONDS FUNC [ARGS...]: call FUNC every SECONDS until it returns 0.
# FUNC sets POLL_STATUS (shown as progress) and returns 1 to keep waiting; it dies on failure.
poll_until() {
  local what=$1 timeout=$2 every=$3 elapsed=0
  shift 3
  local finished
  while :; do
    POLL_STATUS="" finished=0
    "$@" && finished=1
    log "[$(printf '%5d' "$elapsed")s] $what: ${POLL_STATUS:-waiting}"
    ((!finished)) || return 0
    ((elapsed < timeout)) || die "$what not done after ${timeout}s (still ${POLL_STATUS:-waiting})"
    sleep "$every"
    elapsed=$((elapsed + every))
  done
}

# ---- SageMaker resources ----------------------------------------------------------------

# wait_for_job KIND NAME TIMEOUT SECONDS: poll a SageMaker job (KIND: training, transform or
# tuning) every SECONDS until it completes; a Failed or Stopped job dies with its reason.
wait_for_job() {
  poll_until "$1 job $2" "$3" "$4" job_completed "$1" "$2"
}

# describe_job KIND NAME QUERY: a field of describe-training-job (transform, tuning), as text.
describe_job() {
  case "$1" in
    training) aws sagemaker describe-training-job --training-job-name "$2" \
      --query "$3" --output text ;;
    transform) aws sagemaker describe-transform-job --transform-job-name "$2" \
      --query "$3" --output text ;;
    tuning) aws sagemaker describe-hyper-parameter-tuning-job \
      --hyper-parameter-tuning-job-name "$2" --query "$3" --output text ;;
    *) die "describe_job: unknown job kind '$1'" ;;
  esac
}

# job_completed KIND NAME: poll_until's FUNC for wait_for_job (sets POLL_STATUS).
job_completed() {
  local kind=$1 name=$2 status detail completed running failed logs
  case "$kind" in
    training)
      read -r status detail <<<"$(describe_job training "$name" \
        '[TrainingJobStatus,SecondaryStatus]')"
      POLL_STATUS="$status ($detail)" logs=TrainingJobs ;;
    transform)
      status="$(describe_job transform "$name" TransformJobStatus)"
      POLL_STATUS="$status" logs=TransformJobs ;;
    tuning)
      status="$(describe_job tuning "$name" HyperParameterTuningJobStatus)"
      read -r completed running failed <<<"$(describe_job tuning "$name" \
        '[TrainingJobStatusCounters.Completed,TrainingJobStatusCounters.InProgress,TrainingJobStatusCounters.NonRetryableError]')"
      POLL_STATUS="$status ($completed completed, $running running, $failed failed)" logs="" ;;
    *) die "job_completed: unknown job kind '$kind'" ;;
  esac
  case "$status" in
    Completed) return 0 ;;
    Failed | Stopped)
      if [[ -n "$logs" ]]; then
        die "$kind job $name $status: $(describe_job "$kind" "$name" FailureReason);" \
          "logs: CloudWatch log group /aws/sagemaker/$logs, stream $name/..."
      fi
      die "$kind job $name $status: $(describe_job "$kind" "$name" FailureReason)" ;;
  esac
  return 1
}

# endpoint_field NAME QUERY: print a field of describe-endpoint; print nothing if NAME is absent.
endpoint_field() {
  local out
  if out="$(aws sagemaker describe-endpoint --endpoint-name "$1" --query "$2" --output text \
    2>"$WORK_DIR/describe.err")"; then
    echo "$out"
  elif ! grep -q "Could not find endpoint" "$WORK_DIR/describe.err"; then
    die "describe-endpoint $1 failed: $(last_line "$WORK_DIR/describe.err")"
  fi
}

# check_instance_type [EXAMPLE]: fail unless INSTANCE_TYPE looks like a SageMaker instance type
# (the message's example: EXAMPLE, default ml.g4dn.xlarge).
check_instance_type() {
  [[ "$INSTANCE_TYPE" =~ ^ml\.[a-z0-9]+\.[a-z0-9]+$ ]] ||
    die "--instance-type must look like ${1:-ml.g4dn.xlarge}, got '$INSTANCE_TYPE'"
}

# check_endpoint_name NAME: SageMaker's name pattern, short enough for our -<timestamp> suffix.
check_endpoint_name() {
  [[ "$1" =~ ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$ && ${#1} -le 41 ]] ||
    die "--name '$1' must be 1-41 letters, digits or hyphens (not at either end)"
}

# resource_suffix [short]: "<YYYYmmdd-HHMMSS>-<4 hex>", the suffix of every model, config and
# job name; short: "<mmddHHMMSS>-<4 hex>" for tuning jobs, whose names have 32 characters.
resource_suffix() {
  local format=%Y%m%d-%H%M%S
  [[ "${1:-}" != short ]] || format=%m%d%H%M%S
  echo "$(date -u +"$format")-$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
}

# Models and endpoint configs are named "<endpoint>-<YYYYmmdd-HHMMSS>-<4 hex>".
owned_name_regex() { echo "^$1-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}\$"; }

# content_type_of_names: file names on stdin (one a line) -> the one content type a transform job
# sends: image/jpeg or image/png when all agree, else application/x-image (the container
# sniffs). The table is the client's, container/flower_classifier/serving/file_types.py.
content_type_of_names() {
  "${PYTHON:-python3}" "$(dirname "${BASH_SOURCE[0]}")/../container/flower_classifier/serving/file_types.py"
}

# ---- Training jobs (train/) ---------------------------------------------------------------

# Metric definitions: regexes over the line container/flower_classifier/training/trainer.py prints after
# each epoch, "epoch 3/10: train loss 0.4211, validation loss 0.3120, top-1 91.2%, top-5 98.9%".
# shellcheck disable=SC2034  # read by train/sagemaker_train.sh and train/tune.sh
TRAINING_METRICS='[{"Name":"train:loss","Regex":"epoch [0-9]+/[0-9]+: train loss ([0-9.]+)"},{"Name":"validation:loss","Regex":"validation loss ([0-9.]+)"},{"Name":"validation:accuracy","Regex":"top-1 ([0-9.]+)%"},{"Name":"validation:top5","Regex":"top-5 ([0-9.]+)%"}]'

# algorithm_specification IMAGE: the image's `train` in File mode, with TRAINING_METRICS.
algorithm_specification() {
  echo "{\"TrainingImage\":\"$1\",\"TrainingInputMode\":\"File\",\"MetricDefinitions\":$TRAINING_METRICS}"
}

# input_channels S3_PREFIX: the train and valid channels under S3_PREFIX, as InputDataConfig.
input_channels() {
  local name out=""
  for name in train valid; do
    out+="${out:+,}{\"ChannelName\":\"$name\",\"DataSource\":{\"S3DataSource\":"
    out+="{\"S3DataType\":\"S3Prefix\",\"S3Uri\":\"$1/$name/\","
    out+="\"S3DataDistributionType\":\"FullyReplicated\"}}}"
  done
  echo "[$out]"
}

# hyperparameters_json K=V,...: a JSON object of strings; names are checked against the
# container's own (flower_classifier.training.sagemaker) before any job starts.
hyperparameters_json() {
  PYTHONPATH="$(dirname "${BASH_SOURCE[0]}")/../container${PYTHONPATH:+:$PYTHONPATH}" \
    "${PYTHON:-python3}" - "$1" <<'PY'
import json, re, sys
from flower_classifier.training.sagemaker import ALLOWED, FLAGS
values = {}
for pair in (p for p in sys.argv[1].split(",") if p):
    key, sep, value = pair.partition("=")
    if not sep or not re.fullmatch(r"[a-z_]+", key) or not value:
        sys.exit(f"error: --hyperparameters wants k=v,k=v; got {pair!r}")
    if key not in ALLOWED + FLAGS:
        sys.exit(f"error: unknown hyperparameter {key!r}; accepted: {', '.join(ALLOWED + FLAGS)}")
    values[key] = value
print(json.dumps(values))
PY
}

# check_training_data DATA: an s3:// prefix, or a folder with train/ and valid/ class folders.
check_training_data() {
  if [[ "$1" == s3://* ]]; then
    check_s3_uri --data "$1"
  else
    [[ -d "$1/train" && -d "$1/valid" ]] ||
      die "--data '$1' must hold train/<class>/ and valid/<class>/ image folders"
  fi
}

# training_option FLAG VALUE: the options train/sagemaker_train.sh and train/tune.sh share, for
# their set_option; returns 1 for any other FLAG.
training_option() {
  # shellcheck disable=SC2034  # the variables are read by the scripts that source this
  case "$1" in
    --name) NAME=$2 ;;
    --data) DATA=$2 ;;
    --image) check_image_uri "$2"; IMAGE=$2 ;;
    --role) check_role_arn "$2"; ROLE=$2 ;;
    --output) OUTPUT=${2%/} ;;
    --hyperparameters) HYPER=$2 ;;
    --instance-type) INSTANCE_TYPE=$2 ;;
    --max-runtime) need_int "$1" "$2"; MAX_RUNTIME=$2 ;;
    *) wait_option "$1" "$2" ;;
  esac
}

# training_defaults KIND: after check_credentials's AWS checks, ROLE and IMAGE default to this
# account's and are checked, OUTPUT defaults to s3://BUCKET/$DEFAULT_PREFIX/KIND; sets CHANNELS,
# the S3 prefix of the train and valid channels (training_channels: DATA synced to
# OUTPUT/data/NAME unless it is an s3:// prefix).
# shellcheck disable=SC2153  # NAME, DATA and DRY_RUN are the calling script's
training_defaults() {
  check_credentials
  ROLE="${ROLE:-$(default_role)}"
  check_role "$ROLE"
  IMAGE="${IMAGE:-$(default_image)}"
  OUTPUT="${OUTPUT:-s3://$(default_bucket)/$DEFAULT_PREFIX/$1}"
  check_s3_uri --output "$OUTPUT"
  # shellcheck disable=SC2034  # read by train/sagemaker_train.sh and train/tune.sh
  CHANNELS="$(training_channels "$DATA" "$OUTPUT/data/$NAME" "$DRY_RUN")"
}

# dry_run_job NAME COMMAND...: with DRY_RUN, print COMMAND (shell-quoted) and then the job's
# NAME, and exit; without it, return.
dry_run_job() {
  ((DRY_RUN)) || return 0
  local name=$1
  shift
  printf '%q ' "$@" >&2
  echo >&2
  echo "$name"
  exit 0
}

# training_channels DATA S3_PREFIX DRY_RUN: print the S3 prefix holding train/ and valid/. An
# s3:// DATA is used as it is; a folder is synced to S3_PREFIX (only new or changed files),
# with its cat_to_name.json as train/cat_to_name.json, where the container looks for it.
training_channels() {
  local data=$1 prefix=$2 dry_run=$3 channel
  if [[ "$data" == s3://* ]]; then echo "${data%/}"; return 0; fi
  check_s3_uri --output "$prefix"
  aws s3api head-bucket --bucket "$S3_BUCKET" >/dev/null 2>"$WORK_DIR/head.err" ||
    die "bucket '$S3_BUCKET' is missing or not accessible ($(last_line "$WORK_DIR/head.err"))"
  for channel in train valid; do
    if ((dry_run)); then
      log "would sync $data/$channel to $prefix/$channel/"
    else
      log "syncing $data/$channel to $prefix/$channel/"
      aws s3 sync --only-show-errors "$data/$channel" "$prefix/$channel" >&2
    fi
  done
  if [[ -f "$data/cat_to_name.json" ]] && ((!dry_run)); then
    aws s3 cp --only-show-errors "$data/cat_to_name.json" "$prefix/train/cat_to_name.json" >&2
  fi
  echo "$prefix"
}

# ---- Docker (local_test/) ----------------------------------------------------------------

# require_docker: fail with a clear message unless the docker CLI and its engine answer.
require_docker() {
  command -v docker >/dev/null 2>&1 || die "docker not found on PATH; install Docker"
  docker info >/dev/null 2>&1 || die "cannot reach the Docker engine; is dockerd running?"
}

# local_run_args "$@": the arguments of the local_test/ scripts that run the image, [--help]
# [IMAGE]: sets image (default $DEFAULT_REPOSITORY:latest) and test_dir, the folder mounted at
# /opt/ml (TEST_DIR, default local_test/test_dir); then checks the Docker engine.
local_run_args() {
  case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
  esac
  # shellcheck disable=SC2034  # test_dir and image are read by the scripts that source this
  test_dir=$(cd "${TEST_DIR:-$(dirname "${BASH_SOURCE[0]}")/../local_test/test_dir}" && pwd)
  # shellcheck disable=SC2034
  image=${1:-$DEFAULT_REPOSITORY:latest}
  require_docker
}

# local_image [IMAGE]: makes $image ready to run, after docker_gpus (and local_run_args). With no
# IMAGE argument the default image is built from this checkout every time, so it never runs code
# older than the checkout (Docker's layer cache makes that quick when nothing changed); a named
# IMAGE runs as it is and is built only if missing. The CPU variant unless GPUS is set; extra
# 'docker build' arguments from $BUILD_ARGS.
local_image() {
  local variant=cpu build_args
  [[ ${#GPUS[@]} -eq 0 ]] || variant=gpu
  if (($#)); then
    ! docker image inspect "$image" >/dev/null 2>&1 || return 0
    log "image $image not found locally; building it ($variant variant) ..."
  else
    log "building $image from this checkout ($variant variant; quick when nothing changed) ..."
  fi
  read -r -a build_args <<<"${BUILD_ARGS:-}"
  docker build --build-arg "VARIANT=$variant" "${build_args[@]}" -t "$image" \
    "$(dirname "${BASH_SOURCE[0]}")/.." || die "docker build of $image failed (output above)"
}

# docker_gpus: sets GPUS to (--gpus all) when Docker has an NVIDIA runtime, else to ().
docker_gpus() {
  # shellcheck disable=SC2034  # GPUS is read by the scripts that source this
  GPUS=()
  if docker info --format '{{json .Runtimes}}' | grep -q nvidia; then
    GPUS=(--gpus all)
  fi
}
