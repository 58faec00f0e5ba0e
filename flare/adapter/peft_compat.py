"""What makes a FlareModel compatible with PEFT: isinstance(model, PeftModel) holds, so
transformers.Trainer saves and resumes it as an adapter and TRL treats it as a PEFT model, while
everything PEFT would do that loses the fusion raises a FlareError that says why.

A FlareModel is a PeftModel by type but wraps the PeftModel that get_peft_model built
(`model.peft_model`): PEFT's methods run on that inner model, and only what FLARE changes is
overridden here. It is not PEFT's own tuner type because the fusion needs the English pass,
which PEFT's forward cannot carry. One more thing is needed for Trainer: it keeps the dataset
columns named by the *base model's* forward signature (get_base_model()), which has no
source_* arguments, so by default it would drop the English side and train plain LoRA. The
backbone's forward therefore gets those names in its signature (expose_source_arguments); the
arguments themselves must go through the FlareModel and are refused if they reach the backbone.
"""

from __future__ import annotations

import inspect
import os
import types
from typing import Any

from peft import PeftModel
from torch import nn

from flare.adapter.io import load_onto, push_flare, reload_weights, save_flare
from flare.errors import FlareError

# Source-side names Trainer must keep besides source_input_ids/source_attention_mask/source_states:
# the English pass takes source_<name> for each of these the backbone accepts.
_SOURCE_INPUTS = ("token_type_ids", "position_ids")
_SOURCE_ARGUMENTS = ("source_input_ids", "source_attention_mask", "source_states")


def expose_source_arguments(backbone: nn.Module) -> None:
    """Add the source_* arguments to the signature of backbone.forward (see module docstring).
    Everything is looked up on the backbone, so a deep copy of the model calls its own forward."""
    if "_flare_inner_forward" in vars(backbone):
        return
    inner = backbone.forward
    signature = inspect.signature(inner)
    params = list(signature.parameters.values())
    names = [*_SOURCE_ARGUMENTS, *(f"source_{n}" for n in _SOURCE_INPUTS if n in signature.parameters)]
    added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in names]
    var_keyword = [p for p in params if p.kind == inspect.Parameter.VAR_KEYWORD]
    head = [p for p in params if p.kind != inspect.Parameter.VAR_KEYWORD and p.name not in names]
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    # a copy of the function per backbone, since each carries its own backbone's signature
    function = types.FunctionType(_guarded_forward.__code__, _guarded_forward.__globals__, "forward")
    function.__signature__ = signature.replace(parameters=[this, *head, *added, *var_keyword])
    function.__doc__ = getattr(inner, "__doc__", None)
    backbone._flare_source_names = tuple(names)
    backbone._flare_inner_forward = inner
    backbone.forward = types.MethodType(function, backbone)


def _guarded_forward(backbone: nn.Module, *args: Any, **kwargs: Any):
    leaked = sorted(k for k in kwargs if k in backbone._flare_source_names)
    if leaked:
        raise FlareError(
            f"{leaked[0]} reached {type(backbone).__name__} directly; the English side works only "
            "through the FlareModel (call the FlareModel, not its base model)"
        )
    return backbone._flare_inner_forward(*args, **kwargs)


def _refuse(name: str, why: str):
    def method(self, *args: Any, **kwargs: Any):
        raise FlareError(f"{name}() is not supported on a FLARE adapter: {why}")

    method.__name__ = name
    method.__doc__ = f"Refused: {why}"
    return method


_MERGE_WHY = (
    "merged weights W + s B A cannot hold the fusion with the English side, so the merged model would "
    "silently be plain LoRA; for that LoRA-only merge call model.peft_model.merge_and_unload() explicitly"
)
_ONE_ADAPTER_WHY = (
    "a FlareModel holds exactly one adapter, whose fusion modules and English pass belong to it; "
    "build another FlareModel (get_flare_model / load_flare_model on a fresh base model) instead"
)


