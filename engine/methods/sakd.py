"""Song, Chen, Ye & Song, IEEE TIP 2022: spot-adaptive KD (reference code: zju-vipa/spot-adaptive-pytorch).

A policy decides, per sample and per step, at which spots of the run's one teacher to distil.
It learns only through a routed network: teacher and student segments interleaved at the spots,
a sample's stream taking the teacher segment ending at spot l when a_bl = 1 and the student's
otherwise, with adapters converting the stream when it changes sides. The student is then
distilled at spot l on exactly the samples routed to the teacher there:

    L = CE(z_s, y) + sum_k w_k (n_l(k) / B) D_k(f_s[S_l], f_t[S_l]),  S_l = samples routed to the teacher at l

w_k is path k's configured weight (the paper's alpha for the output spot, beta for the others). Each path's
term ``path:<id>`` is (n_l(k) / B) D_k(...): the routed share n_l / B is inside the value (and in the
telemetry's decisions), so the logged weight of a path is its configured w_k, its base weight.

The agent (policy + adapters) is a part with its own Adam optimizer (``sakd/agent``, see ``learners()``),
stepped by the loop before the student's backward, on l_r = CE(z_route, y) scaled by gamma (x gamma when
worse than the student's own CE, / gamma when better) plus max(0, B/2 - sum_b a_bL). terms() draws the
step's decisions through the agent, which keeps them under the step's number for its own update.
Params: gamma (2.0, the reference's AT configs; its FitNet configs use 1.0 = no scaling),
lr (1e-3) and weight_decay (1e-3, the reference's agent decay) of the agent optimizer,
tau (5.0, Gumbel temperature), same_family (None: auto, the two archs share a family prefix),
route_teacher (None: the teacher distilled at the output). The paper routes through one teacher;
with several, the routed network uses route_teacher's blocks, other teachers' paths at a routed
student spot follow that spot's decisions, and paths at other spots apply to the whole batch.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engine.methods.base import PathMethod
from engine.methods.registry import METHODS
from engine.models.segments import Segments, cut_at_spots
from engine.ops import resize_to
from engine.params import Params
from engine.paths.base import split_spot
from engine.step import PathRoute, StepContext
from engine.terms import OwnLearner
from engine.vocabulary import LOGITS_SPOT, POOL_SPOT, ROUTING_VIEW, TASK, TelemetryArray, TelemetryPanel, path_key

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner

OUTPUT = LOGITS_SPOT
#: what the Teacher importance page draws from this method (engine.vocabulary)
TELEMETRY = TelemetryPanel(
    title="SAKD · where each sample is distilled",
    caption="Per sample and spot, the policy routes the sample through the teacher's block (distilled) "
            "or the student's own block.",
    view=ROUTING_VIEW,
    when="every `telemetry_every` steps while the student trains",
    arrays=(
        TelemetryArray("decisions", "sakd/decisions", ("sample", "spot"),
                       "1 where the sample is routed through the teacher's block at that spot (distilled), else 0"),
        TelemetryArray("losses", "sakd/agent_losses", ("step", "loss"),
                       "the routed network's CE (l_route) and the student's own CE (l_student)"),
    ),
)
POOL = POOL_SPOT
DISTIL = 1  # index of the "distil" decision on the policy's last axis
SAME_FAMILY_BIAS = 10.0  # the reference's start for homogeneous pairs: distil nearly everywhere
MIN_SUBSET = 2  # relational distillers (rkd, sp, pkt, cc) and BN layers need two samples
_NOISE_SALT = 7_919  # keeps the decision noise apart from other step-seeded generators
#: the agent's parts, which a checkpoint from before the split (the SAKD aggregator) kept at its top level
_LEGACY_AGENT_PARTS = ("to_teacher.", "to_student.", "policy.")


@dataclass
class _Routing:
    """The routed network's fixed parts; kept off the module tree (the models own these weights)."""

    teacher_id: str
    spots: list[str]  # student spots in routing order, the last one "fc"
    spot_of_path: dict[str, int]
    student: Segments
    teacher: Segments
    student_model: nn.Module


