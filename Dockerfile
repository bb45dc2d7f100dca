# SageMaker bring-your-own-container inference (and training) image for the flower classifier.
#
# Build (always for linux/amd64, the only architecture SageMaker runs; build_and_push.sh does this):
#   docker build --platform linux/amd64 -t flower-classifier .                      # GPU (CUDA 12.6)
#   docker build --platform linux/amd64 --build-arg VARIANT=cpu -t flower-classifier:cpu .
# Works with the classic builder and with BuildKit (no BuildKit-only syntax is used).
#
# VARIANT=gpu installs the CUDA 12.6 builds of torch/torchvision (the wheels bring the CUDA
# runtime; the base needs no CUDA). CUDA 12.6 needs NVIDIA driver >= 525. SageMaker's default
# GPU driver (470, CUDA 11.4 on g4dn/g5) CANNOT run it: the endpoint fails with
# CannotStartContainerError or silently runs on CPU. Create the endpoint config with an
# InferenceAmiVersion such as al2-ami-sagemaker-inference-gpu-2 (driver 535, CUDA 12.2+).
# VARIANT=cpu installs CPU-only wheels for CPU instances and serverless inference (10 GB limit).
# TORCH_INDEX_URL overrides the wheel index for torch/torchvision (default chosen by VARIANT).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG VARIANT=gpu
ARG TORCH_INDEX_URL=

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true

# A venv works on both python:*-slim (/usr/local/bin/python3) and Debian's python3 (which
# refuses system-wide pip installs); /opt/program holds serve and train, so both are on PATH.
ENV PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/program:/opt/venv/bin:${PATH}" \
    PYTHONPATH=/opt/program

COPY requirements.txt /tmp/requirements.txt
RUN set -eu; \
    case "$VARIANT" in \
        gpu) default_index=https://download.pytorch.org/whl/cu126 ;; \
        cpu) default_index=https://download.pytorch.org/whl/cpu ;; \
        *) echo "error: VARIANT must be gpu or cpu, got '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    python3 -m venv "$VIRTUAL_ENV"; \
    grep -E '^(torch|torchvision)([<>=!~; ]|$)' /tmp/requirements.txt > /tmp/torch-requirements.txt; \
    python -m pip install --no-cache-dir --index-url "${TORCH_INDEX_URL:-$default_index}" \
        -r /tmp/torch-requirements.txt; \
    python -m pip install --no-cache-dir -r /tmp/requirements.txt; \
    rm -f /tmp/requirements.txt /tmp/torch-requirements.txt; \
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

COPY container/ /opt/program/
COPY local_test/payloads/ /opt/program/calibration/
RUN chmod 0755 /opt/program/serve /opt/program/train
WORKDIR /opt/program

EXPOSE 8080
CMD ["serve"]
