"""FlareModel: a PEFT LoRA model whose fused modules also see the English side.

At a fused module the adapter computes y = W0 x_t + s * B(phi(A x_s, A x_t)); every other LoRA
module is plain LoRA. x_s comes from an English pass through the same frozen backbone with all
adapters off (capture.py), or from external states (FLARE-MT) through a trainable projection.
The fusion is a forward hook on PEFT's lora_A, so LoRA itself, its weights and its saving stay
PEFT's own, and the fusion reaches layers under gradient checkpointing: the recomputation calls
the same hook, and the English side stays in place until the next forward.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from flare.adapter.capture import SourceRecorder
from flare.adapter.config import FlareConfig, default_fuse_modules
from flare.adapter.fusion import fuse, make_fusion_module
from flare.adapter.pairing import is_left_padded, is_right_padded, last_real, pack, pair_positions
from flare.errors import FlareError

# Arguments that describe the target batch only; the English pass gets its own or none.
_TARGET_ONLY = {
    "input_ids", "attention_mask", "inputs_embeds", "token_type_ids", "position_ids",
    "past_key_values", "cache_position", "use_cache", "labels", "start_positions",
    "end_positions", "output_hidden_states", "output_attentions", "return_dict", "logits_to_keep",
}


@dataclass
class _SourceSide:
    """The English side of the current batch, as the fusion hooks read it."""

    recorded: dict[str, torch.Tensor]  # fused module -> its English input (B, Ls, d)
    states: torch.Tensor | None  # FLARE-MT states (B, Ls, source_dim), used by every fused module
    mask: torch.Tensor | None  # (B, Ls) real source tokens
    target_mask: torch.Tensor | None  # (B, Lt) real target tokens
    right_aligned: bool
    generating: bool
    calls: Counter = field(default_factory=Counter)
    pairs: dict = field(default_factory=dict)


class FlareModel(nn.Module):
    """A PEFT LoRA model plus FLARE fusion. Use get_flare_model or load_flare_model to build one.

    forward and generate take the model's usual arguments plus either source_input_ids +
    source_attention_mask (the English side; further source_<name> arguments, e.g.
    source_token_type_ids, go to the English pass as <name>) or source_states +
    source_attention_mask (external states of width source_dim). Without them: plain LoRA.
    """

    def __init__(self, peft_model: PeftModel, config: FlareConfig, fused_modules: list[str]) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.flare_config = config
        self.fused_modules = list(fused_modules)
        self.adapter_name = peft_model.active_adapter
        backbone = peft_model.base_model.model
        named = dict(backbone.named_modules())
        self._lora = {name: named[name] for name in self.fused_modules}
        reference = next(iter(self._lora.values())).lora_A[self.adapter_name].weight
        factory = {"device": reference.device, "dtype": reference.dtype}

        self.fusion_modules = nn.ModuleDict()
        for name in self.fused_modules:
            module = make_fusion_module(
                config.fusion, config.r, config.cross_attention_heads, config.cross_attention_dropout
            )
            if module is not None:
                self.fusion_modules[_key(name)] = module.to(**factory)
        self.source_projection = None
        if config.source_dim is not None:
            widths = {layer.in_features for layer in self._lora.values()}
            if len(widths) != 1:
                raise FlareError(
                    f"fused modules have different input widths {sorted(widths)}; FLARE-MT projects to one width"
                )
            self.source_projection = nn.Linear(config.source_dim, widths.pop(), **factory)

        self._decoder_only = bool(getattr(backbone, "can_generate", lambda: False)()) and not getattr(
            backbone.config, "is_encoder_decoder", False
        )
        self._recorder = SourceRecorder(backbone, self.fused_modules, config.source_position)
        self._side: _SourceSide | None = None
        for name, layer in self._lora.items():
            layer.lora_A[self.adapter_name].register_forward_hook(partial(self._fuse_hook, name))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "peft_model":
                raise
            return getattr(self.peft_model, name)

    @property
    def backbone(self) -> nn.Module:
        """The transformers model (with the LoRA layers injected)."""
        return self.peft_model.base_model.model

    def forward(self, *args: Any, source_input_ids=None, source_attention_mask=None, source_states=None, **kwargs: Any):
        extra = _pop_source_kwargs(kwargs)
        # Kept until the next forward: gradient checkpointing recomputes layers during backward.
        self._side = self._prepare_source(
            args, kwargs, source_input_ids, source_attention_mask, source_states, extra, False
        )
        return self.peft_model(*args, **kwargs)

    def generate(
        self, *args: Any, source_input_ids=None, source_attention_mask=None, source_states=None, **kwargs: Any
    ):
        """generate with the English prompt's states captured once by a forward pass: the
        prefill fuses position-aligned, each later step as config.decode_fusion says."""
        extra = _pop_source_kwargs(kwargs)
        if kwargs.get("use_cache") is False and (source_input_ids is not None or source_states is not None):
            raise FlareError(
                "generation with a source needs use_cache=True (decoding steps are told apart by the cache)"
            )
        self._side = self._prepare_source(
            args, kwargs, source_input_ids, source_attention_mask, source_states, extra, True
        )
        try:
            return self.peft_model.generate(*args, **kwargs)
        finally:
            self._side = None

    # ----------------------------------------------------------------- the English side

    def _prepare_source(self, args, kwargs, ids, mask, states, extra, generating) -> _SourceSide | None:
        if ids is None and states is None:
            if mask is not None or extra:
                raise FlareError("source_attention_mask given without source_input_ids or source_states")
            return None
        if ids is not None and states is not None:
            raise FlareError("give source_input_ids or source_states, not both")
        source = ids if ids is not None else states
        target = kwargs.get("input_ids", args[0] if args else kwargs.get("inputs_embeds"))
        if target is not None and source.shape[0] != target.shape[0]:
            raise FlareError(f"source batch size {source.shape[0]} does not match target batch size {target.shape[0]}")
        if mask is not None and tuple(mask.shape) != tuple(source.shape[:2]):
            raise FlareError(
                f"source_attention_mask shape {tuple(mask.shape)} does not match the source {tuple(source.shape[:2])}"
            )
        if states is not None:
            if self.source_projection is None:
                raise FlareError("source_states given, but the adapter has no source_dim; set FlareConfig.source_dim")
            if states.dim() != 3 or states.shape[-1] != self.flare_config.source_dim:
                raise FlareError(
                    f"source_states width {states.shape[-1]} differs from source_dim {self.flare_config.source_dim}"
                )
            recorded = {}
        else:
            recorded = self._recorder.record(partial(self._english_forward, ids, mask, extra, kwargs, generating))
        target_mask = kwargs.get("attention_mask")
        right = self._right_aligned(target_mask)
        if states is not None and mask is not None:
            # another tokenizer's positions: only the real tokens' order carries meaning
            states, mask = pack(states, mask, right)
        return _SourceSide(recorded, states, mask, target_mask, right, generating)

    def _right_aligned(self, target_mask: torch.Tensor | None) -> bool:
        alignment = self.flare_config.alignment
        if alignment != "auto":
            return alignment == "right"
        if is_left_padded(target_mask) or is_right_padded(target_mask):
            return is_left_padded(target_mask)
        return self._decoder_only  # no padding to go by: the family's usual padding side

    def _english_forward(self, ids, mask, extra, target_kwargs, generating) -> None:
        backbone = self.backbone
        config = backbone.config
        kwargs = {} if generating else {k: v for k, v in target_kwargs.items() if k not in _TARGET_ONLY}
        kwargs.update(extra, input_ids=ids)
        if mask is not None:
            kwargs["attention_mask"] = mask
        if getattr(config, "use_cache", None) is not None:
            kwargs["use_cache"] = False
        if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" not in kwargs:
            labels = target_kwargs.get("labels")
            if labels is not None and not generating:
                kwargs["decoder_input_ids"] = backbone.prepare_decoder_input_ids_from_labels(labels=labels)
            else:
                start = backbone.generation_config.decoder_start_token_id
                if start is None:
                    start = config.decoder_start_token_id
                kwargs["decoder_input_ids"] = torch.full((ids.shape[0], 1), start, dtype=torch.long, device=ids.device)
        backbone(**kwargs)

    # ----------------------------------------------------------------- fusion

    def _fuse_hook(self, name: str, lora_A: nn.Linear, args: tuple, target: torch.Tensor):
        side = self._side
        if side is None or (side.states is None and name not in side.recorded):
            return None
        project = side.states is not None
        source = side.states if project else side.recorded[name]
        source_mask = side.mask if side.mask is not None and side.mask.shape[1] == source.shape[1] else None
        module = self.fusion_modules[_key(name)] if _key(name) in self.fusion_modules else None  # noqa: SIM401 - ModuleDict has no .get()
        batch, length = target.shape[:2]
        decoding = side.generating and side.calls[name] > 0
        if side.generating:
            side.calls[name] += 1
        if decoding:
            if self.flare_config.decode_fusion == "none":
                return None
            last = self._bottleneck(name, lora_A, args[0], last_real(source, source_mask), project)
            return fuse(
                self.flare_config.fusion, _repeat_rows(last, batch).expand(-1, length, -1), target, None, module
            )

        bottleneck = _repeat_rows(self._bottleneck(name, lora_A, args[0], source, project), batch)
        index, valid = self._pairing(side, source_mask, bottleneck.shape[1], batch, length)
        target_mask = side.target_mask
        if target_mask is not None and tuple(target_mask.shape) != (batch, length):
            target_mask = _repeat_rows(target_mask, batch) if target_mask.shape[1] == length else None
        fused = fuse(self.flare_config.fusion, bottleneck[:, index], target, target_mask, module, valid)
        return torch.where(valid[..., None], fused, target)

    def _bottleneck(
        self, name: str, lora_A: nn.Linear, target_input: torch.Tensor, source: torch.Tensor, project: bool
    ) -> torch.Tensor:
        """A x_s (dropout included), computed inside the hook so gradient checkpointing
        recomputes it and gradients reach A and the projection."""
        dropout = self._lora[name].lora_dropout[self.adapter_name]
        if project:
            projection = self.source_projection
            if isinstance(dropout, nn.Identity) or not dropout.training:
                # A (W s + b) = (A W) s + A b: project straight into the r-dim bottleneck.
                weight = lora_A.weight @ projection.weight
                return F.linear(source.to(weight.dtype), weight, lora_A.weight @ projection.bias).to(target_input.dtype)
            source = projection(source.to(projection.weight.dtype))
        return F.linear(dropout(source.to(target_input.dtype)), lora_A.weight, lora_A.bias)

    def _pairing(self, side: _SourceSide, source_mask, source_length: int, batch: int, length: int):
        """Partner index (Lt,) and validity (B, Lt), computed once per shape and batch."""
        key = (source_length, source_mask is not None, batch, length)
        if key not in side.pairs:
            device = side.mask.device if side.mask is not None else None
            index, valid = pair_positions(source_length, length, side.right_aligned, device)
            valid = valid.expand(batch, -1)
            if self.flare_config.mask_source_padding and source_mask is not None:
                valid = valid & _repeat_rows(source_mask, batch)[:, index].bool()
            side.pairs[key] = index, valid
        return side.pairs[key]

    # ----------------------------------------------------------------- saving

    def flare_state_dict(self) -> dict[str, torch.Tensor]:
        """FLARE-only weights (fusion modules, projection): what PEFT's adapter file lacks."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith("peft_model.")}

    def save_pretrained(self, directory, **kwargs: Any) -> None:
        """A PEFT LoRA adapter directory plus the FLARE sidecar files (see io.py)."""
        from flare.adapter.io import save_flare

        save_flare(self, directory, **kwargs)

    def gradient_checkpointing_enable(self, **checkpoint_kwargs: Any) -> None:
        """Checkpoint the backbone's layers; the fusion still reaches them (see module docstring)."""
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs or None)
        if checkpoint_kwargs.get("use_reentrant", False):
            self.backbone.enable_input_require_grads()


