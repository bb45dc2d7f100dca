"""A corpus of checkpoints as Udacity students saved them (18 layouts, real torchvision models,
random weights), each with the loader its author would have written, in torchvision directly.
"""
from __future__ import annotations

import copy
import functools
import json
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the authors' own spelling
from torchvision import transforms as T  # noqa: N812

from conftest import CATEGORY_NAMES
from helpers.checkpoints import class_to_idx

MAPPING = class_to_idx(CATEGORY_NAMES)  # ImageFolder's numbering of the 102 flower folders
NAMES = json.loads(Path(CATEGORY_NAMES).read_text())
# the course's inference transform, and inception's own (torchvision's weights: 342/299)
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def transform(resize: int = 255, crop: int = 224):
    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(MEAN, STD)])


@functools.cache
def _base(arch: str) -> nn.Module:
    torch.manual_seed(0)
    options = {"aux_logits": True, "init_weights": False} if arch == "inception_v3" else {}
    return torchvision.models.get_model(arch, weights=None, **options).eval()


def base(arch: str) -> nn.Module:
    """A torchvision model with random weights: built once per session, copied per format."""
    model = copy.deepcopy(_base(arch))
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so they must load
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    return model


def seeded(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    module = make()
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm1d):
                sub.running_mean.uniform_(-0.5, 0.5)
                sub.running_var.uniform_(0.5, 1.5)
            if isinstance(sub, nn.PReLU):
                sub.weight.uniform_(0.1, 0.4)
    return module


def named_head(n_in: int, hidden: int = 256) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(n_in, hidden)), ("relu", nn.ReLU()), ("dropout", nn.Dropout(0.2)),
        ("fc2", nn.Linear(hidden, 102)), ("output", nn.LogSoftmax(dim=1))]))


class Network(nn.Module):
    """The course's Part 5 classifier: hidden_layers (a ModuleList) and output."""

    def __init__(self, n_in: int, n_out: int, hidden: list[int], drop_p: float = 0.3):
        super().__init__()
        sizes = [n_in, *hidden]
        self.hidden_layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])])
        self.output = nn.Linear(hidden[-1], n_out)
        self.dropout = nn.Dropout(p=drop_p)

    def forward(self, x):
        for linear in self.hidden_layers:
            x = self.dropout(F.relu(linear(x)))
        return F.log_softmax(self.output(x), dim=1)


class Wrapper(nn.Module):
    """A head wrapped in a module of its own: keys fc.seq.fc1.weight..."""

    def __init__(self, n_in: int):
        super().__init__()
        self.seq = nn.Sequential(OrderedDict([("fc1", nn.Linear(n_in, 128)), ("relu", nn.ReLU()),
                                              ("fc2", nn.Linear(128, 102))]))

    def forward(self, x):
        return F.log_softmax(self.seq(x), dim=1)


@dataclass
class Reference:
    """The author's rebuild: model, transform, output index -> class, output -> probabilities."""

    model: nn.Module
    transform: Callable
    idx_to_class: dict[int, str]
    probabilities: Callable[[torch.Tensor], torch.Tensor] = torch.exp


@dataclass
class Format:
    name: str
    arch: str
    variants: str  # what of the list this format covers
    save: Callable[[Path], None]
    reference: Callable[[Path], Reference]
    file: str = "checkpoint.pth"


def inverse(mapping: dict) -> dict[int, str]:
    return {v: k for k, v in mapping.items()}


