"""(f) torchdistill's single-path KD, run by bench/speed.py inside bench/.venv-torchdistill.

Same images, teacher weights, models, batch size and optimizer as the other rows; the data loading,
loss and loop are torchdistill's own, used the way its example script (examples/torchvision/
image_classification.py) uses them: a DistillationBox from a train config whose criterion is a
WeightedSumLoss over one KDLoss term (CE + T^2 KL, T 4, as PathScope's kd path with the task loss),
then pre_epoch_process / forward_process / post_forward_process / post_epoch_process. The models are
PathScope's CIFAR ResNets passed in as a user's own nn.Module (the engine's model zoo needs only torch),
so the row measures the framework, not a different architecture. The example's per-step MetricLogger
is left out, which if anything favours torchdistill.

Prints one JSON line: {"epoch_s": [seconds of each epoch], "torchdistill": version}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchdistill
from torch.utils.data import RandomSampler, TensorDataset
from torchdistill.core.distillation import get_distillation_box

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.models import build_model  # noqa: E402  (after the path: the repository is not installed here)


def kd_criterion(temperature: float) -> dict:
    kd = {"key": "KDLoss", "kwargs": {
        "student_module_path": ".", "student_module_io": "output",
        "teacher_module_path": ".", "teacher_module_io": "output",
        "temperature": temperature, "alpha": 1.0, "beta": 1.0, "reduction": "batchmean"}}
    return {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {"criterion": kd, "weight": 1.0}}}}


def train_config(epochs: int, batch_size: int) -> dict:
    return {
        "num_epochs": epochs,
        "train_data_loader": {"dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
                              "kwargs": {"batch_size": batch_size, "num_workers": 0}},
        "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
        "optimizer": {"key": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}},
        "criterion": kd_criterion(4.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="torch file with x (N, C, H, W) and y (N,)")
    parser.add_argument("--teacher", required=True, help="resnet56 weights ({'state_dict': ...})")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    data = torch.load(args.data, weights_only=True)
    channels, size = data["x"].shape[1], data["x"].shape[-1]
    teacher = build_model("resnet56", 10, channels, size)
    teacher.load_state_dict(torch.load(args.teacher, weights_only=True)["state_dict"])
    torch.manual_seed(0)
    student = build_model("resnet20", 10, channels, size)
    device = torch.device("cpu")
    box = get_distillation_box(teacher, student, {"train": TensorDataset(data["x"], data["y"])},
                               train_config(args.epochs, args.batch_size), device, None, False, 1)
    seconds = []
    for epoch in range(box.num_epochs):
        start = time.perf_counter()
        box.pre_epoch_process(epoch=epoch)
        for sample_batch, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(sample_batch.to(device), targets.to(device), supp_dict)
            box.post_forward_process(loss=loss)
        box.post_epoch_process()
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"epoch_s": seconds, "torchdistill": torchdistill.__version__}))


if __name__ == "__main__":
    main()
