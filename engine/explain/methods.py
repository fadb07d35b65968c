"""Attribution methods (captum) behind one call that returns a map of the input's shape per sample.

A method is one registry entry: a ``Method`` that builds the captum attribution object and the
keyword arguments of its ``attribute`` call from validated params. SmoothGrad (captum's
NoiseTunnel) is an option over any of them rather than a method of its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import torch
from torch import Tensor, nn

from engine.registry import Registry

#: SmoothGrad draws noise: seeded so a map is a pure function of its request (the cache relies on it)
SMOOTHGRAD_SEED = 0
SMOOTHGRAD_DEFAULTS = {"nt_samples": 8, "stdevs": 0.1}
BASELINES = ("black", "mean")


@dataclass(frozen=True)
class Inputs:
    """What a method may need besides the model: the samples' shape and the normalised black image."""

    shape: tuple[int, int, int]  # C, H, W
    black: Tensor  # (1, C, H, W): pixel value 0 after normalisation


@dataclass(frozen=True)
class Method:
    captum_class: str  # in captum.attr; built as cls(model), or cls(model, layer) for layer methods
    kwargs: Callable[[dict[str, Any], Inputs], dict[str, Any]]  # (params, inputs) -> attribute() kwargs
    defaults: Callable[[tuple[int, int, int]], dict[str, Any]]  # input shape -> params with defaults
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    layer: bool = False  # attributes a spot's activations (needs a spot), upsampled to the input


METHODS: Registry = Registry("attribution method")


def _captum(name: str) -> Any:
    # captum (with matplotlib) takes seconds to import: only workers that compute maps pay for it,
    # and the dashboard can list METHODS without it.
    return getattr(import_module("captum.attr"), name)


def _baseline(name: str, inputs: Inputs) -> Tensor | float:
    # "mean" is 0 in normalised units: the average training image.
    return inputs.black if name == "black" else 0.0


def _none(*_args: Any) -> dict[str, Any]:
    return {}


METHODS.register("saliency", "gradient of the target logit (absolute by default)")(Method(
    "Saliency", kwargs=lambda p, _inputs: {"abs": p["abs"]}, defaults=lambda _shape: {"abs": True}))

METHODS.register("integrated_gradients", "path integral of gradients from a baseline image (deterministic)")(Method(
    "IntegratedGradients",
    kwargs=lambda p, inputs: {"n_steps": p["n_steps"], "baselines": _baseline(p["baseline"], inputs)},
    defaults=lambda _shape: {"n_steps": 32, "baseline": "black"}, choices={"baseline": BASELINES}))

METHODS.register("input_x_gradient", "input times the gradient of the target logit")(Method(
    "InputXGradient", kwargs=_none, defaults=_none))

METHODS.register("guided_backprop", "gradient with negative signals stopped at every ReLU module")(Method(
    "GuidedBackprop", kwargs=_none, defaults=_none))

METHODS.register("layer_gradcam", "Grad-CAM at a feature-map spot, upsampled to the input")(Method(
    "LayerGradCam", kwargs=lambda p, _inputs: {"relu_attributions": p["relu"]},
    defaults=lambda _shape: {"relu": True}, layer=True))


