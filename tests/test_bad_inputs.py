"""The bad-input campaign of issue 12 as tests: every case of tests/bad_inputs/ is refused with its message.

Each case goes through `validate` (in-process, through the CLI's main(): exit code 2, the case's message, no
traceback); a sample also through real `python -m engine validate` processes, `engine run`, and Configure's spec
upload. Around every case: nothing is written beside the spec or in the working folder, no run is created, and
the workspace's finished run (trained once per module, with a dotted path id) is unchanged.
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from bad_inputs.corpus import BASE, BOMB_LINES, BOMB_MESSAGE, CASES, Case
from conftest import ROOT
from engine.cli import main
from engine.store import Store, db_path, init_workspace

CASE_BY_NAME = {case.name: case for case in CASES}
#: one or two of each kind: the file, the loader's attacks, numbers, meaning, image folders
RUN_SAMPLE = ["binary", "over-256kb", "bomb-weighting-params", "nested-20000-flow", "duplicate-top-key",
              "epochs=out-of-range", "paths.0.weight=inf", "weighting.params.task_weight=nan", "version-7",
              "path-id-slash", "one-class", "stray-file"]
PROCESS_SAMPLE = ["latin-1", "bomb-method-params", "nested-20000-maps", "95000-paths", "seed=out-of-range",
                  "one-class"]
#: what the upload parses (structure and types; names and folders are checked by the form's validation)
UPLOAD_SAMPLE = ["binary", "utf-16", "over-256kb", "bomb-weighting-params", "bomb-student-arch-params",
                 "recursive-alias", "nested-20000-flow", "duplicate-nested-key", "python-tag", "long-int",
                 "epochs=out-of-range", "optimizer.momentum=nan", "optimizer.lr=inf", "version-7"]


def _param(case: Case):
    unreadable_to_all = case.needs_non_root and os.geteuid() == 0
    return pytest.param(case, id=case.name, marks=pytest.mark.skipif(
        unreadable_to_all, reason="root reads every folder; tests/test_bad_inputs.py simulates this case"))


def _params(names: list[str] | None = None) -> list:
    return [_param(CASE_BY_NAME[n]) for n in names] if names is not None else [_param(c) for c in CASES]


@dataclass
class Finished:
    """The workspace's finished run; ``before`` is its snapshot taken when it finished."""

    home: Path
    run_id: str
    before: tuple | None = None

    def snapshot(self) -> tuple[dict[str, str], tuple, int]:
        """Its files' hashes, its row, and how many runs the workspace holds."""
        store = Store(self.home, readonly=True)
        try:
            run = store.get_run(self.run_id)
            row = (run.status, run.result_json, run.error, run.spec_yaml, run.finished_at)
            return _hashes(self.home / "runs" / self.run_id), row, len(store.list_runs())
        finally:
            store.close()


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """A workspace holding one finished run, trained once here; its path id has a dot (nn.ModuleDict keys
    cannot, so the Learner maps it)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    home = root / "workspace"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATHSCOPE_HOME", str(home))
        mp.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
        init_workspace(home)
        spec = copy.deepcopy(BASE)
        spec["paths"][0]["id"] = "t.kd"
        (root / "good.yaml").write_text(yaml.safe_dump(spec))
        assert main(["run", str(root / "good.yaml")]) == 0
        store = Store(home, readonly=True)
        (run,) = store.list_runs()
        store.close()
        assert run.status == "done"
        state = Finished(home, run.id)
        state.before = state.snapshot()
        yield state


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder to run in: it must still be empty afterwards."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def _refused_in_process(case: Case, command: str, finished: Finished, scratch: Path,
                        capsys: pytest.CaptureFixture) -> None:
    spec = case.write(scratch / "case")
    before = _listing(scratch)
    code = main([command, str(spec)])
    out, err = capsys.readouterr()
    assert code == 2, f"{case.name}: exit {code}\n{out}{err}"
    assert case.matches(err), f"{case.name}: expected /{case.expect}/ in\n{err}"
    assert "Traceback" not in out + err
    assert _listing(scratch) == before, f"{case.name} wrote files outside the workspace"
    assert finished.snapshot() == finished.before, f"{case.name} touched the workspace"


def test_the_corpus_holds_at_least_100_cases() -> None:
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", _params())
def test_validate_refuses_each_case_with_its_message(case: Case, finished: Finished, scratch: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    _refused_in_process(case, "validate", finished, scratch, capsys)


@pytest.mark.parametrize("case", _params(RUN_SAMPLE))
def test_run_refuses_before_creating_a_run(case: Case, finished: Finished, scratch: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    _refused_in_process(case, "run", finished, scratch, capsys)


@pytest.mark.parametrize("case", _params(PROCESS_SAMPLE))
def test_a_real_process_exits_2_with_the_message(case: Case, finished: Finished, scratch: Path) -> None:
    spec = case.write(scratch / "case")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "engine", "validate", str(spec)], cwd=scratch / "cwd", env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert case.matches(done.stderr), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert _listing(scratch / "cwd") == []


def test_configure_upload_names_the_problem_and_keeps_the_form(finished: Finished) -> None:
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=180)
    at.run()
    at.switch_page(str(ROOT / "pages" / "configure.py")).run()
    form_name = at.text_input[0].value
    for name in UPLOAD_SAMPLE:
        case = CASE_BY_NAME[name]
        content = case.content(finished.home.parent / "upload")
        at.file_uploader(key="cfg_upload").set_value((f"{name}.yaml", content, "application/x-yaml")).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        shown = "\n".join(str(e.value) for e in at.error)
        assert f"{name}.yaml was not loaded" in shown, (name, shown)
        assert case.matches(shown.replace("- `", "error: ")), (name, case.expect, shown)
        assert at.text_input[0].value == form_name  # the form is untouched
    assert finished.snapshot() == finished.before


def test_configure_yaml_fields_refuse_an_alias_bomb(finished: Finished) -> None:
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=180)
    at.run()
    at.switch_page(str(ROOT / "pages" / "configure.py")).run()
    field = next(t for t in at.text_input if ".student.arch_params." in str(t.key))
    field.set_value("{" + ", ".join(BOMB_LINES) + "}").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join(str(e.value) for e in at.error)
    assert re.search(r"student\.arch_params`?: " + BOMB_MESSAGE.removeprefix("^error: "), shown), shown


def test_a_dataset_warns_of_a_field_it_ignores(finished: Finished, scratch: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    (scratch / "spec.yaml").write_text(yaml.safe_dump(BASE))
    assert main(["validate", str(scratch / "spec.yaml")]) == 0
    assert "warning" not in capsys.readouterr().err  # fields left at their defaults are not "given"

    spec = copy.deepcopy(BASE)
    spec["dataset"]["root"] = str(scratch / "my-digits")
    (scratch / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["validate", str(scratch / "spec.yaml")]) == 0
    err = capsys.readouterr().err
    assert "warning: dataset.root: digits ignores it" in err


def test_an_unreadable_class_folder_is_named(finished: Finished, scratch: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """As root every folder is readable, so the refusal of the operating system is simulated."""
    case = CASE_BY_NAME["unreadable-class"]
    spec = case.write(scratch / "case")
    locked = str(scratch / "case" / "images" / "dog")
    listdir, scandir = os.listdir, os.scandir

    def refuse(real):
        def call(path=".", *args):
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return real(path, *args)
        return call

    monkeypatch.setattr(os, "listdir", refuse(listdir))
    monkeypatch.setattr(os, "scandir", refuse(scandir))
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert case.matches(err), err
    assert "Traceback" not in err


def test_ls_strips_control_characters_from_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "workspace"
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    store = Store(init_workspace(home))
    store.create_run("name: x\n", "\x1b[2J\x1b]0;owned\x07evil\u202ename\x00")
    store.close()
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "evilname" in out
    assert not any(ord(c) < 32 and c != "\n" for c in out) and "\u202e" not in out


@pytest.mark.parametrize("command", [["ls"], ["run", "spec.yaml"], ["show", "some-run"]])
def test_a_corrupt_database_gives_a_message_saying_what_to_do(command: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "workspace"
    home.mkdir()
    db_path(home).write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(BASE))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "is not a readable PathScope database" in err and "move it aside" in err, err
    assert "Traceback" not in err
