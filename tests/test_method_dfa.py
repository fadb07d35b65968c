"""DFA: alpha search on the simplex, its pull towards the informative map, the mixed teacher tap, a digits run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.methods import METHODS
from engine.methods.dfa import DFA, stage_blocks
from engine.data.bundle import DataBundle, Split
from engine.models import build_model
from engine.models.spots import TappedModel
from engine.paths import DISTILLERS
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.train import Learner, NullReporter, TappedShapes, TeacherTaps, _param_groups
from engine.weightings import WEIGHTINGS
from tests.conftest import tiny_spec_dict

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are tiny: on a shared 2-core machine a second intra-op thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ a constructed problem
class FixedBlock(nn.Module):
    """A frozen 1x1 channel mix: a block (a module with children) as stage_blocks counts them."""

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__()
        w = torch.tensor(weight, dtype=torch.float32)
        self.mix = nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False)
        self.mix.weight.data = w[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x)


class ThreeBlockTeacher(nn.Module):
    """Stage conv1 = three blocks. Input channel 0 carries the label, channel 1 is pure noise: block 0
    keeps both, blocks 1 and 2 read only the noise, so only the first block's map knows the label.
    Laid out like small_cnn (num_stages, conv1, flatten, fc) so small_cnn's spot names apply."""

    num_stages = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            FixedBlock([[1, 0], [-1, 0], [0, 1], [0, -1]]),
            FixedBlock([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, -1]]),
            FixedBlock([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 0.5]]))
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv1(x).mean((2, 3)), 1))


def _split(n: int, gen: torch.Generator) -> Split:
    y = torch.randint(0, 2, (n,), generator=gen)
    square = torch.zeros(8, 8)
    square[2:6, 2:6] = 0.5
    signal = (2 * y - 1).float()[:, None, None] * square + 0.5 * torch.randn(n, 8, 8, generator=gen)
    return Split(torch.stack([signal, torch.randn(n, 8, 8, generator=gen)], 1), y, torch.arange(n))


def _bundle() -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    train, val, test = _split(512, gen), _split(256, gen), _split(64, gen)
    return DataBundle("synthetic", 2, 2, 8, ["neg", "pos"], (0.0, 0.0), (1.0, 1.0), train, val, test)


def _learner(**params) -> tuple[Learner, DFA, ThreeBlockTeacher]:
    """Teacher conv1 -> student conv1 (at) and teacher fc -> student fc (kd)."""
    teacher = ThreeBlockTeacher().eval()
    torch.manual_seed(0)
    student = TappedModel(build_model("small_cnn", 2, 2, 8, {"width": 4}), "small_cnn", ["conv1"])
    shapes = TappedShapes(student={"conv1": (4, 8, 8), "fc": (2,)}, teachers={"t": {"conv1": (4, 8, 8), "fc": (2,)}})
    distillers = {"map": DISTILLERS.get("at")((4, 8, 8), (4, 8, 8)), "kd": DISTILLERS.get("kd")((2,), (2,))}
    path_spots = {"map": ("t", "conv1", "conv1"), "kd": ("t", "fc", "fc")}
    dfa = METHODS.get("dfa")(list(path_spots), {"map": 1000.0, "kd": 1.0}, {"map": "at", "kd": "kd"}, **params)
    teachers = {"t": TeacherTaps(TappedModel(teacher, "small_cnn", ["conv1"]))}
    fixed = WEIGHTINGS.get("fixed")
    return Learner(student, distillers, path_spots, dfa, lambda terms: fixed(terms), teachers, shapes), dfa, teacher


def test_params_are_checked_and_named() -> None:
    assert METHODS.get("dfa") is DFA and DFA.needs_live_teachers  # block outputs need the teacher's live forward
    with pytest.raises(ValueError, match="bogus"):
        DFA(["p"], {"p": 1.0}, {"p": "at"}, bogus=1)
    for name, bad in [("search_epochs", -1), ("b_lr", 0.0), ("g_st", -1.0), ("batch_size", 1.5), ("lam", "x")]:
        with pytest.raises(ValueError, match=name):
            DFA(["p"], {"p": 1.0}, {"p": "at"}, **{name: bad})


