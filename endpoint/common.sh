# Shared helpers sourced by the endpoint/ and iam/ scripts: errors, argument checks,
# region and credential lookup, endpoint status. Source it; it does nothing on its own.
# shellcheck shell=bash

die() { echo "error: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

# Scratch directory for the calling script, removed on exit.
WORK_DIR="$(mktemp -d)"
trap 'rm -rf "$WORK_DIR"' EXIT

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

# resolve_region: set and export REGION from AWS_REGION, AWS_DEFAULT_REGION or the profile.
resolve_region() {
  REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  [[ -n "$REGION" ]] || REGION="$(aws configure get region 2>/dev/null || true)"
  [[ -n "$REGION" ]] ||
    die "no AWS region: set AWS_REGION or a region for profile '${AWS_PROFILE:-default}'"
  export AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
}

# check_credentials: fail clearly without working credentials; set REGION, ACCOUNT_ID, PARTITION.
check_credentials() {
  command -v aws >/dev/null 2>&1 || die "the AWS CLI ('aws') is not on PATH (pip install awscli)"
  resolve_region
  local arn
  if ! arn="$(aws sts get-caller-identity --query Arn --output text 2>"$WORK_DIR/sts.err")"; then
    die "no working AWS credentials (aws sts get-caller-identity failed):" \
      "$(last_line "$WORK_DIR/sts.err")"
  fi
  # shellcheck disable=SC2034  # PARTITION and ACCOUNT_ID are used by the sourcing scripts
  IFS=: read -r _ PARTITION _ _ ACCOUNT_ID _ <<<"$arn"
  [[ "$ACCOUNT_ID" =~ ^[0-9]{12}$ ]] || die "unexpected caller identity ARN: $arn"
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

# check_endpoint_name NAME: SageMaker's name pattern, short enough for our -<timestamp> suffix.
check_endpoint_name() {
  [[ "$1" =~ ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$ && ${#1} -le 41 ]] ||
    die "--name '$1' must be 1-41 letters, digits or hyphens (not at either end)"
}

# Models and endpoint configs are named "<endpoint>-<YYYYmmdd-HHMMSS>-<4 hex>".
owned_name_regex() { echo "^$1-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}\$"; }
