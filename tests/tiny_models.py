"""Tiny random models of every supported architecture, built from configs (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    M2M100Config,
    M2M100ForConditionalGeneration,
    MT5Config,
    MT5ForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    XLMRobertaConfig,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
)

VOCAB = 97
PAD = 1
_DECODER = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD)
_ENCODER = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, pad_token_id=PAD, max_position_embeddings=80)


def _build(cls, config, seed: int):
    torch.manual_seed(seed)
    return cls(config).eval()


def llama(seed: int = 0, **overrides):
    return _build(LlamaForCausalLM, LlamaConfig(**{**_DECODER, **overrides}), seed)


def gemma2(seed: int = 0):
    config = Gemma2Config(**_DECODER, head_dim=8, sliding_window=16)
    return _build(Gemma2ForCausalLM, config, seed)


def qwen2(seed: int = 0):
    return _build(Qwen2ForCausalLM, Qwen2Config(**_DECODER), seed)


def xlmr_classifier(seed: int = 0, dropout: float = 0.0):
    config = XLMRobertaConfig(
        **_ENCODER, num_labels=3, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout
    )
    return _build(XLMRobertaForSequenceClassification, config, seed)


def xlmr_qa(seed: int = 0):
    return _build(XLMRobertaForQuestionAnswering, XLMRobertaConfig(**_ENCODER), seed)


def bert_classifier(seed: int = 0):
    return _build(BertForSequenceClassification, BertConfig(**_ENCODER, num_labels=2), seed)


def mt5(seed: int = 0):
    config = MT5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                       num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return _build(MT5ForConditionalGeneration, config, seed)


def m2m100(seed: int = 0):
    config = M2M100Config(vocab_size=VOCAB, d_model=24, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=PAD)
    return _build(M2M100ForConditionalGeneration, config, seed)


def randomize_lora_B(model, std: float = 0.2, seed: int = 1) -> None:
    """LoRA starts with B = 0 (adapter output 0); tests that compare paths need it non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def batch(batch_size: int, length: int, seed: int, pad_right: int = 0, pad_left: int = 0):
    """Random ids and mask; the last row gets pad_right / pad_left padding tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch_size, length), generator=generator)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    if pad_right:
        ids[-1, length - pad_right:], mask[-1, length - pad_right:] = PAD, 0
    if pad_left:
        ids[-1, :pad_left], mask[-1, :pad_left] = PAD, 0
    return ids, mask


def record_inputs(model, names, run):
    """Inputs (and outputs) of the named modules during run()."""
    seen, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        def hook(module, args, output, name=name):
            seen[name] = (args[0].detach(), output.detach())  # the last call: the target pass
        handles.append(modules[name].register_forward_hook(hook))
    with torch.no_grad():
        run()
    for handle in handles:
        handle.remove()
    return seen


def save_encoder(path, texts, num_hidden_layers: int = 2):
    """A tiny random XLM-R encoder with a word-level tokenizer over `texts`, saved as a model folder
    that a study can name as its `model` (the pipeline adds the task head)."""
    from transformers import XLMRobertaModel

    from tiny_tokenizers import encoder_tokenizer

    tok = encoder_tokenizer(texts)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                              num_hidden_layers=num_hidden_layers, num_attention_heads=4, pad_token_id=0,
                              max_position_embeddings=80)
    XLMRobertaModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
