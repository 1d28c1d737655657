"""Tiny configs of the real catalog architectures, for tests."""

TINY_VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "image_size": 32,
    "patch_size": 8,
}
TINY_SIGLIP = dict(TINY_VIT)
# wav2vec2 with the real layout (conv feature encoder with group norm, weight-normed positional
# conv, post-LN transformer), 3 conv layers instead of 7: receptive field 40 samples, stride 20.
TINY_WAV2VEC2 = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "conv_dim": (32, 32, 32),
    "conv_kernel": (10, 3, 3),
    "conv_stride": (5, 2, 2),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "classifier_proj_size": 16,
}

# roberta-openai-detector, tiny: 2 layers of width 32 and a 1,000-token dev tokenizer; the
# catalog's 512-token windows stay (texts of a few thousand characters make several windows).
TINY_ROBERTA = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 37,
    "tokenizer_vocab_size": 1000,
}