def test_layer_groups_are_the_stage_blocks() -> None:
    def blocks(arch: str, node: str) -> list[str]:
        return stage_blocks(build_model(arch, 10, 3, 32, {}), node)

    assert blocks("resnet14", "layer2") == ["layer2.0", "layer2.1"]
    assert blocks("resnet8", "layer1") == ["layer1.0"]
    assert blocks("resnet14", "relu") == ["relu"]  # the stem is a function node: one map
    assert blocks("wrn_16_2", "block1") == ["block1.layer.0", "block1.layer.1"]  # through the ".layer" wrapper
    assert blocks("small_cnn", "conv2") == ["conv2"]  # plain conv/BN/ReLU layers are not blocks
    assert stage_blocks(ThreeBlockTeacher(), "conv1") == ["conv1.0", "conv1.1", "conv1.2"]


def test_search_keeps_alpha_on_the_simplex_and_favours_the_informative_map() -> None:
    learner, dfa, _ = _learner(search_epochs=3, b_lr=0.05)
    reporter = NullReporter()
    rng_before = torch.get_rng_state()
    dfa.prepare(learner, _bundle(), CPU, reporter)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the search draws from its own seeded RNG
    alphas = [rec for phase, _, _, key, rec in reporter.arrays if phase == "search" and key == "dfa/alpha:conv1"]
    assert len(alphas) == 3  # one per search epoch
    for rec in alphas:
        assert rec.values.shape == (1, 3) and rec.values.dtype == np.float32
        assert rec.index.tolist() == [-1] and rec.columns == ["conv1.0", "conv1.1", "conv1.2"]
        assert (rec.values > 0).all() and rec.values.sum() == pytest.approx(1.0, abs=1e-6)
    entropies = reporter.series("dfa/entropy:conv1", "search")
    assert len(entropies) == 3 * 8 and all(0 < h <= np.log(3) + 1e-6 for h in entropies)
    assert entropies[-1] < entropies[0]
    assert len(reporter.series("dfa/loss_ts", "search")) == len(reporter.series("dfa/loss_st", "search")) == 24
    alpha = dfa.alpha(0).detach()
    assert alpha[0] > 1 / 3 + 0.1, alpha  # the informative block 0 wins over the two noise blocks
    assert alpha[1] < 1 / 3 and alpha[2] < 1 / 3
    assert any("dfa: searched alpha conv1: conv1.0" in message for _, message in reporter.events)
    assert bool(dfa.searched) and "b.0" in dfa.state_dict()
    in_student_optimizer = {id(p) for group in _param_groups(learner) for p in group["params"]}
    assert not in_student_optimizer & {id(p) for p in dfa.b}  # b is searched in prepare() and frozen afterwards

    again, dfa_again, _ = _learner(search_epochs=3, b_lr=0.05)
    dfa_again.prepare(again, _bundle(), CPU, NullReporter())
    assert torch.equal(dfa_again.b[0], dfa.b[0])  # deterministic: a resumed run finds the same alpha
    dfa_again.load_state_dict(dfa.state_dict())  # and the checkpoint's b fits the re-searched one
    rows = len(reporter.rows)
    dfa.prepare(learner, _bundle(), CPU, reporter)  # already searched: nothing happens
    assert len(reporter.rows) == rows and torch.equal(dfa_again.b[0], dfa.b[0])


