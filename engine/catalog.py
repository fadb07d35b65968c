"""The run catalog: a fast run table (search, filters, sorting), tags and Markdown notes on runs and groups,
archiving, and deleting a run with everything it stored.

The run table reads the denormalised columns the store fills when a run is created and when it finishes
(engine/store/columns.py), so listing a thousand runs parses no YAML and scans no metrics; filters and sorting
are SQL. Every write is one write transaction of the store, so several processes (two browsers, a CLI) can tag,
archive and delete at once: of two deletes of one run, one succeeds and the other is told the run does not exist.
"""
from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal

from engine.ablation import group_id_of
from engine.store import (
    ACTIVE_STATUSES, RUN_ROW_TABLES, STALE_AFTER_SECONDS, STATUSES, Store, WorkspaceError, is_run_id, run_dir,
)


class CatalogError(WorkspaceError):
    """A catalog operation that cannot be done; the one-line message names the run, group or tag at fault."""


class NoteConflict(CatalogError):
    """A note changed by someone else since the editor that saves it read it."""


TAG_MAX = 40
NOTE_MAX_BYTES = 64 * 1024
_TAG_CHARS = re.compile(r"[A-Za-z0-9_.:\-]+")
_TAG_RULE = f"a tag is 1 to {TAG_MAX} characters of letters, digits and _ . : -"
_GROUP_CHARS = re.compile(r"[A-Za-z0-9_.:\-]{1,80}")
Kind = Literal["run", "group"]


def _shown(text: str, room: int = TAG_MAX) -> str:
    """A user's text quoted for a message: control characters escaped, a long one cut."""
    return repr(text if len(text) <= room else text[:room] + "...")


def validate_tag(tag: str) -> str:
    """The tag itself, or CatalogError naming it and what is wrong with it (case is kept: 'A' and 'a' differ)."""
    if not isinstance(tag, str):
        raise CatalogError(f"tag {tag!r}: expected text; {_TAG_RULE}")
    if not tag:
        raise CatalogError(f"tag '': empty; {_TAG_RULE}")
    if len(tag) > TAG_MAX:
        raise CatalogError(f"tag {_shown(tag)}: {len(tag)} characters, more than the {TAG_MAX} a tag may have")
    if any(not c.isprintable() and not c.isspace() for c in tag):
        raise CatalogError(f"tag {_shown(tag)}: has a control character; {_TAG_RULE}")
    if any(c.isspace() for c in tag):
        raise CatalogError(f"tag {_shown(tag)}: has a space; {_TAG_RULE}")
    if not _TAG_CHARS.fullmatch(tag):
        bad = next(c for c in tag if not _TAG_CHARS.fullmatch(c))
        raise CatalogError(f"tag {_shown(tag)}: {bad!r} is not allowed; {_TAG_RULE}")
    return tag


# ---------------------------------------------------------------- the run table
@dataclass(frozen=True)
class RunFilter:
    """Which runs the table shows; an empty tuple does not filter on that field."""

    text: str = ""                       # case-insensitive substring of name, id, tags (its group's too) or note
    statuses: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()       # teacher architectures: a run matches if any of its teachers does
    students: tuple[str, ...] = ()
    weightings: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()        # path method name ("plain" when none)
    distillers: tuple[str, ...] = ()     # a run matches if any enabled path uses one
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()           # a run matches if it or its group has each of them
    archived: bool = False               # False: archived runs hidden; True: only archived runs


@dataclass(frozen=True)
class RunEntry:
    """One row of the run table. Accuracies are in [0, 1]; epochs count from 0, as the stored metrics do."""

    run_id: str
    name: str
    status: str
    group_id: str | None
    created_at: float
    dataset: str
    teachers: tuple[str, ...]
    student: str
    weighting: str
    method: str
    distillers: tuple[str, ...]
    n_paths: int
    seed: int | None
    tags: tuple[str, ...]
    group_tags: tuple[str, ...]          # its group's: tag filters and searches match them as the run's own
    note: str
    archived: bool
    final_acc: float | None              # test accuracy at the end (the run's result)
    best_acc: float | None               # best per-epoch validation accuracy (test when the run logged no val)
    best_epoch: int | None
    duration_s: float | None             # the run's own seconds when finished, else from its start to its last heartbeat
    executor: str                        # RunRow.executor ("local", "ray", ...)


