"""Typed plugin parameters: every distiller, weighting and path method declares a params model; validation, the runner
and the CLI listings read it; its defaults are the values the constructors used before."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import engine_cli, tiny_spec_dict
from engine.methods import METHODS
from engine.params import NoParams, Params, ParamsError, parse_params
from engine.paths import DISTILLERS
from engine.runner import build_learner
from engine.spec import SpecError, parse_spec
from engine.terms import TermInfo
from engine.validate import params_errors, validate_spec
from engine.weightings import WEIGHTINGS

PLUGINS = ([("distiller", e) for e in DISTILLERS] + [("weighting", e) for e in WEIGHTINGS]
           + [("method", e) for e in METHODS])

# What the hand-written constructors defaulted to before the params models (kept identical).
OLD_DEFAULTS = {
    ("distiller", "kd"): {"temperature": 4.0, "standardize": False},
    ("distiller", "dkd"): {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20, "standardize": False},
    ("distiller", "dist"): {"beta": 1.0, "gamma": 1.0, "temperature": 4.0, "standardize": False},
    ("distiller", "wttm"): {"gamma": 0.2, "standardize": False},
    ("distiller", "nkd"): {"gamma": 3.5, "temperature": 3.0, "standardize": False},
    ("distiller", "fitnet"): {"kernel_size": 3},
    ("distiller", "rkd"): {"distance_weight": 25.0, "angle_weight": 50.0},
    # issue 13: the reference's conventions became the defaults (the old behaviour is a parameter value)
    ("distiller", "at"): {"resize": "pool_larger_map"},
    ("distiller", "nst"): {"resize": "pool_larger_map"},
    ("distiller", "cc"): {"form": "correlation", "embed_dim": 128, "gamma": 0.4, "order": 2},
    ("distiller", "vid"): {"init_variance": 5.0, "eps": 1e-5},
    ("distiller", "crd"): {"feat_dim": 128, "nce_k": 16384, "temperature": 0.07, "momentum": 0.5, "seed": 0},
    ("weighting", "fixed"): {"task_weight": 1.0},
    ("weighting", "dwa"): {"temperature": 2.0},
    ("weighting", "gradnorm"): {"alpha": 1.5, "lr": 0.025},
    # lookahead: margin and rate changed with its signal (#14: the measured relative effect, not the cosine score)
    ("weighting", "lookahead"): {"beta": 0.7, "margin": 0.1, "rate": 2.0},
    ("weighting", "mgda"): {"space": "params", "iterations": 50},
    ("weighting", "adaptive_distillation"): {"a_d": 1.0, "use_path_weights": False, "variant": "layer_wise"},
    ("weighting", "loss_balance"): {"ratio": 1.0, "use_path_weights": False, "min_loss": 1e-8},
    ("method", "ebkd"): {"temperature": 1.0},
    ("method", "amtml"): {"alpha": 0.7, "temperature": 5.0, "angle_weight": 1.0, "hint_weight": 1.0,
                          "reg_weight": 0.1, "stage_a_epochs": 0, "init_std": 0.1, "init_seed": 1},
    ("method", "dfa"): {"search_epochs": 2, "b_lr": 3e-4, "b_weight_decay": 1e-3, "w_lr": 0.025, "g_ts": 1.0,
                        "g_st": 1.0, "lam": 1.0, "batch_size": 64, "seed": 0},
    ("method", "sakd"): {"gamma": 2.0, "lr": 1e-3, "weight_decay": 1e-3, "tau": 5.0, "same_family": None,
                         "route_teacher": None},
}


@pytest.mark.parametrize("kind, entry", PLUGINS, ids=[f"{k}:{e.name}" for k, e in PLUGINS])
def test_every_plugin_declares_a_described_params_model(kind, entry) -> None:
    assert entry.description.strip(), f"{kind} {entry.name} has no description"
    assert "params_model" in vars(entry.obj), f"{kind} {entry.name} declares no params_model of its own"
    model = entry.obj.params_model
    assert issubclass(model, Params)
    assert model.model_config.get("extra") == "forbid"
    for name, field in model.model_fields.items():
        assert field.description and field.description.strip(), f"{kind} {entry.name}: {name} has no description"
        assert not field.is_required(), f"{kind} {entry.name}: {name} has no default"


@pytest.mark.parametrize("kind, entry", PLUGINS, ids=[f"{k}:{e.name}" for k, e in PLUGINS])
def test_defaults_are_the_old_constructor_defaults(kind, entry) -> None:
    model = entry.obj.params_model
    assert model().model_dump() == OLD_DEFAULTS.get((kind, entry.name), {})
    assert (model is NoParams) == ((kind, entry.name) not in OLD_DEFAULTS)


def test_constructors_keep_the_validated_values() -> None:
    kd = DISTILLERS.get("kd")((5,), (5,), temperature=2)
    assert kd.temperature == 2.0 and isinstance(kd.temperature, float) and kd.params.temperature == 2.0
    dwa = WEIGHTINGS.get("dwa")([TermInfo("path:a")])
    assert dwa.temperature == 2.0


@pytest.mark.parametrize("params, line", [
    ({"temperature": 0}, "paths[0].params.temperature: Input should be greater than 0"),
    ({"temperature": "hot"}, "paths[0].params.temperature: Input should be a valid number"),
    ({"temperature": True}, "paths[0].params.temperature: Input should be a valid number"),
    ({"tau": 1.0}, "paths[0].params.tau: unknown parameter (known: temperature, standardize)"),
])
def test_a_bad_path_param_is_named_by_its_field(params, line) -> None:
    data = tiny_spec_dict()
    data["paths"][0]["params"] = params
    assert validate_spec(parse_spec(data)) == [line]


def test_a_bad_weighting_or_method_param_is_named_by_its_field() -> None:
    data = tiny_spec_dict(weighting={"name": "mgda", "params": {"space": "features", "iterations": 2.5}})
    assert validate_spec(parse_spec(data)) == [
        "weighting.params.space: Input should be 'params' or 'logits'",
        "weighting.params.iterations: Input should be a valid integer"]
    data = tiny_spec_dict(weighting={"name": "equal", "params": {"x": 1}})
    assert validate_spec(parse_spec(data)) == ["weighting.params.x: unknown parameter (known: none)"]
    data = tiny_spec_dict(method={"name": "amtml", "params": {"alpha": 2}})
    assert validate_spec(parse_spec(data)) == ["method.params.alpha: Input should be less than or equal to 1"]


def test_a_cross_field_rule_names_the_params() -> None:
    data = tiny_spec_dict()
    data["paths"] = [{"id": "v", "teacher": "t", "distiller": "vid", "teacher_spot": "fc", "student_spot": "fc",
                      "params": {"init_variance": 1e-6}}]
    errors = params_errors(parse_spec(data))
    assert len(errors) == 1 and errors[0].startswith("paths[0].params: ") and "must exceed eps" in errors[0]


def test_the_runner_refuses_bad_params_with_the_same_message() -> None:
    data = tiny_spec_dict(weighting={"name": "dwa", "params": {"temperature": -1}})
    data["paths"][0]["params"] = {"temperature": "4"}
    spec = parse_spec(data)  # structure only: validate_spec was skipped
    with pytest.raises(SpecError) as err:
        build_learner(spec, None, {}, torch.device("cpu"))
    assert err.value.errors == ["paths[0].params.temperature: Input should be a valid number",
                                "weighting.params.temperature: Input should be greater than 0"]


def test_params_error_is_a_value_error_naming_each_field() -> None:
    with pytest.raises(ParamsError) as err:
        parse_params(WEIGHTINGS.get("lookahead").params_model, {"beta": 1.0, "speed": 2})
    assert isinstance(err.value, ValueError)
    assert err.value.problems == [("beta", "Input should be less than 1"),
                                  ("speed", "unknown parameter (known: beta, margin, rate)")]
    assert str(err.value) == "beta: Input should be less than 1; speed: unknown parameter (known: beta, margin, rate)"


def test_cli_listings_print_each_parameter_with_type_default_bounds_and_description() -> None:
    out = engine_cli("distillers", check=True).stdout.splitlines()
    kd = out.index(next(line for line in out if line.startswith("kd ")))
    assert out[kd + 1].split() == ["temperature", "float", "=", "4.0", "(>", "0):", "softening", "temperature", "T",
                                   "of", "both", "softmaxes"]
    assert out[out.index(next(line for line in out if line.startswith("sp "))) + 1].strip() == "(no parameters)"
    out = engine_cli("weightings", check=True).stdout
    assert "    space       'params' | 'logits' = 'params': " in out
    assert "    beta    float = 0.7 (>= 0, < 1): " in out
    assert "    route_teacher  str | None = null: " in engine_cli("methods", check=True).stdout
