#!/usr/bin/env bash
# Builds the committed demo model (local_test/test_dir/model/checkpoint.pth): EfficientNet-Lite0
# (offline weights package) with its last blocks fine-tuned and a new linear head, on flowers/train.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: train/build_demo_model.sh [--help] [TRAIN_DIR [VALID_DIR]]

Trains the demo model on TRAIN_DIR/<class id>/*.jpg (default ../shared/flowers/train, the full
Udacity split: 6,552 photos) and selects the epoch with the best top-1 on VALID_DIR (default
../shared/flowers/valid), then copies checkpoint.pth and cat_to_name.json into
local_test/test_dir/model/ (which local_test/serve_local.sh serves) and measures top-1 and top-5
on VALID_DIR with train/evaluate.py.

Recipe: the backbone's first 16 - TRAIN_BLOCKS (default 3) of 16 blocks stay frozen and run once
on each of VIEWS (default 3) augmented views of every photo (RandomRotation(30),
RandomResizedCrop, RandomHorizontalFlip), cached in memory; a linear probe on those features,
then EPOCHS (default 8) epochs fine-tuning the last TRAIN_BLOCKS blocks, conv_head and the head
(Adam, cosine decay). The full state_dict is stored (~14 MB). About 65 minutes on 2 shared
cores (nice -n 10 is applied).

PYTHON (default python3) picks the interpreter; BUILD_DIR (default a temp dir) keeps the run's
checkpoint, training curve (training_curve.png) and log (train.log).
USAGE
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    -*) echo "error: unknown option: $1" >&2; usage >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
train_dir=${1:-$root/../shared/flowers/train}
valid_dir=${2:-$root/../shared/flowers/valid}
python=${PYTHON:-python3}
build_dir=${BUILD_DIR:-$(mktemp -d)}
views=${VIEWS:-3}
epochs=${EPOCHS:-8}
train_blocks=${TRAIN_BLOCKS:-3}
model_dir=$root/local_test/test_dir/model

for dir in "$train_dir" "$valid_dir"; do
    [[ -d $dir ]] || { echo "error: $dir not found (ImageFolder: DIR/<class id>/*.jpg)" >&2; exit 1; }
done
names=$train_dir/../cat_to_name.json
[[ -f $names ]] || names=$model_dir/cat_to_name.json
mkdir -p "$build_dir"

started=$SECONDS
nice -n 10 "$python" "$root/train/train.py" --train_dir "$train_dir" --valid_dir "$valid_dir" \
    --save_dir "$build_dir" --arch efficientnet_lite0 --weights default --hidden_units 0 \
    --train_blocks "$train_blocks" --views "$views" --epochs "$epochs" --learning_rate 0.001 --batch_size 32 \
    --dropout 0.2 --seed 0 --category_names "$names" \
    | tee "$build_dir/train.log"
echo "training took $((SECONDS - started)) s" | tee -a "$build_dir/train.log"

mkdir -p "$model_dir"
cp "$build_dir/checkpoint.pth" "$model_dir/checkpoint.pth"
[[ $names -ef $model_dir/cat_to_name.json ]] || cp "$names" "$model_dir/cat_to_name.json"
size=$(stat -c %s "$model_dir/checkpoint.pth")
echo "demo model: $model_dir/checkpoint.pth ($size bytes); curve: $build_dir/training_curve.png"
echo "update DEMO_CHECKPOINT_SIZE = $size and DEMO_CHECKPOINT_SHA256 =" \
    "$(sha256sum "$model_dir/checkpoint.pth" | cut -d' ' -f1) in container/flower_classifier/serving/model_info.py"
"$python" "$root/train/evaluate.py" "$model_dir" "$valid_dir"
