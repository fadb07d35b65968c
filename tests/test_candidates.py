"""Candidate paths: the natural teacher->student matches a user starts from."""
from __future__ import annotations

from engine.models.spots import list_spots
from engine.paths import DISTILLERS
from engine.paths.candidates import propose_candidates
from tests.conftest import engine_cli


def _pairs(teacher: str, student: str, shape=(3, 32, 32)) -> list[tuple[str, str]]:
    cands = propose_candidates(list_spots(teacher, shape, 100), list_spots(student, shape, 100))
    return [(c.teacher_spot.name, c.student_spot.name) for c in cands]


def test_resnet_pair_matches_stage_by_resolution() -> None:
    assert _pairs("resnet56", "resnet20") == [
        ("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3"), ("pool", "pool"), ("fc", "fc")]


def test_logits_suggest_kd_first_and_only_fitting_distillers() -> None:
    cands = propose_candidates(list_spots("resnet56", (3, 32, 32), 100), list_spots("resnet20", (3, 32, 32), 100))
    by_student = {c.student_spot.name: c for c in cands}
    assert by_student["fc"].distillers[0] == "kd"
    assert by_student["layer2"].distillers[0] == "at"
    for cand in cands:
        for name in cand.distillers:
            cls = DISTILLERS.get(name)
            assert cand.student_spot.kind in cls.accepts
            assert cls.shape_problem(cand.student_spot.shape, cand.teacher_spot.shape) is None


def test_cnn_teacher_to_mlp_student_on_digits() -> None:
    assert _pairs("small_cnn", "mlp", (1, 8, 8)) == [("pool", "pool"), ("fc", "fc")]


def test_path_ids_name_teacher_distiller_and_spots() -> None:
    cands = propose_candidates(list_spots("resnet56", (3, 32, 32), 10), list_spots("resnet20", (3, 32, 32), 10))
    assert cands[-1].path_id("r56", "kd") == "r56-kd-fc"


def test_cli_lists_candidates() -> None:
    proc = engine_cli("candidates", "resnet56", "resnet20")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[-1].startswith("fc 10 -> fc 10: kd")
