"""engine.ablation: the variants, their submission as one group, the table, and one real ablation."""
from __future__ import annotations

import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from engine.ablation import (
    NAME_MAX, AblationError, ablation_progress, ablation_specs, ablation_table, group_id_of, submit_ablation,
)
from engine.spec import parse_spec, spec_to_dict, spec_to_yaml
from engine.store import Store
from engine.worker import execute_claimed, serve
from synthetic_runs import PATH_IDS, add_finished_run
from tests.conftest import engine_cli, tiny_spec_dict

LOGITS, HINT = PATH_IDS
VERDICTS = {LOGITS: "helps", HINT: "hurts"}
DETAILS = {LOGITS: {"first_flagged_step": None}, HINT: {"first_flagged_step": 40}}


def three_path_spec(name: str = "abl"):
    return parse_spec(tiny_spec_dict(
        name=name, seed=7, diagnostics={"enabled": True, "every": 3},
        paths=[{"id": pid, "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc",
                "enabled": pid != "off"} for pid in ("a", "b", "off")]))


def full_run(home: Path) -> str:
    return add_finished_run(home, "full", result={"test_acc": 0.90, "verdicts": VERDICTS, "verdict_details": DETAILS})


def finish_group(home: Path, run_id: str, accuracy: dict[str, float | None]) -> None:
    """Finish each variant run with the given test accuracy (by name suffix); None leaves it queued."""
    with closing(Store(home)) as store:
        for run in store.list_runs(group_id=group_id_of(run_id)):
            value = accuracy[run.name.split(" · ", 1)[1]]
            if value is not None:
                store.finish_run(run.id, "done", result={"test_acc": value})


# ---------------------------------------------------------------- variants
def test_specs_leave_one_out_alone_and_no_paths() -> None:
    spec = three_path_spec()
    variants = ablation_specs(spec)
    assert len(variants) == 2 * 2 + 1  # "off" is disabled in the run, so it is not ablated
    labels = [label for label, _ in variants]
    assert labels == ["without a", "without b", "only a", "only b", "no paths"]
    enabled = {label: [p.id for p in v.paths if p.enabled] for label, v in variants}
    assert enabled == {"without a": ["b"], "without b": ["a"], "only a": ["a"], "only b": ["b"], "no paths": []}
    for label, variant in variants:
        assert variant.name == f"abl · {label}"
        assert variant.seed == 7 and not variant.diagnostics.enabled
        assert [p.id for p in variant.paths] == ["a", "b", "off"]  # disabled, never dropped
        assert variant.teachers == spec.teachers  # same teachers: their caches are shared
        assert variant.epochs == spec.epochs and variant.dataset == spec.dataset
    alone = dict(variants)["no paths"]
    assert alone.weighting.name == "equal" and alone.method is None


def test_student_alone_drops_the_method_and_weighs_equally_the_others_keep_both() -> None:
    data = spec_to_dict(three_path_spec())
    data["method"] = {"name": "amtml", "params": {"alpha": 0.5}}
    data["weighting"] = {"name": "uncertainty", "params": {}}
    variants = dict(ablation_specs(parse_spec(data)))
    assert variants["no paths"].combination == "equal"
    assert variants["no paths"].weighting.params == {} and variants["no paths"].method is None
    for label in ("without a", "only b"):
        assert variants[label].combination == "amtml · uncertainty"
        assert variants[label].method.params == {"alpha": 0.5}


def test_variant_names_fit_the_name_limit() -> None:
    spec = three_path_spec(name="x" * NAME_MAX)
    for label, variant in ablation_specs(spec):
        assert len(variant.name) <= NAME_MAX and variant.name.endswith(f"… · {label}")


# ---------------------------------------------------------------- submission
def test_submission_queues_one_group(home: Path) -> None:
    run_id = full_run(home)
    with closing(Store(home)) as store:
        assert submit_ablation(store, run_id) == f"abl-{run_id}"
        runs = store.list_runs(group_id=f"abl-{run_id}")
        assert sorted(r.name for r in runs) == sorted(
            f"full · {label}" for label in [f"without {LOGITS}", f"without {HINT}", f"only {LOGITS}",
                                            f"only {HINT}", "no paths"])
        assert {r.status for r in runs} == {"queued"}
        with pytest.raises(AblationError, match="already queued, running or done"):
            submit_ablation(store, run_id)
        failed = next(r for r in runs if r.name.endswith("no paths"))
        store.finish_run(failed.id, "failed", error="boom")
        submit_ablation(store, run_id)  # only the failed variant is queued again
        assert len(store.list_runs(group_id=f"abl-{run_id}")) == 6
        assert ablation_progress(store, run_id) == (0, 5)


def test_bad_runs_are_named(home: Path) -> None:
    with closing(Store(home)) as store:
        with pytest.raises(AblationError, match="no run 'nope'"):
            submit_ablation(store, "nope")
        pathless = store.create_run(spec_to_yaml(parse_spec(tiny_spec_dict(paths=[]))), "teacher only")
        with pytest.raises(AblationError, match=f"run {pathless} has no enabled path"):
            submit_ablation(store, pathless)
        alone = full_run(home)
        with pytest.raises(AblationError, match=f"run {alone} has no ablation yet"):
            ablation_table(store, alone)
    proc = engine_cli("ablation", "nope")
    assert proc.returncode == 2 and "error: no run 'nope'" in proc.stderr


