"""Saving and loading FLARE adapters.

A saved directory is a valid PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors,
loadable by peft.PeftModel.from_pretrained as plain LoRA) plus two sidecar files:
flare_config.json (the FlareConfig, the fused module names and the adapter name) and, when the
fusion or FLARE-MT has weights, flare_weights.safetensors, and a model card (README.md). The
files lie flat for every adapter name (PEFT would put a non-default one in a subfolder). Nothing
is pickled, and pickled adapters are refused. An adapter is read from a folder (a Trainer
checkpoint folder is one) or a Hub model id.
Files are written to a temporary directory first and moved into place one by one, the config
last, so an interrupted save never leaves a directory that loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from peft import PeftModel
from peft.utils import load_peft_weights, set_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from flare.adapter.base_identity import base_identity, check_base, check_base_name
from flare.adapter.card import check_card_inputs, model_card
from flare.adapter.config import FlareConfig
from flare.adapter.sharding import gathered_adapter_state, is_main_process, is_sharded
from flare.errors import FlareError, first_line


class FlareModelLike(Protocol):
    """What saving and loading read of a `flare.FlareModel` (model.py). A structural type, because
    io sits below model.py, which imports it (through peft_compat.py): the class itself is passed
    to `load_onto`."""

    flare_config: FlareConfig
    fused_modules: list[str]
    adapter_name: str
    peft_model: PeftModel
    fusion_modules: nn.ModuleDict
    english_gates: nn.ModuleDict
    source_projection: nn.Linear | None
    training: bool

    @property
    def backbone(self) -> nn.Module: ...

    def flare_state_dict(self) -> dict[str, Any]: ...

    def named_modules(self, *args: Any, **kwargs: Any) -> Any: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

CONFIG_FILE = "flare_config.json"
WEIGHTS_FILE = "flare_weights.safetensors"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "README.md"
FORMAT_VERSION = 1
_PEFT_PREFIX = "peft_model."


def save_flare(
    model: FlareModelLike, directory: str | os.PathLike, languages: list[str] | None = None,
    scores: dict[str, float] | None = None, state_dict: dict | None = None, **peft_kwargs: Any,
) -> None:
    """Write the adapter folder. state_dict (Trainer passes one under DeepSpeed/FSDP) is the
    FlareModel's full state dict; by default the model's own weights are saved. A model sharded
    with FSDP2 is gathered on every process (call this on all of them) and written by the first."""
    check_card_inputs(languages, scores)
    if state_dict is None and is_sharded(model):
        state_dict = gathered_adapter_state(model)
        if not is_main_process():
            return
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.saving-", dir=directory.parent))
    try:
        if state_dict is not None:
            peft_kwargs["state_dict"] = {
                k[len(_PEFT_PREFIX):]: v for k, v in state_dict.items() if k.startswith(_PEFT_PREFIX)
            }
            weights = {k: v.detach().contiguous() for k, v in state_dict.items() if not k.startswith(_PEFT_PREFIX)}
        else:
            weights = model.flare_state_dict()
        peft_kwargs.setdefault("selected_adapters", [model.adapter_name])
        model.peft_model.save_pretrained(staging, safe_serialization=True, **peft_kwargs)
        nested = staging / model.adapter_name
        if model.adapter_name != "default" and nested.is_dir():
            for path in nested.iterdir():
                os.replace(path, staging / path.name)
            nested.rmdir()
        if weights:
            save_file(weights, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        meta = {
            "format_version": FORMAT_VERSION,
            "config": model.flare_config.to_dict(),
            "fused_modules": model.fused_modules,
            "adapter_name": model.adapter_name,
            "base_model": base_identity(model.backbone),  # checked on load (base_identity.py)
        }
        backbone_config = getattr(model.backbone, "config", None)
        base = getattr(backbone_config, "_name_or_path", None) or None
        card = model_card(base, type(model.backbone).__name__, meta["config"], model.fused_modules,
                          model.adapter_name, languages, scores)
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        directory.mkdir(exist_ok=True)
        (directory / CONFIG_FILE).unlink(missing_ok=True)  # the directory is incomplete until the end
        if not weights:
            (directory / WEIGHTS_FILE).unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_FILE):
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def push_flare(
    model: FlareModelLike, repo_id: str, languages: list[str] | None = None, scores: dict[str, float] | None = None,
    private: bool | None = None, token: str | bool | None = None, commit_message: str = "Upload FLARE adapter",
    revision: str | None = None, create_pr: bool = False, **unknown: Any,
):
    """Save to a temporary folder, create the repository if needed, upload the folder."""
    if unknown:
        raise FlareError(f"unknown push_to_hub argument(s): {', '.join(sorted(unknown))}")
    if not isinstance(repo_id, str) or not _REPO_ID.fullmatch(repo_id):
        raise FlareError(f"repo_id must look like 'name' or 'owner/name', got {repo_id!r}")
    check_card_inputs(languages, scores)

    with tempfile.TemporaryDirectory(prefix="flare-push-") as folder:
        save_flare(model, Path(folder) / "adapter", languages=languages, scores=scores)
        api = HfApi(token=token)
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            return api.upload_folder(
                repo_id=repo.repo_id, folder_path=Path(folder) / "adapter", commit_message=commit_message,
                revision=revision, create_pr=create_pr, repo_type="model",
            )
        except HfHubHTTPError as error:
            raise FlareError(f"cannot push to {repo_id}: {first_line(error)}") from None


_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
_HUB_FILES = ["*.json", "*.safetensors", CARD_FILE]


def resolve_adapter(location: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as it is; an 'owner/name' that is not a local path: the Hub snapshot
    (from the local cache when offline), safetensors and JSON files only."""
    path = Path(location)
    text = str(location)
    local = path.exists() or Path(text.split("/")[0]).is_dir()
    if local or "/" not in text or not _REPO_ID.fullmatch(text):
        return path

    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=_HUB_FILES))
    except (OSError, ValueError) as error:  # huggingface_hub's HTTP, offline and validation errors
        first = first_line(error)
        raise FlareError(f"{text} is not a local folder and cannot be fetched from the Hub: {first}") from None


