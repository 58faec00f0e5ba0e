"""The English (source) pass: run the frozen backbone with every adapter off and record, through
forward pre-hooks, the input each fused module needs. No modeling code is copied or patched.

The pass stops as soon as the last needed input is recorded (the hook raises), so the rest of
the last layer, the final norm and the task or LM head never run on the English side.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn

from flare.errors import FlareError


class _SourcePassDone(Exception):
    """Raised from a hook once every fused module's source input is recorded."""


def layer_of(module_name: str) -> str:
    """The innermost numbered block containing a module ("...layers.3.self_attn.q_proj" ->
    "...layers.3"; T5 "...block.3.layer.0.SelfAttention.q" -> "...block.3.layer.0"): its input
    is the residual stream entering the (sub)layer that holds the module."""
    match = re.match(r"(.*\.\d+)\.", module_name)
    if match is None:
        raise ValueError(f"{module_name} is not inside a numbered layer; use source_position='module_input'")
    return match.group(1)


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    for key in ("hidden_states", "x", "input"):
        if key in kwargs:
            return kwargs[key]
    return next(v for v in kwargs.values() if isinstance(v, torch.Tensor))


@contextlib.contextmanager
def _set_all(objects: list, attribute: str, value: object) -> Iterator[None]:
    """Set an attribute on every object for the duration of the block, then restore each."""
    previous = [getattr(o, attribute) for o in objects]
    for o in objects:
        setattr(o, attribute, value)
    try:
        yield
    finally:
        for o, was in zip(objects, previous):
            setattr(o, attribute, was)


def fusing_modules(backbone: nn.Module, fused: list[str]) -> list[str]:
    """The fused modules that fuse: all of them, except in encoder-decoder models, where only the
    encoder's do (told apart by the module tree, not by sequence lengths). The decoder runs plain
    LoRA: an English decoder pass would have to run on the target's own output tokens, so later
    English positions would encode later target tokens, and generation has none of them yet."""
    if not getattr(backbone.config, "is_encoder_decoder", False):
        return fused
    in_encoder = {id(m) for m in backbone.get_encoder().modules()}
    named = dict(backbone.named_modules())
    kept = [name for name in fused if id(named[name]) in in_encoder]
    if not kept:
        raise FlareError(
            f"fuse_modules {fused[:3]} are all in the decoder of {type(backbone).__name__}; on encoder-decoder "
            "models only encoder modules fuse (the decoder runs plain LoRA)"
        )
    return kept


class SourceRecorder:
    """Records, for each fused module, the tensor it fuses from the English pass.

    Args:
        model: the module tree that holds the fused modules (names are relative to it).
        fused: names of the fused LoRA layers.
        position: "module_input" records each fused module's own input; "layer_input" records
            the input of the layer containing it (shared by all fused modules of that layer).
    """

    def __init__(self, model: nn.Module, fused: list[str], position: str) -> None:
        modules = dict(model.named_modules())
        if position == "module_input":
            self._source_of = {name: name for name in fused}
        else:
            self._source_of = {name: layer_of(name) for name in fused}
        self._hooked = {src: modules[src] for src in self._source_of.values()}
        # what PEFT's disable_adapter() switches off: LoRA layers and the modules_to_save /
        # trainable-token wrappers, so the English side never sees trained embeddings or heads
        self._tuner_layers = [m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
        self._all_modules = list(model.modules())

    def record(self, run_forward: Callable[[], object]) -> dict[str, torch.Tensor]:
        """Run the English forward (no grad, eval mode, adapters off) and return
        {fused module name: recorded tensor}. Modules the forward never reached are absent."""
        recorded: dict[str, torch.Tensor] = {}
        needed = len(self._hooked)

        def make_hook(source_name: str):
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                if source_name not in recorded:
                    recorded[source_name] = _first_tensor(args, kwargs)
                    if len(recorded) == needed:
                        raise _SourcePassDone

            return hook

        handles = [
            module.register_forward_pre_hook(make_hook(name), with_kwargs=True)
            for name, module in self._hooked.items()
        ]
        try:
            # Only adapter layers are switched off (PEFT's public switch also flips requires_grad),
            # and every module goes to eval mode: the English pass has no dropout.
            with torch.no_grad(), _set_all(self._tuner_layers, "_disable_adapters", True), \
                    _set_all(self._all_modules, "training", False):
                run_forward()
        except _SourcePassDone:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {name: recorded[src] for name, src in self._source_of.items() if src in recorded}
