"""Per-sample multi-teacher weightings (CA-MKD, EBKD, min_ce): each method's defining property on fixed logits,
the weights against their formulas computed by hand, how a path of each teacher is weighted (per-sample or batch
form), the refusal of a single teacher, and a real three-teacher digits run each."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.methods import METHODS
from engine.methods.teacher_confidence import weighted_batch_loss, weighted_sample_mean
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.step import PathRoute
from engine.telemetry import Telemetry
from engine.train import NullReporter
from engine.validate import validate_spec
from tests.conftest import tiny_spec_dict

MULTI_TEACHER = ["camkd", "ebkd", "min_ce"]
TEACHERS = ["a", "b", "c"]
#: (B=2, K=3, C=3) logits. Sample 0 (label 0): a is right and confident, b is wrong (predicts 1), c is unsure.
#: Sample 1 (label 2): c is right, a is wrong, b is nearly uniform.
LOGITS = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.5, 0.2, 0.1]],
                       [[0.0, 5.0, 0.0], [0.1, 0.0, 0.2], [0.0, 0.0, 2.0]]], dtype=torch.float64)
LABELS = torch.tensor([0, 2])


def cross_entropy(row: list[float], label: int) -> float:
    return math.log(sum(math.exp(v) for v in row)) - row[label]


def entropy(row: list[float]) -> float:
    total = sum(math.exp(v) for v in row)
    return -sum(math.exp(v) / total * math.log(math.exp(v) / total) for v in row)


def weights_of(name: str, logits: torch.Tensor = LOGITS, labels: torch.Tensor = LABELS, **params) -> torch.Tensor:
    return METHODS.get(name)([], {}, {}, **params).sample_weights(logits, labels)


# ------------------------------------------------------------------ the weights' defining properties
def test_camkd_weights_are_one_minus_the_softmax_of_the_cross_entropies_over_k_minus_one() -> None:
    got = weights_of("camkd")
    for b in range(2):
        ces = [cross_entropy(LOGITS[b, k].tolist(), int(LABELS[b])) for k in range(3)]
        softmax = [math.exp(c) / sum(math.exp(x) for x in ces) for c in ces]
        assert got[b].tolist() == pytest.approx([(1 - s) / 2 for s in softmax], rel=1e-6)
    assert got.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])


def test_camkd_gives_a_teacher_that_misclassifies_a_sample_less_weight_there_than_one_that_is_right() -> None:
    got = weights_of("camkd")
    assert got[0, 1] < got[0, 0]  # sample 0: b predicts class 1, a predicts the label
    assert got[1, 0] < got[1, 2]  # sample 1: a predicts class 1, c predicts the label


def test_ebkd_weights_follow_the_entropies_and_favour_the_certain_teacher() -> None:
    got = weights_of("ebkd")
    for b in range(2):
        entropies = [entropy(LOGITS[b, k].tolist()) for k in range(3)]
        assert got[b].tolist() == pytest.approx([(1 - h / sum(entropies)) / 2 for h in entropies], rel=1e-6)
    assert got[0, 0] > got[0, 2] and got[1, 0] > got[1, 1]  # confident teachers outweigh unsure ones
    assert got.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])


def test_ebkd_weights_do_not_change_when_the_labels_change() -> None:
    assert torch.equal(weights_of("ebkd", labels=torch.tensor([0, 2])), weights_of("ebkd", labels=torch.tensor([1, 1])))


def test_ebkd_temperature_softens_the_predictions_whose_entropy_is_measured() -> None:
    got = weights_of("ebkd", temperature=2.0)
    entropies = [entropy([v / 2.0 for v in LOGITS[0, k].tolist()]) for k in range(3)]
    assert got[0].tolist() == pytest.approx([(1 - h / sum(entropies)) / 2 for h in entropies], rel=1e-6)


def test_ebkd_shares_a_sample_equally_when_every_teacher_is_certain() -> None:
    certain = torch.tensor([[[1e4, 0.0], [0.0, 1e4]]], dtype=torch.float64)  # one-hot predictions: every entropy is 0
    assert weights_of("ebkd", certain, torch.tensor([0])).tolist() == [[0.5, 0.5]]


def test_min_ce_is_one_hot_on_each_samples_lowest_cross_entropy_teacher() -> None:
    assert weights_of("min_ce").tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    # the same logits with other labels pick other teachers: sample 0 labelled 1 -> b, sample 1 labelled 1 -> a
    assert weights_of("min_ce", labels=torch.tensor([1, 1])).tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


# ------------------------------------------------------------------ a path under its teacher's weights
def test_uniform_weights_leave_a_path_at_its_plain_value() -> None:
    losses = torch.tensor([0.5, 2.0, 1.5, 4.0])
    uniform = torch.full((4,), 1 / 3)
    assert float(weighted_sample_mean(uniform, losses, 3)) == pytest.approx(float(losses.mean()))
    assert float(weighted_batch_loss(uniform, torch.tensor(2.0), 3)) == pytest.approx(2.0)


class FakeLearner:
    """path_loss returns the path's fixed batch loss; path_sample_losses its fixed per-sample losses."""

    def __init__(self, sample: dict[str, list[float]], batch: dict[str, float]) -> None:
        self.sample, self.batch = sample, batch

    def path_loss(self, pid, student_taps, teacher_taps, ctx) -> torch.Tensor:
        return torch.tensor(self.batch[pid])

    def path_sample_losses(self, pid, student_taps, teacher_taps, ctx) -> torch.Tensor:
        return torch.tensor(self.sample[pid])


