"""Writes the CIFAR-100 reproduction specs: one RunSpec per cell of the reference table in METHODS.md.

The recipe lives here, once; the YAML files next to this script are its committed output, and a test
checks that they still equal what this script produces. After changing the recipe, run
    python assets/configs/cifar100/generate.py

Recipes follow RepDistiller (Tian et al., ICLR 2020) and, for DKD, mdistiller (Zhao et al., CVPR 2022):
240 epochs of SGD (momentum 0.9, weight decay 5e-4, batch 64), lr x0.1 at epochs 150/180/210, random
crop + flip. Teachers are trained inline by the same recipe; the workspace caches a teacher by its
recipe and dataset, so all five distillation specs of a pair share one teacher.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
METHODS = ("kd", "fitnet", "at", "crd", "dkd")
METHOD_TITLES = {"kd": "KD", "fitnet": "FitNet", "at": "AT", "crd": "CRD", "dkd": "DKD"}
EPOCHS = 240
SPEC_VERSION = 2  # the spec format of engine/spec.py these files are written in (weighting, no aggregator)
# RepDistiller (and mdistiller) train these light students at lr 0.01 instead of 0.05.
LOW_LR_STUDENTS = {"mobilenetv2", "shufflenetv1", "shufflenetv2"}
# RepDistiller's loss weights: KD runs "-r 0.1 -a 0.9" (CE 0.1, KD 0.9); the others keep CE at 1
# and add only their own term ("-a 0 -b <weight>").
TASK_WEIGHT = {"kd": 0.1}
PATH_WEIGHT = {"kd": 0.9, "fitnet": 100.0, "at": 1000.0, "crd": 0.8, "dkd": 1.0}


# Specs whose paths compute differently since issue 13 made RepDistiller's conventions the defaults (AT and
# NST pool the larger feature map to the smaller size before forming their maps; CC's default form changed).
# Only AT paths between maps of different spatial sizes are affected here; tests/test_paths_conventions.py
# checks this table against the models' spot shapes. (pair stem, method) -> a note for the file's header.
CONVENTION_NOTES = {
    ("vgg13_mobilenetv2", "at"): (
        "Since issue 13, path at-layer4 computes differently: it pairs vgg13's 512x4x4 map with mobilenetv2's "
        "160x2x2 one, and the teacher's map is now average-pooled to 2x2 before the attention maps are formed "
        "(RepDistiller's AT). Before, the student's attention map was upsampled to 4x4; params "
        "{resize: legacy} on that path restores the old behaviour."),
}


@dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    stages: int  # stage spots layer1..layerN both models have; AT distils at each of them
    dkd_beta: float  # mdistiller's per-pair NCKD weight (its configs/cifar100/dkd/*.yaml)
    top1: tuple[float, ...]  # METHODS.md, in %: teacher, student alone, then one per METHODS entry

    @property
    def stem(self) -> str:
        return f"{self.teacher}_{self.student}"

    def reference(self, method: str | None) -> float:
        return self.top1[1] if method is None else self.top1[2 + METHODS.index(method)]


PAIRS = [
    Pair("resnet56", "resnet20", 3, 2.0, (72.34, 69.06, 70.66, 69.21, 70.55, 71.16, 71.97)),
    Pair("resnet110", "resnet32", 3, 2.0, (74.31, 71.14, 73.08, 71.06, 72.31, 73.48, 74.11)),
    Pair("resnet32x4", "resnet8x4", 3, 8.0, (79.42, 72.50, 73.33, 73.50, 73.44, 75.51, 76.32)),
    Pair("wrn_40_2", "wrn_16_2", 3, 6.0, (75.61, 73.26, 74.92, 73.58, 74.08, 75.48, 76.23)),
    Pair("vgg13", "vgg8", 4, 6.0, (74.64, 70.36, 72.98, 71.02, 71.43, 73.94, 74.68)),
    Pair("vgg13", "mobilenetv2", 4, 6.0, (74.64, 64.60, 67.37, 64.14, 59.40, 69.73, 69.71)),
]


def sgd(lr: float) -> dict[str, Any]:
    return {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 5e-4}


def schedule() -> dict[str, Any]:
    return {"name": "multistep", "milestones": [150, 180, 210], "gamma": 0.1}


def dataset() -> dict[str, Any]:
    # download stays off: runs must never fetch data unasked (see README.md in this folder).
    return {"name": "cifar100", "download": False, "augment": "flip_crop", "batch_size": 64}


def teacher(pair: Pair) -> dict[str, Any]:
    source = {"kind": "train", "epochs": EPOCHS, "optimizer": sgd(0.05), "schedule": schedule(), "seed": 0}
    return {"id": pair.teacher, "arch": pair.teacher, "source": source}


def paths(pair: Pair, method: str) -> list[dict[str, Any]]:
    def path(pid: str, spot: str, **params: Any) -> dict[str, Any]:
        entry = {"id": pid, "teacher": pair.teacher, "distiller": method, "teacher_spot": spot,
                 "student_spot": spot, "weight": PATH_WEIGHT[method]}
        return entry | ({"params": params} if params else {})

    if method == "kd":
        return [path("kd", "fc")]
    if method == "fitnet":
        return [path("fitnet-layer2", "layer2")]  # RepDistiller's hint layer 2: the middle stage
    if method == "at":
        return [path(f"at-layer{i}", f"layer{i}") for i in range(1, pair.stages + 1)]
    if method == "crd":
        return [path("crd", "pool")]
    if method == "dkd":
        return [path("dkd", "fc", beta=pair.dkd_beta)]  # alpha 1, T 4, 20-epoch warm-up: the defaults
    raise ValueError(f"no recipe for method {method!r}")


def spec(pair: Pair, method: str | None) -> dict[str, Any]:
    """The run for one table cell; method None is the "student alone" column."""
    label = method or "student"
    data: dict[str, Any] = {"version": SPEC_VERSION, "name": f"cifar100 {pair.teacher}->{pair.student} {label}",
                            "dataset": dataset()}
    if method is not None:
        data["teachers"] = [teacher(pair)]
    data["student"] = {"arch": pair.student}
    if method is not None:
        data["paths"] = paths(pair, method)
        data["weighting"] = {"name": "fixed", "params": {"task_weight": TASK_WEIGHT.get(method, 1.0)}}
    lr = 0.01 if pair.student in LOW_LR_STUDENTS else 0.05
    data |= {"optimizer": sgd(lr), "schedule": schedule(), "epochs": EPOCHS, "seed": 0}
    return data


def header(pair: Pair, method: str | None) -> str:
    what = f"distilled with {METHOD_TITLES[method]}" if method else "the student trained alone (cross-entropy only)"
    note = CONVENTION_NOTES.get((pair.stem, method))
    return (
        f"# CIFAR-100, {pair.teacher} -> {pair.student}: {what}.\n"
        f"# Reference top-1: {pair.reference(method):.2f}% (teacher {pair.top1[0]:.2f}%, student alone "
        f"{pair.top1[1]:.2f}%; METHODS.md, from RepDistiller/mdistiller).\n"
        "# Data: cifar-100-python/ under ~/.cache/pathscope/cifar100, or set dataset.root (see README.md).\n"
        + ("".join(f"# {line}\n" for line in textwrap.wrap(note, 110)) if note else "")
        + "# Generated by generate.py in this folder: change the recipe there and re-run it.\n"
    )


def render_all() -> dict[str, str]:
    """File name -> YAML text for every spec this folder holds."""
    files = {}
    for pair in PAIRS:
        for method in (None, *METHODS):
            body = yaml.safe_dump(spec(pair, method), sort_keys=False, default_flow_style=None, width=120)
            files[f"{pair.stem}_{method or 'student'}.yaml"] = header(pair, method) + body
    return files


def main() -> None:
    files = render_all()
    for name, text in files.items():
        (HERE / name).write_text(text)
    print(f"wrote {len(files)} specs to {HERE}")


if __name__ == "__main__":
    main()
