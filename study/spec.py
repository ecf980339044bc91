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

import itertools
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_serializer, model_validator

from study import attacks, models, norms, registry
from study.attacks import ATTACKS
from study.attacks.presets import DEFAULT as DEFAULT_ATTACKS
from study.attacks.presets import PRESETS
from study.names import DISTANCE_NORMS, LATENT_KINDS
from study.norms import NORMS
from study.types import Distinct, NonNegFloat, PosFloat, PosInt, _not_bool

DATASETS = ("mnist-5k", "mnist", "fashion-mnist", "cifar10", "digits", "npz", "imagefolder")
DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")


class SpecError(ValueError):
    """A spec that cannot run. The message is one line: file, field path, what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    """The dataset: a built-in name, ``npz`` (``path``), ``imagefolder`` (``root``), any
    torchvision dataset (``{torchvision: SVHN}``, with ``root`` / ``download``) or a loader of
    the user's (``{import: mylab.data:load, <its keyword arguments>}``): study.data."""

    dataset: Union[Literal[DATASETS], dict[str, Any]] = "mnist-5k"
    path: Optional[str] = None  # npz: the file
    classes: Optional[list[Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]]] = None
    eval_index: Optional[str] = None  # a file of test-split indices (.npy or one per line): the evaluation subset, in that order
    n_eval: Optional[PosInt] = None  # evaluate on the first n_eval test images (all when null)
    root: Optional[str] = None  # torchvision datasets: the folder holding <Name>/raw (CIFAR-10: cifar-10-batches-py); imagefolder: the folder holding test/ (and train/)
    download: bool = False

    @field_validator("classes")
    @classmethod
    def _two_distinct(cls, v):
        if v is not None and (len(v) < 2 or len(set(v)) != len(v)):
            raise ValueError("must list at least two distinct class labels")
        return v

    @field_validator("dataset")
    @classmethod
    def _source(cls, v):
        if isinstance(v, dict):
            kinds = [k for k in ("torchvision", "import") if k in v]
            if len(kinds) != 1:
                raise ValueError("a dataset mapping names one source: {torchvision: SVHN} or {import: mylab.data:load, ...}")
            if kinds[0] == "torchvision" and (len(v) != 1 or not isinstance(v["torchvision"], str)):
                raise ValueError("{torchvision: NAME} takes the dataset class's name only (root and download are data fields)")
            if kinds[0] == "import":
                from study import imports

                imports.check_call(imports.resolve(v["import"]), v["import"], {k: a for k, a in v.items() if k != "import"})
        return v

    @model_validator(mode="after")
    def _files(self):
        if (self.dataset == "npz") != (self.path is not None):
            raise ValueError("path: required for dataset npz (the .npz file)" if self.dataset == "npz" else "path: only dataset npz reads a file (others use root)")
        if self.dataset == "imagefolder" and not self.root:
            raise ValueError("root: required for dataset imagefolder (the folder holding test/ and train/)")
        return self

    @property
    def label(self) -> str:
        """The dataset as rows name it."""
        d = self.dataset
        if isinstance(d, dict):
            return f"torchvision:{d['torchvision']}" if "torchvision" in d else d["import"]
        return {"npz": f"npz:{self.path}", "imagefolder": f"imagefolder:{self.root}"}.get(d, d)


class AdversarialTraining(_Strict):
    attack: Literal["fgsm", "pgd"]
    norm: Literal[tuple(NORMS)]
    eps: NonNegFloat
    alpha: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)] = 0.5  # weight of the clean loss
    steps: Optional[PosInt] = None  # pgd only; default 10
    step_size: Optional[PosFloat] = None  # relative to eps

    @model_validator(mode="after")
    def _checks(self):
        _eps_bound(self.norm, self.eps, "eps")
        try:
            attacks.make(self.attack, **self.attack_options())
        except attacks.OptionError as e:
            raise ValueError(str(e)) from None
        return self

    def attack_options(self) -> dict:
        """The options set here (the attack's published defaults for the rest)."""
        return {k: v for k, v in (("steps", self.steps), ("step_size", self.step_size)) if v is not None}


TRAIN_SETS = ("robust", "non-robust", "rand", "det", "shuffled")  # study.features: D_R, D_NR, D_rand, D_det, D_shuf
MATCH_KINDS = ("robust", "non-robust", "shuffled")  # representation matching (shuffled: its D_R's); rand and det by targeted PGD


class TrainSet(_Strict):
    """A training set rebuilt from a source model of the study's ``features:`` section
    (study.features). ``robust`` / ``non-robust``: representation matching to the robust /
    standard source (``steps`` normalised L2 steps of length ``step``, decaying to 0, from
    ``start``); ``rand`` / ``det``: targeted L2 PGD on the standard source (``eps``, ``step``,
    ``steps``; Ilyas et al.'s CIFAR-10 setting was eps 0.5, step 0.1, 100 steps), relabelled
    with the target; ``shuffled``: the control for D_R, x plus the change x_r - x of another
    image of the D_R with the same matching settings. A plain string names a kind with its
    defaults."""

    kind: Literal[TRAIN_SETS]
    eps: Optional[PosFloat] = None  # rand, det: L2 radius (default 3: MNIST's digits lie further apart than CIFAR's images)
    step: Optional[PosFloat] = None  # absolute L2 step length (default: matching 0.5; targeted eps / 5)
    steps: Optional[PosInt] = None  # default: matching 300; targeted 100
    start: Optional[Literal["other", "noise"]] = None  # matching: a random training image (the default), or uniform noise

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _defaults(self):
        if self.kind in MATCH_KINDS:
            if self.eps is not None:
                raise ValueError(f"eps: {self.kind} is built by representation matching, which has no radius (eps is for rand and det)")
            self.start = self.start or "other"
            self.steps = self.steps or 300
            self.step = self.step or 0.5
        else:
            if self.start is not None:
                raise ValueError(f"start: {self.kind} starts at the image itself (start is for robust, non-robust and shuffled)")
            self.eps = self.eps or 3.0
            self.steps = self.steps or 100
            self.step = self.step or self.eps / 5
        return self


class Normalization(_Strict):
    """Per-channel input normalisation, part of the model: it sees (x - mean) / std while every
    attack, eps and the [0, 1] box stay in pixel space (study.models.Normalized)."""

    mean: Annotated[list[Annotated[float, BeforeValidator(_not_bool)]], Field(min_length=1)]
    std: Annotated[list[PosFloat], Field(min_length=1)]

    @model_validator(mode="after")
    def _same_channels(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"std: {len(self.std)} values for {len(self.mean)} means (one per channel)")
        return self


# Keys of a model variant (``model: {...}``) that are training-config fields rather than the model's own arguments.
VARIANT_FIELDS = (*models.MODEL_PARAMS, "normalize", "checkpoint")
# Training-config fields a checkpoint evaluated as it is makes meaningless.
TRAINING_ONLY = ("epochs", "lr", "lr_schedule", "batch_size", "weight_decay", "l2", "adversarial", "train_set")


