"""The catalog's commands: tag, note, archive, restore, delete and ls --tag/--search/--archived; bad input exits 2
with one line naming what is wrong."""
from __future__ import annotations

import io
from contextlib import closing
from pathlib import Path

import pytest

from engine import catalog
from engine.cli import main
from engine.store import Store, run_dir
from tests.conftest import engine_cli
from tests.synthetic_runs import add_finished_run


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def listed_ids(capsys: pytest.CaptureFixture, *args: str) -> list[str]:
    code, out, _ = run_cli(capsys, "ls", *args)
    assert code == 0
    return [line.split()[0] for line in out.splitlines()[1:]]


def test_tag_a_run_from_a_shell_and_list_it_by_tag(home: Path) -> None:
    run_id, other = add_finished_run(home, "tagged"), add_finished_run(home, "other")
    with closing(Store(home)) as store:
        catalog.set_tags(store, run_id, add=["old"])
    proc = engine_cli("tag", run_id, "+baseline", "-old", "+seed-0", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{run_id}: baseline seed-0"
    listed = engine_cli("ls", "--tag", "baseline", timeout=120)
    assert run_id in listed.stdout and other not in listed.stdout and "[baseline seed-0]" in listed.stdout


def test_tag_refuses_bad_tags_and_ids_with_one_line(home: Path, capsys: pytest.CaptureFixture) -> None:
    run_id = add_finished_run(home, group_id="cmp-g")
    cases = {
        ("tag", run_id, "+two words"): "error: tag 'two words': has a space",
        ("tag", run_id, "+" + "y" * 200): "error: tag 'yyyy",
        ("tag", run_id, "baseline"): "error: tag change 'baseline': start it with + to add the tag or - to remove it",
        ("tag", "../../etc", "+x"): "error: '../../etc': no run or group has this id",
        ("tag", "20200101-000000-abcd", "+x"): "error: run 20200101-000000-abcd does not exist",
    }
    for args, message in cases.items():
        code, out, err = run_cli(capsys, *args)
        assert (code, out) == (2, "") and err.startswith(message) and err.count("\n") == 1, (args, err)
    assert run_cli(capsys, "tag", run_id)[1] == f"{run_id}: (no tags)\n"
    assert run_cli(capsys, "tag", "cmp-g", "+sweep")[1] == "cmp-g: sweep\n"  # a group id works too
    assert run_cli(capsys, "tag", "cmp-g")[1] == "cmp-g: sweep\n"
    listed = run_cli(capsys, "ls", "--tag", "sweep")[1]  # the group's tag lists its runs, marked as the group's
    assert run_id in listed and "[sweep(group)]" in listed


def test_note_from_text_and_file_printed_back(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_id = add_finished_run(home, group_id="cmp-g")
    assert run_cli(capsys, "note", run_id, "--text", "Seed 3 *diverged*") == (
        0, f"note of run {run_id}: 17 bytes saved\n", "")
    assert run_cli(capsys, "note", run_id)[1] == "Seed 3 *diverged*\n"
    note = tmp_path / "note.md"
    note.write_text("# Group\n\nuncertainty wins at lr 0.1\n", encoding="utf-8")
    assert run_cli(capsys, "note", "cmp-g", "--file", str(note))[0] == 0
    assert run_cli(capsys, "note", "cmp-g")[1] == note.read_text() + "\n"
    big = tmp_path / "big.md"
    big.write_bytes(b"x" * 1024 * 1024)
    code, _, err = run_cli(capsys, "note", run_id, "--file", str(big))
    assert code == 2 and err == f"error: --file {big}: more than the 65,536 bytes (64 KiB) a note may hold\n"
    code, _, err = run_cli(capsys, "note", run_id, "--text", "z" * (1024 * 1024))
    assert code == 2 and "1,048,576 bytes, more than the 65,536 bytes" in err
    assert run_cli(capsys, "note", run_id)[1] == "Seed 3 *diverged*\n"  # refused: the old note stays
    assert run_cli(capsys, "note", run_id, "--text", "")[1] == f"note of run {run_id}: removed\n"


def test_archive_hides_from_ls_and_restore_brings_back(home: Path, capsys: pytest.CaptureFixture) -> None:
    kept, archived = add_finished_run(home, "kept"), add_finished_run(home, "archived")
    code, _, err = run_cli(capsys, "archive", archived, "20200101-000000-abcd")
    assert code == 2 and err == "error: run 20200101-000000-abcd does not exist\n"
    assert listed_ids(capsys) == [archived, kept]  # a typo among the ids: none was archived
    assert run_cli(capsys, "archive", archived)[1] == f"archived {archived}\n"
    assert listed_ids(capsys) == [kept] and listed_ids(capsys, "--archived") == [archived]
    assert run_cli(capsys, "restore", archived)[1] == f"restored {archived}\n"
    assert listed_ids(capsys) == [archived, kept] and listed_ids(capsys, "--archived") == []


def test_ls_searches_names_tags_and_notes(home: Path, capsys: pytest.CaptureFixture) -> None:
    alpha, beta = add_finished_run(home, "Alpha run"), add_finished_run(home, "beta run")
    with closing(Store(home)) as store:
        catalog.set_note(store, "run", beta, "teacher from the CIFAR sweep")
    assert listed_ids(capsys, "--search", "alpha") == [alpha]
    assert listed_ids(capsys, "--search", "cifar") == [beta]
    assert listed_ids(capsys, "--search", "run") == [beta, alpha]


def test_delete_asks_on_a_terminal_and_refuses_without_one(home: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    doomed, kept = add_finished_run(home, "doomed"), add_finished_run(home, "kept")
    code, _, err = run_cli(capsys, "delete", doomed)  # pytest's stdin is not a terminal
    assert code == 2 and err.startswith("error: delete asks for confirmation and stdin is not a terminal: pass --yes")
    terminal = io.StringIO("n\n")
    terminal.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", terminal)
    assert run_cli(capsys, "delete", doomed)[1].endswith("nothing deleted\n")
    assert run_dir(home, doomed).exists()
    terminal = io.StringIO("y\n")
    terminal.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", terminal)
    code, out, _ = run_cli(capsys, "delete", doomed)
    assert code == 0 and f"deleted {doomed}: " in out and not run_dir(home, doomed).exists()
    code, _, err = run_cli(capsys, "delete", doomed, "--yes")
    assert code == 2 and err == f"error: run {doomed} does not exist\n"
    code, _, err = run_cli(capsys, "delete", "../../etc", "--yes")
    assert code == 2 and err.startswith("error: run id '../../etc': not a PathScope run id")
    assert listed_ids(capsys) == [kept]


def test_delete_names_the_runs_that_depend_on_it(home: Path, capsys: pytest.CaptureFixture) -> None:
    teacher = add_finished_run(home, "teacher")
    with closing(Store(home)) as store:
        variant = store.create_run(store.get_run(teacher).spec_yaml, "variant", group_id=f"abl-{teacher}")
    code, _, err = run_cli(capsys, "delete", teacher, "--yes")
    assert code == 2 and err.startswith(f"error: run {teacher} is needed by 1 other run(s): {variant} (in its "
                                        f"ablation group abl-{teacher})")
    code, out, _ = run_cli(capsys, "delete", variant, "--yes")
    assert code == 0 and out.startswith(f"cancelled, then deleted {variant}")  # it was queued