SORT_KEYS = ("created_at", "name", "status", "final_acc", "best_acc", "best_epoch", "duration_s")

_DURATION = "COALESCE(r.duration_s, COALESCE(r.finished_at, r.heartbeat_at) - r.started_at)"
_EXECUTOR = ("COALESCE(CASE WHEN json_valid(r.placement_json) THEN json_extract(r.placement_json, '$.executor') END,"
             " 'local')")
_ENTRY_SQL = f"""
SELECT r.id, r.name, r.status, r.group_id, r.created_at, r.dataset, r.teacher_archs, r.student_arch, r.weighting,
       r.method, r.distillers, r.n_paths, r.seed, r.archived_at, r.final_acc, r.best_acc, r.best_epoch,
       {_DURATION} AS duration, {_EXECUTOR} AS executor,
       (SELECT group_concat(tag, char(10)) FROM (SELECT tag FROM run_tags WHERE run_id = r.id ORDER BY tag)) AS tags,
       (SELECT group_concat(tag, char(10)) FROM (SELECT tag FROM group_tags WHERE group_id = r.group_id ORDER BY tag))
           AS group_tags,
       COALESCE((SELECT text FROM notes WHERE kind = 'run' AND target_id = r.id), '') AS note
FROM runs r"""
_SORT_SQL = {"created_at": "r.created_at", "name": "r.name COLLATE NOCASE", "status": "r.status",
             "final_acc": "r.final_acc", "best_acc": "r.best_acc", "best_epoch": "r.best_epoch",
             "duration_s": "duration"}
#: RunFilter field -> SQL matching a run whose column is one of the given values ({} is the placeholders)
_VALUE_FILTERS = {
    "statuses": "r.status IN ({})",
    "datasets": "r.dataset IN ({})",
    "teachers": "EXISTS (SELECT 1 FROM json_each(r.teacher_archs) WHERE value IN ({}))",
    "students": "r.student_arch IN ({})",
    "weightings": "r.weighting IN ({})",
    "methods": "r.method IN ({})",
    "distillers": "EXISTS (SELECT 1 FROM json_each(r.distillers) WHERE value IN ({}))",
    "groups": "r.group_id IN ({})",
}
_TEXT_FILTER = ("(ps_contains(r.name, :text) OR ps_contains(r.id, :text)"
                " OR EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND ps_contains(t.tag, :text))"
                " OR EXISTS (SELECT 1 FROM group_tags g WHERE g.group_id = r.group_id AND ps_contains(g.tag, :text))"
                " OR EXISTS (SELECT 1 FROM notes n WHERE n.kind = 'run' AND n.target_id = r.id"
                " AND ps_contains(n.text, :text)))")


def _contains(haystack: str | None, needle: str) -> bool:
    return haystack is not None and needle in haystack.casefold()


