"""Images of artifacts (``study.artifacts``) as PNGs (PIL; no plotting library).

``perturbation_grid(pert, df, point=0)``: the `perturbation` artifact -- test points, their
minimal L2 perturbation and the adversarial example. One row per trial, sorted by lambda (the `l2`
training axis) or, in a study that does not vary it, by label; columns x | delta | x_adv. delta is
drawn on a diverging gray scale, mid gray = 0, scaled by its own largest |delta| per row (so a
faint perturbation is as visible as a strong one); white = +max|delta|, black = -max|delta|.

``natural_strip(images, df)``: the `natural_images` artifact -- per trial a group of rows x,
G(I(x)) and the natural adversary G(z*) of each latent search, a column per point, with the class
and the model's prediction under each image and the adversary's latent distance.

``upscale(png, factor)``: a PNG enlarged by nearest neighbour (the generator's small grids).
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont

from analysis.load import eager
from study.names import LATENT_KINDS as SEARCHES

KINDS = ("x", "delta", "x_adv")
HEADERS = ("x", "delta (scaled)", "x + delta")
SCALE = 3  # nearest-neighbour upscale: a 28 x 28 digit becomes 84 x 84
PAD = 8  # px between and around images
LABEL_W = 170  # px of the label column on the left
HEADER_H = 24  # px of the column headers
FONT_SIZE = 13
BACKGROUND = (255, 255, 255)


def grid_size(n_rows: int, height: int, width: int, scale: int = SCALE) -> tuple[int, int]:
    """(width, height) in px of a grid of ``n_rows`` rows of height x width images."""
    cell_w, cell_h = width * scale, height * scale
    return LABEL_W + len(KINDS) * (cell_w + PAD) + PAD, HEADER_H + n_rows * (cell_h + PAD) + PAD


def load_font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def to_rgb(img: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8."""
    img = np.clip(img, 0.0, 1.0)
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    return (img[:3].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def rows(pert: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, point: int = 0) -> list[dict]:
    """The trials of the grid in row order, as dicts: trial_id, label, l2 (lambda; None when the
    study does not vary it), l2_delta (||delta||_2), max_delta (max |delta|), and x, delta, x_adv
    as (C, H, W) numpy arrays. Trials without ``point`` are left out."""
    df = eager(frame)
    at = pert.filter(pl.col("point") == point)
    if at.is_empty():
        raise ValueError(f"no perturbation artifact rows for point {point}")
    trials = df.select("trial_id", "label", *(c for c in ("l2",) if c in df.columns)).unique("trial_id")
    if "l2" not in trials.columns:
        trials = trials.with_columns(l2=pl.lit(None, dtype=pl.Float64))
    by_lambda = trials.get_column("l2").drop_nulls().n_unique() > 1
    if not by_lambda:
        trials = trials.with_columns(l2=pl.lit(None, dtype=pl.Float64))
    out = []
    for tid, group in at.group_by("trial_id", maintain_order=True):
        meta = trials.filter(pl.col("trial_id") == tid[0])
        r0 = group.row(0, named=True)
        shape = (r0["channels"], r0["height"], r0["width"])
        imgs = {k: np.asarray(group.filter(pl.col("kind") == k).get_column("pixels").first(), dtype=np.float64).reshape(shape) for k in KINDS}
        out.append({
            "trial_id": tid[0],
            "label": meta.get_column("label").first() if not meta.is_empty() else tid[0],
            "l2": meta.get_column("l2").first() if not meta.is_empty() else None,
            "l2_delta": r0["l2"],
            "max_delta": float(np.abs(imgs["delta"]).max()),
            **imgs,
        })
    key = (lambda r: (r["l2"] is None, r["l2"] or 0.0, str(r["label"]))) if by_lambda else (lambda r: str(r["label"]))
    return sorted(out, key=key)


def perturbation_grid(pert: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, point: int = 0, scale: int = SCALE) -> bytes:
    """PNG bytes: for test ``point``, one row per trial (``rows``) with x | delta | x_adv,
    upscaled ``scale`` times (nearest neighbour), each row labelled with lambda (or the trial's
    label), ||delta||_2 and the max |delta| its delta column is scaled by."""
    table = rows(pert, frame, point)
    c, h, w = table[0]["x"].shape
    width, height = grid_size(len(table), h, w, scale)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font, small = load_font(), load_font(FONT_SIZE - 1)
    cell_w, cell_h = w * scale, h * scale
    for j, head in enumerate(HEADERS):
        x0 = LABEL_W + PAD + j * (cell_w + PAD)
        draw.text((x0 + cell_w / 2, HEADER_H / 2), head, fill=(0, 0, 0), font=small, anchor="mm")
    for i, r in enumerate(table):
        y0 = HEADER_H + PAD + i * (cell_h + PAD)
        top = f"lambda = {r['l2']:g}" if r["l2"] is not None else str(r["label"])
        lines = [top, f"||delta||_2 = {r['l2_delta']:.3f}", f"max |delta| = {r['max_delta']:.3f}"]
        draw.multiline_text((PAD, y0 + cell_h / 2), "\n".join(lines), fill=(0, 0, 0), font=font, anchor="lm", spacing=4)
        m = r["max_delta"] if r["max_delta"] > 0 else 1.0
        shown = {"x": r["x"], "delta": 0.5 + 0.5 * r["delta"] / m, "x_adv": r["x_adv"]}
        for j, kind in enumerate(KINDS):
            img = Image.fromarray(to_rgb(shown[kind])).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(img, (LABEL_W + PAD + j * (cell_w + PAD), y0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


STRIP_TITLE_H = 24  # px of a trial's title band (its label) above its rows
STRIP_TEXT_H = (18, 32)  # px under each image: "class -> prediction" (x, G(I(x))), and the latent distance (adversaries)
STRIP_LABEL_W = 110  # px of the row names on the left
MISSING = (205, 205, 205)  # an adversary the search did not find
WRONG = (200, 0, 0)  # the text colour of a prediction that differs from the class


def strip_size(n_trials: int, n_points: int, n_searches: int, height: int, width: int, scale: int = SCALE) -> tuple[int, int]:
    """(width, height) in px of a natural strip of ``n_trials`` row groups of 2 + ``n_searches``
    rows (x, G(I(x)), an adversary per search) and ``n_points`` columns of height x width images."""
    cell_w, cell_h = width * scale, height * scale
    one, two = STRIP_TEXT_H
    group_h = STRIP_TITLE_H + 2 * (cell_h + one + PAD) + n_searches * (cell_h + two + PAD)
    return STRIP_LABEL_W + n_points * (cell_w + PAD) + PAD, n_trials * group_h + PAD


def strip_data(images: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, points: list[int] | None = None) -> tuple[list[str], list[int], list[dict]]:
    """What ``natural_strip`` draws: the searches (iterative, hybrid, then others), the points
    (ascending; ``points``, or default every one the artifact has) and one dict per trial, by
    label: trial_id, label, y (point -> its class) and cells (``x``, ``reconstruction`` and each
    search -> point -> a dict of image ((C, H, W) pixels, or None), pred (the model's
    prediction), dist (the latent distance) and missing (None; ``not found`` where the search
    found no adversary; ``not run`` where the trial has no images of that search)). A point a
    trial lacks has no cells. Only the trials ``frame`` has rows of; raises ValueError when none
    are left."""
    labels = eager(frame).select("trial_id", "label").unique("trial_id")
    art = images.join(labels.rename({"label": "trial_label"}), on="trial_id")
    if points is not None:
        art = art.filter(pl.col("point").is_in(points))
    if art.is_empty():
        raise ValueError("no natural_images artifact rows of the result rows' trials" + ("" if points is None else f" at points {points}"))
    present = art.get_column("latent_search").unique().to_list()
    searches = [s for s in SEARCHES if s in present] + sorted(s for s in present if s not in SEARCHES)
    trials = []
    for (trial_id, trial_label), trial in art.sort("trial_label", "trial_id").group_by("trial_id", "trial_label", maintain_order=True):
        cells: dict[str, dict[int, dict]] = {column: {} for column in ("x", "reconstruction", *searches)}
        y = {}
        for (point,), at in trial.group_by("point"):
            y[point] = at.get_column("label").first()
            for kind in ("x", "reconstruction"):
                r = at.filter(pl.col("kind") == kind).row(0, named=True)
                cells[kind][point] = dict(image=_pixels(r), pred=r["pred"], dist=None, missing=None)
            for search in searches:
                adversary = at.filter(pl.col("kind") == "natural", pl.col("latent_search") == search)
                if adversary.is_empty():
                    cells[search][point] = dict(image=None, pred=None, dist=None, missing="not run")
                    continue
                r = adversary.row(0, named=True)
                img = _pixels(r)
                found = bool(np.isfinite(img).all())  # NaN pixels: the search found nothing
                cells[search][point] = dict(image=img if found else None, pred=r["pred"], dist=r["latent_dist"], missing=None if found else "not found")
        trials.append(dict(trial_id=trial_id, label=trial_label, y=y, cells=cells))
    return searches, sorted(art.get_column("point").unique().to_list()), trials


def _pixels(r: dict) -> np.ndarray:
    return np.asarray(r["pixels"], dtype=np.float64).reshape(r["channels"], r["height"], r["width"])


def natural_strip(images: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, points: list[int] | None = None, scale: int = SCALE) -> bytes:
    """PNG bytes of the `natural_images` artifact (``strip_data``): per trial (by label) a group
    titled with its label and rows x | G(I(x)) | the natural adversary of each search, a column
    per point, upscaled ``scale`` times (nearest neighbour). Under each image ``class ->
    prediction`` (red where they differ), under an adversary also its latent distance d =
    ||z* - I(x)||; an adversary not found is a gray cell."""
    searches, columns, trials = strip_data(images, frame, points)
    _, h, w = next(iter(trials[0]["cells"]["x"].values()))["image"].shape
    width, height = strip_size(len(trials), len(columns), len(searches), h, w, scale)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font, small, title = load_font(), load_font(FONT_SIZE - 1), load_font(FONT_SIZE + 2)
    cell_w, cell_h = w * scale, h * scale
    one, two = STRIP_TEXT_H
    rows = [("x", "x", one), ("reconstruction", "G(I(x))", one), *((s, f"natural\n({s})", two) for s in searches)]
    y0 = 0
    for t, trial in enumerate(trials):
        if t:
            draw.line([(PAD, y0 + 2), (width - PAD, y0 + 2)], fill=(160, 160, 160), width=1)
        draw.text((PAD, y0 + STRIP_TITLE_H / 2 + 2), str(trial["label"]), fill=(0, 0, 0), font=title, anchor="lm")
        y0 += STRIP_TITLE_H
        for row, name, text_h in rows:
            draw.multiline_text((PAD, y0 + PAD + cell_h / 2), name, fill=(0, 0, 0), font=font, anchor="lm", spacing=3)
            for j, point in enumerate(columns):
                cell = trial["cells"][row].get(point)
                if cell is None:  # a point this trial lacks
                    continue
                x0, top = STRIP_LABEL_W + PAD + j * (cell_w + PAD), y0 + PAD
                if cell["missing"]:
                    draw.rectangle([x0, top, x0 + cell_w - 1, top + cell_h - 1], fill=MISSING)
                    draw.text((x0 + cell_w / 2, top + cell_h / 2), cell["missing"], fill=(90, 90, 90), font=small, anchor="mm")
                    continue
                canvas.paste(Image.fromarray(to_rgb(cell["image"])).resize((cell_w, cell_h), Image.NEAREST), (x0, top))
                lines = [f"{trial['y'][point]} -> {cell['pred']}"] + ([f"d = {cell['dist']:.3g}"] if cell["dist"] is not None else [])
                colour = (0, 0, 0) if cell["pred"] == trial["y"][point] else WRONG
                draw.multiline_text((x0 + cell_w / 2, top + cell_h + 3), "\n".join(lines), fill=colour, font=small, anchor="ma", align="center", spacing=2)
            y0 += cell_h + text_h + PAD
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def upscale(png: bytes, factor: int = 2) -> bytes:
    """``png`` enlarged ``factor`` times by nearest neighbour (pixels stay sharp)."""
    img = Image.open(io.BytesIO(png))
    buf = io.BytesIO()
    img.resize((img.width * factor, img.height * factor), Image.NEAREST).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
