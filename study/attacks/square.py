"""The Square attack of Andriushchenko, Croce, Flammarion & Hein (2020), "Square Attack: a
query-efficient black-box adversarial attack via random search": score-based, no gradients, so a
model whose gradients are masked cannot hide from it.

Random search on the margin loss m(x') = z_y(x') - max_{i != y} z_i(x') (minimised; m <= 0 is a
success). Each iteration proposes a change confined to a random square window and keeps it when
the loss falls (or the point is misclassified). The window's side is s = round(sqrt(p * h * w))
pixels, where the fraction p starts at p_init (0.8) and halves at iterations 10, 50, 200, 500,
1000, 2000, 4000, 6000 and 8000 (the published schedule, set for 10,000 queries; AutoAttack runs
it unscaled with 5,000 queries, and so do we unless ``rescale``: then the iterations are scaled
to the budget).

* Linf: start at x + eps * (vertical stripes of random signs, per channel); a proposal sets the
  window, per channel, to x +- eps (a random sign), inside the box.
* L2: start at x plus a grid of 5 x 5 blocks, each the L2 pattern ``eta`` (nested rectangles
  weighted 1 / k^2, one half positive, one negative, possibly transposed) with a random sign per
  channel, rescaled to norm eps. A proposal picks two windows: the first gets the pattern (random
  sign per channel) plus its old content, normalised and rescaled to take the budget the second
  window's content frees (which is set to 0) and whatever is left under eps; the whole
  perturbation is then rescaled to norm eps and clipped to the box.

Each point has its own windows and signs (``rng``, a study.rng.PointRNG, so a point's search is the
same in any batch and on any device; the reference draws one window per batch). A point leaves
the batch once misclassified; ``queries`` counts its model evaluations (the start and every
proposal), per point and eps. Along an eps ladder, only the points a level leaves robust go on to the next.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch

from study.attacks.gradient import AttackResult, frozen, per_point, prepare
from study.rng import to_integers, to_signs
from study.types import Fraction, PosInt

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(i: int, p_init: float, queries: int, rescale: bool) -> float:
    """p at iteration i: p_init halved once per published milestone passed."""
    if rescale:
        i = int(i / queries * 10000)
    return p_init / 2 ** sum(i > m for m in _HALVINGS)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i per row."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    return z_y - logits.scatter(1, y[:, None], -math.inf).amax(1)


def eta_pattern(s: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The L2 window pattern (s x s, unit L2 norm): the top half holds nested rectangles around
    its centre weighted 1 / k^2 (ring k), the bottom half the same with the opposite sign."""

    def rectangles(rows: int, cols: int) -> torch.Tensor:
        r = torch.arange(rows, device=device, dtype=dtype)[:, None]
        c = torch.arange(cols, device=device, dtype=dtype)[None, :]
        # Ring index of each cell around the centre cell (rows // 2, cols // 2), as a Chebyshev
        # distance; cell value sum_{k >= ring} 1 / (k + 1)^2 over the rings that cover it.
        ring = torch.maximum((r - rows // 2).abs(), (c - cols // 2).abs())
        n_rings = max(rows // 2 + 1, cols // 2 + 1)
        weights = 1.0 / torch.arange(1, n_rings + 1, device=device, dtype=dtype) ** 2
        tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{j >= k} weights[j]
        out = tail[ring.long()]
        return out / out.norm()

    top = s // 2
    pattern = torch.cat([rectangles(top, s), -rectangles(s - top, s)]) if top else -rectangles(s, s)
    return pattern / pattern.norm()


def _window(bits, h, w, s):
    """Each point's random s x s window, from (N, 2) random bits: (N, s) rows and (N, s) columns."""
    span = torch.arange(s, device=bits.device)
    return to_integers(bits[:, 0], h - s + 1)[:, None] + span, to_integers(bits[:, 1], w - s + 1)[:, None] + span


def _cells(rows, cols, w, c):
    """(N, C, s * s) positions of the windows' cells in images flattened to (N, C, H * W)."""
    flat = (rows[:, :, None] * w + cols[:, None, :]).flatten(1)
    return flat[:, None].expand(-1, c, -1)


@dataclass(frozen=True)
class Square:
    name: str = "square"
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    rescale: bool = False
    probe: int | None = None  # first this many queries at each point's largest eps; the full budget only if they break enough points
    escalate: float = 0.01  # enough: this share of the points probed (at least one)
    step_size = None  # random search: no step size; rows record null

    def __call__(self, model, x, y, eps, norm, *, rng=None) -> torch.Tensor:
        """The search's best point per point (training or input-set use)."""
        return self.run(model, x, y, eps, norm, rng=rng, early_stop=True).x_adv

    def options(self) -> dict:
        own = dict(queries=self.queries, p_init=self.p_init, restarts=self.restarts, rescale=self.rescale, probe=self.probe)
        return own if self.probe is None else {**own, "escalate": self.escalate}

    def run(self, model, x, y, eps, norm, *, rng=None, early_stop=True, max_rows=None, levels=None, escalation: bool | None = None) -> AttackResult:
        """With ``probe``, every point first gets a search of ``probe`` queries at its largest eps;
        if that breaks at least the share ``escalate`` of the points probed (in a cascade: points
        the gradient attacks before it left robust, a sign of masked gradients), every point not
        broken at its lowest eps gets the full budget. A point's search is the same sequence
        either way, so an escalated run gives exactly the full run's result: each probed search
        goes on from where the probe left it, and the others start from the beginning.
        ``escalation`` makes that decision for the call (a sharded evaluation decides it over
        every shard's probes: study.evaluators.shards)."""
        eps, ladder, rng, levels = prepare(x, eps, rng, levels, True, self.restarts)
        if x.dim() != 4:
            raise ValueError("square needs images (N x C x H x W)")
        state = _Outcome(x.detach(), eps)
        with frozen(model), torch.no_grad():
            if self.probe is not None and self.probe < self.queries:
                probes = {}
                self._ladder(model, state, y, norm, rng, levels, max_rows, self.probe, top_only=True, probes=probes)
                if not (self.escalates(int(state.found.sum()), int((levels > 0).sum())) if escalation is None else escalation):
                    return state.result(ladder, early_stop)
                # A point the probe broke at its lowest level is broken there by the full search
                # too; any other point's ladder is searched again, its probed search resumed.
                state.forget(~state.fooled[:, 0])
                self._ladder(model, state, y, norm, rng, levels, max_rows, self.queries, probes=probes)
            else:
                self._ladder(model, state, y, norm, rng, levels, max_rows, self.queries)
        return state.result(ladder, early_stop)

    def escalates(self, found: int, probed: int) -> bool:
        """Whether a probe that broke ``found`` of the ``probed`` points calls for the full search."""
        return found >= max(1, math.ceil(self.escalate * probed))

    def search_at(self, model, x, y, eps, norm, *, rng, budget: int, max_rows=None) -> AttackResult:
        """One search per point at its radius ``eps`` (N,) with at most ``budget`` proposals of
        this attack's schedule and one start: the first ``budget`` proposals of ``run``'s search
        at that radius (a probe's, with ``budget`` = ``probe``; a full one's, with ``queries``)."""
        eps, _, rng, levels = prepare(x, eps, rng, None, True, 1)
        state = _Outcome(x.detach(), eps)
        with frozen(model), torch.no_grad():
            self._ladder(model, state, y, norm, rng, levels, max_rows, budget)
        return state.result(False, True)

    def _ladder(self, model, state, y, norm, rng, levels, max_rows, budget, top_only=False, probes=None):
        """Every level's search, at most ``budget`` queries each, on the points not yet fooled;
        with ``top_only``, only each point's largest eps (the probe: where a masked model's
        survivors are most and a working gradient leaves fewest), and each search's end is kept
        in ``probes`` ((level, restart) -> _Kept); otherwise a search kept there goes on from it."""
        x, eps = state.x, state.eps
        for level in range(eps.shape[1]):
            for restart in range(self.restarts):
                todo = (~state.found & ((level == levels - 1) if top_only else (level < levels))).nonzero().squeeze(1)
                if probes is not None and top_only and len(todo):
                    probes[level, restart] = _Kept(x, budget)
                kept = None if probes is None else probes.get((level, restart))
                # Forward passes only, with no activations kept for a backward pass: twice a
                # gradient attack's rows cost the same per row (the CNN on a CPU: 17-18 us per row
                # from 192 to 512 rows, 27 at 768). Even chunks: every row runs the whole budget
                # unless it is broken, so a small last chunk would cost nearly a full one.
                rows = 2 * max_rows if max_rows else max(len(todo), 1)
                for pts in todo.tensor_split(math.ceil(len(todo) / rows)) if len(todo) else ():
                    resume = kept.at(pts) if kept is not None and not top_only else None
                    adv, m, q = self._search(model, x[pts], y[pts], eps[pts, level], norm, rng[pts].fold(restart), budget, resume)
                    if top_only and kept is not None:
                        kept.put(pts, adv, m)
                    state.queries[pts, level] += q
                    state.record(pts, level, adv, m, norm, last=level == levels[pts] - 1)

    def _search(self, model, x, y, eps, norm, rng, budget, resume=None):
        """One search on a batch at radii ``eps`` (N,), at most ``budget`` proposals: the best point
        per row, its margin and the queries it spent. ``resume`` (kept, best, margin, done): the
        rows ``kept`` go on from that best point and margin after ``done`` proposals (not counted
        again); the others first catch up with them."""
        n, c, h, w = x.shape
        e = per_point(eps, x)
        if norm.name == "linf":
            start = x + e * rng.signs((c, 1, w), "square-start", dtype=x.dtype)
        elif norm.name == "l2":
            start = x + e * _unit(self._l2_start(rng, x))
        else:
            raise ValueError(f"square supports linf and l2, not {norm.name}")
        fresh = torch.ones(n, dtype=torch.bool, device=x.device) if resume is None else ~resume[0]
        best = start.clamp(0, 1)
        loss = torch.zeros(n, dtype=x.dtype, device=x.device)
        if fresh.any():
            loss[fresh] = margin(model(best[fresh]), y[fresh])
        queries = fresh.long()
        first = 0
        if resume is not None:
            kept, kept_best, kept_loss, first = resume
            self._steps(model, x, y, e, eps, norm, rng, best, loss, queries, fresh.nonzero().squeeze(1), 0, first)
            best[kept], loss[kept] = kept_best[kept], kept_loss[kept]
        self._steps(model, x, y, e, eps, norm, rng, best, loss, queries, torch.arange(n, device=x.device), first, budget)
        return best, loss, queries

    def _steps(self, model, x, y, e, eps, norm, rng, best, loss, queries, rows, first, last):
        """Proposals ``first`` ... ``last`` - 1 for ``rows``, updating best, loss and queries in place."""
        _, c, h, w = x.shape
        for i in range(first, last):
            rows = rows[loss[rows] > 0]
            if not len(rows):
                break
            p = square_fraction(i, self.p_init, self.queries, self.rescale)
            r = rng[rows]
            if norm.name == "linf":
                s = min(max(round(math.sqrt(p * h * w)), 1), h, w)
                bits = r.bits((2 + c,), i)  # the window, then a sign per channel
                cells = _cells(*_window(bits, h, w, s), w, c)
                vertex = x[rows].flatten(2).gather(2, cells) + e[rows].view(-1, 1, 1) * to_signs(bits[:, 2:, None], x.dtype)
                proposal = best[rows].flatten(2).scatter(2, cells, vertex.clamp(0, 1)).view(-1, c, h, w)
            else:
                proposal = self._l2_proposal(r, i, x[rows], best[rows], eps[rows], p)
            new = margin(model(proposal), y[rows])
            queries[rows] += 1
            take = (new < loss[rows]) | (new <= 0)
            best[rows[take]] = proposal[take]
            loss[rows[take]] = new[take]

    @staticmethod
    def _l2_start(rng, x):
        """The L2 start's direction: 5 x 5 blocks of the pattern, a random sign per channel and
        a random orientation per block."""
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        first = (h - 5 * s) // 2
        pattern = eta_pattern(s, x.dtype, x.device)
        delta = torch.zeros_like(x)
        k = 0
        for vh in range(first, first + s * (h // s), s):
            for vw in range(first, first + s * (w // s), s):
                if vh + s > h or vw + s > w:
                    continue
                flip = rng.integers(2, "l2-start", k, "flip").bool()
                block = torch.where(flip[:, None, None], pattern.t()[None], pattern[None])
                signs = rng.signs((c, 1, 1), "l2-start", k, "signs", dtype=x.dtype)
                delta[:, :, vh : vh + s, vw : vw + s] += block[:, None] * signs
                k += 1
        return delta

    @staticmethod
    def _l2_proposal(rng, i, x, best, eps, p):
        _, c, h, w = x.shape
        s = max(round(math.sqrt(p * h * w)), 3)
        s = min(s + (s % 2 == 0), h, w)
        delta = (best - x).flatten(2)  # (N, C, H * W); windows are (N, C, s * s), norms per channel
        bits = rng.bits((5 + c,), i)  # two windows, the pattern's orientation, a sign per channel
        rows1, cols1 = _window(bits[:, 0:2], h, w, s)
        rows2, cols2 = _window(bits[:, 2:4], h, w, s)
        cells1, cells2 = _cells(rows1, cols1, w, c), _cells(rows2, cols2, w, c)
        old = delta.gather(2, cells1)
        old_sq = old.square().sum(2, keepdim=True)
        # The union of the two windows: window 1, plus window 2's cells outside it.
        in_rows = (rows2 >= rows1[:, :1]) & (rows2 <= rows1[:, -1:])
        in_cols = (cols2 >= cols1[:, :1]) & (cols2 <= cols1[:, -1:])
        outside1 = ~(in_rows[:, :, None] & in_cols[:, None, :]).flatten(1)[:, None]
        union_sq = old_sq + (delta.gather(2, cells2).square() * outside1).sum(2, keepdim=True)
        flat, turned = _eta(s, x.dtype, x.device)
        pattern = torch.where(to_integers(bits[:, 4], 2).bool()[:, None], turned, flat)[:, None]
        window = pattern * to_signs(bits[:, 5:, None], x.dtype) + old / (old_sq.sqrt() + 1e-12)
        # The new window takes the budget the two windows held, plus what is left under eps.
        free = (eps.to(x.dtype) ** 2 - delta.flatten(1).square().sum(1)).clamp_min(0).view(-1, 1, 1)
        budget = (free / c + union_sq).sqrt()
        window = window / (window.square().sum(2, keepdim=True).sqrt() + 1e-12) * budget
        new = delta.scatter(2, cells2, torch.zeros_like(window)).scatter(2, cells1, window).view_as(x)
        return (x + per_point(eps, x) * _unit(new)).clamp(0, 1)


@functools.lru_cache(maxsize=64)
def _eta(s: int, dtype, device):
    """eta_pattern(s) and its transpose, flattened to (s * s,) (the schedule uses a handful of sizes)."""
    pattern = eta_pattern(s, dtype, device)
    return pattern.flatten(), pattern.t().flatten()


class _Kept:
    """Where the probe's searches at one (level, restart) ended, per point: the best point, its
    margin, and that it ran ``done`` proposals (all of them, unless it broke the point first)."""

    def __init__(self, x, done):
        self.done = done
        self.has = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.best = torch.empty_like(x)
        self.loss = torch.empty(len(x), dtype=x.dtype, device=x.device)

    def put(self, pts, best, loss):
        self.has[pts], self.best[pts], self.loss[pts] = True, best, loss

    def at(self, pts):
        return self.has[pts], self.best[pts], self.loss[pts], self.done


class _Outcome:
    """What a ladder run has found so far, per point: as in study.attacks.gradient, a success at
    distance d counts at its own level, every higher one, and every lower one with eps >= d; a
    point never fooled keeps its lowest-margin point at its last level."""

    def __init__(self, x, eps):
        n = len(x)
        self.x, self.eps = x, eps
        self.x_adv = x.clone()
        self.fooled = torch.zeros(eps.shape, dtype=torch.bool, device=x.device)
        self.found = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.queries = torch.zeros(eps.shape, dtype=torch.long, device=x.device)  # per point and level
        self.best_margin = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)

    def record(self, pts, level, adv, m, norm, last):
        hit = m <= 0
        if hit.any():
            p = pts[hit]
            dist = norm.measure(adv[hit] - self.x[p])
            self.x_adv[p], self.found[p] = adv[hit], True
            self.fooled[p] = (torch.arange(self.eps.shape[1], device=p.device) >= level) | (self.eps[p] >= dist[:, None])
        keep = ~hit & last & (m < self.best_margin[pts])
        self.x_adv[pts[keep]], self.best_margin[pts[keep]] = adv[keep], m[keep]

    def forget(self, points: torch.Tensor):
        """Points (a mask) to search again from the start: what was found for them is dropped."""
        self.found &= ~points
        self.fooled &= ~points[:, None]
        self.x_adv[points] = self.x[points]
        self.best_margin[points] = math.inf

    def result(self, ladder, early_stop) -> AttackResult:
        fooled = self.fooled & early_stop  # without early_stop no row is reported fooled (as every attack)
        return AttackResult(self.x_adv, fooled if ladder else fooled[:, 0], self.queries if ladder else self.queries[:, 0])


def _unit(delta: torch.Tensor) -> torch.Tensor:
    """delta / ||delta||_2 per row (0 stays 0)."""
    norms = delta.flatten(1).norm(dim=1)
    return delta / per_point(torch.where(norms > 0, norms, torch.ones_like(norms)), delta)


def square(
    queries: PosInt = 5000, p_init: Fraction = 0.8, restarts: PosInt = 1, rescale: bool = False,
    probe: Optional[PosInt] = None, escalate: Fraction = 0.01,
) -> Square:
    """AutoAttack's Square: 5,000 queries, p_init 0.8, the schedule unscaled; ``probe``: a first,
    shorter search that must break the share ``escalate`` of the points it searched (at least
    one) before the full budget is spent."""
    return Square(queries=queries, p_init=p_init, restarts=restarts, rescale=rescale, probe=probe, escalate=escalate)


SQUARE_ATTACKS = {"square": square}
