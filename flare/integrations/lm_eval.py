"""lm-evaluation-harness backend (the `lmeval` extra): the model type `flare`, a decoder-only base
model plus a saved FLARE adapter, fed each request's English side.

Registration is an import-time plugin (lm-eval 0.4.13 reads no entry points for models): importing
this module registers `flare`; `python -m flare.integrations.lm_eval ...` is lm-eval's own command
line with it registered. Model arguments (`--model_args`):
* pretrained: the base model the adapter was trained on (a study's stage1/model); adapter: its folder;
* english_field: the document field holding the English prompt, or english_template: a Jinja
  template rendered on the document, as lm-eval's doc_to_text is (e.g. "{{text_en}}\\nSentiment:");
* where a document lacks them: mt_model (+ language, translations_dir) translates the request's
  context into English with flare's cached MT backend; without mt_model the run is refused, once;
* max_length (per side), batch_size, max_gen_toks, device, dtype;
* continuation_eos: score an EOS after each continuation, as flare-xlt's label-word scoring does.

Pairing is flare-xlt's own (flare/hf/formats.py): each side's prompt is tokenized alone, cut on the
left keeping BOS, the English prompt stands under the target prompt and padding (mask 0) under the
continuation, both rows left-padded to one length; the adapter pairs them (right alignment).
Rolling log-likelihoods pair the English text's end with each window's end.

Two lm-eval traps: `TemplateLM.loglikelihood` keeps only `req.args` (the document, hence the
English, would be lost), so `loglikelihood` is this class's own; and `--use_cache` keys its
entries on `req.args` alone, so runs differing only in their English side would share entries:
it is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import lm_eval.models  # noqa: F401  the built-in models register first (lm-eval fills an empty registry lazily)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from transformers import AutoModelForCausalLM, AutoTokenizer

from flare.adapter import load_flare_model
from flare.adapter.io import check_adapter_dir
from flare.errors import FlareError
from flare.hf.device import resolve_placement
from flare.hf.formats import IGNORE_INDEX, PairFormatter, candidate_log_likelihood
from flare.mt.translate import translate_columns


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


@register_model("flare")
class FlareLM(LM):
    """A base causal LM with a FLARE adapter, scored with each document's English side."""

    def __init__(self, pretrained: str, adapter: str, english_field: str | None = None,
                 english_template: str | None = None, mt_model: str | None = None, language: str | None = None,
                 source_language: str = "en", translations_dir: str = "translations", max_length: int = 512,
                 batch_size: int | str = 8, max_gen_toks: int = 256, device: str = "auto", dtype: str = "auto",
                 continuation_eos: bool | str = False, max_batch_size: Any = None, **unknown: Any) -> None:
        super().__init__()
        if unknown:  # a misspelt model argument must not pass silently
            raise FlareError(f"flare lm-eval model: unknown model argument(s) {', '.join(sorted(unknown))}")
        if (english_field is None) == (english_template is None):
            raise FlareError("flare lm-eval model: give english_field or english_template (exactly one)")
        if mt_model and not language:
            raise FlareError("flare lm-eval model: mt_model needs language (the documents' language)")
        check_adapter_dir(adapter)  # a missing or pickled adapter: one line, before the base loads
        self.english_field = english_field
        self.template = None if english_template is None else jinja2.Environment(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(english_template)
        self.mt_model, self.language, self.source_language = mt_model, language, source_language
        self.translations_dir = Path(translations_dir)
        self.max_length, self.max_gen_toks = int(max_length), int(max_gen_toks)
        self.batch_size = 8 if str(batch_size).startswith("auto") else int(batch_size)
        self.continuation_eos = _flag(continuation_eos)
        self.placement = resolve_placement(device or "auto", dtype or "auto")
        try:
            base = AutoModelForCausalLM.from_pretrained(pretrained, **self.placement.from_pretrained_kwargs())
        except (OSError, ValueError) as error:  # not a folder or id, or not a decoder-only model
            raise FlareError(f"flare lm-eval model: cannot load {pretrained} as a causal LM "
                             f"({' '.join(str(error).split())[:200]})") from None
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self.tokenizer.eos_token_id
        self.model = load_flare_model(base, adapter).eval()

    # --- lm-eval's faces -----------------------------------------------------------------------------

    def set_cache_hook(self, cache_hook) -> None:
        if getattr(cache_hook, "dbdict", None) is not None:  # CachingLM installs a hook with its database
            raise FlareError("flare lm-eval model: --use_cache keys results on the target text alone (not the English "
                             "side), so runs with different English would share them; run without --use_cache")
        super().set_cache_hook(cache_hook)

    @property
    def device(self):
        return self.placement.device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "flare")).replace("/", "__")

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        english = self._english(requests)
        out = []
        for start in range(0, len(requests), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(requests)))
            rows = [self._scored_row(*requests[i].args, english[i]) for i in chunk]
            out.extend(self._score(rows))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        english = self._english(requests)
        out = []
        for request, text in zip(requests, english, strict=True):
            tokens = self._ids(request.args[0], special=False)
            first = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.pad_id
            source = self._prompt(text, self.max_length)
            rows = []
            for window in get_rolling_token_windows(tokens, first, self.max_length, 1):
                context, predicted = make_disjoint_window(window)
                rows.append((context, predicted, source, 0))  # the English end pairs with the window's end
            out.append(sum(score for score, _ in self._score(rows)))
        return out

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        english = self._english(requests)
        out = []
        for request, text in zip(requests, english, strict=True):
            context, kwargs = request.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or [self.tokenizer.decode([self.tokenizer.eos_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            new_tokens = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            budget = self.max_length - new_tokens
            target, source = self._prompt(context, budget), self._prompt(text, budget)
            batch = self._batch([target], [source], [[1] * len(source)])
            generated = self.model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                source_input_ids=batch["source_input_ids"], source_attention_mask=batch["source_attention_mask"],
                max_new_tokens=new_tokens, do_sample=False, pad_token_id=self.pad_id,
            )
            answer = self.tokenizer.decode(generated[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            for stop in until:
                answer = answer.split(stop)[0]
            out.append(answer)
        return out

    # --- the English side ----------------------------------------------------------------------------

    def _english(self, requests: Sequence) -> list[str]:
        """Every request's English prompt, found before any scoring: a document without it is
        translated (mt_model) or refuses the whole run in one line."""
        found: list[str | None] = []
        for request in requests:
            doc = request.doc if isinstance(request.doc, dict) else {}
            if self.template is not None:
                try:
                    found.append(self.template.render(**doc))
                except jinja2.UndefinedError:
                    found.append(None)
            else:
                value = doc.get(self.english_field)
                found.append(value if isinstance(value, str) and value.strip() else None)
        missing = [i for i, text in enumerate(found) if text is None]
        if missing and not self.mt_model:
            request = requests[missing[0]]
            what = self.english_field or "english_template's fields"
            raise FlareError(f"flare lm-eval model: document {request.doc_id} of {request.task_name} lacks "
                             f"{what} ({len(missing)} of {len(requests)} requests); add the English to the "
                             "documents or set mt_model= and language= to translate it")
        if missing:
            contexts = [requests[i].args[0] for i in missing]
            [translated] = translate_columns(
                [contexts], src_lang=self.language, tgt_lang=self.source_language, mt_model=self.mt_model,
                cache_dir=self.translations_dir, device=str(self.placement.device), dtype="auto",
            )
            for i, text in zip(missing, translated, strict=True):
                found[i] = text
        return [str(text) for text in found]

    # --- tokens, as flare/hf/formats.py makes them -----------------------------------------------------

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _prompt(self, text: str, budget: int) -> list[int]:
        """A prompt's ids: BOS and the text, a closing EOS dropped, cut on the left keeping BOS."""
        ids = self._ids(text, special=True)
        if len(ids) > 1 and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        if len(ids) > budget:
            keep = 1 if self.tokenizer.bos_token_id is not None and ids[0] == self.tokenizer.bos_token_id else 0
            ids = ids[:keep] + ids[len(ids) - (budget - keep):]
        return ids

    def _scored_row(self, context: str, continuation: str, english: str) -> tuple:
        if context and context[-1].isspace():  # the space belongs to the continuation's first token
            stripped = context.rstrip()
            continuation, context = context[len(stripped):] + continuation, stripped
        answer = self._ids(continuation, special=False)
        if self.continuation_eos:
            answer = [*answer, self.tokenizer.eos_token_id]
        budget = self.max_length - len(answer)
        return self._prompt(context, budget), answer, self._prompt(english, budget), len(answer)

    def _batch(self, targets: list[list[int]], sources: list[list[int]], source_masks: list[list[int]],
               labels: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
        length = max(len(row) for row in [*targets, *sources])
        pad = PairFormatter._pad
        batch = {"input_ids": pad(targets, length, self.pad_id, "left"),
                 "attention_mask": pad([[1] * len(t) for t in targets], length, 0, "left"),
                 "source_input_ids": pad(sources, length, self.pad_id, "left"),
                 "source_attention_mask": pad(source_masks, length, 0, "left")}
        if labels is not None:
            batch["labels"] = pad(labels, length, IGNORE_INDEX, "left")
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def _score(self, rows: list[tuple]) -> list[tuple[float, bool]]:
        """(log-likelihood, greedy) of each row's answer: rows of (prompt, answer, English prompt,
        answer positions under padding on the English side)."""
        targets = [prompt + answer for prompt, answer, _, _ in rows]
        sources = [english + [self.pad_id] * under for _, _, english, under in rows]
        masks = [[1] * len(english) + [0] * under for _, _, english, under in rows]
        labels = [[IGNORE_INDEX] * len(prompt) + answer for prompt, answer, _, _ in rows]
        batch = self._batch(targets, sources, masks, labels)
        gold = batch.pop("labels")
        logits = self.model(**batch).logits.float()
        scores = candidate_log_likelihood(logits, gold, 1).squeeze(-1)
        shifted, answer = logits[:, :-1], gold[:, 1:]
        real = answer != IGNORE_INDEX
        greedy = ((shifted.argmax(-1) == answer) | ~real).all(-1)
        return [(float(s), bool(g)) for s, g in zip(scores.tolist(), greedy.tolist(), strict=True)]


def main(argv: list[str] | None = None) -> int:
    """lm-eval's command line with the `flare` model registered; a FlareError is one line, exit 2."""
    from lm_eval.__main__ import cli_evaluate  # the lmeval extra's command line: loaded only when run

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    try:
        cli_evaluate()
    except FlareError as error:
        print(f"flare: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
