"""Every hyper-parameter of a training run, typed, with its default and unit, in one visible block.

Loaded from ``--config FILE.toml`` (top-level keys, or a ``[config]`` table) and then ``--set key=value ...``
overrides; unknown keys and ill-typed values are rejected with the list of valid keys (``BadInput``, exit 2).
``--set`` values: numbers and words as typed, booleans ``true``/``false``, lists comma-separated (``widths=64,32,16``),
``rank`` an integer or ``full``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from empirics.data.corruptions import CORRUPTIONS, SEVERITIES
from empirics.data.datasets import CIFAR10_C_FAMILIES, DATASETS, input_shape, num_classes, ood_dataset_for, task_of
from empirics.data.regression import REGRESSION_DATASETS
from empirics.models.attention import BE_SCOPES, LAYERNORMS, POOLINGS
from empirics.models.ensembles import ARCHS, DE_MODES, METHODS, ModelSpec
from empirics.models.layers import BIASES, INITS
from empirics.models.networks import ACTIVATIONS, BATCHNORMS, SHORTCUTS, LayerFactory
from empirics.models.precision import PRECISIONS
from infra.errors import BadInput
from theory.batchensemble import FULL_RANK, VARIANTS

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "multistep", "cosine")
DEVICES = ("cpu", "auto", "cuda")
# How a BatchEnsemble / Deep Ensemble training batch reaches the members: "repeat" = every member sees the whole batch
# (edward2's BatchEnsemble), "split" = member i sees only the i-th of k equal blocks of the batch (torch-uncertainty's
# repeat_strategy="paper"). Evaluation always feeds every member every input.
BATCH_REGIMES = ("repeat", "split")
# Keys that change how a run executes, not what it computes: a resumed or reused run may differ in them.
EXECUTION_KEYS = ("data_root", "download", "num_workers", "device", "eval_batch_size", "threads")


def _choice(choices: Iterable[str], unit: str = "") -> dict[str, Any]:
    return {"choices": tuple(choices), "unit": unit}


@dataclass(frozen=True)
class Config:
    # ---- data -------------------------------------------------------------------------------------------------------
    dataset: str = field(default="mnist", metadata=_choice((*DATASETS, *REGRESSION_DATASETS),
                                                           "image classification, or regression (Gaussian head)"))
    ood_dataset: str = field(default="", metadata={"unit": "'' = the dataset's OOD pair (mnist↔fashion-mnist, "
                                                           "cifar10→svhn)", "choices": ("", *DATASETS)})
    data_root: str = field(default="", metadata={"unit": "'' = --data-root, else $EGEO_DATA_ROOT, else the cache"})
    download: bool = field(default=False, metadata={"unit": "fetch missing data through torchvision"})
    n_train: int = field(default=0, metadata={"unit": "training images; 0 = all left after validation"})
    val_fraction: float = field(default=0.1, metadata={"unit": "fraction of the train split held out, [0, 1)"})
    n_eval: int = field(default=0, metadata={"unit": "images scored per evaluation set (clean test, each shift family, "
                                                      "OOD): a fixed seeded subset, the same for every run; 0 = all"})
    # ---- architecture -----------------------------------------------------------------------------------------------
    arch: str = field(default="mlp", metadata=_choice(ARCHS))
    widths: tuple[int, ...] = field(default=(64, 32, 16), metadata={"unit": "MLP hidden widths"})
    activation: str = field(default="relu", metadata=_choice(ACTIVATIONS, "MLP"))
    width_mult: float = field(default=1.0, metadata={"unit": "ResNet-18 base width = 64 · width_mult"})
    patch_size: int = field(default=7, metadata={"unit": "ViT patch side p, pixels (divides the image side)"})
    vit_width: int = field(default=64, metadata={"unit": "ViT token width d (a multiple of heads)"})
    depth: int = field(default=4, metadata={"unit": "ViT transformer blocks"})
    heads: int = field(default=4, metadata={"unit": "ViT attention heads per block"})
    mlp_ratio: int = field(default=2, metadata={"unit": "ViT MLP hidden width = mlp_ratio · vit_width"})
    pooling: str = field(default="cls", metadata=_choice(POOLINGS, "ViT features: class token or mean over tokens"))
    be_scope: str = field(default="all", metadata=_choice(BE_SCOPES, "ViT layers made BE: 'all', or 'mlp' (attention "
                                                                       "projections plain and shared; patch embedding, "
                                                                       "MLP blocks and head BE)"))
    layernorm: str = field(default="shared", metadata=_choice(LAYERNORMS, "BE ViT LayerNorm scale and shift"))
    # ---- method -----------------------------------------------------------------------------------------------------
    method: str = field(default="batchensemble", metadata=_choice(METHODS))
    members: int = field(default=4, metadata={"unit": "k, ensemble members (BE, DE)"})
    rank: int | str = field(default=1, metadata={"unit": "BE rank r >= 1 or 'full' (capped at each layer's max)"})
    variant: str = field(default="channel-wise", metadata=_choice(VARIANTS, "BE fast-weight sharing (conv layers)"))
    init: str = field(default="normal", metadata=_choice(INITS, "BE fast-weight init"))
    init_std: float = field(default=0.5, metadata={"unit": "σ of the normal(μ, σ) fast-weight init"})
    init_mean: float = field(default=1.0, metadata={"unit": "μ of the normal(μ, σ) fast-weight init"})
    sign_prob: float = field(default=0.5, metadata={"unit": "P(+1) of the random_sign init"})
    bias: str = field(default="per-member", metadata=_choice(BIASES, "BE linear bias"))
    batchnorm: str = field(default="shared", metadata=_choice(BATCHNORMS, "BE BatchNorm"))
    shortcut: str = field(default="plain", metadata=_choice(SHORTCUTS, "BE ResNet 1×1 downsampling shortcut"))
    dropout: float = field(default=0.05, metadata={"unit": "dropout rate, [0, 1); MC Dropout needs > 0"})
    mc_samples: int = field(default=4, metadata={"unit": "MC Dropout passes at test time (its k)"})
    de_mode: str = field(default="vectorised", metadata=_choice(DE_MODES, "Deep-Ensemble execution"))
    precision: str = field(default="fp32", metadata=_choice(PRECISIONS, "compute precision: 'bf16' = bfloat16 autocast, "
                                                                       "channels-last; weights, optimiser, loss and "
                                                                       "metrics stay float32 "
                                                                       "(empirics.models.precision)"))
    # ---- optimisation -----------------------------------------------------------------------------------------------
    optimizer: str = field(default="adam", metadata=_choice(OPTIMIZERS))
    lr: float = field(default=1e-3, metadata={"unit": "learning rate"})
    momentum: float = field(default=0.9, metadata={"unit": "SGD momentum, [0, 1)"})
    nesterov: bool = field(default=False, metadata={"unit": "SGD Nesterov momentum"})
    weight_decay: float = field(default=1e-4, metadata={"unit": "L2 coefficient (coupled, torch.optim)"})
    fast_weight_decay: bool = field(default=True, metadata={"unit": "apply weight_decay to BE fast factors too"})
    fast_lr_mult: float = field(default=1.0, metadata={"unit": "BE fast-factor LR = lr · fast_lr_mult; 0 = frozen "
                                                                "at their init"})
    schedule: str = field(default="none", metadata=_choice(SCHEDULES, "LR schedule, stepped per epoch"))
    milestones: tuple[int, ...] = field(default=(25, 50), metadata={"unit": "epochs where multistep multiplies LR"})
    gamma: float = field(default=0.1, metadata={"unit": "multistep LR factor"})
    epochs: int = field(default=75, metadata={"unit": "maximum epochs"})
    patience: int = field(default=10, metadata={"unit": "epochs without val-NLL gain before stopping; 0 = off"})
    batch_size: int = field(default=128, metadata={"unit": "images per step (each member sees all of them, or 1/k "
                                                            "of them with batch_regime='split')"})
    batch_regime: str = field(default="repeat", metadata=_choice(BATCH_REGIMES, "training batch per member: 'repeat' "
                                                                              "= all of it, 'split' = 1/k of it"))
    eval_batch_size: int = field(default=1000, metadata={"unit": "images per evaluation chunk"})
    grad_clip: float = field(default=0.0, metadata={"unit": "max global gradient L2 norm; 0 = off"})
    seed: int = field(default=0, metadata={"unit": "seeds init, split, shuffling, dropout, corruptions"})
    trajectory: bool = field(default=False, metadata={"unit": "record the diversity trajectory after every epoch "
                                                               "(empirics.analysis.trajectory)"})
    trajectory_samples: int = field(default=1000, metadata={"unit": "shifted test images the trajectory scores"})
    # ---- evaluation and execution -----------------------------------------------------------------------------------
    shift_families: tuple[str, ...] = field(default=(), metadata={"unit": "corruption families; () = all (CIFAR-10: "
                                                                   "the CIFAR-10-C files present, else generated)"})
    shift_severity: int = field(default=3, metadata={"unit": "corruption severity 1..5"})
    num_workers: int = field(default=0, metadata={"unit": "DataLoader worker processes"})
    threads: int = field(default=0, metadata={"unit": "torch CPU threads; 0 = PyTorch's default (on a loaded "
                                                       "machine 1 can be much faster)"})
    device: str = field(default="cpu", metadata=_choice(DEVICES, "'auto' = cuda when available"))

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            object.__setattr__(self, item.name, _coerce(item.name, getattr(self, item.name), _field_type(item)))
        self.validate()

    # ------------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise BadInput(f"unknown config key(s) {', '.join(unknown)}: valid keys are {', '.join(field_names())}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}

    def with_overrides(self, assignments: Iterable[str]) -> "Config":
        """A copy with ``key=value`` strings applied (values parsed by the field's type)."""
        values = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                raise BadInput(f"--set {assignment!r} is not key=value: valid keys are {', '.join(field_names())}")
            if key not in field_names():
                raise BadInput(f"unknown config key {key!r}: valid keys are {', '.join(field_names())}")
            values[key] = _parse_text(key, raw.strip(), _field_type(FIELDS[key]))
        return Config.from_dict(values)

    def validate(self) -> None:
        """Ranges that do not depend on the data (rank vs layer sizes is checked when the model is built)."""
        _positive_int("members", self.members)
        if self.rank != FULL_RANK:
            _positive_int("rank", self.rank)
        _in_range("init_std", self.init_std, 0, None)
        _in_range("sign_prob", self.sign_prob, 0, 1)
        _in_range("val_fraction", self.val_fraction, 0, 1, high_open=True)
        _in_range("n_train", self.n_train, 0, None)
        _in_range("n_eval", self.n_eval, 0, None)
        _in_range("dropout", self.dropout, 0, 1, high_open=True)
        if self.method == "mc-dropout" and self.dropout <= 0:
            raise BadInput(f"dropout={self.dropout} is out of range for method=mc-dropout: expected 0 < dropout < 1")
        _positive_int("mc_samples", self.mc_samples)
        if not self.widths or any(width < 1 for width in self.widths):
            raise BadInput(f"widths={list(self.widths)} is not valid: expected one or more integers >= 1")
        _in_range("width_mult", self.width_mult, 0, None, low_open=True)
        for name in ("patch_size", "vit_width", "depth", "heads", "mlp_ratio"):
            _positive_int(name, getattr(self, name))
        if self.vit_width % self.heads:
            raise BadInput(f"vit_width={self.vit_width} is not a multiple of heads={self.heads}: expected heads to "
                           f"divide the token width")
        _in_range("lr", self.lr, 0, None, low_open=True)
        _in_range("momentum", self.momentum, 0, 1, high_open=True)
        _in_range("weight_decay", self.weight_decay, 0, None)
        _in_range("fast_lr_mult", self.fast_lr_mult, 0, None)
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)):
            raise BadInput(f"milestones={list(self.milestones)} is not valid: expected increasing epochs >= 1")
        _in_range("gamma", self.gamma, 0, 1, low_open=True)
        _positive_int("epochs", self.epochs)
        _in_range("patience", self.patience, 0, None)
        if self.patience > 0 and self.val_fraction == 0:
            raise BadInput("patience > 0 needs a validation set: set val_fraction > 0 or patience=0")
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _in_range("grad_clip", self.grad_clip, 0, None)
        if self.batch_regime == "split" and self.method not in ("batchensemble", "deep-ensemble"):
            raise BadInput(f"batch_regime='split' is out of range for method={self.method}: it splits the batch among "
                           f"the members of a batchensemble or deep-ensemble")
        _positive_int("trajectory_samples", self.trajectory_samples)
        _in_range("seed", self.seed, 0, None)
        for family in self.shift_families:
            if family not in CORRUPTIONS and not (self.dataset == "cifar10" and family in CIFAR10_C_FAMILIES):
                raise BadInput(f"shift_families contains {family!r}: expected families from {', '.join(CORRUPTIONS)}"
                               + (f" or the CIFAR-10-C release's {', '.join(CIFAR10_C_FAMILIES)}"
                                  if self.dataset == "cifar10" else ""))
        if self.shift_severity not in SEVERITIES:
            raise BadInput(f"shift_severity={self.shift_severity} is out of range: expected one of "
                           f"{', '.join(map(str, SEVERITIES))}")
        if self.task == "regression" and self.arch != "mlp":
            raise BadInput(f"arch={self.arch!r} is not valid for the regression data set {self.dataset!r}: expected "
                           f"'mlp' (inputs are feature vectors)")
        if self.task == "regression" and self.ood_dataset:
            raise BadInput(f"ood_dataset={self.ood_dataset!r} is not valid for regression: expected '' (the shift "
                           f"split is the out-of-distribution probe)")
        _in_range("num_workers", self.num_workers, 0, None)
        _in_range("threads", self.threads, 0, None)

    # ------------------------------------------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        """``classification`` or ``regression``: decided by the data set (``data.task_of``)."""
        return task_of(self.dataset)

    @property
    def ood_name(self) -> str:
        return self.ood_dataset or ood_dataset_for(self.dataset)

    def model_spec(self) -> ModelSpec:
        factory = LayerFactory(method=self.method, members=self.members, rank=self.rank, variant=self.variant,
                               init=self.init, init_std=self.init_std, sign_prob=self.sign_prob, bias=self.bias,
                               init_mean=self.init_mean, batchnorm=self.batchnorm, dropout=self.dropout)
        return ModelSpec(arch=self.arch, in_shape=input_shape(self.dataset), num_classes=num_classes(self.dataset),
                         widths=self.widths, activation=self.activation, width_mult=self.width_mult,
                         shortcut=self.shortcut, patch_size=self.patch_size, vit_width=self.vit_width,
                         depth=self.depth, heads=self.heads, mlp_ratio=self.mlp_ratio, pooling=self.pooling,
                         be_scope=self.be_scope, layernorm=self.layernorm, mc_samples=self.mc_samples,
                         de_mode=self.de_mode, precision=self.precision, factory=factory)


