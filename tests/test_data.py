# Tests data.py: the ImageFolder scan (numbering, errors) and the training augmentations, which
# must equal torchvision's transforms exactly for the same torch seed (checked against its code).
from pathlib import Path

import pytest
import torch
from PIL import Image

from flower_serving.data import (
    DataError,
    ImageDataset,
    augment,
    data_folders,
    random_resized_crop_box,
    scan_folder,
)
from flower_serving.preprocess import Preprocessing, preprocess
from reference import import_reference


def make_tree(root: Path, layout: dict[str, int], size=(40, 30)) -> Path:
    for name, count in layout.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", size, (10 * i, 50, 90)).save(root / name / f"img{i}.jpg")
    return root


def test_classes_numbered_as_imagefolder_sorted_as_strings(tmp_path) -> None:
    root = make_tree(tmp_path / "train", {"1": 2, "10": 1, "2": 1})
    (root / ".ipynb_checkpoints").mkdir()  # the Udacity workspace's stray folder is not a class
    (root / "2" / "notes.txt").write_text("not an image")
    samples, class_to_idx = scan_folder(root)
    assert class_to_idx == {"1": 0, "10": 1, "2": 2}
    assert [(Path(p).relative_to(root).as_posix(), i) for p, i in samples] == [
        ("1/img0.jpg", 0), ("1/img1.jpg", 0), ("10/img0.jpg", 1), ("2/img0.jpg", 2)]


def test_scan_matches_torchvision_imagefolder(tmp_path) -> None:
    torchvision, _ = import_reference()
    from torchvision.datasets.folder import make_dataset

    root = make_tree(tmp_path / "train", {"3": 2, "21": 3, "100": 1})
    samples, class_to_idx = scan_folder(root)
    reference = make_dataset(str(root), class_to_idx, extensions=(".jpg",))
    assert samples == reference


def test_valid_uses_training_numbering_and_refuses_unknown_classes(tmp_path) -> None:
    _, class_to_idx = scan_folder(make_tree(tmp_path / "train", {"a": 1, "b": 1, "c": 1}))
    valid, _ = scan_folder(make_tree(tmp_path / "valid", {"c": 1}), class_to_idx)
    assert [i for _, i in valid] == [2]
    make_tree(tmp_path / "valid", {"zzz": 1})
    with pytest.raises(DataError, match="lacks.*zzz"):
        scan_folder(tmp_path / "valid", class_to_idx)


def test_empty_class_folder_is_named(tmp_path) -> None:
    root = make_tree(tmp_path / "train", {"1": 1, "2": 0})
    with pytest.raises(DataError, match=r"class folder .*2 is empty"):
        scan_folder(root)


def test_missing_folders_are_clear_errors(tmp_path) -> None:
    make_tree(tmp_path / "train", {"1": 1})
    with pytest.raises(DataError, match="validation folder .*valid not found"):
        data_folders(str(tmp_path), None, None)
    with pytest.raises(DataError, match="training folder"):
        data_folders(str(tmp_path / "nowhere"), None, None)
    with pytest.raises(DataError, match="no class folders"):
        scan_folder(tmp_path / "train" / "1")


@pytest.mark.parametrize("size", [(500, 375), (60, 400), (400, 60), (224, 224)])
def test_crop_box_equals_torchvision(size) -> None:
    torchvision, _ = import_reference()
    crop = torchvision.transforms.RandomResizedCrop(224)
    image = Image.new("RGB", size)
    for seed in range(20):
        torch.manual_seed(seed)
        top, left, h, w = crop.get_params(image, crop.scale, crop.ratio)
        torch.manual_seed(seed)
        assert random_resized_crop_box(*size) == (left, top, w, h)


def test_augment_equals_the_seeds_torchvision_pipeline(photos) -> None:
    torchvision, _ = import_reference()
    T = torchvision.transforms
    spec = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    pipeline = T.Compose([T.RandomRotation(30), T.RandomResizedCrop(224),
                          T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    for photo in photos[:3]:
        image = Image.open(photo).convert("RGB")
        for seed in range(5):
            torch.manual_seed(seed)
            expected = pipeline(image)
            torch.manual_seed(seed)
            assert torch.equal(augment(image, spec), expected)


def test_dataset_uses_preprocess_for_evaluation_and_names_bad_files(tmp_path, photos) -> None:
    spec = Preprocessing()
    dataset = ImageDataset([(str(photos[0]), 4)], spec, augmented=False)
    tensor, target = dataset[0]
    assert target == 4 and torch.equal(tensor, preprocess(Image.open(photos[0]), spec))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read image .*broken.jpg"):
        ImageDataset([(str(broken), 0)], spec, augmented=True)[0]
