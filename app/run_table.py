"""The run table of Compare and Home: search, filters, sorting, the selection of runs, and the writes on the
selected runs (tags, notes, archive, delete).

Every render makes one ``catalog.run_table`` read (cached a second, like ``app.cached``): the catalog keeps
each run's table fields in columns, so listing 1,000 runs parses no spec. Filters, sorting and the selection
live in the URL (``app.links``), so a link opens the same view. Writes run in button callbacks, before the
page draws, so the table they leave behind is the one shown; their outcome is kept for the page to show.
"""
from __future__ import annotations

from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import streamlit as st

from app import cached, links, writes
from app.nav import page_file
from app.queries import placement_label
from app.widgets import empty_state
from engine import catalog
from engine.catalog import RunEntry, RunFilter
from engine.spec import printable
from engine.store import ACTIVE_STATUSES, Store, WorkspaceError, mark_orphaned_runs

# (RunFilter field, URL key, label): the filters, in the order they are shown
FILTERS: tuple[tuple[str, str, str], ...] = (
    ("statuses", "status", "Status"),
    ("datasets", "dataset", "Dataset"),
    ("teachers", "teacher", "Teacher architecture"),
    ("students", "student", "Student architecture"),
    ("weightings", "weighting", "Weighting"),
    ("methods", "method", "Path method"),
    ("distillers", "distiller", "Distiller"),
    ("groups", "in_group", "Group"),
    ("tags", "tag", "Tags (runs with all of them)"),
)
SEARCH_URL, ARCHIVED_URL, SORT_URL, ORDER_URL = "q", links.ARCHIVED, "sort", "order"
SORT_LABELS = {"created_at": "created", "name": "name", "status": "status", "final_acc": "final test acc",
               "best_acc": "best val acc", "best_epoch": "best epoch", "duration_s": "duration"}
DEFAULT_SORT = "created_at"
FULL_COLUMNS = ["name", "id", "status", "tags", "group_tags", "combination", "final_acc_pct", "best_acc_pct",
                "best_epoch", "duration_s", "runs_on", "group_id"]