def _where(flt: RunFilter) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of a filter and its named parameters."""
    clauses = ["r.archived_at IS NOT NULL" if flt.archived else "r.archived_at IS NULL"]
    args: dict[str, Any] = {}
    for field, sql in _VALUE_FILTERS.items():
        values = tuple(getattr(flt, field))
        if values:
            names = [f"{field}{i}" for i in range(len(values))]
            clauses.append(sql.format(", ".join(f":{n}" for n in names)))
            args.update(zip(names, values))
    for i, tag in enumerate(dict.fromkeys(flt.tags)):
        clauses.append(f"(EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.id AND t.tag = :tag{i})"
                       f" OR EXISTS (SELECT 1 FROM group_tags g WHERE g.group_id = r.group_id AND g.tag = :tag{i}))")
        args[f"tag{i}"] = tag
    if flt.text.strip():
        clauses.append(_TEXT_FILTER)
        args["text"] = flt.text.strip().casefold()
    return " WHERE " + " AND ".join(clauses), args


@lru_cache(maxsize=4096)
def _names(json_list: str) -> tuple[str, ...]:
    """A stored JSON array of names as a tuple (runs of one sweep repeat the same few arrays)."""
    return tuple(json.loads(json_list))


def _lines(joined: str | None) -> tuple[str, ...]:
    return tuple(joined.split("\n")) if joined else ()


def _entry(row: sqlite3.Row) -> RunEntry:
    return RunEntry(
        run_id=row["id"], name=row["name"], status=row["status"], group_id=row["group_id"],
        created_at=row["created_at"], dataset=row["dataset"], teachers=_names(row["teacher_archs"]),
        student=row["student_arch"], weighting=row["weighting"], method=row["method"],
        distillers=_names(row["distillers"]), n_paths=row["n_paths"], seed=row["seed"],
        tags=_lines(row["tags"]), group_tags=_lines(row["group_tags"]), note=row["note"],
        archived=row["archived_at"] is not None, final_acc=row["final_acc"], best_acc=row["best_acc"],
        best_epoch=row["best_epoch"], duration_s=row["duration"], executor=row["executor"])


def run_table(store: Store, flt: RunFilter = RunFilter(), sort: str = "created_at", descending: bool = True,
              limit: int | None = None) -> list[RunEntry]:
    """The runs that pass ``flt``, sorted by ``sort`` (one of SORT_KEYS; runs without a value last), newest first
    among equals. One SQL query; works on a read-only store."""
    if sort not in SORT_KEYS:
        raise CatalogError(f"sort {sort!r}: not a run-table column; one of {', '.join(SORT_KEYS)}")
    store.con.create_function("ps_contains", 2, _contains, deterministic=True)
    where, args = _where(flt)
    key = _SORT_SQL[sort]
    order = f" ORDER BY ({key}) IS NULL, {key} {'DESC' if descending else 'ASC'}, r.created_at DESC, r.id DESC"
    sql = _ENTRY_SQL + where + order
    if limit is not None:
        sql += " LIMIT :limit"
        args["limit"] = max(int(limit), 0)
    return [_entry(row) for row in store.con.execute(sql, args).fetchall()]


def facets(store: Store) -> dict[str, list[str]]:
    """The distinct values of every filter field over all runs (archived ones too), for the pages' multiselects."""
    def distinct(sql: str) -> list[str]:
        return [row[0] for row in store.con.execute(sql).fetchall()]

    present = set(distinct("SELECT DISTINCT status FROM runs"))
    return {
        "statuses": [s for s in STATUSES if s in present],
        "datasets": distinct("SELECT DISTINCT dataset FROM runs WHERE dataset != '' ORDER BY 1"),
        "teachers": distinct("SELECT DISTINCT j.value FROM runs r, json_each(r.teacher_archs) j ORDER BY 1"),
        "students": distinct("SELECT DISTINCT student_arch FROM runs WHERE student_arch != '' ORDER BY 1"),
        "weightings": distinct("SELECT DISTINCT weighting FROM runs WHERE weighting != '' ORDER BY 1"),
        "methods": distinct("SELECT DISTINCT method FROM runs WHERE method != '' ORDER BY 1"),
        "distillers": distinct("SELECT DISTINCT j.value FROM runs r, json_each(r.distillers) j ORDER BY 1"),
        "groups": distinct("SELECT DISTINCT group_id FROM runs WHERE group_id IS NOT NULL ORDER BY 1"),
        "tags": distinct("SELECT tag FROM run_tags UNION SELECT tag FROM group_tags ORDER BY 1"),
    }


# ---------------------------------------------------------------- checks
def check_run_id(run_id: str) -> str:
    """The id, or CatalogError when it is not shaped like a run id (checked before any path is built from it)."""
    if not is_run_id(run_id):
        raise CatalogError(f"run id {_shown(str(run_id))}: not a PathScope run id (they look like "
                           f"20261202-045757-a1b2; python -m engine ls lists them)")
    return run_id


def _existing_run(con: sqlite3.Connection, run_id: str) -> sqlite3.Row:
    check_run_id(run_id)
    row = con.execute("SELECT id, status, group_id, heartbeat_at, placement_json FROM runs WHERE id=?",
                      (run_id,)).fetchone()
    if row is None:
        raise CatalogError(f"run {run_id} does not exist")
    return row


