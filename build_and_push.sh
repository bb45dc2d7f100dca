#!/usr/bin/env bash
# Build the flower-classifier SageMaker image for linux/amd64 and push it to Amazon ECR.
# Idempotent: creates the ECR repository (scan on push) only when missing; prints the image URI last.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: ./build_and_push.sh [--cpu] [--no-push | --dry-run] [--help] [IMAGE_NAME] [TAG]

  IMAGE_NAME  ECR repository / image name (default: $DEFAULT_REPOSITORY, lib/common.sh)
  TAG         immutable tag (default: git short SHA, with -dirty for uncommitted changes);
              'latest' is always tagged and pushed too
  --no-push   only build and tag locally (no AWS calls); prints the local image name
  --cpu       the CPU-only variant (--build-arg VARIANT=cpu), tagged TAG-cpu and latest-cpu,
              for CPU instances and serverless endpoints (deploy.sh --serverless); the build
              fails if the image is over serverless inference's 10 GB limit
  --dry-run   no Docker and no changes: look up account and region and print the image URI
              a real run would push (what deploy.sh --image takes)
  --help      show this help

Steps: account via 'aws sts get-caller-identity'; region from AWS_REGION, AWS_DEFAULT_REGION
or the profile (AWS_PROFILE); create the ECR repository with scanOnPush if missing;
'aws ecr get-login-password | docker login --password-stdin'; docker build --platform
linux/amd64; tag TAG and latest; push both; print the full image URI as the last line.

Environment:
  AWS_REGION, AWS_PROFILE  usual AWS CLI settings
  AWS_ENDPOINT_URL         send AWS API calls to this endpoint (e.g. a local moto server)
  ECR_REGISTRY             registry host to tag/push to instead of
                           ACCOUNT.dkr.ecr.REGION.amazonaws.com (local registries, tests)
  BUILD_ARGS               extra 'docker build' arguments, e.g.
                           "--build-arg VARIANT=cpu" for the CPU / serverless variant
  PLATFORM                 build platform (default linux/amd64, what SageMaker runs)
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

push=1 dry_run=0 cpu=0
args=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --no-push) push=0 ;;
        --dry-run) dry_run=1 ;;
        --cpu) cpu=1 ;;
        -*) usage >&2; die "unknown option: $arg" ;;
        *) args+=("$arg") ;;
    esac
done
((${#args[@]} <= 2)) || { usage >&2; die "too many arguments"; }

name=${args[0]:-$DEFAULT_REPOSITORY}
tag=${args[1]:-}
if [[ -z $tag ]]; then
    tag=$(git -C "$here" rev-parse --short HEAD 2>/dev/null) ||
        die "no TAG given and no git commit to derive one from; pass TAG explicitly"
    [[ -z $(git -C "$here" status --porcelain 2>/dev/null) ]] || tag="$tag-dirty"
fi
[[ $tag != latest ]] || die "TAG must be immutable (e.g. a version or git SHA), not 'latest'"
read -r -a build_args <<<"${BUILD_ARGS:-}"
latest=latest
if ((cpu)); then
    build_args+=(--build-arg VARIANT=cpu)
    tag=$tag-cpu latest=latest-cpu
fi

if ((dry_run)); then
    ((push)) || die "--dry-run and --no-push do not go together"
    check_credentials
    echo "$(ecr_registry)/$name:$tag"
    exit 0
fi
require_docker

registry=local
if ((push)); then
    log "1/7 account and region"
    check_credentials
    registry=$(ecr_registry)
    log "account $ACCOUNT_ID, region $REGION, registry $registry"

    log "2/7 ECR repository $name"
    if ! aws ecr describe-repositories --repository-names "$name" >/dev/null 2>&1; then
        aws ecr create-repository --repository-name "$name" \
            --image-scanning-configuration scanOnPush=true >/dev/null ||
            die "could not create ECR repository $name"
        log "created repository $name (scan on push)"
    fi

    log "3/7 docker login $registry"
    aws ecr get-login-password | docker login --username AWS --password-stdin "$registry" >&2 ||
        die "docker login to $registry failed"
    image=$registry/$name
else
    image=$name
fi

log "4/7 docker build ($image:$tag, ${PLATFORM:-linux/amd64})"
docker build --platform "${PLATFORM:-linux/amd64}" "${build_args[@]}" \
    -t "$image:$tag" -t "$image:$latest" -f "$here/Dockerfile" "$here" >&2 || die "docker build failed"
log "5/7 tagged $image:$tag and $image:$latest"
if ((cpu)); then
    size=$(docker image inspect --format '{{.Size}}' "$image:$tag")
    ((size <= 10 * 1024 * 1024 * 1024)) ||
        die "image $image:$tag is $((size / 1024 / 1024)) MiB, over serverless inference's 10 GB limit"
    log "image size $((size / 1024 / 1024)) MiB (serverless limit 10 GB)"
fi

if ((push)); then
    log "6/7 docker push"
    docker push "$image:$tag" >&2 || die "docker push $image:$tag failed"
    docker push "$image:$latest" >&2 || die "docker push $image:$latest failed"
else
    log "6/7 push skipped (--no-push)"
fi
log "7/7 done"
echo "$image:$tag"