RECENT_COLUMNS = ["name", "id", "status", "tags", "combination", "final_acc_pct", "best_acc_pct", "created"]
COLUMN_CONFIG = {
    "tags": st.column_config.TextColumn("tags"),
    "group_tags": st.column_config.TextColumn("group tags", help="its group's tags: tag filters and the search "
                                                                  "match a run by them too"),
    "combination": st.column_config.TextColumn("combination", help="path method · weighting"),
    "final_acc_pct": st.column_config.NumberColumn("final test acc (%)", format="%.2f",
                                                   help="test accuracy at the end of training"),
    "best_acc_pct": st.column_config.NumberColumn("best val acc (%)", format="%.2f",
                                                  help="best per-epoch validation accuracy (test when no validation)"),
    "best_epoch": st.column_config.NumberColumn("best epoch"),
    "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
    "runs_on": st.column_config.TextColumn("runs on", help="executor: local workers or a Ray cluster"),
    "group_id": st.column_config.TextColumn("group"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
}
CANCEL_FIRST = "a running or queued run is cancelled first"
NAMED_MAX = 10  # runs named in the delete confirmation


# ---------------------------------------------------------------- cached reads
@st.cache_data(ttl=cached.TTL_S, show_spinner=False)
def entries(home_dir: str, flt: RunFilter, sort: str = DEFAULT_SORT, descending: bool = True,
            limit: int | None = None) -> list[RunEntry]:
    if not cached.workspace_exists(home_dir):
        return []
    # As cached.runs does: a run left `running` by a dead process is marked interrupted before it is listed.
    mark_orphaned_runs(Path(home_dir))
    with closing(Store(Path(home_dir), readonly=True)) as store:
        return catalog.run_table(store, flt, sort=sort, descending=descending, limit=limit)


@st.cache_data(ttl=cached.TTL_S, show_spinner=False)
def facets(home_dir: str) -> dict[str, list[str]]:
    if not cached.workspace_exists(home_dir):
        return {}
    with closing(Store(Path(home_dir), readonly=True)) as store:
        return catalog.facets(store)


@st.cache_data(ttl=cached.TTL_S, show_spinner=False)
def group_annotation(home_dir: str, group_id: str) -> tuple[str, tuple[str, ...]]:
    """The group's note and tags."""
    with closing(Store(Path(home_dir), readonly=True)) as store:
        return catalog.note_of(store, "group", group_id), catalog.group_tags(store, group_id)


@st.cache_data(ttl=cached.TTL_S, show_spinner=False)
def active_placements(home_dir: str) -> dict[str, str]:
    """Where each queued or running run executes ("ray · node-2 (10.0.0.2) · cuda:0", "ray · waiting for a slot
    on ..."): for the runs still going the table says more than the executor. They are few, so their rows are read."""
    with closing(Store(Path(home_dir), readonly=True)) as store:
        placed = ((run.id, placement_label(run)) for run in store.list_runs(statuses=ACTIVE_STATUSES))
        return {run_id: label for run_id, label in placed if label}


def forget_reads() -> None:
    """After a write: every page's next read sees it, not a copy up to a second old."""
    for reader in (entries, facets, group_annotation, active_placements, cached.runs, cached.run):
        reader.clear()


# ---------------------------------------------------------------- the table
def entries_frame(rows: list[RunEntry]) -> pd.DataFrame:
    """One row per run (``rows`` not empty) with the table's display columns; no per-row query or parsing."""
    frame = pd.DataFrame([vars(row) for row in rows], columns=list(RunEntry.__dataclass_fields__))
    frame = frame.rename(columns={"run_id": "id", "executor": "runs_on"})
    frame["name"] = [printable(name) for name in frame["name"]]
    frame["tags"] = [", ".join(tags) for tags in frame["tags"]]
    frame["group_tags"] = [", ".join(tags) for tags in frame["group_tags"]]
    frame["final_acc_pct"] = (100 * pd.to_numeric(frame["final_acc"], errors="coerce")).round(2)
    frame["best_acc_pct"] = (100 * pd.to_numeric(frame["best_acc"], errors="coerce")).round(2)
    frame["best_epoch"] = pd.to_numeric(frame["best_epoch"], errors="coerce").astype("Int64")
    frame["duration_s"] = pd.to_numeric(frame["duration_s"], errors="coerce")
    frame["test_acc_pct"] = frame["final_acc_pct"]  # what queries.combination_summary averages
    plain = frame["method"].isin(["plain", ""])
    frame["combination"] = frame["weighting"].where(plain, frame["method"] + " · " + frame["weighting"])
    frame["label"] = frame["name"] + " · " + frame["id"] + " · " + frame["status"]
    frame["created"] = [datetime.fromtimestamp(t) for t in frame["created_at"]]
    return frame


def show_table(frame: pd.DataFrame, columns: list[str], key: str) -> None:
    st.dataframe(frame[columns], hide_index=True, key=key,
                 column_config={c: COLUMN_CONFIG[c] for c in columns if c in COLUMN_CONFIG})


def recent(home: str, limit: int) -> pd.DataFrame:
    """Home's table: the newest runs that are not archived, fewer columns; empty when there are none."""
    rows = entries(home, RunFilter(), limit=limit)
    if not rows:
        return pd.DataFrame()
    frame = entries_frame(rows)
    show_table(frame, RECENT_COLUMNS, key="home_recent")
    return frame


# ---------------------------------------------------------------- filters, search and sorting (in the URL)
def _key(prefix: str, name: str) -> str:
    return f"{prefix}_{name}"


def _init_from_url(prefix: str, options: dict[str, list[str]]) -> None:
    """Widgets not drawn yet in this session start from the link; those drawn keep what the user set, pruned
    of values the workspace no longer has (a tag removed from its last run)."""
    state = st.session_state
    for field, url_key, _ in FILTERS:
        key, known = _key(prefix, field), options.get(field, [])
        if key not in state:
            state[key] = links.linked_choices(url_key, set(known), f"{url_key} filter value", "every run") or []
        else:
            state[key] = [v for v in state[key] if v in known]
    if _key(prefix, "q") not in state:
        state[_key(prefix, "q")] = links.read(SEARCH_URL) or ""
    if _key(prefix, "archived") not in state:
        state[_key(prefix, "archived")] = links.read(ARCHIVED_URL) == "1"
    if _key(prefix, "sort") not in state:
        state[_key(prefix, "sort")] = links.linked_choice(SORT_URL, catalog.SORT_KEYS, "sort key",
                                                           "the newest first") or DEFAULT_SORT
    if _key(prefix, "ascending") not in state:
        state[_key(prefix, "ascending")] = links.read(ORDER_URL) == "asc"


def _write_to_url(prefix: str) -> None:
    state = st.session_state
    for field, url_key, _ in FILTERS:
        links.write_list(url_key, state[_key(prefix, field)])
    links.write(SEARCH_URL, state[_key(prefix, "q")].strip())
    links.write(ARCHIVED_URL, "1" if state[_key(prefix, "archived")] else None)
    sort = state[_key(prefix, "sort")]
    links.write(SORT_URL, None if sort == DEFAULT_SORT else sort)
    links.write(ORDER_URL, "asc" if state[_key(prefix, "ascending")] else None)


def _clear_filters(prefix: str) -> None:
    for field, _, _ in FILTERS:
        st.session_state[_key(prefix, field)] = []
    st.session_state[_key(prefix, "q")] = ""


def filter_controls(prefix: str, options: dict[str, list[str]]) -> tuple[RunFilter, str, bool]:
    """Search box, filters, archived toggle and sort order; returns the filter and the order they set."""
    _init_from_url(prefix, options)
    state = st.session_state
    st.text_input("Search", key=_key(prefix, "q"), placeholder="name, id, tag or note",
                  help="Case-insensitive: runs whose name, id, tags or note contain this text")
    active = sum(bool(state[_key(prefix, field)]) for field, _, _ in FILTERS)
    with st.expander(f"Filters ({active} active)" if active else "Filters", icon=":material/filter_list:",
                     key=_key(prefix, "filters")):
        columns = st.columns(3)
        for i, (field, _, label) in enumerate(FILTERS):
            columns[i % 3].multiselect(label, options.get(field, []), key=_key(prefix, field))
    left, middle, right = st.columns(3, vertical_alignment="bottom")
    left.selectbox("Sort by", catalog.SORT_KEYS, key=_key(prefix, "sort"), format_func=SORT_LABELS.get,
                   help="Clicking a column header also sorts the table shown, but only this order is kept in the link")
    middle.toggle("Ascending", key=_key(prefix, "ascending"))
    right.toggle("Archived runs", key=_key(prefix, "archived"),
                 help="List only the archived runs (hidden otherwise), to restore or delete them")
    _write_to_url(prefix)
    flt = RunFilter(text=state[_key(prefix, "q")].strip(), archived=state[_key(prefix, "archived")],
                    **{field: tuple(state[_key(prefix, field)]) for field, _, _ in FILTERS})
    return flt, state[_key(prefix, "sort")], not state[_key(prefix, "ascending")]


def table_section(home: str, prefix: str) -> pd.DataFrame | None:
    """Compare's table under its controls; None once an empty state has said what to do next."""
    options = facets(home)
    if not options.get("statuses"):
        empty_state()
        st.page_link(page_file("configure"), label="Configure a run", icon=":material/tune:")
        return None
    flt, sort, descending = filter_controls(prefix, options)
    rows = entries(home, flt, sort, descending)
    if not rows:
        _say_nothing_matches(prefix, flt)
        return None
    frame = entries_frame(rows)
    placed = active_placements(home) if frame["status"].isin(ACTIVE_STATUSES).any() else {}
    if placed:
        frame["runs_on"] = frame["runs_on"].mask(frame["id"].isin(list(placed)), frame["id"].map(placed))
    st.caption(f"{len(frame)} run(s)")
    show_table(frame, FULL_COLUMNS, key=_key(prefix, "table"))
    return frame


def _say_nothing_matches(prefix: str, flt: RunFilter) -> None:
    if flt == RunFilter(archived=flt.archived):  # no search and no filter: the other side of the toggle has them
        st.info("No archived runs." if flt.archived else
                "Every run is archived: turn on **Archived runs** to see them and restore some.")
        return
    st.info("No run matches the search and filters.", icon=":material/filter_alt_off:")
    st.button("Clear search and filters", key=_key(prefix, "clear"), on_click=_clear_filters, args=(prefix,),
              icon=":material/clear_all:")


# ---------------------------------------------------------------- the selection
def selection(prefix: str, frame: pd.DataFrame, default: list[str]) -> list[str]:
    """The runs picked to compare (the link's ``runs``, else ``default``), among the rows listed."""
    key, listed = _key(prefix, "runs"), set(frame["id"])
    if key not in st.session_state:
        linked = links.linked_choices(links.RUNS, listed, "run", "the newest finished runs")
        st.session_state[key] = linked or default
    else:
        kept = [run_id for run_id in st.session_state[key] if run_id in listed]
        # Every picked run left the table (archived, filtered out, or the archive shown instead): start again from
        # the default rather than an empty selection with no panel to act on.
        st.session_state[key] = kept if kept or not st.session_state[key] else default
    labels = dict(zip(frame["id"], frame["label"]))
    chosen = st.multiselect("Runs to compare", list(frame["id"]), key=key, format_func=lambda r: labels.get(r, r),
                            help="Their curves are overlaid below; tag, annotate, archive or delete them here")
    links.write_list(links.RUNS, chosen)
    return chosen


# ---------------------------------------------------------------- writes on the selected runs
def _feedback(prefix: str, level: Literal["error", "success"], message: str) -> None:
    st.session_state.setdefault(_key(prefix, "feedback"), []).append((level, message))


def show_feedback(prefix: str) -> None:
    """What the last write said (kept by its callback, shown once); called at the top of the page, which
    the write may have left without a table (the last run deleted)."""
    for level, message in st.session_state.pop(_key(prefix, "feedback"), []):
        (st.error if level == "error" else st.success)(message)


def split_tags(text: str) -> list[str]:
    """Tags typed as a comma-separated list; spaces inside a tag are kept, so validation can name the tag."""
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def _apply_tags(home: str, kind: Literal["run", "group"], targets: list[str], prefix: str) -> None:
    add_key, remove_key = _key(prefix, f"{kind}_tag_add"), _key(prefix, f"{kind}_tag_remove")
    try:
        add = [catalog.validate_tag(tag) for tag in split_tags(st.session_state[add_key])]
        writes.set_tags(home, kind, targets, add, list(st.session_state[remove_key]))
    except WorkspaceError as err:
        _feedback(prefix, "error", f"Tags: {err}")
        return
    finally:
        forget_reads()
    st.session_state[add_key], st.session_state[remove_key] = "", []
    _feedback(prefix, "success", f"Tags of {len(targets)} {kind}(s) updated.")


def tag_editor(home: str, kind: Literal["run", "group"], targets: list[str], present: list[str], prefix: str) -> None:
    """Add tags (typed) and remove tags (among ``present``, those the targets have) on every one of ``targets``."""
    remove_key = _key(prefix, f"{kind}_tag_remove")
    st.session_state[remove_key] = [t for t in st.session_state.get(remove_key, []) if t in present]
    left, right = st.columns(2)
    left.text_input("Add tags", key=_key(prefix, f"{kind}_tag_add"), placeholder="baseline, seed-sweep",
                    help=f"Comma-separated; each 1-{catalog.TAG_MAX} characters of letters, digits and _ . : -")
    right.multiselect("Remove tags", present, key=remove_key)
    st.button("Apply tags", key=_key(prefix, f"{kind}_tag_apply"), icon=":material/sell:",
              on_click=_apply_tags, args=(home, kind, targets, prefix))


def _save_note(home: str, kind: Literal["run", "group"], target: str, key: str, prefix: str) -> None:
    read_key = f"{key}_read"
    try:
        text = st.session_state[key]
        writes.save_note(home, kind, target, text, read_as=st.session_state[read_key])
        st.session_state[read_key] = text if text.strip() else ""  # a blank note is stored as none
    except catalog.NoteConflict:
        # The next save is deliberate: it replaces the note now shown above, which the person has seen.
        st.session_state[read_key] = writes.note_of(home, kind, target)
        _feedback(prefix, "error", f"Note of {kind} {target}: someone saved it since you opened it; theirs is shown "
                                   "above and yours is still in the editor. Merge them, or press **Save note** again "
                                   "to replace theirs with yours.")
        return
    except WorkspaceError as err:
        _feedback(prefix, "error", f"Note of {kind} {target}: {err}")
        return
    finally:
        forget_reads()
    _feedback(prefix, "success", f"Note of {kind} {target} saved.")


def show_note(note: str) -> None:
    """A note rendered as Markdown (no HTML: st.markdown escapes it), framed apart from the page's own text."""
    if note:
        with st.container(border=True):
            st.markdown(note)


def note_editor(home: str, kind: Literal["run", "group"], target: str, note: str, prefix: str) -> None:
    """An editor of the note that saves it (``note``: the stored text it starts from)."""
    key = _key(prefix, f"note_{kind}_{target}")
    if key not in st.session_state:
        st.session_state[key] = st.session_state[f"{key}_read"] = note
    st.text_area(f"Note of {kind} {target} (Markdown)", key=key, height=120,
                 help=f"At most {catalog.NOTE_MAX_BYTES // 1024} KiB")
    st.button("Save note", key=_key(prefix, f"note_save_{kind}_{target}"), icon=":material/save:",
              on_click=_save_note, args=(home, kind, target, key, prefix))


def _archive(home: str, run_ids: list[str], archive: bool, prefix: str) -> None:
    try:
        writes.set_archived(home, run_ids, archive)
    except WorkspaceError as err:
        _feedback(prefix, "error", f"{'Archive' if archive else 'Restore'}: {err}")
        return
    finally:
        forget_reads()
    _feedback(prefix, "success", f"{len(run_ids)} run(s) {'archived' if archive else 'restored'}.")


def _delete(home: str, run_ids: list[str], prefix: str) -> None:
    deleted, refusals = writes.delete_runs(home, run_ids)
    for message in refusals:
        _feedback(prefix, "error", f"Not deleted: {message}")
    forget_reads()
    st.session_state[_key(prefix, "delete_ok")] = False
    selected = _key(prefix, "runs")
    st.session_state[selected] = [r for r in st.session_state.get(selected, []) if r not in deleted]
    if deleted:
        _feedback(prefix, "success", f"Deleted {', '.join(deleted)}: their rows and folders are gone.")


def archive_and_delete(home: str, frame: pd.DataFrame, prefix: str) -> None:
    run_ids = list(frame["id"])
    archived = list(frame.loc[frame["archived"], "id"])
    left, right = st.columns(2)
    if len(archived) < len(run_ids):
        left.button("Archive", key=_key(prefix, "archive"), icon=":material/archive:",
                    help="Hide from the table (the run stays; turn on Archived runs to see it)",
                    on_click=_archive, args=(home, [r for r in run_ids if r not in archived], True, prefix))
    if archived:
        right.button("Restore", key=_key(prefix, "restore"), icon=":material/unarchive:",
                     on_click=_archive, args=(home, archived, False, prefix))
    # A tick given for one selection never deletes another: a changed selection asks again.
    confirmed_for, confirm = _key(prefix, "delete_for"), _key(prefix, "delete_ok")
    if st.session_state.get(confirmed_for) != run_ids:
        st.session_state[confirmed_for], st.session_state[confirm] = run_ids, False
    named = [f"{links.shown(name)} ({run_id})" for name, run_id in zip(frame["name"], frame["id"])]  # as code: a
    # name's own Markdown (links, colours) must not dress up a confirmation
    names = "; ".join(named[:NAMED_MAX]) + (f" and {len(named) - NAMED_MAX} more" if len(named) > NAMED_MAX else "")
    confirmed = st.checkbox(f"Delete for good: {names}. Their metrics, events, tags, notes and folders are removed; "
                            f"{CANCEL_FIRST}.", key=confirm)
    st.button(f"Delete {len(run_ids)} run(s)", key=_key(prefix, "delete"), disabled=not confirmed, type="primary",
              icon=":material/delete_forever:", on_click=_delete, args=(home, run_ids, prefix))


def actions(home: str, frame: pd.DataFrame, prefix: str) -> None:
    """Tags, notes, archive and delete for the selected runs (``frame``: their table rows)."""
    if frame.empty:
        return
    # Keyed: a message shown above after a write moves every element down, and an unkeyed expander would close.
    with st.expander("Tags, notes, archive, delete", icon=":material/edit_note:", key=_key(prefix, "actions")):
        st.caption(f"For the {len(frame)} run(s) selected above.")
        present = sorted({tag for tags in frame["tags"] for tag in tags.split(", ") if tag})
        tag_editor(home, "run", list(frame["id"]), present, prefix)
        st.divider()
        notes_of = dict(zip(frame["id"], frame["note"]))
        run_id = _one_of(list(frame["id"]), dict(zip(frame["id"], frame["label"])), prefix)
        st.page_link(page_file("live"), label=f"Open {run_id} in Live", query_params={links.RUN: run_id},
                     icon=":material/monitoring:")
        show_note(notes_of[run_id])
        note_editor(home, "run", run_id, notes_of[run_id], prefix)
        st.divider()
        archive_and_delete(home, frame, prefix)


def _one_of(run_ids: list[str], labels: dict[str, str], prefix: str) -> str:
    if len(run_ids) == 1:
        return run_ids[0]
    key = _key(prefix, "note_run")
    if st.session_state.get(key) not in run_ids:
        st.session_state[key] = run_ids[0]
    return st.selectbox("Note of run", run_ids, key=key, format_func=lambda r: labels.get(r, r))


def group_annotations(home: str, group_id: str, prefix: str) -> None:
    """The tags and Markdown note of a comparison group, and their editors."""
    note, tags = group_annotation(home, group_id)
    st.caption(f"Tags of group {group_id}: " + (", ".join(f"`{tag}`" for tag in tags) if tags else "none"))
    show_note(note)
    with st.expander(f"Tags and note of group {group_id}", icon=":material/edit_note:",
                     key=_key(prefix, f"group_panel_{group_id}")):
        tag_editor(home, "group", [group_id], list(tags), prefix)
        note_editor(home, "group", group_id, note, prefix)
