"""Loading ``hf:PATH``: real model directories and a real gguf file written here, and every refusal."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autoprune.errors import UserError  # noqa: E402
from autoprune.llm.loading import (  # noqa: E402
    INSTALL_HINT,
    LMSpec,
    gguf_cache_folder,
    load_lm,
    require_llm_extra,
    resolve_lm,
)
from autoprune.testing.tiny_lm import FAMILIES, save_tiny_model_dir, tiny_model  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"


@pytest.fixture
def texts() -> list[str]:
    return [p for p in PROSE.read_text(encoding="utf-8").split("\n\n") if p.strip()]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("family", FAMILIES)
def test_a_saved_model_directory_loads_with_the_same_outputs(tmp_path: Path, texts: list[str], family: str) -> None:
    folder = save_tiny_model_dir(tmp_path / family, family, texts, seed=3)
    lm = load_lm(f"hf:{folder}")
    reference = tiny_model(family, seed=3, vocab_size=lm.model.config.vocab_size)
    ids = lm.tokenizer("The keeper walked the length of the island", return_tensors="pt").input_ids
    assert ids.shape[1] > 3 and int(ids.max()) < lm.model.config.vocab_size
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, reference(ids).logits)
    assert not lm.model.training
    assert next(lm.model.parameters()).dtype == torch.float32
    assert lm.spec.kind == "dir" and lm.spec.model_type == family and lm.spec.path == str(folder.resolve())
    assert lm.max_context == 256
    again = LMSpec.from_dict(json.loads(json.dumps(lm.spec.to_dict()))).load()  # as a worker rebuilds it
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, lm.model(ids).logits)


def test_the_fingerprint_follows_the_content(tmp_path: Path, texts: list[str]) -> None:
    first = resolve_lm(f"hf:{save_tiny_model_dir(tmp_path / 'a', 'llama', texts, seed=0)}")
    same = resolve_lm(f"hf:{save_tiny_model_dir(tmp_path / 'b', 'llama', texts, seed=0)}")
    other = resolve_lm(f"hf:{save_tiny_model_dir(tmp_path / 'c', 'llama', texts, seed=1)}")
    assert first.fingerprint == same.fingerprint != other.fingerprint
    first.check_unchanged()
    config = Path(first.path) / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    with pytest.raises(UserError, match="changed since this run started"):
        first.check_unchanged()


def test_a_hub_name_is_refused_without_touching_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="hub name.*never downloads"):
        resolve_lm("hf:HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(UserError, match="does not exist"):
        resolve_lm("hf:./no/such/model")
    with pytest.raises(UserError, match="hf:PATH"):
        resolve_lm("HuggingFaceTB/SmolLM2-135M")


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path, texts: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_lm(f"hf:{empty}")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="'bert' model.*llama, qwen2, mistral, gpt2"):
        load_lm(f"hf:{bert}")
    broken = save_tiny_model_dir(tmp_path / "broken", "qwen2", texts)
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError, match="could not be loaded as a Hugging Face causal LM"):
        load_lm(f"hf:{broken}")
    untokenized = save_tiny_model_dir(tmp_path / "untokenized", "gpt2", texts)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (untokenized / name).unlink()
    with pytest.raises(UserError, match="no usable tokenizer"):
        load_lm(f"hf:{untokenized}")
    text = tmp_path / "weights.txt"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a .gguf file"):
        load_lm(f"hf:{text}")


def test_a_gguf_file_that_does_not_load_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(200)))
    with pytest.raises(UserError, match="not a readable gguf file"):
        load_lm(f"hf:{bad}")


def test_a_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gguf", None)  # what an absent package looks like to import
    with pytest.raises(UserError, match="needs gguf, which is not installed") as caught:
        require_llm_extra(gguf=True)
    assert INSTALL_HINT in str(caught.value)
    require_llm_extra()  # a model directory needs only transformers


# --- a real gguf file, written the way llama.cpp's converter writes a Llama model --------------


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's interleaving of the rotary halves of q/k rows, which transformers undoes on load."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_tiny_gguf(path: Path, *, seed: int = 0) -> torch.nn.Module:
    """Write a tiny float32 Llama gguf with a byte-level BPE tokenizer; return the model it holds."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = ["<pad>", "<s>", "</s>", *bytes_to_unicode().values(), "th", "he", "Ġt", "the", "Ġthe"]
    merges = ["t h", "h e", "Ġ t", "th e", "Ġt he"]
    model = tiny_model("llama", seed=seed, vocab_size=len(tokens))
    c = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])  # tied: no output.weight
    names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    for i in range(c.num_hidden_layers):
        layer = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_q.weight",
                          _permute(state[layer + "self_attn.q_proj.weight"], c.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight",
                          _permute(state[layer + "self_attn.k_proj.weight"], c.num_key_value_heads))
        for short, long in names.items():
            writer.add_tensor(f"blk.{i}.{short}.weight", state[f"{layer}{long}.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def test_a_gguf_file_is_dequantised_once_and_cached_as_safetensors(
        tmp_path: Path, own_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = tmp_path / "tiny-llama.gguf"
    reference = write_tiny_gguf(file, seed=5)
    caplog.set_level(logging.INFO, logger="autoprune.llm.loading")
    lm = load_lm(f"hf:{file}")
    assert "dequantising tiny-llama.gguf" in caplog.text
    folder = gguf_cache_folder(file.resolve(), lm.spec.fingerprint)
    assert lm.model_dir == folder and folder.parent.parent == own_cache
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary left behind
    assert lm.spec.kind == "gguf" and lm.spec.model_type == "llama" and lm.max_context == 256
    ids = lm.tokenizer("the theory of the tower", return_tensors="pt").input_ids
    assert "the" in lm.tokenizer.convert_ids_to_tokens(ids[0])  # the file's merges, not bytes alone
    with torch.no_grad():
        assert torch.allclose(lm.model(ids).logits, reference(ids).logits, atol=1e-5)
    caplog.clear()
    again = LMSpec.from_dict(lm.spec.to_dict()).load()
    assert "dequantising" not in caplog.text and again.model_dir == folder
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, lm.model(ids).logits)
    generated = again.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 4)
