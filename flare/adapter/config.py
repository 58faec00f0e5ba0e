"""FlareConfig: the LoRA settings plus what FLARE adds (which modules fuse, how, and with what)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from flare.errors import FlareError
from flare.setting_types import Range, check_type

# The cross-attention fusions, by the side their queries come from.
CROSS_ATTENTION_QUERIES = {"cross_attention": "source", "cross_attention_target_queries": "target"}
FUSIONS = ("add", "mul", "add_relu", "matmul", "matmul_relu", *CROSS_ATTENTION_QUERIES)
SOURCE_POSITIONS = ("module_input", "layer_input")
DECODE_FUSIONS = ("none", "last")
ALIGNMENTS = ("auto", "left", "right")

# Query/value projection names by model family, tried in order: Llama/Gemma/Qwen/M2M100,
# BERT/XLM-R, T5/mT5. The paper fuses in the query and value projections only.
DEFAULT_FUSE_MODULES = (("q_proj", "v_proj"), ("query", "value"), ("q", "v"))


@dataclass
class FlareConfig:
    """Settings of a FLARE adapter. A study sets the fields `flare.study.settings.STUDY_ADAPTER_FIELDS` names
    (its `adapter:` section and `--adapter.*` flags, documented by the text below); the ranges declared
    with the types are enforced there, on what users type, while this class refuses only what
    breaks the adapter, so adapters saved with other values still load.

    Attributes:
        r: LoRA rank (the bottleneck width in which the fusion happens).
        lora_alpha: LoRA scaling numerator; the adapter output is scaled by lora_alpha / r.
        lora_dropout: dropout on the adapter input; the same module is applied to both sides.
        target_modules: module names (or "all-linear") that get LoRA; None (or empty): the fused
            modules.
        fuse_modules: LoRA-targeted modules that also receive the English side; None (or empty)
            picks the architecture's query and value projections (q_proj/v_proj, query/value or
            q/v); models with a fused query-key-value projection (e.g. BLOOM's query_key_value)
            need it set. On encoder-decoder models only the encoder's modules fuse; the decoder
            runs plain LoRA.
        fuse_layers: which layers fuse, by index from 0 (the first number in a module's name,
            e.g. 3 in "model.layers.3.self_attn.q_proj"): a list ([0, 2, 4]) or a string of
            indices and ranges ("0-5", "0-3,8"); None (or empty): all layers. LoRA still adapts
            every targeted module; the others run plain LoRA. The English pass stops after the
            last fused layer, so fusing only the lower layers makes it cheaper. Indices past the
            model's depth are refused.
        fusion: how the source (S = A x_s) and target (T = A x_t) bottlenecks combine: add (S + T),
            mul (S * T), add_relu (relu(S) + relu(T)), matmul (S T^T T), matmul_relu (the same on
            relu'd inputs), cross_attention (the paper's: queries from S, keys and values from T),
            cross_attention_target_queries (not in the paper: queries from T, keys and values
            from S, so English content reaches B). On decoder-only models the fusions that mix
            positions are causal: target position i reads target positions <= i and English
            positions up to its partner.
        cross_attention_heads: heads of the cross-attention fusions; must divide r.
        cross_attention_dropout: dropout on the cross-attention probabilities while training.
        source_dim: width of external source states (FLARE-MT, e.g. an NLLB encoder's); adds a
            trainable projection from source_dim to the fused modules' input width.
        source_position: what the English pass records for a fused module: "module_input" (the
            exact input that linear sees, e.g. after RMSNorm in a pre-norm decoder) or
            "layer_input" (the residual stream entering the layer, as the reference code does).
        mask_source_padding: a target position paired with source padding runs plain LoRA, so
            padding contributes nothing. Off: padding states fuse like any other (the
            reference behaviour).
        decode_fusion: on decoder-only models, what a target position past the English side's
            last real token fuses, in a forward pass and at generation alike (generated tokens
            are such positions): "none" (plain LoRA) or "last" (that last real English state).
        alignment: how positions pair, per row from its own masks (pairing.py): "left" (the
            first real tokens pair; for right-padded batches), "right" (the target's last real
            token pairs with the English row's last position, whose trailing masked positions
            stand under the target's answer; for left-padded English sides) or "auto" (right
            for decoder-only models, left otherwise; never decided by the batch). External
            source_states come from another tokenizer: their real states are packed together,
            and on decoder-only models they always pair from the first token (left), so
            appending answer tokens never moves a pair.
        english_gate: learn one gate per fused module (starting at 1, plain FLARE) that scales how
            much the English side changes the target's bottleneck: T + g (phi(S, T) - T), with
            g = 1 + 64 theta so that it can move at LoRA learning rates. Meant for a poor English
            side (machine translation), which training can then turn down. Experimental and not
            recommended: on NusaX with a word-by-word MT it gave no gain over plain FLARE and
            training turned the gates up, not down (BENCHMARKS.md, "Where FLARE's gain comes from");
            kept to reproduce that.
        modules_to_save: extra modules trained in full and saved with the adapter (task heads).
        task_type: PEFT task type (e.g. "SEQ_CLS", "CAUSAL_LM"); selects PEFT's head handling.
    """

    r: Annotated[int, Range(1, 4096)] = 8
    lora_alpha: Annotated[int, Range(1, 1 << 20)] = 16
    lora_dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.0
    target_modules: list[str] | str | None = None
    fuse_modules: list[str] | None = None
    fuse_layers: list[Annotated[int, Range(0, 1 << 20)]] | str | None = None
    fusion: Literal[FUSIONS] = "add_relu"
    cross_attention_heads: Annotated[int, Range(1, 4096)] = 1
    cross_attention_dropout: float = 0.0
    source_dim: int | None = None
    source_position: Literal[SOURCE_POSITIONS] = "module_input"
    mask_source_padding: bool = True
    decode_fusion: Literal[DECODE_FUSIONS] = "none"
    alignment: Literal[ALIGNMENTS] = "auto"
    english_gate: bool = False
    modules_to_save: list[str] | None = None
    task_type: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fuse_modules, str):
            self.fuse_modules = [self.fuse_modules]
        _one_of("fusion", self.fusion, FUSIONS)
        _one_of("source_position", self.source_position, SOURCE_POSITIONS)
        _one_of("decode_fusion", self.decode_fusion, DECODE_FUSIONS)
        _one_of("alignment", self.alignment, ALIGNMENTS)
        # the declared types (not the ranges: those bind what a study sets, see the class docstring)
        for name, hint in typing.get_type_hints(FlareConfig).items():
            setattr(self, name, check_type(getattr(self, name), hint, name))
        if self.r < 1:
            raise FlareError(f"r must be a positive integer, got {self.r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise FlareError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.fusion in CROSS_ATTENTION_QUERIES and (
            self.cross_attention_heads < 1 or self.r % self.cross_attention_heads
        ):
            raise FlareError(
                f"cross_attention_heads={self.cross_attention_heads} must be positive and divide r={self.r}"
            )
        if self.source_dim is not None and self.source_dim < 1:
            raise FlareError(f"source_dim must be a positive integer, got {self.source_dim}")
        if isinstance(self.fuse_modules, str):
            self.fuse_modules = [self.fuse_modules]
        parse_layers(self.fuse_layers)
        if not 0.0 <= self.cross_attention_dropout < 1.0:
            raise FlareError(f"cross_attention_dropout must be in [0, 1), got {self.cross_attention_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FlareConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FlareError(f"unknown FlareConfig field(s): {', '.join(unknown)}")
        return cls(**values)


def parse_layers(value: list[int] | str | None) -> list[int] | None:
    """fuse_layers as sorted layer indices ("0-3,8" -> [0, 1, 2, 3, 8]); None or empty: all layers."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        layers: set[int] = set()
        for part in value.replace(" ", "").split(","):
            low, dash, high = part.partition("-")
            if not low.isdigit() or (dash and not high.isdigit()) or (dash and int(high) < int(low)):
                raise FlareError(f"fuse_layers {value!r}: write layer indices and ranges such as '0-5' or '0,2,4'")
            layers.update(range(int(low), int(high if dash else low) + 1))
        return sorted(layers)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        raise FlareError(f"fuse_layers {value!r}: layer indices are integers from 0")
    return sorted(set(value))


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise FlareError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def default_fuse_modules(leaf_names: set[str], model_name: str) -> list[str]:
    """The query/value projection names present among a model's linear layers."""
    for pair in DEFAULT_FUSE_MODULES:
        if set(pair) <= leaf_names:
            return list(pair)
    raise FlareError(
        f"cannot tell which modules of {model_name} are the query/value projections; "
        "set fuse_modules (and target_modules) explicitly"
    )
