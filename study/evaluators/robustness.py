"""Robustness: every attack x norm x eps, plus a `worst` row per (norm, eps).

Per (attack, norm), the whole epsilon grid is one batched attack over rows (point, eps): a row
stops when it is misclassified, and a point broken at eps_i is broken at every larger eps
(see study.attacks.gradient). Only points the model classifies correctly are attacked.

With ``cascade`` (AutoAttack's way, and the presets'), each attack only attacks the levels of
each point that every earlier attack left robust: its rows' ``broken`` counts the points it broke
that no earlier attack did, and their robust accuracy is the ensemble's after it. Without, each
attack runs alone on every point and its rows are its own. Either way `worst` is the same: a
point's attack depends only on the point (its random draws are keyed by its index in the
evaluation split, study.rng.PointRNG; its gradient is its own loss's), so an attack gives a point
the same outcome whether or not other attacks ran before it.

Minimal-norm attacks search once and are judged at every eps: FAB-T in the threat norm; C&W
(L2) once per model, judged in every norm. A stochastic (MC-dropout) model is attacked through
its ``eot_samples``-draw MC predictive (study.mc.attackable): attacks with a plain call run to
their final iterate at each eps without early stop (``attack_stochastic``), the others run as
usual; either way a success counts only where the model's own prediction is wrong.

With ``per_class_eps``, each class c is also attacked at its own eps_c (study.evaluators.
distances: a fraction of a quantile of its training images' distances to the nearest image of
another class), next to every point at one uniform eps with the same mean over the evaluated
points: the same total budget, spread by class or evenly.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, ClassVar, Literal, Optional, Union

import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from study import attacks, mc, norms, objectives, precision
from study.attacks.apgd import APGD
from study.attacks.cw import CarliniWagnerL2
from study.attacks.gradient import AttackResult, GradientAttack, frozen
from study.attacks.presets import DEFAULT as DEFAULT_ATTACKS
from study.attacks.presets import PRESETS
from study.evaluators import distances
from study.evaluators import shards as sharding
from study.registry import Entry, Evaluator
from study.rng import PointRNG
from study.seeds import stream_seed
from study.spec.constraints import NormAxes, NormName, Strict, eps_bound
from study.spec.evaluation import AttackSpec, own_options
from study.train import predict
from study.types import Distinct, NotBool, PosInt


class Options(Entry):
    """Robust accuracy under each attack at each (norm, eps), and the `worst` case per point over
    them (study.evaluators.robustness). ``attacks``: a preset (study.attacks.presets: autoattack,
    autoattack-fast) or a list of attacks. With ``cascade`` (a preset's default) each attack only
    attacks the points every earlier one left robust, as AutoAttack runs them: its rows then count
    the points it broke that earlier ones did not, and its robust accuracy is the ensemble's so far."""

    attacks: Union[Literal[tuple(PRESETS)], Annotated[list[AttackSpec], Field(min_length=1)]] = DEFAULT_ATTACKS
    cascade: Optional[bool] = None  # default: true for a preset, false for a list (each attack alone)
    norms: Annotated[dict[NormName, NormAxes], Field(min_length=1)]
    eot_samples: PosInt = 1  # stochastic (MC-dropout) models: MC samples per attack query (expectation over transformation)
    batch_rows: Optional[PosInt] = None  # rows (point x eps) per attack batch; null: 256 on CPU, 16384 on GPU
    per_class_eps: Optional[PerClassEps] = None  # also attack at a per-class eps and at its uniform mean
    precision: Literal["float32", "bf16", "fp16"] = "float32"  # the model's arithmetic in the attacks' queries (study.precision); inputs, steps and losses stay float32
    shards: Optional[sharding.Shards] = None  # split the attacked points over Ray tasks (study.evaluators.shards); the same rows
    channels_last: bool = False  # image batches and conv weights in NHWC memory (study.precision): faster convolutions on a GPU, the same function
    execution: ClassVar[tuple] = ("shards", "channels_last")  # how it runs, not what it computes: not part of its evaluation-store key

    @model_validator(mode="before")
    @classmethod
    def _no_shared_options(cls, data):
        return own_options(data, "attacks", "[fgsm, {name: pgd, steps: 20}]")

    @model_validator(mode="after")
    def _checks(self):
        names = [a.name for a in self.attack_list()]
        if len(set(names)) != len(names) and len({a.describe() for a in self.attack_list()}) != len(names):
            raise ValueError("attacks: the same attack with the same options twice")
        for name, axes in self.norms.items():
            eps_bound(name, axes.eps, f"norms.{name}.eps")
        if self.cascade is None:
            self.cascade = isinstance(self.attacks, str)
        if self.per_class_eps is not None:
            if self.per_class_eps.norms is None:
                self.per_class_eps.norms = list(self.norms)
            if any(a in attacks.NORM_FREE for a in names):
                raise ValueError("per_class_eps: cw searches in L2 once per model, for no eps; list the attacks without it")
        return self

    def attack_list(self) -> list[AttackSpec]:
        """The attacks in running order (a preset expanded)."""
        return [AttackSpec.model_validate(a) for a in PRESETS[self.attacks]] if isinstance(self.attacks, str) else self.attacks

    def ensemble(self) -> str:
        """The `worst` rows' attacks, with every setting: the identity of their ensemble."""
        return "; ".join(a.describe() for a in self.attack_list())

    def row_points(self) -> list[tuple]:
        """The key of every row a trial writes (study.results.KEY_COLUMNS' evaluation part, as
        the evaluator fills it): for each norm and eps, each attack and `worst`."""
        names = "+".join(a.name for a in self.attack_list())
        eot = self.eot_samples
        out = []
        per_attack = [(a.name, a.describe(), names) for a in self.attack_list()]
        for norm, axes in self.norms.items():
            for eps in axes.eps:
                for name, described, ens in [*per_attack, ("worst", self.ensemble(), names)]:
                    out.append((name, described, ens, self.cascade, norm, float(eps), eot, None, self.row_precision()))
        if self.per_class_eps is not None:
            pc = self.per_class_eps
            for norm in pc.norms:
                for q in pc.quantiles:
                    for rule in ("per-class", "uniform"):
                        for name, described, ens in [*per_attack, ("worst", self.ensemble(), names)]:
                            out.append((name, described, ens, self.cascade, norm, None, eot, (q, pc.fraction, pc.per_class, rule), self.row_precision()))
        return out

    def row_precision(self) -> Optional[str]:
        """The rows' `precision` column: null for float32."""
        return None if self.precision == "float32" else self.precision

    def uses_training_split(self) -> bool:
        return self.per_class_eps is not None  # per-class eps come from training-image distances

    def attack_names(self) -> list[str]:
        return [a.name for a in self.attack_list()]

    def n_rows(self, linear_binary: bool = False) -> int:
        """Rows per trial: every attack at every eps, plus one `worst` row per (norm, eps); with
        per_class_eps, per (norm, quantile) the per-class and the uniform rule, each per attack
        and worst."""
        return len(self.row_points())

    def metric_names(self) -> set[str]:
        return {
            f"robust_acc@{a}-{n}-{e:g}" for n, axes in self.norms.items() for e in axes.eps for a in [*(a.name for a in self.attack_list()), "worst"]
        }


class PerClassEps(Strict):
    """Robustness at a per-class eps: each class c gets eps_c = fraction * the q-quantile of its
    training images' distances to the nearest image of another class (study.evaluators.distances,
    the same sample), next to one uniform eps with the same mean over the evaluated points."""

    quantiles: Annotated[list[Annotated[float, NotBool, Field(ge=0, le=1)]], Field(min_length=1), Distinct] = [0.1, 0.5]
    fraction: Annotated[float, NotBool, Field(gt=0, le=1)] = 0.5
    per_class: Annotated[int, NotBool, Field(ge=2)] = 100  # training images sampled per class
    norms: Optional[Annotated[list[NormName], Field(min_length=1), Distinct]] = None  # default: the evaluator's norms


def evaluate(ctx, axes) -> list[dict]:
    x, y = ctx.x, ctx.y
    n = len(y)
    points = ctx.correct.nonzero().squeeze(1)  # the attacked points, by their index in the split
    xc, yc = x[points], y[points]
    stochastic = mc.is_stochastic(ctx.model)
    model = attacked_model(ctx.model, axes)
    common = dict(eot_samples=axes.eot_samples) if stochastic else {}
    if axes.row_precision():  # null in float32 rows, so their keys are those of before the option
        common["precision"] = axes.row_precision()
    common["vanishing_grad"] = vanishing_gradients(model, xc, yc, axes.batch_rows or default_batch_rows(x))
    specs = axes.attack_list()
    ensemble = dict(ensemble="+".join(s.name for s in specs), cascade=axes.cascade)
    if axes.shards is not None and len(points) > 1:
        outcomes = sharding.evaluate(ctx, axes, model, xc, yc, points, stochastic)
    else:
        outcomes = cascade(model, xc, yc, points, axes, ctx.seed, stochastic, getattr(ctx, "cache", None))
    rows = []
    for norm_name, norm_axes in axes.norms.items():
        grid = sorted(e for e in norm_axes.eps if e > 0)
        broken = torch.zeros(len(yc), len(grid), dtype=torch.bool)
        total_s = 0.0
        for spec, (fooled, deltas, queries, eval_s) in zip(specs, outcomes[norm_name]):
            total_s += eval_s
            counted = fooled & ~broken if axes.cascade else fooled
            after = broken | fooled if axes.cascade else fooled
            broken |= fooled
            cols = dict(attack=spec.name, attack_options=spec.describe(), **typed_columns(spec.build()), **common, **ensemble)
            rows += _rows(norm_name, norm_axes.eps, grid, after, counted, deltas, queries, n, ctx.clean_acc, eval_s, cols)
        cols = dict(attack="worst", attack_options=axes.ensemble(), **common, **ensemble)
        rows += _rows(norm_name, norm_axes.eps, grid, broken, broken, None, None, n, ctx.clean_acc, total_s, cols)
    if axes.per_class_eps is not None:
        rows += per_class_eps(ctx, axes, model, points, stochastic, common)
    return rows


Outcome = tuple  # (fooled (P x L), sizes {l2, linf, confidence}: (P,), queries (P x L) or None, seconds)


def cascade(model, x, y, points, axes, seed: int, stochastic=False, cache=None, which=None, broken=None, escalation=None, norm_names=None) -> dict[str, list[Outcome]]:
    """Per norm, each attack's outcome on points ``x`` (their indices in the evaluation split:
    ``points``, which key their random draws) over the norm's eps ladder, in running order; with
    ``axes.cascade`` each attack attacks only the levels every earlier one left robust.

    A part of the cascade (a shard's round, study.evaluators.shards): ``which`` (attack indices,
    in order; default all), ``broken`` ({norm: P x L} the points broken before them),
    ``escalation`` ({(attack index, norm): bool}: a probing Square's decision, made over every
    shard) and ``norm_names`` (default all)."""
    specs = axes.attack_list()
    which = range(len(specs)) if which is None else which
    searches = {}  # norm-free searches (C&W): run once per point, judged in every norm
    out = {}
    for norm_name in norm_names or axes.norms:
        norm = norms.get(norm_name)
        grid = sorted(e for e in axes.norms[norm_name].eps if e > 0)
        done = broken[norm_name].clone() if broken is not None else torch.zeros(len(y), len(grid), dtype=torch.bool)
        outs = []
        for i in which:
            spec = specs[i]
            attack = spec.build()
            levels = (~done).sum(1).to(x.device) if axes.cascade else None
            rng = PointRNG(stream_seed(seed, "robustness", spec.name, norm_name), points)
            start = time.perf_counter()
            with _seeded(stochastic, seed, spec.name, norm_name):
                if cache is not None and not stochastic:
                    from study.evaluators import attack_store  # it builds on this module's attack_grid

                    described = spec.describe() if axes.precision == "float32" else f"{spec.describe()} at {axes.precision}"
                    fooled, deltas, queries = attack_store.attack_grid(cache, described, norm_name, model, x, y, grid, norm, attack, rng, axes.batch_rows, levels, searches, points)
                else:
                    decided = (escalation or {}).get((i, norm_name))
                    fooled, deltas, queries = attack_grid(model, x, y, grid, norm, attack, rng, axes.batch_rows, levels, stochastic, searches, decided)
            outs.append((fooled, deltas, queries, time.perf_counter() - start))
            done |= fooled
        out[norm_name] = outs
    return out


def attacked_model(model, axes):
    """What the attacks query: a stochastic model through its MC predictive, at the entry's
    precision and memory layout."""
    return mc.attackable(precision.queried(model, axes.precision, axes.channels_last), axes.eot_samples)


def vanishing_gradients(model, x, y, batch: int) -> float | None:
    """The share of the points whose cross-entropy input gradient is exactly 0 at x: a softmax so
    saturated that a gradient attack on cross-entropy cannot take a first step there."""
    if not len(y):
        return None
    zero = 0
    with frozen(model):
        for xb, yb in zip(x.split(batch), y.split(batch)):
            xb = xb.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(F.cross_entropy(model(xb), yb, reduction="sum"), xb)
            zero += int((grad.flatten(1).abs().amax(1) == 0).sum())
    return zero / len(y)


def typed_columns(attack) -> dict:
    """The attack settings that have columns of their own (``attack_options`` has them all):
    iterations (1 for FGSM), step size (C&W: Adam's learning rate), restarts, C&W's kappa and
    search rounds, the targets of APGD-T and FAB-T, Square's query budget."""
    get = lambda name: getattr(attack, name, None)
    return dict(
        steps=get("steps"), step_size=get("step_size"), restarts=get("restarts"), kappa=get("confidence"),
        search_steps=get("search_steps"), targets=get("targets"), queries_budget=get("queries"),
    )


class _seeded:
    """A stochastic model's dropout masks come from torch's global generator: seed it per
    (attack, norm) from the trial's seed, so results do not depend on what ran before."""

    def __init__(self, stochastic: bool, seed: int, *stream):
        self.fork = torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []) if stochastic else None
        self.seed = stream_seed(seed, "dropout", *stream)

    def __enter__(self):
        if self.fork is not None:
            self.fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        if self.fork is not None:
            self.fork.__exit__(*exc)


