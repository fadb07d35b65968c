"""The run catalog (engine/catalog.py): the v3 -> v4 migration, the run table's filters and sorting, tags, notes,
archive, dependants and delete (two processes at once too), and a thousand runs listed in one query."""
from __future__ import annotations

import multiprocessing
import sqlite3
import statistics
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from engine import catalog
from engine.catalog import CatalogError, RunFilter
from engine.runtime import LostClaim
from engine.spec import parse_spec, spec_to_yaml
from engine.store import SCHEMA_VERSION, Store, db_path, init_workspace, run_dir
from tests.conftest import tiny_spec_dict
from tests.synthetic_runs import add_finished_run


def spec(name: str = "tiny", **overrides) -> str:
    return spec_to_yaml(parse_spec(tiny_spec_dict(name=name, **overrides)))


def accuracies(val: list[float] | None, test: list[float]) -> list[tuple[str, int, int, str, float]]:
    """Per-epoch accuracies of the student (phase main) as the loop logs them; a teacher's beside them."""
    rows = [("main", 10 * (e + 1), e, "acc/test", v) for e, v in enumerate(test)]
    rows += [("main", 10 * (e + 1), e, "acc/val", v) for e, v in enumerate(val or [])]
    return rows + [("teacher:t", 10, 0, "acc/val", 0.99)]


def entries(store: Store, **fields) -> list[str]:
    return [e.name for e in catalog.run_table(store, RunFilter(**fields), sort="name", descending=False)]


# ---------------------------------------------------------------- the run table's columns
def test_final_best_and_best_epoch_come_from_the_result_and_the_stored_epochs(home: Path) -> None:
    with_val = add_finished_run(home, "with val", metrics=accuracies([0.5, 0.8, 0.8, 0.7], [0.4, 0.6, 0.9, 0.65]),
                                result={"test_acc": 0.65})
    test_only = add_finished_run(home, "test only", metrics=accuracies(None, [0.3, 0.75, 0.7]),
                                 result={"test_acc": 0.7})
    timed = add_finished_run(home, "timed")  # its result reports 12 s
    with closing(Store(home, readonly=True)) as store:
        table = {e.run_id: e for e in catalog.run_table(store)}
        assert [e.name for e in catalog.run_table(store, sort="duration_s")] == ["timed", "test only", "with val"]
    first, second = table[with_val], table[test_only]
    assert (table[timed].duration_s, first.duration_s) == (12.0, None)  # never started by a worker: no duration
    # validation decides the best epoch (the earliest of a tie), the teacher's 0.99 is not the student's
    assert (first.final_acc, first.best_acc, first.best_epoch) == (0.65, 0.8, 1)
    assert (second.final_acc, second.best_acc, second.best_epoch) == (0.7, 0.75, 1)
    assert (first.dataset, first.teachers, first.student, first.weighting, first.method, first.distillers,
            first.n_paths, first.seed, first.executor) == ("digits", ("small_cnn",), "mlp", "equal", "plain",
                                                           ("kd",), 2, 0, "local")


def test_a_resumed_run_shows_no_result_of_the_attempt_that_ended(home: Path) -> None:
    run_id = add_finished_run(home, "resumed", metrics=accuracies([0.5, 0.8], [0.4, 0.6]), result={"test_acc": 0.6})
    with closing(Store(home)) as store:
        store.con.execute("UPDATE runs SET status='interrupted' WHERE id=?", (run_id,))
        store.con.commit()
        assert store.resume_run(run_id)
        entry = next(e for e in catalog.run_table(store) if e.run_id == run_id)
    assert (entry.status, entry.final_acc, entry.best_acc, entry.best_epoch, entry.duration_s) == (
        "queued", None, None, None, None)


