"""The `flare` command. Each subcommand is a typed function below: its signature is the CLI and its
docstring is the help. Study settings (flare/study/settings.py) come from a YAML file given first,
overridable field by field (`flare compare study.yaml --stage2.learning_rate 1e-4`).

Errors a user can fix print one line on stderr and exit with status 2; set FLARE_DEBUG=1 (or
pass --debug) for the traceback. Ctrl-C exits with status 130 after saying how to continue: work
is saved at every epoch (training), batch (translation) and finished run.

The modules that load torch and transformers (the pipeline, translation, prediction, devices) are
imported inside the commands that need them, on purpose: `flare --help`, a one-line error and
`flare report` then answer without them (seconds; tests/cli/test_cli_help.py checks it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Literal

import docstring_parser
from jsonargparse import ActionConfigFile, ArgumentParser, set_loader

from flare.data.download import TASKS
from flare.data.download import download as fetch
from flare.data.tasks import get_task
from flare.errors import FlareError
from flare.files import load_yaml, read_text
from flare.mt.english_side import ENGLISH_SIDES
from flare.mt.languages import same_language
from flare.study.methods import FUSED, METHODS, TRAINED, UNTRAINED
from flare.study.report import report as write_report
from flare.study.runs import Run
from flare.study.settings import RUN_LISTS, Study, check_setting, declared_ranges, from_dict, read_study_yaml


def compare(study, time_budget_minutes: float = 0.0) -> Path:
    """Run (or continue) a study: stage 1 once, then methods x target languages x seeds; writes
    results.jsonl, results.csv, results.md and results.png to the output directory.

    Args:
        time_budget_minutes: start no new run after this long (0: no limit); rerun to continue.
    """
    from flare.study.pipeline import compare as run_compare

    return run_compare(study, time_budget_minutes)


def train(study, method: str, language: str, seed: int = 1, fusion: str = "add_relu", train_english: str = "gold",
          test_english: str = "gold") -> dict:
    """Train and evaluate one run of a study (stage 1 is trained first if missing).

    Args:
        method: translate-train, translate-train+english, x-mixup, input-fusion, flare, flare-mt or
            mid-align (zero-shot and translate-test train nothing: see `flare evaluate`).
        language: the target language of the run.
        seed: the stage-2 seed.
        fusion: the fusion function of flare and flare-mt.
        train_english: the English side the run trains with, for the methods that read one: gold, a
            control (shuffled, self), noise10/30/50, lexicon (word-by-word MT) or a mix (mix-lexicon).
        test_english: the English side the run is scored with (the same choices).
    """
    from flare.study.pipeline import Pipeline

    if method not in METHODS:
        raise FlareError(f"train: unknown method {method!r}; choose from {', '.join(METHODS)}")
    for name, side in (("train_english", train_english), ("test_english", test_english)):
        if side not in ENGLISH_SIDES:
            raise FlareError(f"train: {name} {side!r} is not one of {', '.join(ENGLISH_SIDES)}")
    chosen = METHODS[method]
    train_side = train_english if chosen.english_in_training else None
    test_side = test_english if chosen.english_at_test else None
    for values, value in (
        (study.methods, method), (study.languages, language), (study.fusions, fusion if chosen.fused else None),
        (study.data.train_english, train_side), (study.data.test_english, test_side),
    ):
        if value is not None and value not in values:
            values.append(value)
    pipeline = Pipeline(study)  # validates the study with this run's method, language, fusion and sides
    return pipeline.single(Run(method, fusion if chosen.fused else None, language, seed, train_side, test_side))


def evaluate(study, language: str, method: str = "zero-shot", adapter_dir: str | None = None,
             test: str | None = None) -> dict:
    """Score a language's test set with the stage-1 English task model (zero-shot or
    translate-test) or, with --adapter_dir, with a saved adapter of a trained method (e.g. a Javanese
    FLARE adapter on Sundanese); with --test, score your own labelled file instead. Prints the
    result and records nothing.

    Args:
        language: target language whose test split is scored.
        method: zero-shot or translate-test; with --adapter_dir, the method the adapter was trained with
            (translate-train, x-mixup, input-fusion, flare, flare-mt or mid-align).
        adapter_dir: a saved adapter folder (e.g. runs/flare-add_relu/jav/seed1/adapter).
        test: a labelled CSV, TSV or JSONL file in `language` to score instead of the task's test
            split: the task's text columns (e.g. text; premise and hypothesis), label (or QA
            answers), optional id, and the English side as english_<column> (translated with
            mt_model when absent and the method reads English).
    """
    from flare.adapter.io import check_adapter_dir
    from flare.study.pipeline import Pipeline

    if adapter_dir is None and method not in UNTRAINED:
        raise FlareError(f"evaluate: method must be {' or '.join(UNTRAINED)} without --adapter_dir, got {method!r}")
    if adapter_dir is not None and method not in TRAINED:
        raise FlareError(f"evaluate: with --adapter_dir, method must be one of {', '.join(TRAINED)}, got {method!r}")
    fusion = None
    if adapter_dir is not None:
        config, _ = check_adapter_dir(adapter_dir)  # missing, pickled or truncated: one line, before any load
        fusion = config.fusion if method in FUSED else None
        if fusion is not None and fusion not in study.fusions:
            study.fusions.append(fusion)
    for values, value in ((study.languages, language), (study.methods, method)):
        if value not in values:
            values.append(value)
    pipeline = Pipeline(study)
    run = Run(method, fusion, language, study.seeds[0])
    return pipeline.single(run, record=False, adapter_dir=None if adapter_dir is None else Path(adapter_dir),
                           test_file=None if test is None else Path(test))


def translate(task: str, split: str, src_lang: str, tgt_lang: str, model: str, translations_dir: str,
              data_dir: str | None = None, batch_size: int = 32, num_beams: int = 1, max_input_length: int = 256,
              language_map: dict[str, str] | None = None, device: str = "auto", dtype: str = "auto",
              allow_empty: bool = False) -> str:
    """Translate a task split with an NLLB/M2M100 model (cached; reruns translate nothing twice).

    Args:
        task: task name or custom task YAML.
        split: split to translate (e.g. train, valid, test).
        src_lang: language of the original text (project code, e.g. en, jav).
        tgt_lang: language to translate into.
        model: NLLB/M2M100 checkpoint (local directory or model id), or nusax-lexicon: word by word into
            English through the NusaX lexicons in <data_dir>/nusax-lexicon (flare/mt/lexicon.py).
        translations_dir: root folder of translation files.
        data_dir: dataset folder (default: FLARE_DATA_DIR).
        batch_size: sentences per batch.
        num_beams: 1 for greedy decoding, more for beam search.
        max_input_length: tokens kept per input.
        language_map: explicit FLORES codes for languages NLLB lacks, e.g. {mad: ind_Latn}.
        device: auto (this process's CUDA GPU, else MPS, else the CPU), cpu, cuda, cuda:N or mps.
        dtype: auto (bfloat16 or float16 on a GPU, float32 on the CPU), float32, float16 or bfloat16.
        allow_empty: leave rows translated to empty text out (counted in the meta file) instead of
            refusing to write the file.
    """
    from flare.mt.translate import translate_dataset

    spec = get_task(task)
    # the task's own spelling ("en" is NusaX's "eng"): a study looks for <src>-<tgt> in the task's codes
    src_lang, tgt_lang = same_language(src_lang, spec.languages), same_language(tgt_lang, spec.languages)
    rows = spec.load(split, src_lang, data_dir)
    if model == "nusax-lexicon":
        from flare.mt.lexicon import translate_with_lexicon

        return str(translate_with_lexicon(
            rows, src_lang=src_lang, tgt_lang=tgt_lang, task=spec.name, split=split,
            translations_dir=translations_dir, data_dir=data_dir,
        ).output_path)
    result = translate_dataset(
        rows, model=model, src_lang=src_lang, tgt_lang=tgt_lang, task=spec.name, split=split,
        translations_dir=translations_dir, language_map=language_map, batch_size=batch_size,
        num_beams=num_beams, max_input_length=max_input_length, device=device, dtype=dtype, allow_empty=allow_empty,
    )
    return str(result.output_path)


def download(data_dir: str, tasks: list[Literal["nusax", "xnli", "tydiqa"]] | None = None,
             languages: list[str] | None = None) -> str:
    """Fetch NusaX, XNLI and TyDiQA-GoldP from the Hugging Face Hub into a datasets folder, in the
    layout the commands read (point FLARE_DATA_DIR or data.data_dir at it). Files already there
    are kept, so an interrupted download continues.

    Args:
        data_dir: the datasets folder to fill.
        tasks: which tasks (default: all three).
        languages: only these languages (default: every language of each task).
    """
    return str(fetch(data_dir, tasks or TASKS, languages))


def report(results: str, out_dir: str | None = None, against: list[str] | str | None = None) -> dict:
    """Write results.csv, results.md and results.png from a results.jsonl.

    Args:
        results: path of results.jsonl.
        out_dir: where to write (default: next to results.jsonl).
        against: a method label as in the tables (e.g. "FLARE (cross_attention)"), or a list of them,
            that each get a paired-difference table of their own, besides the one against
            translate-train LoRA.
    """
    labels = [against] if isinstance(against, str) else list(against or ())
    return {k: str(v) for k, v in write_report(results, out_dir, against=labels).items()}


def predict(study, text: str, language: str | None = None, english: str | None = None, method: str = "flare",
            fusion: str = "add_relu", seed: int = 1, output: Literal["labels", "jsonl"] = "labels",
            joint_adapter: bool = False, allow_other_languages: bool = False) -> list[str] | str:
    """Label new target-language inputs with a trained run of a study.

    Args:
        text: a target-language input, a text file with one input per line (pair tasks: fields
            separated by a tab), or a CSV, TSV or JSONL file with the task's text columns, a
            `language` column (rows of several languages: with --joint_adapter) and optionally the English
            side in english_<column>.
        language: the inputs' language (for a CSV/TSV/JSONL file: of the rows without a language).
        english: its English translation, or a file with one per line; needed by flare and x-mixup.
        method: the trained method whose adapter to use.
        fusion: its fusion (flare, flare-mt).
        seed: its seed.
        output: "labels" (a JSON list of labels or answers) or "jsonl" (one JSON object per input:
            id, language, text, label and class probabilities, or answer).
        joint_adapter: use the study's joint adapter of the method and seed (runs/<method>/joint/seed<k>),
            which labels rows of all the languages it was trained on.
        allow_other_languages: label rows in a language the adapter was not trained on (its card
            lists its languages) instead of refusing them.
    """
    from flare.study.predict import inputs_from_file, predict_texts

    details: list[dict] = []
    sides = _lines(english) if english else None
    if Path(text).suffix.lower() in (".csv", ".tsv", ".jsonl") and Path(text).is_file():
        texts, languages, given = inputs_from_file(study, Path(text), language)
        if given is not None and sides is not None:
            raise FlareError(f"predict: {text} has English columns; do not pass --english too")
        sides = given if given is not None else sides
    else:
        if language is None:
            raise FlareError("predict: --language is required (or a CSV/TSV/JSONL input with a language column)")
        texts = _lines(text)
        languages = [language] * len(texts)
    labels = predict_texts(study, languages, texts, sides, method, fusion, seed,
                           details if output == "jsonl" else None, joint_adapter, allow_other_languages)
    if output == "jsonl":
        return "\n".join(json.dumps(row, ensure_ascii=False) for row in details)
    return labels


def analyze(study, models: list[Literal["base", "lora", "flare"]] | None = None, split: str = "test",
            min_pairs: int = 100, max_pairs: int = 0, fusion: str | None = None, seed: int | None = None,
            cross_language: bool = True, results: str | None = None) -> dict:
    """Measure per layer and language how well a study's base (stage-1), LoRA and FLARE models align
    target sentences with their English translations (cosine, nearest-neighbour retrieval); writes
    analysis/alignment.csv, .md and .png files. Nothing is trained; saved results are reused.

    Args:
        models: which of base, lora and flare to analyse (default: all; base alone needs no runs).
        split: the split whose parallel pairs are read.
        min_pairs: refuse a language with fewer parallel pairs.
        max_pairs: read at most this many pairs per language (0: all).
        fusion: the FLARE run's fusion (default: the study's first).
        seed: the runs' seed (default: the study's first).
        cross_language: plot the base alignment against FLARE's margin over LoRA (results.jsonl).
        results: the results.jsonl of that margin (default: the study folder's).
    """
    from flare.study.analyze import analyze as run_analysis

    paths = run_analysis(study, models, split, min_pairs, max_pairs, fusion, seed, cross_language, results)
    return {name: str(path) for name, path in paths.items()}


def _lines(value: str) -> list[str]:
    """One input, or the non-empty lines of a file (UTF-8, a byte-order mark dropped). A value that
    names no file but looks like a path (a folder part, or a text-file suffix) is refused: labelling
    the string "inputs.txt" would be a silent mistake."""
    path = Path(value)
    if path.is_file():
        return [line for line in read_text(path).splitlines() if line.strip()]
    if not any(char.isspace() for char in value) and (
        path.suffix.lower() in (".txt", ".tsv", ".csv", ".jsonl", ".text") or value.startswith(("/", "./", "../", "~"))
    ):
        raise FlareError(f"{value}: file not found (pass the text itself, or an existing file)")
    return [value]


COMMANDS = {
    "compare": compare, "train": train, "evaluate": evaluate,
    "translate": translate, "report": report, "predict": predict, "download": download, "analyze": analyze,
}
STUDY_COMMANDS = {"compare", "train", "evaluate", "predict", "analyze"}
SINGLE_RUN_COMMANDS = {"train", "evaluate", "predict"}  # one language/method/seed of their own


def _parser():
    parser = ArgumentParser(prog="flare", description=__doc__, exit_on_error=False)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subcommands(required=True, dest="command")
    for name, function in COMMANDS.items():
        summary, description = _describe(function)
        sub = ArgumentParser(description=description, exit_on_error=False)
        if name in STUDY_COMMANDS:
            sub.add_argument(
                "--config", action=ActionConfigFile, help="study YAML (may be given first, without --config)"
            )
            sub.add_class_arguments(Study, nested_key=None)
            ranges = declared_ranges()
            for action in sub._actions:  # the ranges are declared with the settings' types; show them
                if action.dest in ranges and action.help:
                    action.help = f"{action.help.rstrip()} Range: {ranges[action.dest]}."
            sub.add_function_arguments(function, skip={"study"}, fail_untyped=False)
            for action in sub._actions:  # the lists of runs are the command's own arguments here
                if name in SINGLE_RUN_COMMANDS and action.dest in RUN_LISTS:
                    action.help = argparse.SUPPRESS
        else:
            sub.add_function_arguments(function, fail_untyped=False, as_positional=name == "report")
        commands.add_subcommand(name, sub, help=summary)
    return parser


def _describe(function) -> tuple[str, str]:
    """(one-sentence summary, description) of a command from its docstring, without the Args:
    section, which jsonargparse prints argument by argument."""
    doc = docstring_parser.parse(function.__doc__ or "")
    text = " ".join(part for part in (doc.short_description, doc.long_description) if part)
    summary = re.split(r"\.\s+(?=[A-Z])", text)[0].rstrip(".") + "."  # "e.g. a" ends no sentence
    return summary, text


def _placement(name: str, values: dict):
    """Where the command's models will run, for the commands that load one."""
    if name not in STUDY_COMMANDS and name != "translate":
        return None  # `report` loads no model and needs no torch
    if name in STUDY_COMMANDS:
        return values["study"].placement()
    from flare.hf.device import resolve_placement  # torch: not for --help or report

    return resolve_placement(values["device"], values["dtype"])


def _check_config(path: str) -> None:
    """Checked before the argument parser reads the file, so every problem is one line, and the same
    line the Python API (`flare.study.settings.load_study`) gives."""
    from_dict(Study, read_study_yaml(path))


def _yaml_value(text: str):
    """How the argument parser reads YAML (study files and values on the command line): the
    project's loader, so both refuse what `load_study` refuses."""
    return load_yaml(text, "command-line value")


def _explain(error: Exception, argv: list[str]) -> str | None:
    """The settings module's own line for a study setting the argument parser refused, so a bad value
    reads the same on the command line as in a study file; None when it has nothing better."""
    found = re.match(r'Parser key "([\w.]+)"', str(error))
    if not found:
        return None
    flag = f"--{found.group(1)}"
    for index, arg in enumerate(argv):
        if arg.startswith(flag + "=") or (arg == flag and index + 1 < len(argv)):
            raw = arg.split("=", 1)[1] if "=" in arg else argv[index + 1]
            try:
                value = load_yaml(raw, flag)
                check_setting(found.group(1), raw if value is None else value)
            except FlareError as explained:
                return str(explained)
            except KeyError:
                return None
    return None


def _close_progress_bars() -> None:
    """Clear the progress bars an interruption left open, so the message gets a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", [])):
        bar.close()


def parse_command(argv: list[str]) -> tuple[str, dict]:
    """The command's name and its checked arguments (a study's settings validated into `study`),
    before any work: what `main` runs, and what tests/test_readme.py checks of the documents' command lines."""
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    # `flare compare study.yaml ...`: a YAML right after a study command is its --config
    if len(argv) >= 2 and argv[0] in STUDY_COMMANDS and argv[1].endswith((".yaml", ".yml")) and argv[1] != "--config":
        argv[1:2] = ["--config", argv[1]]
    for flag, value in itertools.pairwise(argv):
        if flag == "--config":
            _check_config(value)
    set_loader("yaml", _yaml_value, exceptions=(FlareError,))
    args = _parser().parse_args(argv).as_dict()
    name = args.pop("command")
    values = args.pop(name)
    values.pop("config", None)
    if name in STUDY_COMMANDS:
        fields = {k: values.pop(k) for k in list(values) if k in Study.__dataclass_fields__}
        values["study"] = from_dict(Study, fields).validate()
    return name, values


