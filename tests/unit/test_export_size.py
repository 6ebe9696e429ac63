"""learner/export.py's size of an export, which the learner checks against free space before writing it: on a
2-layer-free toy Llama, counted by hand and against what the export writes."""

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from learner.export import CONFIG_BYTES, export_adapter, export_bytes, export_merged  # noqa: E402


@pytest.fixture(scope="module")
def toy_model():
    """One layer, hidden 16, vocab 32, tied embeddings, float32; LoRA rank 2 on q_proj and v_proj."""
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(config)
    return peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))


def test_a_merged_export_counts_each_base_weight_once_in_the_engines_dtype(toy_model, tmp_path):
    # embeddings 32 * 16 = 512 (lm_head tied: not again); q, k, v, o 16 * 16 = 256 each; gate, up, down
    # 16 * 32 = 512 each; three norms of 16: 512 + 1024 + 1536 + 48 = 3120 weights
    assert export_bytes(toy_model, merged=True, dtype=torch.bfloat16) == 3120 * 2 + CONFIG_BYTES
    assert export_bytes(toy_model, merged=True, dtype=torch.float32) == 3120 * 4 + CONFIG_BYTES
    written = load_file(export_merged(toy_model, tmp_path / "merged-v1", torch.bfloat16) / "model.safetensors")
    assert sum(tensor.numel() * tensor.element_size() for tensor in written.values()) == 3120 * 2


def test_an_adapter_export_counts_its_lora_weights_at_the_larger_of_both_dtypes(toy_model, tmp_path):
    # A (2 x 16) and B (16 x 2) on two modules: 128 weights, written first in float32 by PEFT
    assert export_bytes(toy_model, merged=False, dtype=torch.bfloat16) == 128 * 4 + CONFIG_BYTES
    written = load_file(export_adapter(toy_model, tmp_path / "adapter-v1", torch.bfloat16)
                        / "adapter_model.safetensors")
    assert sum(tensor.numel() for tensor in written.values()) == 128


def test_a_merged_export_past_the_shard_size_is_written_in_shards_with_an_index(toy_model, tmp_path):
    """Shards of at most 2,000 bytes in float32: the embeddings (2,048 bytes) alone, then the rest packed in order;
    the shards hold exactly the one-file export's tensors."""
    import json

    whole = load_file(export_merged(toy_model, tmp_path / "merged-v1", torch.float32) / "model.safetensors")
    sharded = export_merged(toy_model, tmp_path / "merged-v2", torch.float32, shard_bytes=2000)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert not (sharded / "model.safetensors").exists() and files == sorted(p.name for p in sharded.glob("*.safetensors"))
    assert index["metadata"]["total_size"] == 3120 * 4
    shards = {name: load_file(sharded / name) for name in files}
    assert all(sum(t.numel() * 4 for t in shard.values()) <= 2048 for shard in shards.values())
    assert index["weight_map"]["model.embed_tokens.weight"] not in {
        index["weight_map"][name] for name in whole if name != "model.embed_tokens.weight"}  # 2,048 > 2,000: alone
    read_back = {name: tensor for shard in shards.values() for name, tensor in shard.items()}
    assert read_back.keys() == whole.keys()
    assert all(torch.equal(read_back[name], whole[name]) for name in whole)


def test_an_adapter_merged_into_the_base_files_gives_the_learners_merged_weights(tmp_path):
    """What an engine synced by merged weights loads: base weights from disk plus the shipped adapter's deltas, the
    same tensors as the learner's own merge; an adapter with a module the base lacks is refused before any tensor."""
    from learner.export import merged_from_adapter, merged_tensors

    config = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=True)
    torch.manual_seed(1)
    base = transformers.LlamaForCausalLM(config)
    base.save_pretrained(tmp_path / "base", max_shard_size="2KB")  # a sharded checkpoint, with its index
    assert (tmp_path / "base" / "model.safetensors.index.json").exists()
    model = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)  # PEFT starts B at zero: give the adapter a delta
    adapter = export_adapter(model, tmp_path / "adapter-v1", torch.float32)
    engine_side = dict(merged_from_adapter(str(tmp_path / "base"), str(adapter), torch.float32))
    learner_side = dict(merged_tensors(model, torch.float32))
    assert engine_side.keys() == learner_side.keys()
    assert all(torch.allclose(engine_side[name], learner_side[name], rtol=0, atol=1e-6) for name in learner_side)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(engine_side[q_proj], model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)

    weights = load_file(adapter / "adapter_model.safetensors")
    weights["base_model.model.model.layers.0.mlp.absent.lora_A.weight"] = torch.zeros(2, 16)
    from safetensors.torch import save_file
    save_file(weights, adapter / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"no base weight or no A/B pair for \['model.layers.0.mlp.absent.weight'"):
        merged_from_adapter(str(tmp_path / "base"), str(adapter), torch.float32)  # raised before any tensor


def test_a_merged_export_without_room_is_refused_before_anything_is_written(toy_model, tmp_path, monkeypatch):
    import learner.weights

    needed = export_bytes(toy_model, merged=True, dtype=torch.float32)
    monkeypatch.setattr(learner.weights, "free_bytes", lambda path: needed - 1)
    with pytest.raises(OSError, match=r"^merged export needs 1 MiB, .* has 1 MiB free: make room there"):
        export_merged(toy_model, tmp_path / "merged-v1", torch.float32)
    assert list(tmp_path.iterdir()) == []
