"""The references' conventions (issue 13): AT and NST pool the larger feature map before forming their maps,
in both size directions; CC's default is RepDistiller's consecutive-sample correlation; the earlier forms stay
available by parameter with their old values; and the per-sample contract (``sample_losses``) for every
registered distiller. Expected values come from numpy loops written here, not from the code under test."""
from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import load_dataset
from engine.models import build_model
from engine.models.spots import list_spots
from engine.paths import DISTILLERS
from engine.paths.base import DataInfo, StepContext
from engine.runner import build_learner
from engine.spec import load_spec, parse_spec
from tests.conftest import tiny_spec_dict

B = 4
INFO = DataInfo(num_classes=5, num_samples=12)
CTX = StepContext(labels=torch.tensor([0, 3, 1, 4]), epoch=100, step=0, index=torch.tensor([0, 5, 7, 11]))


def draw(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def np_(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().astype(np.float64)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def block_mean(x: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """(..., H, W) -> (..., H/fh, W/fw) by averaging fh x fw blocks (adaptive pooling on whole multiples)."""
    *lead, h, w = x.shape
    return x.reshape(*lead, h // fh, fh, w // fw, fw).mean(axis=(-3, -1))


def bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(..., h, w) -> (..., out_h, out_w): half-pixel bilinear interpolation, edges clamped (align_corners False)."""
    def taps(n_in: int, n_out: int):
        rows = []
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            lo = min(int(math.floor(src)), n_in - 1)
            rows.append((lo, min(lo + 1, n_in - 1), src - lo))
        return rows

    *lead, h, w = x.shape
    out = np.zeros((*lead, out_h, out_w))
    for i, (r0, r1, wr) in enumerate(taps(h, out_h)):
        for j, (c0, c1, wc) in enumerate(taps(w, out_w)):
            out[..., i, j] = ((1 - wr) * ((1 - wc) * x[..., r0, c0] + wc * x[..., r0, c1])
                              + wr * ((1 - wc) * x[..., r1, c0] + wc * x[..., r1, c1]))
    return out


def pooled_to_smaller(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RepDistiller's AT/NST step: the larger feature map averaged down to the smaller one's grid."""
    h, w = min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1])
    return (block_mean(s, s.shape[-2] // h, s.shape[-1] // w), block_mean(t, t.shape[-2] // h, t.shape[-1] // w))


# ---------------------------------------------------------------- AT
def at_per_sample(a_s: np.ndarray, a_t: np.ndarray) -> np.ndarray:
    """Attention maps (B, H, W) -> each sample's mean squared gap of the unit-length flattened maps."""
    return np.array([np.mean((unit(a_s[i].ravel()) - unit(a_t[i].ravel())) ** 2) for i in range(len(a_s))])


def ref_at(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    s, t = pooled_to_smaller(s, t)
    return at_per_sample((s**2).mean(axis=1), (t**2).mean(axis=1))


def ref_at_legacy(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """PathScope before issue 13: the student's *attention map* brought to the teacher's size."""
    a_s, a_t = (s**2).mean(axis=1), (t**2).mean(axis=1)
    if a_s.shape[-1] > a_t.shape[-1]:
        f = a_s.shape[-1] // a_t.shape[-1]
        a_s = block_mean(a_s, f, f)
    elif a_s.shape[-1] < a_t.shape[-1]:
        a_s = bilinear(a_s, *a_t.shape[-2:])
    return at_per_sample(a_s, a_t)


# (student shape, teacher shape): student larger, student smaller, equal, and a non-square pair
SIZE_CASES = {
    "student_larger": ((3, 4, 4), (2, 2, 2)),
    "student_smaller": ((3, 2, 2), (2, 4, 4)),
    "equal": ((3, 4, 4), (2, 4, 4)),
    "crossed": ((3, 4, 2), (2, 2, 4)),
}


# (distiller, the reference's value per sample, the legacy value per sample, seeds of the two taps); lambdas
# because the NST references are defined further down
POOLED = {"at": (lambda s, t: ref_at(s, t), lambda s, t: ref_at_legacy(s, t), (1, 2), (3, 4)),
          "nst": (lambda s, t: ref_nst(s, t), lambda s, t: ref_nst_legacy(s, t), (7, 8), (9, 10))}


@pytest.mark.parametrize("name", sorted(POOLED))
@pytest.mark.parametrize("case", sorted(SIZE_CASES))
def test_at_and_nst_pool_the_larger_feature_map_before_forming_their_maps(name, case):
    reference, _, seeds, _ = POOLED[name]
    s_shape, t_shape = SIZE_CASES[case]
    s, t = draw(B, *s_shape, seed=seeds[0]), draw(B, *t_shape, seed=seeds[1])
    d = DISTILLERS.get(name)(s_shape, t_shape)
    expected = reference(np_(s), np_(t))
    assert d(s, t, CTX).item() == pytest.approx(expected.mean(), rel=1e-10)
    np.testing.assert_allclose(np_(d.sample_losses(s, t, CTX)), expected, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(POOLED))
@pytest.mark.parametrize("case", ["student_larger", "student_smaller", "equal"])
def test_at_and_nst_legacy_keep_the_old_values(name, case):
    _, legacy, _, seeds = POOLED[name]
    s_shape, t_shape = SIZE_CASES[case]
    s, t = draw(B, *s_shape, seed=seeds[0]), draw(B, *t_shape, seed=seeds[1])
    d = DISTILLERS.get(name)(s_shape, t_shape, resize="legacy")
    assert d(s, t, CTX).item() == pytest.approx(legacy(np_(s), np_(t)).mean(), rel=1e-10)


def test_at_conventions_differ_where_the_issue_says():
    """Squaring before or after pooling, and upsampling the student instead of pooling the teacher, change the loss."""
    for case in ("student_larger", "student_smaller"):
        s_shape, t_shape = SIZE_CASES[case]
        s, t = draw(B, *s_shape, seed=5), draw(B, *t_shape, seed=6)
        assert ref_at(np_(s), np_(t)).mean() != pytest.approx(ref_at_legacy(np_(s), np_(t)).mean(), rel=1e-3)


# ---------------------------------------------------------------- NST
def nst_per_sample(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per sample: squared MMD with k(a, b) = (a.b)^2 between the unit-length channel maps of s and of t."""
    def maps(x):
        return [unit(x[c].ravel()) for c in range(len(x))]

    def mean_k(a, b):
        return np.mean([[(u @ v) ** 2 for v in b] for u in a])

    out = []
    for i in range(len(s)):
        ms, mt = maps(s[i]), maps(t[i])
        out.append(mean_k(mt, mt) + mean_k(ms, ms) - 2 * mean_k(ms, mt))
    return np.array(out)


def ref_nst(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    return nst_per_sample(*pooled_to_smaller(s, t))


def ref_nst_legacy(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """PathScope before issue 13: the student's feature map pooled down or bilinearly upsampled to the teacher's."""
    if s.shape[-1] > t.shape[-1]:
        f = s.shape[-1] // t.shape[-1]
        s = block_mean(s, f, f)
    elif s.shape[-1] < t.shape[-1]:
        s = bilinear(s, *t.shape[-2:])
    return nst_per_sample(s, t)


def test_nst_smaller_student_now_pools_the_teacher():
    s_shape, t_shape = SIZE_CASES["student_smaller"]
    s, t = draw(B, *s_shape, seed=11), draw(B, *t_shape, seed=12)
    assert ref_nst(np_(s), np_(t)).mean() != pytest.approx(ref_nst_legacy(np_(s), np_(t)).mean(), rel=1e-3)


@pytest.mark.parametrize("name", ["at", "nst"])
@pytest.mark.parametrize("case", ["student_larger", "student_smaller"])
def test_at_and_nst_gradients_through_the_pooling(name, case):
    s_shape, t_shape = SIZE_CASES[case]
    s, t = draw(B, *s_shape, seed=13).requires_grad_(), draw(B, *t_shape, seed=14)
    d = DISTILLERS.get(name)(s_shape, t_shape)
    assert torch.autograd.gradcheck(lambda a: d(a, t, CTX), (s,), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------- CC
def ref_cc_correlation(e_s: np.ndarray, e_t: np.ndarray) -> float:
    """RepDistiller's CC on embeddings: the mean over consecutive samples of the dot product of |e_s - e_t| rows."""
    gap = np.abs(e_s - e_t)
    return float(np.mean([gap[i] @ gap[i + 1] for i in range(len(gap) - 1)]))


def ref_cc_kernel(s: np.ndarray, t: np.ndarray, gamma: float = 0.4) -> float:
    def corr(x):
        x = np.stack([unit(r) for r in x.reshape(len(x), -1)])
        c = x @ x.T
        return math.exp(-2 * gamma) * (1 + 2 * gamma * c + (2 * gamma) ** 2 / 2 * c**2)

    return float(np.mean((corr(s) - corr(t)) ** 2))


def linear(x: np.ndarray, layer: torch.nn.Linear) -> np.ndarray:
    return x.reshape(len(x), -1) @ np_(layer.weight).T + np_(layer.bias)


@pytest.mark.parametrize("s_shape, t_shape", [((7,), (5,)), ((3, 2, 2), (6,))])
def test_cc_default_is_repdistillers_correlation_on_learnable_embeddings(s_shape, t_shape):
    torch.manual_seed(0)
    d = DISTILLERS.get("cc")(s_shape, t_shape, embed_dim=6).double()
    assert d.embed_s.out_features == d.embed_t.out_features == 6
    assert {n for n, _ in d.named_parameters()} == {"embed_s.weight", "embed_s.bias", "embed_t.weight", "embed_t.bias"}
    s, t = draw(5, *s_shape, seed=15), draw(5, *t_shape, seed=16)
    expected = ref_cc_correlation(linear(np_(s), d.embed_s), linear(np_(t), d.embed_t))
    assert d(s, t, CTX).item() == pytest.approx(expected, rel=1e-10)


def test_cc_default_embeds_to_128_like_repdistiller():
    d = DISTILLERS.get("cc")((64,), (256,))
    assert (d.embed_s.in_features, d.embed_t.in_features, d.embed_s.out_features) == (64, 256, 128)


def test_cc_kernel_form_keeps_the_old_values_and_has_no_parts():
    d = DISTILLERS.get("cc")((7,), (5,), form="kernel")
    assert not list(d.parameters())
    s, t = draw(B, 7, seed=17), draw(B, 5, seed=18)
    assert d(s, t, CTX).item() == pytest.approx(ref_cc_kernel(np_(s), np_(t)), rel=1e-10)


def test_cc_conventional_weight_follows_the_form():
    cc = DISTILLERS.get("cc")
    assert cc.default_weight == 0.02
    assert cc((7,), (5,)).conventional_weight() == 0.02
    assert cc((7,), (5,), form="kernel").conventional_weight() == 340.0  # measured: see engine/paths/cc.py
    assert DISTILLERS.get("at")((3, 4, 4), (2, 2, 2)).conventional_weight() == 1000.0


def test_a_path_without_weight_gets_its_forms_conventional_weight():
    cc = [{"id": f"cc-{form}", "teacher": "t", "distiller": "cc", "teacher_spot": "pool", "student_spot": "pool",
           "params": {"form": form}} for form in ("correlation", "kernel")]
    spec = parse_spec(tiny_spec_dict(paths=cc))
    bundle = load_dataset(spec.dataset)
    teachers = {"t": build_model("mlp", bundle.num_classes, 1, 8, {"hidden": [32]}).eval()}
    learner = build_learner(spec, bundle, teachers, torch.device("cpu"))
    assert learner.method.path_weights == {"cc-correlation": 0.02, "cc-kernel": 340.0}


# ---------------------------------------------------------------- fitnet per sample
def test_fitnet_sample_losses_are_each_samples_mse_after_the_batch_regressor():
    torch.manual_seed(0)
    d = DISTILLERS.get("fitnet")((3, 4, 4), (2, 4, 4)).double().train()
    s, t = draw(B, 3, 4, 4, seed=19), draw(B, 2, 4, 4, seed=20)
    with torch.no_grad():
        regressed = np_(d.regressor(s))  # the batch's BatchNorm statistics, as in training
    expected = ((regressed - np_(t)) ** 2).reshape(B, -1).mean(axis=1)
    np.testing.assert_allclose(np_(d.train().sample_losses(s, t, CTX)), expected, rtol=1e-10)


# ---------------------------------------------------------------- the per-sample contract, every distiller
def shapes_for(cls) -> tuple:
    """A compatible (student, teacher) shape pair for any distiller, from the first spot kind it accepts."""
    one = {"logits": ((5,), (5,)), "embedding": ((7,), (5,)), "feature_map": ((3, 4, 4), (2, 2, 2))}[cls.accepts[0]]
    if cls.spots_per_side == 2:
        return ((3, 4, 4), (2, 2, 2)), ((3, 4, 4), (2, 2, 2))
    return one


def taps_for(s_shape, t_shape, seed: int):
    def make(shape, k):
        if isinstance(shape[0], tuple):
            return tuple(draw(B, *part, seed=seed + 10 * k + j) for j, part in enumerate(shape))
        return draw(B, *shape, seed=seed + 10 * k)

    return make(s_shape, 0), make(t_shape, 1)


@pytest.mark.parametrize("name", DISTILLERS.names())
def test_sample_losses_contract(name):
    cls = DISTILLERS.get(name)
    s_shape, t_shape = shapes_for(cls)
    torch.manual_seed(0)
    d = cls(s_shape, t_shape, INFO).double()
    s, t = taps_for(s_shape, t_shape, seed=21)
    if not cls.has_sample_losses:
        with pytest.raises(TypeError, match=f"^{cls.__name__} gives no per-sample loss$"):
            d.sample_losses(s, t, CTX)
        return
    per_sample = d.sample_losses(s, t, CTX)
    assert per_sample.shape == (B,)
    assert per_sample.mean().item() == pytest.approx(d(s, t, CTX).item(), rel=1e-12, abs=1e-15)


def test_which_feature_distillers_decompose_per_sample():
    has = {name for name in DISTILLERS.names() if DISTILLERS.get(name).has_sample_losses}
    assert {"at", "nst", "fitnet"} <= has
    assert not has & {"sp", "rkd", "pkt", "cc", "crd"}  # relational: a sample's term involves the others


# ---------------------------------------------------------------- the CIFAR-100 reproduction specs
CIFAR100 = Path(__file__).resolve().parents[1] / "assets" / "configs" / "cifar100"
def path_changed(distiller: str, student: tuple[int, ...], teacher: tuple[int, ...]) -> bool:
    """Whether issue 13's defaults compute this path differently from before."""
    if distiller == "cc":
        return True
    return distiller in ("at", "nst") and student[-2:] != teacher[-2:]


def test_cifar100_specs_note_exactly_the_paths_the_new_conventions_change():
    recipe = runpy.run_path(str(CIFAR100 / "generate.py"))
    changed = set()
    for spec_file in sorted(CIFAR100.glob("*.yaml")):
        spec = load_spec(spec_file)
        arch = {t.id: t.arch for t in spec.teachers}
        for p in spec.paths:
            student = shape_of(spec.student.arch, p.student_spot)
            teacher = shape_of(arch[p.teacher], p.teacher_spot)
            if path_changed(p.distiller, student, teacher) and "resize" not in p.params:
                changed.add(spec_file.name)
    assert changed == {"vgg13_mobilenetv2_at.yaml"}  # layer4: 512x4x4 against 160x2x2
    noted = {f"{stem}_{method}.yaml" for stem, method in recipe["CONVENTION_NOTES"]}
    assert noted == changed
    for name in noted:
        assert "Since issue 13" in (CIFAR100 / name).read_text().split("version:")[0]


def shape_of(arch: str, spot: str) -> tuple[int, ...]:
    return next(info.shape for info in list_spots(arch, (3, 32, 32), 100) if info.name == spot)
