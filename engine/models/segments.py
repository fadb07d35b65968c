"""Cut a model into consecutive segments at its spots: input -> spot_1 -> spot_2 -> ... -> logits.

SAKD routes a sample's stream through teacher or student segments spot by spot, and DFA runs
"the rest of the student" from a layer group on; both need a model as a chain of pieces.
The cut is made on the model's torch.fx graph, so no architecture needs code for it: each
segment is a GraphModule that reuses the model's own submodules (parameters are shared).
"""
from __future__ import annotations

import operator
import re

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.split_module import split_module
from torchvision.models.feature_extraction import NodePathTracer

from engine.models.families import is_family, node_tracer_kwargs
from engine.models.spots import spot_nodes
from engine.vocabulary import LOGITS_SPOT


class SegmentError(ValueError):
    """The model's graph cannot be cut at these spots (a value other than the spot's output crosses)."""


class Segments(nn.Module):
    """segments[i] maps the output of spot i-1 (the input for i = 0) to the output of spot i."""

    def __init__(self, names: list[str], pieces: list[nn.Module]) -> None:
        super().__init__()
        self.names = names
        self.pieces = nn.ModuleList(pieces)

    def __len__(self) -> int:
        return len(self.pieces)

    def run(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """Apply segments start..stop-1 to x (the output of spot start-1, or the input)."""
        for piece in self.pieces[start:stop]:
            x = piece(x)
        return x


def cut_at_spots(model: nn.Module, arch: str, spots: list[str]) -> Segments:
    """Segments of `model` ending at each of `spots` (in model order) and a last one ending at the logits."""
    nodes = spot_nodes(arch, model)
    unknown = [s for s in spots if s not in nodes]
    if unknown:
        raise SegmentError(f"{arch} has no spot(s) {unknown} (spots: {', '.join(nodes)})")
    order = list(nodes)
    spots = sorted(set(spots) - {LOGITS_SPOT}, key=order.index)
    # The same tracer as the spots' extractor, so spot node names mean the same nodes here.
    tracer = NodePathTracer(**node_tracer_kwargs(arch)) if is_family(arch) else NodePathTracer()
    graph = tracer.trace(model)
    graph_module = fx.GraphModule(tracer.root, graph)
    boundaries = [_last_node_of(tracer.node_to_qualname, nodes[s]) for s in spots]
    part_of = _partition(graph, boundaries)
    split = split_module(graph_module, model, lambda node: part_of[node.name])
    pieces = [getattr(split, f"submod_{i}") for i in range(len(boundaries) + 1)]
    _check_chain(split, arch, spots)
    return Segments([*spots, LOGITS_SPOT], pieces)


def _last_node_of(qualnames: dict[fx.Node, str], query: str) -> str:
    """The node a spot names: the last one of the module (or op) at that path, as feature_extraction resolves it."""
    pattern = re.compile(rf"^{re.escape(query)}(\.|$)")
    matching = [node.name for node, qualname in qualnames.items() if pattern.match(qualname)]
    if not matching:
        raise SegmentError(f"spot node {query!r} not found in the traced graph")
    return matching[-1]


def _partition(graph: fx.Graph, boundaries: list[str]) -> dict[str, int]:
    """Node name -> segment index: a boundary node closes its segment."""
    part_of, current = {}, 0
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        part_of[node.name] = current
        if current < len(boundaries) and node.name == boundaries[current]:
            current += 1
    missing = [b for b in boundaries if b not in part_of]
    if missing:
        raise SegmentError(f"spot node(s) {missing} not found in the traced graph")
    return part_of


def _check_chain(split: fx.GraphModule, arch: str, spots: list[str]) -> None:
    """Each segment must take exactly one value (the previous spot's output) and return one."""
    for node in split.graph.nodes:
        if node.op == "call_module" and node.target.startswith("submod_"):
            index = int(node.target.split("_")[1])
            if len(node.args) != 1 or node.kwargs:
                where = spots[index - 1] if index else "the input"
                raise SegmentError(f"{arch} cannot be cut after {where}: other values cross into the next segment")
        if node.op == "call_function" and node.target is operator.getitem:
            raise SegmentError(f"{arch} cannot be cut at {spots}: a segment returns several values")


@torch.no_grad()
def segment_shapes(segments: Segments, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Output shape (without batch) of each segment for a dummy input."""
    was_training = segments.training
    segments.eval()
    x = torch.zeros(2, *input_shape)
    shapes = []
    for piece in segments.pieces:
        x = piece(x)
        shapes.append(tuple(x.shape[1:]))
    segments.train(was_training)
    return shapes
