"""The bad-input corpus: each case writes one spec file and names the message it must give.

``CASES`` holds every case; a case's ``write(folder)`` writes its spec (and any image folder it points at)
under ``folder`` and returns the spec's path. ``expect`` is a regular expression the error output must match
(searched line by line, so '^error: epochs:' pins the field). Cases are generated where one rule covers many
fields (non-finite, boolean and out-of-range numbers), and written out where each is its own attack (alias bombs,
deep nesting, encodings). tests/test_bad_inputs.py runs them through validate, run and Configure's upload.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from PIL import Image

#: a valid digits run: every case is this spec with one thing wrong
BASE: dict[str, Any] = {
    "name": "corpus",
    "dataset": {"name": "digits", "batch_size": 64},
    "teachers": [{"id": "t", "arch": "mlp", "arch_params": {"hidden": [32]}, "source": {"kind": "train", "epochs": 1}}],
    "student": {"arch": "mlp", "arch_params": {"hidden": [16]}},
    "paths": [{"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
    "epochs": 1,
}
BASE_YAML = yaml.safe_dump(BASE, sort_keys=False)


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # a regular expression the error output must match (re.MULTILINE)
    content: Callable[[Path], bytes] = field(repr=False)  # the spec's bytes, given the case's folder
    needs_non_root: bool = False  # an unreadable folder is readable to root: such a case is skipped as root

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / "spec.yaml"
        spec.write_bytes(self.content(folder))
        return spec

    def matches(self, output: str) -> bool:
        return re.search(self.expect, output, re.MULTILINE) is not None


def _text(text: str) -> Callable[[Path], bytes]:
    return lambda folder: text.encode()


def _with(path: str, value: Any) -> Callable[[Path], bytes]:
    """BASE with the dotted ``path`` (list items by index) set to ``value``, as YAML."""
    return _text(yaml.safe_dump(_set(copy.deepcopy(BASE), path, value), sort_keys=False))


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[int(keys[-1]) if isinstance(node, list) else keys[-1]] = value
    return data


def _field_pattern(path: str) -> str:
    """'paths.0.weight' -> the message's field 'paths[0].weight', as a regex anchored at an error line."""
    shown = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", path)
    return rf"^error: {re.escape(shown)}: "


# ---------------------------------------------------------------- numbers: one rule, many fields
#: (field, a value beyond its bound): every numeric field refuses NaN, infinities, true/false and the value
NUMERIC_FIELDS: list[tuple[str, Any]] = [
    ("epochs", 10**12), ("seed", 2**64), ("log_every", 10**9), ("telemetry_every", 10**9),
    ("optimizer.lr", 1e300), ("optimizer.momentum", 1.5), ("optimizer.weight_decay", 1e9), ("schedule.gamma", 1e6),
    ("dataset.batch_size", 10**9), ("dataset.val_fraction", 2.0), ("dataset.test_fraction", -1.0),
    ("dataset.train_size", 10**15), ("dataset.image_size", 10**6), ("dataset.split_seed", -1),
    ("dataset.memory_limit_mb", 10**12), ("teachers.0.source.epochs", 10**12), ("teachers.0.source.seed", 2**40),
    ("teachers.0.source.noise", 3.0), ("paths.0.weight", 1e300), ("diagnostics.margin", 5.0),
    ("diagnostics.t_threshold", 1e9), ("diagnostics.every", 10**12),
]
#: plugin parameters (engine/params.py's models): the same rule through params_model
PLUGIN_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("paths.0.params.temperature", {}),
    ("weighting.params.task_weight", {"weighting.name": "fixed"}),
]
BAD_NUMBERS: list[tuple[str, Any, str]] = [
    ("nan", float("nan"), r"finite number"), ("inf", float("inf"), r"finite number"),
    ("neg-inf", float("-inf"), r"finite number|greater than"), ("bool", True, r"number|integer"),
]
INT_FIELDS = {"epochs", "seed", "log_every", "telemetry_every", "dataset.batch_size", "dataset.train_size",
              "dataset.image_size", "dataset.split_seed", "dataset.memory_limit_mb", "teachers.0.source.epochs",
              "teachers.0.source.seed", "diagnostics.every"}


