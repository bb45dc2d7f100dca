# Tests the committed demo model in local_test/test_dir/model: small head-only Lite0 checkpoint,
# loads without flags, names the sample photos, and the server's answer equals predict.py's.
import json
import sys
from pathlib import Path

import pytest

from flower_serving.checkpoint import load_classifier, read_checkpoint
from flower_serving.prediction import load, predict
from flower_serving.training_args import choose_device
from serving import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "local_test" / "test_dir" / "model"
VALID = ROOT.parent / "shared" / "flowers" / "valid"


def expected_label(photo: Path) -> str:
    return photo.stem.replace("_", " ")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(MODEL_DIR)


def test_demo_checkpoint_is_small_and_head_only() -> None:
    path = MODEL_DIR / "checkpoint.pth"
    assert path.stat().st_size < 2_000_000  # head + Adam state only: no backbone stored
    saved = read_checkpoint(path)
    assert saved["arch"] == "efficientnet_lite0" and saved["state_dict_scope"] == "head"
    assert saved["backbone_weights"] == "default"
    assert saved["preprocessing"]["mean"] == [0.5] * 3 == saved["preprocessing"]["std"]
    names = json.loads((MODEL_DIR / "cat_to_name.json").read_text())
    assert set(saved["class_to_idx"]) == set(names) and len(names) == 102


def test_demo_model_names_most_sample_photos(classifier, photos) -> None:
    device = choose_device(False)
    top1 = top5 = 0
    for photo in photos:
        labels = [p["label"] for p in predict(str(photo), classifier, 5, device)]
        top1 += labels[0] == expected_label(photo)
        top5 += expected_label(photo) in labels
    assert top1 >= len(photos) - 3 and top5 >= len(photos) - 1, (top1, top5)


def test_served_prediction_equals_predict_py(photos) -> None:
    local = load(str(MODEL_DIR), None)
    env = {"INFERENCE_PRECISION": "fp32", "MAX_BATCH_SIZE": "1", "MODEL_SERVER_WORKERS": "1"}
    with ServerProcess(MODEL_DIR, env) as server:
        server.wait_ready()
        for photo in photos[:2]:
            content_type = "image/png" if photo.suffix == ".png" else "image/jpeg"
            response = server.post(photo.read_bytes(), content_type)
            assert response.status_code == 200, response.text
            expected = {"predictions": predict(str(photo), local, 5, choose_device(False))}
            assert response.json() == expected


@pytest.mark.skipif(not VALID.is_dir(), reason="../shared/flowers/valid not present")
def test_accuracy_on_one_validation_photo_per_class() -> None:
    """A quick sanity check; the full benchmark is `train/evaluate.py MODEL_DIR VALID_DIR`."""
    sys.path.insert(0, str(ROOT / "train"))
    from evaluate import evaluate

    result = evaluate(str(MODEL_DIR), str(VALID), num_workers=0, per_class=1)
    assert result["count"] == 102
    assert result["top1"] >= 0.65 and result["top5"] >= 0.85, result
