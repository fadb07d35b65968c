"""Single-path distillers: each loss against an independent numpy/loop computation of its formula,
gradients (gradcheck, float64), zero loss on identical taps, shape refusals, and the registry."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.paths import DISTILLERS
from engine.paths.base import DataInfo, StepContext

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"kd", "dkd", "logits", "fitnet", "at", "sp", "rkd", "pkt", "cc", "vid", "nst", "fsp", "crd"}
B = 4
INFO = DataInfo(num_classes=5, num_samples=12)

# name -> (student shape, teacher shape, constructor params): small (gradcheck is per input element),
# with differing shapes where allowed; student maps are twice the teacher's size, so they are pooled
CASES = {
    "kd": ((5,), (5,), {}),
    "dkd": ((5,), (5,), {}),
    "logits": ((5,), (5,), {}),
    "fitnet": ((3, 4, 4), (2, 2, 2), {}),
    "at": ((3, 4, 4), (2, 2, 2), {"resize": "legacy"}),  # the default: tests/test_paths_conventions.py
    "sp": ((3, 4, 4), (6,), {}),
    "rkd": ((7,), (5,), {}),
    "pkt": ((7,), (5,), {}),
    "cc": ((7,), (5,), {"form": "kernel"}),  # the default form: tests/test_paths_conventions.py
    "vid": ((3, 4, 4), (2, 2, 2), {}),
    "nst": ((3, 4, 4), (2, 2, 2), {}),
    "fsp": (((2, 4, 4), (3, 2, 2)), ((2, 2, 2), (3, 2, 2)), {}),
    "crd": ((7,), (5,), {"feat_dim": 6, "nce_k": 5}),
}


def make_ctx(epoch: int = 100, step: int = 0, labels: torch.Tensor | None = None) -> StepContext:
    labels = torch.tensor([0, 3, 1, 4]) if labels is None else labels
    return StepContext(labels=labels, epoch=epoch, step=step, index=torch.tensor([0, 5, 7, 11]))


def build(name: str, dtype: torch.dtype = torch.float64, **params):
    s_shape, t_shape, defaults = CASES[name]
    torch.manual_seed(0)
    return DISTILLERS.get(name)(s_shape, t_shape, INFO, **{**defaults, **params}).to(dtype)


def taps(name: str, seed: int = 1, dtype: torch.dtype = torch.float64):
    """Random student and teacher taps of the case's shapes (tuples for two-spot distillers)."""
    s_shape, t_shape, _ = CASES[name]
    g = torch.Generator().manual_seed(seed)

    def draw(shape):
        if isinstance(shape[0], tuple):
            return tuple(torch.randn(B, *part, generator=g, dtype=dtype) for part in shape)
        return torch.randn(B, *shape, generator=g, dtype=dtype)

    return draw(s_shape), draw(t_shape)


def loss_of(distiller, student, teacher, ctx: StepContext | None = None) -> float:
    return distiller(student, teacher, ctx or make_ctx()).item()


def np_(x) -> np.ndarray:
    return x.detach().numpy().astype(np.float64)


# ---------------------------------------------------------------- independent references
def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))


