"""Configure's parameter inputs generated from the plugins' params models: the pure mapping, then AppTest."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import yaml

from app.plugin_params import AUTO, ParamInput, fits, fold_params, param_inputs, unknown_params
from engine.methods import METHODS
from engine.paths import DISTILLERS
from engine.store import Store
from engine.weightings import WEIGHTINGS
from page_helpers import button, open_page, texts


# ---------------------------------------------------------------- schema -> inputs (pure)
def by_name(fields: list[ParamInput]) -> dict[str, ParamInput]:
    return {f.name: f for f in fields}


def test_numbers_get_their_bounds_literals_a_select_bools_a_checkbox_optionals_a_null_choice() -> None:
    kd = by_name(param_inputs(DISTILLERS.get("kd").params_model))["temperature"]
    assert (kd.kind, kd.number_type, kd.default, kd.min_value, kd.max_value) == ("number", "float", 4.0, 0.0, None)
    assert kd.help == "softening temperature T of both softmaxes (default 4.0; > 0)"
    ad = by_name(param_inputs(WEIGHTINGS.get("adaptive_distillation").params_model))
    assert (ad["variant"].kind, ad["variant"].options) == ("select", ("layer_wise", "per_loss"))
    assert ad["use_path_weights"].kind == "checkbox"
    look = by_name(param_inputs(WEIGHTINGS.get("lookahead").params_model))
    assert (look["beta"].min_value, look["beta"].max_value) == (0.0, 1.0)
    crd = by_name(param_inputs(DISTILLERS.get("crd").params_model))
    assert (crd["nce_k"].number_type, crd["nce_k"].min_value) == ("int", 1)
    sakd = by_name(param_inputs(METHODS.get("sakd").params_model))
    assert (sakd["same_family"].kind, sakd["same_family"].optional, sakd["same_family"].options) == \
        ("select", True, (True, False))
    assert (sakd["route_teacher"].kind, sakd["route_teacher"].optional) == ("text", True)
    assert AUTO not in sakd["same_family"].options
    assert param_inputs(WEIGHTINGS.get("equal").params_model) == []
    plugins = [*DISTILLERS, *WEIGHTINGS, *METHODS]
    assert not any(f.yaml for entry in plugins for f in param_inputs(entry.obj.params_model))


def test_values_an_input_cannot_show_fall_back_to_yaml() -> None:
    fields = by_name(param_inputs(WEIGHTINGS.get("mgda").params_model))
    assert fits(fields["iterations"], 50) and not fits(fields["iterations"], 2.5)
    assert not fits(fields["iterations"], 0) and not fits(fields["iterations"], "50") and not fits(fields["iterations"], True)
    assert fits(fields["space"], "logits") and not fits(fields["space"], "features")
    dwa = by_name(param_inputs(WEIGHTINGS.get("dwa").params_model))["temperature"]
    assert fits(dwa, 2) and fits(dwa, 0.5) and not fits(dwa, -1.0)


def test_an_untouched_form_leaves_params_as_they_were() -> None:
    fields = param_inputs(WEIGHTINGS.get("gradnorm").params_model)
    assert fold_params(fields, {}, {"alpha": 1.5, "lr": 0.025}) == {}
    assert fold_params(fields, {"alpha": 2}, {"alpha": 2.0, "lr": 0.025}) == {"alpha": 2}
    assert fold_params(fields, {"alpha": 2}, {"alpha": 3.0, "lr": 0.05}) == {"alpha": 3.0, "lr": 0.05}
    assert fold_params(fields, {"alpha": 1.5, "beta": 1}, {"alpha": 1.5, "lr": 0.025}) == {"alpha": 1.5, "beta": 1}
    assert unknown_params(fields, {"alpha": 1.5, "beta": 1}) == {"beta": 1}


# ---------------------------------------------------------------- Configure (AppTest)
def test_configure_draws_the_weightings_inputs_from_its_schema_and_writes_the_spec(workspace: Path) -> None:
    at = open_page("configure")
    assert not [t for t in at.text_input if t.label == "Weighting params (YAML)"]
    at.selectbox(key="cfg0.weighting.name").set_value("adaptive_distillation").run()
    at.number_input(key="cfg0.weighting.params.adaptive_distillation.a_d").set_value(0.5).run()
    at.selectbox(key="cfg0.weighting.params.adaptive_distillation.variant").set_value("per_loss").run()
    at.checkbox(key="cfg0.weighting.params.adaptive_distillation.use_path_weights").check().run()
    assert at.session_state["cfg_spec"]["weighting"] == {
        "name": "adaptive_distillation", "params": {"a_d": 0.5, "variant": "per_loss", "use_path_weights": True}}
    assert at.session_state["cfg_spec"]["method"] is None  # no path method: each path's distiller
    assert "The spec is valid." in texts(at.success)
    at.selectbox(key="cfg0.weighting.name").set_value("dwa").run()  # another weighting starts from its defaults
    assert at.number_input(key="cfg0.weighting.params.dwa.temperature").value == 2.0
    assert at.session_state["cfg_spec"]["weighting"] == {"name": "dwa", "params": {}}


def test_configure_writes_the_weighting_and_the_path_method_with_their_params(workspace: Path) -> None:
    at = open_page("configure")
    method = at.selectbox(key="cfg0.method.name")
    assert method.value == method.options[0] and method.options[1:] == METHODS.names()
    at.selectbox(key="cfg0.weighting.name").set_value("dwa").run()
    at.number_input(key="cfg0.weighting.params.dwa.temperature").set_value(3.0).run()
    at.selectbox(key="cfg0.method.name").set_value("amtml").run()
    at.number_input(key="cfg0.method.params.amtml.alpha").set_value(0.5).run()
    assert at.session_state["cfg_spec"]["method"] == {"name": "amtml", "params": {"alpha": 0.5}}
    assert METHODS.entry("amtml").description in texts(at.caption)
    assert "The spec is valid." in texts(at.success), texts(at.error)
    button(at, "Launch run").click().run()
    with closing(Store(workspace, readonly=True)) as store:
        (run,) = store.list_runs()
        spec = yaml.safe_load(store.get_run(run.id).spec_yaml)
    assert spec["weighting"] == {"name": "dwa", "params": {"temperature": 3.0}}
    assert spec["method"] == {"name": "amtml", "params": {"alpha": 0.5}}


def test_configure_path_method_none_removes_the_method(workspace: Path) -> None:
    at = open_page("configure")
    at.selectbox(key="cfg0.method.name").set_value("sakd").run()
    assert at.session_state["cfg_spec"]["method"] == {"name": "sakd", "params": {}}
    at.selectbox(key="cfg0.method.name").set_value(at.selectbox(key="cfg0.method.name").options[0]).run()
    assert at.session_state["cfg_spec"]["method"] is None
    assert "The spec is valid." in texts(at.success)


def test_configure_edits_a_paths_distiller_params_in_the_detail_panel(workspace: Path) -> None:
    at = open_page("configure")
    assert at.selectbox(key="cfg0.paths.detail.1").value == 0  # the demo's one KD path
    at.number_input(key="cfg0.paths.0.cnn-kd.kd.params.temperature").set_value(2.5).run()
    assert at.session_state["cfg_spec"]["paths"][0]["params"] == {"temperature": 2.5}
    assert "The spec is valid." in texts(at.success)
    button(at, "Launch run").click().run()
    with closing(Store(workspace, readonly=True)) as store:
        (run,) = store.list_runs()
        spec = yaml.safe_load(store.get_run(run.id).spec_yaml)
    assert spec["paths"][0]["params"] == {"temperature": 2.5}


def test_a_bad_value_from_a_yaml_spec_shows_as_yaml_and_is_named_by_field(workspace: Path) -> None:
    at = open_page("configure")
    at.session_state["cfg_spec"]["paths"][0]["params"] = {"temperature": "hot", "tau": 1}
    at.run()
    assert at.text_input(key="cfg0.paths.0.cnn-kd.kd.params.temperature.yaml").value == "hot"
    errors = texts(at.error)
    assert "`paths[0].params.temperature`: Input should be a valid number" in errors
    assert "`paths[0].params.tau`: unknown parameter (known: temperature, standardize)" in errors
    at.text_input(key="cfg0.paths.0.cnn-kd.kd.params.temperature.yaml").input("3").run()
    at.text_input(key="cfg0.paths.0.cnn-kd.kd.params.unknown").input("{}").run()
    assert at.session_state["cfg_spec"]["paths"][0]["params"] == {"temperature": 3}
    assert "The spec is valid." in texts(at.success)
