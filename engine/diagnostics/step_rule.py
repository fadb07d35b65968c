"""What the optimizer's next step would do with a given gradient, read from its state and changing nothing.

The negative-transfer probe measures each path's share of a real update, so the share has to go through
the optimizer's own step rule: with momentum SGD a gradient g moves the parameters by -lr * g (times
1 + momentum with Nesterov), with Adam by a per-coordinate rescaled version of it. ``StepRule.update``
reproduces torch's SGD, Adam and AdamW steps (the optimizers a spec can name) as a pure function of the
gradient; ``tests/test_effect_probe.py`` checks it against ``optimizer.step()``.
"""
from __future__ import annotations

import math

import torch


class StepRule:
    """The parameter change ``optimizer.step()`` would make to ``params`` for a flat gradient over them."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
        group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        missing = [i for i, p in enumerate(params) if id(p) not in group_of]
        if missing:
            raise ValueError(f"{len(missing)} probed parameters are not trained by the optimizer")
        self.params = params
        self.groups = [group_of[id(p)] for p in params]
        self.states = [optimizer.state.get(p, {}) for p in params]
        self.kind = type(optimizer).__name__
        if self.kind not in ("SGD", "Adam", "AdamW"):
            raise ValueError(f"the probe knows the step rules of SGD, Adam and AdamW, not {self.kind}")

    def update(self, flat_grad: torch.Tensor) -> torch.Tensor:
        """The flat parameter change of a step taken with this gradient (the optimizer's state is only read)."""
        pieces, offset = [], 0
        for param, group, state in zip(self.params, self.groups, self.states):
            size = param.numel()
            grad = flat_grad[offset:offset + size].view_as(param).to(param.dtype)
            offset += size
            change = (_sgd(param.detach(), grad, group, state) if self.kind == "SGD"
                      else _adam(param.detach(), grad, group, state, decoupled=self.kind == "AdamW"))
            pieces.append(change.reshape(-1))
        return torch.cat(pieces)


def _sgd(param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
    direction = grad + group["weight_decay"] * param if group["weight_decay"] else grad
    momentum = group["momentum"]
    if momentum:
        previous = state.get("momentum_buffer")
        buffer = direction if previous is None else momentum * previous + (1 - group["dampening"]) * direction
        direction = direction + momentum * buffer if group["nesterov"] else buffer
    return -group["lr"] * direction


def _adam(param: torch.Tensor, grad: torch.Tensor, group: dict, state: dict, decoupled: bool) -> torch.Tensor:
    lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    change = torch.zeros_like(param)
    if decay and decoupled:  # AdamW shrinks the weights apart from the gradient
        change = change - lr * decay * param
    elif decay:
        grad = grad + decay * param
    step = float(state["step"]) + 1 if "step" in state else 1.0
    first = beta1 * state["exp_avg"] + (1 - beta1) * grad if "exp_avg" in state else (1 - beta1) * grad
    second = (beta2 * state["exp_avg_sq"] + (1 - beta2) * grad * grad if "exp_avg_sq" in state
              else (1 - beta2) * grad * grad)
    denominator = second.sqrt() / math.sqrt(1 - beta2 ** step) + eps
    return change - (lr / (1 - beta1 ** step)) * first / denominator
