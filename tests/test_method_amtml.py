"""AMTML-KD: per-sample teacher weights on the simplex, a fused soft target, gradients into the
latents, the METHODS total recomputed by hand (under the "fixed" weighting), the stage-B freeze, and a real
two-teacher digits run."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.methods import METHODS
from engine.methods.amtml import AMTML, fused_log_target, teacher_weights
from engine.data import load_dataset
from engine.data.bundle import iterate_batches
from engine.models import build_model
from engine.paths.base import StepContext
from engine.runner import build_learner, execute_run
from engine.spec import RunSpec, parse_spec
from engine.store import run_dir
from engine.telemetry import Telemetry
from engine.train import Learner, NullReporter, _param_groups

TEACHERS = ["cnn", "mlp"]
PATHS = ["cnn-kd", "mlp-kd", "cnn-fitnet-conv2"]
#: the terms the three paths become: one fused term for both kd paths, a hint for the feature path
TERMS = ["amtml/fused_kd", "amtml/hint:cnn-fitnet-conv2", "amtml/reg"]


def _spec(epochs: int = 2, **params) -> RunSpec:
    """Two teachers of different archs, a kd path each and one conv2 -> conv2 feature path."""
    return parse_spec({
        "name": "amtml", "dataset": {"name": "digits", "batch_size": 64},
        "teachers": [
            {"id": "cnn", "arch": "small_cnn", "arch_params": {"width": 16}, "source": {"kind": "train", "epochs": 2}},
            {"id": "mlp", "arch": "mlp", "arch_params": {"hidden": [32]}, "source": {"kind": "train", "epochs": 2}}],
        "student": {"arch": "small_cnn", "arch_params": {"width": 8}},
        "paths": [
            {"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
            {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
            {"id": "cnn-fitnet-conv2", "teacher": "cnn", "distiller": "fitnet", "teacher_spot": "conv2",
             "student_spot": "conv2"}],
        "method": {"name": "amtml", "params": params}, "weighting": {"name": "fixed"},
        "epochs": epochs, "seed": 0, "log_every": 5, "telemetry_every": 5})


def _learner(batch: int = 8, **params) -> tuple[Learner, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A learner with untrained (random, frozen) teachers and one batch of digits."""
    spec = _spec(**params)
    bundle = load_dataset(spec.dataset)
    shape = bundle.input_shape
    torch.manual_seed(3)
    teachers = {t.id: build_model(t.arch, bundle.num_classes, shape[0], shape[1], t.arch_params).eval()
                for t in spec.teachers}
    learner = build_learner(spec, bundle, teachers, torch.device("cpu")).train()
    x, y, index = next(iterate_batches(bundle.train, batch, shuffle=False, generator=None))
    return learner, x, y, index


def _step(learner: Learner, x, y, index, due: bool = False):
    ctx = StepContext(labels=y, epoch=0, step=0, index=index, telemetry=Telemetry(due=due))
    values, _ = learner.terms(x, y, ctx)
    learner.zero_grad(set_to_none=True)
    result = learner.objective.backward(values, ctx)
    return ctx, result.values, result.total, result.weights


def test_weights_are_per_sample_distributions_and_q_is_a_distribution() -> None:
    gen = torch.Generator().manual_seed(0)
    beta, theta, w = (torch.randn(*s, generator=gen) for s in ((6, 5), (3, 5), (5, 1)))
    weights = teacher_weights(beta, theta, w)
    assert weights.shape == (6, 3) and (weights >= 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(6))
    assert weights.std(0).max() > 1e-3  # per instance, not one weight vector for the batch
    q = fused_log_target(weights, [torch.randn(6, 10, generator=gen) * 4 for _ in range(3)], 5.0).exp()
    assert (q > 0).all() and torch.allclose(q.sum(1), torch.ones(6))


