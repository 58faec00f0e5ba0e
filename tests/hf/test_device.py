"""The device and dtype policy (flare/hf/device.py): what each setting resolves to, the refusals,
the one-line description, that every model the project loads follows it, and that bfloat16 and
float16 fusion stays close to float32. The CUDA side is in tests/gpu/ (marker `gpu`)."""

import json

import pytest
import torch
import yaml

import tiny_models as tiny
from flare import FlareConfig, get_flare_model
from flare.adapter.config import FUSIONS
from flare.cli import main
from flare.errors import FlareError
from flare.hf.device import Placement, autocast, autocast_dtype, compute_dtype, resolve_device, resolve_placement
from flare.hf.loading import adapt
from tiny_study import save_tiny_encoder, toy_study, write_toy_task

# ----------------------------------------------------------------- resolving the settings


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA GPUs as far as the policy can tell (nothing is allocated on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr("flare.hf.device._mps_available", lambda: False)


def test_auto_is_the_cpu_in_float32_without_a_gpu(no_gpu):
    placement = resolve_placement()
    assert placement == Placement(torch.device("cpu"), torch.float32, False)
    assert resolve_placement("cpu", "bfloat16").dtype == torch.bfloat16


def test_auto_and_cuda_take_this_process_s_gpu(two_gpus, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun / accelerate launch: the second process
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_placement("auto", "auto").dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_placement("auto", "auto").dtype == torch.float16  # a GPU without bfloat16


@pytest.mark.parametrize(("device", "dtype", "message"), [
    ("banana", "auto", "device: 'banana' is not one of auto, cpu, cuda, cuda:N, mps"),
    ("cuda", "auto", "device: cuda asked for, but this machine has no usable CUDA GPU"),
    ("cuda:1", "auto", "device: cuda:1 asked for, but this machine has no usable CUDA GPU"),
    ("mps", "auto", "device: mps asked for, but this machine has no usable Apple MPS device"),
    ("cpu", "float16", "dtype: float16 needs a GPU; on the CPU use float32 or bfloat16"),
    ("cpu", "double", "dtype: 'double' is not one of auto, float32, bfloat16, float16"),
])
def test_settings_this_machine_cannot_run_are_refused_in_one_line(no_gpu, device, dtype, message):
    with pytest.raises(FlareError) as error:
        resolve_placement(device, dtype)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_gpu_number_that_does_not_exist_is_refused(two_gpus, monkeypatch):
    with pytest.raises(FlareError, match=r"cuda:2 is cuda:2, which does not exist \(this machine has cuda:0, cuda:1\)"):
        resolve_device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(FlareError, match="cuda is cuda:5, which does not exist"):
        resolve_device("cuda")


def test_the_description_names_device_dtype_and_quantisation(two_gpus, monkeypatch):
    class H200:
        name, total_memory = "NVIDIA H200", 150_000_000_000

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: H200)
    gpu = Placement(torch.device("cuda", 0), torch.bfloat16, True)
    assert gpu.describe() == "device: cuda:0 (NVIDIA H200, 140 GiB), dtype bfloat16, 4-bit nf4"
    cpu = Placement(torch.device("cpu"), torch.float32)
    assert cpu.describe() == f"device: cpu ({torch.get_num_threads()} threads), dtype float32"
    assert cpu.record() == {"device": "cpu", "dtype": "float32", "load_in_4bit": False, "placement": cpu.describe()}


def test_4bit_loads_nf4_double_quantised_on_the_process_s_device_computing_in_the_dtype():
    kwargs = Placement(torch.device("cuda", 1), torch.bfloat16, True).from_pretrained_kwargs()
    quantization = kwargs["quantization_config"]
    assert kwargs["device_map"] == {"": "cuda:1"} and kwargs["dtype"] == torch.bfloat16
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant and quantization.bnb_4bit_compute_dtype == torch.bfloat16
    # an unquantised model on a GPU is built there directly; on the CPU nothing is mapped
    assert Placement(torch.device("cuda", 0), torch.float16).from_pretrained_kwargs() == {
        "dtype": torch.float16, "device_map": {"": "cuda:0"}
    }
    assert Placement(torch.device("cpu"), torch.float32).from_pretrained_kwargs() == {"dtype": torch.float32}


# ----------------------------------------------------------------- the command line


def _write_study(tmp_path, capsys, **settings):
    model = save_tiny_encoder(tmp_path / "encoder")
    values = {"task": str(write_toy_task(tmp_path / "task")), "model": str(model), "languages": ["de"],
              "methods": ["zero-shot"], "output_dir": str(tmp_path / "out"), "data": {"max_length": 24},
              "stage1": {"epochs": 1, "batch_size": 8, "tensorboard": False}, **settings}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(values))
    capsys.readouterr()  # the model's saving progress is not the command's output
    return tmp_path / "study.yaml"