def variant_model(value) -> str:
    """The model name a ``train.model`` value stands for (a name, or a variant mapping)."""
    if not isinstance(value, dict):
        return value
    if "import" in value:
        return value["import"]
    if "torchvision" in value:
        return f"torchvision.models:{value['torchvision']}"
    return value.get("name")


class TrainConfig(_Strict):
    """One trial's resolved training configuration: everything that determines the model."""

    model: str  # a registry name, or a model of the user's by import path (package.module:name)
    epochs: PosInt = 5
    lr: PosFloat = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decays to 0 over the training steps
    batch_size: PosInt = 64
    weight_decay: NonNegFloat = 0.0  # Adam's L2 coefficient on every parameter: gradient += weight_decay * w
    l2: NonNegFloat = 0.0  # lambda: loss += lambda * ||W||^2 over weight matrices and kernels, biases excluded
    pieces: Optional[PosInt] = None  # maxout: affine pieces per unit (model default when null)
    dropout: Optional[Annotated[float, BeforeValidator(_not_bool), Field(ge=0, lt=1)]] = None  # mc-cnn, mc-mlp: MC dropout rate
    margin: Optional[PosFloat] = None  # triplet: the triplet loss's margin between squared distances (model default when null)
    triplet_loss: Optional[Literal["margin", "ratio"]] = None  # triplet: margin loss (FaceNet) or distance ratio (Hoffer & Ailon)
    hidden: Optional[PosInt] = None  # mlp, cnn and their variants: units per dense hidden layer (model default when null)
    channels: Optional[PosInt] = None  # cnn, mc-cnn, triplet: the second conv stage's channels; the first has half (model default when null)
    model_args: dict[str, Any] = {}  # an imported model's keyword arguments
    normalize: Optional[Normalization] = None  # input normalisation inside the model
    checkpoint: Optional[str] = None  # weights to evaluate as they are (a state_dict .pt/.pth or .safetensors; path or URI): no training
    adversarial: Optional[AdversarialTraining] = None
    train_set: Optional[TrainSet] = None  # null: the dataset's training split (D); else a constructed set
    seed: Optional[Annotated[int, BeforeValidator(_not_bool)]] = None  # defaults to the study seed

    @model_validator(mode="before")
    @classmethod
    def _model_variant(cls, data):
        """``model: {name: triplet, margin: 0.5}``: a model with its own hyperparameters, so one
        grid can hold models that take different ones. ``model: {import: mylab.nets:Net, depth:
        28}`` or ``{torchvision: resnet18}``: a model of the user's, with its keyword arguments."""
        if not (isinstance(data, dict) and isinstance(data.get("model"), dict)):
            return data
        variant = dict(data["model"])
        kinds = [k for k in ("name", "import", "torchvision") if k in variant]
        if len(kinds) != 1:
            raise ValueError("a model variant names its model once: `name` (a registry model), `import` (package.module:name) or `torchvision` (e.g. resnet18)")
        name = variant_model(variant)
        for key in kinds:
            variant.pop(key)
        own = {k: variant.pop(k) for k in list(variant) if k in VARIANT_FIELDS}
        if kinds[0] == "name":
            if not isinstance(name, str) or name not in models.MODELS:
                raise ValueError(f"a model variant needs a known `name` (known: {', '.join(models.MODELS)})")
            for param in [*variant, *(k for k in own if k in models.MODEL_PARAMS)]:
                if param not in models.MODELS[name].params():
                    raise ValueError(f"{name} takes no {param} (it takes: {', '.join(sorted(models.MODELS[name].params())) or 'no hyperparameters'})")
        elif data.get("model_args"):
            raise ValueError("model_args: give an imported model's arguments in one place (its variant)")
        for param in own:
            if data.get(param) is not None:
                raise ValueError(f"{param} is set both in the model variant and as a training axis")
        args = {"model_args": variant} if variant else {}
        return {**data, **own, **args, "model": name}

    @model_validator(mode="after")
    def _known_model(self):
        try:
            registered = models.entry(self.model)
            models.check_args(self.model, self.model_args)
        except ValueError as e:
            raise ValueError(f"model: {e}") from None
        if self.normalize is not None and registered.embeds:
            raise ValueError(f"normalize: {self.model} is a metric-learned embedding; normalise inside it instead")
        if self.checkpoint is not None:
            if self.adversarial is not None or self.train_set is not None:
                which = "adversarial" if self.adversarial is not None else "train_set"
                raise ValueError(f"{which}: a checkpoint is evaluated as it is, not trained (drop {which} or the checkpoint)")
            if not self.checkpoint.endswith(CHECKPOINT_SUFFIXES):
                raise ValueError(f"checkpoint: {self.checkpoint}: expected a state_dict in a {', '.join(CHECKPOINT_SUFFIXES)} file")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # Unset extension fields stay out of the dump, so the keys of every earlier model (which
        # hash it) are unchanged.
        out = handler(self)
        for name, empty in (("model_args", {}), ("normalize", None), ("checkpoint", None)):
            if out.get(name) == empty:
                out.pop(name, None)
        return out

    @property
    def trained_here(self) -> bool:
        return self.checkpoint is None


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


class _Evaluator(registry.Entry):
    """A built-in evaluator's entry (what every entry answers: study.registry.Entry)."""


class NormAxes(_Strict):
    eps: Annotated[list[NonNegFloat], Field(min_length=1), Distinct]


def _eps_bound(norm: str, eps, where: str):
    """A radius beyond the norm's largest meaningful one (study.norms: Linf's is 1, as inputs lie
    in [0, 1]) is a typo, not a threat model. ``eps``: one radius, or a list (indexed in ``where``)."""
    bound = norms.get(norm).max_eps
    for i, e in enumerate(eps if isinstance(eps, list) else [eps]):
        if bound is not None and e > bound:
            at = f"{where}[{i}]" if isinstance(eps, list) else where
            raise ValueError(f"{at}: {norm} eps must be <= {bound:g} (inputs lie in [0, 1])")


class AttackSpec(_Strict):
    """One attack: its name (its published defaults), or ``{name: pgd, steps: 20}`` with its own
    options (study.attacks: each factory's keywords)."""

    name: str  # a built-in (study.attacks.ATTACKS) or one of yours by import path (study.attacks.imported)
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        from study import imports

        if v not in ATTACKS and not imports.is_import_path(v):
            raise ValueError(f"unknown attack {v!r} (known: {', '.join(ATTACKS)}; or one of yours by import path, e.g. mylab.attacks:noise)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and "options" not in data:
            options = {"options": {k: v for k, v in data.items() if k != "name"}}
            return {"name": data["name"], **options} if "name" in data else options
        return data

    @model_validator(mode="after")
    def _options(self):
        try:
            resolved = attacks.make(self.name, **self.options).options()
        except attacks.OptionError as e:
            raise ValueError(str(e)) from None
        # Stored resolved: the spec file, rows and keys then say every setting, defaults included.
        self.options = resolved
        return self

    def build(self):
        return attacks.make(self.name, **self.options)

    def describe(self) -> str:
        """``pgd(steps=20,step_size=0.125,restarts=1)``: the attack and every setting."""
        return f"{self.name}(" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.options.items() if v is not None) + ")"