def test_teachers_spots_and_path_roles() -> None:
    learner, *_ = _learner()
    agg: AMTML = learner.method
    assert agg.teacher_ids == TEACHERS and agg.theta.shape == (2, 16) and agg.W.shape == (16, 1)
    assert agg.logits_paths == {"cnn-kd": "cnn", "mlp-kd": "mlp"} and agg.hint_paths == ["cnn-fitnet-conv2"]
    assert {"pool", "fc"} <= set(learner.student.spots)
    assert all("fc" in learner.teachers[t].model.spots for t in TEACHERS)
    assert agg.task_weight == pytest.approx(0.3)
    assert learner.objective.infos["task"].weight == pytest.approx(0.3)
    infos = learner.objective.infos
    assert [n for n in infos if n != "task"] == TERMS  # the kd paths have no term of their own: fused_kd is theirs
    assert (infos["amtml/fused_kd"].weight, infos["amtml/fused_kd"].path, infos["amtml/fused_kd"].weighable) == (
        1.0, None, True)
    assert infos["amtml/hint:cnn-fitnet-conv2"].path == "cnn-fitnet-conv2"
    assert infos["amtml/hint:cnn-fitnet-conv2"].kind == "amtml/hint"
    assert not infos["amtml/reg"].weighable
    undecayed = [g for g in _param_groups(learner) if g.get("weight_decay") == 0.0]
    assert {id(p) for p in [agg.theta, agg.W]} <= {id(p) for g in undecayed for p in g["params"]}  # student's optimizer


def test_latents_and_hint_regressor_receive_gradient_and_telemetry_is_recorded() -> None:
    learner, x, y, index = _learner()
    ctx, _, _, weights = _step(learner, x, y, index, due=True)
    agg: AMTML = learner.method
    for param in [agg.theta, agg.W, *agg.regressors.parameters()]:
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert float(weights["amtml/fused_kd"]) == 1.0 and float(weights["amtml/hint:cnn-fitnet-conv2"]) == 1.0
    recorded = ctx.telemetry.arrays["amtml/teacher_weights"]
    assert recorded.values.shape == (8, 2) and recorded.columns == TEACHERS
    # the kd paths' share of the fused term: each teacher's batch-mean importance, summing to 1
    assert float(recorded.values.mean(0).sum()) == pytest.approx(1.0)
    assert recorded.index.tolist() == index.tolist()
    norms = ctx.telemetry.arrays["amtml/theta_norm"]
    assert norms.values.shape == (1, 2) and norms.index.tolist() == [-1] and norms.columns == TEACHERS


