# Plain-torch backbones, state_dict-compatible with torchvision's and timm's, plus a registry.
# Exists because torchvision's CUDA wheel cannot load next to CPU torch (see tests/reference.py).

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = None) -> nn.Sequential:
    """Conv + BN (+ activation), keyed like torchvision's Conv2dNormActivation (0, 1, 2)."""
    act_layer = [] if act is None else [act(inplace=True)]
    return nn.Sequential(conv(cin, cout, k, stride, groups), nn.BatchNorm2d(cout), *act_layer)


# --- VGG (torchvision, no batch norm) ---
# Convolutions per stage; each stage ends with a 2x2 max pool.
VGG_DEPTHS = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2),
              "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


class VGG(nn.Module):
    def __init__(self, depths: tuple[int, ...], num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout, n in zip((64, 128, 256, 512, 512), depths, strict=True):
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class ConvChain(nn.Module):
    """Steps (conv name, bn name, conv, activate?) then `shortcut(x)` added (None: none)."""

    def __init__(self, steps: list[tuple[str, str, nn.Conv2d, bool]], act: nn.Module,
                 shortcut: nn.Module | None, act_after_add: bool) -> None:
        super().__init__()
        for conv_name, bn_name, layer, _ in steps:
            setattr(self, conv_name, layer)
            setattr(self, bn_name, nn.BatchNorm2d(layer.out_channels))
        self.steps = [(c, b, a) for c, b, _, a in steps]
        self.act = act
        self.downsample = shortcut  # torchvision's name; an Identity has no state
        self.act_after_add = act_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv_name, bn_name, activate in self.steps:
            out = getattr(self, bn_name)(getattr(self, conv_name)(out))
            if activate:
                out = self.act(out)
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.act(out) if self.act_after_add else out


# --- ResNet (torchvision, v1.5: stride in the 3x3 conv) ---
def resnet_block(cin: int, planes: int, stride: int, bottleneck: bool) -> ConvChain:
    cout = planes * 4 if bottleneck else planes
    if bottleneck:
        convs = [conv(cin, planes, 1), conv(planes, planes, 3, stride), conv(planes, cout, 1)]
    else:
        convs = [conv(cin, planes, 3, stride), conv(planes, planes, 3)]
    steps = [(f"conv{i}", f"bn{i}", c, i < len(convs)) for i, c in enumerate(convs, start=1)]
    shortcut: nn.Module = nn.Identity()
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
    return ConvChain(steps, nn.ReLU(inplace=True), shortcut, act_after_add=True)


class ResNet(nn.Module):
    def __init__(self, depths: list[int], bottleneck: bool, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = conv(3, 64, 7, 2)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True), start=1):
            cout = planes * 4 if bottleneck else planes
            setattr(self, f"layer{i}", nn.Sequential(*[
                resnet_block(cout if j else cin, planes, 2 if i > 1 and j == 0 else 1, bottleneck)
                for j in range(depth)]))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- DenseNet-121 (torchvision) ---
class DenseLayer(nn.Sequential):
    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat(features, 1))


def dense_layer(cin: int, growth: int = 32, bn_size: int = 4) -> DenseLayer:
    return DenseLayer(OrderedDict(
        norm1=nn.BatchNorm2d(cin), relu1=nn.ReLU(inplace=True),
        conv1=conv(cin, bn_size * growth, 1), norm2=nn.BatchNorm2d(bn_size * growth),
        relu2=nn.ReLU(inplace=True), conv2=conv(bn_size * growth, growth, 3)))


class DenseBlock(nn.ModuleDict):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self, block_config: tuple[int, ...] = (6, 12, 24, 16), growth: int = 32,
                 num_classes: int = 1000) -> None:
        super().__init__()
        modules: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=conv(3, 64, 7, 2), norm0=nn.BatchNorm2d(64), relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(3, 2, 1))
        c = 64
        for i, n in enumerate(block_config, start=1):
            modules[f"denseblock{i}"] = DenseBlock(
                {f"denselayer{j + 1}": dense_layer(c + j * growth, growth) for j in range(n)})
            c += n * growth
            if i < len(block_config):
                modules[f"transition{i}"] = nn.Sequential(OrderedDict(
                    norm=nn.BatchNorm2d(c), relu=nn.ReLU(inplace=True),
                    conv=conv(c, c // 2, 1), pool=nn.AvgPool2d(2, 2)))
                c //= 2
        modules["norm5"] = nn.BatchNorm2d(c)
        self.features = nn.Sequential(modules)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(F.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(out, 1))


# --- EfficientNet-B0 (torchvision naming) ---
class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(scale))))