def _existing_group(con: sqlite3.Connection, group_id: str) -> str:
    if not isinstance(group_id, str) or not _GROUP_CHARS.fullmatch(group_id):
        raise CatalogError(f"group id {_shown(str(group_id))}: not a group id (python -m engine ls shows them)")
    if con.execute("SELECT 1 FROM runs WHERE group_id=? LIMIT 1", (group_id,)).fetchone() is None:
        raise CatalogError(f"group {group_id} does not exist")
    return group_id


def _check_kind(kind: str) -> None:
    if kind not in ("run", "group"):
        raise CatalogError(f"note kind {kind!r}: expected run or group")


# ---------------------------------------------------------------- tags
def _tag_changes(add: Iterable[str], remove: Iterable[str]) -> tuple[list[str], list[str]]:
    # one tag given as a plain string is that tag, not its characters
    add, remove = ([add] if isinstance(add, str) else add), ([remove] if isinstance(remove, str) else remove)
    add, remove = [validate_tag(t) for t in add], [validate_tag(t) for t in remove]
    both = sorted(set(add) & set(remove))
    if both:
        raise CatalogError(f"tag {both[0]!r}: both added and removed")
    return add, remove


def _apply_tags(con: sqlite3.Connection, table: str, key: str, target: str, add: list[str], remove: list[str]
                ) -> tuple[str, ...]:
    con.executemany(f"INSERT OR IGNORE INTO {table} ({key}, tag) VALUES (?, ?)", [(target, t) for t in add])
    con.executemany(f"DELETE FROM {table} WHERE {key}=? AND tag=?", [(target, t) for t in remove])
    return _tags(con, table, key, target)


def _tags(con: sqlite3.Connection, table: str, key: str, target: str) -> tuple[str, ...]:
    return tuple(r[0] for r in con.execute(f"SELECT tag FROM {table} WHERE {key}=? ORDER BY tag", (target,)))


