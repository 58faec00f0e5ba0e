"""Every code block of the README and of the guides in docs/ runs here, as written: the Python blocks
are executed with tiny models standing in for the checkpoints they name, the command lines are
parsed by the real CLI (flags, choices and the study they read), the YAML is loaded and validated.
A block without a runner fails `test_every_block_has_a_runner`, so the documents cannot drift again
(in docs/, a fence without a language is a figure, not code). Every relative link of these
documents, BENCHMARKS.md and benchmarks/README.md must lead to a file, and an anchor to a heading."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value

import flare
import tiny_models as tiny
import tiny_tokenizers
from flare.cli import parse_command
from flare.study.settings import load_study

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# the documents whose code blocks run here: the README and every guide in docs/
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*DOCUMENTS, ROOT / "BENCHMARKS.md", ROOT / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SWAHILI = ["chakula kizuri sana", "sipendi mvua hii", "habari za asubuhi", "kitabu hiki ni kibaya", "ndiyo", "hapana"]
ENGLISH = ["very good food", "I do not like this rain", "good morning", "this book is bad", "yes", "no"]
LABELS = [2, 0, 1, 0, 2, 0]


def document_blocks() -> list[tuple[Path, str, str]]:
    """(document, language, text) of every code block that must run: all of the README's, and the
    fences with a language in docs/."""
    found = []
    for document in DOCUMENTS:
        for match in FENCE.finditer(document.read_text(encoding="utf-8")):
            if match.group(1) or document == README:
                found.append((document, match.group(1), match.group(2)))
    return found


def _owner(marker: str) -> tuple[Path, str]:
    found = [(document, text) for document, _, text in document_blocks() if marker in text]
    assert len(found) == 1, f"{len(found)} blocks contain {marker!r}"
    return found[0]


def _block(marker: str) -> str:
    return _owner(marker)[1]


def _command_lines(text: str) -> list[list[str]]:
    """The `flare ...` lines of a shell block, comments dropped, as argument lists."""
    return [shlex.split(line, comments=True)[1:] for line in text.splitlines() if line.startswith("flare ")]


# --- runners, one per block (marker: a text only that block holds) ---------------------------------------


def run_install(text, tmp_path, monkeypatch):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"flare_xlt-{project['version']}-py3-none-any.whl" in text
    extras = project["optional-dependencies"]
    for named in re.findall(r"\[([\w,]+)\]", text):
        assert set(named.split(",")) <= set(extras), named
    document = _owner("pip install ./flare-xlt")[0].read_text(encoding="utf-8")
    extras_table = document.split("| extra | brings | for |", 1)[1].split("\n\n", 1)[0]
    table = set(re.findall(r"^\| `(\w+)` \|", extras_table, re.M))
    assert table == set(extras) - {"test"}, "the README's extras table and pyproject.toml's extras differ"


def run_first_run(text, tmp_path, monkeypatch):
    features = Features({"sw": Value("string"), "en": Value("string"),
                         "label": ClassLabel(names=["negative", "neutral", "positive"])})
    dataset = Dataset.from_dict({"sw": SWAHILI, "en": ENGLISH, "label": LABELS}, features=features)
    tokenizer = tiny_tokenizers.encoder_tokenizer(SWAHILI + ENGLISH)
    scope = {"dataset": dataset, "tokenizer": tokenizer}
    exec(text, scope)
    batch = scope["batch"]
    assert {"input_ids", "attention_mask", "source_input_ids", "source_attention_mask", "labels"} <= set(batch)
    assert batch["labels"].tolist() == LABELS and batch["input_ids"].shape[0] == len(SWAHILI)
    assert not torch.equal(batch["input_ids"][:, :3], batch["source_input_ids"][:, :3])


def run_develop(text, tmp_path, monkeypatch):
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\S+)", text, re.M):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
    assert "make fuzz" in text and "make quickstart" in text


def run_download(text, tmp_path, monkeypatch):
    for argv in _command_lines(text):
        name, values = parse_command([arg.replace("~", str(tmp_path)) for arg in argv])
        assert name == "download" and values["data_dir"].startswith(str(tmp_path))


def run_adapter(text, tmp_path, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda name, **_: tiny.llama())
    monkeypatch.chdir(tmp_path)
    target_ids, target_mask = tiny.batch(2, 6, seed=0, pad_left=2)
    english_ids, english_mask = tiny.batch(2, 7, seed=1, pad_left=1)
    scope = {"target_ids": target_ids, "target_mask": target_mask, "english_ids": english_ids,
             "english_mask": english_mask, "labels": target_ids.masked_fill(target_mask == 0, -100)}
    exec(text, scope)
    assert torch.isfinite(scope["out"].loss) and isinstance(scope["model"], flare.FlareModel)
    assert (tmp_path / "adapter" / "flare_config.json").is_file()


def run_trainer(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer = tiny_tokenizers.encoder_tokenizer(SWAHILI + ENGLISH)
    model = flare.get_flare_model(tiny.xlmr_classifier(), flare.FlareConfig(task_type="SEQ_CLS"))
    scope = {"flare": flare, "model": model, "base_model": tiny.xlmr_classifier(), "tokenizer": tokenizer,
             "swahili_texts": SWAHILI, "english_texts": ENGLISH, "labels": LABELS}
    exec(text, scope)
    evaluation = scope["trainer"].evaluate()
    assert {"eval_loss", "eval_accuracy", "eval_macro_f1"} <= set(evaluation)
    assert isinstance(scope["model"], flare.FlareModel)


def run_trl(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer = tiny_tokenizers.decoder_tokenizer(SWAHILI + ENGLISH)
    tokenizer.pad_token = tokenizer.eos_token  # "its tokenizer with a pad token"
    model = flare.get_flare_model(tiny.llama(vocab_size=len(tokenizer)),
                                  flare.FlareConfig(target_modules="all-linear", task_type="CAUSAL_LM"))
    scope = {"flare": flare, "model": model, "tokenizer": tokenizer, "Dataset": Dataset,
             "swahili_texts": SWAHILI, "english_texts": ENGLISH}
    exec(text, scope)
    assert scope["trainer"].state.global_step > 0


def run_hub(text, tmp_path, monkeypatch):
    """push_to_hub uploads into a stand-in Hub that is this test's cache; loading reads it offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        import shutil

        repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder_path, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **_: huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = flare.get_flare_model(tiny.llama(), flare.FlareConfig(target_modules="all-linear", task_type="CAUSAL_LM"))
    scope = {"flare": flare, "model": model, "base_model": tiny.llama()}
    exec(text, scope)
    card = (tmp_path / "hub" / "models--you--flare-llama-swahili" / "snapshots" / commit / "README.md").read_text()
    assert "| accuracy | 71.2 |" in card and isinstance(scope["model"], flare.FlareModel)