def check_adapter_dir(directory: str | os.PathLike) -> tuple[FlareConfig, list[str]]:
    """The config and fused modules of a saved adapter, after checking (without loading any base
    model) that its files are there, readable and safetensors: a FlareError names what is wrong."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FlareError(f"{directory} is not a FLARE adapter directory ({CONFIG_FILE} is missing)")
    if not (directory / PEFT_WEIGHTS_FILE).is_file():
        raise FlareError(f"{directory} has no {PEFT_WEIGHTS_FILE}; only safetensors adapters are loaded, never pickles")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        config = FlareConfig.from_dict(meta["config"])
        fused = list(meta["fused_modules"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise FlareError(f"{config_path} is corrupt: {error}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise FlareError(
            f"{config_path} has format_version {meta.get('format_version')}; this flare-xlt reads {FORMAT_VERSION}"
        )
    for name in (PEFT_WEIGHTS_FILE, WEIGHTS_FILE):
        if (directory / name).is_file():
            try:
                with safe_open(directory / name, framework="pt"):
                    pass
            except (OSError, SafetensorError) as error:
                raise FlareError(
                    f"cannot load the adapter in {directory}: cannot read {name} as safetensors ({error})"
                ) from None
    return config, fused


def _sidecar(directory: Path) -> dict[str, Any]:
    return json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))


def _adapter_name(directory: Path) -> str:
    name = _sidecar(directory).get("adapter_name", "default")
    if not isinstance(name, str) or not name:
        raise FlareError(f"{directory / CONFIG_FILE} is corrupt: adapter_name {name!r}")
    return name


def load_onto(
    model_class: type[FlareModelLike], base_model: nn.Module, directory: str | os.PathLike, is_trainable: bool = False,
    revision: str | None = None, adapter_name: str | None = None, allow_base_mismatch: bool = False,
) -> FlareModelLike:
    """`flare.load_flare_model`, building a `model_class` (FlareModel or a subclass)."""
    directory = resolve_adapter(directory, revision)
    config, fused = check_adapter_dir(directory)
    adapter_name = adapter_name or _adapter_name(directory)
    # before PEFT injects LoRA into base_model: a refusal leaves the caller's model untouched
    recorded_base = _sidecar(directory).get("base_model")
    check_base(recorded_base, base_model, str(directory), allow_base_mismatch)
    try:
        peft_model = PeftModel.from_pretrained(
            base_model, directory, adapter_name=adapter_name, is_trainable=is_trainable
        )
    except (RuntimeError, ValueError, KeyError, OSError, SafetensorError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        # torch's "Error(s) in loading state_dict for ...:" header says nothing; the next line names the problem
        first = lines[1] if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1 else lines[0]
        hint = " (an adapter saved for another base model?)" if "size mismatch" in first else ""
        raise FlareError(
            f"cannot load the adapter in {directory} onto {type(base_model).__name__}: {first}{hint}"
        ) from None
    missing = [name for name in fused if name not in dict(peft_model.base_model.model.named_modules())]
    if missing:
        raise FlareError(f"the adapter in {directory} fuses modules this base model lacks: {missing[:3]}")
    model = model_class(peft_model, config, fused)
    _load_flare_weights(model, directory)
    check_base_name(recorded_base, model.backbone, str(directory), allow_base_mismatch)
    for parameter in [*model.fusion_modules.parameters(), *model.english_gates.parameters()]:
        parameter.requires_grad_(is_trainable)
    if model.source_projection is not None:
        model.source_projection.requires_grad_(is_trainable)
    return model.train(peft_model.training)  # the fusion modules follow PEFT's mode (eval unless trainable)


def reload_weights(model: FlareModelLike, location: str | os.PathLike, revision: str | None = None) -> None:
    """Load a saved adapter's weights into model in place (resuming Trainer from a checkpoint)."""
    directory = resolve_adapter(location, revision)
    config, fused = check_adapter_dir(directory)
    if config != model.flare_config or list(fused) != list(model.fused_modules):
        raise FlareError(f"the adapter in {directory} has other FLARE settings or fused modules than this model")
    try:
        weights = load_peft_weights(str(directory))
        result = set_peft_model_state_dict(model.peft_model, weights, adapter_name=model.adapter_name)
    except (RuntimeError, ValueError, KeyError, OSError, SafetensorError) as error:
        raise FlareError(f"cannot load the adapter in {directory}: {first_line(error)}") from None
    if result.unexpected_keys:
        raise FlareError(f"the adapter in {directory} does not match this model: {result.unexpected_keys[0]}")
    _load_flare_weights(model, directory)


def _load_flare_weights(model: FlareModelLike, directory: Path) -> None:
    expected = model.flare_state_dict()
    if not expected:
        return
    try:
        weights = load_file(directory / WEIGHTS_FILE)
    except (OSError, SafetensorError) as error:
        raise FlareError(f"cannot read {directory / WEIGHTS_FILE}: {error}") from None
    wrong = sorted(k for k in expected if k not in weights or weights[k].shape != expected[k].shape)
    if wrong or set(weights) - set(expected):
        raise FlareError(
            f"{directory / WEIGHTS_FILE} does not match this adapter "
            f"(first mismatch: {(wrong or sorted(set(weights) - set(expected)))[0]})"
        )
    model.load_state_dict(weights, strict=False)
