"""The logit distillers (kd, dkd, logits, dist, wttm, nkd) and logit standardisation: each loss and each
per-sample loss against its formula written out here in numpy, gradients (gradcheck, float64), the
per-sample contract (mean equals the loss), shape refusals at construction, and a short digits run each."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.paths import DISTILLERS
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.train import NullReporter
from tests.conftest import tiny_spec_dict

LABELS = np.array([0, 3, 1, 4])
STUDENT = np.array([[1.2, -0.3, 0.5, 2.0, -1.1],
                    [0.1, 0.4, -2.2, 1.5, 0.3],
                    [-0.7, 2.4, 0.0, -0.2, 1.1],
                    [0.9, -1.5, 0.8, 0.2, 3.0]])
TEACHER = np.array([[3.1, 0.2, -0.4, 1.0, -2.0],
                    [-1.0, 0.6, -0.9, 4.2, 0.5],
                    [0.3, 3.5, -1.2, 0.1, 0.7],
                    [1.4, -0.8, 0.2, -0.6, 2.5]])
SAMPLE_LOSS_NAMES = ["kd", "dkd", "logits", "wttm", "nkd"]
STANDARDISED = ["kd", "dkd", "dist", "wttm", "nkd"]


def ctx(epoch: int = 100) -> StepContext:
    return StepContext(labels=torch.tensor(LABELS), epoch=epoch, step=0, index=torch.arange(len(LABELS)))


def tensor(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def build(name: str, **params):
    return DISTILLERS.get(name)((5,), (5,), **params).double()


# ---------------------------------------------------------------- the formulas, written out
def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def zscore(v: np.ndarray) -> np.ndarray:
    """Sun et al.'s standardisation: unbiased std, 1e-7 added to it."""
    return (v - v.mean()) / (v.std(ddof=1) + 1e-7)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def rows(s: np.ndarray, t: np.ndarray, standardize: bool):
    for i in range(len(s)):
        yield i, (zscore(s[i]) if standardize else s[i]), (zscore(t[i]) if standardize else t[i])


def ref_kd(s, t, standardize=False, temp=4.0):
    return [temp**2 * kl(softmax(ti / temp), softmax(si / temp)) for _, si, ti in rows(s, t, standardize)]


def ref_dkd(s, t, standardize=False, alpha=1.0, beta=8.0, temp=4.0):
    out = []
    for i, si, ti in rows(s, t, standardize):
        y, others = LABELS[i], [c for c in range(s.shape[1]) if c != LABELS[i]]
        p_s, p_t = softmax(si / temp), softmax(ti / temp)
        tckd = kl(np.array([p_t[y], 1 - p_t[y]]), np.array([p_s[y], 1 - p_s[y]]))
        nckd = kl(softmax(ti[others] / temp), softmax(si[others] / temp))
        out.append((alpha * tckd + beta * nckd) * temp**2)
    return out


def ref_logits(s, t):
    return [float(np.mean((s[i] - t[i]) ** 2)) for i in range(len(s))]


def ref_wttm(s, t, standardize=False, gamma=0.2):
    out = []
    for _, si, ti in rows(s, t, standardize):
        powered = softmax(ti) ** gamma
        out.append(powered.sum() * kl(powered / powered.sum(), softmax(si)))
    return out


def ref_nkd(s, t, standardize=False, gamma=3.5, temp=3.0):
    out = []
    for i, si, ti in rows(s, t, standardize):
        y, others = LABELS[i], [c for c in range(s.shape[1]) if c != LABELS[i]]
        target = -softmax(ti)[y] * np.log(softmax(si)[y])
        q_t, q_s = softmax(ti[others] / temp), softmax(si[others] / temp)
        out.append(target - gamma * temp**2 * float(np.sum(q_t * np.log(q_s))))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """As the DIST reference: a cosine of the centred vectors, 1e-8 added to the product of norms."""
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8))


def ref_dist(s, t, standardize=False, beta=1.0, gamma=1.0, temp=4.0):
    y_s = np.array([softmax(si / temp) for _, si, _ in rows(s, t, standardize)])
    y_t = np.array([softmax(ti / temp) for _, _, ti in rows(s, t, standardize)])
    inter = 1 - np.mean([pearson(y_s[i], y_t[i]) for i in range(len(s))])
    intra = 1 - np.mean([pearson(y_s[:, c], y_t[:, c]) for c in range(s.shape[1])])
    return temp**2 * (beta * inter + gamma * intra)


PER_SAMPLE = {"kd": ref_kd, "dkd": ref_dkd, "wttm": ref_wttm, "nkd": ref_nkd}


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("name", sorted(PER_SAMPLE))
def test_per_sample_losses_and_loss_match_the_formula(name, standardize):
    d = build(name, standardize=standardize)
    expected = PER_SAMPLE[name](STUDENT, TEACHER, standardize)
    s, t = tensor(STUDENT), tensor(TEACHER)
    assert d.sample_losses(s, t, ctx()).tolist() == pytest.approx(expected, rel=1e-9)
    assert d(s, t, ctx()).item() == pytest.approx(np.mean(expected), rel=1e-9)