def untrusted_load(path: Path):
    """The authors' own torch.load: their files, their classes (the tests wrote them)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def rebuilt(arch: str, slot: str, head: nn.Module, state: dict) -> nn.Module:
    """torchvision's model with the author's head, their weights loaded strictly."""
    model = torchvision.models.get_model(arch, weights=None, **(
        {"aux_logits": True, "init_weights": False} if arch == "inception_v3" else {}))
    parent, _, leaf = slot.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, head)
    model.load_state_dict(state)
    return model.eval()


# ---- the formats ----------------------------------------------------------------------------

def densenet_named(folder: Path) -> None:
    model = base("densenet121")
    model.classifier = seeded(lambda: named_head(1024), 1)
    optimizer = torch.optim.Adam(model.classifier.parameters())
    torch.save({"arch": "densenet121", "state_dict": model.state_dict(), "class_to_idx": MAPPING,
                "optimizer": optimizer.state_dict(), "epochs": 5}, folder / "checkpoint.pth")


def densenet_named_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = rebuilt("densenet121", "classifier", named_head(1024), data["state_dict"])
    return Reference(model, transform(), inverse(data["class_to_idx"]))


def positional_head(n_in: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 102),
                         nn.LogSoftmax(dim=1))


def resnet_positional(folder: Path) -> None:
    model = base("resnet18")
    model.fc = seeded(lambda: positional_head(512), 2)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.01, momentum=0.9)
    torch.save({"architecture": "resnet", "model_state_dict": model.state_dict(),
                "class_to_index": MAPPING, "optimizer_state_dict": optimizer.state_dict()},
               folder / "model.pt")


def resnet_positional_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "model.pt")
    model = rebuilt("resnet18", "fc", positional_head(512), data["model_state_dict"])
    return Reference(model, transform(), inverse(data["class_to_index"]))


def hyphen_head() -> nn.Sequential:
    return nn.Sequential(OrderedDict([("fc-1", nn.Linear(1280, 64)), ("relu-1", nn.ReLU()),
                                      ("drop-1", nn.Dropout(0.2)), ("fc-2", nn.Linear(64, 102))]))


def mobilenet_hyphen_legacy(folder: Path) -> None:
    model = base("mobilenet_v2")
    model.classifier = seeded(hyphen_head, 3)
    torch.save({"model_name": "mobilenet_v2", "model_state": model.state_dict(),
                "class_to_idx_map": MAPPING}, folder / "checkpoint.tar",
               _use_new_zipfile_serialization=False)


def mobilenet_hyphen_legacy_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.tar")
    model = rebuilt("mobilenet_v2", "classifier", hyphen_head(), data["model_state"])
    return Reference(model, transform(), inverse(data["class_to_idx_map"]),
                     lambda out: torch.softmax(out, dim=1))  # raw logits


def bn_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(1280, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.3),
                         nn.Linear(128, 102), nn.LogSoftmax(dim=1))


def efficientnet_bn_pickle(folder: Path) -> None:
    model = base("efficientnet_b0")
    model.classifier = seeded(bn_head, 4)
    with open(folder / "flowers.pickle", "wb") as file:
        pickle.dump({"Model_Architecture": "EfficientNet_B0", "state": model.state_dict(),
                     "idx_to_class": inverse(MAPPING)}, file)


def efficientnet_bn_pickle_ref(folder: Path) -> Reference:
    with open(folder / "flowers.pickle", "rb") as file:
        data = pickle.load(file)  # noqa: S301 - the author's own loader
    model = rebuilt("efficientnet_b0", "classifier", bn_head(), data["state"])
    return Reference(model, transform(), data["idx_to_class"])


def squeezenet_kept(folder: Path) -> None:
    model = base("squeezenet1_1")
    model.classifier[1] = seeded(lambda: nn.Conv2d(512, 102, kernel_size=1), 5)
    torch.save({"mType": "squeezenet1_1", "weights": model.state_dict(),
                "idx_to_cat": {str(i): c for c, i in MAPPING.items()}}, folder / "model")


def squeezenet_kept_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "model")
    model = torchvision.models.squeezenet1_1()
    model.classifier[1] = nn.Conv2d(512, 102, kernel_size=1)
    model.load_state_dict(data["weights"])
    return Reference(model.eval(), transform(), {int(k): v for k, v in data["idx_to_cat"].items()},
                     lambda out: torch.softmax(out, dim=1))


def prelu_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 128), nn.PReLU(), nn.Linear(128, 102), nn.Softmax(dim=1))


def resnet_prelu_softmax(folder: Path) -> None:
    model = base("resnet18")
    model.fc = seeded(prelu_head, 6)
    torch.save({"hp": {"architecture": "resnet18", "lr": 0.003}, "model": model.state_dict(),
                "classes": list(MAPPING)}, folder / "checkpoint.pth")


def resnet_prelu_softmax_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = rebuilt("resnet18", "fc", prelu_head(), data["model"])
    return Reference(model, transform(), dict(enumerate(data["classes"])),
                     lambda out: out)  # its Softmax already gives probabilities


def mobilenet_v3_whole(folder: Path) -> None:
    model = base("mobilenet_v3_small")
    model.classifier[3] = seeded(lambda: nn.Sequential(nn.Linear(1024, 102),
                                                       nn.LogSoftmax(dim=1)), 7)
    model.class_to_idx = MAPPING
    torch.save(model, folder / "checkpoint.pth")


def mobilenet_v3_whole_ref(folder: Path) -> Reference:
    model = untrusted_load(folder / "checkpoint.pth").eval()
    return Reference(model, transform(), inverse(model.class_to_idx))


def fc_named(n_in: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([("fc1", nn.Linear(n_in, 64)), ("relu", nn.ReLU()),
                                      ("fc2", nn.Linear(64, 102)),
                                      ("output", nn.LogSoftmax(dim=1))]))


def resnet_pickled_model_optimizer(folder: Path) -> None:
    model = base("resnet18")
    model.fc = seeded(lambda: fc_named(512), 8)
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=0.001)
    torch.save({"model": model, "optimizer": optimizer, "optimizer_state": optimizer.state_dict,
                "criterion": nn.NLLLoss(), "class_to_idx": MAPPING},
               folder / "resnet18_flowers.pth")


def resnet_pickled_model_optimizer_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "resnet18_flowers.pth")
    return Reference(data["model"].eval(), transform(), inverse(data["class_to_idx"]))


def densenet_hidden_layers(folder: Path) -> None:
    model = base("densenet121")
    model.classifier = seeded(lambda: Network(1024, 102, [256, 128]), 9)
    torch.save({"arch": "densenet", "state_dict": model.state_dict(), "class_to_idx": MAPPING,
                "classifier": model.classifier, "hidden_layers": [256, 128]},
               folder / "checkpoint.pth")


def densenet_hidden_layers_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = rebuilt("densenet121", "classifier", Network(1024, 102, data["hidden_layers"]),
                    data["state_dict"])
    return Reference(model, transform(), inverse(data["class_to_idx"]))


def resnet_wrapper_dataparallel(folder: Path) -> None:
    model = base("resnet18")
    model.fc = seeded(lambda: Wrapper(512), 10)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from DataParallel
    torch.save({"state_dict": state, "class_to_idx": MAPPING}, folder / "resnet.pth")


def resnet_wrapper_dataparallel_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "resnet.pth")
    model = torchvision.models.resnet18()
    model.fc = Wrapper(512)
    model = nn.DataParallel(model)
    model.load_state_dict(data["state_dict"])
    return Reference(model.module.eval(), transform(), inverse(data["class_to_idx"]))


def inception_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2048, 256), nn.ReLU(), nn.Dropout(0.4), nn.Linear(256, 102),
                         nn.LogSoftmax(dim=1))


def inception_aux(folder: Path) -> None:
    model = base("inception_v3")
    model.fc = seeded(inception_head, 11)
    model.AuxLogits.fc = seeded(lambda: nn.Linear(768, 102), 12)
    torch.save({"arch": "inception_v3", "state_dict": model.state_dict(),
                "class_to_idx": MAPPING}, folder / "checkpoint.pth")


def inception_aux_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
    model.fc = inception_head()
    model.AuxLogits.fc = nn.Linear(768, 102)
    model.load_state_dict(data["state_dict"])
    return Reference(model.eval(), transform(342, 299), inverse(data["class_to_idx"]),
                     torch.exp)


def resnet_1000_way(folder: Path) -> None:
    model = base("resnet18")
    model.fc = seeded(lambda: nn.Linear(512, 1000), 13)  # trained on 102 of its 1000 outputs
    torch.save({"arch": "resnet18", "state_dict": model.state_dict(), "class_to_idx": MAPPING},
               folder / "checkpoint.pth")


def resnet_1000_way_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = torchvision.models.resnet18()
    model.load_state_dict(data["state_dict"])
    used = sorted(data["class_to_idx"].values())
    classes = inverse(data["class_to_idx"])

    def probabilities(out):  # the author's softmax, over the outputs that have a class
        probs = torch.softmax(out, dim=1)[:, used]
        return probs / probs.sum(dim=1, keepdim=True)
    return Reference(model.eval(), transform(), {j: classes[u] for j, u in enumerate(used)},
                     probabilities)


def mobilenet_inverted_map(folder: Path) -> None:
    model = base("mobilenet_v2")
    model.classifier[1] = seeded(lambda: nn.Linear(1280, 102), 14)
    torch.save({"arch": "mobilenet_v2", "state_dict": model.state_dict(),
                "class_to_idx": inverse(MAPPING)}, folder / "checkpoint.pth")  # index -> class


def mobilenet_inverted_map_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = torchvision.models.mobilenet_v2()
    model.classifier[1] = nn.Linear(1280, 102)
    model.load_state_dict(data["state_dict"])
    return Reference(model.eval(), transform(), data["class_to_idx"],
                     lambda out: torch.softmax(out, dim=1))


def resnet_head_only(folder: Path) -> None:
    model = base("resnet18")
    model.fc = seeded(lambda: named_head(512, 96), 15)
    head = {k: v for k, v in model.state_dict().items() if k.startswith("fc.")}
    torch.save({"arch": "resnet18", "state_dict": head, "class_to_idx": MAPPING},
               folder / "checkpoint.pth")


def backbone_file(cache: Path) -> Path:
    """torchvision's resnet18 weights file as the torch hub cache holds it (random values)."""
    name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1]
    path = cache / "hub" / "checkpoints" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(seeded(torchvision.models.resnet18, 16).state_dict(), path)
    return path