def test_an_invalid_variant_queues_nothing(home: Path) -> None:
    data = tiny_spec_dict(name="gone-teacher")
    data["teachers"][0]["source"] = {"kind": "run", "run_id": "deleted-run"}
    with closing(Store(home)) as store:
        run_id = store.create_run(spec_to_yaml(parse_spec(data)), "gone-teacher")
        with pytest.raises(AblationError) as caught:
            submit_ablation(store, run_id)
        assert "gone-teacher · without t-kd: teachers[0].source.run_id: no run 'deleted-run'" in str(caught.value)
        assert store.list_runs(group_id=group_id_of(run_id)) == []


# ---------------------------------------------------------------- table
def test_table_computes_effects_and_agreement(home: Path) -> None:
    run_id = full_run(home)
    with closing(Store(home)) as store:
        submit_ablation(store, run_id)
    finish_group(home, run_id, {f"without {LOGITS}": 0.85, f"without {HINT}": 0.93, f"only {LOGITS}": 0.88,
                                f"only {HINT}": 0.70, "no paths": 0.80})
    with closing(Store(home, readonly=True)) as store:
        logits, hint = ablation_table(store, run_id)
        assert ablation_progress(store, run_id) == (5, 5)
    assert logits.path == LOGITS and logits.verdict == "helps" and logits.first_flag_step is None
    assert logits.acc_full == pytest.approx(90.0) and logits.effect == pytest.approx(5.0)
    assert logits.alone_gain == pytest.approx(8.0) and logits.measured == "helps" and logits.agrees
    assert hint.verdict == "hurts" and hint.first_flag_step == 40
    assert hint.effect == pytest.approx(-3.0) and hint.alone_gain == pytest.approx(-10.0)
    assert hint.agrees and hint.status == "done"
    with closing(Store(home, readonly=True)) as store:
        # A 3-point effect is neutral when the tolerance is wider: the verdicts no longer agree.
        assert [row.agrees for row in ablation_table(store, run_id, tolerance=4.0)] == [True, False]
        with pytest.raises(AblationError, match="tolerance"):
            ablation_table(store, run_id, tolerance=-1)


def test_pending_variants_leave_their_cells_empty(home: Path) -> None:
    run_id = full_run(home)
    with closing(Store(home)) as store:
        submit_ablation(store, run_id)
    finish_group(home, run_id, {f"without {LOGITS}": 0.93, f"without {HINT}": None, f"only {LOGITS}": 0.9,
                                f"only {HINT}": 0.9, "no paths": 0.9})
    with closing(Store(home, readonly=True)) as store:
        logits, hint = ablation_table(store, run_id)
        assert ablation_progress(store, run_id) == (4, 5)
    assert logits.status == "done" and logits.effect == pytest.approx(-3.0)
    assert logits.measured == "hurts" and logits.agrees is False  # the probe said helps
    assert hint.status == "pending" and hint.acc_without is None and hint.effect is None and hint.agrees is None
    assert hint.alone_gain == pytest.approx(0.0)
    printed = engine_cli("ablation", run_id)
    assert printed.returncode == 0, printed.stderr
    assert "4/5 runs done" in printed.stdout
    assert any(line.startswith(HINT) and "pending" in line for line in printed.stdout.splitlines())


# ---------------------------------------------------------------- a real ablation
def test_real_ablation_through_the_worker(home: Path) -> None:
    started = time.monotonic()
    spec = parse_spec(tiny_spec_dict(
        name="tiny-abl", diagnostics={"enabled": True, "every": 2},
        paths=[{"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
               {"id": "t-logits", "teacher": "t", "distiller": "logits", "teacher_spot": "fc", "student_spot": "fc"}]))
    with closing(Store(home)) as store:
        run = store.claim_run("test", store.create_run(spec_to_yaml(spec), spec.name))
        assert execute_claimed(store, run, threading.Event()) is not None, store.get_run(run.id).error
    submitted = engine_cli("ablate", run.id)
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.split() == [f"abl-{run.id}", "5", "runs", "queued"]
    serve(home, once=True)
    with closing(Store(home, readonly=True)) as store:
        group = store.list_runs(group_id=f"abl-{run.id}")
        assert [r.status for r in group] == ["done"] * 5, [r.error for r in group]
        accuracy = {r.name.split(" · ", 1)[1]: 100 * r.result["test_acc"] for r in group}
        full = 100 * store.get_run(run.id).result["test_acc"]
        rows = ablation_table(store, run.id)
    assert [row.path for row in rows] == ["t-kd", "t-logits"]
    for row in rows:
        assert row.status == "done" and row.verdict in ("helps", "neutral", "hurts")
        assert row.effect == pytest.approx(full - accuracy[f"without {row.path}"])
        assert row.alone_gain == pytest.approx(accuracy[f"only {row.path}"] - accuracy["no paths"])
    # Teachers are shared: the variants reused the inline teacher the full run trained.
    assert len(list((home / "teachers").glob("*.pt"))) == 1
    print(f"real ablation: {time.monotonic() - started:.1f} s")