def test_logits_per_sample_losses_match_the_formula():
    d = build("logits")
    s, t = tensor(STUDENT), tensor(TEACHER)
    assert d.sample_losses(s, t, ctx()).tolist() == pytest.approx(ref_logits(STUDENT, TEACHER), rel=1e-12)
    assert d(s, t, ctx()).item() == pytest.approx(np.mean((STUDENT - TEACHER) ** 2), rel=1e-12)


@pytest.mark.parametrize("standardize", [False, True])
def test_dist_matches_pearson_relations(standardize):
    loss = build("dist", standardize=standardize)(tensor(STUDENT), tensor(TEACHER), ctx()).item()
    assert loss == pytest.approx(ref_dist(STUDENT, TEACHER, standardize), rel=1e-9)


def test_dist_weights_its_two_relations():
    s, t = tensor(STUDENT), tensor(TEACHER)
    inter_only = build("dist", gamma=0.0, temperature=1.0)(s, t, ctx()).item()
    intra_only = build("dist", beta=0.0, temperature=1.0)(s, t, ctx()).item()
    assert inter_only == pytest.approx(ref_dist(STUDENT, TEACHER, beta=1.0, gamma=0.0, temp=1.0), rel=1e-9)
    assert intra_only == pytest.approx(ref_dist(STUDENT, TEACHER, beta=0.0, gamma=1.0, temp=1.0), rel=1e-9)
    # without the eps, a Pearson correlation as numpy computes it
    corr = np.mean([np.corrcoef(softmax(STUDENT[i]), softmax(TEACHER[i]))[0, 1] for i in range(len(STUDENT))])
    assert inter_only == pytest.approx(1 - corr, rel=1e-6)


@pytest.mark.parametrize("name,params", [("kd", {"temperature": 2.0}), ("dkd", {"alpha": 9.0, "beta": 81.0}),
                                         ("wttm", {"gamma": 0.5}), ("nkd", {"gamma": 1.5, "temperature": 1.0})])
def test_parameters_reach_the_formula(name, params):
    renamed = {"temperature": "temp"}
    expected = PER_SAMPLE[name](STUDENT, TEACHER, True, **{renamed.get(k, k): v for k, v in params.items()})
    got = build(name, standardize=True, **params).sample_losses(tensor(STUDENT), tensor(TEACHER), ctx())
    assert got.tolist() == pytest.approx(expected, rel=1e-9)


def test_wttm_with_gamma_one_is_kd_at_temperature_one():
    """gamma = 1: the power sum is 1 for every sample and the transformed teacher is the teacher itself."""
    s, t = tensor(STUDENT), tensor(TEACHER)
    wttm = build("wttm", gamma=1.0).sample_losses(s, t, ctx())
    kd = build("kd", temperature=1.0).sample_losses(s, t, ctx())
    assert torch.allclose(wttm, kd, rtol=1e-12)


def test_wttm_weighs_an_unsure_teacher_more():
    """Same KL to match, a flatter teacher: WTTM's sample weight (the power sum) is larger."""
    sure, unsure = np.array([[6.0, 0.0, 0.0]]), np.array([[1.0, 0.0, 0.0]])
    d = DISTILLERS.get("wttm")((3,), (3,)).double()
    one = StepContext(labels=torch.tensor([0]), epoch=0, step=0, index=torch.tensor([0]))
    weight = [np.sum(softmax(row[0]) ** 0.2) for row in (sure, unsure)]
    assert weight[1] > weight[0]
    for teacher, w in zip((sure, unsure), weight):
        student = teacher * 0.5  # same argmax, softer
        expected = w * kl((softmax(teacher[0]) ** 0.2) / w, softmax(student[0]))
        assert d(tensor(student), tensor(teacher), one).item() == pytest.approx(expected, rel=1e-9)


def test_nkd_target_term_weights_by_the_teacher_and_ignores_its_gradient():
    s, t = tensor(STUDENT, grad=True), tensor(TEACHER, grad=True)
    build("nkd", gamma=0.0)(s, t, ctx()).backward()
    assert t.grad is None or torch.count_nonzero(t.grad) == 0
    expected = np.mean([-softmax(TEACHER[i])[y] * np.log(softmax(STUDENT[i])[y]) for i, y in enumerate(LABELS)])
    assert build("nkd", gamma=0.0)(tensor(STUDENT), tensor(TEACHER), ctx()).item() == pytest.approx(expected)


