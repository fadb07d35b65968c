"""Plain PyTorch, no PathScope: a CIFAR ResNet as akamaster/pytorch_resnet_cifar10 defines it, images read
with PIL, and the accuracy of a checkpoint on a folder of class folders.

Used by the tests as the independent reference: as a script on a PathScope student file
(``python plain_cifar.py student.pt TEST_FOLDER`` prints {"acc", "samples", "engine_imported"} as JSON, using
only what the file's card says), and imported for the accuracy of a published checkpoint.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:  # option A: subsample and zero-pad channels
            pad = planes // 4
            self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def read_folder(folder: str | Path, class_names: list[str] | None = None, size: int = 32
                ) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, size, size) float32 in [0, 1] and (N,) labels; classes are the sorted subfolders (or as given)."""
    folder = Path(folder)
    names = class_names or sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(names):
        for path in sorted((folder / name).iterdir()):
            with Image.open(path) as img:
                img = img.convert("RGB")
                w, h = img.size
                if (w, h) != (size, size):  # shorter side to size, then centre crop
                    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
                    img = img.resize((new_w, new_h), Image.BILINEAR)
                    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
                    img = img.crop((left, top, left + size, top + size))
                images.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)
            labels.append(label)
    return np.stack(images), np.array(labels)


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, mean, std, batch: int = 250) -> float:
    model.eval()
    x = (torch.from_numpy(images) - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    correct = 0
    for start in range(0, len(x), batch):
        correct += int((model(x[start:start + batch]).argmax(1) == torch.from_numpy(labels[start:start + batch]))
                       .sum())
    return correct / len(labels)


def akamaster_accuracy(checkpoint: str | Path, depth: int, folder: str | Path) -> tuple[float, int]:
    """A published akamaster checkpoint (keys prefixed 'module.') on a folder, with the published normalisation."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = ResNet(depth)
    model.load_state_dict({k.removeprefix("module."): v for k, v in saved["state_dict"].items()})
    images, labels = read_folder(folder)
    return accuracy(model, images, labels, IMAGENET_MEAN, IMAGENET_STD), len(labels)


def student_accuracy(student_file: str | Path, folder: str | Path) -> tuple[float, int]:
    """A PathScope student file, using only its card: arch, classes, input size, normalisation."""
    payload = torch.load(student_file, map_location="cpu", weights_only=True)
    card = payload["card"]
    assert card["arch"].startswith("resnet"), card["arch"]
    channels, height, width = card["input_size"]
    model = ResNet(int(card["arch"].removeprefix("resnet")), card["num_classes"])
    model.load_state_dict(payload["state_dict"])
    images, labels = read_folder(folder, card["class_names"], height)
    pre = card["preprocess"]
    assert pre["pixel_max"] == 255.0
    return accuracy(model, images, labels, pre["mean"], pre["std"]), len(labels)


if __name__ == "__main__":
    acc, samples = student_accuracy(sys.argv[1], sys.argv[2])
    print(json.dumps({"acc": acc, "samples": samples, "engine_imported": "engine" in sys.modules}))
