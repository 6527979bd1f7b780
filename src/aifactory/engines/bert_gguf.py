"""Convert a Hugging Face BERT sentence-embedding model to a llama.cpp GGUF file.

The output targets llama.cpp's ``bert`` architecture: WordPiece tokenizer
(``tokenizer.ggml.model = "bert"``), absolute position embeddings, post-norm
encoder blocks and a pooling type taken from the sentence-transformers
``Pooling`` module (mean by default). Matrices are stored as F16, vectors
(norms and biases) as F32. The final L2 normalisation that
sentence-transformers applies is not part of the file: llama.cpp's server
does it itself (``CommonParams.embd_normalize = 2``, the default).

Usage::

    python -m aifactory.engines.bert_gguf MODEL_DIR OUT.gguf
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import gguf
import numpy as np

_ARCH = gguf.MODEL_ARCH.BERT
_SKIPPED_PREFIXES = ("embeddings.position_ids", "pooler.", "cls.")
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64}
_ATTN_TENSORS = ("attn_q", "attn_k", "attn_v", "attn_output", "attn_output_norm")
_FFN_TENSORS = ("ffn_up", "ffn_down", "layer_output_norm")
_POOLING = {
    "pooling_mode_mean_tokens": gguf.PoolingType.MEAN,
    "pooling_mode_cls_token": gguf.PoolingType.CLS,
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: missing; not a Hugging Face BERT model directory") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read every tensor of a ``.safetensors`` file as float32 / int64 arrays.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        Tensor name to array (F16 and BF16 are widened to float32).

    Raises:
        ValueError: If the file is missing, truncated or uses an unsupported dtype.

    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: missing; only safetensors weights are supported") from exc
    n_header = int.from_bytes(raw[:8], "little")
    if len(raw) < 8 + n_header:
        raise ValueError(f"{path}: truncated safetensors header")
    header = json.loads(raw[8 : 8 + n_header])
    base = 8 + n_header
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        arr = np.frombuffer(
            raw, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start
        ).reshape(info["shape"])
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
    return tensors


def _pooling_type(model_dir: Path) -> gguf.PoolingType:
    pooling_dir = "1_Pooling"
    modules_path = model_dir / "modules.json"
    if modules_path.is_file():
        for module in json.loads(modules_path.read_text(encoding="utf-8")):
            if str(module.get("type", "")).endswith(".Pooling"):
                pooling_dir = module.get("path") or pooling_dir
    cfg_path = model_dir / pooling_dir / "config.json"
    if not cfg_path.is_file():
        return gguf.PoolingType.MEAN
    cfg = _read_json(cfg_path)
    modes = [key for key, value in cfg.items() if key.startswith("pooling_mode_") and value]
    if len(modes) != 1 or modes[0] not in _POOLING:
        raise ValueError(f"{cfg_path}: unsupported pooling {modes}; llama.cpp needs mean or cls")
    return _POOLING[modes[0]]


def _vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], dict[str, int]]:
    vocab_path = model_dir / "vocab.txt"
    if not vocab_path.is_file():
        raise ValueError(f"{vocab_path}: missing; a WordPiece vocab.txt is required")
    words = vocab_path.read_text(encoding="utf-8").split("\n")
    if words and words[-1] == "":
        words.pop()
    if len(words) > vocab_size:
        raise ValueError(f"{vocab_path}: {len(words)} tokens, config.json says {vocab_size}")
    words += [f"[PAD{i}]" for i in range(len(words), vocab_size)]
    specials_path = model_dir / "special_tokens_map.json"
    specials_map = _read_json(specials_path) if specials_path.is_file() else {}
    specials = {f"{k}_token": f"[{k.upper()}]" for k in ("unk", "sep", "pad", "cls", "mask")}
    for key, value in specials_map.items():
        specials[key] = value["content"] if isinstance(value, dict) else str(value)
    index = {word: i for i, word in enumerate(words)}
    special_ids = {key: index[text] for key, text in specials.items() if text in index}
    missing = {"cls_token", "sep_token", "unk_token"} - special_ids.keys()
    if missing:
        raise ValueError(f"{vocab_path}: special tokens {sorted(missing)} not in the vocabulary")
    control = set(special_ids.values())
    # llama.cpp's WordPiece matcher marks word starts with U+2581 and continuations
    # without a prefix, so "##ing" -> "ing" and "play" -> "\u2581play".
    tokens: list[str] = []
    for i, word in enumerate(words):
        if i in control or (len(word) > 1 and word.startswith("[") and word.endswith("]")):
            tokens.append(word)
        elif word.startswith("##"):
            tokens.append(word[2:])
        else:
            tokens.append("\u2581" + word)
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"{vocab_path}: duplicate tokens after WordPiece prefix rewriting")
    types = [
        int(gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL)
        for i in range(len(tokens))
    ]
    return tokens, types, special_ids


def convert_bert_to_gguf(model_dir: Path, out_path: Path) -> Path:
    """Convert a BERT (sentence-transformers) model directory to a GGUF file.

    Args:
        model_dir: Directory with ``config.json``, ``model.safetensors`` and
            ``vocab.txt`` (plus optional ``special_tokens_map.json`` and a
            sentence-transformers ``1_Pooling/config.json``).
        out_path: Destination; written to a temporary file and renamed into place.

    Returns:
        ``out_path``.

    Raises:
        ValueError: If ``model_dir`` is not a supported BERT model.

    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    config_path = model_dir / "config.json"
    cfg = _read_json(config_path)
    if cfg.get("model_type") != "bert":
        raise ValueError(f"{config_path}: model_type is {cfg.get('model_type')!r}, expected 'bert'")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{config_path}: only absolute position embeddings are supported")
    if cfg.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{config_path}: hidden_act {cfg.get('hidden_act')!r} is not GELU")
    try:
        n_layer, n_embd = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
        n_head, n_ff = int(cfg["num_attention_heads"]), int(cfg["intermediate_size"])
        n_ctx, n_vocab = int(cfg["max_position_embeddings"]), int(cfg["vocab_size"])
    except KeyError as exc:
        raise ValueError(f"{config_path}: missing hyperparameter {exc.args[0]!r}") from exc
    tok_cfg_path = model_dir / "tokenizer_config.json"
    if tok_cfg_path.is_file() and _read_json(tok_cfg_path).get("do_lower_case") is False:
        raise ValueError(f"{tok_cfg_path}: cased vocabulary; llama.cpp's WordPiece lowercases")
    pooling = _pooling_type(model_dir)
    tokens, token_types, special_ids = _vocab(model_dir, n_vocab)

    name_map = gguf.get_tensor_name_map(_ARCH, n_layer)
    weights_path = model_dir / "model.safetensors"
    mapped: dict[str, np.ndarray] = {}
    for hf_name, array in read_safetensors(weights_path).items():
        hf_name = hf_name.removeprefix("bert.")
        if hf_name.startswith(_SKIPPED_PREFIXES):
            continue
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ValueError(f"{weights_path}: unexpected tensor {hf_name!r} for a BERT encoder")
        mapped[new_name] = array
    expected = {
        "token_embd.weight",
        "position_embd.weight",
        "token_types.weight",
        "token_embd_norm.weight",
        "token_embd_norm.bias",
    }
    for bid in range(n_layer):
        for part in _ATTN_TENSORS + _FFN_TENSORS:
            expected |= {f"blk.{bid}.{part}.weight", f"blk.{bid}.{part}.bias"}
    if expected - mapped.keys():
        raise ValueError(f"{weights_path}: missing tensors {sorted(expected - mapped.keys())[:5]}")
    if mapped["token_embd.weight"].shape != (n_vocab, n_embd):
        raise ValueError(f"{weights_path}: word embeddings shape does not match config.json")
    n_types = int(mapped["token_types.weight"].shape[0])

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.tmp")
    try:
        writer = gguf.GGUFWriter(tmp_name, gguf.MODEL_ARCH_NAMES[_ARCH])
        writer.add_name(str(cfg.get("_name_or_path") or model_dir.name))
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_context_length(n_ctx)
        writer.add_embedding_length(n_embd)
        writer.add_feed_forward_length(n_ff)
        writer.add_block_count(n_layer)
        writer.add_head_count(n_head)
        writer.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
        writer.add_causal_attention(False)
        writer.add_pooling_type(pooling)
        writer.add_tokenizer_model("bert")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        writer.add_token_type_count(n_types)
        # [CLS] is BOS and [SEP] the separator llama.cpp appends (add_sep); no EOS
        # is written, since llama.cpp warns about an EOS that is not end-of-generation.
        writer.add_bos_token_id(special_ids["cls_token"])
        writer.add_sep_token_id(special_ids["sep_token"])
        writer.add_unk_token_id(special_ids["unk_token"])
        if "pad_token" in special_ids:
            writer.add_pad_token_id(special_ids["pad_token"])
        if "mask_token" in special_ids:
            writer.add_mask_token_id(special_ids["mask_token"])
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_sep_token(True)
        for name in sorted(mapped, key=_tensor_order):
            # llama.cpp adds the token-type row to F32 activations with ggml_add,
            # which has no F16 operand on CPU: keep it (and all vectors) F32.
            half = mapped[name].ndim == 2 and name != "token_types.weight"
            writer.add_tensor(name, mapped[name].astype(np.float16 if half else np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return out_path


def _tensor_order(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) if parts[0] == "blk" else -1, name)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m aifactory.engines.bert_gguf MODEL_DIR OUT``.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        Process exit status.

    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m aifactory.engines.bert_gguf MODEL_DIR OUT.gguf", file=sys.stderr)
        return 2
    try:
        out = convert_bert_to_gguf(Path(args[0]), Path(args[1]))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
