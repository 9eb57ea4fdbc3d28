"""Write an in-code model and its tokenizer as a GGUF file, the way llama.cpp's ``convert_hf_to_gguf.py`` does.

Tests use it to check that GGUF sources of each family load through transformers' GGUF reader (which inverts
exactly these conventions) into the model they were written from. Conventions followed, per llama.cpp:

* architecture names as llama.cpp spells them (Mixtral is written as ``llama`` with experts, as llama.cpp does);
* tensor names from gguf-py's own name map (the one transformers' reader inverts), never a hand list;
* Llama-architecture q/k rows permuted to llama.cpp's rotary layout; Gemma norm weights stored as ``1 + w``;
  fused expert ``gate_up`` split into ``ffn_gate_exps``/``ffn_up_exps``; no ``output`` tensor when tied;
* float32 tensors, and the tokenizer in the metadata (``tokenizer.ggml.model = gpt2``, tokens, merges, types).

A config the format cannot state (a tensor with no GGUF name, such as a dense layer in a Qwen3-MoE stack) raises
``ValueError`` instead of writing a file that means something else.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch

from clueflow.models import tiny_model

# transformers model_type -> llama.cpp architecture
GGUF_ARCH = {"llama": "llama", "mixtral": "llama", "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3",
             "olmo2": "olmo2", "qwen3_moe": "qwen3moe"}


# Where a tiny test config (clueflow.models.tiny_model) says more than a llama.cpp GGUF of its family can carry
# through transformers' GGUF reader: fields llama.cpp fixes per family, and fields the file states but the reader
# ignores (left at the config class's default). With these values a model reads back as itself.
READABLE = {
    # llama.cpp scales attention by 1/sqrt(key_length); the reader keeps query_pre_attn_scalar at its default 256
    "gemma2": {"head_dim": 256, "query_pre_attn_scalar": 256},
    # ... and llama.cpp fixes Gemma 3's layer pattern at five sliding-window layers to one full (the class default)
    "gemma3_text": {"head_dim": 256, "query_pre_attn_scalar": 256, "num_hidden_layers": 6, "layer_types": None},
    # llama.cpp's qwen3moe routes in every layer and renormalizes the top-k weights; the reader ignores
    # expert_feed_forward_length and keeps moe_intermediate_size at its default 768
    "qwen3_moe": {"mlp_only_layers": [], "norm_topk_prob": True, "moe_intermediate_size": 768},
}


def readable_tiny_model(arch: str, **config):
    """``tiny_model(arch)`` with :data:`READABLE`'s values (and ``config``) set: fresh random weights, and random
    norm scales as ``tiny_model``'s, so that a norm stored wrongly shows in the logits."""
    from transformers import AutoModelForCausalLM

    base = tiny_model(arch).config
    overrides = READABLE.get(arch, {}) | config
    if not overrides:
        return tiny_model(arch)
    cfg = type(base)(**(base.to_dict() | overrides))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


def _head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def _rope_theta(cfg) -> float:
    rope = cfg.rope_parameters  # Gemma 3 keeps one per layer type; the file states the full-attention one
    return rope.get("full_attention", rope)["rope_theta"]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: rotary halves interleaved per head (transformers reverses it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_metadata(writer: gguf.GGUFWriter, cfg, arch: str) -> None:
    writer.add_name(f"tiny {cfg.model_type}")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(cfg))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if arch == "llama":
        writer.add_rope_dimension_count(_head_dim(cfg))
    if arch in ("gemma2", "gemma3", "qwen3moe"):
        writer.add_key_length(_head_dim(cfg))
        writer.add_value_length(_head_dim(cfg))
    if arch in ("gemma2", "gemma3"):
        writer.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        writer.add_final_logit_softcapping(cfg.final_logit_softcapping)
    experts = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
    if experts:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(cfg.num_experts_per_tok)
    if arch == "qwen3moe":
        writer.add_expert_feed_forward_length(cfg.moe_intermediate_size)


def _write_tokenizer(writer: gguf.GGUFWriter, tok) -> None:
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    special = set(tok.all_special_ids)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_add_bos_token(False)


def _gguf_tensors(model, arch: str):
    """(GGUF name, float32 array) for every weight, named through gguf-py's map for ``arch``."""
    cfg = model.config
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp writes no output tensor for tied embeddings
        w = tensor.detach().float().numpy()
        base, _, suffix = hf_name.rpartition(".")
        if suffix not in ("weight", "bias"):  # fused expert tensors carry no suffix
            base, suffix = hf_name, "weight"
        if base.endswith("mlp.experts.gate_up_proj"):  # [E, 2I, H]: gate rows first, then up
            stem = base.removesuffix("gate_up_proj")
            half = w.shape[1] // 2
            parts = [(stem + "gate_proj", w[:, :half]), (stem + "up_proj", w[:, half:])]
        else:
            parts = [(base, w)]
        for part, data in parts:
            name = names.get_name(part)
            if name is None:
                raise ValueError(f"{cfg.model_type}: {hf_name} has no GGUF name in llama.cpp's {arch!r} layout")
            if arch == "llama" and name.endswith((".attn_q", ".attn_k")):
                data = _permute(data, cfg.num_attention_heads if name.endswith("q") else cfg.num_key_value_heads)
            if arch in ("gemma2", "gemma3") and hf_name.endswith("norm.weight"):
                data = data + 1  # llama.cpp stores Gemma's (1 + w) norm scale
            yield f"{name}.{suffix}", np.ascontiguousarray(data, dtype=np.float32)


def write_gguf(model, tok, path: str | Path) -> Path:
    """Write ``model`` (a transformers causal LM) and ``tok`` (a byte-level BPE tokenizer) to ``path``."""
    cfg = model.config
    if cfg.model_type not in GGUF_ARCH:
        raise ValueError(f"no llama.cpp architecture for {cfg.model_type!r}")
    arch = GGUF_ARCH[cfg.model_type]
    tensors = list(_gguf_tensors(model, arch))  # before the file is opened: an unstateable model writes nothing
    path = Path(path)
    writer = gguf.GGUFWriter(path, arch)
    _write_metadata(writer, cfg, arch)
    _write_tokenizer(writer, tok)
    for name, data in tensors:
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
