"""The adapter settings a study sets are FlareConfig's own declarations (type, range, choices,
default, text), the one checker refuses bad values of them, and the adapter package stays free of
the settings machinery."""

import dataclasses
import subprocess
import sys
import typing

import pytest
import yaml

from flare.adapter.config import FlareConfig
from flare.cli import main
from flare.errors import FlareError
from flare.setting_types import from_dict
from flare.study.settings import STUDY_ADAPTER_FIELDS, AdapterSettings, Study, load_study, study_to_dict


def test_adapter_settings_are_flare_config_fields():
    settings = typing.get_type_hints(AdapterSettings, include_extras=True)
    config = typing.get_type_hints(FlareConfig, include_extras=True)
    assert list(settings) == list(STUDY_ADAPTER_FIELDS)
    assert all(settings[name] == config[name] for name in STUDY_ADAPTER_FIELDS)
    defaults = {f.name: f.default for f in dataclasses.fields(FlareConfig)}
    assert dataclasses.asdict(AdapterSettings()) == {name: defaults[name] for name in STUDY_ADAPTER_FIELDS}
    assert "bottleneck width in which the fusion happens" in AdapterSettings.__doc__
    assert "\n    fusion:" not in AdapterSettings.__doc__  # only the fields a study sets


def test_flare_kwargs_build_the_config():
    settings = AdapterSettings(r=4, target_modules=[], fuse_modules=["query"], decode_fusion="last")
    kwargs = settings.flare_kwargs()
    assert kwargs["target_modules"] is None and kwargs["fuse_modules"] == ["query"]
    config = FlareConfig(**kwargs)
    assert (config.r, config.decode_fusion) == (4, "last")
    config.fuse_modules.append("value")
    assert settings.fuse_modules == ["query"]


@pytest.mark.parametrize("adapter,match", [
    ({"r": 2**40}, r"adapter.r: 1099511627776 is out of range \(must be >= 1 and <= 4096\)"),
    ({"lora_dropout": 1.0}, r"adapter.lora_dropout: 1.0 is out of range \(must be >= 0 and < 1\)"),
    ({"source_position": "output"}, r"adapter.source_position: 'output' is not one of module_input, layer_input"),
    ({"decode_fusion": False}, r"adapter.decode_fusion: False is not one of none, last \(quote"),
    ({"rank": 8}, r"adapter.'rank': unknown setting \(known: cross_attention_heads, decode_fusion, english_gate, "
                  r"fuse_layers, fuse_modules"),
    ({"fuse_layers": [-1]}, r"adapter.fuse_layers\[0\]: -1 is out of range"),
])
def test_one_checker_refuses_bad_adapter_values(adapter, match):
    with pytest.raises(FlareError, match=match) as error:
        from_dict(Study, {"adapter": adapter})
    assert "\n" not in str(error.value)


def test_study_yaml_keys_and_flags_are_unchanged(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    adapter = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": "all-linear",
               "source_position": "layer_input", "decode_fusion": "last", "cross_attention_heads": 2,
               "fuse_modules": ["query", "value"]}
    path.write_text(yaml.safe_dump({"adapter": adapter}))
    # an older study.yaml lacks the settings added since (english_gate, fuse_layers): they read as their defaults
    assert study_to_dict(load_study(path))["adapter"] == {**adapter, "english_gate": False, "fuse_layers": None}
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in STUDY_ADAPTER_FIELDS:
        assert f"--adapter.{name}" in text
    assert "LoRA rank (the bottleneck width in which the fusion happens). Range: >= 1 and <= 4096. (type: int," in text


def test_the_adapter_imports_no_settings_machinery():
    code = ("import sys, flare.adapter.config\n"
            "assert not {'flare.study.settings', 'jsonargparse', 'docstring_parser', 'yaml'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fuse_layers_written_wrong_is_refused_before_any_work():
    with pytest.raises(FlareError, match=r"^adapter.fuse_layers '1-': write layer indices and ranges"):
        Study(adapter=AdapterSettings(fuse_layers="1-")).validate()
