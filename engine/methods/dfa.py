"""DFA, differentiable feature aggregation search (Guan et al., ECCV 2020; METHODS.md section 3).

Each feature-map path (teacher spot -> student spot) is a layer group i. Its teacher maps T_ij are the
outputs of the blocks of the teacher stage the path reads (resnet "layer2" -> layer2.0 ... layer2.(n-1));
a stage without blocks (small_cnn, vgg: plain conv/BN/ReLU layers) has the single map it already had.
The path's distiller is shown not the stage output but the convex mix

    A_i = sum_j alpha_ij T_ij,   alpha_i = softmax(b_i)   (b_i = 0 at first: uniform)

Stage 1 (``prepare``) searches b on a throw-away copy of the student, DARTS-style: a weight step (student
copy + 1x1 connectors) on a training batch, then a b step on a held-out batch, both on the bridge loss
L_bridge = g_TS CE(rest_of_student_i(C_TS(A_i)), y) + g_ST ||C_ST(S_i) - A_i||^2 summed over groups.
Stage 2 trains the real student with CE + lam * sum_k w_k d_k(F_t(A_i), F_s(S_i)) under the frozen alpha;
paths that are not single feature maps (logits, embeddings, stage pairs) pass unchanged. Each path is one
term ``path:<id>`` whose base weight is lam x its configured weight w_k (what the "fixed" weighting uses).

b is a parameter of this module (saved with the checkpoint) that only the search trains: it is frozen
(requires_grad off) once ``prepare`` is done, so the student's optimizer never holds it. ``prepare`` runs
before ``fit`` loads a checkpoint, so a resumed run cannot know it already searched: it searches again.
The search is seeded by the ``seed`` param alone and starts from the student's seeded initial weights,
so it finds the same b, which the checkpoint then overwrites with identical values.
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor
from pydantic import Field

from engine.data.bundle import Split, iterate_batches
from engine.methods.base import PathMethod
from engine.methods.registry import METHODS
from engine.models.segments import Segments, cut_at_spots
from engine.models.spots import TappedModel
from engine.ops import resize_to
from engine.params import Params
from engine.step import StepContext
from engine.telemetry import Recorded
from engine.terms import TermInfo
from engine.vocabulary import (
    GROUP_HEATMAPS_VIEW, SEARCH_PHASE, TelemetryArray, TelemetryMetric, TelemetryPanel, path_key,
)

if TYPE_CHECKING:
    from engine.data.bundle import DataBundle
    from engine.step import LearnerView as Learner, Reporter

#: what the Teacher importance page draws from this method (engine.vocabulary)
TELEMETRY = TelemetryPanel(
    title="DFA · feature aggregation search",
    caption="Within each layer group the student learns from a mix of all teacher blocks, "
            "weighted by α = softmax(b); the search tunes b on the bridge loss.",
    view=GROUP_HEATMAPS_VIEW,
    when="once per search epoch, before the student trains",
    arrays=(
        TelemetryArray("alpha", "dfa/alpha:", ("step", "teacher block"),
                       "α of each teacher block in the layer group (a row sums to 1)",
                       phase=SEARCH_PHASE, per_group=True),
    ),
    metrics=(
        TelemetryMetric("entropy", "dfa/entropy:", "entropy of the group's α (nats)", SEARCH_PHASE, per_group=True),
        TelemetryMetric("loss_ts", "dfa/loss_ts", "bridge loss teacher → student", SEARCH_PHASE),
        TelemetryMetric("loss_st", "dfa/loss_st", "bridge loss student → teacher", SEARCH_PHASE),
    ),
)

# ================================================================== UNCONFIRMED (METHODS.md section 3)
# DFA has no public code. Every choice below is a reconstruction; correct them here.
# - b's optimizer: Adam, lr 3e-4, weight decay 1e-3, betas (0.5, 0.999): DARTS' architecture optimizer.
DEFAULT_B_LR = 3e-4
DEFAULT_B_WEIGHT_DECAY = 1e-3
B_BETAS = (0.5, 0.999)
# - the weight step: SGD lr 0.025, momentum 0.9, weight decay 3e-4 (DARTS' weight optimizer).
DEFAULT_W_LR = 0.025
W_MOMENTUM = 0.9
W_WEIGHT_DECAY = 3e-4
# - bridge gains g_TS = g_ST = 1; stage-2 lambda = 1 (multiplies each path's configured weight).
DEFAULT_G_TS = DEFAULT_G_ST = 1.0
DEFAULT_LAM = 1.0
# - search length and batch: 2 epochs of the training split, batches of 64; the alternation is
#   first-order (no unrolled weight step inside the b gradient), and the search draws no augmentation.
DEFAULT_SEARCH_EPOCHS = 2
DEFAULT_BATCH_SIZE = 64
# - both losses sum over groups; the weight step uses L_bridge only (no CE on the copy's own logits).
# - a group's candidate maps: the composite children ("blocks") of a Sequential stage (through
#   single-child Sequential wrappers, as wrn's ".layer"), plus the stage output when the last child is
#   not a block; only maps of the stage output's exact shape (C, H, W) are kept, since a convex mix
#   needs one shape and channels cannot be resized. In the zoo every block of a stage has that shape.


def connector(c_in: int, c_out: int) -> nn.Module:
    """C_TS / C_ST: a plain 1x1 conv with bias (no BN)."""
    return nn.Conv2d(c_in, c_out, 1)


def student_to_teacher_loss(predicted: Tensor, mixed: Tensor) -> Tensor:
    """L_ST = ||C_ST(S_i) - A_i||^2, as a mean over elements so it does not grow with map size."""
    return F.mse_loss(predicted, mixed)
# ================================================================== end of unconfirmed choices


@dataclass
class LayerGroup:
    """One feature-map path's teacher maps and where its student side sits."""

    path_id: str
    teacher_id: str
    teacher_spot: str
    student_spot: str
    teacher_shape: tuple[int, ...]
    student_shape: tuple[int, ...]
    candidates: list[str]  # teacher node names found in the stage, in model order
    maps: list[str] = field(default_factory=list)  # the candidates kept by shape (set in prepare)
    label: str = ""  # the name in logged keys: the student spot, "@<path id>" added when it is shared