_SHARED_OPTIONS = ("steps", "step_size", "restarts", "cw")


def _own_options(data, attack_field: str, example: str):
    """Attack options once lived beside the attack; now each attack carries its own."""
    if isinstance(data, dict):
        for name in _SHARED_OPTIONS:
            if name in data:
                example = "{name: cw, confidence: 2, search_steps: 3}" if name == "cw" else example
                raise ValueError(f"{name}: each attack takes its own options, e.g. {attack_field}: {example}")
    return data


class RobustnessEval(_Evaluator):
    """Robust accuracy under each attack at each (norm, eps), and the `worst` case per point over
    them (study.evaluators.robustness). ``attacks``: a preset (study.attacks.presets: autoattack,
    autoattack-fast) or a list of attacks. With ``cascade`` (a preset's default) each attack only
    attacks the points every earlier one left robust, as AutoAttack runs them: its rows then count
    the points it broke that earlier ones did not, and its robust accuracy is the ensemble's so far."""

    evaluator: Literal["robustness"]
    attacks: Union[Literal[tuple(PRESETS)], Annotated[list[AttackSpec], Field(min_length=1)]] = DEFAULT_ATTACKS
    cascade: Optional[bool] = None  # default: true for a preset, false for a list (each attack alone)
    norms: Annotated[dict[Literal[tuple(NORMS)], NormAxes], Field(min_length=1)]
    eot_samples: PosInt = 1  # stochastic (MC-dropout) models: MC samples per attack query (expectation over transformation)
    batch_rows: Optional[PosInt] = None  # rows (point x eps) per attack batch; null: 256 on CPU, 16384 on GPU
    per_class_eps: Optional[PerClassEps] = None  # also attack at a per-class eps and at its uniform mean

    @model_validator(mode="before")
    @classmethod
    def _no_shared_options(cls, data):
        return _own_options(data, "attacks", "[fgsm, {name: pgd, steps: 20}]")

    @model_validator(mode="after")
    def _checks(self):
        names = [a.name for a in self.attack_list()]
        if len(set(names)) != len(names) and len({a.describe() for a in self.attack_list()}) != len(names):
            raise ValueError("attacks: the same attack with the same options twice")
        for name, axes in self.norms.items():
            _eps_bound(name, axes.eps, f"norms.{name}.eps")
        if self.cascade is None:
            self.cascade = isinstance(self.attacks, str)
        if self.per_class_eps is not None:
            if self.per_class_eps.norms is None:
                self.per_class_eps.norms = list(self.norms)
            if any(a in attacks.NORM_FREE for a in names):
                raise ValueError("per_class_eps: cw searches in L2 once per model, for no eps; list the attacks without it")
        return self

    def attack_list(self) -> list[AttackSpec]:
        """The attacks in running order (a preset expanded)."""
        return [AttackSpec.model_validate(a) for a in PRESETS[self.attacks]] if isinstance(self.attacks, str) else self.attacks

    def ensemble(self) -> str:
        """The `worst` rows' attacks, with every setting: the identity of their ensemble."""
        return "; ".join(a.describe() for a in self.attack_list())

    def row_points(self) -> list[tuple]:
        """The key of every row a trial writes (study.results.KEY_COLUMNS' evaluation part, as
        the evaluator fills it): for each norm and eps, each attack and `worst`."""
        names = "+".join(a.name for a in self.attack_list())
        eot = self.eot_samples
        out = []
        per_attack = [(a.name, a.describe(), names) for a in self.attack_list()]
        for norm, axes in self.norms.items():
            for eps in axes.eps:
                for name, described, ens in [*per_attack, ("worst", self.ensemble(), names)]:
                    out.append((name, described, ens, self.cascade, norm, float(eps), eot, None))
        if self.per_class_eps is not None:
            pc = self.per_class_eps
            for norm in pc.norms:
                for q in pc.quantiles:
                    for rule in ("per-class", "uniform"):
                        for name, described, ens in [*per_attack, ("worst", self.ensemble(), names)]:
                            out.append((name, described, ens, self.cascade, norm, None, eot, (q, pc.fraction, pc.per_class, rule)))
        return out

    def uses_training_split(self) -> bool:
        return self.per_class_eps is not None  # per-class eps come from training-image distances

    def n_rows(self, linear_binary: bool = False) -> int:
        """Rows per trial: every attack at every eps, plus one `worst` row per (norm, eps); with
        per_class_eps, per (norm, quantile) the per-class and the uniform rule, each per attack
        and worst."""
        return len(self.row_points())

    def metric_names(self) -> set[str]:
        return {
            f"robust_acc@{a}-{n}-{e:g}" for n, axes in self.norms.items() for e in axes.eps for a in [*(a.name for a in self.attack_list()), "worst"]
        }


class PerClassEps(_Strict):
    """Robustness at a per-class eps: each class c gets eps_c = fraction * the q-quantile of its
    training images' distances to the nearest image of another class (study.evaluators.distances,
    the same sample), next to one uniform eps with the same mean over the evaluated points."""

    quantiles: Annotated[list[Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)]], Field(min_length=1), Distinct] = [0.1, 0.5]
    fraction: Annotated[float, BeforeValidator(_not_bool), Field(gt=0, le=1)] = 0.5
    per_class: Annotated[int, BeforeValidator(_not_bool), Field(ge=2)] = 100  # training images sampled per class
    norms: Optional[Annotated[list[Literal[tuple(NORMS)]], Field(min_length=1), Distinct]] = None  # default: the evaluator's norms


class Bisection(_Strict):
    """Minimal eps per point by bisection on eps, each round one batched PGD run."""

    steps: PosInt = 50
    iters: PosInt = 14  # halvings of each point's bracket: about 1e-4 of the starting range
    restarts: PosInt = 1
    n_points: Optional[PosInt] = None  # bisect the first n correctly classified points (all when null)


class GeometryEval(_Evaluator):
    """Boundary tilting and minimal perturbations (study.evaluators.geometry). The closed forms
    need a linear two-class model; the PGD bisection runs on any model."""

    evaluator: Literal["geometry"]
    norms: Annotated[list[Literal[tuple(NORMS)]], Field(min_length=1), Distinct] = ["l2", "linf"]
    bisection: Optional[Bisection] = Bisection()  # null: closed forms only
    plane_points: Annotated[int, BeforeValidator(_not_bool), Field(ge=0)] = 400  # per split, projected on the tilting plane
    perturbation_points: Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=16)] = 3  # test images kept with their minimal L2 perturbation

    def uses_training_split(self) -> bool:
        return True  # class centroids and the tilting plane of the training split

    def n_rows(self, linear_binary: bool) -> int:
        methods = (2 if linear_binary else 0) + (self.bisection is not None)
        return methods * len(self.norms)

    def metric_names(self) -> set[str]:
        return set()