def _numeric_cases() -> list[Case]:
    cases = []
    for path, too_big in NUMERIC_FIELDS:
        cases.append(Case(f"{path}=out-of-range", _field_pattern(path) + r"Input should be", _with(path, too_big)))
        for label, value, message in BAD_NUMBERS:
            if path in INT_FIELDS and label != "bool":
                message = r"integer|finite"  # an int field names NaN and infinity as not an integer
            cases.append(Case(f"{path}={label}", _field_pattern(path) + f"(.*)({message})", _with(path, value)))
    for path, extra in PLUGIN_FIELDS:
        for label, value, message in BAD_NUMBERS:
            data = copy.deepcopy(BASE)
            for key, v in {**extra, path: value}.items():
                _set(data, key, v)
            cases.append(Case(f"{path}={label}", _field_pattern(path) + f"(.*)({message})",
                              _text(yaml.safe_dump(data, sort_keys=False))))
    cases.append(Case("arch_params=nan", r"^error: student\.arch_params: hidden\.0 is nan",
                      _with("student.arch_params.hidden", [float("nan")])))
    return cases


# ---------------------------------------------------------------- the file itself
def _huge_paths(count: int) -> bytes:
    """BASE with ``count`` paths, written as text (dumping 95,000 paths through yaml would take seconds)."""
    head = yaml.safe_dump({k: v for k, v in BASE.items() if k != "paths"}, sort_keys=False)
    paths = "".join(f"- {{id: p{i}, teacher: t, distiller: kd, teacher_spot: fc, student_spot: fc}}\n"
                    for i in range(count))
    return (head + "paths:\n" + paths).encode()


FILE_CASES = [
    Case("binary", r"not UTF-8 text \(byte 0x", lambda f: bytes(range(256)) * 40),
    Case("latin-1", r"not UTF-8 text \(byte 0xe9", lambda f: (BASE_YAML + "# caf\xe9\n").encode("latin-1")),
    Case("utf-16", r"not UTF-8 text", lambda f: BASE_YAML.encode("utf-16")),
    Case("nul-byte", r"^error: yaml: unacceptable character #x0000", _text("name: a\x00b\n" + BASE_YAML)),
    Case("escape-byte", r"^error: yaml: unacceptable character #x001b", _text("name: \x1b[2J\n")),
    Case("empty", r"^error: spec: expected a mapping of fields, got NoneType", _text("")),
    Case("scalar", r"^error: spec: expected a mapping of fields, got str", _text("just a sentence\n")),
    Case("list", r"^error: spec: expected a mapping of fields, got list", _text("- a\n- b\n")),
    Case("unclosed", r"^error: yaml: ", _text("name: [unclosed\n")),
    Case("tab-indent", r"^error: yaml: ", _text("dataset:\n\tname: digits\n")),
    Case("over-256kb", r"larger than the 262,144 bytes", lambda f: BASE_YAML.encode() + b"#" * (256 << 10) + b"\n"),
    Case("95000-paths", r"larger than the 262,144 bytes", lambda f: _huge_paths(95_000)),
    Case("1500-paths", r"^error: paths: List should have at most 1000 items", lambda f: _huge_paths(1500)),
    Case("long-int", r"^error: yaml: a value cannot be read", _text(BASE_YAML + "seed: " + "9" * 6000 + "\n")),
    Case("unhashable-key", r"^error: yaml: ", _text("? [a, b]\n: 1\n")),
]

# ---------------------------------------------------------------- YAML that attacks the loader
#: a 'billion laughs': eight lines that expand to 9**8 (43 million) values
BOMB_LINES = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
    f"{k}: &{k} [{', '.join([f'*{prev}'] * 9)}]" for prev, k in zip("abcdefg", "bcdefgh")]