class MBConv(nn.Module):
    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = [conv_bn(cin, mid, 1, act=nn.SiLU)] if expand != 1 else []
        layers += [conv_bn(mid, mid, k, stride, groups=mid, act=nn.SiLU),
                   SqueezeExcitation(mid, max(1, cin // 4)), conv_bn(mid, cout, 1)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


# (expand, kernel, stride, in, out, repeats) for B0; shared by lite0 (which drops SE).
B0_STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
             (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
             (6, 3, 1, 192, 320, 1)]


def b0_stages(block: Callable[[int, int, int, int, int], nn.Module]) -> list[nn.Sequential]:
    """One Sequential per stage; only a stage's first block strides and changes width."""
    return [nn.Sequential(*[block(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout)
                            for i in range(n)]) for e, k, s, cin, cout, n in B0_STAGES]


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 32, 3, 2, act=nn.SiLU), *b0_stages(MBConv),
                                      conv_bn(320, 1280, 1, act=nn.SiLU))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- EfficientNet-Lite0 (timm naming: no SE, ReLU6, symmetric padding, BN eps 1e-5) ---
def lite_block(expand: int, k: int, stride: int, cin: int, cout: int) -> ConvChain:
    """timm's DepthwiseSeparableConv (expand 1) or InvertedResidual, both without SE."""
    mid = cin * expand
    dw = conv(mid, mid, k, stride, groups=mid)
    if expand == 1:
        steps = [("conv_dw", "bn1", dw, True), ("conv_pw", "bn2", conv(mid, cout, 1), False)]
    else:
        steps = [("conv_pw", "bn1", conv(cin, mid, 1), True), ("conv_dw", "bn2", dw, True),
                 ("conv_pwl", "bn3", conv(mid, cout, 1), False)]
    shortcut = nn.Identity() if stride == 1 and cin == cout else None
    return ConvChain(steps, nn.ReLU6(inplace=True), shortcut, act_after_add=False)


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = conv(3, 32, 3, 2)
        self.bn1 = nn.BatchNorm2d(32)
        self.blocks = nn.Sequential(*b0_stages(lite_block))
        self.conv_head = conv(320, 1280, 1)
        self.bn2 = nn.BatchNorm2d(1280)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu6(self.bn1(self.conv_stem(x))))
        x = F.relu6(self.bn2(self.conv_head(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- registry ---
@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[], nn.Module]
    head_attr: str
    in_features: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_url: str | None = None


TV = "https://download.pytorch.org/models/"
# Weights are torchvision's IMAGENET1K_V1, i.e. what the legacy `pretrained=True` loaded.
ARCHITECTURES: dict[str, Arch] = {a.name: a for a in [
    *(Arch(n, partial(VGG, VGG_DEPTHS[n]), "classifier", 25088, weights_url=TV + file)
      for n, file in [("vgg11", "vgg11-8a719046.pth"), ("vgg13", "vgg13-19584684.pth"),
                      ("vgg16", "vgg16-397923af.pth"), ("vgg19", "vgg19-dcbb9e9d.pth")]),
    *(Arch(n, partial(ResNet, d, f == 2048), "fc", f, weights_url=TV + file)
      for n, d, f, file in [("resnet18", [2, 2, 2, 2], 512, "resnet18-f37072fd.pth"),
                            ("resnet34", [3, 4, 6, 3], 512, "resnet34-b627a593.pth"),
                            ("resnet50", [3, 4, 6, 3], 2048, "resnet50-0676ba61.pth"),
                            ("resnet101", [3, 4, 23, 3], 2048, "resnet101-63fe2227.pth")]),
    Arch("densenet121", DenseNet, "classifier", 1024, weights_url=TV + "densenet121-a639ec97.pth"),
    Arch("efficientnet_b0", EfficientNetB0, "classifier", 1280,
         weights_url=TV + "efficientnet_b0_rwightman-7f5810bc.pth"),
    Arch("efficientnet_lite0", EfficientNetLite0, "classifier", 1280,
         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
]}


def get_arch(name: str) -> Arch:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; expected one of: "
                         f"{', '.join(ARCHITECTURES)}") from None


def build_backbone(arch: str) -> nn.Module:
    """The architecture with its 1000-class ImageNet head and random weights."""
    return get_arch(arch).build()


def attach_head(model: nn.Module, arch: str, head: nn.Module) -> nn.Module:
    """Replace the classifier (for VGG the whole `classifier` Sequential) with `head`."""
    setattr(model, get_arch(arch).head_attr, head)
    return model


def freeze_features(model: nn.Module, arch: str) -> nn.Module:
    """Stop gradients everywhere except the head."""
    model.requires_grad_(False)
    getattr(model, get_arch(arch).head_attr).requires_grad_(True)
    return model
