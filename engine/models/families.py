"""Model families: every torchvision classification model (``torchvision:resnet50``) and every timm model
(``timm:convnext_nano``), resolved by name on demand instead of registered one by one.

A family entry behaves like a registered model everywhere (``name in MODELS``, ``build_model``,
``model_params``, spots, ``TappedModel``): its builder has the zoo's signature
``(num_classes, in_channels, image_size, **params)`` and passes ``params`` to the model's constructor.
Its spots are derived from the torch.fx graph: ``stage1..stageN`` (the last block output at each spatial
resolution, from a dummy forward), ``pool`` (the embedding the classifier reads) and ``fc`` (the logits).

Published ("pretrained") weights are found by engine/models/published_weights.py.
"""
from __future__ import annotations

import difflib
import inspect
import json
from functools import lru_cache
from typing import Any

import torch
from torch import fx, nn

from engine.registry import Entry, UnknownName
from engine.vocabulary import LOGITS_SPOT

FAMILIES = ("torchvision", "timm")
#: constructor arguments PathScope sets itself (from the dataset and the source), never taken from arch_params
_FIXED = {"self", "num_classes", "in_chans", "pretrained", "weights", "progress", "pretrained_cfg",
          "pretrained_cfg_overlay", "device", "dtype"}
_SIZE_ARGS = ("img_size", "image_size")  # passed the dataset's image size when the constructor has one
PROBE_SIZE = 64  # dummy input for finding stages: five halvings stay distinct (64 -> 2)
_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POOL_CALLS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax", "adaptive_avgmax_pool2d",
               "select_adaptive_pool2d"}


class FamilyError(ValueError):
    """A family model that cannot be built or whose published weights are not available here."""


# ------------------------------------------------------------------ names
def split_name(arch: str) -> tuple[str, str]:
    """'timm:resnet18' -> ('timm', 'resnet18'); a registered name gives ('', name)."""
    prefix, sep, rest = arch.partition(":")
    return (prefix, rest) if sep and prefix in FAMILIES else ("", arch)


def is_family(arch: str) -> bool:
    return bool(split_name(arch)[0])


@lru_cache(maxsize=None)
def _library_names(family: str) -> tuple[str, ...]:
    if family == "timm":
        import timm

        return tuple(timm.list_models())
    import torchvision

    # Classification models only: the top-level module (detection, segmentation, video live in submodules).
    return tuple(torchvision.models.list_models(module=torchvision.models))


