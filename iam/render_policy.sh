#!/usr/bin/env bash
# Prints an IAM policy template from iam/ with its ${...} placeholders filled in for this
# account and region; used by create_role.sh and to hand iam/deployer-policy.json to an admin.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") TEMPLATE.json [--role-name NAME] [--bucket BUCKET] [--prefix PREFIX]
                         [--repository REPO] [--sns-topic ARN ...]
Fill \${PARTITION} \${ACCOUNT_ID} \${REGION} \${REPOSITORY} \${BUCKET} \${PREFIX} \${ROLE_NAME}
in TEMPLATE.json and print it. Defaults (lib/common.sh): --role-name $DEFAULT_ROLE_NAME,
--repository $DEFAULT_REPOSITORY (what build_and_push.sh pushes to),
--bucket sagemaker-\$REGION-\$ACCOUNT_ID, --prefix $DEFAULT_PREFIX.
--sns-topic ARN (repeatable) adds sns:Publish on exactly those topics: what SageMaker needs
with the execution role to send deploy.sh --async's --sns-success/--sns-error notifications.
Example: $(basename "$0") iam/deployer-policy.json > deployer-policy.rendered.json
USAGE
}

TEMPLATE="" ROLE_NAME=$DEFAULT_ROLE_NAME BUCKET="" PREFIX=$DEFAULT_PREFIX
REPOSITORY=$DEFAULT_REPOSITORY SNS_TOPICS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --role-name) need_arg "$1" "${2:-}"; ROLE_NAME=$2; shift 2 ;;
    --bucket) need_arg "$1" "${2:-}"; BUCKET=$2; shift 2 ;;
    --prefix) need_arg "$1" "${2:-}"; PREFIX=$2; shift 2 ;;
    --repository) need_arg "$1" "${2:-}"; REPOSITORY=$2; shift 2 ;;
    --sns-topic)
      need_arg "$1" "${2:-}"
      [[ "$2" =~ ^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$ ]] ||
        die "invalid SNS topic ARN '$2' (arn:aws:sns:REGION:ACCOUNT:TOPIC)"
      SNS_TOPICS+=("$2"); shift 2 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [[ -z "$TEMPLATE" ]] || die "only one TEMPLATE expected, got '$1' too"; TEMPLATE=$1; shift ;;
  esac
done
[[ -n "$TEMPLATE" ]] || { usage >&2; die "TEMPLATE is required"; }
[[ -f "$TEMPLATE" ]] || die "template '$TEMPLATE' not found"

PREFIX="${PREFIX#/}" PREFIX="${PREFIX%/}"
[[ "$ROLE_NAME" =~ ^[A-Za-z0-9+=,.@_-]{1,64}$ ]] || die "invalid role name '$ROLE_NAME'"
[[ "$REPOSITORY" =~ ^[a-z0-9][a-z0-9._/-]*$ ]] || die "invalid ECR repository name '$REPOSITORY'"
[[ -z "$BUCKET" || "$BUCKET" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] ||
  die "invalid S3 bucket name '$BUCKET'"
[[ "$PREFIX" =~ ^[A-Za-z0-9._/-]+$ ]] || die "invalid S3 prefix '$PREFIX' (letters, digits, . _ / -)"

check_credentials
BUCKET="${BUCKET:-$(default_bucket)}"

rendered="$(sed -e "s|\${PARTITION}|$PARTITION|g" -e "s|\${ACCOUNT_ID}|$ACCOUNT_ID|g" \
  -e "s|\${REGION}|$REGION|g" -e "s|\${REPOSITORY}|$REPOSITORY|g" -e "s|\${BUCKET}|$BUCKET|g" \
  -e "s|\${PREFIX}|$PREFIX|g" -e "s|\${ROLE_NAME}|$ROLE_NAME|g" "$TEMPLATE")"
if [[ "$rendered" =~ [$]\{[A-Za-z_]*\} ]]; then
  die "unfilled placeholder ${BASH_REMATCH[0]} in $TEMPLATE"
fi
if ((${#SNS_TOPICS[@]})); then
  rendered="$(printf '%s' "$rendered" | "${PYTHON:-python3}" -c '
import json, sys
policy = json.load(sys.stdin)
policy["Statement"].append({"Sid": "AsyncNotifications", "Effect": "Allow",
                            "Action": ["sns:Publish"], "Resource": sys.argv[1:]})
print(json.dumps(policy, indent=2))' "${SNS_TOPICS[@]}")" || die "could not add the SNS grant"
fi
echo "$rendered"