def _occlusion_defaults(shape: tuple[int, int, int]) -> dict[str, Any]:
    # About an eighth of the side (2 px on 8x8 digits, 4 px on 32x32), half-overlapping windows.
    window = max(2, round(shape[1] / 8))
    return {"window": window, "stride": max(1, window // 2), "baseline": "black"}


def _occlusion_kwargs(p: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    channels = inputs.shape[0]
    return {"sliding_window_shapes": (channels, p["window"], p["window"]),
            "strides": (channels, p["stride"], p["stride"]),
            "baselines": _baseline(p["baseline"], inputs), "perturbations_per_eval": 16}


METHODS.register("occlusion", "drop in the target logit when a square window is greyed out")(Method(
    "Occlusion", kwargs=_occlusion_kwargs, defaults=_occlusion_defaults, choices={"baseline": BASELINES}))


# ------------------------------------------------------------------ validation
def _check_value(where: str, value: Any, default: Any, choices: tuple[str, ...] | None) -> Any:
    # bool is a subclass of int: compare exact types so `abs: 1` or `n_steps: true` are refused.
    if type(value) is not type(default) and not (type(default) is float and type(value) is int):
        raise ValueError(f"{where}: expected {type(default).__name__}, got {value!r}")
    if choices is not None and value not in choices:
        raise ValueError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    if type(default) in (int, float) and value <= 0:
        raise ValueError(f"{where}: must be positive, got {value!r}")
    return value


def resolve_params(method: str, params: dict[str, Any] | None, shape: tuple[int, int, int]) -> dict[str, Any]:
    """The method's params with defaults filled in; an unknown or bad value raises naming it."""
    if method not in METHODS:
        raise ValueError(f"method: unknown attribution method {method!r} (known: {', '.join(METHODS.names())})")
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"params: expected a mapping of {method} params, got {params!r}")
    spec: Method = METHODS.get(method)
    resolved = spec.defaults(shape)
    for name, value in (params or {}).items():
        if name not in resolved:
            raise ValueError(f"params.{name}: not a param of {method} (accepted: {', '.join(resolved) or 'none'})")
        resolved[name] = _check_value(f"params.{name}", value, resolved[name], spec.choices.get(name))
    return resolved


def resolve_smoothgrad(value: Any) -> dict[str, Any] | None:
    """None when off; else {"nt_samples", "stdevs"} (noise std in normalised input units)."""
    if value is None or value is False:
        return None
    if value is True:
        return dict(SMOOTHGRAD_DEFAULTS)
    if not isinstance(value, dict):
        raise ValueError(f"smoothgrad: expected false, true or {{nt_samples, stdevs}}, got {value!r}")
    resolved = dict(SMOOTHGRAD_DEFAULTS)
    for name, given in value.items():
        if name not in resolved:
            raise ValueError(f"smoothgrad.{name}: unknown (accepted: {', '.join(SMOOTHGRAD_DEFAULTS)})")
        resolved[name] = _check_value(f"smoothgrad.{name}", given, resolved[name], None)
    return resolved


# ------------------------------------------------------------------ computing maps
def attribution_maps(model: nn.Module, x: Tensor, target: Tensor, method: str, params: dict[str, Any],
                     inputs: Inputs, smoothgrad: dict[str, Any] | None = None, layer: nn.Module | None = None
                     ) -> Tensor:
    """Maps (N, C, H, W) of the `target` logit of a plain eval-mode model for the batch `x`, on the CPU.

    `params` and `smoothgrad` are resolved (see resolve_params / resolve_smoothgrad); `layer` is the
    module of the spot for layer methods.
    """
    spec: Method = METHODS.get(method)
    if spec.layer and layer is None:
        raise ValueError(f"method {method}: needs a spot (a feature-map layer) to attribute")
    cls = _captum(spec.captum_class)
    attribution = cls(model, layer) if spec.layer else cls(model)
    kwargs = spec.kwargs(params, inputs)
    # The seed below must not change what the rest of the process draws next.
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.device.type == "cuda" else []):
        if smoothgrad is not None:
            torch.manual_seed(SMOOTHGRAD_SEED)
            attribution = _captum("NoiseTunnel")(attribution)
            kwargs = {**kwargs, "nt_type": "smoothgrad", **smoothgrad}
        maps = attribution.attribute(x.clone().requires_grad_(True), target=target, **kwargs)
    if spec.layer:  # one spatial map per sample, the same on every channel
        maps = _captum("LayerAttribution").interpolate(maps, tuple(x.shape[2:]), interpolate_mode="bilinear")
        maps = maps.expand(-1, x.shape[1], -1, -1)
    return maps.detach().float().cpu().contiguous()
