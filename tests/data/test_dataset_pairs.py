"""A user's own `datasets.Dataset` becomes FLARE pairs, validated like the built-in readers, and
trains a FLARE model through the same formatter."""

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from flare import FlareConfig, FlareError, get_flare_model, pairs_from_dataset
from flare.data.tasks import get_task
from flare.hf.formats import FormatSettings, PairFormatter
from tiny_tokenizers import encoder_tokenizer

ROWS = {
    "sw": ["Chakula kilikuwa kizuri sana", "Huduma ilikuwa mbaya", "Ni sawa tu"],
    "en": ["The food was very good", "The service was bad", "It is just okay"],
    "label": [2, 0, 1],
}
NAMES = ["negative", "neutral", "positive"]


def _dataset(rows=ROWS):
    features = Features({"sw": Value("string"), "en": Value("string"), "label": ClassLabel(names=NAMES)})
    return Dataset.from_dict(rows, features=features)


def test_classlabel_dataset_becomes_pairs():
    pairs = pairs_from_dataset(_dataset(), text="sw", english="en", label="label", language="swa")
    assert [p.target.fields["text"] for p in pairs] == ROWS["sw"]
    assert [p.source.fields["text"] for p in pairs] == ROWS["en"]
    assert [p.target.label for p in pairs] == ROWS["label"] == [p.source.label for p in pairs]
    assert {p.kind for p in pairs} == {"machine"} and pairs[0].target.language == "swa"


def test_string_labels_need_names_and_map_by_name():
    rows = [{"t": "a b", "e": "x y", "y": "positive"}, {"t": "c", "e": "z", "y": "negative"}]
    with pytest.raises(FlareError, match="not a ClassLabel"):
        pairs_from_dataset(rows, text="t", english="e", label="y")
    pairs = pairs_from_dataset(rows, text="t", english="e", label="y", labels=NAMES)
    assert [p.target.label for p in pairs] == [2, 0]


@pytest.mark.parametrize(("rows", "kwargs", "message"), [
    ({"sw": ["a"], "en": [""], "label": [0]}, {}, r"row 1: field 'en' is empty"),
    ({"sw": ["a"], "en": ["b"], "label": [0]}, {"english": "english"}, r"no column 'english'"),
    ({"sw": ["a"], "en": ["b"], "label": [0]}, {"english": {"premise": "en"}}, "same fields"),
    ({"sw": ["a", "b"], "en": ["c", "d"], "label": [0, 1]}, {"id_column": "sw", "text": "en"}, None),
])
def test_bad_rows_are_one_line_errors(rows, kwargs, message):
    args = {"text": "sw", "english": "en", "label": "label", **kwargs}
    if message is None:  # ids from a column must be unique: here they are, so it loads
        assert len(pairs_from_dataset(_dataset(rows), **args)) == 2
        return
    with pytest.raises(FlareError, match=message) as error:
        pairs_from_dataset(_dataset(rows), **args)
    assert "\n" not in str(error.value)


def test_duplicate_ids_refused():
    rows = [{"i": "1", "t": "a", "e": "b"}, {"i": "1", "t": "c", "e": "d"}]
    with pytest.raises(FlareError, match="duplicate id '1'"):
        pairs_from_dataset(rows, text="t", english="e", id_column="i")


def test_pairs_train_a_flare_model_with_the_english_side():
    pairs = pairs_from_dataset(_dataset(), text="sw", english="en", label="label")
    tok = encoder_tokenizer(ROWS["sw"] + ROWS["en"])
    batch = PairFormatter(get_task("nusax"), tok, "encoder", "flare", FormatSettings(max_length=12))(pairs)
    assert {"source_input_ids", "source_attention_mask", "labels"} <= set(batch)
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, pad_token_id=0, num_labels=3)
    model = get_flare_model(XLMRobertaForSequenceClassification(config), FlareConfig(task_type="SEQ_CLS"))
    for module in model.modules():  # B = 0 at init would hide the English side
        if hasattr(module, "lora_B"):
            for linear in module.lora_B.values():
                torch.nn.init.normal_(linear.weight, std=0.5)
    model.eval()
    with torch.no_grad():
        fused = model(**batch).loss
        plain = model(**{k: v for k, v in batch.items() if not k.startswith("source_")}).loss
    assert torch.isfinite(fused) and not torch.allclose(fused, plain)
