"""The robustness evaluator's attacks through the evaluation store (study.evalstore).

An attack is *standalone* when its outcome at a radius is that of a separate run at that
radius alone: FGSM, BIM, PGD, APGD (CE, DLR, T), and Square's search. Its (point, eps) outcomes
are facts: fooled or not, the adversarial's sizes and confidence, the queries. A ladder is then
assembled exactly as a fresh run goes: each point visits its levels in order, up to its cascade
limit, and stops at its first success, whose adversarial at distance d counts at that level,
every higher one and every lower one with eps >= d (an APGD climbing top-down visits them from
its limit down, on past each success, until a failure). Only pairs the store lacks are attacked.

Square with a probe is assembled from the same facts (its search is Square's, the probe its
first ``probe`` proposals): a point's probe at its largest eps succeeds when the search there
succeeds within those proposals; if enough points do, every point not broken at its lowest eps
goes through the full ladder, and the queries the probe spent stay counted at its level, as in
``Square.run``. A probe that found nothing is kept as an incomplete fact (it says only that the
first proposals failed).

Other attacks (FAB-T and FMN, which stop at each point's smallest eps; C&W, one search for every eps;
a researcher's) are stored as whole calls, reused when their inputs are the same.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import torch

from study import evalstore, norms
from study.attacks.apgd import APGD
from study.attacks.gradient import GradientAttack
from study.attacks.square import Square
from study.evaluators.robustness import _nothing
from study.evaluators.robustness import attack_grid as computed_grid
from study.evaluators.robustness import confidence, default_batch_rows

SIZES = (*norms.NORMS, "confidence")


def standalone(attack) -> bool:
    return isinstance(attack, (GradientAttack, APGD)) or (isinstance(attack, Square) and attack.probe is None)


def probed(attack) -> bool:
    return isinstance(attack, Square) and attack.probe is not None and attack.probe < attack.queries and attack.restarts == 1


def in_facts(attack) -> bool:
    """Whether its work is kept as (point, eps) facts (else as whole runs)."""
    return standalone(attack) or probed(attack)


def facts_key(cache, attack, described: str, norm_name: str) -> str:
    # Square's facts are its search's, with or without a probe: one key for both.
    identity = ("square", dataclasses.replace(attack, probe=None).options()) if isinstance(attack, Square) else described
    return cache.key("facts", identity, norm_name)


def attack_grid(cache, described: str, norm_name: str, model, x, y, grid, norm, attack, rng, batch_rows, levels, searches, points):
    """``robustness.attack_grid`` through the store (``cache``: a study.evalstore.Bound)."""
    if not len(grid) or not len(y):
        return _nothing(len(y), len(grid))
    if in_facts(attack):
        facts = _Facts(cache, facts_key(cache, attack, described, norm_name))
        ladder = _Ladder(facts, model, x, y, grid, norm, rng, batch_rows or default_batch_rows(x), levels, points)
        if probed(attack):
            ladder.probed(attack)
        else:
            ladder.scan(range(len(y)), attack)
        facts.save()
        return ladder.result()
    key = cache.key("runs", described, norm_name, list(grid), evalstore.tensor_digest(points.cpu().numpy(), *([] if levels is None else [levels.cpu().numpy()])))
    found = None if cache.fresh else cache.store.load_run(key)
    if found is not None:
        cache.count("runs_reused")
        sizes = {name: torch.from_numpy(found[name]) for name in SIZES}
        return torch.from_numpy(found["fooled"]), sizes, torch.from_numpy(found["queries"]) if "queries" in found else None
    fooled, sizes, queries = computed_grid(model, x, y, grid, norm, attack, rng, batch_rows, levels, False, searches)
    arrays = {"fooled": fooled.numpy(), **{name: v.numpy() for name, v in sizes.items()}}
    if queries is not None:
        arrays["queries"] = queries.numpy()
    cache.store.save_run(key, arrays)
    cache.count("runs_computed")
    return fooled, sizes, queries


class _Facts:
    """One attack's (point, eps) outcomes on one model and norm: those stored, and those added."""

    def __init__(self, cache, key: str):
        self.cache, self.key = cache, key
        table = None if cache.fresh else cache.store.load_facts(key)
        self.known = {(r["point"], r["eps"]): r for r in table.to_pylist()} if table is not None else {}
        self.added = set()  # (point, eps) attacked in this run

    def get(self, point: int, eps: float, complete: bool = True):
        rec = self.known.get((point, eps))
        return rec if rec is not None and (rec["complete"] or not complete) else None

    def put(self, rec: dict) -> None:
        self.known[rec["point"], rec["eps"]] = rec
        self.added.add((rec["point"], rec["eps"]))

    def reused(self, point: int, eps: float) -> None:
        if (point, eps) not in self.added:
            self.cache.count("pairs_reused")

    def save(self) -> None:
        self.cache.count("pairs_attacked", len(self.added))
        if self.added:
            self.cache.store.save_facts(self.key, pa.Table.from_pylist(list(self.known.values()), schema=evalstore.FACTS_SCHEMA))


