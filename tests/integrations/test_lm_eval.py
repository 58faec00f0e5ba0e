"""The lm-evaluation-harness backend (flare/integrations/lm_eval.py) on a tiny random Llama with a
FLARE adapter and a small local task: lm-eval's per-document log-likelihoods are flare-xlt's own
label-word scores, the English side comes from each document, and what would go wrong is refused."""

import json

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="the lmeval extra is not installed (make test-lmeval)")

from transformers import AutoModelForCausalLM  # noqa: E402

from flare import FlareConfig, get_flare_model  # noqa: E402
from flare.data.tasks import get_task  # noqa: E402
from flare.errors import FlareError  # noqa: E402
from flare.hf.formats import PairFormatter, candidate_log_likelihood  # noqa: E402
from flare.integrations.lm_eval import FlareLM  # noqa: E402
from tiny_study import save_tiny_llama, write_toy_task  # noqa: E402

pytestmark = pytest.mark.slow  # lm-eval's task machinery takes a few seconds to start

TASK_YAML = """task: toy_flare
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_choice: ["bad", "good"]
doc_to_target: label
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval")
    base = save_tiny_llama(root / "base")
    model = get_flare_model(
        AutoModelForCausalLM.from_pretrained(base),
        FlareConfig(r=4, lora_alpha=8, fusion="add_relu", alignment="right"),
    )
    torch.manual_seed(3)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # a trained adapter: B = 0 would make FLARE the base model
            parameter.data.normal_(0, 0.5)
    model.save_pretrained(root / "adapter")
    task = get_task(str(write_toy_task(root / "task")))
    pairs = task.load_pairs("test", "de", None, None, "gold") + task.load_pairs("valid", "de", None, None, "gold")
    data = root / "toy.jsonl"
    data.write_text("".join(json.dumps({"text": p.target.fields["text"], "text_en": p.source.fields["text"],
                                        "label": p.target.label}) + "\n" for p in pairs), encoding="utf-8")
    (root / "tasks").mkdir()
    (root / "tasks" / "toy_flare.yaml").write_text(TASK_YAML.format(data=data), encoding="utf-8")
    return root, base, task, pairs


def _lm(root, base, **extra):
    return FlareLM(pretrained=str(base), adapter=str(root / "adapter"), batch_size=3, **extra)


def _evaluate(root, lm, **kwargs):
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=lm, tasks=["toy_flare"], task_manager=TaskManager(include_path=str(
        root / "tasks")), log_samples=True, bootstrap_iters=0, **kwargs)


def test_simple_evaluate_gives_flare_xlts_own_label_word_scores(setup):
    root, base, task, pairs = setup
    lm = _lm(root, base, english_template="Review: {{text_en}}\nSentiment:", continuation_eos=True)
    samples = sorted(_evaluate(root, lm)["samples"]["toy_flare"], key=lambda s: s["doc_id"])
    formatter = PairFormatter(task, lm.tokenizer, "decoder", "flare")
    batch = formatter.label_candidates(pairs)
    with torch.no_grad():
        logits = lm.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    own = candidate_log_likelihood(logits, batch["labels"], len(task.labels))
    assert len(samples) == len(pairs) == own.shape[0]
    for sample, expected in zip(samples, own.tolist(), strict=True):
        assert [resp[0][0] for resp in sample["resps"]] == pytest.approx(expected, abs=1e-4)
    # the English side is read: the plain-LoRA scores (no English) differ
    plain = candidate_log_likelihood(lm.model(**{k: v for k, v in batch.items()
                                                 if k in ("input_ids", "attention_mask")}).logits.detach(),
                                     batch["labels"], len(task.labels))
    assert not torch.allclose(plain, own, atol=1e-3)


def test_english_field_rolling_and_generation(setup):
    root, base, _, _ = setup
    lm = _lm(root, base, english_field="english")
    from lm_eval.api.instance import Instance

    doc = {"english": "Review: The food was wonderful.\nSentiment:"}
    context = "Review: Das Essen war wunderbar.\nSentiment:"
    ll = lm.loglikelihood([Instance("loglikelihood", doc, (context, " good"), 0)])
    assert len(ll) == 1 and ll[0][0] < 0
    other = lm.loglikelihood([Instance("loglikelihood", {"english": "Never again."}, (context, " good"), 0)])
    assert other[0][0] != pytest.approx(ll[0][0])  # another English side, another score
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", doc, (context,), 0)])
    assert len(rolling) == 1 and rolling[0] < 0
    text = lm.generate_until([Instance("generate_until", doc, (context, {"until": ["\n"], "max_gen_toks": 4}), 0)])
    assert len(text) == 1 and isinstance(text[0], str) and "\n" not in text[0]


def test_a_document_without_english_and_the_request_cache_are_refused_in_one_line(setup, tmp_path):
    root, base, _, _ = setup
    lm = _lm(root, base, english_field="premise_en")
    with pytest.raises(FlareError, match="lacks premise_en") as refused:
        _evaluate(root, lm)
    assert "\n" not in str(refused.value)
    lm = _lm(root, base, english_field="text_en")
    with pytest.raises(FlareError, match="use_cache"):
        _evaluate(root, lm, use_cache=str(tmp_path / "cache"))
    with pytest.raises(FlareError, match="exactly one"):
        _lm(root, base)
    with pytest.raises(FlareError, match=r"cannot load .* as a causal LM"):
        _lm(root, tmp_path / "no-model", english_field="text_en")
    with pytest.raises(FlareError, match=r"unknown model argument.*englsh_field"):
        _lm(root, base, english_field="text_en", englsh_field="x")


def test_a_document_without_english_is_translated_with_the_cached_mt_model(setup, tmp_path_factory):
    from lm_eval.api.instance import Instance
    from tiny_mt import shared_tiny_nllb

    from flare.mt.translate import translate_columns

    root, base, _, _ = setup
    mt = shared_tiny_nllb(tmp_path_factory)
    cache = root / "translations"
    lm = _lm(root, base, english_field="english", mt_model=str(mt), language="jav", translations_dir=str(cache))
    context = "Review: Das Essen war wunderbar.\nSentiment:"
    [(translated_score, _)] = lm.loglikelihood([Instance("loglikelihood", {}, (context, " good"), 0)])
    [[english]] = translate_columns([[context]], src_lang="jav", tgt_lang="en", mt_model=str(mt), cache_dir=cache)
    [(given_score, _)] = lm.loglikelihood([Instance("loglikelihood", {"english": english}, (context, " good"), 0)])
    assert translated_score == pytest.approx(given_score, abs=1e-6)
    with pytest.raises(FlareError, match="mt_model needs language"):
        _lm(root, base, english_field="english", mt_model=str(mt))
