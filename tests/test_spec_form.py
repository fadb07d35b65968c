"""The Configure page's table <-> spec dict folding, without Streamlit."""
from __future__ import annotations

import pandas as pd

from app.spec_form import (
    errors_by_section, paths_frame, paths_from_frame, renamed_teachers, retarget_paths, teachers_frame,
    teachers_from_frame,
)

TEACHERS = [
    {"id": "cnn", "arch": "small_cnn", "arch_params": {"width": 16},
     "source": {"kind": "train", "epochs": 8, "optimizer": {"name": "sgd", "lr": 0.05}, "seed": 3}},
    {"id": "old", "arch": "mlp", "arch_params": {}, "source": {"kind": "run", "run_id": "r1"}},
]
PATHS = [{"id": "kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc",
          "weight": None, "params": {"temperature": 2.0}, "enabled": True}]


def test_teachers_round_trip_keeps_hidden_fields() -> None:
    assert teachers_from_frame(teachers_frame(TEACHERS), TEACHERS) == TEACHERS


def test_teacher_edits_fold_back() -> None:
    edited = teachers_frame(TEACHERS)
    edited.loc[0, "epochs"] = 3
    edited.loc[1, "arch"] = "small_cnn"  # params of the old arch are dropped
    edited.loc[2] = ["new", "mlp", "checkpoint", pd.NA, None, "/tmp/t.pt"]
    teachers = teachers_from_frame(edited, TEACHERS)
    assert teachers[0]["source"] == {**TEACHERS[0]["source"], "epochs": 3}
    assert teachers[1]["arch_params"] == {}
    assert teachers[2]["source"] == {"kind": "checkpoint", "path": "/tmp/t.pt"}


def test_renamed_teacher_is_followed_by_its_paths() -> None:
    renamed = [{**TEACHERS[0], "id": "cnn2"}, TEACHERS[1]]
    renames = renamed_teachers(TEACHERS, renamed)
    assert renames == {"cnn": "cnn2"}
    assert retarget_paths(PATHS, renames)[0]["teacher"] == "cnn2"


def test_paths_round_trip_and_distiller_change() -> None:
    assert paths_from_frame(paths_frame(PATHS), PATHS) == PATHS
    edited = paths_frame(PATHS)
    edited.loc[0, "distiller"] = "logits"
    edited.loc[0, "weight"] = 0.5
    path = paths_from_frame(edited, PATHS)[0]
    assert path["params"] == {} and path["weight"] == 0.5


def test_errors_are_routed_to_sections() -> None:
    grouped = errors_by_section(["paths[0].teacher_spot: bad", "optimizer.lr: bad", "spec: bad", "dataset: x"])
    assert grouped == {"paths": ["paths[0].teacher_spot: bad"], "run": ["optimizer.lr: bad"],
                       None: ["spec: bad"], "dataset": ["dataset: x"]}


def test_candidate_paths_cover_every_teacher_with_logits_enabled() -> None:
    from engine.models.spots import list_spots
    from app.spec_form import candidate_paths, merge_paths

    spots = {"student": list_spots("resnet20", (3, 32, 32), 10),
             "a": list_spots("resnet56", (3, 32, 32), 10), "b": list_spots("resnet32", (3, 32, 32), 10)}
    proposed = candidate_paths(["a", "b"], spots)
    assert [p["id"] for p in proposed if p["teacher"] == "a"] == [
        "a-at-layer1", "a-at-layer2", "a-at-layer3", "a-rkd-pool", "a-kd-fc"]
    assert [p["enabled"] for p in proposed if p["teacher"] == "b"] == [False, False, False, False, True]
    mine = [{**proposed[-1], "weight": 0.5}]
    merged = merge_paths(mine, proposed)
    assert merged[0]["weight"] == 0.5 and len(merged) == len(proposed)