class PeftCompatible(PeftModel):
    """The PeftModel face of FlareModel. Subclasses set self.peft_model (the wrapped PeftModel),
    self.adapter_name and self._lora (fused module name -> LoRA layer); they must not call
    PeftModel.__init__."""

    peft_model: PeftModel
    adapter_name: str

    def __getattr__(self, name: str) -> Any:
        try:
            return nn.Module.__getattr__(self, name)
        except AttributeError:
            if name == "peft_model":
                raise
            return getattr(self.peft_model, name)

    @property
    def base_model(self) -> nn.Module:
        """PEFT's tuner (LoraModel), as on a PeftModel."""
        return self.peft_model.base_model

    # ------------------------------------------------------------- what loses the fusion

    merge_adapter = _refuse("merge_adapter", _MERGE_WHY)
    merge_and_unload = _refuse("merge_and_unload", _MERGE_WHY)
    add_weighted_adapter = _refuse("add_weighted_adapter", _MERGE_WHY)
    add_adapter = _refuse("add_adapter", _ONE_ADAPTER_WHY)
    delete_adapter = _refuse("delete_adapter", _ONE_ADAPTER_WHY)

    def set_adapter(self, adapter_name: str | list[str], *args: Any, **kwargs: Any) -> None:
        """Only this model's own adapter can be active (selecting it again is allowed)."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        if names != [self.adapter_name]:
            raise FlareError(f"set_adapter({adapter_name!r}) is not supported on a FLARE adapter: {_ONE_ADAPTER_WHY}")
        self.peft_model.set_adapter(self.adapter_name, *args, **kwargs)

    def load_adapter(self, model_id: str | os.PathLike, adapter_name: str, is_trainable: bool = False, **kwargs: Any):
        """Reload this model's own adapter from a FLARE adapter folder or Hub id, in place (what
        Trainer does to resume or to load the best checkpoint); another name is refused. The
        trainable state of the weights is left as it is."""
        if adapter_name != self.adapter_name:
            raise FlareError(
                f"load_adapter(..., {adapter_name!r}) is not supported on a FLARE adapter: {_ONE_ADAPTER_WHY}"
            )
        reload_weights(self, model_id, revision=kwargs.get("revision"))

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | os.PathLike, adapter_name: str | None = None,
                        is_trainable: bool = False, **kwargs: Any):
        """PEFT's entry point, for a FLARE adapter: the same as flare.load_flare_model."""
        return load_onto(
            cls, model, model_id, is_trainable=is_trainable, revision=kwargs.get("revision"), adapter_name=adapter_name,
            allow_base_mismatch=kwargs.get("allow_base_mismatch", False),
        )

    # ------------------------------------------------------------- saving and the Hub

    def save_pretrained(self, save_directory: str | os.PathLike, *, languages: list[str] | None = None,
                        scores: dict[str, float] | None = None, **kwargs: Any) -> None:
        """A PEFT LoRA adapter folder plus the FLARE sidecar files and a model card (see io.py).
        languages and scores go into the card. Trainer's state_dict/is_main_process are honoured."""
        if not kwargs.pop("is_main_process", True):
            return
        kwargs.pop("safe_serialization", None)  # always safetensors
        save_flare(self, save_directory, languages=languages, scores=scores, **kwargs)

    def push_to_hub(self, repo_id: str, *, languages: list[str] | None = None, scores: dict[str, float] | None = None,
                    private: bool | None = None, token: str | bool | None = None,
                    commit_message: str = "Upload FLARE adapter", revision: str | None = None,
                    create_pr: bool = False, **kwargs: Any):
        """Upload the adapter folder save_pretrained writes (PEFT files, FLARE sidecar, model card)
        to a Hub model repository, creating it when needed. Returns the commit info."""
        return push_flare(self, repo_id, languages=languages, scores=scores, private=private, token=token,
                          commit_message=commit_message, revision=revision, create_pr=create_pr, **kwargs)

    # ------------------------------------------------------------- gradient checkpointing

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        """Checkpoint the backbone's layers. The fusion still reaches them: the recomputation calls
        the same hooks, and the English side stays in place until the next forward."""
        backbone = self.peft_model.get_base_model()
        if not hasattr(backbone, "activation_checkpointing_enable"):
            raise FlareError(f"{type(backbone).__name__} does not support gradient checkpointing")
        backbone.activation_checkpointing_enable(
            activation_checkpointing_kwargs=activation_checkpointing_kwargs, every_n_layers=every_n_layers,
            offload=offload,
        )

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """transformers' convention (gradient_checkpointing_kwargs={"use_reentrant": ...}); loose
        torch.utils.checkpoint arguments (use_reentrant=...) are accepted too."""
        layout = {k: kwargs.pop(k) for k in ("every_n_layers", "offload") if k in kwargs}
        checkpoint_kwargs = {**(gradient_checkpointing_kwargs or {}), **kwargs}
        self.activation_checkpointing_enable(checkpoint_kwargs or None, **layout)

    def _check_not_merged(self) -> None:
        """Before a forward with a source: LoRA merged into the base weights (through
        model.peft_model) cannot fuse, and the English pass would unmerge some layers but not all."""
        merged = [name for name, layer in self._lora.items() if layer.merged]
        if merged:
            raise FlareError(
                f"the LoRA weights of {merged[0]} are merged into the base weights, which cannot hold the "
                "fusion; unmerge them (model.peft_model.unmerge_adapter()) before passing a source"
            )

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """PEFT's count over this model, so the fusion modules and projection are counted."""
        return PeftModel.get_nb_trainable_parameters(self)


# Everything else PEFT defines on PeftModel runs on the wrapped PeftModel, never half on this one.
_OWN = {"forward", "generate", "print_trainable_parameters", "_split_kwargs"}


def _delegate_method(name: str):
    def method(self, *args: Any, **kwargs: Any):
        return getattr(self.peft_model, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(PeftModel, name).__doc__
    return method


def _delegate_property(name: str) -> property:
    def get(self):
        return getattr(self.peft_model, name)

    def set_(self, value):
        setattr(self.peft_model, name, value)

    return property(get, set_, doc=getattr(PeftModel, name).__doc__)


for _name, _value in vars(PeftModel).items():
    if _name.startswith("__") or _name in _OWN or _name in vars(PeftCompatible):
        continue
    if isinstance(_value, property):
        setattr(PeftCompatible, _name, _delegate_property(_name))
    elif inspect.isfunction(_value):
        setattr(PeftCompatible, _name, _delegate_method(_name))