def block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W) -> (..., H/f, W/f) by averaging f x f blocks."""
    *lead, h, w = x.shape
    return x.reshape(*lead, h // factor, factor, w // factor, factor).mean(axis=(-3, -1))


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else np.zeros_like(v)


def smooth_l1(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b)
    return float(np.where(d < 1, 0.5 * d**2, d - 0.5).mean())


def ref_kd(s, t, temp=4.0):
    return sum(kl(softmax(t[i] / temp), softmax(s[i] / temp)) for i in range(len(s))) / len(s) * temp**2


def ref_dkd(s, t, y, alpha=1.0, beta=8.0, temp=4.0):
    tckd = nckd = 0.0
    for i in range(len(s)):
        p_s, p_t = softmax(s[i] / temp), softmax(t[i] / temp)
        tckd += kl(np.array([p_t[y[i]], 1 - p_t[y[i]]]), np.array([p_s[y[i]], 1 - p_s[y[i]]]))
        others = [c for c in range(s.shape[1]) if c != y[i]]
        nckd += kl(softmax(t[i, others] / temp), softmax(s[i, others] / temp))
    return (alpha * tckd + beta * nckd) / len(s) * temp**2


def ref_conv3x3(x, w):
    """Zero-padded 3x3 convolution (cross-correlation) by explicit loops; x (B, C, H, W), w (O, C, 3, 3)."""
    b, c, h, wd = x.shape
    pad = np.zeros((b, c, h + 2, wd + 2))
    pad[:, :, 1:-1, 1:-1] = x
    out = np.zeros((b, w.shape[0], h, wd))
    for o in range(w.shape[0]):
        for i in range(h):
            for j in range(wd):
                out[:, o, i, j] = (pad[:, :, i:i + 3, j:j + 3] * w[o]).sum(axis=(1, 2, 3))
    return out


def ref_at(s, t):
    a_s = block_mean((s**2).mean(axis=1), s.shape[-1] // t.shape[-1]).reshape(len(s), -1)
    a_t = (t**2).mean(axis=1).reshape(len(t), -1)
    return float(np.mean([(unit(a_s[i]) - unit(a_t[i])) ** 2 for i in range(len(s))]))


def ref_sp(s, t):
    def gram(x):
        f = x.reshape(len(x), -1)
        g = f @ f.T
        return np.stack([unit(row) for row in g])

    return float(((gram(t) - gram(s)) ** 2).sum() / len(s) ** 2)


def ref_rkd(s, t):
    def distances(x):
        n = len(x)
        d = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(n)] for i in range(n)])
        return d / d[~np.eye(n, dtype=bool)].mean()

    def angles(x):
        n = len(x)
        return np.array([[[unit(x[j] - x[i]) @ unit(x[k] - x[i]) for k in range(n)] for j in range(n)]
                         for i in range(n)])

    s, t = s.reshape(len(s), -1), t.reshape(len(t), -1)
    return 25 * smooth_l1(distances(s), distances(t)) + 50 * smooth_l1(angles(s), angles(t))


def ref_pkt(s, t, eps=1e-7):
    def probs(x):
        x = x.reshape(len(x), -1)
        x = x / (np.linalg.norm(x, axis=1, keepdims=True) + eps)
        sim = (x @ x.T + 1) / 2
        return sim / sim.sum(axis=1, keepdims=True)

    p_s, p_t = probs(s), probs(t)
    return float(np.mean(p_t * np.log((p_t + eps) / (p_s + eps))))


def ref_cc(s, t, gamma=0.4):
    def corr(x):
        x = np.stack([unit(r) for r in x.reshape(len(x), -1)])
        c = x @ x.T
        return math.exp(-2 * gamma) * (1 + 2 * gamma * c + (2 * gamma) ** 2 / 2 * c**2)

    return float(np.mean((corr(s) - corr(t)) ** 2))


def ref_nst(s, t):
    s = block_mean(s, s.shape[-1] // t.shape[-1])

    def maps(x):
        return [[unit(x[b, c].ravel()) for c in range(x.shape[1])] for b in range(len(x))]

    def mean_k(a, b):
        return np.mean([[[(u @ v) ** 2 for v in b[n]] for u in a[n]] for n in range(len(a))])

    ms, mt = maps(s), maps(t)
    return float(mean_k(mt, mt) + mean_k(ms, ms) - 2 * mean_k(ms, mt))


def ref_fsp(s, t):
    def fsp(first, second):
        if first.shape[-1] > second.shape[-1]:
            first = block_mean(first, first.shape[-1] // second.shape[-1])
        hw = first.shape[-1] * first.shape[-2]
        g = np.zeros((len(first), first.shape[1], second.shape[1]))
        for b in range(len(first)):
            for i in range(first.shape[1]):
                for j in range(second.shape[1]):
                    g[b, i, j] = (first[b, i] * second[b, j]).sum() / hw
        return g

    return float(np.mean((fsp(*s) - fsp(*t)) ** 2))


# ---------------------------------------------------------------- values
PLAIN_REFERENCES = {"kd": ref_kd, "logits": lambda s, t: float(np.mean((s - t) ** 2)), "at": ref_at,
                    "sp": ref_sp, "rkd": ref_rkd, "pkt": ref_pkt, "cc": ref_cc, "nst": ref_nst}


@pytest.mark.parametrize("name", sorted(PLAIN_REFERENCES))
def test_value_matches_independent_formula(name):
    s, t = taps(name)
    assert loss_of(build(name), s, t) == pytest.approx(PLAIN_REFERENCES[name](np_(s), np_(t)), rel=1e-5, abs=1e-8)


def test_fsp_value():
    s, t = taps("fsp")
    expected = ref_fsp(tuple(map(np_, s)), tuple(map(np_, t)))
    assert loss_of(build("fsp"), s, t) == pytest.approx(expected, rel=1e-5)


def test_dkd_value_and_warmup():
    s, t = taps("dkd")
    ctx = make_ctx(epoch=100)
    full = ref_dkd(np_(s), np_(t), ctx.labels.numpy())
    d = build("dkd")
    assert loss_of(d, s, t, ctx) == pytest.approx(full, rel=1e-5)
    # epochs count from 0: the first epoch weighs 1/20, epoch index 19 reaches full weight
    assert loss_of(d, s, t, make_ctx(epoch=0)) == pytest.approx(full / 20, rel=1e-5)
    assert loss_of(d, s, t, make_ctx(epoch=9)) == pytest.approx(full / 2, rel=1e-5)
    assert loss_of(d, s, t, make_ctx(epoch=19)) == pytest.approx(full, rel=1e-5)
    assert loss_of(build("dkd", warmup_epochs=0), s, t, make_ctx(epoch=0)) == pytest.approx(full, rel=1e-5)


def test_fitnet_value_with_known_regressor():
    d = build("fitnet").eval()  # eval: BatchNorm applies the running statistics set below
    conv, bn = d.regressor
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        bn.running_var.copy_(torch.tensor([2.0, 0.5]))
        bn.weight.copy_(torch.tensor([1.5, 0.7]))
        bn.bias.copy_(torch.tensor([0.1, -0.4]))
    s, t = taps("fitnet")
    y = ref_conv3x3(block_mean(np_(s), 2), np_(conv.weight))  # student 4x4 pooled onto the teacher's 2x2
    y = (y - np_(bn.running_mean)[:, None, None]) / np.sqrt(np_(bn.running_var)[:, None, None] + bn.eps)
    y = y * np_(bn.weight)[:, None, None] + np_(bn.bias)[:, None, None]
    assert loss_of(d, s, t) == pytest.approx(float(np.mean((y - np_(t)) ** 2)), rel=1e-5)


def identity_fitnet(shape):
    d = DISTILLERS.get("fitnet")(shape, shape).double().eval()
    conv, bn = d.regressor
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, 1, 1] = torch.eye(shape[0])
        bn.running_var.fill_(1 - bn.eps)  # so BN divides by exactly 1
    return d


def test_vid_value_with_known_parts():
    d = build("vid")
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for p in d.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    s, t = taps("vid")
    w1, w2, w3 = (np_(d.mean_net[i].weight)[:, :, 0, 0] for i in (0, 2, 4))
    x = block_mean(np_(s), 2)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    mean = np.einsum("oc,bchw->bohw", w3, relu(np.einsum("oc,bchw->bohw", w2, relu(np.einsum("oc,bchw->bohw", w1, x)))))
    var = (np.log1p(np.exp(np_(d.raw_variance))) + 1e-5)[None, :, None, None]
    expected = np.mean(0.5 * ((mean - np_(t)) ** 2 / var + np.log(var)))
    assert loss_of(d, s, t) == pytest.approx(float(expected), rel=1e-5)


def test_vid_starts_at_the_reference_variance():
    d = build("vid")
    assert torch.allclose(d.variance().flatten(), torch.full((2,), 5.0, dtype=torch.float64))


def test_crd_value_with_fixed_negatives():
    d = build("crd").eval()
    negatives = torch.tensor([[1, 2, 3, 4, 6], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    d.draw_negatives = lambda index, step: negatives
    s, t = taps("crd")
    ws, bs, wt, bt = (np_(p) for p in (d.embed_s.weight, d.embed_s.bias, d.embed_t.weight, d.embed_t.bias))
    bank_s, bank_t = np_(d.bank_s), np_(d.bank_t)
    expected = 0.0
    for i in range(B):
        e_s, e_t = unit(ws @ np_(s)[i] + bs), unit(wt @ np_(t)[i] + bt)
        for anchor, positive, bank in ((e_s, e_t, bank_t), (e_t, e_s, bank_s)):
            scores = np.array([anchor @ positive] + [anchor @ bank[k] for k in negatives[i]]) / 0.07
            expected += -math.log(softmax(scores)[0]) / B
    assert loss_of(d, s, t) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- CRD's bank and negatives
def test_crd_updates_banks_with_momentum_only_in_training():
    d = build("crd")
    s, t = taps("crd")
    ctx = make_ctx()
    before = d.bank_s.clone(), d.bank_t.clone()
    d.eval()(s, t, ctx)
    assert torch.equal(d.bank_s, before[0]) and torch.equal(d.bank_t, before[1])
    d.train()(s, t, ctx)
    fresh_s = torch.nn.functional.normalize(d.embed_s(s), dim=1).detach()
    expected = torch.nn.functional.normalize(0.5 * before[0][ctx.index] + 0.5 * fresh_s, dim=1)
    assert torch.allclose(d.bank_s[ctx.index], expected)
    untouched = [i for i in range(INFO.num_samples) if i not in ctx.index.tolist()]
    assert torch.equal(d.bank_s[untouched], before[0][untouched])


def test_crd_negatives_are_other_samples_and_reproducible():
    d = build("crd", nce_k=500)
    assert d.num_negatives == INFO.num_samples - 1  # capped
    index = torch.tensor([0, 5, 7, 11])
    neg = d.draw_negatives(index, step=3)
    assert neg.shape == (4, INFO.num_samples - 1)
    assert (neg != index[:, None]).all() and neg.min() >= 0 and neg.max() < INFO.num_samples
    assert torch.equal(neg, d.draw_negatives(index, step=3))
    assert not torch.equal(neg, d.draw_negatives(index, step=4))


def test_crd_needs_info():
    with pytest.raises(ValueError, match="info is None"):
        DISTILLERS.get("crd")((7,), (5,), None)
    DISTILLERS.get("crd")((7,), (5,), DataInfo(num_classes=5, num_samples=1))  # what spec validation builds


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", sorted(NAMES))
def test_gradcheck_wrt_student_tap(name):
    d = build(name)
    if name == "crd":
        d.eval()  # bank updates would change the function between gradcheck's evaluations
    s, t = taps(name)
    ctx = make_ctx()
    if name == "fsp":
        inputs = tuple(part.requires_grad_() for part in s)
        func = lambda a, b: d((a, b), t, ctx)  # noqa: E731
    else:
        inputs = (s.requires_grad_(),)
        func = lambda a: d(a, t, ctx)  # noqa: E731
    assert torch.autograd.gradcheck(func, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("resize", ["pool_larger_map", "legacy"])
def test_at_and_nst_gradcheck_when_the_student_map_is_smaller(resize):
    """The default pools the teacher's larger map down; legacy upsamples the student's: both differentiable."""
    ctx = make_ctx()
    g = torch.Generator().manual_seed(2)
    s = torch.randn(B, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(B, 2, 4, 4, generator=g, dtype=torch.float64)
    for name in ("at", "nst"):
        d = DISTILLERS.get(name)((3, 2, 2), (2, 4, 4), resize=resize)
        assert torch.autograd.gradcheck(lambda a: d(a, t, ctx), (s,), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------- identical taps
@pytest.mark.parametrize("name", ["kd", "dkd", "logits", "at", "sp", "rkd", "pkt", "cc", "nst", "fsp"])
def test_identical_taps_give_zero_loss(name):
    s, _ = taps(name)
    d = DISTILLERS.get(name)(CASES[name][0], CASES[name][0], **CASES[name][2]).double()
    assert abs(loss_of(d, s, s)) < 1e-10


def test_fitnet_with_identity_regressor_gives_zero_loss():
    x = torch.randn(B, 3, 4, 4, dtype=torch.float64)
    assert abs(loss_of(identity_fitnet((3, 4, 4)), x, x)) < 1e-12


# ---------------------------------------------------------------- shapes
REFUSED = {
    "kd": ((10,), (100,)),
    "dkd": ((10,), (100,)),
    "logits": ((10,), (100,)),
    "fitnet": ((64,), (32, 8, 8)),
    "vid": ((64,), (32, 8, 8)),
    "at": ((64,), (32, 8, 8)),
    "nst": ((64,), (32, 8, 8)),
    "fsp": (((16, 8, 8), (32, 4, 4)), ((16, 8, 8), (64, 4, 4))),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_shape_problem_names_both_shapes(name):
    s_shape, t_shape = REFUSED[name]
    problem = DISTILLERS.get(name).shape_problem(s_shape, t_shape)
    assert problem
    for shape in (s_shape, t_shape):
        parts = shape if isinstance(shape[0], tuple) else (shape,)
        assert all(str(part) in problem for part in parts), problem


@pytest.mark.parametrize("name", ["fitnet", "vid"])
def test_adapters_refuse_to_build_for_incompatible_shapes(name):
    with pytest.raises(ValueError, match=r"\(64,\)"):
        DISTILLERS.get(name)(*REFUSED[name])


@pytest.mark.parametrize("name", ["sp", "rkd", "pkt", "cc", "crd"])
def test_relational_distillers_take_any_shapes(name):
    assert DISTILLERS.get(name).shape_problem((64, 8, 8), (10,)) is None


@pytest.mark.parametrize("name", sorted(NAMES - {"fsp"}))
def test_every_case_shape_pair_is_accepted(name):
    assert DISTILLERS.get(name).shape_problem(*CASES[name][:2]) is None


def test_fsp_is_a_two_spot_distiller():
    assert DISTILLERS.get("fsp").spots_per_side == 2
    assert DISTILLERS.get("fsp").shape_problem(*CASES["fsp"][:2]) is None


def test_accepts_and_default_weights():
    weights = {"kd": 1.0, "dkd": 1.0, "logits": 1.0, "fitnet": 100.0, "at": 1000.0, "sp": 3000.0, "rkd": 1.0,
               "pkt": 30000.0, "cc": 0.02, "vid": 1.0, "nst": 50.0, "fsp": 50.0, "crd": 0.8}
    assert {n: DISTILLERS.get(n).default_weight for n in NAMES} == weights
    for name in ("kd", "dkd", "logits"):
        assert DISTILLERS.get(name).accepts == ("logits",)
    for name in ("fitnet", "at", "vid", "nst", "fsp"):
        assert "feature_map" in DISTILLERS.get(name).accepts
    for name in ("sp", "rkd", "pkt", "cc", "crd"):
        assert "embedding" in DISTILLERS.get(name).accepts


@pytest.mark.parametrize("name", ["fitnet", "vid"])
def test_adapters_also_take_embeddings(name):
    d = DISTILLERS.get(name)((7,), (5,))
    s, t = torch.randn(B, 7), torch.randn(B, 5)
    assert d(s, t, make_ctx()).dim() == 0


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", sorted(NAMES))
def test_parameters_are_built_in_init_and_saved(name):
    d = build(name, dtype=torch.float32)
    params_before = {k: id(p) for k, p in d.named_parameters()}
    keys_before = set(d.state_dict())
    assert set(params_before) <= keys_before
    s, t = taps(name, dtype=torch.float32)
    loss = d.train()(s, t, make_ctx())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {k: id(p) for k, p in d.named_parameters()} == params_before
    assert set(d.state_dict()) == keys_before
    if name in ("fitnet", "vid", "crd"):
        assert params_before, f"{name} should have learnable parts"
    if name == "crd":
        assert {"bank_s", "bank_t"} <= keys_before


def test_unknown_params_are_refused():
    for name in NAMES:
        s_shape, t_shape, _ = CASES[name]
        with pytest.raises((TypeError, ValueError)):
            DISTILLERS.get(name)(s_shape, t_shape, INFO, no_such_param=1)


# ---------------------------------------------------------------- registry
def test_cli_lists_exactly_the_registered_distillers():
    out = subprocess.run([sys.executable, "-m", "engine", "distillers"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    # plugin lines start at column 0; their parameters follow, indented
    lines = [line for line in out.splitlines() if line.strip() and not line[0].isspace()]
    logit_family = {"dist", "wttm", "nkd"}  # tested in test_paths_logit_family.py
    assert {line.split()[0] for line in lines} == NAMES | logit_family
    assert len(lines) == 16
