"""The study spec: the YAML schema, and the only module that knows the file format.

``load_spec(path)`` returns a validated ``StudySpec`` or raises ``SpecError`` whose message is
one line naming the file and the field path, e.g.
``search_spaces/x.yaml: evaluate[0].norms.linf.eps[2]: must be >= 0``.

Training axes (``train:``) are Ray Tune dimensions: one trial per trained model. Each axis is a
plain value or one domain written in YAML: ``{grid: [...]}``, ``{choice: [...]}``,
``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}``. Evaluation axes
live under ``evaluate:`` and are swept inside each trial against its one model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from study import models
from study.spec.constraints import Strict
from study.spec.errors import SpecError, from_validation_error
from study.spec.evaluation import AttackSpec, InputSet, parse_entries
from study.spec.search import EPOCH_METRICS, Axis, Resources, SearchSpec, parse_train_axes
from study.spec.training import (
    TRAINING_ONLY,
    ACGANSpec,
    AdversarialTraining,
    DataSpec,
    FeaturesSpec,
    GenerativeSpec,
    Normalization,
    TrainConfig,
    TrainSet,
    variant_model,
)
from study.types import _not_bool

__all__ = [
    "ACGANSpec", "AdversarialTraining", "AttackSpec", "DataSpec", "FeaturesSpec", "GenerativeSpec", "InputSet", "Normalization", "SpecError", "StudySpec", "TrainConfig",
    "TrainSet", "load_spec", "parse_spec",
]

def _having(capability: str) -> str:
    """Who has a capability: the registry models that do, or a model of yours that declares it."""
    have = [k for k, r in models.MODELS.items() if capability in r.capabilities]
    return ", ".join(have) + f"; or yours with capabilities = ('{capability}',)"


class StudySpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    data: DataSpec = DataSpec()
    train: dict[str, Axis]
    evaluate: Annotated[list[Any], Field(min_length=1), BeforeValidator(lambda raw: parse_entries(raw))]
    search: SearchSpec = SearchSpec()
    resources: Resources = Resources()
    results: Optional[str] = None  # local path or pyarrow.fs URI; default results/<name>
    store: Optional[str] = None  # model store; default: `store` beside the results folder
    seed: Annotated[int, BeforeValidator(_not_bool)] = 0
    generative: GenerativeSpec = GenerativeSpec()  # natural adversaries and the reconstruction defense
    acgan: ACGANSpec = ACGANSpec()  # unrestricted adversarial examples (class-conditional)
    features: FeaturesSpec = FeaturesSpec()  # source models of constructed training sets (train_set)

    @field_validator("train", mode="before")
    @classmethod
    def _train_axes(cls, raw):
        return parse_train_axes(raw)

    @model_validator(mode="after")
    def _cross_checks(self):
        known = set(EPOCH_METRICS) | set().union(*(e.metric_names() for e in self.evaluate))
        for i, metric in enumerate(self.search.metrics):
            if metric not in known:
                where = f"search.metric[{i}]" if isinstance(self.search.metric, list) else "search.metric"
                examples = ", ".join(sorted(known)[:4])
                raise ValueError(f"{where}: unknown metric {metric!r} (e.g. {examples})")
        self._check_models()
        self._check_row_keys()
        if "generative" in self.model_fields_set and not self.needs_generative:
            raise ValueError("generative: no evaluator uses the generative model (natural, reconstruction, or a natural input set)")
        if self.generative.seed is None:
            self.generative.seed = self.seed
        if "acgan" in self.model_fields_set and not self.needs_acgan:
            raise ValueError("acgan: no evaluator uses the AC-GAN (unrestricted)")
        if self.acgan.seed is None:
            self.acgan.seed = self.seed
        for judge in (j for e in self.evaluate for j in e.judges()):
            if judge.seed is None:
                judge.seed = self.seed
        for source in (self.features.standard, self.features.robust):
            if source.seed is None:
                source.seed = self.seed
        if "features" in self.model_fields_set and not self.needs_features:
            raise ValueError("features: no training set is built from a source model (a train_set axis) and no features evaluator runs")
        axis = self.train.get("train_set")
        if axis is not None and axis.kind not in ("value", "grid", "choice"):
            raise ValueError("train.train_set: list the training sets (a value, grid or choice); each is built once before the trials")
        self._check_checkpoints()
        self._repeat_with_seeds()
        if self.search.kind == "optuna" and all(a.kind == "value" for a in self.train.values()):
            raise ValueError("search.kind: optuna needs at least one training axis to search (grid, choice, uniform, ...)")
        return self

    def _check_checkpoints(self):
        """A checkpoint is evaluated as it is: training settings beside checkpoints only (none of
        them trained here) would be silently ignored, so they are refused."""
        axis = self.train.get("checkpoint")
        values = [] if axis is None else axis.values
        variants = [v.get("checkpoint") for v in self.train["model"].values if isinstance(v, dict)]
        if axis is not None and axis.kind not in ("value", "grid", "choice"):
            raise ValueError("train.checkpoint: list the checkpoints (a value, grid or choice)")
        every = (values and all(v is not None for v in values)) or (variants and len(variants) == len(self.train["model"].values) and all(v is not None for v in variants))
        if every:
            for name in TRAINING_ONLY:
                if name in self.train:
                    raise ValueError(f"train.{name}: every trial evaluates a checkpoint as it is, so nothing is trained; drop {name}")

    def _repeat_with_seeds(self):
        """Repeats of a grid (or random samples) must not be the same trial run twice: they become
        a grid of seeds (study seed, seed + 1, ...), so each repeat trains its own model."""
        n = self.search.num_samples
        if self.search.kind == "optuna" or n == 1:
            return
        axis = self.train.get("seed")
        if axis is not None and axis.kind in ("value", "grid"):
            raise ValueError(f"search.num_samples: {n} repeats with train.seed set would run the same trials again; list the seeds in train.seed instead")
        if axis is None:
            self.train["seed"] = Axis(kind="grid", values=[self.seed + r for r in range(n)])
            self.search.num_samples = 1

    def _check_row_keys(self):
        """Two entries must not write rows with the same key (compaction would keep one of them):
        entries whose evaluator lists its row points (robustness) may share none of them; any
        other evaluator appears once (one entry sweeps all its axes)."""
        seen = {}
        for i, e in enumerate(self.evaluate):
            points = e.row_points()
            if points is None:
                if e.evaluator in seen:
                    raise ValueError(f"evaluate[{i}]: a second {e.evaluator} entry (the first is evaluate[{seen[e.evaluator]}]); put all its settings in one entry")
                seen[e.evaluator] = i
                continue
            for point in points:
                point = (e.evaluator, *point)
                if point in seen:
                    j = seen[point]
                    what = f"{point[1]} {point[5]} eps {point[6]:g}" if point[6] is not None else f"{point[1]} {point[5]} per-class eps"
                    raise ValueError(f"evaluate[{i}]: its {what} rows would repeat those of evaluate[{j}] (same attacks and settings); drop one, or change a setting")
                seen[point] = i

    def _check_models(self):
        """Every model the study can train accepts the model hyperparameters it sets, and a
        two-class model gets two classes."""
        options = self.model_names()
        for option in self.train["model"].values:
            for param in option if isinstance(option, dict) else ():
                if param in self.train:
                    raise ValueError(f"train.{param}: also set by a model variant in train.model; set it in one place")
        for name in models.MODEL_PARAMS:
            axis = self.train.get(name)
            if axis is None or all(v is None for v in axis.values):
                continue
            for m in options:
                if name not in models.entry(m).params():
                    raise ValueError(f"train.{name}: model {m} takes no {name} (models that do: {', '.join(k for k, e in models.MODELS.items() if name in e.params())})")
        for m in options:
            if models.entry(m).binary and len(self.data.classes or ()) != 2:
                raise ValueError(f"train.model: {m} separates two classes: set data.classes to two labels, e.g. [2, 3]")
        adversarial = self.train.get("adversarial")
        if adversarial is not None and any(v is not None for v in adversarial.values):
            for m in options:
                if models.entry(m).embeds:
                    raise ValueError(f"train.adversarial: {m} is trained as a metric (a triplet loss), not adversarially")
        for i, e in enumerate(self.evaluate):
            for capability in e.every_model_needs():
                for m in options:
                    if capability not in models.entry(m).capabilities:
                        raise ValueError(f"evaluate[{i}]: {e.evaluator} needs {models.CAPABILITIES[capability]} ({_having(capability)}); train.model has {m}")
            for capability in e.some_model_needs():
                if options and not any(capability in models.entry(m).capabilities for m in options):
                    raise ValueError(f"evaluate[{i}]: {e.evaluator} needs {models.CAPABILITIES[capability]} ({_having(capability)}); train.model has {', '.join(options)}")

    def model_names(self) -> list[str]:
        """The models the study can train (names; a model variant counts as its model)."""
        axis = self.train["model"]
        if axis.kind not in ("value", "grid", "choice"):
            return []
        return list(dict.fromkeys(variant_model(v) for v in axis.values))

    def import_paths(self) -> list[str]:
        """The user's code the spec names by import path (models, evaluators, attacks, the dataset loader)."""
        from study import imports

        paths = [m for m in self.model_names() if imports.is_import_path(m)]
        paths += [e.evaluator for e in self.evaluate if imports.is_import_path(e.evaluator)]
        paths += [a for e in self.evaluate for a in e.attack_names() if imports.is_import_path(a)]
        if isinstance(self.data.dataset, dict) and "import" in self.data.dataset:
            paths.append(self.data.dataset["import"])
        return paths

    def label_axes(self) -> list[str]:
        """The training axes a trial's label shows: those the study varies, and the
        hyperparameters its model variants set."""
        swept = [n for n, a in self.train.items() if a.kind != "value"]
        variants = [k for v in self.train["model"].values if isinstance(v, dict) for k in v if k not in ("name", "import", "ensemble")]
        return swept + [k for k in dict.fromkeys(variants) if k not in swept]

    def data_problem(self, n_eval: int, n_classes: int, n_train: int = 1, input_shape: tuple[int, ...] | None = None) -> str | None:
        """What the loaded data makes impossible (sizes, shapes and class counts the spec alone
        does not know), as ``field: message``; None when the study can run."""
        if input_shape is not None and self.needs_generative and self.generative.arch == "conv" and tuple(input_shape[1:]) != (28, 28):
            return f"generative.arch: the conv generative networks take 28 x 28 images; the data's are {input_shape[1]} x {input_shape[2]} (use arch: mlp)"
        if input_shape is not None and self.needs_acgan and self.acgan.arch == "conv" and tuple(input_shape[1:]) != (28, 28):
            return f"acgan.arch: the conv networks take 28 x 28 images; the data's are {input_shape[1]} x {input_shape[2]} (use arch: mlp)"
        if n_train == 0:
            axis = self.train.get("checkpoint")
            if axis is None or any(v is None for v in axis.values):
                return "train.checkpoint: the data has no training split, so every trial needs a checkpoint to evaluate (or give the data a training split)"
            for i, e in enumerate(self.evaluate):
                if e.uses_training_split():
                    return f"evaluate[{i}]: {e.evaluator} reads the training split, and the data has none"
        for i, e in enumerate(self.evaluate):
            problem = e.data_problem(n_eval, n_classes)
            if problem is not None:
                return f"evaluate[{i}].{problem}"
            named = e.attack_names()
            if "apgd-dlr" in named and n_classes < 3:
                return f"evaluate[{i}]: apgd-dlr needs at least 3 classes; the data has {n_classes} (use apgd-ce)"
            if "apgd-t" in named and n_classes < 4:
                return f"evaluate[{i}]: apgd-t needs at least 4 classes (its loss uses the 4 largest logits); the data has {n_classes} (list the attacks: apgd-ce, fab-t, square)"
            if "fab-t" in named and n_classes < 2:
                return f"evaluate[{i}]: fab-t needs another class to target"
        return None

    @property
    def needs_generative(self) -> bool:
        """Whether an evaluator uses the generative model (trained once, before the trials)."""
        return any(e.uses_generative() for e in self.evaluate)

    @property
    def needs_acgan(self) -> bool:
        """Whether an evaluator uses the AC-GAN (trained once, before the trials)."""
        return any(e.uses_acgan() for e in self.evaluate)

    @property
    def needs_features(self) -> bool:
        """Whether the study builds training sets or runs the features evaluator (its source
        models are trained before the trials)."""
        return bool(self.train_sets()) or any(e.uses_feature_sources() for e in self.evaluate)

    def train_sets(self) -> list[TrainSet]:
        """The constructed training sets the study's trials train on, each once."""
        axis = self.train.get("train_set")
        values = axis.values if axis is not None else []
        unique = list(dict.fromkeys(json.dumps(v, sort_keys=True) for v in values if v is not None))
        return [TrainSet.model_validate(json.loads(v)) for v in unique]

    @property
    def results_uri(self) -> str:
        return self.results or f"results/{self.name}"

    @property
    def store_uri(self) -> str:
        if self.store:
            return self.store
        base = self.results_uri.rstrip("/")
        return base.rsplit("/", 1)[0] + "/store" if "/" in base else "store"


def parse_spec(raw: Any, path: str = "<spec>") -> StudySpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping (name, data, train, evaluate, ...)")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as e:
        raise from_validation_error(path, e) from None


def load_spec(path: str | Path) -> StudySpec:
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())  # one line, whatever PyYAML says
        raise SpecError(f"{path}: invalid YAML: {where}{what}") from None
    return parse_spec(raw, path)
