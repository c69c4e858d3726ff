"""Policies (causal LMs with seeded batched generation), presets, and the byte tokenizer for tiny test models.

    from alpaca_farm_env.models import load_policy
    policy = load_policy("smollm2-135m")          # or "tiny-llama", a local folder, a Hugging Face model id
    policy.generate([prompt], max_new_tokens=64, temperature=0)  # -> [[response]]
"""
from .fingerprint import weights_fingerprint
from .policy import Policy
from .presets import (
    DEFAULT_DTYPE,
    POLICIES,
    from_pretrained,
    list_policies,
    load_policy,
    register_policy,
    resolve_device,
    use_bf16,
    resolve_dtype,
    smollm2_folder,
    smollm2_gguf_path,
    tiny_llama,
)
from .tokenizer import BYTE_VOCAB_SIZE, byte_tokenizer

__all__ = [
    "Policy", "DEFAULT_DTYPE", "POLICIES", "from_pretrained", "list_policies", "load_policy", "register_policy",
    "resolve_device", "resolve_dtype", "use_bf16", "smollm2_folder", "smollm2_gguf_path", "tiny_llama", "BYTE_VOCAB_SIZE",
    "byte_tokenizer", "weights_fingerprint",
]