class RubbishEval(_Evaluator):
    """Goodfellow's rubbish-class check: N(0, I) noise clipped to [0, 1], no true class; the
    fraction of inputs the model classifies with confidence > 0.5."""

    evaluator: Literal["rubbish"]
    samples: PosInt = 1000

    def n_rows(self, linear_binary: bool) -> int:
        return 1

    def metric_names(self) -> set[str]:
        return set()


class TransferEval(_Evaluator):
    """Adversarial examples crafted on every trained model of the study and classified by every
    other: run once after all trials (study.evaluators.transfer)."""

    evaluator: Literal["transfer"]
    attack: AttackSpec = AttackSpec(name="fgsm")
    norm: Literal[tuple(NORMS)] = "linf"
    eps: Annotated[list[PosFloat], Field(min_length=1), Distinct]

    @model_validator(mode="before")
    @classmethod
    def _no_shared_options(cls, data):
        return _own_options(data, "attack", "{name: pgd, steps: 20}")

    @model_validator(mode="after")
    def _checks(self):
        _eps_bound(self.norm, self.eps, "eps")
        if self.attack.name in attacks.NO_FINAL_ITERATE:
            raise ValueError(f"attack: {self.attack.name} keeps no final iterate per point to transfer; use pgd, apgd-ce, fab-t or square")
        if self.attack.name not in attacks.ATTACKS:
            raise ValueError(f"attack: {self.attack.name}: an attack of yours runs in the robustness evaluator's attacks list")
        return self

    def n_rows(self, linear_binary: bool) -> int:
        return 0  # its rows are written after the trials, one per (source, target, eps)

    def metric_names(self) -> set[str]:
        return set()


class FeaturesEval(TransferEval):
    """Transfer from the study's standard source model (``features.standard``, the one D_NR,
    D_rand and D_det are built from): its adversarial examples classified by every trial's
    model, run once after the trials (study.evaluators.features). Ilyas et al. relate this rate
    to how well each architecture learns from D_rand / D_det."""

    evaluator: Literal["features"]
    attack: AttackSpec = AttackSpec(name="pgd", steps=20)
    norm: Literal[tuple(NORMS)] = "l2"

    def uses_training_split(self) -> bool:
        return True  # its standard source model trains on it


class GaussianEval(_Evaluator):
    """Ilyas et al.'s Gaussian model (study.gaussian): two classes x ~ N(y mu, Sigma), y = +-1;
    the standard and the robust (L2 ball of radius eps) maximum-likelihood estimates of
    (mu, Sigma) from ``n`` samples at every eps, against Theorem 2's closed form. Model-free: it
    runs once after the trials and writes the artifact ``gaussian``."""

    evaluator: Literal["gaussian"]
    eps: Annotated[list[NonNegFloat], Field(min_length=1), Distinct] = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
    mean: Annotated[list[float], Field(min_length=1)] = [1.0, 0.25]
    cov: list[list[float]] = [[1.0, 0.6], [0.6, 0.5]]
    n: Annotated[int, BeforeValidator(_not_bool), Field(ge=10)] = 2000
    steps: PosInt = 300  # optimiser steps per estimate
    lr: PosFloat = 0.1

    @model_validator(mode="after")
    def _checks(self):
        import numpy as np

        d = len(self.mean)
        if d < 2:
            raise ValueError("mean: the model needs at least two dimensions (d >= 2)")
        if any(len(row) != d for row in self.cov) or len(self.cov) != d:
            raise ValueError(f"cov: must be {d} x {d}, like mean")
        cov = np.asarray(self.cov)
        if not np.allclose(cov, cov.T) or np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError("cov: must be symmetric positive definite")
        return self

    def n_rows(self, linear_binary: bool) -> int:
        return 0  # an artifact, no rows

    def metric_names(self) -> set[str]:
        return set()


class LatentSearchSpec(_Strict):
    """A natural-adversary search in the generator's latent space (study.attacks.latent)."""

    kind: Literal[LATENT_KINDS] = "iterative"
    samples: PosInt = 64  # N: latent samples (classifier queries) per round
    rounds: PosInt = 100  # the budget: at most this many rounds per image
    dr: PosFloat = 0.1  # iterative: shell width; hybrid: resolution of the shrinking and the fine pass
    h0: PosFloat = 10.0  # hybrid: the first coarse range [0, h0)
    stop: PosInt = 5  # hybrid: rounds without improvement that end a phase

    @model_validator(mode="after")
    def _checks(self):
        if self.h0 <= self.dr:
            raise ValueError("h0: must be > dr (the coarse range holds at least one shell)")
        return self


class InputSet(_Strict):
    """Adversarial inputs for the uncertainty and reconstruction evaluators: every evaluation
    point attacked at each eps (the attack's final iterate, as a detector would see it). C&W is
    unbounded (no eps, L2); `natural` searches the generator's latent space (no eps, no norm):
    ``{attack: natural, search: {...}}``."""

    attack: Optional[AttackSpec]  # None: natural adversaries (written `attack: natural`)
    norm: Optional[Literal[tuple(NORMS)]] = "linf"
    eps: Optional[Annotated[list[PosFloat], Field(min_length=1), Distinct]] = None
    search: LatentSearchSpec = LatentSearchSpec()  # natural

    @model_validator(mode="before")
    @classmethod
    def _natural(cls, data):
        data = _own_options(data, "attack", "{name: pgd, steps: 40}")
        if isinstance(data, dict) and data.get("attack") == "natural":
            return {**data, "attack": None}
        return data

    @model_validator(mode="after")
    def _checks(self):
        name = self.name
        if "search" in self.model_fields_set and name != "natural":
            raise ValueError(f"search: options for natural adversaries, not {name}")
        if name in attacks.NO_FINAL_ITERATE:
            raise ValueError(f"attack: {name} keeps no final iterate per point (an input set needs one); use pgd, apgd-ce, fab-t, square or cw")
        if name not in (*attacks.ATTACKS, "natural"):
            raise ValueError(f"attack: {name}: an attack of yours runs in the robustness evaluator's attacks list")
        if name in ("cw", "natural"):
            if self.eps is not None:
                raise ValueError(f"eps: {name} is unbounded (it searches for the closest adversarial); leave eps out")
            forced = "l2" if name == "cw" else None
            if "norm" in self.model_fields_set and self.norm != forced:
                raise ValueError("norm: cw is an L2 attack" if forced else "norm: natural adversaries have no norm (their distance is measured in the latent space)")
            self.norm = forced
            return self
        if self.norm is None:
            raise ValueError(f"norm: required for {name}")
        if self.eps is None:
            raise ValueError(f"eps: required for {name} (a list of radii)")
        _eps_bound(self.norm, self.eps, "eps")
        return self

    @property
    def name(self) -> str:
        return "natural" if self.attack is None else self.attack.name

    def n_sets(self) -> int:
        return 1 if self.eps is None else len(self.eps)