@pytest.mark.parametrize(("args", "message"), [
    (["compare", "--device", "banana"], "device: 'banana' is not one of"),
    (["compare", "--device", "cuda"], "device: cuda asked for, but this machine has no usable CUDA GPU"),
    (["evaluate", "--language", "de", "--device", "cuda"], "device: cuda asked for"),
    (["compare", "--dtype", "float16"], "dtype: float16 needs a GPU"),
    (["compare", "--stage1.mixed_precision", "fp16"], "stage1.mixed_precision: fp16 needs a GPU"),
])
def test_cli_refuses_a_missing_device_before_any_work(no_gpu, tmp_path, capsys, args, message):
    config = _write_study(tmp_path, capsys)
    assert main([args[0], str(config), *args[1:]]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().startswith(f"flare: error: {message}") and len(captured.err.strip().splitlines()) == 1
    assert "device:" not in captured.out  # refused before the device line: nothing started
    assert not (tmp_path / "out").exists()


def test_translate_refuses_a_missing_device_before_any_work(no_gpu, tmp_path, capsys):
    task = write_toy_task(tmp_path / "task")
    args = ["translate", "--task", str(task), "--split", "test", "--src_lang", "de", "--tgt_lang", "en",
            "--model", str(tmp_path / "nllb"), "--translations_dir", str(tmp_path / "translations"), "--device", "cuda"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("flare: error: device: cuda asked for")
    assert not (tmp_path / "translations").exists()


def test_the_device_line_is_printed_first_and_recorded(tmp_path, capsys):
    config = _write_study(tmp_path, capsys)
    assert main(["compare", str(config), "--device", "cpu"]) == 0
    line = resolve_placement("cpu", "auto").describe()
    assert capsys.readouterr().out.splitlines()[0] == line
    assert (tmp_path / "out" / "study.yaml").read_text().splitlines()[0] == f"# {line}"
    (record,) = [json.loads(r) for r in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert (record["device"], record["dtype"], record["placement"]) == ("cpu", "float32", line)


# ----------------------------------------------------------------- every load path follows the setting


@pytest.fixture
def loads(monkeypatch):
    """(model class, dtype, device_map) of every from_pretrained call of a model."""
    from transformers import PreTrainedModel

    calls = []
    original = PreTrainedModel.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        calls.append((cls.__name__, kwargs.get("dtype"), kwargs.get("device_map")))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(recording))
    return calls


@pytest.mark.slow  # five methods, predict and translate: 25 s on 2 shared cores
def test_a_bfloat16_study_runs_end_to_end_and_every_model_loads_in_bfloat16(tmp_path, tmp_path_factory, loads):
    from tiny_mt import available_data_dir, shared_tiny_nllb

    from flare.data.tasks import get_task
    from flare.mt.translate import translate_dataset
    from flare.study.predict import predict_texts

    nllb = shared_tiny_nllb(tmp_path_factory, available_data_dir())
    model = save_tiny_encoder(tmp_path / "encoder")
    methods = ["zero-shot", "translate-test", "translate-train", "flare", "flare-mt"]
    study = toy_study(model, tmp_path / "out", methods=methods, dtype="bfloat16", mt_model=str(nllb), device="cpu")
    study.validate()
    from flare.study.pipeline import compare

    records = [json.loads(line) for line in compare(study).read_text().splitlines()]
    assert sorted(r["method"] for r in records) == sorted(methods)
    assert all(r["dtype"] == "bfloat16" and r["device"] == "cpu" and 0 <= r["score"] <= 100 for r in records)
    # stage 1, one load per run, and the MT encoder of flare-mt
    assert [c[0] for c in loads].count("XLMRobertaForSequenceClassification") == 1 + len(methods)
    assert ("M2M100ForConditionalGeneration", torch.bfloat16, None) in loads

    loads.clear()
    texts, english = ["Das Essen war gut.", "Die Suppe war kalt."], ["The food was good.", "The soup was cold."]
    for method in ("zero-shot", "flare", "flare-mt"):
        labels = predict_texts(study, "de", texts, english if method == "flare" else None, method=method)
        assert set(labels) <= {"negative", "positive"} and len(labels) == 2
    # the English side translated on the fly: the tiny random NLLB translates into nothing, refused after loading
    with pytest.raises(FlareError, match="translated input 0 to empty text"):
        predict_texts(study, "de", texts, None, method="translate-test")
    rows = get_task(study.task).load("test", "de")[:3]
    translate_dataset(rows, model=str(nllb), src_lang="de", tgt_lang="en", task="toy", split="test",
                      translations_dir=tmp_path / "translations", dtype="bfloat16", show_progress=False,
                      allow_empty=True)
    # predict: three bases (translate-test stopped after translating), the MT encoder, the translator;
    # then flare translate's model
    assert [c[0] for c in loads].count("XLMRobertaForSequenceClassification") == 3
    assert [c[0] for c in loads].count("M2M100ForConditionalGeneration") == 3
    assert all(dtype == torch.bfloat16 and device_map is None for _, dtype, device_map in loads), loads


def test_trainable_weights_stay_float32_on_a_bfloat16_base():
    backbone = tiny.xlmr_classifier().to(torch.bfloat16)
    model = adapt(backbone, FlareConfig(fusion="cross_attention", task_type="SEQ_CLS"))
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and set(trainable.values()) == {torch.float32}
    assert any("classifier" in n for n in trainable)  # the task head too
    assert compute_dtype(model) == autocast_dtype(model) == torch.bfloat16
    assert autocast_dtype(tiny.llama()) is None and autocast_dtype(tiny.llama(), "fp16") == torch.float16


# ----------------------------------------------------------------- numerics in half precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_flare_model_on_a_half_precision_base_under_autocast_matches_float32(fusion, dtype):
    config = FlareConfig(target_modules="all-linear", fusion=fusion, alignment="right")
    exact = get_flare_model(tiny.llama(), config).eval()
    tiny.randomize_lora_B(exact, std=0.1)
    half = adapt(tiny.llama().to(dtype), config).eval()
    half.load_state_dict(exact.state_dict())  # copies into each weight's own dtype: LoRA and fusion stay float32
    ids, mask = tiny.batch(2, 6, seed=0)
    source, source_mask = tiny.batch(2, 5, seed=1, pad_left=1)
    inputs = dict(input_ids=ids, attention_mask=mask, source_input_ids=source, source_attention_mask=source_mask)
    with torch.no_grad():
        reference = exact(**inputs).logits
        with autocast(torch.device("cpu"), dtype):
            logits = half(**inputs).logits
    assert logits.shape == reference.shape
    scale = reference.abs().max()  # 8-bit (bfloat16) and 11-bit (float16) mantissas, a few layers deep
    assert (logits.float() - reference).abs().max() <= (0.05 if dtype == torch.bfloat16 else 0.01) * scale
    with torch.no_grad():  # the fusion matters more than the rounding: the test can tell them apart
        plain = exact(input_ids=ids, attention_mask=mask).logits
    assert (plain - reference).abs().max() > (logits.float() - reference).abs().max()


def _fit_a_toy_classifier(tmp_path, **settings):
    """Trains a tiny FLARE classifier with fit on 8 random examples (2 steps); returns the model's
    trainable weights before, the model and fit's result."""
    from flare.study.settings import StageSettings
    from flare.study.training import fit

    model = adapt(tiny.xlmr_classifier(), FlareConfig(task_type="SEQ_CLS"))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    generator = torch.Generator().manual_seed(0)
    items = [(torch.randint(3, tiny.VOCAB, (6,), generator=generator), i % 3) for i in range(8)]

    def collate(batch):
        return {"input_ids": torch.stack([ids for ids, _ in batch]), "labels": torch.tensor([y for _, y in batch])}

    settings = StageSettings(epochs=1, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, tensorboard=False,
                             **settings)
    return before, model, fit(model, items, collate, settings, seed=1, run_dir=tmp_path, description="toy")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_under_half_precision_autocast_updates_float32_adapter_weights(precision, tmp_path):
    """fit's own autocast (and, for fp16, its gradient scaler) on the CPU: the study settings refuse
    fp16 there, so fit is called directly to cover the code path a GPU takes."""
    before, model, result = _fit_a_toy_classifier(tmp_path, mixed_precision=precision)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)
    after = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the steps were taken, not skipped


def test_one_process_trains_without_accelerate_preparing_the_model(monkeypatch, tmp_path):
    """In one process accelerate refuses a 4-bit model on cuda:N, N > 0 (its own device is the bare
    "cuda"), so fit must not hand it the model outside DDP. The refusal is simulated for every model;
    tests/study/test_distributed.py covers the DDP path, where the model is prepared."""
    from accelerate import Accelerator

    def refuse(self, model, *args, **kwargs):
        raise ValueError("You can't train a model that has been loaded in 4-bit precision on a different device")

    monkeypatch.setattr(Accelerator, "prepare_model", refuse)
    before, model, result = _fit_a_toy_classifier(tmp_path)
    assert result.steps == 2
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)
