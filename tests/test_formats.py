"""The migrations' small decisions: a class map's direction from its values, stored names in any
case or nesting, and the parts that must be there.
"""
from __future__ import annotations

import pytest
import torch

from flower_classifier.model.formats import NotServable, class_map, migrate, stored_arch


@pytest.mark.parametrize("key,mapping,expected", [
    ("class_to_idx", {"1": 0, "10": 1, "2": 2}, {0: "1", 1: "10", 2: "2"}),
    ("class_to_idx", {0: "1", 1: "10", 2: "2"}, {0: "1", 1: "10", 2: "2"}),  # really inverse
    ("class_to_idx", {"0": "1", "1": "10", "2": "2"}, {0: "1", 1: "10", 2: "2"}),  # json'd
    ("idx_to_class", {"0": "1", "1": "10", "2": "2"}, {0: "1", 1: "10", 2: "2"}),
    ("class_to_idx", {"1": 1, "2": 0}, {1: "1", 0: "2"}),  # both 0..N-1, keys strings: forward
    ("idx_to_cat", {"0": "daisy", "1": "rose"}, {0: "daisy", 1: "rose"}),
    ("class_to_idx", {"rose": 0, "daisy": 1}, {0: "rose", 1: "daisy"}),
])
def test_direction_is_read_from_the_values(key, mapping, expected):
    assert class_map({key: mapping})[0] == expected


def test_classes_list_and_missing_map():
    assert class_map({"classes": ["a", "b"]})[0] == {0: "a", 1: "b"}
    assert class_map({"state_dict": {}}) == (None, "none stored")
    with pytest.raises(NotServable, match="0..N-1"):
        class_map({"class_to_idx": {"a": 0, "b": 0}})


@pytest.mark.parametrize("data,name", [
    ({"arch": "vgg16"}, "vgg16"), ({"ARCHITECTURE": "densenet"}, "densenet"),
    ({"Model_Architecture": "ResNet18"}, "ResNet18"), ({"model_name": "alexnet"}, "alexnet"),
    ({"mType": "squeezenet1_1"}, "squeezenet1_1"), ({"hp": {"architecture": "vgg13"}}, "vgg13"),
    ({}, None)])
def test_stored_name_anywhere(data, name):
    assert stored_arch(data) == name


def test_weights_under_any_key_and_refusal_lists_the_keys():
    for key in ("state_dict", "model_state_dict", "model_state", "state", "weights", "model"):
        assert migrate({key: {"fc.weight": torch.zeros(2, 2)}}).state
    with pytest.raises(NotServable, match="no weights under any of .* \\(keys: 'epochs'"):
        migrate({"epochs": 3})
