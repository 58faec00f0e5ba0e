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