def _key(module_name: str) -> str:
    return module_name.replace(".", "__")


def _pop_source_kwargs(kwargs: dict) -> dict:
    return {k[len("source_"):]: kwargs.pop(k) for k in [k for k in kwargs if k.startswith("source_")]}


def _repeat_rows(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Expand a source-side batch to the target's (beam search repeats each row)."""
    if tensor.shape[0] == batch:
        return tensor
    if batch % tensor.shape[0]:
        raise FlareError(f"source batch size {tensor.shape[0]} does not divide target batch size {batch}")
    return tensor.repeat_interleave(batch // tensor.shape[0], dim=0)


def _linear_leaf_names(model: nn.Module) -> set[str]:
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    }


def _matches(name: str, patterns: list[str]) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns)


def get_flare_model(model: nn.Module, config: FlareConfig | None = None, adapter_name: str = "default") -> FlareModel:
    """Add a fresh FLARE adapter (B = 0, so the output starts equal to the base model's)."""
    config = config or FlareConfig()
    if isinstance(model, (PeftModel, FlareModel)):
        raise FlareError("model already carries a PEFT adapter; merge it (merge_and_unload) or pass the base model")
    model_name = type(model).__name__
    leaves = _linear_leaf_names(model)
    fuse_names = config.fuse_modules or default_fuse_modules(leaves, model_name)
    targets = config.target_modules if config.target_modules is not None else list(fuse_names)
    module_names = [n for n, _ in model.named_modules()]
    # PEFT only objects when no target matches at all; a typo in one name must not pass silently.
    for setting, names in (
        ("target_modules", targets if isinstance(targets, list) else []), ("fuse_modules", fuse_names)
    ):
        unknown = [p for p in names if not any(_matches(n, [p]) for n in module_names)]
        if unknown:
            raise FlareError(f"{setting} {unknown} match no module of {model_name}")
    if isinstance(targets, list):
        untargeted = [
            f for f in fuse_names if not any(f == t or f.endswith("." + t) or t.endswith("." + f) for t in targets)
        ]
        if untargeted:
            raise FlareError(
                f"fuse_modules {untargeted} are not among target_modules {targets}; fused modules need LoRA"
            )
    lora = LoraConfig(
        r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets, modules_to_save=config.modules_to_save, task_type=config.task_type, bias="none",
    )
    try:
        peft_model = get_peft_model(model, lora, adapter_name=adapter_name)
    except ValueError as error:
        raise FlareError(
            f"target_modules {targets!r} match no module of {model_name}: {str(error).splitlines()[0]}"
        ) from None
    lora_layers = [n for n, m in peft_model.base_model.model.named_modules() if isinstance(m, LoraLayer)]
    fused = [n for n in lora_layers if _matches(n, list(fuse_names))]
    if not fused:
        raise FlareError(f"fuse_modules {list(fuse_names)} match no LoRA-targeted module of {model_name}")
    return FlareModel(peft_model, config, fused)
