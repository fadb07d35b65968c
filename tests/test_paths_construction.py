"""Shape checks at construction (issue 13): every registered distiller refuses incompatible taps in its
constructor, with the message spec validation reports, instead of failing inside torch on the first step."""
from __future__ import annotations

import pytest

from engine.models.spots import list_spots
from engine.paths import DISTILLERS
from engine.paths.base import DataInfo
from engine.spec import parse_spec
from engine.validate import validate_spec
from tests.conftest import tiny_spec_dict

INFO = DataInfo(num_classes=10, num_samples=100)

# Shape pairs that some distiller refuses: unequal logits, a map against a vector, two vectors, maps of
# different ranks; for two-spot distillers, stage pairs whose channels cannot be matched.
ONE_SPOT_PAIRS = [((10,), (100,)), ((32, 8, 8), (64,)), ((64,), (32, 8, 8)), ((16, 8, 8), (16, 8))]
TWO_SPOT_PAIRS = [(((16, 8, 8), (32, 4, 4)), ((16, 8, 8), (64, 4, 4))), (((16, 8, 8), (32,)), ((16, 8, 8), (32,)))]


def refused_pair(cls) -> tuple | None:
    """The first candidate pair this distiller's shape_problem refuses, or None if it takes them all."""
    pairs = TWO_SPOT_PAIRS if cls.spots_per_side == 2 else ONE_SPOT_PAIRS
    return next((pair for pair in pairs if cls.shape_problem(*pair)), None)


@pytest.mark.parametrize("name", DISTILLERS.names())
def test_constructor_refuses_incompatible_shapes_with_the_validation_message(name):
    cls = DISTILLERS.get(name)
    pair = refused_pair(cls)
    if pair is None:  # relational distillers compare any two shapes: then every candidate must build
        for s_shape, t_shape in (TWO_SPOT_PAIRS if cls.spots_per_side == 2 else ONE_SPOT_PAIRS):
            cls(s_shape, t_shape, INFO)
        return
    with pytest.raises(ValueError) as err:
        cls(*pair, INFO)
    assert str(err.value) == cls.shape_problem(*pair)


def test_shape_refusal_comes_before_any_part_is_sized():
    """fitnet sizes a conv from the shapes: the refusal names the shapes, not a torch error about them."""
    with pytest.raises(ValueError, match=r"student tap is \(64,\) and teacher tap is \(32, 8, 8\)"):
        DISTILLERS.get("fitnet")((64,), (32, 8, 8))


def test_validation_reports_the_constructors_message():
    """Where the spot kinds fit but the shapes do not (fsp between CNNs of different widths), the line
    validation gives for the path carries the message the constructor raises."""
    source = {"kind": "train", "epochs": 1}
    spots = "conv1+conv2"
    spec = parse_spec(tiny_spec_dict(
        teachers=[{"id": "t", "arch": "small_cnn", "arch_params": {"width": 8}, "source": source}],
        student={"arch": "small_cnn", "arch_params": {"width": 4}},
        paths=[{"id": "p", "teacher": "t", "distiller": "fsp", "teacher_spot": spots, "student_spot": spots}]))
    [line] = validate_spec(spec)
    s_shape, t_shape = (tuple(spot_shape("small_cnn", {"width": w}, spot) for spot in spots.split("+")) for w in (4, 8))
    with pytest.raises(ValueError) as err:
        DISTILLERS.get("fsp")(s_shape, t_shape, INFO)
    assert line.startswith(f"paths[0] (p): fsp {err.value} ")


def spot_shape(arch: str, params: dict, spot: str) -> tuple[int, ...]:
    """A spot's shape on digits (1 x 8 x 8 images, 10 classes)."""
    return next(info.shape for info in list_spots(arch, (1, 8, 8), 10, params) if info.name == spot)
