"""Trains a tiny FLARE adapter with flare.study.training.fit and saves the trained weights (rank 0).
Run directly (one process) or under `accelerate launch --cpu --num_processes 2` (DDP, gloo)."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

sys.path.insert(0, str(Path(__file__).parent))
from flare import FlareConfig, get_flare_model
from flare.data.tasks import get_task
from flare.hf.formats import FormatSettings, PairFormatter
from flare.study.settings import StageSettings
from flare.study.training import fit
from tiny_tokenizers import encoder_tokenizer


def main(data_dir: str, out: str) -> None:
    task = get_task("nusax")
    pairs = task.load_pairs("train", "jav", data_dir)[:32]
    tok = encoder_tokenizer([t for p in pairs for t in (p.source.fields["text"], p.target.fields["text"])])
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, pad_token_id=0, num_labels=3, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    model = get_flare_model(XLMRobertaForSequenceClassification(config), FlareConfig(task_type="SEQ_CLS"))
    formatter = PairFormatter(task, tok, "encoder", "flare", FormatSettings(max_length=24))
    settings = StageSettings(epochs=2, batch_size=8, learning_rate=1e-3, tensorboard=False)
    fit(model, pairs, formatter, settings, seed=5, run_dir=Path(out) / "run")
    trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_rank() != 0:
        return
    print(f"world_size={torch.distributed.get_world_size() if distributed else 1}")
    save_file(trained, str(Path(out) / "trained.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
