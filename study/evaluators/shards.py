"""One model's robustness evaluation split over the cluster: shards of its points as Ray tasks.

A robustness entry with ``shards`` splits the points it attacks into that many contiguous parts.
A point's attack depends only on the point (its random draws are keyed by its index in the
evaluation split, its gradient is its own loss's; tests/test_batch_invariance.py), and so does
its place in the cascade (the levels earlier attacks left it), so the merged outcomes are those
of one unsharded run, bit for bit, on any number of shards.

How the shards run (``_Board``): the trial puts the shards in a queue and starts as many Ray
tasks as the cluster has room for now (each asking for the entry's ``shards.cpu`` /
``shards.gpu``, spread over the nodes, at most one per shard beyond the trial's own). Each task
builds the model once and takes shards until the queue is empty, yielding each as it is done;
so does the trial itself, with its own resources. A task that took no shard is not waited for
(its resources went elsewhere: it finds the queue empty when it starts), so trials that fill
the cluster evaluate their own shards as an unsharded trial would. A shard whose task died with
its worker or node is run again, alone, by the trial. (Nothing is cancelled: a task cancelled
as it finishes can crash its owner, in Ray 2.60.)

Rounds: a Square with a probe decides its escalation over every point it probed, so the cascade
runs up to that probe, the trial decides per norm over all shards, and a second round runs the
escalated search where it was decided (the probe runs again there: it is the same first part of
the same searches). Each finished shard of a round is an evaluation-store run (study.evalstore)
keyed by the entry, the round and the shard's points and levels: a trial run again after a loss
takes the shards that finished and computes only the others.

Each shard attempt is a record (``robustness_shards`` artifact: round, shard, points, node,
attempt, outcome, seconds), and the trial prints points done / total as shards finish.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Literal, Optional, Union

import functools

import numpy as np
import torch
from pydantic import model_validator

from study import checkpoints, imports, norms
from study.attacks.square import Square
from study.spec.constraints import Strict
from study.types import NonNegFloat, PosFloat, PosInt



class Shards(Strict):
    """``shards: 4`` or ``{count: 4, cpu: 1, gpu: 0.25}``; ``count: auto``: the trial's own
    resources plus every shard of ``cpu`` / ``gpu`` the cluster has free when the entry starts."""

    count: Union[PosInt, Literal["auto"]] = "auto"
    cpu: PosFloat = 1.0  # per shard task; also its torch threads (rounded up)
    gpu: NonNegFloat = 0.0  # per shard task; fractional shares a GPU

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        return {"count": data} if isinstance(data, (int, str)) and not isinstance(data, bool) else data

    def resolve(self, n_points: int) -> int:
        """The number of shards for ``n_points`` attacked points (at most one per point)."""
        import ray

        count = self.count
        if count == "auto":
            free = ray.available_resources() if ray.is_initialized() else {}
            count = 1 + int(free.get("GPU", 0) // self.gpu if self.gpu > 0 else free.get("CPU", 0) // self.cpu)
        return max(1, min(int(count), n_points))


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """How a shard task builds the trial's model: the stored model under ``key``, or the
    checkpoint (resolved on the task's node as the trial resolves it: study.trial.StudyContext)."""

    config: dict  # the trial's resolved TrainConfig
    input_shape: tuple
    n_classes: int
    store_uri: str
    key: Optional[str]
    checkpoint: Optional[str]
    workdir: str
    code_folders: tuple = ()

    def load(self, device) -> torch.nn.Module:
        from study.spec import TrainConfig
        from study.store import ModelStore
        from study.train import init_model

        imports.add_folders(list(self.code_folders))
        model = init_model(TrainConfig.model_validate(self.config), self.input_shape, self.n_classes).to(device)
        if self.checkpoint is not None:
            path = self.checkpoint
            if "://" not in path and not os.path.isabs(path):
                driver = os.path.join(self.workdir, path)
                path = driver if os.path.exists(driver) or not os.path.exists(path) else os.path.abspath(path)
            checkpoints.load_into(model, path)
        elif ModelStore(self.store_uri).load(self.key, model) is None:
            raise RuntimeError(f"robustness shard: model {self.key} is not in the store {self.store_uri}")
        return model.eval()


@dataclasses.dataclass
class _Round:
    """What every shard of one round needs (put in Ray's object store once)."""

    source: Optional[ModelSource]
    axes: object  # the entry's robustness Options
    seed: int
    x: torch.Tensor  # the attacked points (CPU)
    y: torch.Tensor
    points: torch.Tensor  # their indices in the evaluation split
    parts: list  # per shard, its positions in x
    which: list  # attack indices
    broken: Optional[dict]  # {norm: P x L} broken before these attacks
    escalation: dict  # {(attack index, norm): bool}
    norm_names: list
    keys: list  # per shard, its evaluation-store run key (None: no store)
    store_uri: Optional[str]
    threads: int
    gpu: float

    def compute(self, s: int, model, device) -> dict:
        from study.evaluators.robustness import cascade

        pos = self.parts[s]
        broken = None if self.broken is None else {k: v[pos] for k, v in self.broken.items()}
        out = cascade(model, self.x[pos].to(device), self.y[pos].to(device), self.points[pos].to(device), self.axes, self.seed, False, None, self.which, broken, self.escalation, self.norm_names)
        if self.keys[s] is not None:
            from study.evalstore import EvalStore

            EvalStore(self.store_uri).save_run(self.keys[s], _arrays(out))
        return out


class _Board:
    """The round's queue of shards; ``take`` gives each caller the next one (None when empty)."""

    def __init__(self, todo: list[int]):
        self.todo, self.given = list(todo), {}

    def take(self, who) -> Optional[int]:
        if not self.todo:
            return None
        self.given.setdefault(who, []).append(self.todo.pop(0))
        return self.given[who][-1]

    def given_out(self) -> dict:
        """Who took which shards (a caller that took none is not there)."""
        return {who: list(taken) for who, taken in self.given.items()}


@functools.cache
def _ray():
    """Ray and this module's remote parts, imported when a sharded entry runs (Ray is not
    needed to evaluate unsharded, e.g. on a GPU image without it)."""
    import ray
    from ray.exceptions import NodeDiedError, ObjectLostError, OwnerDiedError, WorkerCrashedError

    lost = (WorkerCrashedError, NodeDiedError, ObjectLostError, OwnerDiedError)
    # A lost shard is run again by the trial, which records it: no retry by Ray.
    return ray, ray.remote(_Board), ray.remote(max_retries=0)(_shard_worker), lost


def _node() -> str:
    ray = _ray()[0]
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def _shard_worker(board, token: int, rnd: _Round):
    """A Ray task: shards from the queue until it is empty, each yielded as it is done (shard,
    outcomes, record); the model is built once, for the first."""
    ray, model = _ray()[0], None
    torch.set_num_threads(rnd.threads)
    device = torch.device("cuda" if rnd.gpu > 0 and torch.cuda.is_available() else "cpu")
    while (s := ray.get(board.take.remote(token))) is not None:
        start = time.perf_counter()
        if model is None:
            from study.evaluators.robustness import attacked_model

            model = attacked_model(rnd.source.load(device), rnd.axes)
        yield s, rnd.compute(s, model, device), dict(node_id=_node(), runner="task", seconds=time.perf_counter() - start)


def evaluate(ctx, axes, model, x, y, points, stochastic: bool) -> dict:
    """``robustness.cascade``'s outcomes for the attacked points ``x`` (indices ``points``),
    computed in shards; the same outcomes as one unsharded run."""
    from study.evaluators.robustness import cascade

    n_shards = axes.shards.resolve(len(points))
    if stochastic or n_shards == 1:
        # An MC-dropout model draws its dropout masks for a whole batch: its numbers depend on
        # the batch, so it is evaluated in one piece.
        why = "an MC-dropout model is evaluated in one piece" if stochastic else "one shard"
        print(f"advsweep trial {ctx.trial_id}: robustness unsharded ({why})", flush=True)
        return cascade(model, x, y, points, axes, ctx.seed, stochastic, ctx.cache)
    runner = _Runner(ctx, axes, model, x, y, points, n_shards)
    specs = axes.attack_list()
    outcomes = {norm: [] for norm in axes.norms}
    broken = {norm: torch.zeros(len(y), len([e for e in a.eps if e > 0]), dtype=torch.bool) for norm, a in axes.norms.items()}
    start = 0
    while start < len(specs):
        stop = next((i for i in range(start, len(specs)) if _probing(specs[i].build())), len(specs) - 1) + 1
        which = list(range(start, stop))
        probe = stop - 1 if _probing(specs[stop - 1].build()) else None
        before = {k: v.clone() for k, v in broken.items()}
        if probe is not None and len(which) > 1:  # the attacks before the probe, then the probe on what they left
            got = runner.round(which[:-1], broken, {}, list(axes.norms))
            _extend(outcomes, got, broken)
            before = {k: v.clone() for k, v in broken.items()}
            which = which[-1:]
        got = runner.round(which, broken, {(probe, n): False for n in axes.norms} if probe is not None else {}, list(axes.norms))
        if probe is not None:
            square = specs[probe].build()
            probed = {n: int((~before[n]).any(1).sum()) if axes.cascade else len(y) for n in axes.norms}  # as Square.run counts them
            escalate = [n for n in axes.norms if square.escalates(int(got[n][-1][0].any(1).sum()), probed[n])]
            if escalate:
                again = runner.round([probe], before, {(probe, n): True for n in escalate}, escalate)
                for n in escalate:
                    got[n][-1] = again[n][0]
        _extend(outcomes, got, broken)
        start = stop
    runner.write_log()
    return outcomes


def _free_slots(shards: Shards) -> int:
    """How many shard tasks of this size the cluster could start now."""
    free = _ray()[0].available_resources()
    slots = int(free.get("CPU", 0) // shards.cpu)
    return min(slots, int(free.get("GPU", 0) // shards.gpu)) if shards.gpu > 0 else slots


def _probing(attack) -> bool:
    return isinstance(attack, Square) and attack.probe is not None and attack.probe < attack.queries


def _extend(outcomes: dict, got: dict, broken: dict) -> None:
    for norm, outs in got.items():
        outcomes[norm] += outs
        for fooled, *_ in outs:
            broken[norm] |= fooled


class _Runner:
    """The rounds of one entry: shards from the store, from tasks, and taken by the trial."""

    def __init__(self, ctx, axes, model, x, y, points, n_shards: int):
        self.ctx, self.axes, self.model, self.x, self.y, self.points = ctx, axes, model, x, y, points
        self.parts = list(torch.arange(len(y)).tensor_split(n_shards))
        self.log, self.rounds = [], 0

    def round(self, which: list, broken: dict, escalation: dict, norm_names: list) -> dict:
        """The outcomes of attacks ``which`` over every shard, merged in point order."""
        self.rounds += 1
        ctx, axes, n = self.ctx, self.axes, len(self.parts)
        cache = getattr(ctx, "cache", None)
        keys = [None] * n
        if cache is not None:
            from study import evalstore

            keys = [
                cache.key("runs", "shard", evalstore.settings(axes), which, sorted(escalation.items()), norm_names,
                          evalstore.tensor_digest(self.points[p].cpu().numpy(), *(broken[k][p].numpy() for k in norm_names)))
                for p in self.parts
            ]
        shards = [None] * n
        for s, key in enumerate(keys):
            found = None if key is None or cache.fresh else cache.store.load_run(key)
            if found is not None:
                shards[s] = _outcomes(found, norm_names, len(which))
                cache.count("runs_reused")
                self._record(s, "from store", dict(node_id=None, runner="store", seconds=0.0))
        todo = [s for s in range(n) if shards[s] is None]
        rnd = _Round(
            getattr(ctx, "model_source", None), axes, ctx.seed, self.x.cpu(), self.y.cpu(), self.points.cpu(), self.parts, which,
            broken, escalation, norm_names, keys, cache.store.uri if cache is not None else None,
            max(1, math.ceil(axes.shards.cpu)), axes.shards.gpu,
        )
        ray, remote_board, remote_worker, lost = _ray()
        workers, board = {}, None
        free = _free_slots(axes.shards) if todo and ray.is_initialized() and rnd.source is not None else 0
        if min(free, len(todo) - 1) > 0:
            # A named strategy: Tune's placement group would capture these children, and it
            # holds only the trial's own resources.
            board = remote_board.options(num_cpus=0, scheduling_strategy="DEFAULT").remote(todo)
            ref = ray.put(rnd)
            opts = dict(num_cpus=axes.shards.cpu, num_gpus=axes.shards.gpu, scheduling_strategy="SPREAD")
            workers = {t: remote_worker.options(**opts).remote(board, t, ref) for t in range(min(free, len(todo) - 1))}
        self._take(shards, rnd, board, iter(todo) if board is None else None)
        if board is not None:
            self._collect(shards, rnd, board, workers, lost)
        if cache is not None:
            cache.count("runs_computed", len(todo))
        return _merge(shards, norm_names, len(which))

    def _take(self, shards: list, rnd: _Round, board, queue) -> None:
        """The trial's part: shards from the queue, computed here, until it is empty."""
        ray = _ray()[0]
        while True:
            s = next(queue, None) if board is None else ray.get(board.take.remote("trial"))
            if s is None:
                return
            start = time.perf_counter()
            shards[s] = rnd.compute(s, self.model, self.x.device)
            self._record(s, "done", dict(node_id=_node(), runner="trial", seconds=time.perf_counter() - start))
            self._progress(shards)

    def _collect(self, shards: list, rnd: _Round, board, workers: dict, lost: tuple) -> None:
        """The workers' shards, as each finishes; a shard whose worker died is computed here,
        alone. A worker that took none is not waited for (it may have found no resources: it
        will find the queue empty when it starts)."""
        ray = _ray()[0]
        for token, taken in sorted((t, taken) for t, taken in ray.get(board.given_out.remote()).items() if t != "trial"):
            try:
                for ref in workers[token]:
                    s, out, rec = ray.get(ref)
                    shards[s] = out
                    self._record(s, "done", rec)
                    self._progress(shards)
            except lost as e:
                for s in (s for s in taken if shards[s] is None):
                    self._record(s, "lost", dict(node_id=None, runner="task", seconds=None, error=type(e).__name__))
                    print(f"advsweep trial {self.ctx.trial_id}: robustness shard {s + 1}/{len(self.parts)} lost ({type(e).__name__}); running it again alone", flush=True)
                    start = time.perf_counter()
                    shards[s] = rnd.compute(s, self.model, self.x.device)
                    self._record(s, "done", dict(node_id=_node(), runner="trial", seconds=time.perf_counter() - start))
                    self._progress(shards)

    def _record(self, s: int, outcome: str, rec: dict) -> None:
        attempt = 1 + sum(1 for r in self.log if r["round"] == self.rounds and r["shard"] == s and r["outcome"] != "from store")
        self.log.append(dict(
            round=self.rounds, shard=s, shards=len(self.parts), points=len(self.parts[s]), first=int(self.parts[s][0]),
            attempt=attempt if outcome != "from store" else 0, outcome=outcome, node_id=rec.get("node_id"), runner=rec.get("runner"),
            seconds=rec.get("seconds"), error=rec.get("error"),
        ))

    def _progress(self, shards: list) -> None:
        done = sum(len(p) for p, out in zip(self.parts, shards) if out is not None)
        print(f"advsweep trial {self.ctx.trial_id}: robustness round {self.rounds}: {done}/{len(self.y)} points", flush=True)

    def write_log(self) -> None:
        from study import artifacts

        columns = {k: [r[k] for r in self.log] for k in ("round", "shard", "shards", "points", "first", "attempt", "outcome", "node_id", "runner", "seconds", "error")}
        # Not one of the entry's own artifacts (ctx.write_artifact): the shards are how this run
        # went, not a result the evaluation store keeps.
        artifacts.write(self.ctx.results_uri, "robustness_shards", self.ctx.trial_id, columns)


SIZES = (*norms.NORMS, "confidence")  # as study.evaluators.attack_store keeps them


def _arrays(out: dict) -> dict:
    arrays = {}
    for norm, outs in out.items():
        for j, (fooled, sizes, queries, seconds) in enumerate(outs):
            arrays[f"{norm}.{j}.fooled"] = fooled.numpy()
            for name in SIZES:
                arrays[f"{norm}.{j}.{name}"] = sizes[name].numpy()
            if queries is not None:
                arrays[f"{norm}.{j}.queries"] = queries.numpy()
            arrays[f"{norm}.{j}.seconds"] = np.array(seconds)
    return arrays


def _outcomes(arrays: dict, norm_names: list, n_attacks: int) -> dict:
    out = {}
    for norm in norm_names:
        out[norm] = []
        for j in range(n_attacks):
            get = lambda name: torch.from_numpy(arrays[f"{norm}.{j}.{name}"])
            queries = get("queries") if f"{norm}.{j}.queries" in arrays else None
            out[norm].append((get("fooled"), {name: get(name) for name in SIZES}, queries, float(arrays[f"{norm}.{j}.seconds"])))
    return out


def _merge(shards: list, norm_names: list, n_attacks: int) -> dict:
    """Shard outcomes joined in point order; an attack's seconds are its shards' sum."""
    out = {}
    for norm in norm_names:
        out[norm] = []
        for j in range(n_attacks):
            parts = [s[norm][j] for s in shards]
            queries = None if any(p[2] is None for p in parts) else torch.cat([p[2] for p in parts])
            sizes = {name: torch.cat([p[1][name] for p in parts]) for name in SIZES}
            out[norm].append((torch.cat([p[0] for p in parts]), sizes, queries, sum(p[3] for p in parts)))
    return out
