"""The shape every compression technique has, and the registry that recipes, the trainer and export iterate.

A technique is a :class:`Technique`: a ``TrainerCallback`` with a recipe key, a config dataclass and a place in
the surgery order. Its lifecycle, driven by the Trainer's events::

    on_init_end     -> prepare(model)                  surgery, once, before the optimizer is built
    on_train_begin  -> schedule(steps_per_epoch)       epochs -> optimizer steps
                       load_state_dict(...)            resuming: from the checkpoint folder
                       begin(step)
    step events     -> the technique's own hooks       (on_step_end, on_optimizer_step, ...)
    on_log          -> log_values(step)                added to the Trainer's logs
    on_save         -> state_dict()                    saved as <name>_state.pt in the checkpoint folder
    on_train_end    -> report()                        <report_name>.json and .md in output_dir; finish(model)

Required: the class attributes ``name`` and ``config_class``, and :meth:`Technique.loss` when
``contributes_loss``; every other hook is optional (its default does nothing). The export and loading hooks
(``prepare_for_export``, ``restore_saved``, ``reference_note``, ``card_tags``, ``card_section``,
``load_pretrained``) are the other half, a :class:`~hf_compress.technique_export.TechniqueExport` the technique
names in ``export_side`` (the way an int8 route is its own object).

Adding a technique is its module, its config dataclass and ``@register_technique`` on its class; nothing else
names it. Registration checks the shape against this API (:data:`API_VERSION`): every overridden hook must take
the base class's arguments, and a hook of the export half defined on the technique itself is refused with a line
saying where it moved. Techniques outside the package are loaded from installed plugins or imported by name
(:mod:`~hf_compress.plugins`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .checks import is_checked
from .configs import RecipeError
from .files import atomic_write_json, atomic_write_text, save_torch_state
from .modules import SettingError
from .plugins import TechniqueRegistrationError, check_hook_signatures, check_technique_name, load_entry_points
from .technique_export import EXPORT_HOOKS, ExportFacts, TechniqueExport

logger = logging.get_logger(__name__)

#: The plugin API's version: raised when a hook changes its name, its arguments or the half it lives in (see
#: CHANGELOG.md). 1: hf-compress 0.1.0; 2: the export and loading hooks moved to ``Technique.export_side``.
API_VERSION = 2

__all__ = [
    "API_VERSION",
    "ExportFacts",
    "Technique",
    "TechniqueExport",
    "TechniqueRegistrationError",
    "get_technique",
    "load_pretrained",
    "optimizer_steps",
    "restore_saved",
    "register_technique",
    "registered_techniques",
    "techniques_used",
]


def optimizer_steps(epoch: float | None, step: int | None, steps_per_epoch: float) -> int | None:
    """A schedule point in optimizer steps: ``step`` as given, else ``round(epoch * steps_per_epoch)``."""
    if step is not None:
        return step
    return None if epoch is None else round(epoch * steps_per_epoch)


def optimizer_steps_per_epoch(args: TrainingArguments, state: TrainerState, train_dataloader=None) -> float:
    """Optimizer steps in one epoch: micro-batches / gradient accumulation (``max_steps / epochs`` if unsized)."""
    if train_dataloader is not None and hasattr(train_dataloader, "__len__"):
        return max(math.ceil(len(train_dataloader) / args.gradient_accumulation_steps), 1)
    return state.max_steps / max(state.num_train_epochs, 1)


class Technique(TrainerCallback):
    """Base class of every technique: its training half. Subclasses set the class attributes (``name`` and
    ``config_class`` required) and override the hooks they need (all optional but :meth:`loss`, required when
    ``contributes_loss``); the export and loading hooks are on the companion named by ``export_side``.

    Construct with a config or with its fields as keywords: ``GradualPruningCallback(PruningConfig(...))`` or
    ``GradualPruningCallback(final_sparsity=0.8, ...)``. Works with the plain ``transformers.Trainer``; a technique
    that contributes a loss (``contributes_loss``) needs :class:`~hf_compress.trainer.CompressionTrainer`.
    """

    #: The recipe key of its block (``pruning``); the state file is ``<name>_state.pt``.
    name: ClassVar[str]
    #: The config dataclass of its block.
    config_class: ClassVar[type]
    #: Place in the surgery order: lower first (low-rank 10, pruning 20, QAT 30), so that later techniques see
    #: earlier ones' layers. Export undoes them in the reverse order.
    order: ClassVar[int] = 0
    #: Stem of the report written in ``output_dir`` at the end of training (``None``: no report).
    report_name: ClassVar[str | None] = None
    #: Also keep the state beside the final model (an export from that folder needs it).
    keeps_state_with_model: ClassVar[bool] = False
    #: Adds a term to the training loss (:meth:`loss`): needs CompressionTrainer.
    contributes_loss: ClassVar[bool] = False
    #: Its recipe key may hold a list of blocks (``pruning: [{structure: heads, ...}, {structure: neurons, ...}]``):
    #: the technique then takes the list as its config.
    repeatable: ClassVar[bool] = False
    #: Dotted keys of its block that hold file paths (``("transfer.files",)``): a YAML recipe's relative paths
    #: are read relative to the recipe file, the command line's to the working directory.
    path_fields: ClassVar[tuple[str, ...]] = ()
    #: The run's other models it takes in :meth:`from_recipe` (``("teacher", ...)``).
    resources: ClassVar[tuple[str, ...]] = ()
    #: Its export and loading half (:class:`~hf_compress.technique_export.TechniqueExport`: the default does
    #: nothing, for techniques that leave the layers plain).
    export_side: ClassVar[type[TechniqueExport]] = TechniqueExport
    state_file: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.state_file = f"{cls.name}_state.pt"

    def __init__(self, config: Any = None, **settings: Any):
        if config is not None and settings:
            raise TypeError(f"give a {self.config_class.__name__} or its fields as keywords, not both")
        if config is None:
            config = self.config_class(**settings)
        several = self.repeatable and isinstance(config, list) and config
        if not all(isinstance(c, self.config_class) for c in (config if several else [config])):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.model: nn.Module | None = None
        #: The checkpoint folder the Trainer resumed from (CompressionTrainer sets it; else ``output_dir``'s).
        self.resume_from: str | None = None
        #: Set by CompressionTrainer for techniques whose loss it adds.
        self.loss_routed = False

    # ------------------------------------------------------------------------------------ recipe side
    @classmethod
    def from_recipe(cls, config: Any, **resources: Any) -> Technique:
        """The technique for a recipe block; ``resources`` are the run's other models (``teacher``, ...)."""
        return cls(config)

    @classmethod
    def default_config(cls, **resources: Any) -> Any | None:
        """A config to run with when the recipe has no block but ``resources`` call for it (default: none)."""
        return None

    @classmethod
    def example_config(cls) -> Any:
        """A small config that acts within a few optimizer steps of a tiny model: what the documentation shows and
        what the contract tests (every registered technique gets them) train with."""
        return cls.config_class()

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        """Raise :class:`RecipeError` when this block does not compose with the rest of ``recipe``."""

    @classmethod
    def capabilities(cls, config: Any) -> dict[str, str]:
        """What this block asks of the model's architecture: capability (a key of
        :data:`~hf_compress.architectures.CAPABILITIES`) -> the recipe key that asks for it."""
        return {}

    #: A word that qualifies the trained model's name in results tables (``student (distilled)``), if any.
    qualifier: ClassVar[str] = ""

    def describe(self) -> str:
        """A few words after the model's name in results tables (``neurons sparsity 0.5``); empty (the default) when
        the technique does not change what the model is."""
        return ""

    # ------------------------------------------------------------------------------------ hooks
    def prepare(self, model: nn.Module) -> None:
        """Model surgery, once, before the optimizer is built (called again only for another model)."""

    def schedule(self, steps_per_epoch: float) -> None:
        """Turn the config's epochs into optimizer steps."""

    def schedule_problems(self, total_steps: int) -> list[str]:
        """After :meth:`schedule`: each point of the schedule that a run of ``total_steps`` optimizer steps does not
        reach, one line naming its recipe key, the step it needs and the run's last step (empty: it completes)."""
        return []

    def begin(self, step: int) -> None:
        """Training (re)starts at optimizer step ``step``, with the state restored when resuming."""

    def has_state(self) -> bool:
        """Whether checkpoints must hold this technique's state to resume exactly."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def state_missing(self, path: str, step: int) -> None:
        """Resuming from a checkpoint without this technique's state file (the default: a warning)."""
        logger.warning(f"{path} not found: {self.name} state restarts from what the loaded weights hold")

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with the model but not part of it (kept in this technique's state)."""
        return []

    def prepare_frozen_models(self, prepare: Callable[[nn.Module], nn.Module]) -> None:
        """Hand models that run beside the trained one (a teacher) to ``prepare`` (Accelerate, evaluation mode)."""

    def forward_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for the model's forward pass (``output_hidden_states=True``)."""
        return {}

    def model_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The batch as the model's forward pass sees it (a technique that contributes a loss may hide what the
        model's own loss must not read); :meth:`loss` still gets the batch as it was."""
        return inputs

    @classmethod
    def extra_training_data(
        cls, config: Any, *, task: Any, raw_train: Any, data: Any, tokenizer: Any, label2id: dict[str, int]
    ) -> Any | None:
        """Tokenized examples this technique adds to the training set of ``hf-compress train`` (the rows of
        :meth:`Task.preprocess`), or ``None``; the teacher stage never sees them."""
        return None

    def loss(
        self, inputs: dict[str, Any], outputs: Any, loss: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Required when ``contributes_loss``. The training loss with this technique's terms, and the detached terms
        to log (``kd``, ...)."""
        raise NotImplementedError

    def log_values(self, step: int) -> dict[str, float]:
        """Figures added to each training log entry."""
        return {}

    def report(self) -> dict[str, Any] | None:
        """The end-of-training report (JSON-ready), or None."""
        return None

    def report_markdown(self, report: dict[str, Any]) -> str:
        """The report as Markdown."""
        return ""

    def finish(self, model: nn.Module) -> None:
        """End of training, after the report (e.g. fold factors back)."""

    def compact(self, model: nn.Module) -> None:
        """Shrink the trained model for ``save_pretrained``, once any export of it is done (slice pruned units)."""

    # ------------------------------------------------------------------------------------ the events
    def _prepare(self, model: nn.Module) -> None:
        if model is self.model:
            return
        try:
            self.prepare(model)
        except SettingError as error:  # the recipe layer names the key
            raise RecipeError(f"{self.name}.{error.setting}", error.value, error.allowed) from None
        self.model = model

    def _state_path(self, args: TrainingArguments, step: int, folder: str | None = None) -> str:
        folder = folder or os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        return os.path.join(folder, self.state_file)

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._prepare(model)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model=None,
        train_dataloader=None,
        **kwargs,
    ):
        if self.contributes_loss and not self.loss_routed:
            raise RuntimeError(
                f"{type(self).__name__} adds a term to the loss: train with hf_compress.CompressionTrainer "
                "(a plain Trainer would train without it)"
            )
        if model is not None:
            self._prepare(model)
        self.schedule(optimizer_steps_per_epoch(args, state, train_dataloader))
        if state.global_step > 0 and self.has_state():  # resuming
            path = self._state_path(args, state.global_step, self.resume_from)
            if os.path.isfile(path):
                self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            else:
                self.state_missing(path, state.global_step)
        self.begin(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self.model is None:
            return
        extra = self.log_values(state.global_step)
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_save(self, args, state, control, **kwargs):
        path = self._state_path(args, state.global_step)
        if self.has_state() and state.is_world_process_zero and os.path.isdir(os.path.dirname(path)):
            save_torch_state(self.state_dict(), path)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and self.model is not None:
            report = self.report()
            if report is not None and self.report_name:
                table = self.report_markdown(report)
                logger.warning(f"{type(self).__name__} report:\n{table}")
                atomic_write_json(os.path.join(args.output_dir, f"{self.report_name}.json"), report)
                atomic_write_text(os.path.join(args.output_dir, f"{self.report_name}.md"), table + "\n")
            if self.keeps_state_with_model and self.has_state():
                save_torch_state(self.state_dict(), os.path.join(args.output_dir, self.state_file))
        if model is not None:
            self.finish(model)


# ---------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Technique]] = {}
_PLUGINS: dict[str, Any] = {"loaded": False, "error": None}


def register_technique(cls: type[Technique]) -> type[Technique]:
    """Class decorator: make ``cls`` a recipe block and a step of training and export.

    :class:`TechniqueRegistrationError` when its ``name`` is not a valid recipe key, is reserved (``model``,
    ``data``, ``training``, ``export``, ``imports``) or is taken by another class (the same class registered again,
    e.g. its module reloaded, replaces itself).
    """
    if not (isinstance(cls, type) and issubclass(cls, Technique)):
        raise TypeError(f"{cls!r} is not a Technique subclass")
    for attribute in ("name", "config_class"):
        if attribute not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must set the class attribute '{attribute}'")
    where = f"{cls.__module__}.{cls.__qualname__}"
    check_technique_name(cls.name, where)
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"{cls.__name__}.config_class must be a dataclass")
    if not is_checked(cls.config_class):
        raise TypeError(
            f"{cls.__name__}.config_class must be decorated with @checked (hf_compress.checks), each number, text "
            "and path field declaring its range"
        )
    _check_api(cls, where)
    existing = _REGISTRY.get(cls.name)
    if existing is not None and f"{existing.__module__}.{existing.__qualname__}" != where:
        raise TechniqueRegistrationError(
            f"cannot register {where}: the recipe key '{cls.name}' is taken by "
            f"{existing.__module__}.{existing.__qualname__}"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _check_api(cls: type[Technique], where: str) -> None:
    """Refuse, in one line, a technique written for another version of the plugin API (:data:`API_VERSION`)."""
    moved = [hook for hook in EXPORT_HOOKS if any(hook in k.__dict__ for k in cls.__mro__)]
    if moved:
        raise TechniqueRegistrationError(
            f"{where} defines {', '.join(moved)} on the technique: in hf-compress plugin API {API_VERSION} the "
            "export and loading hooks moved to the technique's export half, a hf_compress.TechniqueExport subclass "
            "named by its 'export_side' (docs/plugins.md)"
        )
    if not (isinstance(cls.export_side, type) and issubclass(cls.export_side, TechniqueExport)):
        raise TechniqueRegistrationError(f"{where}.export_side must be a TechniqueExport subclass")
    if cls.contributes_loss and cls.loss is Technique.loss:
        raise TechniqueRegistrationError(f"{where} sets contributes_loss but does not define loss()")
    check_hook_signatures(cls, Technique, str(API_VERSION))
    check_hook_signatures(cls.export_side, TechniqueExport, str(API_VERSION))


def _register_plugin(name: str, value: Any) -> None:
    if isinstance(value, type) and issubclass(value, Technique) and _REGISTRY.get(name) is not value:
        if value.__dict__.get("name") != name:
            raise TechniqueRegistrationError(f"{value.__qualname__} has the recipe key {value.__dict__.get('name')!r}")
        register_technique(value)


def _load_plugins() -> None:
    """The installed plugins (:mod:`~hf_compress.plugins`), once; a failure is raised on every read."""
    if not _PLUGINS["loaded"]:
        _PLUGINS["loaded"] = True  # first: a plugin reading the registry while it loads sees it as it is
        try:
            load_entry_points(_register_plugin)
        except TechniqueRegistrationError as error:
            _PLUGINS["error"] = error
    if _PLUGINS["error"] is not None:
        raise _PLUGINS["error"]


def registered_techniques() -> list[type[Technique]]:
    """Every registered technique (the package's, installed plugins', imported modules'), in surgery order."""
    _load_plugins()
    return sorted(_REGISTRY.values(), key=lambda cls: cls.order)


def get_technique(name: str) -> type[Technique] | None:
    """The technique registered under the recipe key ``name``, or None."""
    _load_plugins()
    return _REGISTRY.get(name)


def techniques_used(configs: Mapping[str, Any] | None) -> list[tuple[type[Technique], Any]]:
    """The techniques a run used with their configs (``configs``: recipe key -> config), in surgery order.

    ``None`` means the run is not known (a model trained elsewhere, no recipe): every registered technique, with no
    config; each export hook is a no-op on a model without its layers.
    """
    if configs is None:
        return [(technique, None) for technique in registered_techniques()]
    used = []
    for name, config in configs.items():
        technique = get_technique(name)
        if technique is None:
            known = ", ".join(t.name for t in registered_techniques())
            raise ValueError(f"unknown technique '{name}' (registered: {known}); import the module that defines it")
        used.append((technique, config))
    return sorted(used, key=lambda pair: pair[0].order)


def load_pretrained(path: str | os.PathLike, model_class: type) -> nn.Module:
    """Load a model saved by ``save_pretrained`` after compression: plain ``model_class.from_pretrained`` unless a
    technique saved another structure (factorized layers)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    for technique in registered_techniques():
        model = technique.export_side.load_pretrained(path, model_class, config)
        if model is not None:
            return model
    return model_class.from_pretrained(path)


def restore_saved(model: nn.Module, folder: str | os.PathLike, configs: Mapping[str, Any] | None) -> None:
    """Put back on ``model`` what the techniques the run used (``configs``: recipe key -> config; None: not known,
    :func:`techniques_used`) keep beside the weights in ``folder``, e.g. the QAT observers an int8 export needs."""
    for technique, config in techniques_used(configs):
        technique.export_side.restore_saved(model, folder, config)