FIELDS: dict[str, dataclasses.Field] = {item.name: item for item in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def field_names() -> list[str]:
    return list(FIELDS)


def _field_type(item: dataclasses.Field) -> Any:
    return _HINTS[item.name]


def _type_name(kind: Any) -> str:
    if kind == (int | str):
        return f"an integer >= 1 or '{FULL_RANK}'"
    if typing.get_origin(kind) is tuple:
        return f"a list of {typing.get_args(kind)[0].__name__}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """``value`` checked against the field type (ints accepted for floats; lists for tuples)."""
    bad = BadInput(f"{name}={value!r} has the wrong type: expected {_type_name(kind)}")
    if kind == (int | str):
        if value == FULL_RANK or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise bad
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        element = typing.get_args(kind)[0]
        return tuple(_coerce(name, item, element) for item in value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
        raise bad
    choices = FIELDS[name].metadata.get("choices") if name in FIELDS else None
    if choices and value not in choices:
        raise BadInput(f"{name}={value!r} is unknown: expected one of {', '.join(repr(c) for c in choices)}")
    return value


def _parse_text(name: str, text: str, kind: Any) -> Any:
    """A ``--set`` string parsed by the field type; unparsable text is a ``BadInput`` naming the expected type."""
    bad = BadInput(f"{name}={text!r} has the wrong type: expected {_type_name(kind)}")
    if kind == (int | str):
        return FULL_RANK if text == FULL_RANK else _parse_text(name, text, int)
    if typing.get_origin(kind) is tuple:
        items = [item.strip() for item in text.strip("[]()").split(",") if item.strip()]
        return [_parse_text(name, item.strip("'\""), typing.get_args(kind)[0]) for item in items]
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise bad
    if kind is str:
        return text.strip("'\"")
    try:
        return kind(text)
    except ValueError:
        raise bad from None


def _positive_int(name: str, value: int) -> None:
    _in_range(name, value, 1, None)


def _in_range(name: str, value: float, low: float, high: float | None, low_open: bool = False,
              high_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        upper = "∞)" if high is None else f"{high}{right}"
        raise BadInput(f"{name}={value} is out of range: expected a value in {left}{low}, {upper}")


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), base: Config | None = None) -> Config:
    """``base`` (default: the defaults), then the TOML file (top-level keys or a ``[config]`` table, not both), then
    ``key=value`` overrides."""
    values: dict[str, Any] = base.to_dict() if base is not None else {}
    if path is not None:
        values.update(read_config_file(Path(path)))
    return Config.from_dict(values).with_overrides(overrides)


def read_config_file(path: Path) -> dict[str, Any]:
    """The keys of a TOML config file: its top-level keys, or its ``[config]`` table. A file with both, or with any
    other table, is refused (a key would otherwise be silently ignored); the keys themselves are checked by
    ``Config.from_dict``."""
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        raise BadInput(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"config file {path} is not valid TOML: {error}") from None
    if "config" not in values:
        return values
    others = sorted(set(values) - {"config"})
    if others:
        raise BadInput(f"config file {path} has a [config] table and also {', '.join(others)} outside it: put every "
                       f"key in [config] or every key at the top level (valid keys: {', '.join(field_names())})")
    return values["config"]


def result_keys(config: Config) -> dict[str, Any]:
    """The config's values that can change a result (``EXECUTION_KEYS`` aside)."""
    return {key: value for key, value in config.to_dict().items() if key not in EXECUTION_KEYS}


def config_differences(stored: Config, current: Config) -> list[str]:
    """The config keys whose values differ, execution keys (which do not change results) aside. A key missing from
    an older ``config.json`` was read as its default, so it differs only when the current value is not the default."""
    stored_fields, current_fields = result_keys(stored), result_keys(current)
    return [key for key in current_fields if current_fields[key] != stored_fields[key]]


def describe_differences(stored: Config, current: Config) -> str:
    """``key (old → new), ...`` for every key of ``config_differences`` ('' when none)."""
    old, new = stored.to_dict(), current.to_dict()
    return ", ".join(f"{key} ({old[key]!r} → {new[key]!r})" for key in config_differences(stored, current))


def apply_execution_settings(config: Config) -> torch.device:
    """Thread count (when set) and the device of ``config``."""
    if config.threads:
        torch.set_num_threads(config.threads)
    return resolve_device(config.device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("device='cuda' is not available on this machine: expected 'cpu' or 'auto'")
    return torch.device(name)
