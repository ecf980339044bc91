"""Unrestricted adversarial examples (Song et al. 2018), and the confound the epsilon text names.

No distance bound: images are generated from scratch by the study's AC-GAN (study.acgan). For
each source class y_s, ``per_class`` random codes z0 ~ N(0, I) (seeded per point); Adam on z
minimises Song et al.'s loss

    lambda_target * L_target + lambda_latent * mean_i max(|z_i - z0_i| - latent_eps, 0) + lambda_aux * CE(c(G(z, y_s)), y_s)

where L_target is log p_f(y_s | G(z, y_s)) (``untargeted``: away from y_s) or
-log p_f(y_t | G(z, y_s)) (``targeted``, y_t a random other class per point), the middle term
keeps z near z0 (a soft Linf constraint), and the AC-GAN's auxiliary classifier c keeps the
image of class y_s. A point succeeds at the first step where the target model f answers not
y_s (untargeted) or y_t (targeted) while c still answers y_s; from then its code is kept.

Rows, per mode and step budget (a point counts as broken when it succeeded within the budget):
success rate, mean latent distance ||z - z0||_2 of the successes, mean steps spent per point
(found or not; each step one forward and backward pass through G, f and c), and the confound: an independent judge
(``judge``, a model trained here once that the search never saw) classifies each success. The
share it still calls y_s (``judge_source_rate``) is what an adversarial example should be; the
rest (``judge_error_rate``) is a generated image even the judge gets wrong: a generalisation
error, or an image that is no longer a y_s at all, counted as "adversarial" by the success rate.
``generated_acc`` and ``judge_generated_acc``: the target's and the judge's accuracy on the
unsearched samples G(z0, y_s), the generator's own label noise.

Artifact ``unrestricted_examples``: per success (up to ``examples`` per class, mode): its
classes, the three models' answers, its step and distance, and its pixels (the report's grid).
"""

from __future__ import annotations

from typing import Annotated, Literal

import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field

from study.generative import image_grid
from study.intervals import clopper_pearson
from study.registry import Entry, Evaluator
from study.seeds import stream_seed
from study.spec.training import TrainConfig
from study.train import predict
from study.types import Distinct, NonNegFloat, PosFloat, PosInt


def _default_judge() -> TrainConfig:
    # A model unlike the ones a study usually searches against: a CNN adversarially trained with FGSM.
    return TrainConfig.model_validate({"model": "cnn", "epochs": 8, "lr": 2e-3, "adversarial": {"attack": "fgsm", "norm": "linf", "eps": 0.3, "alpha": 0.5}})


class Options(Entry):
    mode: Annotated[list[Literal["untargeted", "targeted"]], Field(min_length=1), Distinct] = ["untargeted"]
    per_class: PosInt = 20  # random codes z0 per source class
    budget: Annotated[list[PosInt], Field(min_length=1), Distinct] = [10, 50, 200]  # Adam steps, read at each budget
    lr: PosFloat = 0.01
    latent_eps: NonNegFloat = 0.1  # the soft constraint's free radius around z0, per coordinate
    lambda_target: NonNegFloat = 100.0
    lambda_latent: NonNegFloat = 100.0
    lambda_aux: NonNegFloat = 1.0
    judge: TrainConfig = Field(default_factory=_default_judge)  # trained once before the trials; never searched against
    examples: Annotated[int, Field(ge=0)] = 4  # images per class and mode kept for the report

    def uses_acgan(self) -> bool:
        return True

    def judges(self) -> list[TrainConfig]:
        return [self.judge]

    def uses_training_split(self) -> bool:
        return True  # the judge trains on it

    def n_rows(self, linear_binary: bool = False) -> int:
        return len(self.mode) * len(self.budget)

    def data_problem(self, n_eval: int, n_classes: int) -> str | None:
        if "targeted" in self.mode and n_classes < 2:
            return "mode: targeted needs another class to target"
        return None


