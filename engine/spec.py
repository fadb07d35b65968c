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
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SPEC_VERSION = 2
#: version-1 aggregators that changed what paths compute: they are path methods now, weighted "fixed"
#: (their weights were their own: AMTML's teacher importance and hint weight, SAKD's and DFA's path weights)
LEGACY_PATH_METHODS = frozenset({"amtml", "sakd", "dfa"})


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML file must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class NormalizeValues(_Strict):
    """Explicit per-channel normalisation, in [0, 1] pixel units: x = (pixel / max - mean) / std."""

    mean: list[float] = Field(min_length=1, max_length=4)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=4)

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
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of the training pool held out for "
                                                                 "validation when there is no val folder")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share held out for testing when a dataset "
                                                                  "has no test split of its own")
    train_size: int | None = Field(None, gt=0, description="cap on training samples (quick runs)")
    image_size: int | None = Field(None, gt=0, description="side length: image folders are resized on the "
                                                           "shorter side and centre-cropped to it")
    augment: Literal["none", "crop", "flip_crop", "random_resized_crop"] = "none"
    normalize: Normalize = Field("dataset", description="dataset: the train split's statistics; imagenet; none; "
                                                        "or {mean: [...], std: [...]}")
    stream: Literal["auto", "on", "off"] = Field(
        "auto", description="image_folder: read images from disk batch by batch (auto: when their decoded "
                            "float32 size exceeds memory_limit_mb)")
    memory_limit_mb: int = Field(2048, gt=0, description="image_folder: decoded images above this size (float32) "
                                                         "stream from disk")
    loader_workers: int = Field(2, ge=0, le=64, description="DataLoader worker processes when streaming")
    batch_size: int = Field(64, gt=0)
    split_seed: int = Field(0, description="fixes the train/val/test split independently of the run seed")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "DatasetSpec":
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction ({self.val_fraction}) + test_fraction ({self.test_fraction}) must be "
                             f"below 1, or nothing is left to train on")
        return self


class TeacherCacheSpec(_Strict):
    """Frozen teachers' outputs computed once and reused (see engine/data/teacher_cache.py)."""

    enabled: bool = True
    views: int = Field(4, gt=0, le=64, description="fixed augmented views per sample when augmentation is on")
    fp16: bool = Field(False, description="store cached outputs in half precision (half the disk and memory)")


class DiagnosticsSpec(_Strict):
    """The negative-transfer probe (see engine/diagnostics/probe.py)."""

    enabled: bool = False
    every: int | None = Field(None, gt=0, description="steps between probes; None: about 10% overhead")
    window: int = Field(8, ge=2, description="probes a verdict looks back over")
    margin: float = Field(0.15, ge=0, lt=1, description="|mean agreement score| below this is neutral")
    t_threshold: float = Field(3.0, gt=0, description="standard errors the mean score must clear")
    val_batch_size: int = Field(256, gt=0)


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False


class ScheduleSpec(_Strict):
    name: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[int] = Field(default_factory=list, description="epochs at which lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0)


class TrainSource(_Strict):
    """Train the teacher inside this run (cached in the workspace by its recipe)."""

    kind: Literal["train"] = "train"
    epochs: int = Field(10, gt=0)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    seed: int = 0
    defect: Literal["none", "permuted_labels", "noisy_labels", "inverted_input", "under_trained", "random_init"] = \
        Field("none", description="plant a defect, for teaching and for testing negative-transfer detection")
    noise: float = Field(0.4, ge=0, le=1, description="share of labels replaced when defect is noisy_labels")


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
    arch_params: dict[str, Any] = Field(default_factory=dict)
    source: TeacherSource = Field(default_factory=TrainSource)


class StudentSpec(_Strict):
    arch: str
    arch_params: dict[str, Any] = Field(default_factory=dict)
    source: StudentSource = Field(default_factory=ScratchSource, description="where the student's initial "
                                  "weights come from; a head of the wrong size is replaced")


class PathSpec(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_\-.]+$", max_length=60)
    teacher: str
    distiller: str
    teacher_spot: str
    student_spot: str
    weight: float | None = Field(None, ge=0, description="None: the distiller's conventional weight")
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class WeightingSpec(_Strict):
    name: str = "equal"
    params: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunSpec(_Strict):
    version: int = SPEC_VERSION
    name: str = Field("run", max_length=120)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    teachers: list[TeacherSpec] = Field(default_factory=list)
    student: StudentSpec
    paths: list[PathSpec] = Field(default_factory=list)
    weighting: WeightingSpec = Field(default_factory=WeightingSpec, description="how the terms are weighted")
    method: MethodSpec | None = Field(None, description="a path method (amtml, sakd, dfa); None: each path's "
                                                        "distiller on the whole batch")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    epochs: int = Field(10, gt=0)
    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    log_every: int = Field(10, gt=0, description="steps between logged loss values")
    telemetry_every: int = Field(50, gt=0, description="steps between recorded per-sample arrays (aggregators)")
    teacher_cache: TeacherCacheSpec = Field(default_factory=TeacherCacheSpec)
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on a CUDA GPU that supports it, fp32 otherwise")

    @model_validator(mode="after")
    def _check_references(self) -> "RunSpec":
        teacher_ids = [t.id for t in self.teachers]
        duplicates = {t for t in teacher_ids if teacher_ids.count(t) > 1}
        if duplicates:
            raise ValueError(f"teachers: duplicate id(s) {sorted(duplicates)}")
        path_ids = [p.id for p in self.paths]
        duplicates = {p for p in path_ids if path_ids.count(p) > 1}
        if duplicates:
            raise ValueError(f"paths: duplicate id(s) {sorted(duplicates)}")
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


class SpecError(ValueError):
    """A spec that cannot be used; ``errors`` holds one 'field.path: problem' line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


SOURCE_KINDS = ("train", "checkpoint", "run", "pretrained", "scratch")


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


def spec_data_from_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError([f"yaml: {err}".replace("\n", " ")]) from None


def spec_from_yaml(text: str) -> RunSpec:
    return parse_spec(spec_data_from_yaml(text))


def load_spec_data(path: str | Path) -> Any:
    """The plain data of a spec file (before validation, so overrides can be applied first)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError([f"{path}: cannot read ({err.strerror})"]) from None
    return spec_data_from_yaml(text)


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
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # not YAML: keep the plain string (a path with a colon, say)
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
