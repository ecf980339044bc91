"""What a trial trains (or loads): the data, the model and its variants, the training recipe,
adversarial training, constructed training sets, checkpoints; and the study's generative and
feature-source models, trained once before the trials."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, field_validator, model_serializer, model_validator

from study import attacks, data, models
from study.norms import NORMS
from study.spec.constraints import Strict, eps_bound
from study.types import NonNegFloat, PosFloat, PosInt, _not_bool

class DataSpec(Strict):
    """The dataset: a built-in name, ``npz`` (``path``), ``imagefolder`` (``root``), any
    torchvision dataset (``{torchvision: SVHN}``, with ``root`` / ``download``) or a loader of
    the user's (``{import: mylab.data:load, <its keyword arguments>}``): study.data."""

    dataset: Union[Literal[tuple(data.SOURCES)], dict[str, Any]] = "mnist-5k"
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


NOISE = ("noise-sign", "noise-uniform")  # Goodfellow et al.'s control: training on random noise of the threat's size


class AdversarialTraining(Strict):
    """alpha J(x) + (1 - alpha) J(x'), x' the attack's adversarial example (fgsm, pgd) or, as the
    control, x plus random noise of the same size (study.train.noisy): ``noise-sign`` (+-eps per
    pixel, Linf), ``noise-uniform`` (uniform in the eps ball)."""

    attack: Literal[("fgsm", "pgd", *NOISE)]
    norm: Literal[tuple(NORMS)]
    eps: NonNegFloat
    alpha: Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)] = 0.5  # weight of the clean loss
    steps: Optional[PosInt] = None  # pgd only; default 10
    step_size: Optional[PosFloat] = None  # relative to eps

    @model_validator(mode="after")
    def _checks(self):
        eps_bound(self.norm, self.eps, "eps")
        if self.attack in NOISE:
            for name in ("steps", "step_size"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: {self.attack} draws its noise once, it takes no {name}")
            if self.attack == "noise-sign" and self.norm != "linf":
                raise ValueError("norm: noise-sign moves every pixel by +-eps, a corner of the Linf ball; use linf (or noise-uniform for l2)")
            return self
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


class TrainSet(Strict):
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


class Normalization(Strict):
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
    if "ensemble" in value:
        return "ensemble"
    if "import" in value:
        return value["import"]
    if "torchvision" in value:
        return f"torchvision.models:{value['torchvision']}"
    return value.get("name")


def ensemble_name(members: list) -> str:
    """``ensemble(maxout x5)``, ``ensemble(cnn+mlp hidden=64)``: how labels name an ensemble."""

    def one(m) -> str:
        if not isinstance(m, dict):
            return str(m)
        return " ".join([variant_model(m), *(f"{k}={v}" for k, v in m.items() if k not in ("name", "import", "torchvision"))])

    names = [one(m) for m in members]
    return f"ensemble({names[0]} x{len(names)})" if len(set(names)) == 1 else f"ensemble({'+'.join(names)})"


class TrainConfig(Strict):
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
    members: Optional[list[Union[str, dict[str, Any]]]] = None  # model ensemble: its members, as train.model values (each may set its seed)

    @model_validator(mode="before")
    @classmethod
    def _model_variant(cls, data):
        """``model: {name: triplet, margin: 0.5}``: a model with its own hyperparameters, so one
        grid can hold models that take different ones. ``model: {import: mylab.nets:Net, depth:
        28}`` or ``{torchvision: resnet18}``: a model of the user's, with its keyword arguments."""
        if not (isinstance(data, dict) and isinstance(data.get("model"), dict)):
            return data
        variant = dict(data["model"])
        if "ensemble" in variant:
            return {**data, "model": "ensemble", "members": _ensemble_members(variant)}
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
    def _ensemble(self):
        if (self.model == "ensemble") != (self.members is not None):
            raise ValueError("members: only an ensemble has members (model: {ensemble: [cnn, mlp]} or {ensemble: maxout, size: 5})")
        if self.members is None:
            return self
        for field in ("normalize", "checkpoint", "model_args", *models.MODEL_PARAMS):
            if getattr(self, field) not in (None, {}):
                raise ValueError(f"{field}: set it on the ensemble's members, not on the ensemble")
        for i, member in enumerate(self.member_configs()):
            registered = models.entry(member.model)
            if member.members is not None:
                raise ValueError(f"model.ensemble[{i}]: an ensemble's members are models, not ensembles")
            if registered.objective != "cross_entropy" or registered.binary or member.checkpoint is not None or member.normalize is not None:
                raise ValueError(f"model.ensemble[{i}]: {member.model}: an ensemble averages the class probabilities of softmax classifiers trained here (no rbf, svm, triplet, checkpoint or normalize)")
        return self

    def member_configs(self) -> list["TrainConfig"]:
        """Each member's own training config: the ensemble's recipe (epochs, lr, adversarial
        training, ...) with the member's model, and seed + i unless the member sets its seed, so
        a member is the same model (the same store key) as a trial of that config."""
        recipe = self.model_dump(mode="json", exclude={"model", "members", "seed", *models.MODEL_PARAMS})
        out = []
        for i, value in enumerate(self.members or ()):
            value = dict(value) if isinstance(value, dict) else {"name": value}
            seed = value.pop("seed", None)
            if seed is None and self.seed is not None:
                seed = self.seed + i
            try:
                out.append(TrainConfig.model_validate({**recipe, "model": value, "seed": seed}))
            except ValueError as e:
                raise ValueError(f"model.ensemble[{i}]: {_first_error(e)}") from None
        return out

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
        for name, empty in (("model_args", {}), ("normalize", None), ("checkpoint", None), ("members", None)):
            if out.get(name) == empty:
                out.pop(name, None)
        return out

    @property
    def trained_here(self) -> bool:
        return self.checkpoint is None


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


def _ensemble_members(variant: dict) -> list:
    """``{ensemble: [cnn, {name: mlp, hidden: 64}]}`` (each member a train.model value, which may
    set its own ``seed``) or ``{ensemble: maxout, size: 5}`` (one model, ``size`` times)."""
    members, size = variant.get("ensemble"), variant.get("size")
    extra = set(variant) - {"ensemble", "size"}
    if extra:
        raise ValueError(f"an ensemble takes `ensemble` (its members) and `size` only, not {', '.join(sorted(extra))}")
    if isinstance(members, (str, dict)):
        if size is None:
            raise ValueError("size: an ensemble of one model names how many members it has ({ensemble: maxout, size: 5})")
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError("size: an ensemble has at least 2 members")
        return [members] * size
    if size is not None:
        raise ValueError("size: repeats a single member; a list of members gives its own size")
    if not isinstance(members, list) or len(members) < 2:
        raise ValueError("ensemble: a list of at least 2 members (registry names or model variants)")
    return members


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    return errors()[0]["msg"].removeprefix("Value error, ") if callable(errors) else str(e)


class GenerativeSpec(Strict):
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


class ACGANSpec(Strict):
    """The class-conditional AC-GAN (WGAN-GP with an auxiliary classifier) of unrestricted
    adversarial examples (study.acgan): trained once per dataset and config, kept in the model
    store. CPU-sized defaults; search_spaces/unrestricted-cluster.yaml has the conv networks at
    a GPU's scale."""

    arch: Literal["mlp", "conv"] = "mlp"
    latent_dim: PosInt = 64
    width: PosInt = 256  # mlp: hidden units (2 x width next to the image); conv: DIM
    # 2,000 steps at lr 1e-3 on mnist-5k: an MLP classifier (93.5% on the test split) calls 92.8%
    # of the samples their class (lr 2e-4: 80.6%); about 4 minutes on 2 cores.
    steps: PosInt = 2000  # generator steps
    critic_steps: PosInt = 5  # critic steps per generator step
    gp: NonNegFloat = 10.0  # gradient-penalty weight
    aux_weight: NonNegFloat = 1.0  # weight of the auxiliary classifier's cross-entropy, in both losses
    lr: PosFloat = 1e-3
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.5, 0.9)
    batch_size: PosInt = 64
    seed: Optional[Annotated[int, BeforeValidator(_not_bool)]] = None  # defaults to the study seed


FEATURE_SOURCES = ("cnn", "mlp", "maxout", "resnet18")  # sequential models whose last layer is the read-out


class FeaturesSpec(Strict):
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