@dataclass
class _Decisions:
    step: int  # the step they were drawn for: the agent's update must use that step's
    routed: torch.Tensor  # (B, L) exactly 0/1, straight-through: carries the policy's gradient


def _adapter(source: tuple[int, ...], target: tuple[int, ...]) -> nn.Module:
    """Maps one side's stream at a spot onto the other side's shape."""
    if len(source) == 3:
        return _MapAdapter(source[0], target)
    return nn.Sequential(nn.Linear(source[0], target[0]), nn.BatchNorm1d(target[0]), nn.ReLU())


class _MapAdapter(nn.Module):
    """Resize to the target's H x W, then conv 1x1 + BN + ReLU onto its channels."""

    def __init__(self, in_channels: int, target: tuple[int, ...]) -> None:
        super().__init__()
        self.size = tuple(target[1:])
        self.body = nn.Sequential(nn.Conv2d(in_channels, target[0], 1, bias=False), nn.BatchNorm2d(target[0]),
                                  nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(resize_to(x, self.size))


def arch_family(arch: str) -> str:
    """The name before depth, width or version: resnet20, resnet32x4 and resnet18 -> 'resnet';
    wrn_40_2 -> 'wrn'; mobilenetv2 and mobilenet_v3_small -> 'mobilenet'.
    """
    prefix = re.match(r"[a-z]+?(?=v?[\d_]|$)", arch.lower())
    return prefix.group(0) if prefix else arch


def gumbel_decisions(logits: torch.Tensor, tau: float, generator: torch.Generator) -> torch.Tensor:
    """Hard straight-through Gumbel-softmax over the last axis: one-hot forward, softmax gradient."""
    uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1 - 1e-10).to(logits.device)
    soft = F.softmax((logits - torch.log(-torch.log(uniform))) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run a module in eval mode and restore each submodule's own mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def routing_teacher(path_spots: dict[str, PathRoute], chosen: str | None) -> str:
    """The teacher whose blocks the routed network uses: `chosen`, else the one distilled at the output."""
    teachers = list(dict.fromkeys(tid for tid, _, _ in path_spots.values()))
    if not teachers:
        raise ValueError("sakd needs at least one path")
    if chosen is not None:
        if chosen not in teachers:
            raise ValueError(f"route_teacher {chosen!r} has no path (teachers with paths: {', '.join(teachers)})")
        return chosen
    at_output = [tid for tid, _, s_spot in path_spots.values() if s_spot == OUTPUT]
    return at_output[0] if at_output else teachers[0]


def _cut(learner: "Learner", tid: str, student_spot: dict[str, str], teacher_spot: dict[str, str]) -> _Routing:
    """Both models as chains of segments at the paired spots, in the student's model order.

    Paths of other teachers whose student spot is routed are masked by that spot's decisions too.
    """
    student, teacher = learner.student, learner.teachers[tid].model
    s_segments = cut_at_spots(student.model, student.arch, list(teacher_spot))
    t_segments = cut_at_spots(teacher.model, teacher.arch, list(teacher_spot.values()))
    order = s_segments.names
    paired = [teacher_spot[s] for s in order[:-1]]
    if t_segments.names[:-1] != paired:
        raise ValueError(f"sakd routes spot by spot, so the teacher spots must follow the student spots' order: "
                         f"student {order[:-1]} pair with teacher {paired}")
    t_segments.eval()
    spot_of_path = {pid: order.index(s_spot) for pid, (_, _, s_spot) in learner.path_spots.items() if s_spot in order}
    return _Routing(tid, order, spot_of_path, s_segments, t_segments, student.model)


class SpotAdaptiveParams(Params):
    gamma: float = Field(2.0, ge=1, description="scale of the agent's routing loss when worse or better than the student's CE")
    lr: float = Field(1e-3, gt=0, description="learning rate of the agent's Adam (policy and adapters)")
    weight_decay: float = Field(1e-3, ge=0, description="weight decay of the agent's Adam")
    tau: float = Field(5.0, gt=0, description="temperature of the Gumbel-softmax routing")
    same_family: bool | None = Field(None, description="teacher and student share a family (null: guessed from the names)")
    route_teacher: str | None = Field(None, description="teacher id whose blocks route (null: the one distilled at the output)")


class SpotAgent(OwnLearner):
    """The policy and the adapters, trained on their own Adam through the routed network only."""

    name = "sakd/agent"

    def __init__(self, routing: _Routing, pairs: list[tuple[tuple[int, ...], tuple[int, ...]]], policy_inputs: int,
                 same_family: bool, params: SpotAdaptiveParams) -> None:
        """pairs: (student shape, teacher shape) at each routed spot before the output."""
        super().__init__()
        self.routing = routing
        self.gamma, self.tau = float(params.gamma), float(params.tau)
        # registered in the SAKD aggregator's order, so a checkpoint from before the split fits the optimizer
        self.to_teacher = nn.ModuleList(_adapter(s_shape, t_shape) for s_shape, t_shape in pairs)
        self.to_student = nn.ModuleList(_adapter(t_shape, s_shape) for s_shape, t_shape in pairs)
        self.policy = nn.Linear(policy_inputs, 2 * len(routing.spots))
        if same_family:
            with torch.no_grad():
                self.policy.bias.view(len(routing.spots), 2)[:, DISTIL] += SAME_FAMILY_BIAS
        self.optimizer = torch.optim.Adam(self.parameters(), lr=float(params.lr), weight_decay=float(params.weight_decay))
        self.decisions: _Decisions | None = None  # the last step's, drawn by decide()

    def decide(self, ctx: StepContext) -> torch.Tensor:
        """(B, L) decisions a_bl from the pooled (detached) teacher and student embeddings, kept for step()."""
        routing = self.routing
        h_t = ctx.teacher_taps[routing.teacher_id][POOL].detach().flatten(1)
        h_s = ctx.student_taps[POOL].detach().flatten(1)
        logits = self.policy(torch.cat([h_t, h_s], dim=1)).view(len(h_s), len(routing.spots), 2)
        generator = torch.Generator().manual_seed(_NOISE_SALT + ctx.step)
        routed = gumbel_decisions(logits, self.tau, generator)[..., DISTIL]
        self.decisions = _Decisions(ctx.step, routed)
        return routed

    def step(self, values: dict[str, torch.Tensor], ctx: StepContext) -> None:
        """One update of the policy and adapters on the routed network's loss.

        A one-sample batch (a ragged last batch) skips the agent: its BN adapters need two samples.
        """
        if len(ctx.labels) < MIN_SUBSET:
            return
        decisions = self._decisions_of(ctx.step)
        agent_loss = self.loss(ctx, decisions.routed, values[TASK].detach())
        params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        agent_loss.backward(inputs=params)  # only the agent's parameters collect this gradient
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _decisions_of(self, step: int) -> _Decisions:
        if self.decisions is None or self.decisions.step != step:
            drawn = "none" if self.decisions is None else f"step {self.decisions.step}'s"
            raise RuntimeError(f"sakd/agent: no decisions for step {step} ({drawn} were drawn); "
                               f"the method's terms() must run for a step before the agent's update")
        return self.decisions

    def loss(self, ctx: StepContext, routed: torch.Tensor, student_ce: torch.Tensor) -> torch.Tensor:
        """gamma-scaled CE of the routed logits plus max(0, B/2 - sum_b a_bL); records both CEs."""
        route_ce = F.cross_entropy(self.route(ctx.x, routed), ctx.labels)
        ctx.telemetry.record(TELEMETRY.array("losses").key, torch.stack([route_ce.detach(), student_ce]).view(1, 2),
                             torch.tensor([-1]), columns=["l_route", "l_student"])
        if route_ce > student_ce:
            scaled = route_ce * self.gamma
        elif route_ce < student_ce:
            scaled = route_ce / self.gamma
        else:
            scaled = route_ce
        # Without this floor the agent could send every sample through the student's output segment,
        # and KD at the output would vanish.
        floor = torch.clamp(routed.shape[0] / 2 - routed[:, -1].sum(), min=0)
        return scaled + floor

    def route(self, x: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
        """Routed logits: at spot l each sample takes the teacher segment if a_bl = 1, else the student's.

        Both segments run on the whole batch and the straight-through mask selects, so the policy
        gets gradient; the student runs in eval mode (as in the reference) so its BN statistics
        only see real student streams.
        """
        routing = self.routing
        h_s = h_t = x
        last = len(routing.spots) - 1
        with _eval_mode(routing.student_model):
            for l in range(last):
                s_out, t_out = routing.student.pieces[l](h_s), routing.teacher.pieces[l](h_t)
                a = routed[:, l].reshape(-1, *([1] * (s_out.dim() - 1)))
                h_t = a * t_out + (1 - a) * self.to_teacher[l](s_out)
                h_s = a * self.to_student[l](t_out) + (1 - a) * s_out
            a = routed[:, last:]
            return a * routing.teacher.pieces[last](h_t) + (1 - a) * routing.student.pieces[last](h_s)


@METHODS.register("sakd", "spot-adaptive KD: a Gumbel policy picks per sample the spots to distil")
class SpotAdaptive(PathMethod):
    """Each path's distiller on the samples routed to the teacher at its spot, times n_l / B (see the module)."""

    telemetry = TELEMETRY
    needs_live_teachers = True  # the routed network runs the teacher's segments on the step's batch
    params_model = SpotAdaptiveParams
    name = "sakd"

    def __init__(self, path_ids: list[str], path_weights: dict[str, float], distiller_names: dict[str, str],
                 **params: Any) -> None:
        super().__init__(path_ids, path_weights, distiller_names, **params)
        self.routing: _Routing | None = None
        self.agent: SpotAgent | None = None
        self._register_load_state_dict_pre_hook(_move_legacy_agent_state)

    # ------------------------------------------------------------ set-up
    def wanted_spots(self, teacher_ids: list[str], path_spots: dict[str, PathRoute]
                     ) -> tuple[set[str], dict[str, set[str]]]:
        """The policy reads both pooled embeddings; raising here stops an unroutable run before any work."""
        tid = routing_teacher(path_spots, self.params.route_teacher)
        self._spot_pairs(path_spots, tid)
        return {POOL}, {tid: {POOL}}

    def attach(self, learner: "Learner") -> None:
        tid = routing_teacher(learner.path_spots, self.params.route_teacher)
        student_spot, teacher_spot = self._spot_pairs(learner.path_spots, tid)
        self.routing = _cut(learner, tid, student_spot, teacher_spot)
        spots = self.routing.spots
        s_shapes, t_shapes = learner.shapes.student, learner.shapes.teachers[tid]
        pairs = [(s_shapes[s], t_shapes[teacher_spot[s]]) for s in spots[:-1]]
        for s, (s_shape, t_shape) in zip(spots, pairs):
            if len(s_shape) != len(t_shape) or len(s_shape) not in (1, 3):
                raise ValueError(f"sakd routes between two feature maps or two embeddings, but student {s!r} "
                                 f"is {s_shape} and teacher {teacher_spot[s]!r} is {t_shape}")
        same = self.params.same_family
        if same is None:
            same = arch_family(learner.student.arch) == arch_family(learner.teachers[tid].model.arch)
        self.agent = SpotAgent(self.routing, pairs, _numel(t_shapes[POOL]) + _numel(s_shapes[POOL]), same,
                               self.params)

    def _spot_pairs(self, path_spots: dict[str, PathRoute], tid: str
                    ) -> tuple[dict[str, str], dict[str, str]]:
        """The routing teacher's (path id -> student spot, intermediate student spot -> its teacher spot)."""
        student_spot, teacher_spot = {}, {}
        for pid in self.path_ids:
            path_teacher, t_spot, s_spot = path_spots[pid]
            if path_teacher != tid:
                continue
            if len(split_spot(s_spot)) > 1 or len(split_spot(t_spot)) > 1:
                raise ValueError(f"sakd routes at single spots, but path {pid} reads {s_spot!r} <- {t_spot!r}")
            if (s_spot == OUTPUT) != (t_spot == OUTPUT):
                raise ValueError(f"sakd pairs the output spot with the output spot, but path {pid} "
                                 f"reads student {s_spot!r} <- teacher {t_spot!r}")
            student_spot[pid] = s_spot
            if s_spot == OUTPUT:
                continue
            if teacher_spot.setdefault(s_spot, t_spot) != t_spot:
                raise ValueError(f"sakd needs one teacher spot per student spot, but {s_spot!r} "
                                 f"reads both {teacher_spot[s_spot]!r} and {t_spot!r}")
        doubled = sorted({t for t in teacher_spot.values() if list(teacher_spot.values()).count(t) > 1})
        if doubled:
            raise ValueError(f"sakd needs one student spot per teacher spot, but {doubled} feed several")
        return student_spot, teacher_spot

    def learners(self) -> list[OwnLearner]:
        return [self._attached()[1]]

    # ------------------------------------------------------------ step
    def terms(self, learner: "Learner", ctx: StepContext) -> dict[str, torch.Tensor]:
        """Each path's distiller on the samples routed to the teacher at its spot, times n_l / B."""
        routing, agent = self._attached()
        routed = agent.decide(ctx)
        chosen = routed.detach() > 0.5  # the student loss must not reach the policy
        batch = chosen.shape[0]
        ctx.telemetry.record(TELEMETRY.array("decisions").key, routed.detach(), ctx.index, columns=routing.spots)
        values = {}
        for pid in self.path_ids:
            if pid not in routing.spot_of_path:  # another teacher's path at a spot nobody routes
                values[path_key(pid)] = learner.path_loss(pid, ctx.student_taps, ctx.teacher_taps, ctx)
                continue
            samples = chosen[:, routing.spot_of_path[pid]].nonzero().squeeze(1)
            if len(samples) < MIN_SUBSET:
                values[path_key(pid)] = ctx.labels.new_zeros((), dtype=torch.float32)
                continue
            values[path_key(pid)] = self._subset_loss(learner, pid, ctx, samples) * (len(samples) / batch)
        return values

    def _subset_loss(self, learner: "Learner", pid: str, ctx: StepContext, samples: torch.Tensor) -> torch.Tensor:
        tid, t_spot, s_spot = learner.path_spots[pid]
        sub = replace(ctx, labels=ctx.labels[samples], index=ctx.index[samples.to(ctx.index.device)],
                      x=None if ctx.x is None else ctx.x[samples],
                      student_taps={s_spot: ctx.student_taps[s_spot][samples]},
                      teacher_taps={tid: {t_spot: ctx.teacher_taps[tid][t_spot][samples]}})
        return learner.path_loss(pid, sub.student_taps, sub.teacher_taps, sub)

    def _attached(self) -> tuple[_Routing, SpotAgent]:
        if self.routing is None or self.agent is None:
            raise RuntimeError("sakd: attach(learner) must run before training steps")
        return self.routing, self.agent


def _move_legacy_agent_state(state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """A checkpoint from before the split kept the agent's parts and optimizer on the SAKD aggregator
    itself: move them under ``agent.`` so such a run resumes."""
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].startswith(_LEGACY_AGENT_PARTS)]:
        state_dict[f"{prefix}agent.{key[len(prefix):]}"] = state_dict.pop(key)
    legacy = state_dict.pop(f"{prefix}_extra_state", None)
    if legacy is not None:
        state_dict[f"{prefix}agent._extra_state"] = {"optimizer": legacy.get("agent_optimizer")}


def _numel(shape: tuple[int, ...]) -> int:
    return int(torch.Size(shape).numel())
