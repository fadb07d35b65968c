"""RunSpec: YAML round trip, structural errors and semantic validation messages."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.spec import (
    SPEC_VERSION, SpecError, apply_overrides, load_spec, parse_spec, spec_from_yaml, spec_to_dict, spec_to_yaml,
)
from engine.validate import validate_spec
from tests.conftest import ROOT, tiny_spec_dict

CONFIGS = sorted((ROOT / "assets" / "configs").glob("*.yaml"))
REPRO_CONFIGS = sorted((ROOT / "assets" / "configs" / "cifar100").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_specs_round_trip_and_validate(path: Path) -> None:
    spec = load_spec(path)
    text = spec_to_yaml(spec)
    assert spec_from_yaml(text) == spec
    assert spec_to_yaml(spec_from_yaml(text)) == text  # saving a loaded spec changes nothing
    assert validate_spec(spec) == []


@pytest.mark.parametrize("path", CONFIGS + REPRO_CONFIGS, ids=lambda p: p.name)
def test_example_specs_are_version_2(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    assert data["version"] == SPEC_VERSION and "aggregator" not in data
    assert "weighting" in data or not data.get("paths")  # the student-alone specs weigh by default


def test_demo_spec_exists_with_one_kd_path() -> None:
    spec = load_spec(ROOT / "assets" / "configs" / "digits_kd.yaml")
    assert [p.distiller for p in spec.paths] == ["kd"]
    assert spec.teachers[0].source.kind == "train"


def _errors(data) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.errors


def test_wrong_type_names_the_field() -> None:
    errors = _errors(tiny_spec_dict(epochs="ten"))
    assert errors == ["epochs: Input should be a valid integer, unable to parse string as an integer"]


def test_unknown_key_names_the_nested_field() -> None:
    data = tiny_spec_dict()
    data["paths"][0]["wieght"] = 2
    assert _errors(data) == ["paths[0].wieght: unknown key"]


def test_teacher_source_errors_skip_the_union_tag() -> None:
    data = tiny_spec_dict()
    data["teachers"][0]["source"]["epochs"] = -1
    assert _errors(data) == ["teachers[0].source.epochs: Input should be greater than 0"]


def test_not_a_mapping_and_bad_yaml() -> None:
    assert _errors([1, 2]) == ["spec: expected a mapping of fields, got list"]
    with pytest.raises(SpecError, match="yaml:"):
        spec_from_yaml("name: [unclosed")


def test_duplicate_path_ids_refused() -> None:
    data = tiny_spec_dict()
    data["paths"].append(dict(data["paths"][0]))
    assert any("duplicate id" in e for e in _errors(data))


def test_unknown_spot_message_lists_the_spots() -> None:
    data = tiny_spec_dict(dataset={"name": "cifar10"})
    data["teachers"] = [{"id": "r", "arch": "resnet20"}]
    data["student"] = {"arch": "resnet8"}
    data["paths"] = [
        {"id": "a", "teacher": "r", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
        {"id": "b", "teacher": "r", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
        {"id": "c", "teacher": "r", "distiller": "kd", "teacher_spot": "layer9", "student_spot": "fc"},
    ]
    errors = validate_spec(parse_spec(data))
    assert errors == ["paths[2].teacher_spot: 'layer9' is not a spot of resnet20 "
                      "(spots: conv1, layer1, layer2, layer3, pool, fc)"]


def test_unknown_names_are_each_reported() -> None:
    data = tiny_spec_dict(weighting={"name": "magic"}, method={"name": "wizardry"})
    data["student"]["arch"] = "resnet9000"
    data["paths"][0]["distiller"] = "telepathy"
    data["paths"].append({"id": "x", "teacher": "ghost", "distiller": "kd", "teacher_spot": "fc",
                          "student_spot": "fc"})
    errors = validate_spec(parse_spec(data))
    assert any(e.startswith("student.arch: unknown architecture 'resnet9000'") for e in errors)
    assert any(e.startswith("paths[0].distiller: unknown distiller 'telepathy' (known: ") for e in errors)
    assert any(e.startswith("paths[1].teacher: unknown teacher 'ghost' (teachers: t)") for e in errors)
    assert any(e.startswith("weighting.name: unknown weighting 'magic' (known: ") for e in errors)
    assert any(e.startswith("method.name: unknown method 'wizardry' (known: ") for e in errors)


def test_spot_of_wrong_kind_for_distiller() -> None:
    data = tiny_spec_dict()
    data["paths"][0]["student_spot"] = "pool"
    errors = validate_spec(parse_spec(data))
    assert len(errors) == 1
    assert errors[0].startswith("paths[0].student_spot: kd needs a spot of kind logits, but 'pool' is a embedding")


def test_missing_checkpoint_and_dataset_folder(tmp_path: Path) -> None:
    data = tiny_spec_dict()
    data["teachers"][0]["source"] = {"kind": "checkpoint", "path": str(tmp_path / "nope.pt")}
    assert validate_spec(parse_spec(data)) == [f"teachers[0].source.path: no checkpoint file at {tmp_path / 'nope.pt'}"]
    data = tiny_spec_dict(dataset={"name": "image_folder", "root": str(tmp_path / "missing")})
    errors = validate_spec(parse_spec(data))
    assert len(errors) == 1 and errors[0].startswith("dataset: ") and str(tmp_path / "missing") in errors[0]


def test_teacher_run_source_must_exist(home: Path) -> None:
    data = tiny_spec_dict()
    data["teachers"][0]["source"] = {"kind": "run", "run_id": "20990101-000000-abcd"}
    assert validate_spec(parse_spec(data), home) == [
        "teachers[0].source.run_id: no run '20990101-000000-abcd' in the workspace"]


def test_yaml_is_plain_and_safe() -> None:
    text = spec_to_yaml(parse_spec(tiny_spec_dict()))
    assert "!!python" not in text
    assert yaml.safe_load(text)["student"]["arch"] == "mlp"


def test_shape_mismatch_without_adapter_names_path_spots_and_shapes() -> None:
    data = tiny_spec_dict(student={"arch": "small_cnn", "arch_params": {"width": 16}})
    data["teachers"][0]["arch"] = "small_cnn"
    data["teachers"][0]["arch_params"] = {}
    data["paths"] = [{"id": "t-fsp", "teacher": "t", "distiller": "fsp",
                      "teacher_spot": "conv1+conv2", "student_spot": "conv1+conv2"}]
    (error,) = validate_spec(parse_spec(data))
    assert error.startswith("paths[0] (t-fsp): fsp ")
    assert "student conv1+conv2 ((16, 8, 8), (32, 4, 4))" in error
    assert "teacher conv1+conv2 ((32, 8, 8), (64, 4, 4))" in error


def test_compound_spot_count_is_checked() -> None:
    data = tiny_spec_dict(student={"arch": "small_cnn"})
    data["teachers"][0]["arch"] = "small_cnn"
    data["teachers"][0]["arch_params"] = {}
    data["paths"] = [{"id": "t-fsp", "teacher": "t", "distiller": "fsp", "teacher_spot": "conv2",
                      "student_spot": "conv1+conv2"}]
    assert validate_spec(parse_spec(data)) == [
        "paths[0].teacher_spot: fsp reads 2 spot(s) per side joined by '+' (e.g. 'conv1+conv2'), got 'conv2'"]


def test_checkpoint_of_another_architecture_is_refused_by_name(tmp_path: Path) -> None:
    import torch

    from engine.models import build_model

    wrong = tmp_path / "resnet8.pt"
    torch.save({"state_dict": build_model("resnet8", 10, 1, 8, {}).state_dict()}, wrong)
    data = tiny_spec_dict()
    data["teachers"][0]["source"] = {"kind": "checkpoint", "path": str(wrong)}
    (error,) = validate_spec(parse_spec(data))
    assert error.startswith("teachers[0].source.path: ")
    assert "linear.weight" in error or "conv1.weight" in error  # names the parameters that do not fit


def test_validation_leaves_the_random_state_alone(tmp_path: Path) -> None:
    import torch

    from engine.models import build_model

    good = tmp_path / "mlp.pt"
    torch.save(build_model("mlp", 10, 1, 8, {"hidden": [32]}).state_dict(), good)
    data = tiny_spec_dict()
    data["teachers"][0]["source"] = {"kind": "checkpoint", "path": str(good)}
    torch.manual_seed(5)
    before = torch.get_rng_state()
    assert validate_spec(parse_spec(data)) == []
    assert torch.equal(before, torch.get_rng_state())


def test_method_that_cannot_use_the_paths_is_refused_at_validation() -> None:
    data = tiny_spec_dict(method={"name": "sakd", "params": {"route_teacher": "ghost"}})
    assert validate_spec(parse_spec(data)) == [
        "method: sakd cannot use these paths: route_teacher 'ghost' has no path (teachers with paths: t)"]


def test_params_errors_name_the_role() -> None:
    data = tiny_spec_dict(method={"name": "amtml", "params": {"alpha": 2}},
                          weighting={"name": "fixed", "params": {"task_weight": -1}})
    errors = validate_spec(parse_spec(data))
    assert any(e.startswith("method.params.alpha: ") for e in errors)
    assert any(e.startswith("weighting.params.task_weight: ") for e in errors)


def test_probe_driven_weighting_needs_diagnostics() -> None:
    data = tiny_spec_dict(weighting={"name": "lookahead"})
    assert validate_spec(parse_spec(data)) == [
        "weighting: lookahead is driven by the negative-transfer probe: set diagnostics.enabled: true"]
    data["diagnostics"] = {"enabled": True}
    assert validate_spec(parse_spec(data)) == []


# ---------------------------------------------------------------- version 1 (aggregator) data
@pytest.mark.parametrize("name", ["amtml", "sakd", "dfa"])
def test_version1_path_method_aggregators_become_a_method_weighted_fixed(name: str) -> None:
    spec = parse_spec(tiny_spec_dict(aggregator={"name": name, "params": {"alpha": 0.5}}))
    assert spec.version == SPEC_VERSION
    assert spec.method.name == name and spec.method.params == {"alpha": 0.5}
    assert spec.weighting.name == "fixed" and spec.weighting.params == {}
    assert spec.combination == f"{name} · fixed"


def test_version1_weighting_aggregators_become_the_weighting() -> None:
    spec = parse_spec(tiny_spec_dict(aggregator={"name": "uncertainty", "params": {"lr": 0.01}}))
    assert spec.method is None and spec.combination == "uncertainty"
    assert spec.weighting.name == "uncertainty" and spec.weighting.params == {"lr": 0.01}


def test_a_stored_version1_run_reads_and_saves_in_version_2() -> None:
    old = yaml.safe_dump(tiny_spec_dict(aggregator={"name": "amtml", "params": {"alpha": 0.5}}))
    text = spec_to_yaml(spec_from_yaml(old))
    saved = yaml.safe_load(text)
    assert "aggregator" not in saved and saved["version"] == SPEC_VERSION
    assert saved["method"] == {"name": "amtml", "params": {"alpha": 0.5}} and saved["weighting"]["name"] == "fixed"
    assert spec_to_yaml(spec_from_yaml(text)) == text


def test_aggregator_beside_the_new_fields_is_an_unknown_key() -> None:
    data = spec_to_dict(parse_spec(tiny_spec_dict()))
    data["aggregator"] = {"name": "equal"}
    assert _errors(data) == ["aggregator: unknown key"]


def test_overrides_apply_to_the_migrated_data() -> None:
    old = tiny_spec_dict(aggregator={"name": "amtml", "params": {"alpha": 0.5}})
    spec = parse_spec(apply_overrides(old, ["weighting.name=dwa", "method.params.alpha=0.3"]))
    assert spec.combination == "amtml · dwa" and spec.method.params == {"alpha": 0.3}
    assert "aggregator" in old  # the caller's data is left as it was