def set_tags(store: Store, run_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> tuple[str, ...]:
    """Add and remove tags of a run (every tag is checked before anything changes); returns its tags, sorted."""
    add, remove = _tag_changes(add, remove)
    with store.write_transaction() as con:
        _existing_run(con, run_id)
        return _apply_tags(con, "run_tags", "run_id", run_id, add, remove)


def set_group_tags(store: Store, group_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()
                   ) -> tuple[str, ...]:
    """Add and remove tags of a group; returns its tags, sorted."""
    add, remove = _tag_changes(add, remove)
    with store.write_transaction() as con:
        _existing_group(con, group_id)
        return _apply_tags(con, "group_tags", "group_id", group_id, add, remove)


def run_tags(store: Store, run_id: str) -> tuple[str, ...]:
    """A run's tags, sorted (archived or not)."""
    return _tags(store.con, "run_tags", "run_id", run_id)


def group_tags(store: Store, group_id: str) -> tuple[str, ...]:
    """A group's tags, sorted."""
    return _tags(store.con, "group_tags", "group_id", group_id)


# ---------------------------------------------------------------- notes
def set_note(store: Store, kind: Kind, target_id: str, text: str, read_as: str | None = None) -> None:
    """The Markdown note of a run or a group (stored as text, never rendered here); blank text removes it.

    ``read_as``: the note as the editor saving it last read it; when the stored note differs (another tab or
    person saved since), nothing is written and NoteConflict says so, rather than the later save silently
    erasing the earlier one. None writes unconditionally (the CLI's ``note --text``)."""
    _check_kind(kind)
    if not isinstance(text, str):
        raise CatalogError(f"note of {kind} {target_id}: expected text")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > NOTE_MAX_BYTES:
        raise CatalogError(f"note of {kind} {target_id}: {size:,} bytes, more than the {NOTE_MAX_BYTES:,} bytes "
                           f"({NOTE_MAX_BYTES // 1024} KiB) a note may hold")
    with store.write_transaction() as con:
        if kind == "run":
            _existing_run(con, target_id)
        else:
            _existing_group(con, target_id)
        if read_as is not None and (stored := _note_text(con, kind, target_id)) != read_as:
            raise NoteConflict(f"note of {kind} {target_id}: changed elsewhere since this editor read it (it now "
                               f"holds {len(stored):,} characters); nothing was saved")
        if text.strip():
            con.execute("INSERT OR REPLACE INTO notes (kind, target_id, text, updated_at) VALUES (?,?,?,?)",
                        (kind, target_id, text, time.time()))
        else:
            con.execute("DELETE FROM notes WHERE kind=? AND target_id=?", (kind, target_id))


def note_of(store: Store, kind: Kind, target_id: str) -> str:
    """The note of a run or a group; "" when it has none."""
    _check_kind(kind)
    return _note_text(store.con, kind, target_id)


def _note_text(con: sqlite3.Connection, kind: Kind, target_id: str) -> str:
    row = con.execute("SELECT text FROM notes WHERE kind=? AND target_id=?", (kind, target_id)).fetchone()
    return row[0] if row else ""


# ---------------------------------------------------------------- archive
def archive(store: Store, run_id: str) -> None:
    """Hide a run from the run table (run_table shows it with RunFilter(archived=True)); nothing is deleted."""
    with store.write_transaction() as con:
        _existing_run(con, run_id)
        con.execute("UPDATE runs SET archived_at=COALESCE(archived_at, ?) WHERE id=?", (time.time(), run_id))


def archived_ids(store: Store) -> set[str]:
    """The ids of the archived runs (a read: works on a read-only store)."""
    return {row[0] for row in store.con.execute("SELECT id FROM runs WHERE archived_at IS NOT NULL")}


def restore(store: Store, run_id: str) -> None:
    """Show an archived run in the run table again."""
    with store.write_transaction() as con:
        _existing_run(con, run_id)
        con.execute("UPDATE runs SET archived_at=NULL WHERE id=?", (run_id,))


# ---------------------------------------------------------------- dependants and delete
def _dependant_rows(con: sqlite3.Connection, run_id: str) -> list[tuple[str, str]]:
    """(run id, why) of each run that needs this one: a run that loads its final model (as a teacher or as its
    student's start), and the runs of its ablation, whose table reads this run's verdicts."""
    refs = con.execute("SELECT run_id, role FROM run_refs WHERE ref_run_id=? AND run_id != ? ORDER BY run_id",
                       (run_id, run_id)).fetchall()
    found = [(r["run_id"], f"its {r['role']} is this run's model") for r in refs]
    ablation = con.execute("SELECT id FROM runs WHERE group_id=? ORDER BY created_at", (group_id_of(run_id),))
    found += [(r["id"], f"in its ablation group {group_id_of(run_id)}") for r in ablation.fetchall()]
    return found


def dependants(store: Store, run_id: str) -> list[str]:
    """Runs that reference this run (see _dependant_rows), each once."""
    check_run_id(run_id)
    return list(dict.fromkeys(rid for rid, _ in _dependant_rows(store.con, run_id)))


def deletion_order(store: Store, run_ids: list[str]) -> list[str]:
    """``run_ids`` ordered so that each run comes after the selected runs that depend on it (a student before the
    teacher run it loads), so deleting both in this order is never refused; otherwise the given order is kept."""
    needed_by = {run_id: set(dependants(store, run_id)) & set(run_ids) for run_id in run_ids}
    ordered: list[str] = []
    while len(ordered) < len(run_ids):
        ready = [r for r in run_ids if r not in ordered and needed_by[r] <= set(ordered)]
        if not ready:  # a cycle cannot arise from references, but never loop on one
            ready = [r for r in run_ids if r not in ordered]
        ordered += ready
    return ordered


def _refuse_if_needed(con: sqlite3.Connection, run_id: str) -> None:
    found = _dependant_rows(con, run_id)
    if found:
        shown = "; ".join(f"{rid} ({why})" for rid, why in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        raise CatalogError(f"run {run_id} is needed by {len(found)} other run(s): {shown}{more}; "
                           f"delete those first")


@dataclass(frozen=True)
class DeleteReport:
    run_id: str
    cancelled: bool                # it was queued or running, and was cancelled first
    rows: dict[str, int]           # table -> rows deleted
    folders: tuple[Path, ...]      # folders removed (the run's folder, and its folder in a Ray storage)


def _held(row: sqlite3.Row) -> bool:
    """Whether a worker may still write to the run: queued, or running with a live heartbeat. A running run whose
    heartbeat stopped has no live worker; should one be only paused, its next write finds the run gone and stops
    (the attempt fencing), so such a run is deleted at once."""
    fresh = row["heartbeat_at"] is not None and row["heartbeat_at"] > time.time() - STALE_AFTER_SECONDS
    return row["status"] == "queued" or (row["status"] == "running" and fresh)


def _wait_until_released(store: Store, run_id: str, wait_s: float) -> None:
    """Ask a queued or running run to stop and wait for its worker to end it (a queued one ends at once)."""
    store.request_cancel(run_id)
    deadline = time.monotonic() + wait_s
    while _held(row := _existing_run(store.con, run_id)):
        if time.monotonic() >= deadline:
            raise CatalogError(f"run {run_id} is still {row['status']} {wait_s:g} s after its cancel was requested: "
                               f"its worker has not stopped it yet; delete it again once it shows cancelled")
        time.sleep(0.2)


def _delete_rows(con: sqlite3.Connection, run_id: str, group_id: str | None) -> dict[str, int]:
    rows = {table: con.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,)).rowcount for table in RUN_ROW_TABLES}
    rows["notes"] = con.execute("DELETE FROM notes WHERE kind='run' AND target_id=?", (run_id,)).rowcount
    rows["runs"] = con.execute("DELETE FROM runs WHERE id=?", (run_id,)).rowcount
    emptied = con.execute("SELECT 1 FROM runs WHERE group_id=? LIMIT 1", (group_id,)).fetchone() is None
    if group_id is not None and emptied:  # the group is gone with its last run: so are its tags and note
        rows["group_tags"] = con.execute("DELETE FROM group_tags WHERE group_id=?", (group_id,)).rowcount
        rows["notes"] += con.execute("DELETE FROM notes WHERE kind='group' AND target_id=?", (group_id,)).rowcount
    return rows


