"""RunSpec: the complete, declarative description of a run.

A run is a pure function of its RunSpec (and the seed inside it). The spec is stored with
the run, exported as YAML and re-runnable with ``python -m engine run spec.yaml``.
This module checks structure and types only; names (datasets, architectures, spots,
distillers, weightings, path methods) are checked against the registries by ``engine.validate``.

Version 2 split the old ``aggregator`` into a ``weighting`` and an optional path ``method``; version-1 data
(stored runs, old YAML files) is migrated on parsing (``migrate_spec_data``).
"""
from __future__ import annotations

import copy
import math
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

# SpecError is the spec's one error type, raised for its text and its fields alike
from engine.spec_yaml import SpecError, load_spec_data, load_yaml_value, spec_data_from_yaml

SPEC_VERSION = 2
MAX_EPOCHS = 10_000
MAX_SEED = 2**32 - 1  # numpy's and most libraries' seed range
MAX_STEPS = 10**6  # step counts (log_every, telemetry_every, diagnostics.every)
MAX_BATCH = 65_536
#: version-1 aggregators that changed what paths compute: they are path methods now, weighted "fixed"
#: (their weights were their own: AMTML's teacher importance and hint weight, SAKD's and DFA's path weights)
LEGACY_PATH_METHODS = frozenset({"amtml", "sakd", "dfa"})


def _not_bool(value: Any) -> Any:
    # pydantic reads true as 1: `epochs: true` or `temperature: true` is a mistake, not a number
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


#: numbers that refuse true/false; NaN and infinity are refused by the models' allow_inf_nan=False
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Seed = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=MAX_SEED)]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML file must not be silently ignored. NaN and infinity would be
    # stored as null and fail at run start, far from their field.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _finite_values(value: Any, where: str = "") -> Any:
    """Free-form parameters (arch_params) hold no NaN or infinity, anywhere inside."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'} is {value}: give a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _finite_values(item, f"{where}.{key}" if where else str(key))
    return value


FreeParams = Annotated[dict[str, Any], BeforeValidator(_finite_values)]


class NormalizeValues(_Strict):
    """Explicit per-channel normalisation, in [0, 1] pixel units: x = (pixel / max - mean) / std."""

    mean: list[Float] = Field(min_length=1, max_length=4)
    std: list[Annotated[Float, Field(gt=0)]] = Field(min_length=1, max_length=4)

    @model_validator(mode="after")
    def _same_length(self) -> "NormalizeValues":
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}: give one per channel")
        return self


#: how images are normalised: the train split's own statistics, ImageNet's, none, or explicit values
Normalize = Union[Literal["dataset", "imagenet", "none"], NormalizeValues]


class DatasetSpec(_Strict):
    name: str = "digits"
    root: str | None = Field(None, description="folder holding the files; default per dataset. For image_folder: "
                                                "class subfolders, or train/ (val/, test/) folders of them")
    download: bool = Field(False, description="allow torchvision to download the files")
    val_fraction: Float = Field(0.1, ge=0.0, lt=1.0, description="share of the training pool held out for "
                                                                 "validation when there is no val folder")
    test_fraction: Float = Field(0.2, gt=0.0, lt=1.0, description="share held out for testing when a dataset "
                                                                  "has no test split of its own")
    train_size: Int | None = Field(None, gt=0, le=10**9, description="cap on training samples (quick runs)")
    image_size: Int | None = Field(None, gt=0, le=4096, description="side length: image folders are resized on the "
                                                           "shorter side and centre-cropped to it")
    augment: Literal["none", "crop", "flip_crop", "random_resized_crop"] = "none"
    normalize: Normalize = Field("dataset", description="dataset: the train split's statistics; imagenet; none; "
                                                        "or {mean: [...], std: [...]}")
    stream: Literal["auto", "on", "off"] = Field(
        "auto", description="image_folder: read images from disk batch by batch (auto: when their decoded "
                            "float32 size exceeds memory_limit_mb)")
    memory_limit_mb: Int = Field(2048, gt=0, le=1 << 24, description="image_folder: decoded images above this "
                                                                     "size (float32) stream from disk")
    loader_workers: Int = Field(2, ge=0, le=64, description="DataLoader worker processes when streaming")
    batch_size: Int = Field(64, gt=0, le=MAX_BATCH)
    split_seed: Seed = Field(0, description="fixes the train/val/test split independently of the run seed")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "DatasetSpec":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction ({self.val_fraction}) + test_fraction ({self.test_fraction}) must be "
                             f"below 1, or nothing is left to train on")
        return self


class TeacherCacheSpec(_Strict):
    """Frozen teachers' outputs computed once and reused (see engine/data/teacher_cache.py)."""

    enabled: bool = True
    views: Int = Field(4, gt=0, le=64, description="fixed augmented views per sample when augmentation is on")
    fp16: bool = Field(False, description="store cached outputs in half precision (half the disk and memory)")