def run_command_line(text, tmp_path, monkeypatch, commands=("compare", "train", "evaluate", "translate", "predict",
                                                             "report")):
    """Each line parses with the real CLI against the study YAML of docs/cli.md, and the run folders
    the lines name sit in that study's output_dir."""
    study_text = _block("methods: [zero-shot, translate-test")
    (tmp_path / "study.yaml").write_text(study_text)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    output_dir = load_study(tmp_path / "study.yaml").output_dir
    lines = _command_lines(text)
    assert {argv[0] for argv in lines} >= set(commands)
    for argv in lines:
        name, _ = parse_command(argv)
        assert name == argv[0]
        for path in re.findall(r"\bruns/\S+", " ".join(argv)):
            assert path.startswith(output_dir + "/"), f"{path} is not in the YAML's output_dir {output_dir}"


def run_five_commands(text, tmp_path, monkeypatch):
    run_command_line(text, tmp_path, monkeypatch, commands=("compare", "train", "evaluate", "predict", "report"))
    assert len(_command_lines(text)) == 5


def run_study_yaml(text, tmp_path, monkeypatch):
    (tmp_path / "study.yaml").write_text(text)
    study = load_study(tmp_path / "study.yaml").validate()
    assert study.languages and study.methods


def run_joint_yaml(text, tmp_path, monkeypatch):
    from flare.files import load_yaml
    from flare.study.runs import plan
    from flare.study.settings import Study, from_dict

    study = from_dict(Study, {"task": "nusax", **load_yaml(text, "README")}).validate()
    scopes = [run.scope for run in plan(study)]
    assert scopes.count("joint") == 6 and scopes.count("held-out") == 2  # 3 languages x 2 methods; ace left out


