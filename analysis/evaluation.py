"""Is the evaluation behind a robustness number sound? The per-attack log and the usual signs of
a broken evaluation (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Croce & Hein
2020), from the robustness rows alone.

``attack_log``: per norm and eps, the points each attack broke, summed over models; in a cascade
these are the points it broke that no earlier attack had (AutoAttack's log), so a late attack
that breaks many is news. ``evaluation_warnings``: one line per sign, naming the model and the point:

* a black-box attack (Square) breaks points every gradient attack left robust: the gradients
  mislead (masking, obfuscation);
* a scale-invariant attack (DLR: APGD-DLR, APGD-T; FMN) breaks far more than cross-entropy: the
  softmax saturates and hides cross-entropy's gradient;
* cross-entropy's gradient is exactly 0 at many points (``vanishing_grad``): gradient attacks on
  cross-entropy cannot start there, whatever the ensemble;
* any of the three above where no attack of the model's evaluation is minimal-norm (FMN, which
  the default runs, or FAB-T): on masked models that costs about a point of robust accuracy, so
  the line recommends adding one, or `attacks: autoattack` for a published figure;
* robust accuracy stays above ~0 at an unbounded radius (Linf eps >= 1 allows any image);
* more iterations of an attack give a higher robust accuracy;
* robust accuracy rises with eps;
* robust accuracy above the bound the data alone sets (the ``trivial`` evaluator's
  ``robust_bound``: points within eps of a misclassified image of their own class are broken
  without an attack), so the attacks missed points an eps-step reaches.
"""

from __future__ import annotations

import polars as pl

from analysis.load import eager

GRADIENT = ("fgsm", "bim", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "fmn", "fmn-t", "cw")
BLACK_BOX = ("square",)
CROSS_ENTROPY = ("pgd", "bim", "apgd-ce")
SCALE_INVARIANT = ("apgd-dlr", "apgd-t", "fmn", "fmn-t")  # DLR losses; FMN: normalised steps on the margin, its distance estimate a ratio
FAR_MORE = 0.05  # a share of the evaluation points: "far more" than cross-entropy broke
NEAR_ZERO = 0.01  # robust accuracy at an unbounded radius
NOISE = 0.01  # robust-accuracy differences smaller than this are not a sign
VANISHING = 0.05  # share of points with an exactly zero cross-entropy gradient


def _robustness(frame) -> pl.DataFrame:
    df = eager(frame)
    return df.filter(pl.col("evaluator") == "robustness", pl.col("eps_rule").is_null(), pl.col("eps") > 0)


def attack_log(frame) -> pl.DataFrame:
    """Per ensemble, norm and eps: the points each attack broke (summed over every model), in
    running order, then `worst` (all points broken). For a cascade, an attack's count is what it
    added to the attacks before it."""
    df = _robustness(frame).filter(pl.col("ensemble").is_not_null(), pl.col("broken").is_not_null())
    if df.is_empty():
        return pl.DataFrame()
    out = []
    for (ensemble, cascade), part in df.group_by(["ensemble", "cascade"], maintain_order=True):
        order = [*ensemble.split("+"), "worst"]
        table = (
            part.group_by("norm", "eps", "attack").agg(pl.col("broken").sum(), pl.col("trial_id").n_unique().alias("models"))
            .pivot(on="attack", index=["norm", "eps", "models"], values="broken")
            .select("norm", "eps", "models", *[a for a in order if a in part.get_column("attack").unique()])
            .with_columns(ensemble=pl.lit(ensemble), cascade=pl.lit(cascade))
            .sort("norm", "eps")
        )
        out.append(table)
    return pl.concat(out, how="diagonal")


def evaluation_warnings(frame) -> list[str]:
    """One line per sign of a broken evaluation (see the module docstring), each naming the model
    (label), the norm and eps, and the numbers behind it."""
    df = _robustness(frame)
    bounds = _bounds(frame)
    out = []
    for label, part in sorted(df.group_by("label"), key=lambda kv: str(kv[0][0])):
        label = label[0]
        masked = _vanishing(label, part) + _black_box(label, part) + _scale_invariant(label, part)
        out += masked + _without_minimal(label, part, masked) + _unbounded(label, part) + _more_iterations(label, part) + _rising(label, part)
        out += _above_bound(label, part, bounds)
    return out


def _bounds(frame) -> pl.DataFrame:
    """The smallest ``robust_bound`` per trial, norm and eps over the trivial evaluator's pools."""
    df = eager(frame)
    if "robust_bound" not in df.columns:
        return pl.DataFrame(schema={"trial_id": pl.String, "norm": pl.String, "eps": pl.Float64, "robust_bound": pl.Float64, "n_eval": pl.Int64})
    rows = df.filter(pl.col("evaluator") == "trivial")
    return rows.group_by("trial_id", "norm", "eps").agg(pl.col("robust_bound").min(), pl.col("n_eval").first())


def _point(row: dict) -> str:
    return f"{row['norm']} {row['eps']:g}"


def _vanishing(label, part) -> list[str]:
    share = part.get_column("vanishing_grad").drop_nulls().max()
    if share is None or share <= VANISHING:
        return []
    robust = set(part.get_column("ensemble").drop_nulls().unique().str.split("+").explode().to_list())
    fix = "" if robust & {*SCALE_INVARIANT, *BLACK_BOX} else "; add apgd-t or square (the default evaluation has both)"
    return [f"{label}: cross-entropy's input gradient is exactly 0 at {share:.0%} of the points (a saturated softmax): gradient attacks on cross-entropy cannot move them{fix}"]