class UncertaintyEval(_Evaluator):
    """MC-dropout uncertainty (study.evaluators.uncertainty): per input set (clean, and each
    attack at each eps) and per number of MC samples T: accuracy, mutual information, softmax
    variance, their ratio to a separate clean baseline set, and clean-vs-adversarial detection
    AUROC by each."""

    evaluator: Literal["uncertainty"]
    mc_samples: Annotated[list[PosInt], Field(min_length=1), Distinct] = [1, 2, 5, 10, 20, 50, 100]
    inputs: list[InputSet] = []
    baseline: PosInt = 300  # the first `baseline` evaluation images: the separate clean baseline set
    eot_samples: PosInt = 10  # MC samples per attack query (expectation over transformation)
    max_rows: Optional[PosInt] = None  # rows (input x sample) per MC forward pass; null: 256 on CPU, 16384 on GPU

    def every_model_needs(self) -> frozenset[str]:
        return frozenset({"stochastic"})

    def uses_training_split(self) -> bool:
        return any(s.name == "natural" for s in self.inputs)  # the generative model trains on it

    def n_rows(self, linear_binary: bool) -> int:
        return (1 + sum(s.n_sets() for s in self.inputs)) * len(self.mc_samples)

    def metric_names(self) -> set[str]:
        return set()


class NaturalEval(_Evaluator):
    """Natural adversaries (study.evaluators.natural): latent-space searches around I(x) for the
    correctly classified points, per search kind x samples per round x dr x round budget."""

    evaluator: Literal["natural"]
    search: Annotated[list[Literal[LATENT_KINDS]], Field(min_length=1), Distinct] = list(LATENT_KINDS)
    samples: Annotated[list[PosInt], Field(min_length=1), Distinct] = [64]
    rounds: Annotated[list[PosInt], Field(min_length=1), Distinct] = [1, 3, 10, 30, 100]  # budgets: one search, stopped after each
    dr: Annotated[list[PosFloat], Field(min_length=1), Distinct] = [0.1]
    h0: PosFloat = 10.0  # hybrid: the first coarse range
    stop: PosInt = 5  # hybrid: rounds without improvement that end a phase
    n_points: Optional[PosInt] = 200  # search from the first n evaluation points (all when null)
    examples: Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=16)] = 8  # points kept as images (x, G(I(x)), adversary)

    @model_validator(mode="after")
    def _checks(self):
        for i, dr in enumerate(self.dr):
            if self.h0 <= dr and "hybrid" in self.search:
                raise ValueError(f"dr[{i}]: must be < h0 ({self.h0:g}) for the hybrid search")
        return self

    def searches(self):
        """One LatentSearchSpec per (kind, samples, dr), run to the largest budget."""
        for kind, n, dr in itertools.product(self.search, self.samples, self.dr):
            yield LatentSearchSpec(kind=kind, samples=n, rounds=max(self.rounds), dr=dr, h0=self.h0, stop=self.stop)

    def uses_training_split(self) -> bool:
        return True  # the generative model trains on it

    def n_rows(self, linear_binary: bool) -> int:
        return len(self.search) * len(self.samples) * len(self.dr) * len(self.rounds)

    def metric_names(self) -> set[str]:
        return set()


class ReconstructionEval(_Evaluator):
    """The reconstruction defense (study.evaluators.reconstruction): accuracy on each input set
    (clean, and each attack at each eps) as it is and projected through G(I(.))."""

    evaluator: Literal["reconstruction"]
    inputs: list[InputSet] = [InputSet(attack="fgsm", norm="linf", eps=[0.1, 0.3])]
    n_points: Optional[PosInt] = None  # the first n evaluation points (all when null)
    eot_samples: PosInt = 10  # stochastic models: MC samples per attack query

    def uses_training_split(self) -> bool:
        return True  # the generative model trains on it

    def n_rows(self, linear_binary: bool) -> int:
        return 1 + sum(s.n_sets() for s in self.inputs)

    def metric_names(self) -> set[str]:
        return set()


Quantile = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)]


class DistancesEval(_Evaluator):
    """Class x class mean pairwise distances of sampled images under L0, L1, L2 and Linf, each
    image's distance to the nearest image of another class, and per-class eps suggestions
    (``fraction`` x the ``quantiles`` of that distribution per class): study.evaluators.distances."""

    evaluator: Literal["distances"]
    norms: Annotated[list[Literal[DISTANCE_NORMS]], Field(min_length=1), Distinct] = list(DISTANCE_NORMS)
    per_class: Annotated[list[Annotated[int, BeforeValidator(_not_bool), Field(ge=2)]], Field(min_length=1), Distinct] = [100]  # images sampled per class
    quantiles: Annotated[list[Quantile], Field(min_length=1), Distinct] = [0.1, 0.5]
    fraction: Annotated[float, BeforeValidator(_not_bool), Field(gt=0, le=1)] = 0.5
    split: Literal["train", "test"] = "train"

    def uses_training_split(self) -> bool:
        return self.split == "train"

    def n_rows(self, linear_binary: bool) -> int:
        return len(self.norms) * len(self.per_class) * len(self.quantiles)

    def metric_names(self) -> set[str]:
        return set()


class CraftedEval(_Evaluator):
    """The source text's crafted images x0 + eps * sign(x1), clipped to [0, 1], for every ordered
    pair of classes (x0 and x1 test images of different classes), classified by the model:
    study.evaluators.crafted."""

    evaluator: Literal["crafted"]
    eps: Annotated[list[Annotated[float, BeforeValidator(_not_bool), Field(gt=0, le=1)]], Field(min_length=1), Distinct] = [0.1, 0.2, 0.3]
    per_class: PosInt = 10  # test images per class; every pair of images of different classes is crafted

    def n_rows(self, linear_binary: bool) -> int:
        return len(self.eps)

    def metric_names(self) -> set[str]:
        return set()


class _EmbeddingAttacks(_Evaluator):
    """The attacks measured in a triplet embedding (study.evaluators.embedding)."""

    eps: Annotated[list[PosFloat], Field(min_length=1), Distinct] = [0.1, 0.25, 0.5, 1.0]  # embedding-space L2 radii (unit-norm embeddings: at most 2)
    steps: PosInt = 40  # embedding-space PGD iterations
    step_size: PosFloat = 0.01  # input-space sign step per iteration (absolute, pixels in [0, 1])
    bisection_steps: PosInt = 12  # halvings of the scale along the perturbation when a step leaves the ball
    input_attacks: Annotated[dict[Literal[tuple(NORMS)], NormAxes], Field(min_length=1)] = {"linf": NormAxes(eps=[0.3]), "l2": NormAxes(eps=[4.5])}
    input_steps: PosInt = 40  # PGD iterations of the input-space attacks

    @model_validator(mode="after")
    def _checks(self):
        for name, axes in self.input_attacks.items():
            _eps_bound(name, axes.eps, f"input_attacks.{name}.eps")
        return self

    def pair_rows(self) -> int:
        """Rows per (embedding, attacked model): embedding-space PGD per eps, and per input
        attack and eps, its share inside each eps."""
        return len(self.eps) * (1 + sum(len(a.eps) for a in self.input_attacks.values()))

    def metric_names(self) -> set[str]:
        return set()


