"""Tiny offline tokenizers (built with the tokenizers library) imitating BERT/XLM-R, Llama/Gemma
and mT5, over the words of the texts they will see."""

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast


def _words(texts: Iterable[str], pre_tokenizer) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(text):
            seen.setdefault(word, None)
    return list(seen)


def encoder_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """BERT-like: [CLS] A [SEP] B [SEP], lower-cased WordPiece over the given words."""
    pre = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + _words((t.lower() for t in texts), pre))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]"
    )


def _word_level(texts: Iterable[str], specials: list[str], single: str, **named: str) -> PreTrainedTokenizerFast:
    pre = pre_tokenizers.Whitespace()
    vocab = {w: i for i, w in enumerate(specials + _words(texts, pre))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(s, vocab[s]) for s in specials if s in single]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **named)


def decoder_tokenizer(texts: Iterable[str], eos_after_prompt: bool = False) -> PreTrainedTokenizerFast:
    """Llama-like: BOS prepended, no pad token (EOS pads). `eos_after_prompt` imitates Gemma's add_eos_token."""
    single = "<s> $A </s>" if eos_after_prompt else "<s> $A"
    return _word_level(texts, ["<unk>", "<s>", "</s>"], single, bos_token="<s>", eos_token="</s>")


def seq2seq_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """mT5-like: no BOS, EOS appended, a real pad token."""
    return _word_level(texts, ["<pad>", "</s>", "<unk>"], "$A </s>", eos_token="</s>", pad_token="<pad>")