def _run_folders(home: Path, run_id: str, placement_json: str | None) -> list[Path]:
    """The run's folder in the workspace, and in the storage folder of its Ray sweep when that is elsewhere."""
    folders = [run_dir(home, run_id)]
    try:
        storage = (json.loads(placement_json) or {}).get("storage") if placement_json else None
    except ValueError:
        storage = None
    if storage and Path(storage).resolve() != home.resolve():
        folders.append(run_dir(Path(storage), run_id))
    return folders


def _remove_folder(folder: Path, run_id: str) -> bool:
    try:
        if folder.is_symlink():  # never follow a link out of the workspace: remove the link only
            folder.unlink()
        elif folder.is_dir():
            shutil.rmtree(folder)
        else:
            return False
    except OSError as err:
        raise CatalogError(f"run {run_id}: its rows were deleted but its folder {folder} could not be removed "
                           f"({err.strerror}); remove it by hand") from None
    return True


def delete_run(home: Path, run_id: str, wait_s: float = 30.0) -> DeleteReport:
    """Delete a run: refused (CatalogError naming them) while other runs depend on it; a queued or running run is
    cancelled first and waited for (up to ``wait_s``); then every row of the run goes in one transaction, and its
    folder after. A second delete of the same id, or one racing this one, gets "run X does not exist"."""
    check_run_id(run_id)
    store = Store(Path(home))
    try:
        run = _existing_run(store.con, run_id)
        _refuse_if_needed(store.con, run_id)
        cancelled = run["status"] in ACTIVE_STATUSES
        if cancelled:
            _wait_until_released(store, run_id, wait_s)
        with store.write_transaction() as con:  # checked again under the write lock: a racing delete, a new dependant
            run = _existing_run(con, run_id)
            _refuse_if_needed(con, run_id)
            if _held(run):
                raise CatalogError(f"run {run_id} was {run['status']} again meanwhile; cancel it, then delete it")
            rows = _delete_rows(con, run_id, run["group_id"])
        folders = tuple(f for f in _run_folders(store.home, run_id, run["placement_json"]) if _remove_folder(f, run_id))
        return DeleteReport(run_id, cancelled, rows, folders)
    finally:
        store.close()