class _Ladder:
    """A fresh ladder run's result (fooled (P, L), sizes (P,), queries (P, L)), assembled point
    by point from facts, computing the missing ones."""

    def __init__(self, facts, model, x, y, grid, norm, rng, rows, levels, points):
        self.facts, self.model, self.x, self.y, self.grid, self.norm, self.rng, self.rows = facts, model, x, y, grid, norm, rng, rows
        self.ids = points.tolist()
        n, n_levels = len(y), len(grid)
        self.top = [n_levels] * n if levels is None else levels.tolist()
        self.eps = torch.tensor(grid, dtype=x.dtype)
        self.fooled = torch.zeros(n, n_levels, dtype=torch.bool)
        self.sizes = {name: torch.zeros(n, dtype=x.dtype) for name in SIZES}
        self.queries = torch.zeros(n, n_levels, dtype=torch.long)
        self.counts_queries = False

    def result(self):
        return self.fooled, self.sizes, self.queries if self.counts_queries else None

    def spent(self, p: int, level: int, queries) -> None:
        if queries is not None:
            self.counts_queries = True
            self.queries[p, level] = queries

    def hit(self, p: int, level: int, rec: dict) -> None:
        self.fooled[p] = (torch.arange(len(self.grid)) >= level) | (self.eps >= torch.tensor(rec["dist"], dtype=self.eps.dtype))
        for name in SIZES:
            self.sizes[name][p] = rec[name]

    def scan(self, which, attack) -> None:
        """Points ``which`` each visit their levels as the attack climbs its ladder: bottom-up,
        from the lowest until the first success; top-down, from the highest, one lower after each
        success (to the highest level that success does not already cover) until a failure."""
        down = getattr(attack, "ladder", "bottom-up") == "top-down"
        at = {p: self.top[p] - 1 if down else 0 for p in which if self.top[p] > 0}
        while at:
            todo = []
            for p in list(at):
                while True:
                    if not 0 <= at[p] < self.top[p]:
                        del at[p]
                        break
                    rec = self.facts.get(self.ids[p], self.grid[at[p]])
                    if rec is None:
                        todo.append(p)
                        break
                    self.facts.reused(self.ids[p], self.grid[at[p]])
                    self.spent(p, at[p], rec["queries"])
                    if rec["fooled"]:
                        self.hit(p, at[p], rec)
                    if down and rec["fooled"]:
                        below = (~self.fooled[p, : at[p]]).nonzero()
                        at[p] = int(below.max()) if len(below) else -1
                    elif not down and not rec["fooled"]:
                        at[p] += 1
                    else:
                        del at[p]
                        break
            if todo:
                self.attack(attack, todo, [self.grid[at[p]] for p in todo])

    def attack(self, attack, todo: list[int], radii: list[float], budget: int | None = None) -> None:
        """Attack points ``todo`` at ``radii`` (one each) and add what it found to the facts
        (``budget``: Square's proposals, fewer than its full search: a probe)."""
        pts = torch.tensor(todo, device=self.x.device)
        eps = torch.tensor(radii, dtype=self.x.dtype, device=self.x.device)
        x, y = self.x[pts], self.y[pts]
        if budget is None:
            res = attack.run(self.model, x, y, eps, self.norm, rng=self.rng[pts], max_rows=self.rows)
        else:
            res = attack.search_at(self.model, x, y, eps, self.norm, rng=self.rng[pts], budget=budget, max_rows=self.rows)
        delta = res.x_adv - x
        measured = {**{name: m.cpu() for name, m in norms.measures(delta).items()}, "confidence": confidence(self.model, res.x_adv).cpu()}
        dist, hit = self.norm.measure(delta).cpu(), res.fooled.cpu()
        for i, p in enumerate(todo):
            fooled = bool(hit[i])
            self.facts.put(dict(
                point=self.ids[p], eps=radii[i], fooled=fooled, dist=float(dist[i]) if fooled else None,
                **{name: float(measured[name][i]) if fooled else None for name in SIZES},
                queries=None if res.queries is None else int(res.queries[i]),
                complete=budget is None or fooled,  # a probe that found nothing says only that
            ))

    def probe_outcome(self, p: int, probe: int):
        """(found, its fact, queries spent) of the probe at the point's largest eps, or None when
        the store cannot say."""
        rec = self.facts.get(self.ids[p], self.grid[self.top[p] - 1], complete=False)
        if rec is None:
            return None
        if rec["fooled"] and rec["queries"] - 1 <= probe:  # found within the probe's proposals
            return True, rec, rec["queries"]
        if rec["complete"] or rec["queries"] - 1 >= probe:
            return False, None, 1 + probe
        return None  # a shorter probe's failure

    def probed(self, attack) -> None:
        """``Square.run`` with a probe: the probe at each point's largest eps, then, if it broke
        at least the share ``escalate`` of the points probed, the full ladder for every point it
        did not break at its lowest eps."""
        probed = [p for p in range(len(self.y)) if self.top[p] > 0]
        need = [p for p in probed if self.probe_outcome(p, attack.probe) is None]
        if need:
            self.attack(attack, need, [self.grid[self.top[p] - 1] for p in need], budget=attack.probe)
        outcome = {p: self.probe_outcome(p, attack.probe) for p in probed}
        for p in probed:
            self.facts.reused(self.ids[p], self.grid[self.top[p] - 1])
        found = sum(o[0] for o in outcome.values())
        for p, (hit, rec, queries) in outcome.items():
            self.spent(p, self.top[p] - 1, queries)
            if hit:
                self.hit(p, self.top[p] - 1, rec)
        if not attack.escalates(found, len(probed)):
            return
        rest = [p for p in probed if not self.fooled[p, 0]]
        for p in rest:  # searched again from the lowest level; the probe's queries stay counted
            self.fooled[p] = False  # at its level unless the ladder reaches it again
        self.scan(rest, dataclasses.replace(attack, probe=None))