def stage_blocks(model: nn.Module, node: str) -> list[str]:
    """Node names of the blocks of the stage at `node`, in order, ending at the stage's output."""
    try:
        stage = model.get_submodule(node)
    except AttributeError:  # a function node (cifar resnet's F.relu stem): one map
        return [node]
    prefix = node
    while isinstance(stage, nn.Sequential) and len(stage) == 1 and isinstance(stage[0], nn.Sequential):
        (name, stage), = stage.named_children()
        prefix = f"{prefix}.{name}"
    if not isinstance(stage, nn.Sequential):
        return [node]
    children = list(stage.named_children())
    blocks = [f"{prefix}.{name}" for name, child in children if next(child.children(), None) is not None]
    if not blocks or blocks[-1] != f"{prefix}.{children[-1][0]}":
        blocks.append(node)  # the stage output must stay a candidate: it is the plain path's target
    return blocks


def entropy(alpha: Tensor) -> float:
    return float(-(alpha * alpha.clamp_min(1e-12).log()).sum())


class DFAParams(Params):
    search_epochs: int = Field(DEFAULT_SEARCH_EPOCHS, ge=0, description="epochs of the alpha search (0: uniform mix, no search)")
    b_lr: float = Field(DEFAULT_B_LR, gt=0, description="learning rate of the search's Adam on the mix logits b")
    b_weight_decay: float = Field(DEFAULT_B_WEIGHT_DECAY, ge=0, description="weight decay of that Adam")
    w_lr: float = Field(DEFAULT_W_LR, gt=0, description="learning rate of the search's SGD on the student copy")
    g_ts: float = Field(DEFAULT_G_TS, ge=0, description="gain of the teacher-to-student bridge loss")
    g_st: float = Field(DEFAULT_G_ST, ge=0, description="gain of the student-to-teacher bridge loss")
    lam: float = Field(DEFAULT_LAM, ge=0, description="lambda: multiplies each path's configured weight in training")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="batch size of the search")
    seed: int = Field(0, ge=0, description="seed of the search's batches and connectors")