class EmbeddingEval(_EmbeddingAttacks):
    """Epsilon measured in a metric-learned embedding (models with one: triplet): nearest-neighbour
    accuracy, within- and between-class embedding distances, PGD constrained to
    ||e(x') - e(x)||_2 <= eps in embedding space (projection by bisection along the perturbation),
    and how many input-space PGD adversaries stay inside that ball, all against the model's own
    classifier: study.evaluators.embedding. Trials of models without an embedding skip it."""

    evaluator: Literal["embedding"]
    per_class: Annotated[int, BeforeValidator(_not_bool), Field(ge=2)] = 100  # images per class for the distance distributions
    n_points: Optional[PosInt] = 500  # attack the first n evaluation points (all when null)

    def some_model_needs(self) -> frozenset[str]:
        return frozenset({"embedding"})  # models without one are skipped

    def uses_training_split(self) -> bool:
        return True  # 1-NN accuracy and distance distributions over training embeddings

    def n_rows(self, linear_binary: bool) -> int:
        return 1 + self.pair_rows()


class EmbeddingTransferEval(_EmbeddingAttacks):
    """Every model of the study measured in every triplet embedding of it, run once after the
    trials (study.evaluators.embedding.transfer): each model attacked by PGD constrained to
    ||e(x') - e(x)||_2 <= eps in the embedding e, and each model's input-space PGD adversaries
    with the share that stays inside each embedding ball."""

    evaluator: Literal["embedding-transfer"]
    eps: Annotated[list[PosFloat], Field(min_length=1), Distinct] = [0.25, 0.5, 1.0]
    n_points: Optional[PosInt] = 200  # the first n evaluation points (all when null)

    def some_model_needs(self) -> frozenset[str]:
        return frozenset({"embedding"})

    def n_rows(self, linear_binary: bool) -> int:
        return 0  # its rows are written after the trials, one set per (embedding, model) pair


Evaluator = Annotated[
    Union[
        RobustnessEval, GeometryEval, RubbishEval, TransferEval, UncertaintyEval, NaturalEval, ReconstructionEval, DistancesEval, CraftedEval, EmbeddingEval,
        EmbeddingTransferEval, FeaturesEval, GaussianEval,
    ],
    Field(discriminator="evaluator"),
]
EVALUATORS = (
    "robustness", "geometry", "rubbish", "transfer", "uncertainty", "natural", "reconstruction", "distances", "crafted", "embedding", "embedding-transfer", "features",
    "gaussian",
)
_CAPABILITY = {"stochastic": "MC-dropout models", "embedding": "a model with an embedding"}


def _having(capability: str) -> str:
    return ", ".join(k for k, r in models.MODELS.items() if capability in r.capabilities)


_BUILTIN_ENTRIES = TypeAdapter(Evaluator)


def parse_entries(raw) -> list:
    """The ``evaluate:`` list: each entry validated by its evaluator's spec, a built-in's or one
    from study.registry (a registered name or a user's import path)."""
    if not isinstance(raw, list):
        raise _AxisError((), "must be a list of evaluator entries, e.g. - evaluator: robustness")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _AxisError((i,), "must be a mapping with an `evaluator` (which evaluator to run)")
        name = item.get("evaluator")
        if name is None:
            raise _AxisError((i,), "missing 'evaluator' (which evaluator to run)")
        try:
            if name in EVALUATORS:
                entries.append(_BUILTIN_ENTRIES.validate_python(item))
                continue
            try:
                found = registry.find(name)
            except ValueError as e:
                raise _AxisError((i, "evaluator"), str(e)) from None
            entries.append(found.spec.model_validate(item))
        except ValidationError as e:
            errors = _relevant_errors(e.errors())
            err = errors[0]
            loc = list(err["loc"])
            if loc and loc[0] in EVALUATORS:  # the tag of the built-ins' discriminated union
                loc = loc[1:]
            sub, msg = _split_nested(_message(err))
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise _AxisError((i, *loc, *([sub] if sub else [])), msg + more) from None
    return entries


Mode = Literal["max", "min"]
# Metrics every trial reports after each training epoch: what a scheduler can stop on.
EPOCH_METRICS = {"clean_acc": "max", "train_loss": "min"}


class Asha(_Strict):
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


class SearchSpec(_Strict):
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


class Resources(_Strict):
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


class GenerativeSpec(_Strict):
    """The WGAN-GP generator, critic and inverter of natural adversaries (study.generative):
    trained once per dataset and config and kept in the model store. The defaults fit a 2-core
    CPU in minutes; search_spaces/natural-cluster.yaml has the paper's networks and schedule."""

    arch: Literal["mlp", "conv"] = "mlp"
    latent_dim: PosInt = 64
    width: PosInt = 256  # mlp: hidden units (2 x width in the layer next to the image); conv: DIM
    steps: PosInt = 8000  # generator steps
    critic_steps: PosInt = 5  # critic steps per generator step
    gp: NonNegFloat = 10.0  # gradient-penalty weight
    lr: PosFloat = 1e-4
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.5, 0.9)
    batch_size: PosInt = 64
    inverter_lambda: NonNegFloat = 0.1  # weight of mean (z - I(G(z)))^2
    joint_inverter: bool = False  # an inverter step after every critic step (the paper's schedule)
    inverter_steps: Annotated[int, BeforeValidator(_not_bool), Field(ge=0)] = 4000  # inverter steps after the WGAN, G frozen
    seed: Optional[Annotated[int, BeforeValidator(_not_bool)]] = None  # defaults to the study seed

    @model_validator(mode="after")
    def _inverter_trained(self):
        if not self.joint_inverter and self.inverter_steps == 0:
            raise ValueError("inverter_steps: the inverter needs training (inverter_steps > 0 or joint_inverter: true)")
        return self


FEATURE_SOURCES = ("cnn", "mlp", "maxout", "resnet18")  # sequential models whose last layer is the read-out


class FeaturesSpec(_Strict):
    """The source models of constructed training sets (study.features): ``robust`` (adversarially
    trained) for D_R; ``standard`` for D_NR, D_rand and D_det and for the ``features`` transfer
    evaluator. Trained before the trials, kept in the model store like any trial's model."""

    standard: TrainConfig = TrainConfig(model="cnn", epochs=8)
    # A wide penultimate layer: matching a narrow one leaves much of the image unconstrained.
    robust: TrainConfig = TrainConfig(model="cnn", hidden=1024, channels=32, epochs=20, adversarial=AdversarialTraining(attack="pgd", norm="l2", eps=2.0, alpha=0.0, steps=7, step_size=0.25))

    @model_validator(mode="after")
    def _checks(self):
        for name in ("standard", "robust"):
            cfg = getattr(self, name)
            if cfg.model not in FEATURE_SOURCES:
                raise ValueError(f"{name}.model: {cfg.model} has no penultimate layer to match; a source is one of {', '.join(FEATURE_SOURCES)}")
            if cfg.train_set is not None:
                raise ValueError(f"{name}.train_set: a source model trains on the dataset itself")
            if cfg.normalize is not None or cfg.checkpoint is not None:
                raise ValueError(f"{name}: a source model is a registry model trained here, without normalize or checkpoint")
            for param in models.MODEL_PARAMS:
                if getattr(cfg, param) is not None and param not in models.MODELS[cfg.model].params():
                    raise ValueError(f"{name}.{param}: model {cfg.model} takes no {param}")
        if self.standard.adversarial is not None:
            raise ValueError("standard.adversarial: the standard source is trained without an adversary")
        if self.robust.adversarial is None or self.robust.adversarial.alpha == 1:
            raise ValueError("robust.adversarial: the robust source needs adversarial training (e.g. {attack: pgd, norm: linf, eps: 0.2, alpha: 0})")
        return self


