"""Images of the `perturbation` artifact (``study.artifacts``): test points, their minimal L2
perturbation and the adversarial example, as one PNG (PIL; no plotting library).

``perturbation_grid(pert, df, point=0)``: one row per trial, sorted by lambda (the `l2` training
axis) or, in a study that does not vary it, by label; columns x | delta | x_adv. delta is drawn on
a diverging gray scale, mid gray = 0, scaled by its own largest |delta| per row (so a faint
perturbation is as visible as a strong one); white = +max|delta|, black = -max|delta|.
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFont

from analysis.load import eager

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


def _font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _to_rgb(img: np.ndarray) -> np.ndarray:
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
    font, small = _font(), _font(FONT_SIZE - 1)
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
            img = Image.fromarray(_to_rgb(shown[kind])).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(img, (LABEL_W + PAD + j * (cell_w + PAD), y0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