@METHODS.register("dfa", "DFA: distil a searched softmax mix of each teacher stage's block outputs (2 stages)")
class DFA(PathMethod):
    telemetry = TELEMETRY

    # Block outputs are not spots, so no tap cache holds them: the mix needs the teacher's live forward.
    needs_live_teachers = True

    params_model = DFAParams
    name = "dfa"

    def __init__(self, path_ids: list[str], path_weights: dict[str, float], distiller_names: dict[str, str],
                 **params: Any) -> None:
        """search_epochs 0 keeps alpha uniform (the plain mix, no search)."""
        super().__init__(path_ids, path_weights, distiller_names, **params)
        p = self.params
        self.search_epochs = p.search_epochs
        self.b_lr, self.b_weight_decay, self.w_lr = float(p.b_lr), float(p.b_weight_decay), float(p.w_lr)
        self.g_ts, self.g_st, self.lam = float(p.g_ts), float(p.g_st), float(p.lam)
        self.batch_size = p.batch_size
        self.seed = p.seed
        self.b = nn.ParameterList()  # one logit vector per group, sized in prepare(); trained by the search only
        self.register_buffer("searched", torch.zeros((), dtype=torch.bool))
        self.groups: list[LayerGroup] = []
        # Teacher id -> extractor of its blocks' outputs; a plain dict keeps the frozen teacher's
        # weights out of this module's state_dict (as TappedModel keeps its extractor out).
        self.extractors: dict[str, nn.Module] = {}

    # ------------------------------------------------------------ set-up
    def attach(self, learner: "Learner") -> None:
        for pid in self.path_ids:
            tid, t_spot, s_spot = learner.path_spots[pid]
            t_shape = learner.shapes.teachers.get(tid, {}).get(t_spot)  # compound spots are not keys: skipped
            s_shape = learner.shapes.student.get(s_spot)
            if t_shape is None or s_shape is None or len(t_shape) != 3 or len(s_shape) != 3:
                continue
            tapped = learner.teachers[tid].model
            blocks = stage_blocks(tapped.model, tapped.spots[t_spot])
            self.groups.append(LayerGroup(pid, tid, t_spot, s_spot, tuple(t_shape), tuple(s_shape), blocks))
        uses = Counter(g.student_spot for g in self.groups)
        for g in self.groups:
            g.label = f"{g.student_spot}@{g.path_id}" if uses[g.student_spot] > 1 else g.student_spot
        for tid in dict.fromkeys(g.teacher_id for g in self.groups):
            nodes = sorted({n for g in self.groups if g.teacher_id == tid for n in g.candidates})
            extractor = create_feature_extractor(learner.teachers[tid].model.model, return_nodes=nodes)
            self.extractors[tid] = extractor.eval()

    def term_infos(self, learner: "Learner") -> list[TermInfo]:
        """One term per path, at lam x its configured weight."""
        return [self.path_term(pid, self.lam * self.path_weights[pid]) for pid in self.path_ids]

    def prepare(self, learner: "Learner", bundle: "DataBundle", device: torch.device, reporter: "Reporter") -> None:
        if bool(self.searched):
            return
        self._keep_same_shape_maps(bundle.input_shape, device)
        if not any(len(g.maps) > 1 for g in self.groups):
            reporter.event("info", "dfa: no layer group has more than one teacher map (alpha = [1]); nothing to search")
        elif self.search_epochs == 0:
            reporter.event("info", "dfa: search_epochs is 0, distilling the uniform mix of each group's maps")
        else:
            if len(bundle.val) == 0:
                raise ValueError("dfa: the alpha search needs held-out batches: set dataset.val_fraction > 0")
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(self.seed)  # the copy's connectors and any dropout; the run's RNG is untouched
                BridgeSearch(self, learner, device).run(bundle, reporter)
            self._report_alphas(reporter)
        self.searched.fill_(True)
        self.b.requires_grad_(False)  # stage 2 keeps alpha: b stays out of the student's optimizer

    def _keep_same_shape_maps(self, input_shape: tuple[int, int, int], device: torch.device) -> None:
        """Probe the block shapes with a dummy batch; size b by the maps that can be mixed."""
        with torch.no_grad():
            probe = torch.zeros(2, *input_shape, device=device)
            shapes = {tid: {n: tuple(t.shape[1:]) for n, t in ex(probe).items()} for tid, ex in self.extractors.items()}
        self.b = nn.ParameterList()
        for g in self.groups:
            g.maps = [n for n in g.candidates if shapes[g.teacher_id][n] == g.teacher_shape]
            self.b.append(nn.Parameter(torch.zeros(len(g.maps), device=device)))

    def _report_alphas(self, reporter: "Reporter") -> None:
        alphas = {g.label: dict(zip(g.maps, self.alpha(i).detach().tolist())) for i, g in enumerate(self.groups)}
        text = "; ".join(f"{label}: " + ", ".join(f"{n} {a:.3f}" for n, a in mix.items())
                         for label, mix in alphas.items())
        reporter.event("info", f"dfa: searched alpha {text}", {"alpha": alphas})

    # ------------------------------------------------------------ the mix
    def alpha(self, i: int) -> Tensor:
        return torch.softmax(self.b[i], dim=0)

    def block_maps(self, x: Tensor, teacher_ids: set[str]) -> dict[str, dict[str, Tensor]]:
        with torch.no_grad():
            return {tid: self.extractors[tid](x) for tid in teacher_ids}

    def mix(self, i: int, maps: dict[str, Tensor]) -> Tensor:
        """A_i = sum_j alpha_ij T_ij (differentiable in b)."""
        stacked = torch.stack([maps[n] for n in self.groups[i].maps])
        return torch.tensordot(self.alpha(i), stacked, dims=1)

    # ------------------------------------------------------------ stage 2
    def terms(self, learner: "Learner", ctx: StepContext) -> dict[str, Tensor]:
        if len(self.b) != len(self.groups):
            raise RuntimeError("dfa: prepare() must run before training (it sizes and searches alpha)")
        mixed_groups = {g.path_id: i for i, g in enumerate(self.groups) if len(g.maps) > 1}
        maps = self.block_maps(ctx.x, {self.groups[i].teacher_id for i in mixed_groups.values()})
        losses = {}
        for pid in self.path_ids:
            teacher_taps = ctx.teacher_taps
            if pid in mixed_groups:
                g = self.groups[mixed_groups[pid]]
                mixed = self.mix(mixed_groups[pid], maps[g.teacher_id]).detach()  # alpha is frozen in stage 2
                teacher_taps = {**teacher_taps, g.teacher_id: {**teacher_taps[g.teacher_id], g.teacher_spot: mixed}}
            losses[path_key(pid)] = learner.path_loss(pid, ctx.student_taps, teacher_taps, ctx)
        return losses