def test_path_losses_give_the_distiller_the_alpha_mix() -> None:
    learner, dfa, teacher = _learner(search_epochs=0)
    dfa.prepare(learner, _bundle(), CPU, NullReporter())
    with torch.no_grad():
        dfa.b[0].copy_(torch.tensor([1.0, -0.5, 0.3]))
    x, y = _bundle().train.x[:16], _bundle().train.y[:16]
    ctx = StepContext(labels=y, epoch=0, step=0, index=torch.arange(16))
    losses, _ = learner.terms(x, y, ctx)

    with torch.no_grad():  # the mix computed independently, block by block
        t0 = teacher.conv1[0](x)
        t1 = teacher.conv1[1](t0)
        t2 = teacher.conv1[2](t1)
        weights = torch.softmax(torch.tensor([1.0, -0.5, 0.3]), 0)
        mixed = weights[0] * t0 + weights[1] * t1 + weights[2] * t2
    expected = learner.distillers["map"](ctx.student_taps["conv1"], mixed, ctx)
    torch.testing.assert_close(losses["path:map"], expected)
    plain = learner.distillers["map"](ctx.student_taps["conv1"], ctx.teacher_taps["t"]["conv1"], ctx)
    assert not torch.allclose(plain, expected)  # the stage output alone would give another loss
    kd = learner.distillers["kd"](ctx.student_taps["fc"], ctx.teacher_taps["t"]["fc"], ctx)
    torch.testing.assert_close(losses["path:kd"], kd)  # logits paths pass unchanged

    result = learner.objective.backward(losses, ctx)
    assert dfa.b[0].grad is None  # the mix is detached: b stays frozen in stage 2
    assert {name: float(w) for name, w in result.weights.items()} == {"task": 1.0, "path:map": 1000.0, "path:kd": 1.0}
    infos = learner.objective.infos
    assert (infos["path:map"].path, infos["path:map"].kind, infos["path:kd"].kind) == ("map", "at", "kd")


# ------------------------------------------------------------------ a real run
def test_digits_run_searches_then_distils(home: Path) -> None:
    """resnet14 teacher (two blocks per stage: real search) and small_cnn teacher (single maps)."""
    inline = {"kind": "train", "epochs": 2}
    teachers = [{"id": "r", "arch": "resnet14", "source": inline},
                {"id": "c", "arch": "small_cnn", "arch_params": {"width": 32}, "source": inline}]
    paths = [
        {"id": "r-l1", "teacher": "r", "distiller": "at", "teacher_spot": "layer1", "student_spot": "conv1"},
        {"id": "r-l2", "teacher": "r", "distiller": "fitnet", "teacher_spot": "layer2", "student_spot": "conv2"},
        {"id": "c-c1", "teacher": "c", "distiller": "at", "teacher_spot": "conv1", "student_spot": "conv1"},
        {"id": "c-kd", "teacher": "c", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    ]
    spec = parse_spec(tiny_spec_dict(teachers=teachers, paths=paths, student={"arch": "small_cnn",
                                     "arch_params": {"width": 16}},
                                     method={"name": "dfa", "params": {"search_epochs": 1, "lam": 0.02}},
                                     weighting={"name": "fixed"}))
    reporter = NullReporter()
    result = execute_run(spec, "dfa", home, reporter)
    assert result["test_acc"] > 0.5, result

    search_keys = {row[3] for row in reporter.rows if row[0] == "search" and not row[3].startswith("system/")}
    labels = ["conv1@r-l1", "conv2", "conv1@c-c1"]  # conv1 is shared by two paths: the path id tells them apart
    assert {"dfa/loss_ts", "dfa/loss_st", *(f"dfa/entropy:{label}" for label in labels)} == search_keys
    arrays = {key: rec for phase, _, _, key, rec in reporter.arrays if phase == "search"}
    assert arrays["dfa/alpha:conv2"].columns == ["layer2.0", "layer2.1"]
    single = arrays["dfa/alpha:conv1@c-c1"]  # small_cnn's stages are plain layers: one map, alpha = [1]
    assert single.columns == ["conv1"] and single.values.tolist() == [[1.0]]
    for rec in arrays.values():
        assert rec.values.sum() == pytest.approx(1.0, abs=1e-6) and rec.index.tolist() == [-1]
    assert any(message.startswith("dfa: searched alpha") for _, message in reporter.events)

    for pid, weight in {"r-l1": 20.0, "r-l2": 2.0, "c-c1": 20.0, "c-kd": 0.02}.items():  # lam x conventional
        assert reporter.series(f"weight/path:{pid}") == pytest.approx([weight] * 9)  # 42 steps, logged every 5th
        assert reporter.series(f"loss/path:{pid}")
    assert max(row[2] for row in reporter.rows if row[0] == "main") == 1  # stage 2 trained both epochs