def _black_box(label, part) -> list[str]:
    out = []
    cascade = part.filter(pl.col("cascade"), pl.col("attack").is_in(BLACK_BOX), pl.col("broken") > 0)
    for row in cascade.iter_rows(named=True):
        out.append(f"{label}: {row['attack']} broke {row['broken']} points at {_point(row)} that every gradient attack before it left robust (gradients may be masked)")
    alone = part.filter(~pl.col("cascade"))
    for (norm, eps), at in alone.group_by("norm", "eps"):
        grad = at.filter(pl.col("attack").is_in(GRADIENT))
        box = at.filter(pl.col("attack").is_in(BLACK_BOX))
        if grad.is_empty() or box.is_empty():
            continue
        best_grad, best_box = grad.get_column("robust_acc").min(), box.get_column("robust_acc").min()
        if best_box < best_grad - NOISE:
            out.append(f"{label}: square's robust accuracy at {norm} {eps:g} is {best_box:.3f}, below every gradient attack's ({best_grad:.3f}): gradients may be masked")
    return out


def _scale_invariant(label, part) -> list[str]:
    out = []
    for (norm, eps), at in part.group_by("norm", "eps"):
        n = at.get_column("n_eval").max()
        cascade = at.filter(pl.col("cascade"))
        ce = cascade.filter(pl.col("attack").is_in(CROSS_ENTROPY)).get_column("broken").sum()
        dlr = cascade.filter(pl.col("attack").is_in(SCALE_INVARIANT)).get_column("broken").sum()
        if not cascade.is_empty() and dlr > FAR_MORE * n and dlr > ce:
            out.append(f"{label}: at {norm} {eps:g} the scale-invariant attacks (DLR, FMN) broke {dlr} points cross-entropy left robust (cross-entropy broke {ce}): the softmax may saturate and mask its gradient")
        alone = at.filter(~pl.col("cascade"))
        ce_acc = alone.filter(pl.col("attack").is_in(CROSS_ENTROPY)).get_column("robust_acc").min()
        dlr_acc = alone.filter(pl.col("attack").is_in(SCALE_INVARIANT)).get_column("robust_acc").min()
        if ce_acc is not None and dlr_acc is not None and dlr_acc < ce_acc - FAR_MORE:
            out.append(f"{label}: at {norm} {eps:g} a scale-invariant attack (DLR, FMN) gives {dlr_acc:.3f} robust accuracy and cross-entropy {ce_acc:.3f}: the softmax may saturate and mask its gradient")
    return out


def _without_minimal(label, part, masked: list[str]) -> list[str]:
    """Masked gradients, and no evaluation of this model ran a minimal-norm attack: on such
    models APGD-CE, screened APGD-T and Square left 1.0-1.4 points that AutoAttack's FAB-T
    breaks, and FMN most of them (docs/benchmarks.md)."""
    ensembles = part.get_column("ensemble").drop_nulls().unique().str.split("+").explode().to_list()
    if not masked or {"fab-t", "fmn", "fmn-t"} & set(ensembles):
        return []
    return [f"{label}: its gradients look masked and its evaluation ran no minimal-norm attack (fmn or fab-t); on such models the APGD attacks and Square leave about 1 point in 100 standing that AutoAttack breaks: add fmn, or for a figure to publish evaluate it with `attacks: autoattack`"]


def _unbounded(label, part) -> list[str]:
    worst = part.filter(pl.col("attack") == "worst", pl.col("norm") == "linf", pl.col("eps") >= 1, pl.col("robust_acc") > NEAR_ZERO)
    return [f"{label}: robust accuracy {row['robust_acc']:.3f} at {_point(row)}, where any image is reachable: the attacks do not work on this model" for row in worst.iter_rows(named=True)]


def _more_iterations(label, part) -> list[str]:
    out = []
    alone = part.filter(~pl.col("cascade"), pl.col("steps").is_not_null())
    for (attack, norm, eps), at in alone.group_by("attack", "norm", "eps"):
        if at.get_column("steps").n_unique() < 2:
            continue
        ordered = at.sort("steps")
        steps, acc = ordered.get_column("steps").to_list(), ordered.get_column("robust_acc").to_list()
        for i in range(1, len(steps)):
            if acc[i] > min(acc[:i]) + NOISE:
                out.append(f"{label}: {attack} at {norm} {eps:g}: {steps[i]} iterations give {acc[i]:.3f} robust accuracy, fewer gave {min(acc[:i]):.3f}")
    return out


def _rising(label, part) -> list[str]:
    out = []
    for (options, norm), at in part.filter(pl.col("attack") == "worst").group_by("attack_options", "norm"):
        ordered = at.sort("eps")
        eps, acc = ordered.get_column("eps").to_list(), ordered.get_column("robust_acc").to_list()
        for i in range(1, len(eps)):
            if acc[i] > acc[i - 1] + NOISE:
                out.append(f"{label}: robust accuracy rises from {acc[i - 1]:.3f} at {norm} {eps[i - 1]:g} to {acc[i]:.3f} at {eps[i]:g}")
    return out


def _above_bound(label, part, bounds) -> list[str]:
    worst = part.filter(pl.col("attack") == "worst").select("trial_id", "norm", "eps", "robust_acc", "n_eval").join(bounds, on=["trial_id", "norm", "eps"], suffix="_bound")
    # Same points only (a robustness entry on fewer points has its own share).
    worst = worst.filter(pl.col("n_eval") == pl.col("n_eval_bound"), pl.col("robust_acc") > pl.col("robust_bound") + NOISE)
    return [
        f"{label}: robust accuracy {row['robust_acc']:.3f} at {_point(row)} is above {row['robust_bound']:.3f}, the most the data allows "
        "(points within eps of a misclassified image of their own class): the attacks missed points an eps-step reaches"
        for row in worst.iter_rows(named=True)
    ]