COLUMNS = (
    ("unrestricted_mode", pa.string(), "evaluation", "unrestricted: untargeted (away from the source class) or targeted (a random other class per point)"),
    ("judge_error_rate", pa.float64(), "metric", "unrestricted: share of the successes the independent judge also gets wrong (a generalisation error or a changed class, not an adversarial example)"),
    ("judge_error_low", pa.float64(), "metric", "unrestricted: judge_error_rate's 95% Clopper-Pearson interval over the successes, lower end"),
    ("judge_error_high", pa.float64(), "metric", "unrestricted: judge_error_rate's 95% Clopper-Pearson interval over the successes, upper end"),
    ("judge_source_rate", pa.float64(), "metric", "unrestricted: share of the successes the independent judge still calls the source class"),
    ("generated_acc", pa.float64(), "metric", "unrestricted: the target model's accuracy on the unsearched samples G(z0, y_s)"),
    ("judge_generated_acc", pa.float64(), "metric", "unrestricted: the judge's accuracy on the unsearched samples G(z0, y_s)"),
)


def _loss(logits, aux, z, z0, ys, target, options: Options) -> torch.Tensor:
    """Song et al.'s loss per point."""
    logp = F.log_softmax(logits, dim=1)
    lead = logp.gather(1, ys[:, None]).squeeze(1) if target is None else -logp.gather(1, target[:, None]).squeeze(1)
    latent = (z - z0).abs().sub(options.latent_eps).clamp_min(0).mean(1)
    return options.lambda_target * lead + options.lambda_latent * latent + options.lambda_aux * F.cross_entropy(aux, ys, reduction="none")


def search(model, acgan, ys, z0, target, options: Options) -> tuple[torch.Tensor, torch.Tensor]:
    """(first success step per point, -1 where none within the largest budget; the code kept at
    that step, z0 where none). Step 0 is z0 itself."""
    model.eval()

    def fooled(z):
        with torch.no_grad():
            x = acgan.generate(z, ys)
            pred, aux = model(x).argmax(1), acgan.aux_logits(x).argmax(1)
        return ((pred != ys) if target is None else (pred == target)) & (aux == ys)

    first = torch.full((len(ys),), -1, dtype=torch.long, device=ys.device)
    kept = z0.clone()
    done = fooled(z0)
    first[done] = 0
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=options.lr)
    for step in range(1, max(options.budget) + 1):
        if done.all():
            break
        x = acgan.generate(z, ys)
        loss = _loss(model(x), acgan.aux_logits(x), z, z0, ys, target, options)
        opt.zero_grad(set_to_none=True)
        loss[~done].sum().backward()
        opt.step()
        with torch.no_grad():
            z[done] = kept[done]  # a success keeps its code (Adam's momentum would move it)
        now = fooled(z.detach()) & ~done
        first[now], kept[now] = step, z.detach()[now]
        done |= now
    return first, kept