def resnet_head_only_ref(folder: Path, cache: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(backbone_file(cache), weights_only=True))
    model.fc = named_head(512, 96)
    model.fc.load_state_dict({k[3:]: v for k, v in data["state_dict"].items()})
    return Reference(model.eval(), transform(), inverse(data["class_to_idx"]))


def squeezenet_bare(folder: Path) -> None:
    model = base("squeezenet1_1")
    model.classifier[1] = seeded(lambda: nn.Conv2d(512, 102, kernel_size=1), 17)
    torch.save(model.state_dict(), folder / "weights.pth")


def squeezenet_bare_ref(folder: Path) -> Reference:
    model = torchvision.models.squeezenet1_1()
    model.classifier[1] = nn.Conv2d(512, 102, kernel_size=1)
    model.load_state_dict(untrusted_load(folder / "weights.pth"))
    return Reference(model.eval(), transform(), {i: str(i) for i in range(102)},
                     lambda out: torch.softmax(out, dim=1))


def densenet_misnamed_legacy(folder: Path) -> None:
    model = base("densenet121")
    model.classifier = seeded(lambda: named_head(1024, 200), 18)
    torch.save({"arch": "vgg16", "state_dict": model.state_dict(), "class_to_idx": MAPPING},
               folder / "checkpoint.pth", _use_new_zipfile_serialization=False)