def per_class_eps(ctx, axes, model, points, stochastic, common) -> list[dict]:
    """Rows (and the ``class_eps_robustness`` artifact) of every attack at the per-class eps
    and at the uniform eps with the same mean, per norm and quantile."""
    pc = axes.per_class_eps
    xc, yc = ctx.x[points], ctx.y[points]
    n, n_classes = len(ctx.y), ctx.n_classes
    class_n = torch.bincount(ctx.y.cpu(), minlength=n_classes)
    art = {c: [] for c in ("norm", "quantile", "fraction", "attack", "class", "eps", "eps_uniform", "n", "acc_per_class", "acc_uniform")}
    specs = axes.attack_list()
    ensemble = dict(ensemble="+".join(s.name for s in specs), cascade=axes.cascade)
    rows = []
    for norm_name in pc.norms:
        norm = norms.get(norm_name)
        suggested = distances.class_eps(ctx.x_train, ctx.y_train, n_classes, norm_name, pc.per_class, pc.quantiles, pc.fraction, ctx.seed)
        for eps_c, q in zip(suggested.to(ctx.x.device, ctx.x.dtype), pc.quantiles):
            uniform = eps_c[ctx.y].mean()  # the same mean over the evaluated points
            rules = {"per-class": eps_c[yc], "uniform": uniform.expand(len(yc))}
            override = dict(eps=uniform.item(), eps_quantile=q, eps_fraction=pc.fraction, per_class=pc.per_class)
            broken = {rule: torch.zeros(len(yc), dtype=torch.bool) for rule in rules}
            by_attack = {}
            for spec in specs:
                attack = spec.build()
                for rule, eps in rules.items():
                    levels = (~broken[rule]).long().to(ctx.x.device) if axes.cascade else None
                    rng = PointRNG(stream_seed(ctx.seed, "robustness", spec.name, norm_name, "per-class-eps", q, rule), points)
                    start = time.perf_counter()
                    with _seeded(stochastic, ctx.seed, spec.name, norm_name, "per-class-eps", q, rule):
                        fooled, deltas, queries = attack_grid(model, xc, yc, [eps], norm, attack, rng, axes.batch_rows, levels, stochastic)
                    counted = fooled & ~broken[rule][:, None] if axes.cascade else fooled
                    after = broken[rule][:, None] | fooled if axes.cascade else fooled
                    broken[rule] |= fooled[:, 0]
                    by_attack[spec.name, rule] = after[:, 0]
                    cols = dict(attack=spec.name, attack_options=spec.describe(), **typed_columns(attack), **common, **ensemble)
                    rows += _rows(norm_name, [1.0], [1.0], after, counted, deltas, queries, n, ctx.clean_acc, time.perf_counter() - start, cols, {**override, "eps_rule": rule})
            for rule, fooled in broken.items():
                by_attack["worst", rule] = fooled
                cols = dict(attack="worst", attack_options=axes.ensemble(), **common, **ensemble)
                rows += _rows(norm_name, [1.0], [1.0], fooled[:, None], fooled[:, None], None, None, n, ctx.clean_acc, None, cols, {**override, "eps_rule": rule})
            for attack_name in [*(s.name for s in specs), "worst"]:
                acc = {rule: _class_accuracy(by_attack[attack_name, rule], yc, class_n) for rule in rules}
                for k in range(n_classes):
                    values = (norm_name, q, pc.fraction, attack_name, k, eps_c[k].item(), uniform.item(), int(class_n[k]), acc["per-class"][k], acc["uniform"][k])
                    for column, v in zip(art, values):
                        art[column].append(v)
    ctx.write_artifact("class_eps_robustness", art)
    return rows