class BridgeSearch:
    """Stage 1 on a copy of the student: alternate weight steps and b steps on L_bridge."""

    def __init__(self, dfa: DFA, learner: "Learner", device: torch.device) -> None:
        self.dfa, self.device = dfa, device
        arch = learner.student.arch
        copied = copy.deepcopy(learner.student.model).train()
        spots = list(dict.fromkeys(g.student_spot for g in dfa.groups))
        self.student = TappedModel(copied, arch, spots)
        # Each group continues "the rest of the student" from its own spot; segments share the copy's weights.
        self.rests: dict[str, Segments] = {s: cut_at_spots(copied, arch, [s]) for s in spots}
        self.to_student = nn.ModuleList(connector(g.teacher_shape[0], g.student_shape[0]) for g in dfa.groups)
        self.to_teacher = nn.ModuleList(connector(g.student_shape[0], g.teacher_shape[0]) for g in dfa.groups)
        self.to_student.to(device)
        self.to_teacher.to(device)

    def bridge_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(L_TS, L_ST), each summed over the groups."""
        maps = self.dfa.block_maps(x, set(self.dfa.extractors))
        student_taps = self.student(x)
        loss_ts = loss_st = torch.zeros((), device=x.device)
        for i, g in enumerate(self.dfa.groups):
            mixed = self.dfa.mix(i, maps[g.teacher_id])
            entered = self.to_student[i](resize_to(mixed, g.student_shape[1:]))
            loss_ts = loss_ts + F.cross_entropy(self.rests[g.student_spot].run(entered, 1), y)
            predicted = self.to_teacher[i](resize_to(student_taps[g.student_spot], g.teacher_shape[1:]))
            loss_st = loss_st + student_to_teacher_loss(predicted, mixed)
        return loss_ts, loss_st

    def run(self, bundle: "DataBundle", reporter: "Reporter") -> None:
        dfa = self.dfa
        weights = [*self.student.parameters(), *self.to_student.parameters(), *self.to_teacher.parameters()]
        w_opt = torch.optim.SGD(weights, lr=dfa.w_lr, momentum=W_MOMENTUM, weight_decay=W_WEIGHT_DECAY)
        b_opt = torch.optim.Adam(dfa.b.parameters(), lr=dfa.b_lr, betas=B_BETAS, weight_decay=dfa.b_weight_decay)
        train_gen = torch.Generator().manual_seed(dfa.seed)
        held_out = _endless(bundle.val, dfa.batch_size, torch.Generator().manual_seed(dfa.seed + 1))
        reporter.truncate(SEARCH_PHASE, -1)  # a resumed run searches again: drop the first search's rows
        step = 0
        for epoch in range(dfa.search_epochs):
            for x, y, _ in iterate_batches(bundle.train, dfa.batch_size, shuffle=True, generator=train_gen):
                reporter.check_stop()
                self._step(w_opt, (w_opt, b_opt), x, y)
                loss_ts, loss_st = self._step(b_opt, (w_opt, b_opt), *next(held_out))
                values = {TELEMETRY.metric("loss_ts").key: loss_ts, TELEMETRY.metric("loss_st").key: loss_st}
                values.update({TELEMETRY.metric("entropy").key + g.label: entropy(dfa.alpha(i).detach())
                               for i, g in enumerate(dfa.groups)})
                reporter.log(SEARCH_PHASE, step, epoch, values)
                step += 1
            for i, g in enumerate(dfa.groups):
                alpha = dfa.alpha(i).detach().cpu().numpy().astype(np.float32)[None, :]
                reporter.log_array(SEARCH_PHASE, step, epoch, TELEMETRY.array("alpha").key + g.label,
                                   Recorded(values=alpha, index=np.array([-1]), columns=list(g.maps)))
            reporter.flush()

    def _step(self, optimizer: torch.optim.Optimizer, all_optimizers: tuple[torch.optim.Optimizer, ...],
              x: Tensor, y: Tensor) -> tuple[float, float]:
        """One update of `optimizer`'s parameters on L_bridge; the other's gradients are discarded."""
        x, y = x.to(self.device), y.to(self.device)
        loss_ts, loss_st = self.bridge_losses(x, y)
        for opt in all_optimizers:
            opt.zero_grad(set_to_none=True)
        (self.dfa.g_ts * loss_ts + self.dfa.g_st * loss_st).backward()
        optimizer.step()
        return loss_ts.item(), loss_st.item()


def _endless(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """Held-out (x, y) batches, reshuffled each time the split is used up."""
    while True:
        for x, y, _ in iterate_batches(split, batch_size, shuffle=True, generator=generator):
            yield x, y