def densenet_misnamed_legacy_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = rebuilt("densenet121", "classifier", named_head(1024, 200), data["state_dict"])
    return Reference(model, transform(), inverse(data["class_to_idx"]))


def resnet_stored_preprocessing(folder: Path) -> None:
    model = base("resnet18")
    model.fc = seeded(lambda: named_head(512, 128), 19)
    torch.save({"arch": "resnet18", "state_dict": model.state_dict(), "class_to_idx": MAPPING,
                "cat_to_name": NAMES, "resize": 300, "crop_size": 256},
               folder / "checkpoint.pth")


def resnet_stored_preprocessing_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = rebuilt("resnet18", "fc", named_head(512, 128), data["state_dict"])
    return Reference(model, transform(data["resize"], data["crop_size"]),
                     inverse(data["class_to_idx"]))


def alexnet_kept_nested(folder: Path) -> None:
    model = base("alexnet")
    model.classifier[6] = seeded(lambda: nn.Sequential(nn.Linear(4096, 102),
                                                       nn.LogSoftmax(dim=1)), 20)
    torch.save({"arch": "alexnet", "state_dict": model.state_dict(), "class_to_idx": MAPPING},
               folder / "checkpoint.pth")  # keys classifier.6.0.weight


def alexnet_kept_nested_ref(folder: Path) -> Reference:
    data = untrusted_load(folder / "checkpoint.pth")
    model = torchvision.models.alexnet()
    model.classifier[6] = nn.Sequential(nn.Linear(4096, 102), nn.LogSoftmax(dim=1))
    model.load_state_dict(data["state_dict"])
    return Reference(model.eval(), transform(), inverse(data["class_to_idx"]))