def evaluate(ctx, options: Options) -> list[dict]:
    acgan, model = ctx.acgan, ctx.model
    judge = ctx.stored_model(options.judge).eval()
    device = ctx.x.device
    n_classes = ctx.n_classes
    ys = torch.arange(n_classes, device=device).repeat_interleave(options.per_class)
    gen = torch.Generator().manual_seed(stream_seed(ctx.seed, "unrestricted", options.per_class))
    z0 = torch.randn(len(ys), acgan.latent_dim, generator=gen).to(device)
    others = (ys + 1 + torch.randint(n_classes - 1, (len(ys),), generator=gen).to(device)) % n_classes if n_classes > 1 else ys
    with torch.no_grad():
        x0 = acgan.generate(z0, ys)
    generated_acc = (predict(model, x0) == ys).double().mean().item()
    judge_generated_acc = (predict(judge, x0) == ys).double().mean().item()
    rows = []
    art = {k: [] for k in ("mode", "source", "target", "model_pred", "judge_pred", "aux_pred", "step", "latent_dist", "height", "width", "pixels")}
    for mode in options.mode:
        target = None if mode == "untargeted" else others
        first, kept = search(model, acgan, ys, z0, target, options)
        with torch.no_grad():
            x = acgan.generate(kept, ys)
            model_pred, judge_pred, aux_pred = predict(model, x), predict(judge, x), acgan.aux_logits(x).argmax(1)
        dist = (kept - z0).norm(dim=1)
        for budget in sorted(options.budget):
            ok = (first >= 0) & (first <= budget)
            n_ok = int(ok.sum())
            rows.append(dict(
                evaluator="unrestricted", unrestricted_mode=mode, steps=budget, n_eval=len(ys), clean_acc=ctx.clean_acc,
                success_rate=ok.double().mean().item(),
                latent_dist_mean=dist[ok].mean().item() if n_ok else None,
                queries_mean=torch.where(ok, first, budget).double().mean().item(),
                judge_error_rate=(judge_pred[ok] != ys[ok]).double().mean().item() if n_ok else None,
                **dict(zip(("judge_error_low", "judge_error_high"), (float(v) for v in clopper_pearson(int((judge_pred[ok] != ys[ok]).sum()), n_ok)) if n_ok else (None, None))),
                judge_source_rate=(judge_pred[ok] == ys[ok]).double().mean().item() if n_ok else None,
                generated_acc=generated_acc, judge_generated_acc=judge_generated_acc,
            ))
        ok = first >= 0
        for c in range(n_classes):
            for i in ok.logical_and(ys == c).nonzero().squeeze(1)[: options.examples].tolist():
                values = dict(
                    mode=mode, source=c, target=int(target[i]) if target is not None else None, model_pred=int(model_pred[i]),
                    judge_pred=int(judge_pred[i]), aux_pred=int(aux_pred[i]), step=int(first[i]), latent_dist=float(dist[i]),
                    height=x.shape[2], width=x.shape[3], pixels=x[i].flatten().tolist(),
                )
                for k, v in values.items():
                    art[k].append(v)
    ctx.write_artifact("unrestricted_examples", art)
    return rows


def report(rows, inputs) -> list[tuple]:
    import polars as pl

    out = [(
        "Unrestricted adversarial examples",
        "Song et al.'s latent search through the study's AC-GAN, per model, mode and step budget: the share of generated points whose image the model "
        "misclassifies (untargeted) or calls the target (targeted) while the AC-GAN's auxiliary classifier still sees the source class, their mean latent "
        "distance and steps; judge_source: of those, the share the independent judge still calls the source class (adversarial); judge_error: the share "
        "it gets wrong too (a generalisation error or a changed class, which the success rate counts as adversarial), with its 95% Clopper-Pearson interval (low, high); generated_acc / judge_generated_acc: "
        "accuracy on the unsearched samples.",
        rows.sort("label", "unrestricted_mode", "steps").select(
            "label", pl.col("unrestricted_mode").alias("mode"), pl.col("steps").alias("budget"), pl.col("success_rate").round(3),
            pl.col("latent_dist_mean").round(3), pl.col("queries_mean").round(1), pl.col("judge_source_rate").round(3).alias("judge_source"),
            pl.col("judge_error_rate").round(3).alias("judge_error"), pl.col("judge_error_low").round(3).alias("low"), pl.col("judge_error_high").round(3).alias("high"),
            pl.col("generated_acc").round(3), pl.col("judge_generated_acc").round(3),
        ),
    )]
    examples = inputs.found.get("unrestricted_examples")
    if examples is not None and examples.height:
        first = rows.sort("label").row(0, named=True)
        mine = examples.filter(pl.col("trial_id") == first["trial_id"])
        for (mode,), part in mine.group_by("mode", maintain_order=True):
            part = part.sort("source")
            h, w = part["height"][0], part["width"][0]
            images = torch.tensor(part["pixels"].to_list()).view(len(part), -1, h, w)
            caption = "; ".join(f"{r['source']}->{r['model_pred']} (judge {r['judge_pred']})" for r in part.iter_rows(named=True))
            out.append((
                f"unrestricted-{mode}", f"Unrestricted adversarial examples ({mode}), {first['label']}",
                f"Generated successes, in source-class order, four columns: source class -> the model's answer (the judge's answer): {caption}.",
                _enlarged(image_grid(images, cols=4), 4),
            ))
    return out


def _enlarged(png: bytes, factor: int) -> bytes:
    """The PNG ``factor`` times larger (nearest neighbour: pixels stay pixels)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png))
    buf = io.BytesIO()
    image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report)
