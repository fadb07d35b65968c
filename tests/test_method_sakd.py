"""SAKD: binary per-sample spot decisions, a policy trained only through the routed network, masked path losses."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.methods import METHODS
from engine.methods.sakd import SpotAdaptive, SpotAgent, arch_family
from engine.data import load_dataset
from engine.data.bundle import iterate_batches
from engine.models import build_model
from engine.paths.base import StepContext
from engine.runner import build_learner, execute_run
from engine.spec import parse_spec
from engine.store import run_dir
from engine.telemetry import Telemetry
from engine.train import Learner, NullReporter, _param_groups
from tests.conftest import tiny_spec_dict

CNN_PATHS = [
    {"id": "at1", "teacher": "t", "distiller": "at", "teacher_spot": "conv1", "student_spot": "conv1"},
    {"id": "fit2", "teacher": "t", "distiller": "fitnet", "teacher_spot": "conv2", "student_spot": "conv2"},
    {"id": "kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
]


def _spec_dict(**params) -> dict:
    return tiny_spec_dict(
        dataset={"name": "digits", "batch_size": 32, "train_size": 512},
        teachers=[{"id": "t", "arch": "small_cnn", "arch_params": {"width": 16},
                   "source": {"kind": "train", "epochs": 2}}],
        student={"arch": "small_cnn", "arch_params": {"width": 16}},
        paths=CNN_PATHS, method={"name": "sakd", "params": params}, weighting={"name": "fixed"}, telemetry_every=4)


def _learner(spec_dict: dict) -> tuple[Learner, object]:
    """A learner over untrained teachers (their weights do not matter to these properties)."""
    torch.manual_seed(0)
    spec = parse_spec(spec_dict)
    bundle = load_dataset(spec.dataset)
    teachers = {t.id: build_model(t.arch, bundle.num_classes, bundle.input_shape[0], bundle.input_shape[1],
                                  t.arch_params).eval() for t in spec.teachers}
    return build_learner(spec, bundle, teachers, torch.device("cpu")).train(), bundle


def _step(learner: Learner, bundle, step: int = 3, due: bool = True):
    x, y, index = next(iterate_batches(bundle.train, 64, shuffle=False, generator=None))
    ctx = StepContext(labels=y, epoch=0, step=step, index=index, telemetry=Telemetry(due=due))
    values, _ = learner.terms(x, y, ctx)
    return values, ctx


@pytest.fixture(scope="module")
def mixed():
    """small_cnn -> small_cnn without the same-family start: the policy routes about half the samples."""
    return _learner(_spec_dict(same_family=False))


def test_decisions_are_exactly_binary_recorded_and_reproducible(mixed) -> None:
    learner, bundle = mixed
    agent = learner.method.agent
    _, ctx = _step(learner, bundle)
    routed = agent.decisions.routed.detach()
    assert routed.shape == (64, 3)
    assert set(routed.unique().tolist()) <= {0.0, 1.0}
    assert 0 < routed.mean() < 1  # a random policy routes some samples each way
    recorded = ctx.telemetry.arrays["sakd/decisions"]
    assert recorded.columns == ["conv1", "conv2", "fc"]
    assert recorded.values.shape == (64, 3) and (recorded.index == ctx.index.numpy()).all()
    _step(learner, bundle)  # same step, same noise
    torch.testing.assert_close(agent.decisions.routed.detach(), routed)
    _step(learner, bundle, step=4)
    assert not torch.equal(agent.decisions.routed.detach(), routed)


def test_each_path_loss_is_its_distiller_on_exactly_the_routed_samples(mixed) -> None:
    learner, bundle = mixed
    method = learner.method
    losses, ctx = _step(learner, bundle)
    chosen = method.agent.decisions.routed.detach() > 0.5
    for column, pid in enumerate(["at1", "fit2", "kd"]):
        tid, t_spot, s_spot = learner.path_spots[pid]
        rows = chosen[:, column]
        assert 2 <= rows.sum() < 64
        expected = learner.distillers[pid](ctx.student_taps[s_spot][rows], ctx.teacher_taps[tid][t_spot][rows], ctx)
        torch.testing.assert_close(losses[f"path:{pid}"], expected * rows.float().mean())
    # Teacher targets of samples not routed to the teacher at a spot cannot change that spot's loss.
    spoiled = {spot: tap.clone() for spot, tap in ctx.teacher_taps["t"].items()}
    for column, spot in enumerate(["conv1", "conv2", "fc"]):
        spoiled[spot][~chosen[:, column]] = 1e3
    again = method.terms(learner, StepContext(labels=ctx.labels, epoch=0, step=3, index=ctx.index, x=ctx.x,
                                                 student_taps=ctx.student_taps, teacher_taps={"t": spoiled}))
    for pid in ["at1", "fit2", "kd"]:
        torch.testing.assert_close(again[f"path:{pid}"], losses[f"path:{pid}"])


def test_policy_learns_from_the_routed_loss_and_never_from_the_student_loss(mixed, monkeypatch) -> None:
    learner, bundle = mixed
    method, agent = learner.method, learner.method.agent
    learner.zero_grad(set_to_none=True)
    losses, ctx = _step(learner, bundle)
    routed = agent.decisions.routed
    monkeypatch.setattr(agent, "step", lambda values, ctx: None)  # the student's backward alone
    result = learner.objective.backward(losses, ctx)
    assert all(p.grad is None for p in agent.parameters())  # policy and adapters untouched by the student loss
    assert learner.student.model.conv1[0].weight.grad is not None
    # the logged weight is the configured w_k; the routed share n_l / B is inside the value (see above)
    assert float(result.weights["path:kd"]) == pytest.approx(method.path_weights["kd"])
    assert float(result.weights["path:at1"]) == pytest.approx(method.path_weights["at1"])
    expected = losses["task"] + sum(method.path_weights[pid] * losses[f"path:{pid}"] for pid in ["at1", "fit2", "kd"])
    assert float(result.total) == pytest.approx(float(expected.detach()), rel=1e-6)
    agent.loss(ctx, routed, losses["task"].detach()).backward()
    assert agent.policy.weight.grad is not None and agent.policy.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in [*agent.to_teacher.parameters(), *agent.to_student.parameters()])
    teacher = learner.teachers["t"].model
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    recorded = ctx.telemetry.arrays["sakd/agent_losses"]
    assert recorded.columns == ["l_route", "l_student"] and recorded.values.shape == (1, 2)
    assert recorded.index.tolist() == [-1]


def test_agent_steps_inside_backward_before_the_student_backward(mixed, monkeypatch) -> None:
    learner, bundle = mixed
    agent = learner.method.agent
    assert learner.method.learners() == [agent] and agent.name == "sakd/agent"
    assert learner.objective.learners == [agent]
    learner.zero_grad(set_to_none=True)
    losses, ctx = _step(learner, bundle)
    before = agent.policy.weight.detach().clone()
    seen = {}
    agent_step = SpotAgent.step

    def spy(self, values, ctx):
        agent_step(self, values, ctx)
        seen["policy_moved"] = not torch.equal(self.policy.weight, before)
        seen["student_grad"] = learner.student.model.conv1[0].weight.grad

    monkeypatch.setattr(SpotAgent, "step", spy)
    student_weight = learner.student.model.conv1[0].weight.detach().clone()
    learner.objective.backward(losses, ctx)
    assert seen == {"policy_moved": True, "student_grad": None}  # the agent's backward left the student alone
    assert learner.student.model.conv1[0].weight.grad is not None
    assert torch.equal(learner.student.model.conv1[0].weight, student_weight)  # the loop steps the student
    in_student_optimizer = {id(p) for group in _param_groups(learner) for p in group["params"]}
    assert not in_student_optimizer & {id(p) for p in agent.parameters()}
    assert learner.own_learner_parameters() == {id(p) for p in agent.parameters()}
    assert learner.method.state_dict()["agent._extra_state"]["optimizer"]["state"]  # Adam moments, saved with the method


def test_agent_refuses_decisions_of_another_step(mixed) -> None:
    learner, bundle = mixed
    losses, ctx = _step(learner, bundle, step=5)
    ctx.step = 6  # a step whose terms() never ran
    with pytest.raises(RuntimeError, match="no decisions for step 6"):
        learner.method.agent.step(losses, ctx)


def test_same_family_pairs_start_by_distilling_everywhere() -> None:
    learner, bundle = _learner(_spec_dict())
    _step(learner, bundle)
    assert bool((learner.method.agent.decisions.routed == 1).all())
    assert arch_family("resnet20") == arch_family("resnet8x4") == arch_family("resnet18") == "resnet"
    assert arch_family("mobilenetv2") == arch_family("mobilenet_v3_small") == "mobilenet"
    assert {arch_family(a) for a in ("vgg8", "wrn_40_2", "small_cnn", "mlp", "shufflenetv1")} == {
        "vgg", "wrn", "small", "mlp", "shufflenet"}


def test_embedding_spots_route_through_linear_adapters_without_an_output_path() -> None:
    spec = tiny_spec_dict(
        teachers=[{"id": "t", "arch": "mlp", "arch_params": {"hidden": [32, 24]},
                   "source": {"kind": "train", "epochs": 2}}],
        student={"arch": "mlp", "arch_params": {"hidden": [16, 8]}},
        paths=[{"id": "h1", "teacher": "t", "distiller": "fitnet", "teacher_spot": "fc1", "student_spot": "fc1"}],
        method={"name": "sakd"}, weighting={"name": "fixed"})
    learner, bundle = _learner(spec)
    losses, ctx = _step(learner, bundle)
    method, agent = learner.method, learner.method.agent
    assert method.routing.spots == ["fc1", "fc"]
    assert agent.route(ctx.x, agent.decisions.routed).shape == (64, 10)
    result = learner.objective.backward(losses, ctx)
    assert torch.isfinite(result.total) and set(result.weights) == {"task", "path:h1"}
    x, y, index = next(iterate_batches(bundle.train, 1, shuffle=False, generator=None))
    ragged = StepContext(labels=y, epoch=0, step=9, index=index)  # a last batch of one sample
    losses, _ = learner.terms(x, y, ragged)
    assert float(losses["path:h1"]) == 0.0
    assert torch.isfinite(learner.objective.backward(losses, ragged).total)


def test_bad_params_are_refused() -> None:
    cls = METHODS.get("sakd")
    assert cls is SpotAdaptive and cls.needs_live_teachers
    for params, name in [({"gamma": 0.5}, "gamma"), ({"tau": 0}, "tau"), ({"lr": -1}, "lr"),
                         ({"same_family": "yes"}, "same_family"), ({"temperature": 1}, "temperature")]:
        with pytest.raises(ValueError, match=name):
            cls(["p"], {"p": 1.0}, {"p": "kd"}, **params)
    spec = _spec_dict(route_teacher="ghost")
    with pytest.raises(ValueError, match="route_teacher 'ghost' has no path"):
        _learner(spec)


def test_second_teacher_follows_the_decisions_at_routed_spots_only() -> None:
    spec = _spec_dict()
    spec["teachers"].append({"id": "u", "arch": "mlp", "source": {"kind": "train", "epochs": 2}})
    spec["paths"] = [*CNN_PATHS,
                     {"id": "u-kd", "teacher": "u", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
                     {"id": "u-rkd", "teacher": "u", "distiller": "rkd", "teacher_spot": "pool", "student_spot": "pool"}]
    learner, bundle = _learner(spec)
    method = learner.method
    assert method.routing.teacher_id == "t"  # the first teacher distilled at the output routes
    x, y, index = next(iterate_batches(bundle.train, 16, shuffle=False, generator=None))
    ctx = StepContext(labels=y, epoch=0, step=3, index=index)
    losses, _ = learner.terms(x, y, ctx)
    at_output = (method.agent.decisions.routed[:, -1] > 0.5).nonzero().squeeze(1)
    sub = {"fc": ctx.student_taps["fc"][at_output]}
    expected = learner.path_loss("u-kd", sub, {"u": {"fc": ctx.teacher_taps["u"]["fc"][at_output]}}, ctx)
    torch.testing.assert_close(losses["path:u-kd"], expected * len(at_output) / 16)
    full = learner.path_loss("u-rkd", ctx.student_taps, ctx.teacher_taps, ctx)
    torch.testing.assert_close(losses["path:u-rkd"], full)  # pool is not routed: the whole batch


def test_digits_run_records_decisions_and_resumes_exactly(home: Path) -> None:
    straight = NullReporter()
    result = execute_run(parse_spec(_spec_dict(same_family=False)), "straight", home, straight)
    assert result["epochs"] == 2
    task = straight.series("loss/task")
    assert task[-1] < task[0]  # 32 steps from scratch: learning, far from done
    decisions = [a for a in straight.arrays if a[0] == "main" and a[3] == "sakd/decisions"]
    assert len(decisions) >= 4
    assert all(a[4].columns == ["conv1", "conv2", "fc"] and set(a[4].values.ravel()) <= {0.0, 1.0}
               for a in decisions)
    assert any(a[3] == "sakd/agent_losses" for a in straight.arrays)
    for pid in ["at1", "fit2", "kd"]:
        assert straight.series(f"weight/path:{pid}") and straight.series(f"loss/path:{pid}")
    execute_run(parse_spec(_spec_dict(same_family=False) | {"epochs": 1}), "resumed", home, NullReporter())
    execute_run(parse_spec(_spec_dict(same_family=False)), "resumed", home, NullReporter())
    final = {rid: torch.load(run_dir(home, rid) / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
             for rid in ("straight", "resumed")}
    assert all(torch.equal(final["straight"][k], final["resumed"][k]) for k in final["straight"])
