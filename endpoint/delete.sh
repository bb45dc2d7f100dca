#!/usr/bin/env bash
# Deletes a flower classifier endpoint with all its endpoint configs and models (named
# NAME-<timestamp>-<rand> by deploy.sh), its autoscaling target and rollback alarms, and waits.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$HERE/../lib/common.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--name $DEFAULT_ENDPOINT_NAME] [--timeout 900] [--poll-seconds 10]
Delete endpoint NAME, its autoscaling target, its rollback alarms NAME-5xx and NAME-latency,
every endpoint config and model deploy.sh made for it, and wait until the endpoint is gone. Succeeds if there is nothing to delete.
Honours AWS_REGION, AWS_PROFILE and AWS_ENDPOINT_URL.
USAGE
}

NAME=$DEFAULT_ENDPOINT_NAME TIMEOUT=900 POLL=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --name) need_arg "$1" "${2:-}"; NAME=$2; shift 2 ;;
    --timeout) need_arg "$1" "${2:-}"; need_int "$1" "$2"; TIMEOUT=$2; shift 2 ;;
    --poll-seconds) need_arg "$1" "${2:-}"; need_int "$1" "$2"; POLL=$2; shift 2 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
check_endpoint_name "$NAME"
check_credentials

OWNED="$(owned_name_regex "$NAME")"
CONFIGS=() MODELS=()
CURRENT="$(endpoint_field "$NAME" EndpointConfigName)"
[[ -z "$CURRENT" ]] || CONFIGS+=("$CURRENT")
for c in $(aws sagemaker list-endpoint-configs --name-contains "$NAME-" \
  --query 'EndpointConfigs[].EndpointConfigName' --output text); do
  if [[ "$c" =~ $OWNED && "$c" != "$CURRENT" ]]; then CONFIGS+=("$c"); fi
done
for m in $(aws sagemaker list-models --name-contains "$NAME-" \
  --query 'Models[].ModelName' --output text); do
  if [[ "$m" =~ $OWNED ]]; then MODELS+=("$m"); fi
done

RESOURCE_ID="endpoint/$NAME/variant/AllTraffic"
if [[ -n "$(aws application-autoscaling describe-scalable-targets --service-namespace sagemaker \
  --resource-ids "$RESOURCE_ID" --query 'ScalableTargets[].ResourceId' --output text)" ]]; then
  log "deregistering autoscaling target $RESOURCE_ID"
  aws application-autoscaling deregister-scalable-target --service-namespace sagemaker \
    --resource-id "$RESOURCE_ID" --scalable-dimension sagemaker:variant:DesiredInstanceCount
fi

# The rollback alarms deploy.sh --canary/--linear made.
read -r -a ALARMS <<<"$(aws cloudwatch describe-alarms --alarm-names "$NAME-5xx" "$NAME-latency" \
  --query 'MetricAlarms[].AlarmName' --output text)"
if [[ ${#ALARMS[@]} -gt 0 && "${ALARMS[0]}" != None ]]; then
  log "deleting alarms ${ALARMS[*]}"
  aws cloudwatch delete-alarms --alarm-names "${ALARMS[@]}"
fi

if [[ -n "$CURRENT" ]]; then
  log "deleting endpoint $NAME"
  aws sagemaker delete-endpoint --endpoint-name "$NAME"
  elapsed=0
  while :; do
    STATUS="$(endpoint_field "$NAME" EndpointStatus)"
    [[ -n "$STATUS" ]] || break
    ((elapsed < TIMEOUT)) || die "endpoint $NAME still exists after ${TIMEOUT}s"
    log "[$(printf '%5d' "$elapsed")s] endpoint $NAME: $STATUS"
    sleep "$POLL"
    elapsed=$((elapsed + POLL))
  done
else
  log "endpoint $NAME does not exist"
fi

if [[ -n "$CURRENT" && ! "$CURRENT" =~ $OWNED ]]; then
  # A config not made by deploy.sh: also delete the models it serves.
  for m in $(aws sagemaker describe-endpoint-config --endpoint-config-name "$CURRENT" \
    --query 'ProductionVariants[].ModelName' --output text); do
    if [[ " ${MODELS[*]-} " != *" $m "* ]]; then MODELS+=("$m"); fi
  done
fi
for c in ${CONFIGS[@]+"${CONFIGS[@]}"}; do
  log "deleting endpoint config $c"
  aws sagemaker delete-endpoint-config --endpoint-config-name "$c"
done
for m in ${MODELS[@]+"${MODELS[@]}"}; do
  log "deleting model $m"
  aws sagemaker delete-model --model-name "$m"
done
log "deleted endpoint $NAME, ${#CONFIGS[@]} endpoint config(s) and ${#MODELS[@]} model(s)"
