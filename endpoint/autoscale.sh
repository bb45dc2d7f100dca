#!/usr/bin/env bash
# Registers target-tracking autoscaling for the flower classifier endpoint's AllTraffic
# variant on SageMakerVariantInvocationsPerInstance (idempotent: re-running updates it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--name $DEFAULT_ENDPOINT_NAME] [--min 1] [--max 4] [--target 100]
         [--scale-in-cooldown 300] [--scale-out-cooldown 60]
Scale endpoint NAME between --min and --max instances, aiming at --target invocations per
instance per minute. endpoint/delete.sh removes the scaling target. Honours AWS_REGION,
AWS_PROFILE and AWS_ENDPOINT_URL.
USAGE
}

NAME=$DEFAULT_ENDPOINT_NAME MIN=1 MAX=4 TARGET=100 SCALE_IN=300 SCALE_OUT=60
declare -A SWITCHES=()
set_option() {
  case "$1" in
    --name) NAME=$2 ;;
    --min) need_int "$1" "$2"; MIN=$2 ;;
    --max) need_int "$1" "$2"; MAX=$2 ;;
    --target) need_int "$1" "$2"; TARGET=$2 ;;
    --scale-in-cooldown) need_int "$1" "$2"; SCALE_IN=$2 ;;
    --scale-out-cooldown) need_int "$1" "$2"; SCALE_OUT=$2 ;;
    *) return 1 ;;
  esac
}
parse_options "$@"
check_endpoint_name "$NAME"
((MIN <= MAX)) || die "--min ($MIN) must not exceed --max ($MAX)"
check_credentials
[[ "$(endpoint_field "$NAME" EndpointStatus)" == InService ]] ||
  die "endpoint $NAME does not exist or is not InService; deploy it first"

RESOURCE_ID="endpoint/$NAME/variant/AllTraffic"
DIMENSION=sagemaker:variant:DesiredInstanceCount
aws application-autoscaling register-scalable-target --service-namespace sagemaker \
  --resource-id "$RESOURCE_ID" --scalable-dimension "$DIMENSION" \
  --min-capacity "$MIN" --max-capacity "$MAX" >/dev/null
aws application-autoscaling put-scaling-policy --service-namespace sagemaker \
  --policy-name "$NAME-invocations-per-instance" --policy-type TargetTrackingScaling \
  --resource-id "$RESOURCE_ID" --scalable-dimension "$DIMENSION" \
  --target-tracking-scaling-policy-configuration "$(printf '%s' \
    "{\"TargetValue\":$TARGET,\"PredefinedMetricSpecification\":" \
    "{\"PredefinedMetricType\":\"SageMakerVariantInvocationsPerInstance\"}," \
    "\"ScaleInCooldown\":$SCALE_IN,\"ScaleOutCooldown\":$SCALE_OUT}")" >/dev/null
log "autoscaling $RESOURCE_ID: $MIN-$MAX instances, target $TARGET invocations/instance/minute"
