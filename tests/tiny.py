"""Tiny configs of the real catalog architectures, for tests (SPEC §3)."""

TINY_VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "image_size": 32,
    "patch_size": 8,
}
TINY_SIGLIP = dict(TINY_VIT)