FORMATS = [
    Format("densenet_named", "densenet121", "state_dict; class_to_idx; arch; named Sequential "
           "with dropout; LogSoftmax; optimizer state", densenet_named, densenet_named_ref),
    Format("resnet_positional", "resnet18", "model_state_dict; class_to_index; architecture "
           "alias 'resnet'; positional Sequential; *.pt", resnet_positional,
           resnet_positional_ref, "model.pt"),
    Format("mobilenet_hyphen_legacy", "mobilenet_v2", "model_state; class_to_idx_map; "
           "model_name; hyphenated names; raw logits; legacy torch file; *.tar",
           mobilenet_hyphen_legacy, mobilenet_hyphen_legacy_ref, "checkpoint.tar"),
    Format("efficientnet_bn_pickle", "efficientnet_b0", "state; idx_to_class; "
           "Model_Architecture (any case); BatchNorm1d; plain pickle.dump; *.pickle",
           efficientnet_bn_pickle, efficientnet_bn_pickle_ref, "flowers.pickle"),
    Format("squeezenet_kept", "squeezenet1_1", "weights; idx_to_cat; mType; torchvision "
           "classifier kept, its conv replaced; no extension", squeezenet_kept,
           squeezenet_kept_ref, "model"),
    Format("resnet_prelu_softmax", "resnet18", "model (a state dict); classes list; "
           "hp['architecture']; PReLU; Softmax", resnet_prelu_softmax, resnet_prelu_softmax_ref),
    Format("mobilenet_v3_whole", "mobilenet_v3_small", "torch.save(model); class_to_idx "
           "attribute; nested classifier.3.0; recorded structure", mobilenet_v3_whole,
           mobilenet_v3_whole_ref),
    Format("resnet_pickled_model_optimizer", "resnet18", "model (a pickled model); optimizer "
           "object; bound method; loss object; *.pth", resnet_pickled_model_optimizer,
           resnet_pickled_model_optimizer_ref, "resnet18_flowers.pth"),
    Format("densenet_hidden_layers", "densenet121", "hidden_layers ModuleList + output; "
           "arch alias 'densenet'; pickled custom head under 'classifier'",
           densenet_hidden_layers, densenet_hidden_layers_ref),
    Format("resnet_wrapper_dataparallel", "resnet18", "wrapper module (fc.seq.fc1); no arch; "
           "DataParallel 'module.' prefix", resnet_wrapper_dataparallel,
           resnet_wrapper_dataparallel_ref, "resnet.pth"),
    Format("inception_aux", "inception_v3", "head on fc plus AuxLogits; 299 px", inception_aux,
           inception_aux_ref),
    Format("resnet_1000_way", "resnet18", "1000-way head trained on 102 classes",
           resnet_1000_way, resnet_1000_way_ref),
    Format("mobilenet_inverted_map", "mobilenet_v2", "'class_to_idx' that is index -> class; "
           "classifier kept, last layer replaced", mobilenet_inverted_map,
           mobilenet_inverted_map_ref),
    Format("resnet_head_only", "resnet18", "state dict of the head only; backbone from the "
           "torch hub cache", resnet_head_only, None),
    Format("squeezenet_bare", "squeezenet1_1", "bare state_dict; no labels; no arch",
           squeezenet_bare, squeezenet_bare_ref, "weights.pth"),
    Format("densenet_misnamed_legacy", "densenet121", "arch naming another network (vgg16); "
           "legacy torch file", densenet_misnamed_legacy, densenet_misnamed_legacy_ref),
    Format("resnet_stored_preprocessing", "resnet18", "stored shortest side and crop; "
           "embedded cat_to_name", resnet_stored_preprocessing, resnet_stored_preprocessing_ref),
    Format("alexnet_kept_nested", "alexnet", "torchvision classifier kept, last layer a "
           "Sequential (classifier.6.0.weight)", alexnet_kept_nested, alexnet_kept_nested_ref),
]