# ---------------------------------------------------------------- standardisation
@pytest.mark.parametrize("name", STANDARDISED)
def test_standardised_loss_ignores_each_samples_logit_shift_and_scale(name):
    """z-scoring removes a per-sample offset and positive scale: the student need not match the range."""
    d = build(name, standardize=True)
    shift = np.array([[3.0], [-1.0], [0.5], [10.0]])
    scale = np.array([[2.0], [0.3], [5.0], [1.5]])
    plain = d(tensor(STUDENT), tensor(TEACHER), ctx()).item()
    moved = d(tensor(STUDENT * scale + shift), tensor(TEACHER / scale - shift), ctx()).item()
    assert moved == pytest.approx(plain, rel=1e-6)
    assert build(name)(tensor(STUDENT * scale + shift), tensor(TEACHER), ctx()).item() != pytest.approx(
        build(name)(tensor(STUDENT), tensor(TEACHER), ctx()).item(), rel=1e-3)


@pytest.mark.parametrize("name", STANDARDISED)
def test_standardize_is_a_typed_parameter_off_by_default(name):
    field = DISTILLERS.get(name).params_model.model_fields["standardize"]
    assert field.default is False and field.annotation is bool
    with pytest.raises(ValueError, match="standardize"):
        DISTILLERS.get(name)((5,), (5,), standardize="yes")


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("name,params", [("dist", {}), ("wttm", {}), ("nkd", {}), ("kd", {"standardize": True}),
                                         ("dist", {"standardize": True}), ("wttm", {"standardize": True}),
                                         ("nkd", {"standardize": True}), ("dkd", {"standardize": True})])
def test_gradcheck(name, params):
    d, t = build(name, **params), tensor(TEACHER)
    assert torch.autograd.gradcheck(lambda s: d(s, t, ctx()), (tensor(STUDENT, grad=True),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["wttm", "nkd", "kd"])
def test_gradcheck_of_per_sample_losses(name):
    d, t = build(name, standardize=True), tensor(TEACHER)
    s = tensor(STUDENT, grad=True)
    assert torch.autograd.gradcheck(lambda x: d.sample_losses(x, t, ctx()), (s,), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------- the per-sample contract
@pytest.mark.parametrize("name", SAMPLE_LOSS_NAMES)
def test_sample_losses_mean_is_the_loss(name):
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    c = StepContext(labels=torch.tensor([0, 1, 2, 3, 4, 0]), epoch=3, step=0, index=torch.arange(6))
    d = DISTILLERS.get(name)((5,), (5,))
    assert DISTILLERS.get(name).has_sample_losses
    per_sample = d.sample_losses(s, t, c)
    assert per_sample.shape == (6,)
    assert per_sample.mean().item() == pytest.approx(d(s, t, c).item(), rel=1e-6)


def test_dkd_per_sample_losses_carry_the_warmup():
    d, s, t = build("dkd"), tensor(STUDENT), tensor(TEACHER)
    full = np.array(ref_dkd(STUDENT, TEACHER))
    assert d.sample_losses(s, t, ctx(epoch=4)).tolist() == pytest.approx((full * 5 / 20).tolist(), rel=1e-9)


def test_dist_has_no_per_sample_losses():
    """Its intra-class term correlates each class over the whole batch."""
    d = build("dist")
    assert not DISTILLERS.get("dist").has_sample_losses
    with pytest.raises(TypeError, match="DIST"):
        d.sample_losses(tensor(STUDENT), tensor(TEACHER), ctx())


# ---------------------------------------------------------------- shapes, defaults
@pytest.mark.parametrize("name", ["dist", "wttm", "nkd"])
def test_constructor_refuses_unequal_logits_naming_both_shapes(name):
    with pytest.raises(ValueError, match=r"\(10,\).*\(100,\)"):
        DISTILLERS.get(name)((10,), (100,))


@pytest.mark.parametrize("name", ["dist", "nkd", "dkd"])
def test_constructor_refuses_a_single_class(name):
    with pytest.raises(ValueError, match=r"at least 2 classes.*\(1,\)"):
        DISTILLERS.get(name)((1,), (1,))


def test_registry_defaults_are_the_papers_settings():
    expected = {"dist": (1.0, {"beta": 1.0, "gamma": 1.0, "temperature": 4.0}),
                "wttm": (4.0, {"gamma": 0.2}),
                "nkd": (1.0, {"gamma": 3.5, "temperature": 3.0})}
    for name, (weight, params) in expected.items():
        cls = DISTILLERS.get(name)
        assert cls.default_weight == weight and cls.accepts == ("logits",)
        defaults = {k: f.default for k, f in cls.params_model.model_fields.items()}
        assert defaults == {**params, "standardize": False}, name


# ---------------------------------------------------------------- a real run
@pytest.mark.parametrize("name", ["dist", "wttm", "nkd"])
def test_a_short_digits_run_with_each_new_distiller(home: Path, name: str) -> None:
    paths = [{"id": f"t-{name}", "teacher": "t", "distiller": name, "teacher_spot": "fc", "student_spot": "fc",
              "params": {"standardize": name == "wttm"}}]
    reporter = NullReporter()
    result = execute_run(parse_spec(tiny_spec_dict(paths=paths, epochs=2)), "a", home, reporter)
    losses = reporter.series(f"loss/path:t-{name}")
    assert losses and all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert result["test_acc"] > 0.5, result