def test_a_run_still_queued_has_its_spec_columns_and_no_accuracy(home: Path) -> None:
    two = [{"id": "cnn", "arch": "small_cnn", "source": {"kind": "train"}},
           {"id": "big", "arch": "mlp", "source": {"kind": "train"}}]
    paths = [{"id": "a", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
             {"id": "b", "teacher": "big", "distiller": "dkd", "teacher_spot": "fc", "student_spot": "fc"},
             {"id": "c", "teacher": "big", "distiller": "rkd", "teacher_spot": "fc", "student_spot": "fc",
              "enabled": False}]
    with closing(Store(home)) as store:
        run_id = store.create_run(spec(teachers=two, paths=paths, seed=7, method={"name": "amtml"},
                                       weighting={"name": "dwa"}), "queued one")
        (entry,) = catalog.run_table(store)
    assert entry.run_id == run_id and entry.status == "queued"
    assert (entry.teachers, entry.distillers, entry.n_paths, entry.seed, entry.method, entry.weighting) == (
        ("small_cnn", "mlp"), ("dkd", "kd"), 2, 7, "amtml", "dwa")  # the disabled path's rkd is not counted
    assert (entry.final_acc, entry.best_acc, entry.best_epoch, entry.archived, entry.tags) == (None,) * 3 + (False, ())


# ---------------------------------------------------------------- filters, search, sorting, facets
@pytest.fixture
def catalogued(home: Path) -> dict[str, str]:
    """Four runs that differ in every filtered field; two share a comparison group."""
    runs = {
        "alpha": add_finished_run(home, "alpha", weighting="dwa", group_id="cmp-x", result={"test_acc": 0.9}),
        "beta": add_finished_run(home, "beta", weighting="equal", group_id="cmp-x", result={"test_acc": 0.7},
                                 dataset={"name": "fashion_mnist"}),
        "gamma": add_finished_run(home, "gamma", method="amtml", teacher_ids=("t", "u"), result={"test_acc": 0.8}),
    }
    with closing(Store(home)) as store:
        runs["delta"] = store.create_run(spec("Δelta", student={"arch": "small_cnn"}, teachers=[
            {"id": "t", "arch": "resnet8", "source": {"kind": "train"}}]), "Δelta")
        catalog.set_tags(store, runs["alpha"], add=["baseline", "paper"])
        catalog.set_tags(store, runs["beta"], add=["baseline"])
        catalog.set_note(store, "run", runs["gamma"], "# Seed variance\nRe-run with **Straße** data.")
    return runs


def test_each_filter_narrows_the_table(home: Path, catalogued: dict[str, str]) -> None:
    with closing(Store(home, readonly=True)) as store:
        assert entries(store) == ["alpha", "beta", "gamma", "Δelta"]
        assert entries(store, statuses=("queued",)) == ["Δelta"]
        assert entries(store, datasets=("fashion_mnist",)) == ["beta"]
        assert entries(store, teachers=("resnet8", "nothing")) == ["Δelta"]
        assert entries(store, students=("small_cnn",)) == ["Δelta"]
        assert entries(store, weightings=("dwa", "fixed")) == ["alpha"]
        assert entries(store, methods=("amtml",)) == ["gamma"]
        assert entries(store, methods=("plain",)) == ["alpha", "beta", "Δelta"]
        assert entries(store, groups=("cmp-x",)) == ["alpha", "beta"]
        assert entries(store, tags=("baseline",)) == ["alpha", "beta"]
        assert entries(store, tags=("baseline", "paper")) == ["alpha"]  # all of the tags
        assert entries(store, groups=("cmp-x",), weightings=("equal",)) == ["beta"]


def test_search_matches_name_id_tags_and_note_in_any_case(home: Path, catalogued: dict[str, str]) -> None:
    with closing(Store(home, readonly=True)) as store:
        assert entries(store, text="ALPH") == ["alpha"]
        assert entries(store, text="PAPER") == ["alpha"]                    # a tag
        assert entries(store, text="straSSE") == ["gamma"]                  # the note, Unicode case folding
        assert entries(store, text="δELTA") == ["Δelta"]
        assert entries(store, text=catalogued["beta"][-4:]) == ["beta"]     # the id
        assert entries(store, text="%") == [] and entries(store, text="_") == []  # no LIKE wildcards


def test_a_groups_tags_tag_its_runs_for_filters_and_search(home: Path, catalogued: dict[str, str]) -> None:
    with closing(Store(home)) as store:
        catalog.set_group_tags(store, "cmp-x", add=["ablation-study"])
        assert entries(store, tags=("ablation-study",)) == ["alpha", "beta"]
        assert entries(store, tags=("ablation-study", "paper")) == ["alpha"]  # one from the group, one its own
        assert entries(store, text="ABLATION") == ["alpha", "beta"]
        alpha = next(e for e in catalog.run_table(store) if e.name == "alpha")
        assert (alpha.tags, alpha.group_tags) == (("baseline", "paper"), ("ablation-study",))  # kept apart
        assert "ablation-study" in catalog.facets(store)["tags"]


def test_sorting_puts_runs_without_a_value_last_either_way(home: Path, catalogued: dict[str, str]) -> None:
    with closing(Store(home, readonly=True)) as store:
        def order(sort: str, descending: bool) -> list[str]:
            return [e.name for e in catalog.run_table(store, sort=sort, descending=descending)]

        assert order("final_acc", True) == ["alpha", "gamma", "beta", "Δelta"]
        assert order("final_acc", False) == ["beta", "gamma", "alpha", "Δelta"]
        assert order("created_at", True) == ["Δelta", "gamma", "beta", "alpha"]
        assert [e.name for e in catalog.run_table(store, sort="name", descending=False, limit=2)] == ["alpha", "beta"]
        with pytest.raises(CatalogError, match="sort 'acc': not a run-table column; one of created_at"):
            catalog.run_table(store, sort="acc")


def test_facets_list_every_value_a_filter_can_take(home: Path, catalogued: dict[str, str]) -> None:
    with closing(Store(home, readonly=True)) as store:
        found = catalog.facets(store)
    assert found == {"statuses": ["queued", "done"], "datasets": ["digits", "fashion_mnist"],
                     "teachers": ["resnet8", "small_cnn"], "students": ["mlp", "small_cnn"],
                     "weightings": ["dwa", "equal"], "methods": ["amtml", "plain"], "distillers": ["kd"],
                     "groups": ["cmp-x"], "tags": ["baseline", "paper"]}


# ---------------------------------------------------------------- tags and notes
@pytest.mark.parametrize("tag, problem", [
    ("two words", "tag 'two words': has a space"),
    ("x" * 200, f"tag '{'x' * 40}...': 200 characters, more than the 40 a tag may have"),
    ("", "tag '': empty"),
    ("bell\x07", r"tag 'bell\x07': has a control character"),
    ("a/b", "tag 'a/b': '/' is not allowed"),
])
def test_a_bad_tag_is_named_and_changes_nothing(home: Path, tag: str, problem: str) -> None:
    run_id = add_finished_run(home)
    with closing(Store(home)) as store:
        catalog.set_tags(store, run_id, add=["kept"])
        with pytest.raises(CatalogError) as err:
            catalog.set_tags(store, run_id, add=["fine", tag], remove=["kept"])
        assert str(err.value).startswith(problem) and "\n" not in str(err.value)
        assert catalog.run_table(store)[0].tags == ("kept",)


def test_tags_are_added_removed_and_kept_per_case(home: Path) -> None:
    run_id = add_finished_run(home, group_id="cmp-g")
    with closing(Store(home)) as store:
        assert catalog.set_tags(store, run_id, add=["b", "B", "a:1"]) == ("B", "a:1", "b")
        assert catalog.set_tags(store, run_id, add=["c"], remove=["B", "never-there"]) == ("a:1", "b", "c")
        catalog.archive(store, run_id)
        assert catalog.run_tags(store, run_id) == ("a:1", "b", "c")  # an archived run keeps and shows its tags
        catalog.restore(store, run_id)
        with pytest.raises(CatalogError, match="tag 'c': both added and removed"):
            catalog.set_tags(store, run_id, add=["c"], remove=["c"])
        assert catalog.set_group_tags(store, "cmp-g", add=["sweep"]) == ("sweep",)
        assert catalog.group_tags(store, "cmp-g") == ("sweep",)
        with pytest.raises(CatalogError, match="^group cmp-nope does not exist$"):
            catalog.set_group_tags(store, "cmp-nope", add=["x"])
        with pytest.raises(CatalogError, match="^run 20200101-000000-abcd does not exist$"):
            catalog.set_tags(store, "20200101-000000-abcd", add=["x"])
        with pytest.raises(CatalogError, match="run id '../../etc': not a PathScope run id"):
            catalog.set_tags(store, "../../etc", add=["x"])


def test_notes_hold_markdown_and_refuse_a_megabyte(home: Path) -> None:
    run_id = add_finished_run(home, group_id="cmp-g")
    markdown = "## Why\n\n* seed 3 diverged\n* `lr=0.1`\n\n<script>kept as text</script>"
    with closing(Store(home)) as store:
        catalog.set_note(store, "run", run_id, markdown)
        catalog.set_note(store, "group", "cmp-g", "group note")
        with pytest.raises(CatalogError, match=f"^note of run {run_id}: 1,048,576 bytes, more than the 65,536 bytes"
                                               r" \(64 KiB\) a note may hold$"):
            catalog.set_note(store, "run", run_id, "x" * 1024 * 1024)
        assert catalog.note_of(store, "run", run_id) == markdown
        assert catalog.note_of(store, "group", "cmp-g") == "group note"
        catalog.set_note(store, "run", run_id, "  \n")  # blank: removed
        assert catalog.note_of(store, "run", run_id) == "" and catalog.run_table(store)[0].note == ""
        with pytest.raises(CatalogError, match="note kind 'paper': expected run or group"):
            catalog.note_of(store, "paper", run_id)


# ---------------------------------------------------------------- archive
def test_an_archived_run_leaves_the_table_and_comes_back_when_restored(home: Path) -> None:
    kept, archived = add_finished_run(home, "kept"), add_finished_run(home, "archived")
    with closing(Store(home)) as store:
        catalog.archive(store, archived)
        catalog.archive(store, archived)  # twice: still archived, no error
        assert entries(store) == ["kept"]
        assert [(e.name, e.archived) for e in catalog.run_table(store, RunFilter(archived=True))] == [
            ("archived", True)]
        catalog.restore(store, archived)
        assert entries(store) == ["archived", "kept"]
        assert store.get_run(archived).status == "done" and store.metrics(archived)  # nothing else changed
        assert kept


# ---------------------------------------------------------------- dependants and delete
def _row_counts(store: Store, run_id: str) -> dict[str, int]:
    tables = ("metrics", "arrays", "events", "jobs", "run_tags", "run_refs")
    counts = {t: store.con.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id=?", (run_id,)).fetchone()[0]
              for t in tables}
    counts["notes"] = store.con.execute("SELECT COUNT(*) FROM notes WHERE target_id=?", (run_id,)).fetchone()[0]
    counts["runs"] = store.con.execute("SELECT COUNT(*) FROM runs WHERE id=?", (run_id,)).fetchone()[0]
    return counts


def test_delete_removes_every_row_and_the_folder_and_nothing_else(home: Path) -> None:
    doomed, other = add_finished_run(home, "doomed"), add_finished_run(home, "other")
    with closing(Store(home)) as store:
        for run_id in (doomed, other):
            catalog.set_tags(store, run_id, add=["t"])
            catalog.set_note(store, "run", run_id, "note")
            store.create_job(run_id, "explain", {})
        before = _row_counts(store, other)
    (run_dir(home, doomed) / "checkpoints").mkdir()
    (run_dir(home, doomed) / "checkpoints" / "final.pt").write_bytes(b"weights")
    report = catalog.delete_run(home, doomed)
    assert report.rows["metrics"] > 0 and report.rows["runs"] == 1 and not report.cancelled
    assert report.folders == (run_dir(home, doomed),) and not run_dir(home, doomed).exists()
    with closing(Store(home, readonly=True)) as store:
        assert set(_row_counts(store, doomed).values()) == {0}
        assert _row_counts(store, other) == before and run_dir(home, other).exists()
    with pytest.raises(CatalogError, match=f"^run {doomed} does not exist$"):
        catalog.delete_run(home, doomed)


def test_a_note_saved_over_a_newer_one_is_refused_and_leaves_it(home: Path) -> None:
    run_id = add_finished_run(home)
    with closing(Store(home)) as store:
        catalog.set_note(store, "run", run_id, "first", read_as="")
        catalog.set_note(store, "run", run_id, "second tab", read_as="first")
        with pytest.raises(catalog.NoteConflict, match=f"^note of run {run_id}: changed elsewhere since this editor "
                                                       r"read it \(it now holds 10 characters\); nothing was saved$"):
            catalog.set_note(store, "run", run_id, "first tab", read_as="first")
        assert catalog.note_of(store, "run", run_id) == "second tab"
        catalog.set_note(store, "run", run_id, "", read_as="second tab")  # removing follows the same rule
        assert catalog.note_of(store, "run", run_id) == ""


def test_a_groups_tags_and_note_go_with_its_last_run(home: Path) -> None:
    first, last = add_finished_run(home, "first", group_id="cmp-g"), add_finished_run(home, "last", group_id="cmp-g")
    with closing(Store(home)) as store:
        catalog.set_group_tags(store, "cmp-g", add=["sweep"])
        catalog.set_note(store, "group", "cmp-g", "lr sweep")
    catalog.delete_run(home, first)
    with closing(Store(home, readonly=True)) as store:
        assert catalog.group_tags(store, "cmp-g") == ("sweep",) and catalog.note_of(store, "group", "cmp-g")
    assert catalog.delete_run(home, last).rows["group_tags"] == 1
    with closing(Store(home, readonly=True)) as store:
        assert catalog.group_tags(store, "cmp-g") == () and catalog.note_of(store, "group", "cmp-g") == ""


def test_a_forged_id_is_refused_before_any_path_is_built(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    for forged in ("../../etc", "../etc", "/etc", "20200101-000000-abcd/..", ""):
        with pytest.raises(CatalogError, match="not a PathScope run id"):
            catalog.delete_run(home, forged)
    assert outside.exists()


def test_a_run_other_runs_load_is_refused_naming_them(home: Path) -> None:
    teacher = add_finished_run(home, "teacher run")
    with closing(Store(home)) as store:
        student = store.create_run(spec("uses it", teachers=[
            {"id": "t", "arch": "mlp", "source": {"kind": "run", "run_id": teacher}}]), "uses it")
        ablated = store.create_run(spec("abl variant"), "abl variant", group_id=f"abl-{teacher}")
        assert catalog.dependants(store, teacher) == [student, ablated]
    with pytest.raises(CatalogError) as err:
        catalog.delete_run(home, teacher)
    message = str(err.value)
    assert message.startswith(f"run {teacher} is needed by 2 other run(s): {student} (its teacher t is this run's "
                              f"model); {ablated} (in its ablation group abl-{teacher})")
    with closing(Store(home, readonly=True)) as store:
        assert store.get_run(teacher).status == "done"  # refused: untouched
    with closing(Store(home, readonly=True)) as store:  # all three selected: the dependants go first
        order = catalog.deletion_order(store, [teacher, student, ablated])
    assert order == [student, ablated, teacher]
    for run_id in order:
        catalog.delete_run(home, run_id)  # never refused in this order


def test_a_queued_run_is_cancelled_then_deleted(home: Path) -> None:
    with closing(Store(home)) as store:
        run_id = store.create_run(spec(), "queued")
    report = catalog.delete_run(home, run_id)
    assert report.cancelled and report.rows["runs"] == 1


def test_a_running_run_is_deleted_once_its_worker_lets_go(home: Path) -> None:
    with closing(Store(home)) as store:
        run_id = store.create_run(spec(), "running")
        token = store.claim_run("w1").attempt_token

    def worker() -> None:  # what the training loop does at its next step boundary
        with closing(Store(home)) as own:
            while not own.cancel_requested(run_id):
                time.sleep(0.05)
            time.sleep(0.3)
            own.finish_run(run_id, "cancelled", token=token)

    thread = threading.Thread(target=worker)
    thread.start()
    report = catalog.delete_run(home, run_id, wait_s=10)
    thread.join()
    assert report.cancelled and report.rows["runs"] == 1


def test_a_run_whose_worker_never_stops_is_left_alone(home: Path) -> None:
    with closing(Store(home)) as store:
        run_id = store.create_run(spec(), "stuck")
        store.claim_run("w1")
    with pytest.raises(CatalogError, match=f"^run {run_id} is still running 0.3 s after its cancel was requested"):
        catalog.delete_run(home, run_id, wait_s=0.3)
    with closing(Store(home, readonly=True)) as store:
        assert store.get_run(run_id).status == "running" and run_dir(home, run_id).exists()


def test_a_running_run_whose_worker_died_is_deleted_and_a_paused_worker_is_fenced_out(home: Path) -> None:
    with closing(Store(home)) as store:
        run_id = store.create_run(spec(), "orphan")
        token = store.claim_run("w1").attempt_token
        store.con.execute("UPDATE runs SET heartbeat_at=? WHERE id=?", (time.time() - 3600, run_id))
        store.con.commit()
        report = catalog.delete_run(home, run_id, wait_s=0)
        assert report.cancelled and report.rows["runs"] == 1
        with pytest.raises(LostClaim):  # the worker wakes up: its next write stops it, nothing is written
            store.add_metrics(run_id, [("main", 1, 0, "loss/total", 1.0)], token=token)
        assert store.metrics(run_id) == []


def _delete_in_child(home: str, run_id: str, barrier, results) -> None:
    barrier.wait()
    try:
        catalog.delete_run(Path(home), run_id)
        results.put("deleted")
    except CatalogError as err:
        results.put(str(err))


def test_two_processes_deleting_one_run_one_wins_the_other_is_told(home: Path) -> None:
    doomed, other = add_finished_run(home, "doomed"), add_finished_run(home, "other")
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    children = [context.Process(target=_delete_in_child, args=(str(home), doomed, barrier, results))
                for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in children)
    assert outcomes == ["deleted", f"run {doomed} does not exist"]
    with closing(Store(home, readonly=True)) as store:
        assert store.get_run(doomed) is None and store.get_run(other).status == "done" and store.metrics(other)
    assert not run_dir(home, doomed).exists() and run_dir(home, other).exists()


# ---------------------------------------------------------------- migration of a version-3 workspace
V3_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, group_id TEXT, spec_yaml TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued','running','interrupted','done','failed','cancelled')),
    phase TEXT NOT NULL DEFAULT '', progress REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, heartbeat_at REAL, worker_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, result_json TEXT, attempt_token TEXT,
    placement_json TEXT);
CREATE INDEX runs_status ON runs(status, created_at);
CREATE TABLE metrics (run_id TEXT NOT NULL, phase TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL,
                      key TEXT NOT NULL, value REAL);
INSERT INTO meta VALUES ('schema_version', '3');
"""


def test_a_version_3_workspace_is_migrated_keeping_and_filling_its_runs(tmp_path: Path) -> None:
    home = tmp_path / "old"
    home.mkdir()
    teacher, student, broken = "20250101-000000-aaaa", "20250102-000000-bbbb", "20250103-000000-cccc"
    uses_teacher = spec("student", teachers=[{"id": "t", "arch": "mlp",
                                              "source": {"kind": "run", "run_id": teacher}}])
    with closing(sqlite3.connect(db_path(home))) as con:
        con.executescript(V3_TABLES)
        insert = "INSERT INTO runs (id, name, spec_yaml, status, created_at, result_json) VALUES (?,?,?,?,?,?)"
        con.execute(insert, (teacher, "teacher", spec("teacher"), "done", 1.0, '{"test_acc": 0.91}'))
        con.execute(insert, (student, "student", uses_teacher, "queued", 2.0, None))
        con.execute(insert, (broken, "hand-written", "name: [unclosed", "failed", 3.0, "not json"))
        con.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?)",
                        [(teacher, *row) for row in accuracies([0.6, 0.85, 0.8], [0.6, 0.8, 0.91])])
        con.commit()
    init_workspace(home)
    init_workspace(home)  # idempotent once migrated
    with closing(Store(home)) as store:
        assert store.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)
        table = {e.run_id: e for e in catalog.run_table(store)}
        assert (table[teacher].final_acc, table[teacher].best_acc, table[teacher].best_epoch) == (0.91, 0.85, 1)
        assert (table[student].dataset, table[student].teachers, table[student].status) == ("digits", ("mlp",),
                                                                                            "queued")
        assert (table[broken].name, table[broken].dataset, table[broken].final_acc) == ("hand-written", "", None)
        assert catalog.dependants(store, teacher) == [student]  # the references were backfilled too
        catalog.set_tags(store, teacher, add=["migrated"])  # the new tables are there
        catalog.archive(store, broken)
        assert [e.run_id for e in catalog.run_table(store, RunFilter(tags=("migrated",)))] == [teacher]


def test_the_first_reader_of_a_version_3_workspace_upgrades_it(tmp_path: Path) -> None:
    """The dashboard opens stores read-only: on a workspace of an older PathScope its first read must not fail on
    the new columns (`python -m engine report`/`ls` or a page, before any worker has started)."""
    home = tmp_path / "old"
    home.mkdir()
    with closing(sqlite3.connect(db_path(home))) as con:
        con.executescript(V3_TABLES)
        con.execute("INSERT INTO runs (id, name, spec_yaml, status, created_at, result_json) VALUES (?,?,?,?,?,?)",
                    ("20250101-000000-aaaa", "old", spec("old"), "done", 1.0, '{"test_acc": 0.5}'))
        con.commit()
    with closing(Store(home, readonly=True)) as store:
        assert [(e.name, e.final_acc) for e in catalog.run_table(store)] == [("old", 0.5)]
        assert store.get_run("20250101-000000-aaaa").status == "done"


# ---------------------------------------------------------------- a thousand runs
def _thousand_runs(home: Path) -> None:
    """1,000 finished runs: one made by the store, copied row by row with new ids (creating each through
    create_run would only time the spec parser)."""
    source = add_finished_run(home, "run 0000")
    with closing(Store(home)) as store, store.write_transaction() as con:
        columns = [r[1] for r in con.execute("PRAGMA table_info(runs)") if r[1] not in ("id", "name", "created_at",
                                                                                     "weighting", "group_id")]
        listed = ", ".join(columns)
        for i in range(1, 1000):
            con.execute(f"INSERT INTO runs (id, name, created_at, weighting, group_id, {listed}) "
                        f"SELECT ?, ?, created_at + ?, ?, ?, {listed} FROM runs WHERE id=?",
                        (f"20260101-{i:06d}-{i % 65536:04x}", f"run {i:04d}", i, ("equal", "dwa", "pcgrad")[i % 3],
                         f"cmp-{i // 10}", source))
            con.execute("INSERT INTO run_tags VALUES (?, ?)", (f"20260101-{i:06d}-{i % 65536:04x}", f"t{i % 7}"))


def test_a_thousand_runs_list_in_one_query_without_reading_specs_or_metrics(home: Path) -> None:
    _thousand_runs(home)
    with closing(Store(home, readonly=True)) as store:
        statements: list[str] = []
        store.con.set_trace_callback(statements.append)
        took = []
        for _ in range(5):
            started = time.perf_counter()
            table = catalog.run_table(store, RunFilter(weightings=("dwa",), tags=("t3",)), sort="final_acc")
            took.append(time.perf_counter() - started)
        store.con.set_trace_callback(None)
        assert len(table) == len([i for i in range(1, 1000) if i % 3 == 1 and i % 7 == 3])
        assert len(statements) == 5 and all("spec_yaml" not in s and "metrics" not in s for s in statements)
        started = time.perf_counter()
        assert len(catalog.run_table(store)) == 1000
        everything = time.perf_counter() - started
        found = catalog.facets(store)
        assert len(found["groups"]) == 100 and found["weightings"] == ["dwa", "equal", "pcgrad"]
    print(f"\n1,000 runs: filtered run_table median {1000 * statistics.median(took):.1f} ms, "
          f"whole table {1000 * everything:.1f} ms")