class DiagnosticsSpec(_Strict):
    """The negative-transfer probe (see engine/diagnostics/probe.py)."""

    enabled: bool = False
    every: Int | None = Field(None, gt=0, le=MAX_STEPS, description="steps between probes; None: about 10% overhead")
    window: Int = Field(8, ge=2, le=10_000, description="probes a verdict looks back over")
    effect_margin: Float = Field(0.05, ge=0, le=100, description="|mean effect| below this share of the task's "
                                                                 "own effect is neutral")
    t_threshold: Float = Field(4.0, gt=0, le=100, description="standard errors the mean effect must clear to "
                                                              "confirm its sign without the gradient geometry")
    geometry_confirms: bool = Field(True, description="let the gradient geometry (the cosine detector) confirm a "
                                                      "measured effect's sign: earlier flags; off, only the effects' "
                                                      "own consistency does: fewer false flags, later flags")
    margin: Float = Field(0.15, ge=0, lt=1, description="the cosine detector's neutral band (kept as evidence)")
    val_batch_size: Int = Field(256, gt=0, le=MAX_BATCH, description="held-out samples per probe")
    val_chunks: Int = Field(4, ge=1, le=64, description="chunks of the held-out samples: the effect's standard "
                                                        "error is its spread across them")


class DistributedSpec(_Strict):
    """One run over several processes with PyTorch DDP (see engine/distributed/)."""

    nproc: Int = Field(1, ge=1, le=1024, description="processes of one run: one per GPU, or CPU processes (gloo)")


class ResourcesSpec(_Strict):
    """What one run asks of a cluster executor (Ray; see engine/executors/)."""

    cpus: Float = Field(1, gt=0, le=1024, description="CPUs per run where the cluster has no GPU")
    gpus: Float | None = Field(None, ge=0, le=64, description="GPUs per run; None: one where the cluster has GPUs")


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    # 1e12 still runs (and diverges: the non-finite-loss check names it); 1e300 overflows inside the optimizer
    lr: Float = Field(0.05, gt=0, le=1e12)
    momentum: Float = Field(0.9, ge=0, lt=1)
    weight_decay: Float = Field(5e-4, ge=0, le=1)
    nesterov: bool = False


class ScheduleSpec(_Strict):
    name: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[Annotated[Int, Field(gt=0, le=MAX_EPOCHS)]] = Field(
        default_factory=list, max_length=100, description="epochs at which lr is multiplied by gamma")
    gamma: Float = Field(0.1, gt=0, le=10)


class TrainSource(_Strict):
    """Train the teacher inside this run (cached in the workspace by its recipe)."""

    kind: Literal["train"] = "train"
    epochs: Int = Field(10, gt=0, le=MAX_EPOCHS)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    seed: Seed = 0
    defect: Literal["none", "permuted_labels", "noisy_labels", "inverted_input", "under_trained", "random_init",
                    "scaled_logits", "corrupted_features", "shortcut", "rotated_input"] = \
        Field("none", description="plant a defect, for teaching and for testing negative-transfer detection "
                                  "(engine/diagnostics/planted.py describes each)")
    noise: Float = Field(0.4, ge=0, le=1, description="share of labels replaced when defect is noisy_labels")
    strength: Float | None = Field(
        None, gt=0, le=1000, description="the defect's strength, None: its default. under_trained: share of the "
        "training split (0.1); shortcut: share of training images carrying the class patch (1); scaled_logits: "
        "factor on the logits (20); corrupted_features: largest per-channel gain on the features (30)")


class CheckpointSource(_Strict):
    """Weights from a file: .pt .pth .th .bin (loaded as data, never unpickled as code) or .safetensors."""

    kind: Literal["checkpoint"] = "checkpoint"
    path: str


class RunSource(_Strict):
    """A finished run of this workspace (its final model)."""

    kind: Literal["run"] = "run"
    run_id: str


