"""Commands of the run catalog: ls (with search, tag and archive filters), tag, note, archive, restore, delete."""
from __future__ import annotations

import argparse
import sys
from typing import Callable
from pathlib import Path

from engine.catalog import (
    NOTE_MAX_BYTES, CatalogError, RunFilter, archive, check_run_id, delete_run, deletion_order, group_tags, note_of,
    restore, run_table, set_group_tags, set_note, set_tags,
)
from engine.cli.common import Command
from engine.spec import printable
from engine.store import Store, is_run_id, mark_orphaned_runs, workspace_home


def register(command: Command) -> None:
    p = command("ls", cmd_ls, "list the runs of the workspace, newest first (runs whose process died are marked "
                              "interrupted); archived runs only with --archived")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="only runs with this tag (repeatable: "
                                                                              "runs with all of them)")
    p.add_argument("--search", default="", metavar="TEXT", help="only runs whose name, id, tags or note contain TEXT "
                                                                "(any case)")
    p.add_argument("--archived", action="store_true", help="list the archived runs instead")
    p = command("tag", cmd_tag, "add (+TAG) and remove (-TAG) tags of a run or a group; without changes, print them")
    p.add_argument("target", metavar="RUN|GROUP")
    p.add_argument("changes", nargs=argparse.REMAINDER, metavar="+TAG|-TAG")
    p = command("note", cmd_note, "set the Markdown note of a run or a group; without --text or --file, print it "
                                  "(an empty --text removes it)")
    p.add_argument("target", metavar="RUN|GROUP")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", help="the note")
    text.add_argument("--file", metavar="FILE", help="read the note from a UTF-8 text file")
    p = command("archive", cmd_archive, "hide runs from the run table and ls (restore brings them back)")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p = command("restore", cmd_restore, "show archived runs again")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p = command("delete", cmd_delete, "delete runs: their rows and their folders (a queued or running run is "
                                      "cancelled first; a run other runs depend on is refused)")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _percent(value: float | None) -> str:
    return f"{100 * value:7.2f}%" if value is not None else f"{'':>8}"


def cmd_ls(args: argparse.Namespace) -> int:
    mark_orphaned_runs(workspace_home())
    store = Store(workspace_home(), readonly=True)
    entries = run_table(store, RunFilter(text=args.search, tags=tuple(args.tag), archived=args.archived))
    print(f"{'run':<22} {'status':<11} {'test acc':>8} {'best acc':>8} {'epoch':>5}  name [tags]")
    for e in entries:
        epoch = str(e.best_epoch) if e.best_epoch is not None else ""
        shown = [*e.tags, *(f"{tag}(group)" for tag in e.group_tags)]
        tags = f" [{' '.join(shown)}]" if shown else ""
        print(f"{e.run_id:<22} {e.status:<11} {_percent(e.final_acc)} {_percent(e.best_acc)} {epoch:>5}  "
              f"{printable(e.name)}{tags}")
    return 0


def _tag_changes(changes: list[str]) -> tuple[list[str], list[str]]:
    add, remove = [], []
    for change in changes:
        if change[:1] not in ("+", "-"):
            raise CatalogError(f"tag change {change!r}: start it with + to add the tag or - to remove it")
        (add if change[0] == "+" else remove).append(change[1:])
    return add, remove


def _target_kind(store: Store, target: str) -> str:
    """"run" or "group": what the id names, or CatalogError when it names neither."""
    if is_run_id(target):
        if store.get_run(target) is None:
            raise CatalogError(f"run {target} does not exist")
        return "run"
    if target.startswith(("-", "+")):
        raise CatalogError(f"{target!r}: name the run or group first, then the tag changes")
    if not store.list_runs(group_id=target):
        raise CatalogError(f"{target!r}: no run or group has this id (python -m engine ls lists them)")
    return "group"


def cmd_tag(args: argparse.Namespace) -> int:
    add, remove = _tag_changes(args.changes)
    store = Store(workspace_home())
    if _target_kind(store, args.target) == "run":
        tags = set_tags(store, args.target, add, remove)
    else:
        tags = set_group_tags(store, args.target, add, remove) if add or remove else group_tags(store, args.target)
    print(f"{args.target}: {' '.join(tags) if tags else '(no tags)'}")
    return 0


def _read_note(path: str) -> str:
    """A note file's text, refused without reading a huge file whole."""
    try:
        with Path(path).open("rb") as f:
            raw = f.read(NOTE_MAX_BYTES + 1)
    except OSError as err:
        raise CatalogError(f"--file {path}: cannot read ({err.strerror})") from None
    if len(raw) > NOTE_MAX_BYTES:
        raise CatalogError(f"--file {path}: more than the {NOTE_MAX_BYTES:,} bytes ({NOTE_MAX_BYTES // 1024} KiB) "
                           f"a note may hold")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CatalogError(f"--file {path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})") \
            from None


def cmd_note(args: argparse.Namespace) -> int:
    text = _read_note(args.file) if args.file is not None else args.text
    store = Store(workspace_home(), readonly=text is None)
    kind = _target_kind(store, args.target)
    if text is None:
        print(note_of(store, kind, args.target))
        return 0
    set_note(store, kind, args.target, text)
    saved = f"{len(text.encode('utf-8')):,} bytes saved" if text.strip() else "removed"
    print(f"note of {kind} {args.target}: {saved}")
    return 0


def _existing_runs(store: Store, run_ids: list[str]) -> list[str]:
    """The ids, each checked (shape, then existence) before any is changed: a typo leaves every run as it was."""
    for run_id in run_ids:
        if store.get_run(check_run_id(run_id)) is None:
            raise CatalogError(f"run {run_id} does not exist")
    return list(dict.fromkeys(run_ids))


def cmd_archive(args: argparse.Namespace) -> int:
    return _set_archived(args.runs, archive, "archived")


def cmd_restore(args: argparse.Namespace) -> int:
    return _set_archived(args.runs, restore, "restored")


def _set_archived(run_ids: list[str], action: Callable[[Store, str], None], done: str) -> int:
    """Archive or restore each run, every id checked before any is changed."""
    store = Store(workspace_home())
    try:
        for run_id in _existing_runs(store, run_ids):
            action(store, run_id)
            print(f"{done} {run_id}")
    finally:
        store.close()
    return 0


def _confirmed(run_ids: list[str]) -> bool:
    if not sys.stdin.isatty():
        raise CatalogError("delete asks for confirmation and stdin is not a terminal: pass --yes to delete "
                           "without asking")
    answer = input(f"delete {len(run_ids)} run(s) ({', '.join(run_ids)}) with their files? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_delete(args: argparse.Namespace) -> int:
    store = Store(workspace_home(), readonly=True)
    run_ids = deletion_order(store, _existing_runs(store, args.runs))
    store.close()
    if not args.yes and not _confirmed(run_ids):
        print("nothing deleted")
        return 0
    for run_id in run_ids:
        report = delete_run(workspace_home(), run_id)
        cancelled = "cancelled, then " if report.cancelled else ""
        print(f"{cancelled}deleted {run_id}: {sum(report.rows.values()):,} rows, "
              f"{len(report.folders)} folder(s) removed")
    return 0