def run_joint_commands(text, tmp_path, monkeypatch):
    run_command_line(text, tmp_path, monkeypatch, commands=("predict", "evaluate"))


def run_trainer_fsdp2(text, tmp_path, monkeypatch):
    """The arguments run as written and make accelerate's FSDP2 plugin; the Trainer lines after them
    need GPUs (accelerate prepares FSDP only there), so they are held to the text docs/library.md shows."""
    from transformers import TrainingArguments

    arguments, rest = text.split("trainer = Trainer(", 1)
    scope = {"TrainingArguments": TrainingArguments}
    monkeypatch.chdir(tmp_path)
    exec(arguments, scope)
    assert scope["args"].fsdp_plugin_args["fsdp_version"] == 2
    assert rest.startswith("model=model, args=args") and "trainer.save_model(" in rest


def run_accelerate_launch(text, tmp_path, monkeypatch):
    import yaml

    from flare.study.sharding import requested_sharding

    (line,) = [line for line in text.splitlines() if line.startswith("accelerate launch")]
    argv = shlex.split(line)
    config = yaml.safe_load((ROOT / argv[argv.index("--config_file") + 1]).read_text())
    assert config["fsdp_config"]["fsdp_version"] == 2 and requested_sharding({}) is None
    run_command_line("flare " + " ".join(argv[argv.index("flare.cli") + 1:]), tmp_path, monkeypatch, ("compare",))


def _llama_flare_scope():
    model = flare.get_flare_model(tiny.llama(), flare.FlareConfig(target_modules="all-linear", task_type="CAUSAL_LM"))
    tiny.randomize_lora_B(model)
    target_ids, target_mask = tiny.batch(2, 6, seed=0, pad_left=2)
    english_ids, english_mask = tiny.batch(2, 7, seed=1, pad_left=1)
    return {"flare": flare, "model": model, "target_ids": target_ids, "target_mask": target_mask,
            "english_ids": english_ids, "english_mask": english_mask,
            "labels": target_ids.masked_fill(target_mask == 0, -100)}


def run_english_states(text, tmp_path, monkeypatch):
    scope = _llama_flare_scope()
    exec(text, scope)
    again = scope["model"](input_ids=scope["target_ids"], attention_mask=scope["target_mask"], labels=scope["labels"],
                           source_input_ids=scope["english_ids"], source_attention_mask=scope["english_mask"])
    assert torch.equal(scope["out"].loss, again.loss)  # "the same, bit for bit, ... on the same batch"


def run_english_state_cache(text, tmp_path, monkeypatch):
    from transformers import Trainer, TrainingArguments

    scope = _llama_flare_scope()
    ids, mask = tiny.batch(8, 6, seed=0, pad_right=2)
    source_ids, source_mask = tiny.batch(8, 7, seed=1, pad_left=1)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                              "labels": ids.masked_fill(mask == 0, -100).tolist(),
                              "source_input_ids": source_ids.tolist(), "source_attention_mask": source_mask.tolist()})
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=8, max_steps=2, report_to=[], use_cpu=True,
                             save_strategy="no")
    scope["trainer"] = Trainer(model=scope["model"], args=args, train_dataset=data)
    exec(text, scope)
    assert scope["trainer"].state.global_step == 2 and scope["model"].english_state_cache is not None


def run_analyze_commands(text, tmp_path, monkeypatch):
    run_command_line(text, tmp_path, monkeypatch, commands=("analyze",))


