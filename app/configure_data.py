"""The Configure page's Dataset section: which data, its preprocessing and splits, and a check of its files."""
from __future__ import annotations

from typing import Any, get_args

import streamlit as st
from pydantic import ValidationError

from app.configure_state import choice, key
from engine.data import DATASETS, dataset_signature, load_dataset
from engine.data.bundle import DatasetError
from engine.data.image_folder import describe_image_folder
from engine.registry import UnknownName
from engine.spec import DatasetSpec

AUGMENTS = list(get_args(DatasetSpec.model_fields["augment"].annotation))
NORMALIZE_MODES = ["dataset", "imagenet", "none", "custom"]
STREAM_MODES = list(get_args(DatasetSpec.model_fields["stream"].annotation))


def input_signature(ds: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """(input shape, classes) of the dataset, read without loading or downloading it."""
    try:
        return dataset_signature(DatasetSpec.model_validate(ds))
    except (ValidationError, DatasetError, UnknownName):
        return None  # parse_spec / validate_spec name the problem under the Dataset section


def check_data_files(ds: dict[str, Any]) -> None:
    """Load the dataset once on request: shapes come from the registry, missing files only show here."""
    try:
        bundle = load_dataset(DatasetSpec.model_validate({**ds, "download": False}))
    except (ValidationError, DatasetError, UnknownName) as err:
        st.error(f"The data files cannot be read: {err}")
        return
    st.success(f"Found {len(bundle.train)} train, {len(bundle.val)} val and {len(bundle.test)} test samples.")


def dataset_section(d: dict[str, Any]) -> tuple[tuple[int, ...], int] | None:
    ds = d["dataset"]
    descriptions = {e.name: e.description for e in DATASETS}
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    with c1:
        ds["name"] = choice("Dataset", list(descriptions), ds["name"], "dataset.name",
                            help="\n\n".join(f"**{n}**: {t}" for n, t in descriptions.items()))
    ds["batch_size"] = int(c2.number_input("Batch size", min_value=1, value=int(ds["batch_size"]), step=16,
                                           key=key("dataset.batch_size")))
    train_size = c3.number_input("Train samples", min_value=1, value=ds["train_size"], step=100,
                                 placeholder="all", key=key("dataset.train_size"),
                                 help="Cap on training samples for quick runs; empty = all")
    ds["train_size"] = None if train_size is None else int(train_size)
    with c4:
        ds["augment"] = choice("Augmentation", AUGMENTS, ds["augment"], "dataset.augment",
                               help="crop: random crop of the padded image · flip_crop: the same plus a horizontal "
                                    "flip · random_resized_crop: a random area and aspect ratio resized back, "
                                    "plus a flip")
    c1, c2 = st.columns([3, 1])
    ds["root"] = c1.text_input(
        "Data folder", ds["root"] or "", key=key("dataset.root"),
        help="Where the dataset's files are; empty = the dataset's default place. For image_folder: a folder of "
             "class subfolders, or one holding train/ (and optionally val/ and test/) folders of them",
    ).strip() or None
    ds["download"] = c2.checkbox("Allow download", ds["download"], key=key("dataset.download"),
                                 help="Let the worker download the files (torchvision datasets)")
    if ds["name"] == "image_folder":
        layout_note(ds)
    with st.expander("Image size, normalisation and splits"):
        preprocessing_inputs(ds)
    signature = input_signature(ds)
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    if signature is not None:
        shape, classes = signature
        c1.caption(f"Input {'×'.join(map(str, shape))} · {classes} classes")
    if c2.button("Check the data files", icon=":material/folder_open:",
                 help="Reads the dataset here (never downloads); the worker reads it again when a run starts"):
        check_data_files(ds)
    return signature


def layout_note(ds: dict[str, Any]) -> None:
    """What the worker will find under an image folder (train/test folders or one set of classes)."""
    if not ds["root"]:
        st.info("Give the folder of your images: class subfolders (`cat/`, `dog/`…), or `train/` and `test/` "
                "folders of them as torchvision's ImageFolder expects.", icon=":material/folder:")
        return
    try:
        st.caption(describe_image_folder(ds["root"], ds["val_fraction"], ds["test_fraction"]))
    except DatasetError as err:
        st.warning(str(err), icon=":material/folder_off:")


def preprocessing_inputs(ds: dict[str, Any]) -> None:
    c1, c2, c3 = st.columns(3)
    size = c1.number_input("Image size (px)", min_value=1, value=ds["image_size"], step=32, placeholder="as stored",
                           key=key("dataset.image_size"),
                           help="Resize the shorter side to this and centre-crop a square (224 for ImageNet models); "
                                "empty = the images' own size")
    ds["image_size"] = None if size is None else int(size)
    ds["val_fraction"] = c2.number_input("Validation share", min_value=0.0, max_value=0.95, step=0.05,
                                         value=float(ds["val_fraction"]), key=key("dataset.val_fraction"),
                                         help="Drawn from the training images (seeded) when there is no val/ folder")
    ds["test_fraction"] = c3.number_input("Test share", min_value=0.01, max_value=0.95, step=0.05,
                                          value=float(ds["test_fraction"]), key=key("dataset.test_fraction"),
                                          help="Drawn from the training images when the data has no test split")
    c1, c2, c3 = st.columns([1, 2, 1])
    current = ds["normalize"] if isinstance(ds["normalize"], str) else "custom"
    with c1:
        mode = choice("Normalisation", NORMALIZE_MODES, current, "dataset.normalize",
                      help="dataset: the train split's own mean and std · imagenet: the values ImageNet-pretrained "
                           "models and the akamaster CIFAR checkpoints expect · none: pixels in [0, 1] · custom: "
                           "your own per-channel mean and std. Stored with the run and the exported student")
    if mode == "custom":
        with c2:
            ds["normalize"] = custom_normalisation(ds["normalize"])
    else:
        ds["normalize"] = mode
    with c3:
        ds["stream"] = choice("Read images", STREAM_MODES, ds["stream"], "dataset.stream",
                              help="auto: from memory unless the decoded images exceed the memory limit, then "
                                   "from disk batch by batch · on: always from disk · off: always in memory")
    if ds["stream"] != "off":
        ds["memory_limit_mb"] = int(c3.number_input("Memory limit (MB)", min_value=1, step=256,
                                                    value=int(ds["memory_limit_mb"]), key=key("dataset.memory_limit_mb")))


def custom_normalisation(current: Any) -> dict[str, Any]:
    values = current if isinstance(current, dict) else {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    text = st.text_input("Mean and std per channel", f"{_numbers(values['mean'])} / {_numbers(values['std'])}",
                         key=key("dataset.normalize.values"), help="two comma-separated lists, e.g. "
                         "0.49, 0.48, 0.45 / 0.25, 0.24, 0.26 (pixels in [0, 1])")
    mean, _, std = text.partition("/")
    try:
        return {"mean": _parse_numbers(mean), "std": _parse_numbers(std)}
    except ValueError:
        return {"mean": mean.strip(), "std": std.strip()}  # left for parse_spec to name under dataset.normalize


def _numbers(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _parse_numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]
