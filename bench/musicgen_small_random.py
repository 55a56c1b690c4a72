"""A random-weight MusicGen with the full size of facebook/musicgen-small, built offline and saved once.

Same classes and the same sizes as the real checkpoint (so the same FLOPs and bytes per step); the weights are
random, so the output is noise. Sizes: decoder 24 layers, hidden 1024, 16 heads, ffn 4096, 4 codebooks x 2048
(pad/bos id 2048, untied heads); text encoder T5-base (12 layers, d_model 768, d_ff 3072, 12 heads, d_kv 64,
32128 tokens, relu FFN); EnCodec 32 kHz (num_filters 64, hidden 128, 2 LSTM layers, upsampling 8·5·4·4,
2.2 kbps = 4 codebooks of 2048, no causal conv, no normalisation, no conv shortcut). The tokenizer is tunereel.tiny's
offline word-level T5Tokenizer (its ids are < 32128, so the embedding table is the real size).

    .venv/bin/python bench/musicgen_small_random.py      # builds .cache/tunereel/bench/musicgen-small-random
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / ".cache" / "tunereel" / "bench" / "musicgen-small-random"

TEXT_ENCODER = dict(
    model_type="t5", vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
    relative_attention_num_buckets=32, dropout_rate=0.0, feed_forward_proj="relu",
)
AUDIO_ENCODER = dict(
    model_type="encodec", sampling_rate=32000, audio_channels=1, upsampling_ratios=[8, 5, 4, 4],
    target_bandwidths=[2.2], codebook_size=2048, num_filters=64, hidden_size=128, num_lstm_layers=2,
    use_causal_conv=False, normalize=False, use_conv_shortcut=False, norm_type="weight_norm", pad_mode="reflect",
    chunk_length_s=None, overlap=None,
)
DECODER = dict(
    vocab_size=2048, num_codebooks=4, audio_channels=1, hidden_size=1024, ffn_dim=4096, num_hidden_layers=24,
    num_attention_heads=16, max_position_embeddings=2048, dropout=0.0, activation_function="gelu",
    pad_token_id=2048, bos_token_id=2048, tie_word_embeddings=False,
)


def build(out_dir: Path = DEFAULT_DIR, seed: int = 0) -> Path:
    """Build (once) and return the folder; loadable with MusicgenForConditionalGeneration.from_pretrained."""
    import torch
    from transformers import (
        EncodecFeatureExtractor, GenerationConfig, MusicgenConfig, MusicgenForConditionalGeneration, MusicgenProcessor,
    )

    from tunereel.tiny import MUSICGEN_GENERATION, make_codec_audible, offline_tokenizer

    out_dir = Path(out_dir)
    if (out_dir / ".complete").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    config = MusicgenConfig(text_encoder=TEXT_ENCODER, audio_encoder=AUDIO_ENCODER, decoder=DECODER)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    make_codec_audible(model.audio_encoder)  # random codebooks, so different codes decode to different audio
    model.generation_config = GenerationConfig(**MUSICGEN_GENERATION)
    model.save_pretrained(out_dir)
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_value=0.0)
    MusicgenProcessor(feature_extractor=features, tokenizer=offline_tokenizer(model_max_length=512)).save_pretrained(out_dir)
    (out_dir / ".complete").touch()
    return out_dir


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