def run_lm_eval_export(text, tmp_path, monkeypatch):
    from flare.data.locations import expected_data_dir

    folder = expected_data_dir()
    if folder is None or not folder.is_dir():
        pytest.skip(f"the export reads NusaX: datasets not found at {folder}")
    monkeypatch.setenv("FLARE_DATA_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    exec(text, {})
    assert len((tmp_path / "nusax_test.jsonl").read_text(encoding="utf-8").splitlines()) == 400


def run_lm_eval_command(text, tmp_path, monkeypatch):
    """Run as written, on a tiny model, by tests/integrations/test_lm_eval_recipe.py, which needs the
    lmeval extra (`make test-lmeval`); here: that test reads this very block."""
    recipe = (ROOT / "tests" / "integrations" / "test_lm_eval_recipe.py").read_text()
    assert 'split("## lm-evaluation-harness", 1)' in recipe and "```bash" in recipe
    document = _owner("python -m flare.integrations.lm_eval --model flare")[0]
    assert document == ROOT / "docs" / "studies.md"  # where test_lm_eval_recipe.py reads it
    assert "## lm-evaluation-harness" in document.read_text(encoding="utf-8").split(text, 1)[0]
    pytest.importorskip("lm_eval", reason="the lmeval extra is not installed (make test-lmeval runs this block)")


RUNNERS: dict[str, Callable] = {
    "pip install ./flare-xlt": run_install,
    "flare.task_from_dict": run_first_run,
    "make quickstart   #": run_develop,
    "flare download --data_dir": run_download,
    'AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.1-8B")': run_adapter,
    "compute_metrics=flare.classification_metrics": run_trainer,
    "SFTTrainer(": run_trl,
    'model.push_to_hub("you/flare-llama-swahili"': run_hub,
    "flare compare study.yaml --stage2.learning_rate": run_command_line,
    "flare report runs/study/results.jsonl      # the tables again": run_five_commands,
    "methods: [zero-shot, translate-test": run_study_yaml,
    "held_out: [ace]": run_joint_yaml,
    "--joint_adapter true --text rows.jsonl": run_joint_commands,
    'fsdp_config={"version": 2': run_trainer_fsdp2,
    "accelerate launch --config_file examples/accelerate/fsdp2.yaml": run_accelerate_launch,
    "states = model.english_states(english_ids, english_mask)": run_english_states,
    "model.english_state_cache = flare.EnglishStateCache(": run_english_state_cache,
    "flare analyze study.yaml --languages [jav,sun] --models [base]": run_analyze_commands,
    'pairs = get_task("nusax").load_pairs("test", "jav"': run_lm_eval_export,
    "python -m flare.integrations.lm_eval --model flare": run_lm_eval_command,
}


def test_every_block_has_a_runner():
    for document, language, text in document_blocks():
        owners = [marker for marker in RUNNERS if marker in text]
        name = document.relative_to(ROOT)
        assert len(owners) == 1, f"{name}: {language} block starting {text[:60]!r} has runners {owners}"


@pytest.mark.parametrize("marker", list(RUNNERS))
def test_block_runs_as_written(marker, tmp_path, monkeypatch):
    torch.manual_seed(0)
    RUNNERS[marker](_block(marker), tmp_path, monkeypatch)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    return {_anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def _links(document: Path) -> list[str]:
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans hold brackets that are not links
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_every_relative_link_resolves():
    broken = []
    for document in LINKED:
        for link in _links(document):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto: ... lead outside the repository
            path, _, anchor = link.partition("#")
            target = (document.parent / path).resolve() if path else document
            if not target.exists():
                broken.append(f"{document.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{document.relative_to(ROOT)}: {link} (no such heading)")
    assert broken == []


def test_the_anchor_rule():
    assert _anchor("Where FLARE's gain comes from (issue 18): five languages, 3 seeds") == (
        "where-flares-gain-comes-from-issue-18-five-languages-3-seeds")
    assert _anchor("The quick start (`make quickstart`)") == "the-quick-start-make-quickstart"