def family_models(family: str, pretrained: bool = False) -> list[str]:
    """Every model of a family as a PathScope name ('timm:resnet18'); with pretrained, those with published weights.

    For the UI and the CLI: families are too large to show in a plain selectbox (timm has over a thousand).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} (families: {', '.join(FAMILIES)})")
    if pretrained and family == "timm":
        import timm

        names = sorted({n.split(".")[0] for n in timm.list_models(pretrained=True)})
    else:
        names = list(_library_names(family))
    return [f"{family}:{n}" for n in names]


def _check_name(family: str, name: str, full: str) -> None:
    base = name.split(".")[0] if family == "timm" else name  # timm names may carry a weights tag
    known = _library_names(family)
    if base not in known:
        close = difflib.get_close_matches(base, known, n=3)
        hint = f"; close: {', '.join(f'{family}:{c}' for c in close)}" if close else ""
        raise UnknownName(f"unknown model {full!r}: {family} has no model {base!r}{hint}")
    if family == "timm" and "." in name:
        import timm.models

        if timm.models.get_pretrained_cfg(name) is None:
            raise UnknownName(f"unknown model {full!r}: timm has no weights tag {name.split('.', 1)[1]!r} for {base}")


def resolve(full: str) -> Entry:
    """The registry entry of a family name (MODELS' family resolver)."""
    family, name = split_name(full)
    _check_name(family, name, full)
    weights = "published weights available" if _has_published_weights(family, name) else "no published weights"
    description = f"{family} {name} (random init or pretrained: {weights})"

    def build(num_classes: int, in_channels: int, image_size: int, /, **params: Any) -> nn.Module:
        return build_family_model(full, num_classes, in_channels, image_size, params)

    meta = {"spots": lambda model: family_spots(full, model), "family": family,
            "params": lambda: constructor_params(full)[0], "open_params": lambda: constructor_params(full)[1],
            "tracer_kwargs": lambda: tracer_kwargs(full)}
    return Entry(full, build, description, meta)


def _has_published_weights(family: str, name: str) -> bool:
    try:
        if family == "timm":
            import timm.models

            return timm.models.get_pretrained_cfg(name) is not None
        import torchvision

        return torchvision.models.get_model_weights(name) is not None
    except Exception:  # noqa: BLE001 - a description must never fail a lookup
        return False


# ------------------------------------------------------------------ building
def _model_class(family: str, name: str) -> type | None:
    if family == "timm":
        import timm.models

        fn = timm.models.model_entrypoint(name.split(".")[0])
    else:
        import torchvision

        fn = torchvision.models.get_model_builder(name)
    cls = inspect.signature(fn).return_annotation
    return cls if inspect.isclass(cls) and issubclass(cls, nn.Module) else None


@lru_cache(maxsize=None)
def constructor_params(arch: str) -> tuple[dict[str, Any], bool]:
    """(params with their defaults, whether the constructor takes any other keyword too)."""
    family, name = split_name(arch)
    cls = _model_class(family, name)
    if cls is None:  # no annotation: build one to see its class
        with torch.random.fork_rng(devices=[]):
            cls = type(build_family_model(arch, 10, 3, 224, {}, check=False))
    params, open_params = {}, False
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            open_params = True
        elif p.kind is p.VAR_POSITIONAL or p.name in _FIXED or p.name in _SIZE_ARGS or p.default is p.empty:
            continue
        else:
            params[p.name] = _plain(p.default)
    return params, open_params


def _plain(value: Any) -> Any:
    """A default as YAML shows it: plain values as they are, anything else (a class, a function) by its name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return getattr(value, "__name__", type(value).__name__)


def build_family_model(arch: str, num_classes: int, in_channels: int, image_size: int, params: dict[str, Any],
                       check: bool = True) -> nn.Module:
    """A randomly initialised family model for this dataset; a param the constructor refuses is named."""
    family, name = split_name(arch)
    params = dict(params)
    if check:
        accepted, open_params = constructor_params(arch)
        unknown = [p for p in params if p not in accepted and not open_params]
        fixed = [p for p in params if p in _FIXED or p in _SIZE_ARGS]
        for bad in fixed or unknown:
            why = ("is set by PathScope (from the dataset, or the source for weights)" if bad in fixed
                   else f"is not a parameter of {arch} (accepted params: {', '.join(accepted) or 'none'})")
            raise ValueError(f"{arch}: param {bad!r} {why}")
    cls = _model_class(family, name) if check else None
    takes = set(inspect.signature(cls.__init__).parameters) if cls is not None else set()
    for size_arg in _SIZE_ARGS:
        if size_arg in takes:
            params[size_arg] = image_size
    try:
        if family == "timm":
            import timm

            model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **params)
        else:
            import torchvision

            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **params)
            if in_channels != 3:
                _replace_first_conv(model, in_channels, arch)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as err:
        shown = json.dumps(params, default=str)
        raise ValueError(f"{arch} cannot be built with params {shown} for {num_classes} classes, "
                         f"{in_channels} channel(s), size {image_size}: {err}") from err
    # Spots are derived once per (architecture, params, channels, size); the model carries its key.
    model.__dict__["_pathscope_spot_key"] = (arch, json.dumps(params, sort_keys=True, default=str), in_channels,
                                             image_size if takes & set(_SIZE_ARGS) else max(image_size, PROBE_SIZE))
    return model


def first_conv(model: nn.Module, arch: str = "") -> str | None:
    """The qualified name of the input convolution (timm knows it; otherwise the first Conv2d)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    named = cfg.get("first_conv")
    if isinstance(named, str):
        try:
            if isinstance(model.get_submodule(named), nn.Conv2d):
                return named
        except AttributeError:
            pass
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _replace_first_conv(model: nn.Module, in_channels: int, arch: str) -> None:
    name = first_conv(model, arch)
    conv = model.get_submodule(name) if name else None
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"{arch}: no 3-channel input convolution to adapt to {in_channels} channel(s)")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    model.set_submodule(name, new)


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB input-conv weights for another channel count: summed for 1, tiled and rescaled otherwise (as timm does)."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    base = weight.shape[1]
    repeats = -(-in_channels // base)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (base / in_channels)


def head_modules(model: nn.Module, arch: str) -> list[str]:
    """Qualified names of the classifier layer(s): timm's pretrained_cfg says; else the module of the fc spot."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    named = cfg.get("classifier")
    if named:
        names = [named] if isinstance(named, str) else list(named)
        return [n for n in names if _is_module(model, n)]
    from engine.models.spots import spot_nodes

    node = spot_nodes(arch, model).get(LOGITS_SPOT)
    if node and _is_module(model, node) and _has_weight(model.get_submodule(node)):
        return [node]
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return layers[-1:]


def _is_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _has_weight(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), torch.Tensor)


# ------------------------------------------------------------------ tracing and spots
def tracer_kwargs(arch: str) -> dict[str, Any]:
    """What torch.fx needs to trace the model: timm marks its untraceable layers and functions as leaves."""
    if split_name(arch)[0] != "timm":
        return {}
    import timm.models  # noqa: F401  (models register their leaf modules on import)
    from timm.layers import get_notrace_functions, get_notrace_modules

    return {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}


def node_tracer_kwargs(arch: str) -> dict[str, Any]:
    """The tracer settings create_feature_extractor uses for this model (torchvision's defaults plus the model's),
    so a node name found by tracing here is one the feature extractor accepts."""
    from torchvision.models import feature_extraction

    return feature_extraction._set_default_tracer_kwargs(dict(tracer_kwargs(arch)))


def family_spots(arch: str, model: nn.Module) -> dict[str, str]:
    """Spot name -> fx node name, derived once per (architecture, params, channels, size)."""
    key = model.__dict__.get("_pathscope_spot_key")
    if key is None:
        key = (arch, "{}", _input_channels(model), PROBE_SIZE)
        return dict(_derive_spots(model, key))
    if key not in _SPOT_MEMO:
        _SPOT_MEMO[key] = _derive_spots(model, key)
    return dict(_SPOT_MEMO[key])


_SPOT_MEMO: dict[tuple, tuple[tuple[str, str], ...]] = {}


def _input_channels(model: nn.Module) -> int:
    name = first_conv(model)
    return model.get_submodule(name).in_channels if name else 3


def _derive_spots(model: nn.Module, key: tuple) -> tuple[tuple[str, str], ...]:
    from torch.fx.passes.shape_prop import ShapeProp
    from torchvision.models.feature_extraction import NodePathTracer

    arch, _, channels, size = key
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # shapes from an eval forward: batch norm statistics stay as they are
    try:
        tracer = NodePathTracer(**node_tracer_kwargs(arch))
        graph = tracer.trace(model)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            ShapeProp(fx.GraphModule(tracer.root, graph)).propagate(torch.zeros(2, channels, size, size))
        train_tracer = NodePathTracer(**node_tracer_kwargs(arch))
        model.train()
        train_tracer.trace(model)
    finally:
        for module, mode in modes:
            module.training = mode
    names = tracer.node_to_qualname
    in_train = set(train_tracer.node_to_qualname.values())
    spots = _choose_spots(model, list(graph.nodes), names)
    missing = [s for s, n in spots.items() if n not in in_train]
    if LOGITS_SPOT in missing:
        raise ValueError(f"{arch}: the logits node {spots['fc']!r} differs between train and eval mode; "
                         f"its spots cannot be tapped")
    return tuple((s, n) for s, n in spots.items() if s not in missing)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _main_path(nodes: list[fx.Node]) -> list[fx.Node]:
    """Nodes every value from input to output passes through (no edge jumps over them), in graph order."""
    index = {n: i for i, n in enumerate(nodes)}
    reach, chain = 0, []
    for i, node in enumerate(nodes):
        carries = node.op != "get_attr" and (_shape(node) is not None or node.op == "placeholder")
        if node.op not in ("placeholder", "output") and carries and reach <= i:
            chain.append(node)
        if carries:
            reach = max(reach, max((index[u] for u in node.users), default=i))
    return chain


def _is_global_pool(model: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        return isinstance(module, _POOL_MODULES) or type(module).__name__ in ("SelectAdaptivePool2d",
                                                                              "AdaptiveAvgMaxPool2d")
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return target in _POOL_CALLS


def _shared_prefix(a: str, b: str) -> int:
    count = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        count += 1
    return count


def _choose_spots(model: nn.Module, nodes: list[fx.Node], names: dict[fx.Node, str]) -> dict[str, str]:
    output = next(n for n in nodes if n.op == "output")
    logits = output.args[0]
    if not isinstance(logits, fx.Node) or _shape(logits) is None or len(_shape(logits)) != 2:
        raise ValueError("the model does not return a logits tensor (batch x classes)")
    chain = [n for n in _main_path(nodes) if nodes.index(n) < nodes.index(logits)]
    spatial = [i for i, n in enumerate(chain) if len(_shape(n)) >= 3]
    pool = None
    if spatial:
        pool = next((n for n in chain[spatial[-1] + 1:] if len(_shape(n)) == 2), None)
    cut = next((i for i, n in enumerate(chain) if _is_global_pool(model, n)),
               spatial[-1] + 1 if spatial else 0)
    # Feature maps are NCHW with a square probe: (C, S, S); channels-last intermediates (S, S, C) are skipped.
    maps = [n for n in chain[:cut] if len(_shape(n)) == 4 and _shape(n)[2] == _shape(n)[3]]
    tokens = [n for n in chain[:cut] if len(_shape(n)) == 3]
    groups: dict[tuple, list[fx.Node]] = {}
    for node in maps:
        groups.setdefault(_shape(node)[2:], []).append(node)
    stages = []
    for group in groups.values():
        # The last node of a block at this resolution: the next main-path node is in another block.
        ends = [n for n in group if _block_end(n, chain, names)]
        stages.append((ends or group)[-1])
    if tokens:
        stages.append(tokens[-1])  # a transformer's token sequence after its last block
    stages.sort(key=nodes.index)
    spots = {f"stage{i + 1}": names[n] for i, n in enumerate(stages)}
    if pool is not None and pool is not logits:
        spots["pool"] = names[pool]
    spots[LOGITS_SPOT] = names[logits]
    return spots


def _block_end(node: fx.Node, chain: list[fx.Node], names: dict[fx.Node, str]) -> bool:
    i = chain.index(node)
    if i + 1 >= len(chain):
        return True
    return _shared_prefix(names[node], names[chain[i + 1]]) < 2