def test_a_path_of_teacher_k_is_weighted_per_sample_or_by_its_batch_mean_weight() -> None:
    routes = {"a-kd": PathRoute("a", "fc", "fc"), "c-at": PathRoute("c", "conv2", "conv2"),
              "b-rkd": PathRoute("b", "pool", "pool")}
    method = METHODS.get("min_ce")(list(routes), {pid: 1.0 for pid in routes},
                                   {"a-kd": "kd", "c-at": "at", "b-rkd": "rkd"})
    student_spots, teacher_spots = method.wanted_spots(["a", "b", "c", "unused"], routes)
    assert student_spots == set() and teacher_spots == {t: {"fc"} for t in TEACHERS}
    method.attach(FakeLearner({}, {}))
    assert method.per_sample["b-rkd"] is False  # relational: no per-sample form
    method.per_sample = {"a-kd": True, "c-at": True, "b-rkd": False}  # both forms, whatever kd and at give today
    learner = FakeLearner({"a-kd": [2.0, 6.0], "c-at": [1.0, 3.0]}, {"b-rkd": 5.0})
    ctx = StepContext(labels=LABELS, epoch=0, step=0, index=torch.tensor([10, 11]), telemetry=Telemetry(due=True),
                      teacher_taps={t: {"fc": LOGITS[:, k]} for k, t in enumerate(TEACHERS)})
    values = method.terms(learner, ctx)
    # min_ce weights are [[1, 0, 0], [0, 0, 1]]: a leads sample 0, c sample 1, b none; K = 3
    assert float(values["path:a-kd"]) == pytest.approx((3 * 1 * 2.0 + 3 * 0 * 6.0) / 2)
    assert float(values["path:c-at"]) == pytest.approx((3 * 0 * 1.0 + 3 * 1 * 3.0) / 2)
    assert float(values["path:b-rkd"]) == pytest.approx(0.0)
    recorded = ctx.telemetry.arrays["min_ce/teacher_weights"]
    assert recorded.columns == TEACHERS and recorded.index.tolist() == [10, 11]
    assert recorded.values.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("name", MULTI_TEACHER)
def test_a_spec_whose_paths_come_from_one_teacher_is_refused_naming_the_method(name: str) -> None:
    spec = parse_spec(tiny_spec_dict(method={"name": name}))
    problems = [p for p in validate_spec(spec) if p.startswith("method")]
    assert problems and name in problems[0] and "at least 2 teachers" in problems[0], problems


@pytest.mark.parametrize("name", MULTI_TEACHER)
def test_each_method_declares_a_teacher_weights_panel_of_its_own(name: str) -> None:
    panel = METHODS.get(name).telemetry
    assert panel.view == "teacher_weights" and panel.primary.key == f"{name}/teacher_weights"
    assert panel.primary.axes == ("sample", "teacher")


# ------------------------------------------------------------------ three teachers on digits
THREE_TEACHER_PATHS = [
    {"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "wide-kd", "teacher": "wide", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"},
    {"id": "mlp-rkd", "teacher": "mlp", "distiller": "rkd", "teacher_spot": "pool", "student_spot": "pool"},
]


def three_teacher_spec(method: dict | None, weighting: dict | None = None) -> dict:
    """Three inline teachers (a CNN and two MLPs), a kd path from each, an AT path and a relational RKD path."""
    source = {"kind": "train", "epochs": 1}
    return tiny_spec_dict(
        dataset={"name": "digits", "batch_size": 32, "train_size": 400},
        teachers=[{"id": "cnn", "arch": "small_cnn", "arch_params": {"width": 8}, "source": source},
                  {"id": "mlp", "arch": "mlp", "arch_params": {"hidden": [32]}, "source": source},
                  {"id": "wide", "arch": "mlp", "arch_params": {"hidden": [64]}, "source": source}],
        student={"arch": "small_cnn", "arch_params": {"width": 8}}, paths=THREE_TEACHER_PATHS,
        method=method, weighting=weighting or {"name": "fixed"}, epochs=1, telemetry_every=3, log_every=2)


@pytest.mark.parametrize("name", MULTI_TEACHER)
def test_a_three_teacher_digits_run_completes_and_records_per_sample_weights(name: str, home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(parse_spec(three_teacher_spec({"name": name})), f"run-{name}", home, reporter)
    assert 0.0 <= result["test_acc"] <= 1.0
    recorded = [r for phase, _, _, key, r in reporter.arrays if phase == "main" and key == f"{name}/teacher_weights"]
    assert len(recorded) >= 3
    for r in recorded:
        assert r.columns == ["cnn", "mlp", "wide"] and r.values.shape == (len(r.index), 3)
        assert r.values.sum(axis=1) == pytest.approx(1.0, abs=1e-6)
        assert (r.values >= 0).all()
    terms = {key for phase, _, _, key, _ in reporter.rows if phase == "main" and key.startswith("loss/path:")}
    assert terms == {f"loss/path:{p['id']}" for p in THREE_TEACHER_PATHS}