def _class_accuracy(fooled, yc, class_n) -> list[float | None]:
    """Per class, robust accuracy over all its evaluation points (the attacked ones are those
    it classified correctly)."""
    survived = torch.bincount(yc[~fooled.to(yc.device)].cpu(), minlength=len(class_n))
    return [survived[k].item() / int(class_n[k]) if class_n[k] else None for k in range(len(class_n))]


def _outcome(model, x, y, res, verify=True):
    """``fooled`` (P x L), per point the adversarial's L2 and Linf size and the model's confidence
    there, and the queries the attack counted (or None). A stochastic model's successes are
    re-checked with its own prediction (study.mc.PREDICTION_SAMPLES draws): a success on the few
    draws of one attack query may not survive the full predictive."""
    fooled = res.fooled
    if verify and isinstance(model, mc.Predictive):
        fooled = fooled & (predict(model.model, res.x_adv) != y)[:, None]
    delta = res.x_adv - x
    sizes = {**{name: m.cpu() for name, m in norms.measures(delta).items()}, "confidence": confidence(model, res.x_adv).cpu()}
    return fooled.cpu(), sizes, None if res.queries is None else res.queries.cpu()


def _plain(attack) -> bool:
    """Whether the attack has a final iterate to run to without early stop (no targets)."""
    return isinstance(attack, GradientAttack) or (isinstance(attack, APGD) and attack.targets is None)


