"""Input formats for encoders, decoders and mT5, built on tiny offline tokenizers."""

import pytest
import torch

from flare.data.examples import Example, LoadStats, Pair
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.hf.formats import (
    FormatSettings,
    PairFormatter,
    candidate_log_likelihood,
    parse_answer,
    render_prompt,
)
from flare.hf.qa import best_span, decode_answers
from tiny_tokenizers import decoder_tokenizer, encoder_tokenizer, seq2seq_tokenizer


def ex(ex_id, lang, label=None, answers=None, **fields) -> Example:
    return Example(ex_id, lang, fields, label, answers)


XNLI_PAIRS = [
    Pair(
        ex("0", "en", 0, premise="the cat sat on the mat", hypothesis="a cat sat"),
        ex("0", "de", 0, premise="die katze sass auf der matte", hypothesis="eine katze sass"),
        "gold",
    ),
    Pair(
        ex("1", "en", 2, premise="it rains", hypothesis="it is dry"),
        ex("1", "de", 2, premise="es regnet", hypothesis="es ist trocken heute"),
        "gold",
    ),
]
XNLI_TEXTS = [t for p in XNLI_PAIRS for side in (p.source, p.target) for t in side.fields.values()]
TEMPLATE_WORDS = [
    "Premise: Hypothesis: Label: entailment neutral contradiction Context: Question: Answer: "
    "premise: hypothesis: label: question: context:"
]


