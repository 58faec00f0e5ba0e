"""FlareModel: a PEFT LoRA model whose fused modules also see the English side.

At a fused module the adapter computes y = W0 x_t + s * B(phi(A x_s, A x_t)); every other LoRA
module is plain LoRA. x_s comes from an English pass through the same frozen backbone with all
adapters off (capture.py), or from external states (FLARE-MT) through a trainable projection.
The fusion is a forward hook on PEFT's lora_A, so LoRA itself, its weights and its saving stay
PEFT's own, and the fusion reaches layers under gradient checkpointing: the recomputation calls
the same hook, and the English side stays in place until the next forward.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import nn

from flare.adapter.capture import SourceRecorder, fusing_modules
from flare.adapter.config import FlareConfig
from flare.adapter.fusion import TARGET_KEYED, fuse, make_fusion_module
from flare.adapter.generation import check_cached_decoding, uses_cache
from flare.adapter.inputs import check_ids, check_mask, check_states, check_unmasked_ids, pad_token_id
from flare.adapter.pairing import pack, partners, row_extent
from flare.adapter.peft_compat import PeftCompatible, expose_source_arguments
from flare.errors import FlareError

GATE_SCALE = 64.0  # a power of two: theta = -1/64 closes a gate exactly

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
    target_mask: torch.Tensor | None  # (B, Lt) real target tokens (of the prompt when generating)
    right_aligned: bool
    generating: bool
    # per row: first real target token, one past the last (the prompt's when generating), first real source token
    target_first: torch.Tensor
    target_end: torch.Tensor
    source_first: torch.Tensor
    source_end: torch.Tensor
    offset: int = 0  # position of the current call's first token (a cached decoding step starts past 0)
    step_mask: torch.Tensor | None = None  # the attention mask of the current generation step
    pairs: dict = field(default_factory=dict)


class FlareModel(PeftCompatible):
    """A PEFT LoRA model plus FLARE fusion. Use get_flare_model or load_flare_model to build one.

    forward and generate take the model's usual arguments plus either source_input_ids +
    source_attention_mask (the English side; further source_<name> arguments, e.g.
    source_token_type_ids, go to the English pass as <name>) or source_states +
    source_attention_mask (external states of width source_dim), or english_states +
    source_attention_mask: what english_states() returned for that English side, computed once
    and reused (the same outputs, without another English pass). Without them: plain LoRA.
    isinstance(model, PeftModel) holds; PEFT's methods run on the wrapped model.peft_model, and
    those that would lose the fusion raise a FlareError (peft_compat.py).
    """

    def __init__(self, peft_model: PeftModel, config: FlareConfig, fused_modules: list[str]) -> None:
        nn.Module.__init__(self)  # not PeftModel.__init__: the wrapped peft_model is PEFT's model
        self.peft_model = peft_model
        self.flare_config = config
        self.adapter_name = peft_model.active_adapter
        backbone = peft_model.base_model.model
        self.fused_modules = fusing_modules(backbone, list(fused_modules))
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
        # english_gate: per fused module a learned g = 1 + GATE_SCALE * theta (theta starts at 0: plain
        # FLARE) scales the English side's change to the target's bottleneck, so training can turn a
        # poor English down. Adam moves theta by about the learning rate per step; the scale lets g
        # travel from 1 to 0 within a few dozen steps at LoRA learning rates (unscaled, it moved 0.03).
        self.english_gates = nn.ParameterDict(
            {_key(name): nn.Parameter(torch.zeros((), **factory)) for name in self.fused_modules}
            if config.english_gate else {}
        )
        self.source_projection = None
        if config.source_dim is not None:
            widths = {layer.in_features for layer in self._lora.values()}
            if len(widths) != 1:
                raise FlareError(
                    f"fused modules have different input widths {sorted(widths)}; FLARE-MT projects to one width"
                )
            self.source_projection = nn.Linear(config.source_dim, widths.pop(), **factory)

        encoder_decoder = bool(getattr(backbone.config, "is_encoder_decoder", False))
        self._decoder_only = bool(getattr(backbone, "can_generate", lambda: False)()) and not encoder_decoder
        # encoder-decoder models: only encoder modules fuse, so the English pass is the encoder alone.
        # A getter, not the module: a module attribute would register the encoder a second time
        # (twice in state_dict, twice in saved files).
        self._english_encoder = backbone.get_encoder if encoder_decoder else None
        self._recorder = SourceRecorder(backbone, self.fused_modules, config.source_position)
        self._side: _SourceSide | None = None
        # optional: serves forward()'s English states by memo (flare/adapter/english_cache.py)
        self.english_state_cache = None
        self._warned: set[str] = set()  # warnings said once per model (inputs.py)
        for name, layer in self._lora.items():
            layer.lora_A[self.adapter_name].register_forward_hook(partial(self._fuse_hook, name))
        backbone.register_forward_pre_hook(self._step_hook, with_kwargs=True)
        expose_source_arguments(backbone)

    @property
    def backbone(self) -> nn.Module:
        """The transformers model (with the LoRA layers injected)."""
        return self.peft_model.base_model.model

    def forward(
        self, input_ids=None, attention_mask=None, *args: Any, labels=None, source_input_ids=None,
        source_attention_mask=None, source_states=None, english_states=None, **kwargs: Any,
    ):
        if args:
            raise FlareError("FlareModel takes input_ids and attention_mask positionally; pass other arguments by name")
        # by name, so that PEFT's task wrappers (whose positional order differs) and FLARE see the same batch
        named = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        kwargs.update({k: v for k, v in named.items() if v is not None})
        extra = _pop_source_kwargs(kwargs)
        if source_input_ids is not None or source_states is not None or english_states is not None:
            self._check_not_merged()
        cache = self.english_state_cache
        if cache is not None and source_input_ids is not None and english_states is None and source_states is None:
            english_states = cache.states(self, source_input_ids, source_attention_mask, extra)
            if english_states is not None:  # None: a batch the cache cannot serve runs its English pass
                source_input_ids, extra = None, {}
        # Kept until the next forward: gradient checkpointing recomputes layers during backward.
        self._side = self._prepare_source(
            kwargs, ids=source_input_ids, mask=source_attention_mask, states=source_states, extra=extra,
            generating=False, recorded=english_states,
        )
        return self.peft_model(**kwargs)

    def generate(
        self, *args: Any, source_input_ids=None, source_attention_mask=None, source_states=None, english_states=None,
        **kwargs: Any,
    ):
        """generate with the English prompt's states captured once by a forward pass. Every
        position pairs as in a forward pass over the prompt and the tokens generated so far (with
        or without a cache); positions past the English prompt fuse as config.decode_fusion says."""
        extra = _pop_source_kwargs(kwargs)
        if source_input_ids is not None or source_states is not None or english_states is not None:
            self._check_not_merged()
        side = self._prepare_source(
            kwargs, ids=source_input_ids, mask=source_attention_mask, states=source_states, extra=extra,
            generating=True, args=args, recorded=english_states,
        )
        if side is not None and self._decoder_only:
            check_cached_decoding(
                self.flare_config, uses_cache(getattr(self.backbone, "generation_config", None), args, kwargs),
                side.right_aligned, side.source_end - side.source_first, side.target_end - side.target_first,
            )
        self._side = side
        try:
            return self.peft_model.generate(*args, **kwargs)
        finally:
            self._side = None

    def english_states(self, source_input_ids: torch.Tensor, source_attention_mask: torch.Tensor | None = None,
                       **source_kwargs: Any) -> dict[str, torch.Tensor]:
        """The English pass alone: {fused module: the input it fuses}, each (B, Ls, width), without
        gradients. They depend only on the frozen backbone (adapters off, eval mode), so they can be
        computed once and passed to later calls as `english_states=` with the same
        `source_attention_mask`, instead of `source_input_ids`: the outputs are the same, bit for
        bit, as a call with `source_input_ids` on the same batch. `source_kwargs`: further arguments
        of the English pass (e.g. token_type_ids). With `layer_input`, fused modules of one layer
        share one tensor."""
        if self.source_projection is not None:
            raise FlareError("english_states: this adapter fuses external source_states (FLARE-MT); pass those")
        self._check_not_merged()
        return self._recorder.record(
            partial(self._english_forward, source_input_ids, source_attention_mask, source_kwargs, {}, True)
        )

    # ----------------------------------------------------------------- the English side

    def _prepare_source(
        self, kwargs: dict[str, Any], *, ids: torch.Tensor | None, mask: torch.Tensor | None,
        states: torch.Tensor | None, extra: dict[str, Any], generating: bool, args: tuple = (),
        recorded: dict[str, torch.Tensor] | None = None,
    ) -> _SourceSide | None:
        """Check the English side (token ids of the same tokenizer, or another model's `states`)
        against the target batch in `kwargs` (or generate's positional `args`), run its pass, and
        keep what the fusion hooks need. `extra`: the backbone's own English-side arguments."""
        if ids is None and states is None and recorded is None:
            if mask is not None or extra:
                raise FlareError("source_attention_mask given without source_input_ids or source_states")
            return None
        if sum(x is not None for x in (ids, states, recorded)) > 1:
            raise FlareError("give one of source_input_ids, source_states and english_states")
        if ids is not None:
            ids = check_ids(ids, self.backbone.get_input_embeddings())
        elif states is not None:
            states = check_states(states, self.source_projection)
        else:
            recorded = self._check_recorded(recorded, extra)
        source = ids if ids is not None else states if states is not None else next(iter(recorded.values()))
        if mask is not None:
            mask = check_mask(mask, source)
        elif ids is not None:
            check_unmasked_ids(ids, pad_token_id(self.backbone), self._warned)
        past = kwargs.get("past_key_values")
        if not generating and past is not None and getattr(past, "get_seq_length", lambda: 0)() > 0:
            # a forward pairs its tokens as a whole sequence from position 0; generate() tracks steps
            raise FlareError("a source with a filled past_key_values cache: use generate(), or pass the whole sequence")
        target = kwargs.get("input_ids", args[0] if args else kwargs.get("inputs_embeds"))
        if target is not None and not isinstance(target, torch.Tensor):
            raise FlareError(f"input_ids must be a torch tensor, got a {type(target).__name__}")
        if target is not None and source.shape[0] != target.shape[0]:
            raise FlareError(f"source batch size {source.shape[0]} does not match target batch size {target.shape[0]}")
        if states is not None:
            if self.source_projection is None:
                raise FlareError("source_states given, but the adapter has no source_dim; set FlareConfig.source_dim")
            if states.dim() != 3 or states.shape[-1] != self.flare_config.source_dim:
                raise FlareError(
                    f"source_states width {states.shape[-1]} differs from source_dim {self.flare_config.source_dim}"
                )
            recorded = {}
        elif recorded is None:
            recorded = self._recorder.record(partial(self._english_forward, ids, mask, extra, kwargs, generating))
        target_mask = kwargs.get("attention_mask")
        right = self._right_aligned(states is not None, mask)
        if states is not None and mask is not None:
            # another tokenizer's positions: only the real tokens' order carries meaning
            states, mask = pack(states, mask, right)
        batch, length = (target.shape[0], target.shape[1]) if target is not None else (source.shape[0], 0)
        if target_mask is not None and target_mask.dim() == 2:
            batch, length = target_mask.shape
        target_first, target_end = row_extent(target_mask, batch, length, source.device)
        source_first, source_end = row_extent(mask, source.shape[0], source.shape[1], source.device)
        return _SourceSide(
            recorded, states, mask, target_mask, right, generating, target_first, target_end, source_first, source_end
        )

    def _check_recorded(self, recorded: dict[str, torch.Tensor], extra: dict[str, Any]) -> dict[str, torch.Tensor]:
        """english_states given to forward/generate: what english_states() returns for this adapter."""
        if extra:
            raise FlareError(f"english_states replace the English pass; drop source_{next(iter(extra))}")
        if self.source_projection is not None:
            raise FlareError("english_states given, but this adapter fuses external source_states (FLARE-MT)")
        unknown = sorted(set(recorded) - set(self.fused_modules))
        if unknown or not recorded:
            raise FlareError(f"english_states must map fused modules to tensors; {unknown[:1] or 'none'} is not one")
        shapes = {tuple(t.shape[:2]) for t in recorded.values()}
        if len(shapes) != 1 or any(t.dim() != 3 for t in recorded.values()):
            raise FlareError(f"english_states must all be (batch, source length, width), got shapes {sorted(shapes)}")
        return recorded

    def _right_aligned(self, external: bool, mask: torch.Tensor | None) -> bool:
        if external and self._decoder_only:
            # another tokenizer's states pair from the first token on: appending answer tokens
            # never moves a pair, so training pairs them exactly as generation does
            return False
        alignment = self.flare_config.alignment
        if alignment != "auto":
            return alignment == "right"
        if self._decoder_only and not external and mask is not None and bool((mask[:, -1] == 0).any()):
            warnings.warn(
                "alignment='auto' pairs the ends of decoder rows, and the English side is right-padded: its "
                "trailing padding counts as positions under the target's answer. Pad it on the left, or set "
                "FlareConfig.alignment explicitly ('right' when the trailing positions are meant that way).",
                stacklevel=4,
            )
        return self._decoder_only  # fixed by the family, never by the batch

    def _english_forward(self, ids, mask, extra, target_kwargs, generating) -> None:
        kwargs = dict(extra, input_ids=ids)
        if mask is not None:
            kwargs["attention_mask"] = mask
        if self._english_encoder is not None:
            self._english_encoder()(**kwargs)
            return
        if not generating:
            kwargs = {**{k: v for k, v in target_kwargs.items() if k not in _TARGET_ONLY}, **kwargs}
        if getattr(self.backbone.config, "use_cache", None) is not None:
            kwargs["use_cache"] = False
        self.backbone(**kwargs)

    # ----------------------------------------------------------------- generation

    def _step_hook(self, backbone: nn.Module, args: tuple, kwargs: dict) -> None:
        """Before each generation step: where its tokens sit in the sequence (past the cached
        ones) and the attention mask over the sequence so far."""
        side = self._side
        if side is None or not side.generating:
            return
        past = kwargs.get("past_key_values")
        side.offset = int(past.get_seq_length()) if past is not None and hasattr(past, "get_seq_length") else 0
        mask = kwargs.get("attention_mask")
        side.step_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None

    # ----------------------------------------------------------------- fusion

    def _fuse_hook(self, name: str, lora_A: nn.Linear, args: tuple, target: torch.Tensor):
        side = self._side
        if side is None or (side.states is None and name not in side.recorded):
            return None
        project = side.states is not None
        source = side.states if project else side.recorded[name]
        batch, length = target.shape[:2]
        # only decoder-only generation has steps past position 0; encoder modules see whole inputs
        offset = side.offset if side.generating and self._decoder_only else 0
        index, valid = self._pairing(side, source.shape[1], batch, length, offset)
        if not bool(valid.any()):
            return None
        fusion = self.flare_config.fusion
        if offset and fusion in TARGET_KEYED:  # generate() refuses this before starting
            raise FlareError(f"fusion={fusion!r} cannot fuse a cached decoding step; generate with use_cache=False")
        module = self.fusion_modules[_key(name)] if _key(name) in self.fusion_modules else None  # noqa: SIM401 - ModuleDict has no .get()
        bottleneck = _repeat_rows(self._bottleneck(name, lora_A, args[0], source, project), batch)
        target_keys = side.step_mask if side.generating and self._decoder_only else side.target_mask
        if target_keys is not None:
            target_keys = _repeat_rows(target_keys, batch)[:, offset:offset + length]
            target_keys = target_keys if tuple(target_keys.shape) == (batch, length) else None
        source_keys = None
        if side.mask is not None and self.flare_config.mask_source_padding:
            source_keys = _repeat_rows(side.mask, batch)
        fused = fuse(fusion, bottleneck, target, index, target_keys, source_keys, self._decoder_only, module)
        if self.english_gates:
            fused = target + self._gate(name).to(target.dtype) * (fused - target)
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

    def _pairing(self, side: _SourceSide, source_length: int, batch: int, length: int, offset: int):
        """Partner index (B, L), clamped into the source, and whether it counts (B, L); computed
        once per call shape and position."""
        key = (source_length, batch, length, offset)
        if key not in side.pairs:
            positions = torch.arange(offset, offset + length, device=side.target_first.device)
            index = partners(
                positions, _repeat_rows(side.target_first, batch), _repeat_rows(side.target_end, batch),
                _repeat_rows(side.source_first, batch), source_length, side.right_aligned,
            )
            valid = (index >= 0) & (index < source_length)
            if self.flare_config.decode_fusion == "last" and self._decoder_only:
                # positions past the English prompt's last real token fuse with that token
                end = _repeat_rows(side.source_end, batch)[:, None]
                beyond = index >= end
                index = torch.where(beyond, end - 1, index)
                valid = torch.where(beyond, end > 0, valid)
            index = index.clamp(0, source_length - 1)
            if self.flare_config.mask_source_padding and side.mask is not None:
                valid = valid & _repeat_rows(side.mask, batch).gather(1, index).bool()
            side.pairs[key] = index, valid
        return side.pairs[key]

    def _gate(self, name: str) -> torch.Tensor:
        return 1 + GATE_SCALE * self.english_gates[_key(name)]

    def english_gate_values(self) -> dict[str, float]:
        """Each fused module's learned English gate g (1: plain FLARE, 0: the English side ignored);
        empty without `english_gate`."""
        return {name: float(self._gate(name)) for name in self.fused_modules} if self.english_gates else {}

    # ----------------------------------------------------------------- saving

    def flare_state_dict(self) -> dict[str, torch.Tensor]:
        """FLARE-only weights (fusion modules, projection): what PEFT's adapter file lacks. Named
        by prefix, so a module registered for another purpose never lands in the sidecar."""
        own = ("fusion_modules.", "source_projection.", "english_gates.")
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k.startswith(own)}


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
