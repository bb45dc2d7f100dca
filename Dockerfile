# SageMaker bring-your-own-container inference (and training) image for the flower classifier.
#
# Build (always for linux/amd64, the only architecture SageMaker runs; build_and_push.sh does this):
#   docker build --platform linux/amd64 -t flower-classifier .                      # GPU (CUDA 13.0)
#   docker build --platform linux/amd64 --build-arg VARIANT=cpu -t flower-classifier:cpu .
# Works with the classic builder and with BuildKit (no BuildKit-only syntax is used).
#
# VARIANT=gpu installs torch/torchvision as PyPI has them: the CUDA 13.0 builds, whose wheels
# bring the CUDA runtime (the base needs no CUDA). CUDA 13.0 needs NVIDIA driver >= 580 and a
# Turing (sm_75) or newer GPU: on SageMaker create the endpoint config with
# InferenceAmiVersion al2023-ami-sagemaker-inference-gpu-4-1 (endpoint/deploy.sh does). Without
# a usable GPU the same image serves on the CPU and says so in its start-up log.
# VARIANT=cpu installs PyTorch's CPU-only wheels of the same versions, and OpenVINO with NNCF
# (requirements-cpu.txt: INFERENCE_BACKEND=auto serves through OpenVINO where it is faster), for
# CPU instances and serverless inference (10 GB limit). TORCH_INDEX_URL overrides the index for torch/torchvision:
# V100 (p3) users build with https://download.pytorch.org/whl/cu126 (driver >= 525).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG VARIANT=gpu
ARG TORCH_INDEX_URL=

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

# A venv works on both python:*-slim (/usr/local/bin/python3) and Debian's python3 (which
# refuses system-wide pip installs); /opt/program holds serve and train, so both are on PATH, and
# the flower_classifier package (PYTHONPATH), with calibration/ beside it.
ENV PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/program:/opt/venv/bin:${PATH}" \
    PYTHONPATH=/opt/program

COPY requirements.txt requirements-cpu.txt /tmp/
RUN set -eu; \
    case "$VARIANT" in \
        gpu) default_index='' extra='' ;; \
        cpu) default_index=https://download.pytorch.org/whl/cpu extra=/tmp/requirements-cpu.txt ;; \
        *) echo "error: VARIANT must be gpu or cpu, got '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    python3 -m venv "$VIRTUAL_ENV"; \
    grep -E '^(torch|torchvision)([<>=!~; ]|$)' /tmp/requirements.txt > /tmp/torch-requirements.txt; \
    index="${TORCH_INDEX_URL:-$default_index}"; \
    python -m pip install --no-cache-dir ${index:+--index-url "$index"} \
        -r /tmp/torch-requirements.txt; \
    python -m pip install --no-cache-dir -r /tmp/requirements.txt ${extra:+-r "$extra"}; \
    rm -f /tmp/requirements.txt /tmp/requirements-cpu.txt /tmp/torch-requirements.txt; \
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

COPY container/ /opt/program/
COPY local_test/payloads/ /opt/program/calibration/
RUN chmod 0755 /opt/program/serve /opt/program/train
WORKDIR /opt/program

EXPOSE 8080
CMD ["serve"]
