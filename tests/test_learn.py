"""The Learn page: its figure builders as pure functions, then the page through AppTest (no worker, no training)."""
from __future__ import annotations

import base64
import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from app import learn_charts, nav
from engine.data import load_dataset
from engine.models import build_model
from engine.models.spots import list_spots
from engine.paths.candidates import propose_candidates
from engine.spec import DatasetSpec
from engine.store import Store

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"
LEARN = str(ROOT / "pages" / "learn.py")
TIMEOUT_S = 90  # the first run imports torch and sklearn


def decode(array: object) -> list:
    """Plotly writes numeric arrays as {'dtype', 'bdata'}; plain lists pass through."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


# ---------------------------------------------------------------- temperature
LOGITS = np.array([4.0, 1.5, -2.0, 0.3, 2.9, -1.0, 0.0, 0.7, -3.0, 1.1])


def test_softened_distribution_sums_to_one_and_flattens_as_t_grows() -> None:
    temperatures = [0.5, 1.0, 2.0, 4.0, 8.0, 20.0]
    distributions = [learn_charts.softened(LOGITS, t) for t in temperatures]
    for probs in distributions:
        assert probs.sum() == pytest.approx(1.0)
        assert (probs > 0).all()
    entropies = [learn_charts.entropy(p) for p in distributions]
    assert entropies == sorted(entropies) and entropies[-1] < np.log(len(LOGITS))
    assert [p.max() for p in distributions] == sorted((p.max() for p in distributions), reverse=True)


def test_softened_survives_huge_logits_and_kd_loss_matches_the_engine() -> None:
    assert learn_charts.softened(np.array([1000.0, 0.0]), 0.5) == pytest.approx([1.0, 0.0])
    from engine.paths.kd import soft_target_kl

    student = np.array([0.2, -1.0, 3.0, 0.0, 0.5, 1.0, -0.5, 2.0, 0.1, -2.0])
    t = 4.0
    expected = soft_target_kl(torch.tensor(student)[None], torch.tensor(LOGITS)[None], t).item()
    ours = learn_charts.kd_loss(learn_charts.softened(LOGITS, t), learn_charts.softened(student, t), t)
    assert ours == pytest.approx(expected)


def test_temperature_figure_highlights_the_true_class() -> None:
    fig = learn_charts.temperature_figure(LOGITS, 3.0, 4, [str(c) for c in range(10)])
    bars = fig.data[0]
    assert list(bars.y) == pytest.approx(learn_charts.softened(LOGITS, 3.0).tolist())
    assert [i for i, c in enumerate(bars.marker.color) if c == learn_charts.TRUE_CLASS_COLOR] == [4]


# ---------------------------------------------------------------- weightings
def test_pcgrad_arrows_are_orthogonal_to_the_other_gradient_when_they_conflict() -> None:
    problem = learn_charts.toy_problem(150, 2.5)
    grads = problem.gradients()
    assert grads[0] @ grads[1] < 0
    projected = learn_charts.pcgrad_components(grads)
    assert projected[0] @ grads[1] == pytest.approx(0.0, abs=1e-12)
    assert projected[1] @ grads[0] == pytest.approx(0.0, abs=1e-12)
    directions = learn_charts.update_directions(grads, problem.losses())
    assert directions["pcgrad"] == pytest.approx(projected.sum(0))


def test_pcgrad_leaves_agreeing_gradients_alone() -> None:
    grads = learn_charts.toy_problem(60, 2.0).gradients()
    assert learn_charts.pcgrad_components(grads) == pytest.approx(grads)


@pytest.mark.parametrize(("angle", "scale"), [(150, 2.5), (90, 1.0), (30, 3.0), (180, 0.5), (120, 0.25)])
def test_mgda_arrow_is_the_min_norm_point_of_the_two_gradients(angle: float, scale: float) -> None:
    problem = learn_charts.toy_problem(angle, scale)
    g1, g2 = problem.gradients()
    # Closed form on the segment gamma g1 + (1 - gamma) g2.
    gamma = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0.0, 1.0)
    expected = gamma * g1 + (1 - gamma) * g2
    mgda = learn_charts.update_directions(np.stack([g1, g2]), problem.losses())["mgda"]
    assert mgda == pytest.approx(expected, abs=1e-9)
    # A step along -mgda never raises either loss to first order.
    assert (learn_charts.loss_changes(np.stack([g1, g2]), mgda) <= 1e-12).all()


def test_equal_and_uncertainty_directions() -> None:
    problem = learn_charts.toy_problem(100, 3.0)
    grads, losses = problem.gradients(), problem.losses()
    directions = learn_charts.update_directions(grads, losses)
    assert directions["equal"] == pytest.approx(grads[0] + grads[1])
    assert directions["uncertainty"] == pytest.approx(grads[0] / (2 * losses[0]) + grads[1] / (2 * losses[1]))
    # Both minima lie at distance 1, so uncertainty weighting makes the two losses count alike whatever the scale.
    assert directions["uncertainty"] == pytest.approx(-problem.minima.sum(0))


def test_weighting_figure_draws_every_direction_as_a_named_arrow() -> None:
    problem = learn_charts.toy_problem(135, 2.0)
    directions = learn_charts.update_directions(problem.gradients(), problem.losses())
    fig = learn_charts.weighting_figure(problem, directions)
    arrows = {t.name: t for t in fig.data if t.type == "scatter" and t.marker.symbol == "arrow"}
    assert {"equal", "uncertainty", "pcgrad", "mgda", "−∇L1", "−∇L2"} <= set(arrows)
    for name, direction in directions.items():
        assert [arrows[name].x[1], arrows[name].y[1]] == pytest.approx(list(-direction))
    assert sum(t.type == "contour" for t in fig.data) == 2


# ---------------------------------------------------------------- paths
@pytest.mark.parametrize(("teacher", "student", "shape", "classes"),
                         [("small_cnn", "mlp", (1, 8, 8), 10), ("resnet56", "resnet20", (3, 32, 32), 100)])
def test_path_diagram_has_one_line_per_candidate(teacher: str, student: str, shape: tuple, classes: int) -> None:
    t_spots, s_spots = list_spots(teacher, shape, classes), list_spots(student, shape, classes)
    candidates = propose_candidates(t_spots, s_spots)
    assert candidates
    fig = learn_charts.path_figure(teacher, t_spots, student, s_spots, candidates)
    lines = [t for t in fig.data if t.type == "scatter" and "lines" in t.mode]
    assert [t.name for t in lines] == learn_charts.candidate_path_ids(candidates, teacher)
    assert len({t.line.color for t in lines}) == len(lines)  # path colours never collide
    assert sum(s.type == "rect" for s in fig.layout.shapes) == len(t_spots) + len(s_spots)
    labels = {a.text for a in fig.layout.annotations}
    assert {f"<b>{c.distillers[0]}</b>" for c in candidates} <= labels


# ---------------------------------------------------------------- the page
@pytest.fixture
def teacher_file(workspace: Path) -> torch.nn.Module:
    """A freshly built (untrained) small_cnn saved as the runner saves inline teachers."""
    torch.manual_seed(3)
    model = build_model("small_cnn", 10, 1, 8).eval()
    with torch.no_grad():  # larger logits than at init, so the temperature visibly matters
        model.fc.weight.mul_(40.0)
    (workspace / "teachers").mkdir(parents=True)
    torch.save({"arch": "small_cnn", "state_dict": model.state_dict(), "test_acc": 0.1},
               workspace / "teachers" / "small_cnn-0123456789abcdef.pt")
    return model


def open_learn() -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
    at.run()
    at.switch_page(LEARN).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Learn"
    return at


def temperature_bars(at: AppTest) -> list[float]:
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["data"][0]["type"] == "bar")
    return decode(spec["data"][0]["y"])


def default_sample_logits(model: torch.nn.Module) -> np.ndarray:
    """The teacher's logits on the page's default sample: the first test digit of class 0."""
    test = load_dataset(DatasetSpec(name="digits")).test
    first = int(np.flatnonzero(test.y.numpy() == 0)[0])
    with torch.no_grad():
        return model(test.x[first:first + 1])[0].numpy()


def test_learn_is_in_the_navigation_right_after_home() -> None:
    assert list(nav._PAGES)[:2] == ["home", "learn"]  # st.Page objects cannot be built outside a running app
    assert nav.page_file("learn") == LEARN


def test_temperature_chart_is_the_teachers_softmax_and_follows_the_slider(teacher_file: torch.nn.Module) -> None:
    at = open_learn()
    logits = default_sample_logits(teacher_file)
    assert temperature_bars(at) == pytest.approx(learn_charts.softened(logits, 4.0).tolist(), rel=1e-5)
    at.slider(key="learn_temperature").set_value(1.0).run()
    assert not at.exception
    sharp = temperature_bars(at)
    assert sharp == pytest.approx(learn_charts.softened(logits, 1.0).tolist(), rel=1e-5)
    assert sharp != pytest.approx(learn_charts.softened(logits, 4.0).tolist(), rel=1e-3)
    assert "Entropy" in "\n".join(c.value for c in at.caption)


def test_teachers_of_runs_that_share_a_name_are_told_apart_by_run_id(workspace: Path) -> None:
    from engine.runner import teacher_cache_path
    from engine.spec import load_spec, spec_to_yaml
    from engine.store import init_workspace

    init_workspace(workspace)
    run_ids = []
    with closing(Store(workspace)) as store:
        for epochs in (8, 2):  # two demos of other lengths: two teacher files, one run name
            spec = load_spec(ROOT / "assets" / "configs" / "digits_kd.yaml")
            spec.teachers[0].source.epochs = epochs
            run_ids.append(store.create_run(spec_to_yaml(spec), name="digits-kd-demo"))
            model = build_model("small_cnn", 10, 1, 8)
            path = teacher_cache_path(spec.teachers[0], spec, workspace)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"arch": "small_cnn", "state_dict": model.state_dict(), "test_acc": 0.5}, path)
    at = open_learn()
    labels = at.selectbox(key="learn_teacher").options  # as shown: AppTest holds the formatted options
    assert len(set(labels)) == 2 and all(any(r in label for label in labels) for r in run_ids), labels


def test_without_a_teacher_the_page_offers_the_demo(workspace: Path) -> None:
    at = open_learn()
    assert "No digits teacher" in "\n".join(i.value for i in at.info)
    assert any(b.label == "Run the demo" for b in at.button)
    assert not [c for c in at.get("plotly_chart") if json.loads(c.proto.spec)["data"][0]["type"] == "bar"]
    # The other lessons do not need a teacher.
    assert len(at.get("plotly_chart")) == 2


def test_run_the_demo_from_the_empty_state_queues_it(workspace: Path) -> None:
    at = open_learn()
    next(b for b in at.button if b.label == "Run the demo").click().run()
    assert not at.exception
    with closing(Store(workspace, readonly=True)) as store:
        assert [r.name for r in store.list_runs()] == ["digits-kd-demo"]


def test_planted_button_queues_the_planted_demo_and_links_on(workspace: Path) -> None:
    at = open_learn()
    next(b for b in at.button if b.label == "Launch the planted-teacher demo").click().run()
    assert not at.exception
    with closing(Store(workspace, readonly=True)) as store:
        runs = store.list_runs()
    assert [(r.name, r.status) for r in runs] == [("digits-planted", "queued")]
    assert at.session_state["selected_run"] == runs[0].id
    assert runs[0].id in "\n".join(s.value for s in at.success)
    links = [link.proto.page for link in at.get("page_link")]
    assert links == [Path(nav.page_file(name)).stem for name in ("live", "negative_transfer") if nav.has_page(name)]


def test_path_lesson_draws_the_chosen_pair(workspace: Path) -> None:
    at = open_learn()
    at.radio(key="learn_input").set_value("CIFAR-sized: 3×32×32, 100 classes").run()
    assert not at.exception
    diagram = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                   if any(t.get("name") == "resnet56-kd-fc" for t in json.loads(c.proto.spec)["data"]))
    expected = propose_candidates(list_spots("resnet56", (3, 32, 32), 100), list_spots("resnet20", (3, 32, 32), 100))
    assert [t["name"] for t in diagram["data"]] == learn_charts.candidate_path_ids(expected, "resnet56")
    assert at.dataframe[0].value["suggested"].tolist() == [c.distillers[0] for c in expected]