class PretrainedSource(_Strict):
    """The published weights of a torchvision: or timm: model (``pretrained: true``), or a local copy of them."""

    kind: Literal["pretrained"] = "pretrained"
    path: str | None = Field(None, description="a local file of the published weights; None: the library's "
                                               "download cache (torch hub / Hugging Face)")


class ScratchSource(_Strict):
    """Random initialisation, seeded by the run's seed."""

    kind: Literal["scratch"] = "scratch"


TeacherSource = Annotated[Union[TrainSource, CheckpointSource, RunSource, PretrainedSource],
                          Field(discriminator="kind")]
StudentSource = Annotated[Union[ScratchSource, PretrainedSource, CheckpointSource, RunSource],
                          Field(discriminator="kind")]


class TeacherSpec(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", max_length=40)
    arch: str
    arch_params: FreeParams = Field(default_factory=dict)
    source: TeacherSource = Field(default_factory=TrainSource)


class StudentSpec(_Strict):
    arch: str
    arch_params: FreeParams = Field(default_factory=dict)
    source: StudentSource = Field(default_factory=ScratchSource, description="where the student's initial "
                                  "weights come from; a head of the wrong size is replaced")


class PathSpec(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_\-.]+$", max_length=60)
    teacher: str
    distiller: str
    teacher_spot: str
    student_spot: str
    weight: Float | None = Field(None, ge=0, le=1e6, description="None: the distiller's conventional weight")
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class WeightingSpec(_Strict):
    name: str = "equal"
    params: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunSpec(_Strict):
    version: Int = SPEC_VERSION
    name: str = Field("run", max_length=120)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    teachers: list[TeacherSpec] = Field(default_factory=list, max_length=64)
    student: StudentSpec
    paths: list[PathSpec] = Field(default_factory=list, max_length=1000)
    weighting: WeightingSpec = Field(default_factory=WeightingSpec, description="how the terms are weighted")
    method: MethodSpec | None = Field(None, description="a path method (amtml, camkd, ...); None: each path's "
                                                        "distiller on the whole batch")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    epochs: Int = Field(10, gt=0, le=MAX_EPOCHS)
    seed: Seed = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    log_every: Int = Field(10, gt=0, le=MAX_STEPS, description="steps between logged loss values")
    telemetry_every: Int = Field(50, gt=0, le=MAX_STEPS,
                                 description="steps between recorded per-sample arrays (aggregators)")
    teacher_cache: TeacherCacheSpec = Field(default_factory=TeacherCacheSpec)
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a CUDA GPU that supports it, fp32 otherwise")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if not 1 <= version <= SPEC_VERSION:
            raise ValueError(f"unknown spec version {version}: this PathScope reads versions 1 to {SPEC_VERSION} "
                             f"(a newer PathScope wrote it, or it is a typo)")
        return version

    @model_validator(mode="after")
    def _check_references(self) -> "RunSpec":
        for field, ids in (("teachers", [t.id for t in self.teachers]), ("paths", [p.id for p in self.paths])):
            duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)  # linear: a spec may list many paths
            if duplicates:
                raise ValueError(f"{field}: duplicate id(s) {duplicates}")
        return self

    @property
    def active_paths(self) -> list[PathSpec]:
        return [p for p in self.paths if p.enabled]

    @property
    def combination(self) -> str:
        """How the paths are combined, in a few words: 'uncertainty', or 'amtml · fixed' with a path method."""
        return f"{self.method.name} · {self.weighting.name}" if self.method else self.weighting.name

    @property
    def is_teacher_run(self) -> bool:
        """A run without paths trains its model with cross-entropy alone."""
        return not self.active_paths


SOURCE_KINDS = ("train", "checkpoint", "run", "pretrained", "scratch")

#: an ANSI escape sequence (colours, cursor moves, a terminal title): a name printed raw could rewrite the screen
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|.)")
#: bidirectional overrides make a name read differently from what it holds
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """A user-given name made safe to print or draw: ANSI escapes, control characters and bidirectional overrides
    removed, tabs and line breaks turned into spaces (names are stored as given, stripped only on display)."""
    text = _ANSI.sub("", text)
    return "".join(" " if c in "\t\n\r" else c for c in text
                   if c in "\t\n\r" or (unicodedata.category(c) != "Cc" and c not in _BIDI))


