"""The backbone decision (flare/hf/backbone.py): one spec per family and task type, read by the loader,
the checks, the formatter, the tokenizer's padding side and the adapter's alignment."""

import dataclasses

import pytest

import tiny_models
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.hf.backbone import BackboneSpec, model_family, spec_for
from flare.hf.formats import PairFormatter
from flare.study.settings import AdapterSettings
from tiny_tokenizers import decoder_tokenizer, encoder_tokenizer, seq2seq_tokenizer

# tiny model, task type -> family, Auto class, head, padding = truncation side, alignment, answer, PEFT task type
TABLE = [
    ("xlmr_classifier", "classification",
     ("encoder", "AutoModelForSequenceClassification", "classifier", "right", "left", "none", "SEQ_CLS")),
    ("bert_classifier", "classification",
     ("encoder", "AutoModelForSequenceClassification", "classifier", "right", "left", "none", "SEQ_CLS")),
    ("xlmr_qa", "qa", ("encoder", "AutoModelForQuestionAnswering", "span", "right", "left", "none", None)),
    ("llama", "classification",
     ("decoder", "AutoModelForCausalLM", "label_words", "left", "right", "after_prompt", "CAUSAL_LM")),
    ("gemma2", "classification",
     ("decoder", "AutoModelForCausalLM", "label_words", "left", "right", "after_prompt", "CAUSAL_LM")),
    ("qwen2", "qa", ("decoder", "AutoModelForCausalLM", "generate", "left", "right", "after_prompt", "CAUSAL_LM")),
    ("mt5", "classification",
     ("encoder-decoder", "AutoModelForSeq2SeqLM", "label_words", "right", "left", "decoder_labels", "SEQ_2_SEQ_LM")),
    ("m2m100", "qa",
     ("encoder-decoder", "AutoModelForSeq2SeqLM", "generate", "right", "left", "decoder_labels", "SEQ_2_SEQ_LM")),
]


@pytest.mark.parametrize(("builder", "task_type", "expected"), TABLE, ids=[f"{b}-{t}" for b, t, _ in TABLE])
def test_every_tiny_family_gets_its_decision(builder, task_type, expected):
    model = getattr(tiny_models, builder)()
    spec = spec_for(model_family(model.config), task_type)
    family, auto_class, head, side, alignment, answer, peft_task_type = expected
    assert (spec.family, spec.auto_class, spec.head) == (family, auto_class, head)
    assert spec.padding_side == spec.truncation_side == side and spec.alignment == alignment
    assert (spec.answer, spec.peft_task_type) == (answer, peft_task_type)
    assert spec.truncation_fixed == (family == "decoder")
    assert spec.modules_to_save == (("qa_outputs",) if head == "span" else ())
    # the Auto class the spec names builds exactly the architecture of the tiny model
    assert spec.model_class()._model_mapping[type(model.config)] is type(model)
    assert spec is spec_for(family, task_type)  # one object per decision
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.padding_side = "right"  # type: ignore[misc]


def test_override_and_unknown_names():
    assert spec_for(model_family(tiny_models.llama().config, family="encoder"), "classification").head == "classifier"
    with pytest.raises(FlareError, match="unknown model family 'rnn'"):
        spec_for("rnn", "classification")
    with pytest.raises(FlareError, match="unknown task type 'ner'"):
        spec_for("encoder", "ner")
    assert spec_for("encoder", "qa").head_config(0) == {}  # the span head keeps its start/end outputs
    assert spec_for("encoder", "classification").head_config(3) == {"num_labels": 3}


def test_family_is_inferred_from_transformers_auto_classes():
    from transformers import BloomConfig, M2M100Config, T5Config

    assert (model_family("xlm-roberta"), model_family("llama"), model_family("gemma2"), model_family("mt5")) == (
        "encoder", "decoder", "decoder", "encoder-decoder"
    )
    # architectures no list of ours names: BLOOM and Falcon are causal LMs, ELECTRA a masked LM
    assert [model_family(t) for t in ("bloom", "falcon", "electra", "deberta-v2", "bart")] == [
        "decoder", "decoder", "encoder", "encoder", "encoder-decoder"
    ]
    assert model_family(BloomConfig()) == "decoder" and model_family(T5Config()) == "encoder-decoder"
    assert model_family(M2M100Config()) == "encoder-decoder"
    assert model_family(BloomConfig(), family="encoder") == "encoder"  # the override wins
    with pytest.raises(FlareError, match="set family to one of encoder, decoder, encoder-decoder") as error:
        model_family("clip")  # no masked-LM, causal-LM or seq2seq class
    assert "\n" not in str(error.value)
    with pytest.raises(FlareError, match="family: 'rnn'"):
        model_family("llama", family="rnn")


WORDS = ["Sentiment", ":", "negative", "neutral", "positive", "a", "good", "day", "Context", "Question", "Answer"]
SAVED = [  # tiny model, its tokenizer, task
    ("xlmr_classifier", encoder_tokenizer, "nusax"),
    ("xlmr_qa", encoder_tokenizer, "tydiqa"),
    ("llama", decoder_tokenizer, "nusax"),
    ("mt5", seq2seq_tokenizer, "tydiqa"),
]


@pytest.mark.parametrize(("builder", "tokenizer", "task_name"), SAVED, ids=[s[0] for s in SAVED])
def test_check_model_load_backbone_formatter_and_adapter_share_the_spec(
    builder, tokenizer, task_name, tmp_path, monkeypatch
):
    from flare.hf.checks import check_model
    from flare.hf.loading import flare_config, load_backbone

    getattr(tiny_models, builder)().save_pretrained(tmp_path)
    tokenizer(WORDS).save_pretrained(tmp_path)
    task = get_task(task_name)
    built = []
    model_class = BackboneSpec.model_class

    def spy(spec):
        built.append(model_class(spec))
        return built[-1]

    monkeypatch.setattr(BackboneSpec, "model_class", spy)
    check_model(str(tmp_path), task, AdapterSettings().flare_kwargs(), max_length=16, longest=16)
    backbone, tok, family = load_backbone(str(tmp_path), task)
    spec = spec_for(family, task.type)
    assert len(built) == 2 and built[0] is built[1]  # the check's skeleton is the model training loads
    assert type(backbone) is type(getattr(tiny_models, builder)())
    assert tok.padding_side == spec.padding_side
    assert PairFormatter(task, tok, family).padding_side == spec.padding_side
    assert PairFormatter(task, tok, spec).spec is spec
    assert flare_config(AdapterSettings().flare_kwargs(), task, family).alignment == spec.alignment