def test_encoder_classification_flare_batch():
    tok = encoder_tokenizer(XNLI_TEXTS)
    batch = PairFormatter(get_task("xnli"), tok, "encoder")(XNLI_PAIRS)
    assert set(batch) == {"input_ids", "attention_mask", "source_input_ids", "source_attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["source_input_ids"].shape
    assert batch["labels"].tolist() == [0, 2]
    assert (
        (batch["input_ids"][:, 0] == tok.cls_token_id).all()
        and (batch["source_input_ids"][:, 0] == tok.cls_token_id).all()
    )
    target0 = tok("die katze sass auf der matte", "eine katze sass")["input_ids"]
    assert batch["input_ids"][0, : len(target0)].tolist() == target0
    # right padding
    assert batch["input_ids"].shape == (2, 12) and batch["attention_mask"][1].tolist() == [1] * 9 + [0] * 3
    assert batch["source_attention_mask"][1].sum() == 8 and batch["source_input_ids"][1, -1] == tok.pad_token_id


@pytest.mark.parametrize("side", ["right", "left"])
def test_encoder_truncation_is_identical_on_both_sides(side):
    long_en = ex("0", "en", 1, premise="one two three four five six seven", hypothesis="eight nine ten eleven")
    long_de = ex("0", "de", 1, premise="eins zwei drei vier fuenf sechs sieben", hypothesis="acht neun zehn elf")
    tok = encoder_tokenizer(list(long_en.fields.values()) + list(long_de.fields.values()))
    stats = LoadStats()
    formatter = PairFormatter(
        get_task("xnli"), tok, "encoder", settings=FormatSettings(max_length=8, truncation_side=side)
    )
    batch = formatter.collate(formatter.features([Pair(long_en, long_de, "gold")], stats=stats))
    assert batch["input_ids"].shape == (1, 8) and batch["source_input_ids"].shape == (1, 8) and stats.truncated == 1
    words = tok.convert_ids_to_tokens(batch["source_input_ids"][0].tolist())
    assert ("one" in words) == (side == "right") and ("seven" in words) == (side == "left")  # the long premise is cut
    target = tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert ("eins" in target) == (side == "right") and ("sieben" in target) == (side == "left")
    assert tok.truncation_side == "right"  # the caller's tokenizer is left as it was


def test_encoder_input_fusion_is_english_then_target():
    tok = encoder_tokenizer(XNLI_TEXTS)
    batch = PairFormatter(get_task("xnli"), tok, "encoder", view="input_fusion")(XNLI_PAIRS[:1])
    en = tok("the cat sat on the mat", "a cat sat")["input_ids"]
    de = tok("die katze sass auf der matte", "eine katze sass")["input_ids"]
    assert batch["input_ids"][0].tolist() == en + de[1:] and "source_input_ids" not in batch
    single = PairFormatter(get_task("xnli"), tok, "encoder", view="source")(XNLI_PAIRS[:1])
    assert single["input_ids"][0].tolist() == en


CONTEXT = "The river Nile flows north through Egypt into the Mediterranean Sea near Alexandria city"
QA_TARGET = ex(
    "q1", "sw", None, {"text": ["Mediterranean Sea"], "answer_start": [CONTEXT.index("Mediterranean")]},
    question="Where does the Nile flow?", context=CONTEXT,
)
QA_SOURCE = ex(
    "q1", "en", None, {"text": ["Egypt"], "answer_start": [CONTEXT.index("Egypt")]},
    question="Which country?", context=CONTEXT,
)


def qa_setup(view="flare", max_length=16, stride=4):
    tok = encoder_tokenizer([CONTEXT, QA_TARGET.fields["question"], QA_SOURCE.fields["question"]])
    return tok, PairFormatter(
        get_task("tydiqa"), tok, "encoder", view, FormatSettings(max_length=max_length, doc_stride=stride)
    )


def test_encoder_qa_windows_and_labels():
    tok, formatter = qa_setup()
    stats = LoadStats()
    features = formatter.features([Pair(QA_SOURCE, QA_TARGET, "machine")], stats=stats)
    assert len(features) > 1 and stats.total_skipped == 0
    answered = [f for f in features if f["start_positions"] != 0]
    assert answered and len(answered) < len(features)  # other windows point at CLS (position 0)
    for f in answered:
        assert f["end_positions"] >= f["start_positions"]
        tokens = tok.convert_ids_to_tokens(f["input_ids"][f["start_positions"] : f["end_positions"] + 1])
        assert tokens == ["mediterranean", "sea"]
    for f in features:
        assert len(f["source_input_ids"]) <= 16 and len(f["input_ids"]) <= 16
    batch = formatter.collate(features)
    assert (
        batch["input_ids"].shape == batch["source_input_ids"].shape
        and batch["start_positions"].shape == (len(features),)
    )


def test_encoder_qa_decoding_recovers_the_answer_and_respects_constraints():
    _, formatter = qa_setup()
    features = formatter.features([Pair(QA_SOURCE, QA_TARGET, "machine")])
    gold = formatter.features([Pair(QA_SOURCE, QA_TARGET, "machine")], train=True)
    starts, ends = [], []
    for f, g in zip(features, gold):
        s, e = [0.0] * len(f["input_ids"]), [0.0] * len(f["input_ids"])
        if g["start_positions"] != 0:
            s[g["start_positions"]], e[g["end_positions"]] = 5.0, 5.0
        starts.append(s)
        ends.append(e)
    assert decode_answers(features, starts, ends, {"q1": CONTEXT}) == {"q1": "Mediterranean Sea"}
    offsets = [None, None, (0, 3), (4, 9), (10, 14), (15, 20)]
    # the best end lies before the best start: the decoder must pick a valid span instead
    score, span = best_span([0, 0, 0, 1, 9, 0], [0, 0, 0, 8, 0, 1], offsets)
    assert span == (10, 20) and score == 10
    assert best_span([0, 0, 9, 0, 0, 0], [0, 0, 0, 0, 0, 9], offsets, max_answer_length=2)[1] != (0, 20)
    assert best_span([9, 9, 0, 0, 0, 0], [9, 9, 0, 0, 0, 0], [None] * 6)[1] is None
    assert decode_answers([], [], [], {"q2": "x"}) == {"q2": ""}


def test_encoder_qa_input_fusion_shifts_positions():
    tok, formatter = qa_setup("input_fusion", max_length=24, stride=4)
    features = formatter.features([Pair(QA_SOURCE, QA_TARGET, "machine")])
    answered = [f for f in features if f["start_positions"] != 0]
    assert answered and all(len(f["input_ids"]) <= 48 for f in features)
    f = answered[0]
    assert tok.convert_ids_to_tokens(f["input_ids"][f["start_positions"] : f["end_positions"] + 1]) == [
        "mediterranean", "sea",
    ]
    start, end = f["offset_mapping"][f["start_positions"]][0], f["offset_mapping"][f["end_positions"]][1]
    assert CONTEXT[start:end] == "Mediterranean Sea"
    assert f["input_ids"].count(tok.cls_token_id) == 1  # the target's CLS is dropped


def test_encoder_qa_answer_outside_every_window_is_counted():
    tok, _ = qa_setup()
    long_answer = ex("q9", "sw", None, {"text": [CONTEXT], "answer_start": [0]}, question="What?", context=CONTEXT)
    stats = LoadStats()
    formatter = PairFormatter(get_task("tydiqa"), tok, "encoder", "target", FormatSettings(max_length=16, doc_stride=2))
    features = formatter.features([long_answer], stats=stats)
    assert all(f["start_positions"] == 0 == f["end_positions"] for f in features)
    assert stats.skipped == {"answer_outside_windows": 1}


DEC_WORDS = XNLI_TEXTS + TEMPLATE_WORDS


def test_decoder_training_batch_aligns_prompt_ends():
    tok = decoder_tokenizer(DEC_WORDS)
    task = get_task("xnli")
    batch = PairFormatter(task, tok, "decoder")(XNLI_PAIRS)
    ids, src, labels = batch["input_ids"], batch["source_input_ids"], batch["labels"]
    assert ids.shape == src.shape == labels.shape and tok.pad_token_id is None
    answer0 = tok(" entailment", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ids[0, -2:].tolist() == answer0 and labels[0, -2:].tolist() == answer0
    assert (labels[0, :-2] == -100).all()
    prompt_de = tok(render_prompt(task, "decoder", [XNLI_PAIRS[0].target]))["input_ids"]
    prompt_en = tok(render_prompt(task, "decoder", [XNLI_PAIRS[0].source]))["input_ids"]
    assert ids[0, -2 - len(prompt_de) : -2].tolist() == prompt_de  # left padded, prompt then answer
    assert src[0, -2 - len(prompt_en) : -2].tolist() == prompt_en  # source prompt ends where the target prompt ends
    assert batch["source_attention_mask"][0, -2:].tolist() == [0, 0]
    assert batch["attention_mask"][1, 0] == 0 or batch["attention_mask"][0, 0] == 0  # left padding somewhere
    assert render_prompt(task, "decoder", [XNLI_PAIRS[0].target]).endswith("\nLabel:")


def test_decoder_truncation_keeps_bos_and_cue():
    task = get_task("nusax")
    words = [f"w{i}" for i in range(40)]
    pair = Pair(ex("1", "eng", 2, text=" ".join(words)), ex("1", "jav", 2, text=" ".join(reversed(words))), "gold")
    tok = decoder_tokenizer([*words, "Sentiment: negative neutral positive"], eos_after_prompt=True)
    stats = LoadStats()
    formatter = PairFormatter(task, tok, "decoder", settings=FormatSettings(max_length=12))
    features = formatter.features([pair], train=False, stats=stats)
    f = features[0]
    # answer budget = word + EOS
    assert len(f["input_ids"]) == len(f["source_input_ids"]) == 12 - 2 and stats.truncated == 2
    for ids in (f["input_ids"], f["source_input_ids"]):
        tokens = tok.convert_ids_to_tokens(ids)
        # Gemma-style EOS removed
        assert tokens[0] == "<s>" and tokens[-2:] == ["Sentiment", ":"] and "</s>" not in tokens
    with pytest.raises(FlareError, match="left"):
        PairFormatter(task, tok, "decoder", settings=FormatSettings(truncation_side="right"))


def test_label_candidates_and_scoring():
    tok = decoder_tokenizer(DEC_WORDS)
    formatter = PairFormatter(get_task("xnli"), tok, "decoder")
    batch = formatter.label_candidates(XNLI_PAIRS)
    assert batch["input_ids"].shape[0] == 6 and batch["source_input_ids"].shape == batch["input_ids"].shape
    words = tok.convert_ids_to_tokens(batch["labels"][4][batch["labels"][4] != -100].tolist())
    assert words == ["neutral", "</s>"]  # row i*K+k = item 1, label 1
    torch.manual_seed(0)
    logits = torch.randn(6, batch["input_ids"].shape[1], len(tok))
    scores = candidate_log_likelihood(logits, batch["labels"], num_labels=3)
    expected = torch.zeros(6)
    for row in range(6):
        for t in range(1, batch["labels"].shape[1]):
            if batch["labels"][row, t] != -100:
                expected[row] += torch.log_softmax(logits[row, t - 1], -1)[batch["labels"][row, t]]
    assert scores.shape == (2, 3) and torch.allclose(scores.flatten(), expected, atol=1e-5)
    word = tok.convert_tokens_to_ids("contradiction")
    position = (batch["labels"][5] == word).nonzero().item()
    logits[5, position - 1, word] += 50  # make item 1 say "contradiction"
    assert candidate_log_likelihood(logits, batch["labels"], 3).argmax(-1)[1] == 2


def test_seq2seq_batch():
    tok = seq2seq_tokenizer(DEC_WORDS)
    task = get_task("xnli")
    batch = PairFormatter(task, tok, "encoder-decoder")(XNLI_PAIRS)
    assert batch["input_ids"].shape == batch["source_input_ids"].shape
    assert batch["labels"].tolist() == [
        [tok.convert_tokens_to_ids("entailment"), tok.eos_token_id],
        [tok.convert_tokens_to_ids("contradiction"), tok.eos_token_id],
    ]
    first = tok(render_prompt(task, "encoder-decoder", [XNLI_PAIRS[0].target]))["input_ids"]
    assert batch["input_ids"][0, : len(first)].tolist() == first and first[-1] == tok.eos_token_id
    assert render_prompt(task, "encoder-decoder", [XNLI_PAIRS[0].target]).startswith("premise: die katze")
    scores = candidate_log_likelihood(
        torch.zeros(6, 2, len(tok)),
        PairFormatter(task, tok, "encoder-decoder").label_candidates(XNLI_PAIRS)["labels"],
        3,
        shift=False,
    )
    assert scores.shape == (2, 3)
    fused = render_prompt(get_task("tydiqa"), "decoder", [QA_SOURCE, QA_TARGET])
    assert (
        fused.startswith("Context: The river")
        and "Which country?\n\nContext: The river" in fused
        and fused.endswith("Where does the Nile flow?\nAnswer:")
    )


def test_generative_qa_answer_is_first_gold():
    tok = decoder_tokenizer([CONTEXT, "Where does the Nile flow? Which country?", *TEMPLATE_WORDS])
    batch = PairFormatter(
        get_task("tydiqa"), tok, "decoder", "target", FormatSettings(max_length=64, max_answer_tokens=4)
    )([QA_TARGET])
    answer = tok.convert_ids_to_tokens(batch["labels"][0][batch["labels"][0] != -100].tolist())
    assert answer == ["Mediterranean", "Sea", "</s>"]


def test_pad_to_max_length_and_view_errors():
    tok = encoder_tokenizer(XNLI_TEXTS)
    batch = PairFormatter(
        get_task("xnli"), tok, "encoder", settings=FormatSettings(pad_to_max_length=True, max_length=20)
    )(XNLI_PAIRS)
    assert batch["input_ids"].shape == (2, 20)
    with pytest.raises(FlareError, match="needs Pairs"):
        PairFormatter(get_task("xnli"), tok, "encoder")([XNLI_PAIRS[0].target])
    assert PairFormatter(get_task("xnli"), tok, "encoder", "target")([XNLI_PAIRS[0].target])["labels"].tolist() == [0]


def test_answer_parser():
    assert parse_answer("  Cairo\nQuestion: next") == "Cairo"



def test_real_nusax_pairs_format(data_dir):
    task = get_task("nusax")
    pairs = task.load_pairs("valid", "ind", data_dir)[:16]
    tok = encoder_tokenizer(ex.fields["text"] for p in pairs for ex in (p.source, p.target))
    batch = PairFormatter(task, tok, "encoder", settings=FormatSettings(max_length=64))(pairs)
    assert batch["input_ids"].shape == batch["source_input_ids"].shape and batch["input_ids"].shape[1] <= 64
    assert batch["labels"].tolist() == [p.target.label for p in pairs]