_STUDENT = "student:\n  arch: mlp\n  arch_params:\n    hidden:\n    - 16\n"


#: what the loader says of a bomb, wherever it is
BOMB_MESSAGE = r"^error: yaml: the spec holds [\d,]+ values \(each alias \*name counted as the values it repeats\)"


def _bomb(indent: int) -> str:
    return "".join(" " * indent + line + "\n" for line in BOMB_LINES)


def _replaced(old: str, new: str) -> Callable[[Path], bytes]:
    assert old in BASE_YAML, old  # a case whose edit missed would test nothing
    return _text(BASE_YAML.replace(old, new))


def _nested(depth: int) -> str:
    return "x: " + "[" * depth + "]" * depth + "\n"


YAML_CASES = [
    Case("bomb-weighting-params", BOMB_MESSAGE,
         _text(BASE_YAML + "weighting:\n  name: equal\n  params:\n" + _bomb(4))),
    Case("bomb-student-arch-params", BOMB_MESSAGE,
         _replaced(_STUDENT, "student:\n  arch: mlp\n  arch_params:\n" + _bomb(4))),
    Case("bomb-method-params", BOMB_MESSAGE,
         _text(BASE_YAML + "method:\n  name: amtml\n  params:\n" + _bomb(4))),
    Case("bomb-top-level", BOMB_MESSAGE, _text(BASE_YAML + "x:\n" + _bomb(2))),
    Case("bomb-merge-keys", BOMB_MESSAGE,
         _text(BASE_YAML + "x:\n" + _bomb(2) + "  m: &m {k: *h}\n  n: {<<: *m}\n")),
    Case("alias-chain-depth", r"^error: yaml: (aliases nest the spec deeper|nested deeper)",
         _text(BASE_YAML + "x:\n  a0: &a0 [1]\n" + "".join(f"  a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 80)))),
    Case("recursive-alias", r"^error: yaml: an alias refers to a collection that contains it",
         _replaced("  arch_params:\n    hidden:\n    - 16\n", "  arch_params: &r\n    loop: *r\n")),
    Case("nested-20000-flow", r"^error: yaml: nested deeper than 50 levels", _text(_nested(20_000))),
    Case("nested-60-flow", r"^error: yaml: nested deeper than 50 levels", _text(_nested(60))),
    Case("nested-200-block", r"^error: yaml: nested deeper than 50 levels",
         _text("".join("  " * i + f"k{i}:\n" for i in range(200)))),
    Case("nested-20000-maps", r"^error: yaml: nested deeper than 50 levels",
         _text("x: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n")),
    Case("duplicate-top-key", r"^error: yaml: duplicate key 'epochs' \(lines \d+ and \d+\)",
         _text(BASE_YAML + "epochs: 5\n")),
    Case("duplicate-nested-key", r"^error: yaml: duplicate key 'name'",
         _replaced("  name: digits\n", "  name: digits\n  name: mnist\n")),
    Case("duplicate-flow-key", r"^error: yaml: duplicate key 'hidden'",
         _replaced(_STUDENT, "student:\n  arch: mlp\n  arch_params: {hidden: [16], hidden: [64]}\n")),
    Case("duplicate-path-key", r"^error: yaml: duplicate key 'teacher_spot'",
         _replaced("  teacher_spot: fc\n", "  teacher_spot: fc\n  teacher_spot: pool\n")),
    Case("python-tag", r"^error: yaml: could not determine a constructor",
         _text(BASE_YAML + "x: !!python/object/apply:os.system ['touch pwned']\n")),
    Case("python-name-tag", r"^error: yaml: could not determine a constructor",
         _text(BASE_YAML + "x: !!python/name:os.system\n")),
]


# ---------------------------------------------------------------- well-formed YAML, meaningless spec
SPEC_CASES = [
    Case("version-7", r"^error: version: unknown spec version 7", _with("version", 7)),
    Case("version-0", r"^error: version: unknown spec version 0", _with("version", 0)),
    Case("version-text", r"^error: version: ", _with("version", "two")),
    Case("unknown-key", r"^error: epoch: unknown key", _with("epoch", 3)),
    Case("unknown-nested-key", r"^error: optimizer\.learning_rate: unknown key", _with("optimizer.learning_rate", 1)),
    Case("unknown-dataset", r"^error: dataset\.name: unknown dataset 'imagenet21k'",
         _with("dataset.name", "imagenet21k")),
    Case("unknown-arch", r"^error: student\.arch: unknown architecture 'mlp9'", _with("student.arch", "mlp9")),
    Case("unknown-distiller", r"^error: paths\[0\]\.distiller: unknown distiller", _with("paths.0.distiller", "kdx")),
    Case("unknown-weighting", r"^error: weighting\.name: unknown weighting", _with("weighting.name", "nope")),
    Case("unknown-method", r"^error: method\.name: unknown method", _with("method", {"name": "nope"})),
    Case("unknown-teacher", r"^error: paths\[0\]\.teacher: unknown teacher 'u'", _with("paths.0.teacher", "u")),
    Case("unknown-spot", r"^error: paths\[0\]\.student_spot: 'layer9' is not a spot of mlp",
         _with("paths.0.student_spot", "layer9")),
    Case("unknown-plugin-param", r"^error: paths\[0\]\.params\.temp: unknown parameter",
         _with("paths.0.params", {"temp": 4})),
    Case("string-temperature", r"^error: paths\[0\]\.params\.temperature: ", _with("paths.0.params.temperature", "4")),
    Case("path-id-space", r"^error: paths\[0\]\.id: String should match pattern", _with("paths.0.id", "t kd")),
    Case("path-id-slash", r"^error: paths\[0\]\.id: String should match pattern", _with("paths.0.id", "../x")),
    Case("path-id-empty", r"^error: paths\[0\]\.id: String should match pattern", _with("paths.0.id", "")),
    Case("path-id-too-long", r"^error: paths\[0\]\.id: String should have at most 60", _with("paths.0.id", "p" * 61)),
    Case("teacher-id-dot", r"^error: teachers\[0\]\.id: String should match pattern", _with("teachers.0.id", "t.1")),
    Case("teacher-id-ansi", r"^error: teachers\[0\]\.id: String should match pattern",
         _with("teachers.0.id", "\x1b[31mt")),
    Case("duplicate-path-ids", r"^error: spec: paths: duplicate id\(s\) \['t-kd'\]",
         _with("paths", [BASE["paths"][0], BASE["paths"][0]])),
    Case("duplicate-teacher-ids", r"^error: spec: teachers: duplicate id\(s\) \['t'\]",
         _with("teachers", [BASE["teachers"][0], BASE["teachers"][0]])),
    Case("too-many-teachers", r"^error: teachers: List should have at most 64 items",
         _with("teachers", [{**BASE["teachers"][0], "id": f"t{i}"} for i in range(65)])),
    Case("name-too-long", r"^error: name: String should have at most 120", _with("name", "n" * 121)),
    Case("device-bogus", r"^error: device: String should match pattern", _with("device", "tpu")),
    Case("epochs-zero", r"^error: epochs: Input should be greater than 0", _with("epochs", 0)),
    Case("epochs-text", r"^error: epochs: Input should be a valid integer", _with("epochs", "ten")),
    Case("milestone-beyond", r"^error: schedule\.milestones\[0\]: Input should be less than",
         _with("schedule.milestones", [10**9])),
    Case("normalize-nan", r"^error: dataset\.normalize", _with("dataset.normalize", {"mean": [float("nan")],
                                                                                       "std": [1.0]})),
    Case("fractions-sum", r"^error: dataset: val_fraction \(0\.5\) \+ test_fraction \(0\.6\)",
         _text(yaml.safe_dump(_set(_set(copy.deepcopy(BASE), "dataset.val_fraction", 0.5),
                                   "dataset.test_fraction", 0.6), sort_keys=False))),
    Case("source-kind", r"^error: teachers\[0\]\.source", _with("teachers.0.source", {"kind": "magic"})),
    Case("checkpoint-missing", r"^error: teachers\[0\]\.source\.path: no checkpoint file",
         _with("teachers.0.source", {"kind": "checkpoint", "path": "/nonexistent/teacher.pt"})),
    Case("run-missing", r"^error: teachers\[0\]\.source\.run_id: no run 'nope'",
         _with("teachers.0.source", {"kind": "run", "run_id": "nope"})),
    Case("spot-kind", r"^error: paths\[0\]\.teacher_spot: at needs a spot of kind feature_map",
         _with("paths.0.distiller", "at")),
    Case("method-param-range", r"^error: method\.params\.alpha: Input should be less than or equal to 1",
         _with("method", {"name": "amtml", "params": {"alpha": 5}})),
]


# ---------------------------------------------------------------- image folders
def _images(folder: Path, classes: dict[str, int]) -> None:
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (40 * i % 255, 0, 0)).save(folder / name / f"{i}.png")


def _image_folder(build: Callable[[Path], None]) -> Callable[[Path], bytes]:
    def content(folder: Path) -> bytes:
        root = folder / "images"
        root.mkdir(parents=True, exist_ok=True)
        build(root)
        data = _set(copy.deepcopy(BASE), "dataset", {"name": "image_folder", "root": str(root), "batch_size": 8})
        return yaml.safe_dump(data, sort_keys=False).encode()
    return content


def _unreadable_class(root: Path) -> None:
    _images(root, {"cat": 3, "dog": 3})
    (root / "dog").chmod(0)


IMAGE_CASES = [
    Case("one-class", r"holds one class folder \(cat/\); a classifier needs at least 2 classes",
         _image_folder(lambda r: _images(r, {"cat": 4}))),
    Case("one-class-splits", r"train holds one class folder \(cat/\)",
         _image_folder(lambda r: (_images(r / "train", {"cat": 4}), _images(r / "test", {"cat": 2})))),
    Case("stray-file", r"notes\.txt is not an image .*move it out of the class folder",
         _image_folder(lambda r: (_images(r, {"cat": 3, "dog": 3}), (r / "dog" / "notes.txt").write_text("x")))),
    Case("empty-class", r"class folder \S+/dog is empty", _image_folder(lambda r: (_images(r, {"cat": 3}),
                                                                                    (r / "dog").mkdir()))),
    Case("no-classes", r"has no class subfolders with images", _image_folder(lambda r: None)),
    Case("corrupt-image", r"cannot read image \S+0\.png",
         _image_folder(lambda r: (_images(r, {"cat": 3, "dog": 3}), (r / "cat" / "0.png").write_bytes(b"junk")))),
    Case("split-classes-differ", r"hold different class folders",
         _image_folder(lambda r: (_images(r / "train", {"cat": 2, "dog": 2}), _images(r / "test", {"cat": 2,
                                                                                                  "eel": 2})))),
    Case("root-missing", r"image_folder: folder /nonexistent/images does not exist",
         _with("dataset", {"name": "image_folder", "root": "/nonexistent/images"})),
    Case("root-unset", r"image_folder: dataset\.root is required", _with("dataset", {"name": "image_folder"})),
    Case("unreadable-class", r"cannot read folder \S+/dog \(Permission denied\)", _image_folder(_unreadable_class),
         needs_non_root=True),
]

CASES: list[Case] = FILE_CASES + YAML_CASES + _numeric_cases() + SPEC_CASES + IMAGE_CASES
assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