def field_path(loc: tuple[Any, ...]) -> str:
    """('paths', 2, 'teacher_spot') -> 'paths[2].teacher_spot'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in SOURCE_KINDS and out.endswith("source"):
            continue  # pydantic adds the union tag to the location; users never typed it
        else:
            out += f".{part}" if out else str(part)
    return out or "spec"


def _format_validation_error(err: ValidationError) -> list[str]:
    """One 'field: problem' line per field; a union's alternatives (normalize) are merged into one line."""
    by_field: dict[str, list[str]] = {}
    for e in err.errors():
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        # pydantic names union members in the location ("literal[...]", "function-after[...]"): users never typed them
        loc = tuple(part for part in e["loc"] if not (isinstance(part, str) and "[" in part))
        by_field.setdefault(field_path(loc), []).append(msg)
    lines = []
    for field, messages in by_field.items():
        own = [m for m in messages if not m.startswith("Input should be")]  # a member's own check says most
        lines.append(f"{field}: {'; '.join(own or messages)}")
    return lines


def migrate_spec_data(data: dict[str, Any]) -> dict[str, Any]:
    """Version-1 data in the current format (a copy); current data unchanged.

    ``aggregator: {name, params}`` becomes ``method: {name, params}`` with ``weighting: {name: fixed}`` for
    the aggregators that were path methods (amtml, sakd, dfa), else ``weighting: {name, params}``.
    """
    if "aggregator" not in data:
        return data
    data = copy.deepcopy(data)
    old = data.pop("aggregator")
    if not isinstance(old, dict) or "weighting" in data or "method" in data:
        data["aggregator"] = old  # not a version-1 spec after all: let validation name the field
        return data
    if old.get("name") in LEGACY_PATH_METHODS:
        data["method"] = {"name": old["name"], "params": old.get("params") or {}}
        data["weighting"] = {"name": "fixed"}
    else:
        data["weighting"] = {"name": old.get("name", "equal"), "params": old.get("params") or {}}
    data["version"] = SPEC_VERSION
    return data


def parse_spec(data: Any) -> RunSpec:
    """Build a RunSpec from plain data (version 1 is migrated), raising SpecError with every problem."""
    if not isinstance(data, dict):
        raise SpecError([f"spec: expected a mapping of fields, got {type(data).__name__}"])
    try:
        return RunSpec.model_validate(migrate_spec_data(data))
    except ValidationError as err:
        raise SpecError(_format_validation_error(err)) from None


def spec_from_yaml(text: str) -> RunSpec:
    return parse_spec(spec_data_from_yaml(text))


def load_spec(path: str | Path) -> RunSpec:
    return parse_spec(load_spec_data(path))


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def spec_to_yaml(spec: RunSpec) -> str:
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False, default_flow_style=False)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of spec data with each 'dotted.key=value' applied (as mmcv's --cfg-options).

    Values are read as YAML scalars or flow collections ('2', '0.1', 'true', '[1, 2]', '{a: 1}'),
    so they get the types the spec expects; list items are addressed by index ('paths.0.weight=2').
    The result is validated like any spec, and it is what a run stores.
    """
    if not isinstance(data, dict):
        raise SpecError([f"spec: expected a mapping of fields, got {type(data).__name__}"])
    data = copy.deepcopy(migrate_spec_data(data))  # overrides name the current fields, also on a version-1 file
    errors = []
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            errors.append(f"--set {override}: expected KEY=VALUE, such as epochs=2 or dataset.batch_size=128")
            continue
        try:
            value = load_yaml_value(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # not YAML: keep the plain string (a path with a colon, say)
        except SpecError as err:  # YAML, but refused (an alias bomb, a duplicate key)
            errors += [f"--set {key.strip()}: {line}" for line in err.errors]
            continue
        problem = _assign(data, key.strip().split("."), value)
        if problem:
            errors.append(f"--set {key.strip()}: {problem}")
    if errors:
        raise SpecError(errors)
    return data


def _assign(node: Any, keys: list[str], value: Any) -> str | None:
    """Set node[k1][k2]... = value, creating mappings on the way; a problem text, or None."""
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                where = ".".join(keys[:depth])
                return f"{where} has no item {key} (it holds {len(node)}; items are numbered from 0)"
            key = int(key)
        elif not isinstance(node, dict):
            return f"{'.'.join(keys[:depth])} is a {type(node).__name__}, not a mapping"
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
                node[key] = {}
            node = node[key]
    return None
