"""Configure's generated parameter inputs in a real browser: the demo's KD path gets temperature 2.5 in the
path panel, the weighting becomes DWA with temperature 3 and the path method AMTML with alpha 0.5, each
through its own generated input, the run is launched, and the stored spec in the workspace holds every value."""
from __future__ import annotations

import yaml

from tests.e2e.test_browser_suite import (
    UI_TIMEOUT_MS, choose, expect, main_area, no_exception, open_page, run_ids, shot, wait_script_idle,
)


def set_number(field, value: str) -> None:
    field.fill(value)
    field.press("Enter")


def test_kd_temperature_weighting_and_method_params_reach_the_stored_spec(server, page) -> None:
    from engine.store import Store

    page.goto(server.url)
    open_page(page, "Configure")
    area = main_area(page)
    # The demo spec's one path is KD: its panel shows the distiller's one parameter with its default.
    picker = area.get_by_test_id("stSelectbox").filter(has_text="Distiller parameters of path")
    expect(picker.get_by_role("combobox")).to_have_value("cnn-kd · kd")
    temperature = area.get_by_label("temperature", exact=True)
    expect(temperature).to_have_count(1)
    expect(temperature).to_have_value("4")
    set_number(temperature.first, "2.5")
    wait_script_idle(page)
    choose(page, "Weighting", "dwa")
    expect(temperature).to_have_count(2)  # the path's (first on the page) and DWA's
    expect(temperature.nth(1)).to_have_value("2")
    set_number(temperature.nth(1), "3")
    wait_script_idle(page)
    expect(temperature.nth(0)).to_have_value("2.5")
    expect(temperature.nth(1)).to_have_value("3")
    choose(page, "Path method", "amtml")
    alpha = area.get_by_label("alpha", exact=True)
    expect(alpha).to_have_value("0.7")
    set_number(alpha, "0.5")
    wait_script_idle(page)
    expect(alpha).to_have_value("0.5")
    expect(area.get_by_text("The spec is valid.")).to_be_visible(timeout=UI_TIMEOUT_MS)
    no_exception(page)
    shot(page, "plugin-params-configure", focus=temperature.nth(1))
    page.get_by_role("button", name="Launch run").click()
    expect(page.get_by_role("heading", name="Live", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)

    (run_id,) = run_ids(server.home)
    store = Store(server.home, readonly=True)
    try:
        spec = yaml.safe_load(store.get_run(run_id).spec_yaml)
    finally:
        store.close()
    assert spec["paths"][0]["distiller"] == "kd"
    assert spec["paths"][0]["params"] == {"temperature": 2.5}
    assert spec["weighting"] == {"name": "dwa", "params": {"temperature": 3.0}}
    assert spec["method"] == {"name": "amtml", "params": {"alpha": 0.5}}
