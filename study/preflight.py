"""Checks of the study's models against the loaded data, before Ray starts or anything is
written: every distinct model builds, its checkpoint (if any) loads into it, and it maps two
of the data's test images to one logit per class. Each problem is one line naming the field."""

from __future__ import annotations

import json
import os

import torch

from study import checkpoints, mc, models, planning
from study.data import Dataset
from study.spec import StudySpec, TrainConfig
from study.train import init_model

# What makes two configs the same model to check (training settings do not change its shape).
_IDENTITY = ("model", "model_args", "normalize", "checkpoint", *models.MODEL_PARAMS)


def candidate_configs(spec: StudySpec) -> list[dict]:
    """Every distinct model the study can build: the grid's, or for a sampled search each model
    option with each checkpoint option."""
    configs = planning.grid_configs(spec)
    if configs is None:
        model_axis, ckpt_axis = spec.train["model"], spec.train.get("checkpoint")
        models_ = model_axis.values if model_axis.kind in ("value", "grid", "choice") else []
        ckpts = ckpt_axis.values if ckpt_axis is not None else [None]
        configs = [planning.resolve(spec, {"model": m, **({"checkpoint": c} if c is not None else {})}) for m in models_ for c in ckpts]
    unique = {}
    for c in configs:
        unique.setdefault(json.dumps({k: c.get(k) for k in _IDENTITY}, sort_keys=True), c)
    return list(unique.values())


def check_models(spec: StudySpec, ds: Dataset, workdir: str | None = None) -> str | None:
    """The first model that does not fit the data, as ``field: message``; None when all fit."""
    workdir = workdir or os.getcwd()
    x = torch.from_numpy(ds.x_test[:2])
    shape = "x".join(map(str, ds.input_shape))
    for raw in candidate_configs(spec):
        cfg = TrainConfig.model_validate(raw)
        field = "train.checkpoint" if cfg.checkpoint else "train.model"
        try:
            model = init_model(cfg, ds.input_shape, ds.n_classes)
        except Exception as e:  # the user's constructor, or a registry model that cannot take this shape
            return f"train.model: {cfg.model} cannot be built for {shape} images and {ds.n_classes} classes: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        if cfg.checkpoint:
            uri = cfg.checkpoint if "://" in cfg.checkpoint or os.path.isabs(cfg.checkpoint) else os.path.join(workdir, cfg.checkpoint)
            try:
                checkpoints.load_into(model, uri)
            except checkpoints.CheckpointError as e:
                return str(e).replace(uri, cfg.checkpoint)
        model.eval()
        declared = models.entry(cfg.model).capabilities
        if "stochastic" in declared and not mc.is_stochastic(model):
            return f"train.model: {cfg.model} declares the capability stochastic but has no study.mc.MCDropout layer with p > 0"
        if "embedding" in declared and not callable(getattr(model, "embed", None)):
            return f"train.model: {cfg.model} declares the capability embedding but has no embed(x) method"
        if "ensemble" in declared and not (isinstance(getattr(model, "members", None), torch.nn.ModuleList) and len(model.members) > 1):
            return f"train.model: {cfg.model} declares the capability ensemble but has no members (an nn.ModuleList of at least 2 classifiers)"
        if cfg.normalize is not None and len(cfg.normalize.mean) not in (1, ds.input_shape[0]):
            return f"train.normalize: {len(cfg.normalize.mean)} channel means for {ds.input_shape[0]}-channel images"
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as e:
            return f"{field}: {cfg.model} cannot take the data's {shape} images: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        if not (isinstance(out, torch.Tensor) and out.shape == (len(x), ds.n_classes)):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return f"{field}: {cfg.model} outputs {got} for {len(x)} images; the data has {ds.n_classes} classes, so one logit per class is expected ({len(x)}, {ds.n_classes})"
    return None