class StudySpec(_Strict):
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
        robustness entries may share no (attack and settings, norm, eps); any other evaluator
        appears once (one entry sweeps all its axes)."""
        seen = {}
        for i, e in enumerate(self.evaluate):
            if e.evaluator != "robustness":
                if e.evaluator in seen:
                    raise ValueError(f"evaluate[{i}]: a second {e.evaluator} entry (the first is evaluate[{seen[e.evaluator]}]); put all its settings in one entry")
                seen[e.evaluator] = i
                continue
            for point in e.row_points():
                if point in seen:
                    j = seen[point]
                    what = f"{point[0]} {point[4]} eps {point[5]:g}" if point[5] is not None else f"{point[0]} {point[4]} per-class eps"
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
                        raise ValueError(f"evaluate[{i}]: {e.evaluator} needs {_CAPABILITY[capability]} ({_having(capability)}); train.model has {m}")
            for capability in e.some_model_needs():
                if options and not any(capability in models.entry(m).capabilities for m in options):
                    raise ValueError(f"evaluate[{i}]: {e.evaluator} needs {_CAPABILITY[capability]} ({_having(capability)}); train.model has {', '.join(options)}")

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
        paths += [a.name for e in self.evaluate if e.evaluator == "robustness" for a in e.attack_list() if imports.is_import_path(a.name)]
        if isinstance(self.data.dataset, dict) and "import" in self.data.dataset:
            paths.append(self.data.dataset["import"])
        return paths

    def label_axes(self) -> list[str]:
        """The training axes a trial's label shows: those the study varies, and the
        hyperparameters its model variants set."""
        swept = [n for n, a in self.train.items() if a.kind != "value"]
        variants = [k for v in self.train["model"].values if isinstance(v, dict) for k in v if k not in ("name", "import")]
        return swept + [k for k in dict.fromkeys(variants) if k not in swept]

    def data_problem(self, n_eval: int, n_classes: int, n_train: int = 1, input_shape: tuple[int, ...] | None = None) -> str | None:
        """What the loaded data makes impossible (sizes, shapes and class counts the spec alone
        does not know), as ``field: message``; None when the study can run."""
        if input_shape is not None and self.needs_generative and self.generative.arch == "conv" and tuple(input_shape[1:]) != (28, 28):
            return f"generative.arch: the conv generative networks take 28 x 28 images; the data's are {input_shape[1]} x {input_shape[2]} (use arch: mlp)"
        if n_train == 0:
            axis = self.train.get("checkpoint")
            if axis is None or any(v is None for v in axis.values):
                return "train.checkpoint: the data has no training split, so every trial needs a checkpoint to evaluate (or give the data a training split)"
            for i, e in enumerate(self.evaluate):
                if e.uses_training_split():
                    return f"evaluate[{i}]: {e.evaluator} reads the training split, and the data has none"
        for i, e in enumerate(self.evaluate):
            if e.evaluator == "uncertainty" and e.baseline >= n_eval:
                return f"evaluate[{i}].baseline: {e.baseline} baseline images leave none of the {n_eval} evaluation images to attack (lower baseline or raise data.n_eval)"
            named = [a.name for a in e.attack_list()] if e.evaluator == "robustness" else [s.name for s in getattr(e, "inputs", ())]
            named += [e.attack.name] if isinstance(getattr(e, "attack", None), AttackSpec) else []
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
        return any(
            e.evaluator in ("natural", "reconstruction") or any(s.name == "natural" for s in getattr(e, "inputs", ()))
            for e in self.evaluate
        )

    @property
    def needs_features(self) -> bool:
        """Whether the study builds training sets or runs the features evaluator (its source
        models are trained before the trials)."""
        return bool(self.train_sets()) or any(e.evaluator == "features" for e in self.evaluate)

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

    def grid_configs(self) -> list[dict] | None:
        """Every trial's training config when all axes are values or grids and the search
        takes them as written (else None: configs are sampled at run time)."""
        if self.search.kind == "optuna" or any(a.kind not in ("value", "grid") for a in self.train.values()):
            return None
        names = list(self.train)
        combos = itertools.product(*(self.train[n].values for n in names))
        return [self.resolve(dict(zip(names, c))) for c in combos for _ in range(self.search.num_samples)]

    def resolve(self, sampled: dict) -> dict:
        """A full TrainConfig dict from one sample of the axes (defaults and the study seed filled)."""
        cfg = TrainConfig.model_validate(sampled)
        if cfg.seed is None:
            cfg.seed = self.seed
        return cfg.model_dump(mode="json")

    def tune_choices(self) -> dict[str, dict[str, Any]]:
        """Short labels for grid/choice options that are mappings or null (e.g. `adversarial`):
        Tune sees the labels, so its progress table stays readable; ``decode`` maps them back."""
        out = {}
        for name, axis in self.train.items():
            if axis.kind in ("grid", "choice") and any(v is None or isinstance(v, dict) for v in axis.values):
                labels = [_option_label(v) for v in axis.values]
                if len(set(labels)) < len(labels):
                    labels = [f"{i}:{lab}" for i, lab in enumerate(labels)]
                out[name] = dict(zip(labels, axis.values))
        return out

    def decode(self, sampled: dict) -> dict:
        """A Tune sample with option labels replaced by the options they stand for."""
        choices = self.tune_choices()
        return {k: choices[k][v] if k in choices else v for k, v in sampled.items()}

    def n_trials(self) -> int:
        """Trials Tune starts (a scheduler may stop some before they write rows)."""
        if self.search.kind == "optuna":
            return self.search.num_samples
        if self.grid_configs() is not None:
            return math.prod(len(a.values) for a in self.train.values()) * self.search.num_samples
        grid = math.prod(len(a.values) for a in self.train.values() if a.kind == "grid")
        return grid * self.search.num_samples

    def rows_per_trial(self, cfg: dict) -> int:
        """Rows a trial of the resolved config ``cfg`` writes (the geometry evaluator's closed
        forms need a linear two-class model, un-normalised; the embedding evaluator, a model
        with an embedding)."""
        entry = models.entry(cfg["model"])
        linear_binary = entry.linear and cfg.get("normalize") is None and (entry.binary or len(self.data.classes or ()) == 2)
        counts = [e.n_rows(linear_binary) for e in self.evaluate if e.some_model_needs() <= entry.capabilities]  # the others skip this model
        return None if None in counts else sum(counts)  # None: an evaluator of the user's does not say

    def study_rows(self, configs: list[dict]) -> int:
        """Rows the study evaluators write after the trials of ``configs``: transfer, every
        (source, target, eps); features, every (target, eps); embedding-transfer, every
        (embedding, model) pair; gaussian, none (an artifact)."""
        n = len(configs)
        embeddings = sum(models.entry(c["model"]).embeds for c in configs)
        rows = {
            "transfer": lambda e: n**2 * len(e.eps),
            "features": lambda e: n * len(e.eps),
            "embedding-transfer": lambda e: embeddings * n * e.pair_rows(),
        }
        return sum(rows[e.evaluator](e) for e in self.evaluate if e.evaluator in rows)

    def expected_rows(self) -> int | None:
        """Rows the sweep writes when every trial finishes (None: configs sampled at run time)."""
        configs = self.grid_configs()
        if configs is None:
            return None
        per_trial = [self.rows_per_trial(c) for c in configs]
        return None if None in per_trial else sum(per_trial) + self.study_rows(configs)

    def max_epochs(self) -> int:
        """The most epochs any trial can train (the bound a scheduler needs)."""
        axis = self.train.get("epochs")
        if axis is None:
            return TrainConfig.model_fields["epochs"].default
        return axis.values[1] - 1 if axis.kind == "randint" else max(axis.values)


def _option_label(value) -> str:
    if value is None:
        return "none"
    if not isinstance(value, dict):
        return str(value)
    return "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value.values() if v is not None)


def parse_train_axes(raw) -> dict[str, Axis]:
    if not isinstance(raw, dict):
        raise ValueError("must be a mapping of training axes")
    if "model" not in raw:
        raise _AxisError(("model",), "required (which model to train)")
    axes = {}
    for name, value in raw.items():
        field = TrainConfig.model_fields.get(name)
        if name == "model_args":
            raise _AxisError((name,), "give an imported model's arguments in its variant, e.g. model: {import: mylab.nets:WideResNet, depth: 28}")
        if field is None:
            raise _AxisError((name,), f"unknown training axis (known: {', '.join(TrainConfig.model_fields)})")
        axes[name] = _parse_axis(name, value)
    return axes


def _parse_axis(name: str, value) -> Axis:
    def check(v, *loc):
        # Validate one candidate value with TrainConfig's own field rules and validators.
        try:
            cfg = TrainConfig.model_validate({"model": "logreg", name: v})
        except ValidationError as e:
            err = e.errors()[0]
            sub, msg = _split_nested(_message(err))
            raise _AxisError((name, *loc, *err["loc"][1:], *([sub] if sub and sub != name else [])), msg) from None
        if name == "model" and isinstance(v, dict):
            dumped = cfg.model_dump(mode="json")
            own = {k: dumped.get(k) for k in v if k in VARIANT_FIELDS}
            return {"name" if "name" in v else "import": cfg.model, **cfg.model_args, **own}
        return cfg.model_dump(mode="json").get(name)

    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DOMAINS:
        kind, args = next(iter(value.items()))
        if not isinstance(args, list):
            raise _AxisError((name, kind), "must be a list")
        if kind in ("grid", "choice"):
            if not args:
                raise _AxisError((name, kind), "must not be empty")
            return Axis(kind=kind, values=[check(v, kind, i) for i, v in enumerate(args)])
        if len(args) != 2:
            raise _AxisError((name, kind), "must be [low, high]")
        lo, hi = (check(v, kind, i) for i, v in enumerate(args))
        if not (isinstance(lo, (int, float)) and lo < hi):
            raise _AxisError((name, kind), "needs numbers with low < high")
        if kind == "loguniform" and lo <= 0:
            raise _AxisError((name, kind, 0), "must be > 0 for a log scale")
        return Axis(kind=kind, values=[lo, hi])
    return Axis(kind="value", values=[check(value)])


class _AxisError(ValueError):
    def __init__(self, loc, msg):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def _message(err: dict) -> str:
    """One short human message for a pydantic error."""
    ctx, kind = err.get("ctx") or {}, err["type"]
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}"
    if kind == "literal_error":
        return f"unknown value {err['input']!r} (expected {ctx.get('expected')})"
    if kind == "union_tag_invalid":
        return f"unknown evaluator {ctx.get('tag')!r} (known: {', '.join(EVALUATORS)})"
    if kind == "union_tag_not_found":
        return "missing 'evaluator' (which evaluator to run)"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "string_pattern_mismatch":
        return "must be letters, digits, '.', '_' or '-'"
    return err["msg"][0].lower() + err["msg"][1:]


def _format_loc(loc) -> str:
    loc = list(loc)
    # Drop pydantic's bookkeeping: the tag of a discriminated union and the marker of dict keys.
    if len(loc) > 2 and loc[0] == "evaluate" and loc[2] in EVALUATORS:
        del loc[2]
    out = ""
    for part in loc:
        if part == "[key]" or _union_member(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _split_nested(msg: str) -> tuple[str, str]:
    """A validator may prefix a sub-path ('norms.linf.eps[3]: ...'); split it off."""
    m = re.match(r"^([A-Za-z_][\w.\[\]]*): (.*)$", msg)
    return (m.group(1), m.group(2)) if m else ("", msg)


_UNION_MEMBER = re.compile(r"^(str|int|float|literal\[.*|list\[.*)$")


def _union_member(part) -> bool:
    """pydantic names the member of a union (e.g. `literal['max','min']`) in the error's loc."""
    return isinstance(part, str) and bool(_UNION_MEMBER.match(part))


def _relevant_errors(errors: list[dict]) -> list[dict]:
    """A value that fits no member of a union (metric: one name or a list) gets one error per
    member; report the member whose shape matches what was written (a list or a single value)."""
    def misfit(err):
        in_union = any(_union_member(p) for p in err["loc"])
        wrong_shape = err["type"].endswith("_type") or (err["type"] == "literal_error" and isinstance(err["input"], list))
        return in_union and wrong_shape

    return [err for err in errors if not misfit(err)] or errors


def _from_validation_error(path: str, e: ValidationError) -> SpecError:
    errors = _relevant_errors(e.errors())
    err = errors[0]
    ctx_error = (err.get("ctx") or {}).get("error")
    loc = list(err["loc"])
    if isinstance(ctx_error, _AxisError):
        loc, msg = loc + list(ctx_error.loc), ctx_error.msg
    else:
        sub, msg = _split_nested(_message(err))
        loc += [sub] if sub else []
    where = _format_loc(loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return SpecError(f"{path}: {where}: {msg}{more}" if where else f"{path}: {msg}{more}")


def parse_spec(raw: Any, path: str = "<spec>") -> StudySpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping (name, data, train, evaluate, ...)")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as e:
        raise _from_validation_error(path, e) from None


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
