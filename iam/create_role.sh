#!/usr/bin/env bash
# Creates (or reuses and updates) the SageMaker execution role for the flower classifier:
# trust policy from iam/trust-policy.json, inline least-privilege policy; prints the role ARN last.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

POLICY_NAME=flower-classifier-execution
usage() {
  cat <<USAGE
Usage: $(basename "$0") [ROLE_NAME] [--bucket BUCKET] [--prefix PREFIX] [--repository REPO]
                      [--sns-topic ARN ...]
Create the SageMaker execution role ROLE_NAME (default $DEFAULT_ROLE_NAME), or
update an existing one, and print its ARN as the last line. The role may pull from ECR
repository REPO (default $DEFAULT_REPOSITORY, where build_and_push.sh pushes), read and write
s3://BUCKET/PREFIX/ (defaults sagemaker-\$REGION-\$ACCOUNT_ID and $DEFAULT_PREFIX) and write
CloudWatch logs and metrics. Pass the same --repository as build_and_push.sh's IMAGE_NAME.
--sns-topic ARN (repeatable) lets SageMaker publish to that topic: give it for each topic that
deploy.sh --async --sns-success/--sns-error will name. Honours AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL.
USAGE
}

ROLE_NAME=$DEFAULT_ROLE_NAME
render_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --bucket | --prefix | --repository | --sns-topic) need_arg "$1" "${2:-}"; render_args+=("$1" "$2"); shift 2 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) ROLE_NAME=$1; shift ;;
  esac
done
[[ "$ROLE_NAME" =~ ^[A-Za-z0-9+=,.@_-]{1,64}$ ]] || die "invalid role name '$ROLE_NAME'"

check_credentials
"$HERE/render_policy.sh" "$HERE/execution-role-policy.json" --role-name "$ROLE_NAME" \
  "${render_args[@]}" >"$WORK_DIR/policy.json"
"$HERE/render_policy.sh" "$HERE/trust-policy.json" >"$WORK_DIR/trust.json"

if aws iam get-role --role-name "$ROLE_NAME" >/dev/null 2>"$WORK_DIR/get-role.err"; then
  log "role $ROLE_NAME exists; updating its trust policy"
  aws iam update-assume-role-policy --role-name "$ROLE_NAME" \
    --policy-document "file://$WORK_DIR/trust.json"
elif grep -q NoSuchEntity "$WORK_DIR/get-role.err"; then
  log "creating role $ROLE_NAME"
  aws iam create-role --role-name "$ROLE_NAME" \
    --assume-role-policy-document "file://$WORK_DIR/trust.json" \
    --description "SageMaker execution role for the flower classifier endpoint" \
    --tags Key=project,Value=flower-classifier >/dev/null
else
  die "cannot read role $ROLE_NAME: $(last_line "$WORK_DIR/get-role.err")"
fi

log "putting inline policy $POLICY_NAME"
aws iam put-role-policy --role-name "$ROLE_NAME" --policy-name "$POLICY_NAME" \
  --policy-document "file://$WORK_DIR/policy.json"
aws iam get-role --role-name "$ROLE_NAME" --query Role.Arn --output text