def main(argv: list[str] | None = None) -> int:
    # A parent that had SIGINT blocked (some multiprocessing helpers block it while they fork) passes
    # the mask on through exec, and Ctrl-C would then be held pending until the study ended.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FLARE_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        if not argv or argv[0] in ("-h", "--help"):
            _parser().print_help()
            return 0
        name, values = parse_command(argv)
        function = COMMANDS[name]
        if name != "report":  # torch and transformers load only now: `--help`, errors and reports stay fast
            from flare.study.pipeline import quiet_libraries

            quiet_libraries()
        placement = _placement(name, values)
        if placement is not None:  # settled (a missing GPU refused) before any work; said before it starts
            print(placement.describe(), flush=True)
        result = function(**values)
        if result is not None:
            print(json.dumps(result, indent=2, default=str) if isinstance(result, (dict, list)) else result)
        return 0
    except FlareError as error:
        if debug:
            raise
        print(f"flare: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        _close_progress_bars()
        print("flare: interrupted; finished work is saved, rerun the same command to continue", file=sys.stderr)
        return 130
    except OSError as error:  # a folder that cannot be created or written, a full disk...
        if debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"flare: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except Exception as error:
        if debug:
            raise
        message = " ".join(str(error).split())
        if type(error).__name__ in ("ArgumentError", "NSKeyError"):  # argument errors from jsonargparse
            print(f"flare: error: {_explain(error, argv) or message}", file=sys.stderr)
            return 2
        if "No space left on device" in message:  # safetensors' SafetensorError carries no errno
            print(f"flare: error: no space left on the device while writing ({message[:200]})", file=sys.stderr)
            return 2
        print(
            f"flare: internal error: {type(error).__name__}: {message[:300]} "
            "(--debug or FLARE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
