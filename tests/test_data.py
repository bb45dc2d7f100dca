"""Tests data.py: torchvision's ImageFolder under the project's rules (numbering, validation's
numbering, clear errors) and the starter's augmentations in transforms.v2, against the
starter's own.

Training data: ClassFolders, augmentation(), data_folders().
"""

from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from flower_classifier.model.preprocess import Preprocessing, preprocess
from flower_classifier.training.data import ClassFolders, DataError, augmentation, data_folders


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
    (root / "2" / "._img0.jpg").write_bytes(b"macOS resource fork")  # hidden: skipped
    data = ClassFolders(root, Preprocessing(), augmented=False)
    assert data.class_to_idx == {"1": 0, "10": 1, "2": 2}
    assert [(Path(p).relative_to(root).as_posix(), i) for p, i in data.samples] == [
        ("1/img0.jpg", 0), ("1/img1.jpg", 0), ("10/img0.jpg", 1), ("2/img0.jpg", 2)]


def test_numbering_and_samples_are_torchvisions(tmp_path) -> None:
    root = make_tree(tmp_path / "train", {"3": 2, "21": 3, "100": 1})
    ours = ClassFolders(root, Preprocessing(), augmented=False)
    theirs = torchvision.datasets.ImageFolder(str(root))
    assert ours.class_to_idx == theirs.class_to_idx and ours.samples == theirs.samples


def test_valid_uses_training_numbering_and_refuses_unknown_classes(tmp_path) -> None:
    train = ClassFolders(make_tree(tmp_path / "train", {"a": 1, "b": 1, "c": 1}), Preprocessing(),
                         augmented=False)
    valid = ClassFolders(make_tree(tmp_path / "valid", {"c": 1}), Preprocessing(), False,
                         train.class_to_idx)
    assert [i for _, i in valid.samples] == [2] and valid.class_to_idx == train.class_to_idx
    make_tree(tmp_path / "valid", {"zzz": 1})
    with pytest.raises(DataError, match="lacks.*zzz"):
        ClassFolders(tmp_path / "valid", Preprocessing(), False, train.class_to_idx)


def test_empty_class_folder_is_named(tmp_path) -> None:
    root = make_tree(tmp_path / "train", {"1": 1, "2": 0})
    with pytest.raises(DataError, match=r"class folder .*2 is empty"):
        ClassFolders(root, Preprocessing(), augmented=False)


def test_missing_folders_are_clear_errors(tmp_path) -> None:
    make_tree(tmp_path / "train", {"1": 1})
    with pytest.raises(DataError, match="validation folder .*valid not found"):
        data_folders(str(tmp_path), None, None)
    with pytest.raises(DataError, match="training folder"):
        data_folders(str(tmp_path / "nowhere"), None, None)
    with pytest.raises(DataError, match="no class folders"):
        ClassFolders(tmp_path / "train" / "1", Preprocessing(), augmented=False)


def test_augmentation_is_the_seeds_pipeline(photos) -> None:
    """RandomRotation(30), RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize:
    the same random draws and pixels as the starter's torchvision.transforms for each torch seed,
    within the float rounding of v2's ToDtype (1/255 multiplied, not divided: < 1e-6)."""
    T = torchvision.transforms
    spec = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    seed = T.Compose([T.RandomRotation(30), T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    ours = augmentation(spec)
    for photo in photos[:3]:
        image = Image.open(photo).convert("RGB")
        for draw in range(5):
            torch.manual_seed(draw)
            expected = seed(image)
            torch.manual_seed(draw)
            assert (ours(image) - expected).abs().max().item() < 1e-6


def test_inception_crops_at_its_own_size() -> None:
    from flower_classifier.model.architectures import preprocessing_for

    spec = preprocessing_for("inception_v3")
    out = augmentation(spec)(Image.new("RGB", (400, 350), (1, 2, 3)))
    assert out.shape == (3, 299, 299)


def test_evaluation_uses_preprocess_and_names_bad_files(tmp_path, photos) -> None:
    root = tmp_path / "valid"
    (root / "4").mkdir(parents=True)
    (root / "4" / "a.jpg").write_bytes(photos[0].read_bytes())
    spec = Preprocessing()
    tensor, target = ClassFolders(root, spec, augmented=False)[0]
    assert target == 0 and torch.equal(tensor, preprocess(Image.open(photos[0]), spec))
    (root / "4" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read image .*a.jpg"):
        ClassFolders(root, spec, augmented=True)[0]
