"""How Tune explores the training axes: the axes as written (values and Tune domains), the
search (grid, random, Optuna) with its scheduler, and each trial's resources."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator, model_validator

from study.spec.constraints import Strict
from study.spec.errors import AxisError, message, split_nested
from study.spec.training import VARIANT_FIELDS, TrainConfig, ensemble_name
from study.types import NonNegFloat, PosFloat, PosInt, _not_bool

DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")


Mode = Literal["max", "min"]
# Metrics every trial reports after each training epoch: what a scheduler can stop on.
EPOCH_METRICS = {"clean_acc": "max", "train_loss": "min"}


class Asha(Strict):
    """Asynchronous successive halving: trials below the top 1/reduction_factor at an epoch
    milestone (grace_period * reduction_factor^k) stop training there and write no rows."""

    kind: Literal["asha"] = "asha"
    metric: Literal[tuple(EPOCH_METRICS)] = "clean_acc"
    grace_period: PosInt = 1  # epochs every trial trains before it can be stopped
    reduction_factor: Annotated[float, BeforeValidator(_not_bool), Field(gt=1)] = 2.0

    @property
    def mode(self) -> str:
        return EPOCH_METRICS[self.metric]


def _scheduler_shorthand(v):
    return {"kind": v} if isinstance(v, str) else v


class SearchSpec(Strict):
    """How Tune picks training configs. `grid` and `random` sample the axes as written;
    `optuna` searches them with Optuna's TPE sampler (grid axes become categorical there) for
    one metric, or for several at once (a Pareto front) when `metric` and `mode` are lists."""

    kind: Literal["grid", "random", "optuna"] = "grid"
    metric: Union[str, Annotated[list[str], Field(min_length=2)]] = "clean_acc"
    mode: Union[Mode, Annotated[list[Mode], Field(min_length=2)]] = "max"
    num_samples: PosInt = 1  # grid: repeats of the grid; random: samples drawn (each its own seed: seed, seed + 1, ...); optuna: trials
    max_concurrent: Optional[PosInt] = None  # trials running at once (null: as resources allow)
    scheduler: Annotated[Optional[Asha], BeforeValidator(_scheduler_shorthand)] = None  # `asha`
    max_failures: Annotated[int, BeforeValidator(_not_bool), Field(ge=0)] = 2  # retries of a trial whose worker died

    @model_validator(mode="after")
    def _objectives(self):
        if isinstance(self.metric, list) != isinstance(self.mode, list):
            raise ValueError("mode: give one mode per metric (both lists, or both single values)")
        if isinstance(self.metric, list):
            if self.kind != "optuna":
                raise ValueError("metric: several metrics (a Pareto search) need kind: optuna")
            if len(self.mode) != len(self.metric):
                raise ValueError(f"mode: {len(self.mode)} modes for {len(self.metric)} metrics")
            if len(set(self.metric)) != len(self.metric):
                raise ValueError("metric: values must be distinct")
        return self

    @property
    def metrics(self) -> list[str]:
        return self.metric if isinstance(self.metric, list) else [self.metric]


class Resources(Strict):
    cpu: PosFloat = 1.0
    gpu: NonNegFloat = 0.0  # fractional below 1 shares a GPU between trials
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the trial was given a GPU

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v):
        if v > 1 and v != int(v):
            raise ValueError("above 1 must be a whole number of GPUs")
        return v

    @model_validator(mode="after")
    def _cuda_needs_gpu(self):
        if self.device == "cuda" and self.gpu == 0:
            raise ValueError("device: cuda needs resources.gpu > 0 (Ray hides GPUs from trials that did not ask for one)")
        return self


class Axis(BaseModel):
    """One training axis: a plain value or a Tune domain, with JSON-ready values."""

    kind: Literal[("value",) + DOMAINS]
    values: list[Any]


def option_label(value) -> str:
    if value is None:
        return "none"
    if not isinstance(value, dict):
        return str(value)
    if "ensemble" in value:
        return ensemble_name(value["ensemble"])
    return "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value.values() if v is not None)


def parse_train_axes(raw) -> dict[str, Axis]:
    if not isinstance(raw, dict):
        raise ValueError("must be a mapping of training axes")
    if "model" not in raw:
        raise AxisError(("model",), "required (which model to train)")
    axes = {}
    for name, value in raw.items():
        field = TrainConfig.model_fields.get(name)
        if name == "members":
            raise AxisError((name,), "an ensemble's members are part of its model: model: {ensemble: [cnn, mlp]} or {ensemble: maxout, size: 5}")
        if name == "model_args":
            raise AxisError((name,), "give an imported model's arguments in its variant, e.g. model: {import: mylab.nets:WideResNet, depth: 28}")
        if field is None:
            raise AxisError((name,), f"unknown training axis (known: {', '.join(TrainConfig.model_fields)})")
        axes[name] = _parse_axis(name, value)
    return axes


def _parse_axis(name: str, value) -> Axis:
    def check(v, *loc):
        # Validate one candidate value with TrainConfig's own field rules and validators.
        try:
            cfg = TrainConfig.model_validate({"model": "logreg", name: v})
        except ValidationError as e:
            err = e.errors()[0]
            sub, msg = split_nested(message(err))
            raise AxisError((name, *loc, *err["loc"][1:], *([sub] if sub and sub != name else [])), msg) from None
        if name == "model" and isinstance(v, dict) and cfg.members is not None:
            return {"ensemble": cfg.members}
        if name == "model" and isinstance(v, dict):
            dumped = cfg.model_dump(mode="json")
            own = {k: dumped.get(k) for k in v if k in VARIANT_FIELDS}
            return {"name" if "name" in v else "import": cfg.model, **cfg.model_args, **own}
        return cfg.model_dump(mode="json").get(name)

    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DOMAINS:
        kind, args = next(iter(value.items()))
        if not isinstance(args, list):
            raise AxisError((name, kind), "must be a list")
        if kind in ("grid", "choice"):
            if not args:
                raise AxisError((name, kind), "must not be empty")
            return Axis(kind=kind, values=[check(v, kind, i) for i, v in enumerate(args)])
        if len(args) != 2:
            raise AxisError((name, kind), "must be [low, high]")
        lo, hi = (check(v, kind, i) for i, v in enumerate(args))
        if not (isinstance(lo, (int, float)) and lo < hi):
            raise AxisError((name, kind), "needs numbers with low < high")
        if kind == "loguniform" and lo <= 0:
            raise AxisError((name, kind, 0), "must be > 0 for a log scale")
        return Axis(kind=kind, values=[lo, hi])
    return Axis(kind="value", values=[check(value)])
