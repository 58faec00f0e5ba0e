"""What the fuzz targets found, one regression test each (docs/reliability.md lists them)."""

from __future__ import annotations

import pytest

from flare.cli import main
from flare.errors import FlareError
from flare.files import load_yaml
from flare.study.settings import load_study


@pytest.mark.parametrize("text,line,code", [
    ('task: nusax\nmodel: "a\x00b"\n', 2, "0000"),
    ("task: nusax\nlanguages: [jav\x1f]\n", 2, "001F"),
    (":\x07", 1, "0007"),
])
def test_a_control_character_in_yaml_is_one_line_not_an_internal_error(text, line, code, tmp_path):
    """PyYAML's reader refuses control characters while the loader is built, which happened outside
    load_yaml's handling: 'internal error: ReaderError', exit 1."""
    with pytest.raises(FlareError, match=rf"s.yaml: line {line} holds the control character U\+{code}"):
        load_yaml(text, "s.yaml")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(FlareError, match="holds the control character"):
        load_study(path)


def test_a_control_character_in_a_flag_value_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    """Found by the CLI flag target: `--time_budget_minutes ':\\x1f'` (every value goes through the YAML loader)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("task: nusax\noutput_dir: out\n")
    assert main(["compare", "s.yaml", "--time_budget_minutes", ":\x1f"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "control character U+001F" in err and "internal error" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("fields,match", [
    ({"r": ""}, r"r: '' is not a valid int"),
    ({"r": True}, r"r: True is not a valid int"),
    ({"lora_dropout": float("nan")}, r"lora_dropout: nan is not a finite number"),
    ({"target_modules": 5}, r"target_modules: 5 is not a valid"),
    ({"english_gate": "yes"}, r"english_gate: 'yes' is not a valid bool"),
    ({"cross_attention_dropout": 3}, r"cross_attention_dropout must be in \[0, 1\), got 3.0"),
])
def test_flare_config_fields_of_the_wrong_type_are_one_line_errors(fields, match):
    """Found by the FlareConfig target: FlareConfig(r='') was a raw TypeError ('<' between str and
    int), cross_attention_dropout=3 a raw ValueError from torch when the model was built."""
    from flare import FlareConfig

    with pytest.raises(FlareError, match=match):
        FlareConfig(**fields)
    assert FlareConfig(fuse_modules="q_proj").fuse_modules == ["q_proj"]  # one name still means a list
    assert FlareConfig(lora_dropout=0).lora_dropout == 0.0


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_source_ids_of_any_integer_dtype_fuse_as_long_ones(dtype):
    """Found by the forward-argument target: int8 ids were a raw RuntimeError from the embedding."""
    import torch

    import tiny_models as tiny
    from flare import FlareConfig, get_flare_model

    model = get_flare_model(tiny.llama(), FlareConfig())
    tiny.randomize_lora_B(model)
    ids, mask = tiny.batch(2, 5, seed=0)
    with torch.no_grad():
        expected = model(ids, mask, source_input_ids=ids, source_attention_mask=mask).logits
        got = model(ids, mask, source_input_ids=ids.to(getattr(torch, dtype)), source_attention_mask=mask).logits
    assert torch.equal(got, expected)


@pytest.mark.parametrize("field,value", [("run_id", ["a"]), ("language", {"x": 1}), ("label", None), ("task", "")])
def test_a_results_record_whose_keys_are_not_strings_is_one_line(field, value, tmp_path, capsys):
    """Found by the results target: a run_id or language given as a list or mapping was 'internal
    error: TypeError: unhashable type', exit 1."""
    import json

    record = {"run_id": "nusax/flare/jav/seed1", "task": "nusax", "method": "flare", "label": "FLARE",
              "language": "jav", "seed": 1, "metric": "macro_f1", "score": 50.0, field: value}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert main(["report", str(path), "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{field} must be a non-empty string" in err
    assert not (tmp_path / "out").exists()


def test_a_task_type_peft_does_not_know_is_one_line():
    """Found by the FlareConfig target: task_type='' was PEFT's raw ValueError."""
    import tiny_models as tiny
    from flare import FlareConfig, get_flare_model

    with pytest.raises(FlareError, match=r"PEFT refuses these LoRA settings: Invalid task type: ''"):
        get_flare_model(tiny.llama(), FlareConfig(task_type=""))


def test_empty_source_states_are_one_line():
    """Found by the forward-argument target: states of length 0 were a raw IndexError from amin()."""
    import torch

    import tiny_models as tiny
    from flare import FlareConfig, get_flare_model

    model = get_flare_model(tiny.llama(), FlareConfig(source_dim=8))
    ids, mask = tiny.batch(2, 5, seed=0)
    with pytest.raises(FlareError, match=r"source_states is empty \(length 0\)"):
        model(ids, mask, source_states=torch.randn(2, 0, 8), source_attention_mask=torch.ones(2, 0))


def test_a_task_label_map_that_is_not_a_mapping_is_one_line(tmp_path):
    """Found by the task-file target: label_map given as a list was a raw AttributeError."""
    import yaml

    from flare.data.tasks import get_task

    spec = {"name": "toy", "type": "classification", "languages": ["en", "de"], "labels": ["negative", "positive"],
            "files": "{language}/{split}.csv", "splits": ["test"], "label_map": [{}, 3]}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(FlareError, match=r"'label_map' must map raw label values to labels, got list"):
        get_task(str(tmp_path / "task.yaml"))


def test_a_task_type_the_model_does_not_fit_is_one_line():
    """Found by the FlareConfig target: task_type='CAUSAL_LM' on a sequence classifier was PEFT's raw
    AttributeError (no prepare_inputs_for_generation)."""
    import tiny_models as tiny
    from flare import FlareConfig, get_flare_model

    with pytest.raises(FlareError, match=r"PEFT cannot wrap XLMRobertaForSequenceClassification as task_type "
                                         r"'CAUSAL_LM'"):
        get_flare_model(tiny.xlmr_classifier(), FlareConfig(task_type="CAUSAL_LM"))


@pytest.mark.parametrize("change,match", [
    ({"splits": {"de": 5}}, r"'splits\['de'\]' must be a non-empty list of strings"),
    ({"splits": {"\n": None}}, r"'splits\['\\n'\]' must be a non-empty list of strings"),
    ({"files": "{lang}/{split}.csv"}, r"the 'files' pattern '\{lang\}/\{split\}.csv' may use only"),
    ({"files": "{0}.csv"}, r"may use only \{language\} and \{split\}"),
])
def test_task_file_splits_and_patterns_of_the_wrong_shape_are_one_line(change, match, tmp_path):
    """Found by the task-file target: splits {de: 5} was a raw TypeError ('int' object is not iterable)."""
    import yaml

    from flare.data.tasks import get_task

    spec = {"name": "toy", "type": "classification", "languages": ["en", "de"], "labels": ["negative", "positive"],
            "files": "{language}/{split}.csv", "splits": ["test"], **change}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(FlareError, match=match) as error:
        get_task(str(tmp_path / "task.yaml"))
    assert "\n" not in str(error.value)  # the 10,000-case run: a split key "\n" broke the line


@pytest.mark.parametrize("fields,match", [
    ({"target_modules": "["}, r"PEFT cannot apply these LoRA settings to LlamaForCausalLM: unterminated character set"),
    ({"modules_to_save": ["["]}, r"PEFT cannot apply these LoRA settings to LlamaForCausalLM: unterminated"),
    ({"modules_to_save": [""]}, r"PEFT cannot apply these LoRA settings .*modules_to_save cannot be applied"),
])
def test_lora_settings_peft_cannot_apply_are_one_line(fields, match):
    """Found by the FlareConfig target: a target_modules regex that does not compile was a raw re.error,
    modules_to_save matching a ModuleList a raw TypeError."""
    import tiny_models as tiny
    from flare import FlareConfig, get_flare_model

    with pytest.raises(FlareError, match=match):
        get_flare_model(tiny.llama(), FlareConfig(**fields))


def test_a_csv_header_holding_a_nul_is_one_line(tmp_path):
    """Found by the task-file target (10,000-case run): a header column named like the reader's own
    key for overflowing values ("\\0extra") made a short row a raw TypeError."""
    from flare.data.examples import read_records

    path = tmp_path / "test.csv"
    path.write_text("id,label,text,\x00extra\n1,positive,good\n")
    with pytest.raises(FlareError, match=r"test\.csv: the header holds a NUL character"):
        read_records(path)