def _angles_by_hand(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at e_i between e_j - e_i and e_k - e_i, 0 when a side is zero (j or k == i)."""
    n = len(e)
    out = torch.zeros(n, n, n, dtype=e.dtype)
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if i not in (j, k):
                    u, v = e[j] - e[i], e[k] - e[i]
                    out[i, j, k] = u @ v / (u.norm() * v.norm())
    return out


def test_total_is_the_methods_equation_recomputed_by_hand() -> None:
    alpha, t, reg = 0.6, 3.0, 0.1
    learner, x, y, index = _learner(batch=5, alpha=alpha, temperature=t, init_std=0.7, angle_weight=2.0)
    ctx, losses, total, _ = _step(learner, x, y, index)
    agg: AMTML = learner.method
    s, teacher = ctx.student_taps, ctx.teacher_taps
    with torch.no_grad():
        scores = torch.stack([(s["pool"] * agg.theta[m]) @ agg.W[:, 0] for m in range(2)], dim=1)
        w = scores.exp() / scores.exp().sum(1, keepdim=True)
        q = sum(w[:, m:m + 1] * F.softmax(teacher[tid]["fc"] / t, dim=1) for m, tid in enumerate(TEACHERS))
        p_s = F.softmax(s["fc"] / t, dim=1)
        kl = (q * (q / p_s).log()).sum(1).mean()
        gap = (_angles_by_hand(s["fc"]) - _angles_by_hand(q)).abs()
        angle = torch.where(gap < 1, 0.5 * gap**2, gap - 0.5).mean()
        f_s, f_t = s["conv2"], teacher["cnn"]["conv2"]
        n_s, n_t = f_s / f_s.norm(dim=1, keepdim=True), f_t / f_t.norm(dim=1, keepdim=True)
        regressed = torch.einsum("oc,bchw->bohw", agg.regressors[0].weight[:, :, 0, 0], n_s)
        hint = ((regressed - n_t) ** 2).mean()
        expected = ((1 - alpha) * F.cross_entropy(s["fc"], y) + 2 * alpha * t**2 * kl + 2.0 * angle + hint
                    + reg * (agg.W.pow(2).sum() + agg.theta.pow(2).sum()))
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(losses["amtml/fused_kd"].detach()) == pytest.approx(float(2 * alpha * t**2 * kl + 2.0 * angle),
                                                                     rel=1e-5)
    assert float(losses["amtml/hint:cnn-fitnet-conv2"].detach()) == pytest.approx(float(hint), rel=1e-5)
    regulariser = reg * (agg.W.pow(2).sum() + agg.theta.pow(2).sum())
    assert float(losses["amtml/reg"].detach()) == pytest.approx(float(regulariser.detach()), rel=1e-6)


def test_stage_b_freezes_latents_drops_the_regulariser_and_survives_a_resume() -> None:
    learner, x, y, index = _learner(stage_a_epochs=1)
    agg: AMTML = learner.method
    _, _, stage_a_total, _ = _step(learner, x, y, index)
    agg.on_epoch_end(0)
    assert not agg.theta.requires_grad and not agg.W.requires_grad
    _, losses, stage_b_total, _ = _step(learner, x, y, index)
    assert float(losses["amtml/reg"]) == 0.0
    assert agg.theta.grad is None and agg.W.grad is None
    assert all(p.grad is not None for p in learner.student.parameters())  # the same student goes on
    regulariser = 0.1 * (agg.W.pow(2).sum() + agg.theta.pow(2).sum())
    assert float((stage_a_total - stage_b_total).detach()) == pytest.approx(float(regulariser.detach()), rel=1e-5)
    resumed, *_ = _learner(stage_a_epochs=1)
    resumed.load_checkpoint_state(learner.state_for_checkpoint())
    _step(resumed, x, y, index)
    assert not resumed.method.theta.requires_grad and resumed.method.theta.grad is None


@pytest.mark.parametrize("params, named", [({"bogus": 1}, "bogus"), ({"alpha": 1.5}, "alpha"),
                                            ({"temperature": 0}, "temperature"), ({"init_std": 0}, "init_std"),
                                            ({"stage_a_epochs": -1}, "stage_a_epochs")])
def test_invalid_params_are_value_errors_naming_the_param(params, named) -> None:
    with pytest.raises(ValueError, match=named):
        METHODS.get("amtml")(["p"], {"p": 1.0}, {"p": "kd"}, **params)


def test_digits_run_with_two_teachers_logs_weights_and_teacher_importance(home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(_spec(epochs=2, stage_a_epochs=1), "amtml", home, reporter)
    assert result["test_acc"] > 0.2  # 2 epochs of a tiny student: it learns, far from converged
    for name in TERMS:
        losses, weights = reporter.series(f"loss/{name}"), reporter.series(f"weight/{name}")
        assert len(losses) >= 5 and len(weights) == len(losses) and all(map(math.isfinite, losses))
    assert not reporter.series("loss/path:cnn-kd") and not reporter.series("weight/path:mlp-kd")  # fused_kd is theirs
    assert set(reporter.series("weight/amtml/fused_kd")) == {1.0}
    assert set(reporter.series("weight/amtml/hint:cnn-fitnet-conv2")) == {1.0}
    weighted = [sum(reporter.series(f"weight/{n}")[i] * reporter.series(f"loss/{n}")[i] for n in ["task", *TERMS])
                for i in range(len(reporter.series("loss/total")))]
    assert weighted == pytest.approx(reporter.series("loss/total"), rel=1e-4)  # the logged terms add up
    arrays = [(epoch, rec) for phase, _, epoch, key, rec in reporter.arrays
              if phase == "main" and key == "amtml/teacher_weights"]
    assert len(arrays) >= 4 and all(rec.columns == TEACHERS for _, rec in arrays)
    assert all(rec.values.shape == (len(rec.index), 2) and abs(rec.values.sum(1) - 1).max() < 1e-5
               for _, rec in arrays)
    norms = {epoch: [] for epoch in (0, 1)}
    for phase, _, epoch, key, rec in reporter.arrays:
        if phase == "main" and key == "amtml/theta_norm":
            norms[epoch].append(rec.values.tolist())
    assert norms[0][0] != norms[0][-1]  # stage A: the latents train
    checkpoints = run_dir(home, "amtml") / "checkpoints"
    after_a, last = (torch.load(checkpoints / name, weights_only=True)["method"]
                     for name in ("epoch_000.pt", "last.pt"))
    assert torch.equal(after_a["theta"], last["theta"]) and torch.equal(after_a["W"], last["W"])  # stage B
    assert bool(last["frozen"]) and len({str(n) for n in norms[1]}) == 1