def attack_stochastic(model, x, y, grid, norm, attack, rng, batch_rows=None, levels=None):
    """``attack_grid`` for a stochastic model (``model``: its mc.Predictive). Early stop would end
    a point's attack on one lucky draw of the predictive, so every eps gets full attacks (each
    restart its own run), judged afterwards by the model's own prediction. A point fooled at some
    eps is not attacked at the larger ones: its adversarial lies in their balls and counts there.
    A grid entry may be a tensor of per-point radii (per-class eps)."""
    single = dataclasses.replace(attack, restarts=1)
    step = batch_rows or default_batch_rows(x)
    fooled = torch.zeros(len(y), len(grid), dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    top = torch.full((len(y),), len(grid), device=x.device) if levels is None else levels.to(x.device)
    for j, eps in enumerate(grid):
        for restart in range(attack.restarts):
            todo = (~fooled[:, j] & (j < top)).nonzero().squeeze(1)
            for pts in todo.split(step):
                cand = single(model, x[pts], y[pts], eps[pts] if torch.is_tensor(eps) else eps, norm, rng=rng[pts].fold(restart * len(grid) + j))
                hit = predict(model.model, cand) != y[pts]
                x_adv[pts[hit]] = cand[hit]
                fooled[pts[hit], j:] = True
    return _outcome(model, x, y, AttackResult(x_adv, fooled), verify=False)


def _nothing(n_points: int, n_levels: int):
    zeros = torch.zeros(n_points)
    return torch.zeros(n_points, n_levels, dtype=torch.bool), {**{name: zeros for name in norms.NORMS}, "confidence": zeros}, None


def attack_grid(model, x, y, grid, norm, attack, rng, batch_rows=None, levels=None, stochastic=False, searches=None, escalation=None):
    """Attack every point at every eps of ``grid`` (ascending) in one batched call.

    Returns ``fooled`` (P x L bool), ``deltas`` ({'l2', 'linf'}: per point, the size of the
    adversarial counted at every eps where the point is fooled, and 'confidence': the model's
    probability of the class it predicts there) and the attack's queries per point (or None).
    ``levels`` (P,) attacks only each point's first levels (a cascade). A grid entry may be a
    tensor of per-point radii (per-class eps). ``searches`` caches a norm-free search (C&W) per
    point across norms; ``escalation`` decides a probing Square's escalation (Square.run).
    ``batch_rows`` (points in flight) defaults by device: on a CPU, batches
    that keep the activations in cache run about twice as fast per row as batches of thousands
    (benchmarks/attacks.py measures it); a GPU wants large batches.
    """
    if not len(grid) or not len(y):
        return _nothing(len(y), len(grid))
    rows = batch_rows or default_batch_rows(x)
    if isinstance(attack, CarliniWagnerL2):
        return _judge_search(model, x, y, grid, norm, attack, rows, levels, searches if searches is not None else {})
    if stochastic and _plain(attack):
        return attack_stochastic(model, x, y, grid, norm, attack, rng, rows, levels)
    eps = torch.stack([e if torch.is_tensor(e) else torch.full((len(y),), float(e), dtype=x.dtype, device=x.device) for e in grid], dim=1).to(x)
    decided = {} if escalation is None else dict(escalation=escalation)
    res = attack.run(model, x, y, eps, norm, rng=rng, max_rows=rows, levels=levels, **decided)
    return _outcome(model, x, y, res)


def _judge_search(model, x, y, grid, norm, attack, rows, levels, searches):
    """A norm-free search's closest adversarials (C&W), searched once per point and attack
    settings and counted at every eps of ``grid`` they fit (up to each point's ``levels``)."""
    key = attack.options().__repr__()
    if key not in searches:
        searches[key] = (x.clone(), torch.zeros(len(y), dtype=torch.bool, device=x.device), torch.zeros(len(y), dtype=torch.bool, device=x.device))
    x_best, found, done = searches[key]
    need = ~done if levels is None else ~done & (levels > 0)
    if need.any():
        x_best[need], found[need] = attack.closest(model, x[need], y[need], rows)
        done |= need
    eps = torch.tensor(grid, dtype=x.dtype, device=x.device).expand(len(y), len(grid))
    res = CarliniWagnerL2.against(x, x_best, found, eps, norm)
    if levels is not None:
        res.fooled &= torch.arange(len(grid), device=x.device) < levels[:, None]
    return _outcome(model, x, y, res)


def default_batch_rows(x: torch.Tensor) -> int:
    return 16384 if x.is_cuda else 256


@torch.no_grad()
def confidence(model, x, batch: int = 4096) -> torch.Tensor:
    """The model's probability of the class it predicts, per point (study.objectives)."""
    with frozen(model):
        return torch.cat([objectives.probabilities(model, model(x[i : i + batch])).amax(1) for i in range(0, len(x), batch)])


def attack_each_eps_separately(model, x, y, grid, norm, attack, seed: int, batch_size: int | None = None):
    """The reference way (as with other attack libraries): a full attack at every eps on its
    own, keeping each final iterate, over batches of ``batch_size`` points (all at once when
    None). Random draws are keyed by each point's index under ``seed``, as ``attack_grid`` draws
    them from a PointRNG of that seed. Returns ``fooled`` (P x L bool). Used by the benchmark
    and by the tests that check ``attack_grid`` is never weaker."""
    batch_size = batch_size or len(y)
    rng = PointRNG.for_points(seed, len(y), x.device)
    cols = []
    for eps in grid:
        fooled = []
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            x_adv = attack.run(model, xb, yb, eps, norm, early_stop=False, rng=rng[i : i + batch_size]).x_adv
            fooled.append((predict(model, x_adv) != yb).cpu())
        cols.append(torch.cat(fooled))
    return torch.stack(cols, dim=1)


def _rows(norm_name, eps_list, grid, after, counted, deltas, queries, n, clean_acc, eval_s, axes_cols, override=None):
    """One row per eps of ``eps_list``. ``after``: the points broken once this attack ran (for
    a cascade, by it or an earlier one); ``counted``: the points this row credits to the attack
    (``broken``; the perturbation sizes are theirs). ``override`` replaces columns (per-class eps
    rows, whose one 'eps' is a per-point radius)."""
    n_correct = after.shape[0]
    out = []
    for eps in sorted(eps_list):
        row = dict(evaluator="robustness", norm=norm_name, eps=float(eps), n_eval=n, clean_acc=clean_acc, eval_s=eval_s, **axes_cols)
        row.update(override or {})
        if eps == 0:
            row.update(robust_acc=clean_acc, success_rate=0.0, broken=0)
        else:
            j = grid.index(eps)
            f, c = after[:, j], counted[:, j]
            row.update(robust_acc=(n_correct - int(f.sum())) / n, success_rate=float(f.float().mean()) if n_correct else None, broken=int(c.sum()))
            if deltas is not None and c.any():
                for name in norms.NORMS:
                    vals = deltas[name][c]
                    row[f"{name}_mean"] = float(vals.mean())
                    row[f"{name}_median"] = float(vals.median())
                row["adv_confidence_mean"] = float(deltas["confidence"][c].mean())
            if queries is not None and (queries[:, j] > 0).any():
                row["queries_mean"] = float(queries[:, j][queries[:, j] > 0].float().mean())
        out.append(row)
    return out


COLUMNS = (
    ("precision", pa.string(), "evaluation", "robustness: the model's arithmetic in the attacks' queries under autocast, bf16 or fp16 (study.precision); null: float32"),
    ("vanishing_grad", pa.float64(), "metric", "robustness: share of the attacked points whose cross-entropy input gradient is exactly 0 at x (a saturated softmax: a cross-entropy gradient attack cannot take its first step there)"),
    ("broken", pa.int64(), "metric", "robustness: points this attack broke at this eps; in a cascade, those no earlier attack had broken (AutoAttack's per-attack log); for `worst`, all broken points"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:robustness_section")
