"""Random-weight "tiny" MusicGen and LTX-Video models, built offline.

No model hub is reachable here, so tests and the offline `make run` use models of the *same classes* as the real
checkpoints, built from small configs, saved with `save_pretrained` and loaded back through the normal
`from_pretrained(folder)` path. What must match the real models is kept: MusicGen's 32 kHz EnCodec at 50 frames per
second with 4 delayed codebooks; LTX's VAE compression (32x spatial, 8x temporal), its 128-token T5 prompt and its
scheduler config. Everything else is shrunk so a CPU runs it in seconds. Outputs are noise, never music or video.

    python -m tunereel.tiny --models-dir models/    # builds both (if missing) and prints their folders
    python -m tunereel.tiny --models-dir models/ --hub-cache /tmp/hub   # + LTX-Video repos as a fake HF cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

MUSICGEN_DIRNAME = "tiny-musicgen"
LTX_DIRNAME = "tiny-ltx"

# Marker written last into a finished build; a folder without it is never treated as a model.
_DONE = ".tiny-complete"

# One small word list serves both tokenizers; any other word maps to <unk> (never an error), digits split one by one.
_WORDS = """
a an and the of with in on at to by for from into over under through while as is are
pop rock jazz blues classical electronic edm house techno ambient hip hop rap lofi lo-fi funk soul disco metal punk
folk country reggae latin cinematic orchestral piano drums guitar bass synth strings violin cello brass saxophone
trumpet flute choir vocals beat upbeat calm happy sad dark bright energetic chill relaxing epic dreamy melancholic
slow fast bpm tempo music song video camera city night day sunset sunrise sea ocean forest mountain sky sun rain
snow street car people dancing dance light lights neon aerial shot close-up wide slow-motion motion moving flying
""".split()
_PUNCT = list(",.:;!?-'\"()")
_DIGITS = list("0123456789")


# ---------------------------------------------------------------------------------------------------------------
# A fake Hugging Face cache: a saved folder laid out as `hf download` leaves a published repository, so that the
# real preset (the hub id, not a folder) loads offline (HF_HUB_OFFLINE=1) through the real from_pretrained path.
# ---------------------------------------------------------------------------------------------------------------
def fake_revision(repo_id: str) -> str:
    """A stable 40-hex commit id for a repository that names no revision."""
    return hashlib.sha1(f"tunereel-fake:{repo_id}".encode()).hexdigest()


def write_fake_hub_repo(cache_dir: Path, repo_id: str, folder: Path, revision: str | None = None) -> Path:
    """Copy `folder` into the hub cache `cache_dir` (HF_HOME/hub, or HF_HUB_CACHE) as repository `repo_id` at commit
    `revision` (a 40-hex id; None: a fake one), laid out as huggingface_hub writes it: `models--ORG--NAME/` with
    `blobs/<sha256>` (the bytes), `snapshots/<revision>/<path>` (relative symlinks to the blobs, subfolders kept)
    and `refs/main` (the revision). Returns the snapshot folder. Works for any repository (transformers or
    diffusers layout); an existing snapshot of the same revision is replaced.
    """
    revision = revision or fake_revision(repo_id)
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for source in sorted(Path(folder).rglob("*")):
        relative = source.relative_to(folder)
        if source.is_dir() or relative.name.startswith(".") or any(part.startswith(".") for part in relative.parts):
            continue
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        blob = repo_dir / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(source, blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot

# ---------------------------------------------------------------------------------------------------------------
# MusicGen (transformers MusicgenForConditionalGeneration), shaped like facebook/musicgen-small.
# ---------------------------------------------------------------------------------------------------------------
_MUSICGEN_CODEBOOK_SIZE = 2048  # as the real one: 11 bits x 4 codebooks x 50 Hz = 2.2 kbps; pad/bos id = 2048

MUSICGEN_TEXT_ENCODER = dict(  # T5 encoder; the real one is t5-base
    model_type="t5",
    vocab_size=None,  # filled in from the tokenizer
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    dropout_rate=0.0,
    feed_forward_proj="relu",
)
MUSICGEN_AUDIO_ENCODER = dict(  # EnCodec: decodes the generated codes (encodes audio prompts)
    model_type="encodec",
    sampling_rate=32000,
    audio_channels=1,
    upsampling_ratios=[8, 5, 4, 4],  # hop 640 samples -> 50 frames per second, as the real model
    target_bandwidths=[2.2],  # 2.2 kbps at 50 Hz x 11 bits -> 4 codebooks, as the real model
    codebook_size=_MUSICGEN_CODEBOOK_SIZE,
    hidden_size=16,
    codebook_dim=16,
    num_filters=4,
    num_residual_layers=1,
    num_lstm_layers=1,
    norm_type="weight_norm",
    use_conv_shortcut=False,
    normalize=False,
    use_causal_conv=False,
    pad_mode="reflect",
    chunk_length_s=None,
    overlap=None,
)
MUSICGEN_DECODER = dict(
    vocab_size=_MUSICGEN_CODEBOOK_SIZE,
    num_codebooks=4,
    audio_channels=1,
    hidden_size=32,
    ffn_dim=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=2048,
    dropout=0.0,
    pad_token_id=_MUSICGEN_CODEBOOK_SIZE,
    bos_token_id=_MUSICGEN_CODEBOOK_SIZE,
)
# As facebook/musicgen-*'s generation_config.json: sampling, top-k 250, CFG 3.0, max 1500 steps (30 s at 50 Hz).
MUSICGEN_GENERATION = dict(
    do_sample=True,
    top_k=250,
    guidance_scale=3.0,
    max_length=1500,
    pad_token_id=_MUSICGEN_CODEBOOK_SIZE,
    bos_token_id=_MUSICGEN_CODEBOOK_SIZE,
    decoder_start_token_id=_MUSICGEN_CODEBOOK_SIZE,
)

# ---------------------------------------------------------------------------------------------------------------
# LTX-Video (diffusers LTXPipeline), shaped like Lightricks/LTX-Video.
# ---------------------------------------------------------------------------------------------------------------
_LTX_LATENT_CHANNELS = 8  # the real one has 128

LTX_TEXT_ENCODER = dict(  # T5 encoder; the real one is t5-v1_1-xxl (d_model 4096)
    vocab_size=None,  # filled in from the tokenizer
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
)
LTX_TRANSFORMER = dict(
    in_channels=_LTX_LATENT_CHANNELS,
    out_channels=_LTX_LATENT_CHANNELS,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=2,
    attention_head_dim=8,
    cross_attention_dim=16,
    num_layers=1,
    caption_channels=32,  # = the text encoder's d_model
)
LTX_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=_LTX_LATENT_CHANNELS,
    # patch_size 4 x three 2x spatio-temporal stages = 32x spatial and 8x temporal compression, as the real VAE.
    patch_size=4,
    patch_size_t=1,
    spatio_temporal_scaling=(True, True, True, False),
    decoder_spatio_temporal_scaling=(True, True, True, False),
    block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    layers_per_block=(0, 0, 0, 0, 0),
    decoder_layers_per_block=(0, 0, 0, 0, 0),  # no resnets: decode time is most of a tiny run
    decoder_inject_noise=(False, False, False, False, False),
    timestep_conditioning=False,
    encoder_causal=True,
    decoder_causal=False,
)
# As the diffusers conversion script writes LTX-Video's scheduler (resolution-dependent shift, terminal sigma 0.1).
LTX_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.95,
    max_shift=2.05,
    base_image_seq_len=1024,
    max_image_seq_len=4096,
    shift_terminal=0.1,
)
LTX_MAX_PROMPT_TOKENS = 128  # LTXPipeline encodes prompts to 128 tokens


def offline_tokenizer(model_max_length: int):
    """A real `T5Tokenizer` (the class both checkpoints use) over a small word vocabulary, built offline.

    transformers 5's T5Tokenizer accepts a Unigram vocabulary directly. Words are "▁word" pieces; anything not in
    the list falls back to <unk>. Ids follow T5's layout: <pad>=0, </s>=1, <unk>=2.
    """
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -1.0) for w in dict.fromkeys(_WORDS)]
    vocab += [(p, -2.0) for p in _PUNCT + _DIGITS] + [("▁", -3.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def word_tokenizer(model_max_length: int):
    """The offline T5 tokenizer of the tiny models (for benchmarks that build full-size models around it)."""
    return offline_tokenizer(model_max_length)


@torch.no_grad()
def make_codec_audible(codec) -> None:
    """Make a random EnCodec decode different codes to different, noise-like audio at about -20 dBFS.

    At random init its codebooks are zeros (every code decodes alike) and its weight-norm gains are tiny, so the
    output would be a fixed bias pattern with a DC offset. Give the codebooks random vectors, drop the decoder
    biases, and scale each top-level conv so its output has unit variance on random codes (the last one: 0.1).
    """
    for layer in codec.quantizer.layers:
        layer.codebook.embed.normal_()
        layer.codebook.embed_avg.copy_(layer.codebook.embed)
    for module in codec.decoder.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and module.bias is not None:
            module.bias.zero_()
    codes = torch.randint(codec.config.codebook_size, (len(codec.quantizer.layers), 1, 200))
    hidden = codec.quantizer.decode(codes)
    last = len(codec.decoder.layers) - 1
    for i, layer in enumerate(codec.decoder.layers):
        conv = getattr(layer, "conv", None)
        if conv is not None:  # weight norm: weight = g * v / |v|, so scaling g scales the (bias-free) output
            target = 0.1 if i == last else 1.0
            conv.parametrizations.weight.original0.mul_(target / layer(hidden).std())
        hidden = layer(hidden)


# The melody checkpoints' preprocessor_config.json (MusicgenMelodyFeatureExtractor: 12-bin chroma of 32 kHz audio).
# Written as data, so building needs no torchaudio; loading it (MusicgenMelodyProcessor) does, as with the real one.
MUSICGEN_MELODY_FEATURES = dict(
    feature_extractor_type="MusicgenMelodyFeatureExtractor",
    processor_class="MusicgenMelodyProcessor",
    feature_size=12,
    sampling_rate=32000,
    hop_length=4096,
    chunk_length=30,
    n_fft=16384,
    num_chroma=12,
    padding_value=0.0,
    padding_side="left",
    return_attention_mask=True,
)


def build_tiny_musicgen(
    out_dir: Path, seed: int = 0, *, channels: int = 1, melody: bool = False, weights: str = "safetensors"
) -> Path:
    """Save a random-weight MusicGen model + processor into `out_dir`; returns `out_dir`.

    channels=2: shaped like facebook/musicgen-stereo-* (decoder audio_channels 2, 8 codebooks: 4 per channel,
    interleaved; the codec stays mono). melody=True: shaped like facebook/musicgen-melody
    (MusicgenMelodyForConditionalGeneration, decoder-only with 12-bin chroma conditioning, its processor's config).
    weights="bin": the weights as pytorch_model.bin, as facebook/musicgen-medium and -large publish them.
    """
    import json

    from transformers import (
        EncodecFeatureExtractor,
        GenerationConfig,
        MusicgenConfig,
        MusicgenForConditionalGeneration,
        MusicgenMelodyConfig,
        MusicgenMelodyForConditionalGeneration,
        MusicgenProcessor,
    )

    out_dir = Path(out_dir)
    tokenizer = offline_tokenizer(model_max_length=512)
    decoder = {**MUSICGEN_DECODER, "num_codebooks": 4 * channels, "audio_channels": channels}
    sub_configs = dict(
        text_encoder={**MUSICGEN_TEXT_ENCODER, "vocab_size": len(tokenizer)},
        audio_encoder=MUSICGEN_AUDIO_ENCODER,
        decoder=decoder,
    )
    torch.manual_seed(seed)
    if melody:
        model = MusicgenMelodyForConditionalGeneration(MusicgenMelodyConfig(**sub_configs, num_chroma=12, chroma_length=235))
    else:
        model = MusicgenForConditionalGeneration(MusicgenConfig(**sub_configs))
    model.eval()
    make_codec_audible(model.audio_encoder)
    model.generation_config = GenerationConfig(**MUSICGEN_GENERATION)
    model.save_pretrained(out_dir)
    if weights == "bin":  # transformers 5 always saves safetensors; the same tensors as a pickle, as published
        from safetensors.torch import load_file

        torch.save(load_file(out_dir / "model.safetensors"), out_dir / "pytorch_model.bin")
        (out_dir / "model.safetensors").unlink()

    # As the published repositories: tokenizer files + preprocessor_config.json (the feature extractor's config, which
    # names the processor class), no processor_config.json.
    tokenizer.save_pretrained(out_dir)
    if melody:
        (out_dir / "preprocessor_config.json").write_text(json.dumps(MUSICGEN_MELODY_FEATURES, indent=2) + "\n")
    else:
        features = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_value=0.0)
        features.processor_class = MusicgenProcessor.__name__
        features.save_pretrained(out_dir)
    return out_dir


def build_tiny_ltx(out_dir: Path, seed: int = 0) -> Path:
    """Save a random-weight LTX-Video pipeline into `out_dir`; returns `out_dir`."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    out_dir = Path(out_dir)
    tokenizer = offline_tokenizer(model_max_length=LTX_MAX_PROMPT_TOKENS)
    torch.manual_seed(seed)
    pipe = LTXPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_SCHEDULER),
        vae=AutoencoderKLLTXVideo(**LTX_VAE).eval(),
        text_encoder=T5EncoderModel(T5Config(**{**LTX_TEXT_ENCODER, "vocab_size": len(tokenizer)})).eval(),
        tokenizer=tokenizer,
        transformer=LTXVideoTransformer3DModel(**LTX_TRANSFORMER).eval(),
    )
    pipe.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------------------------
# LTX-Video 0.9.5+ (0.9.5, 0.9.7, 0.9.8): the VAE of diffusers' conversion script for "0.9.5"/"0.9.7" — four
# LTXVideo095DownBlock3D with spatial / temporal / spatio-temporal downsamplers, a timestep-conditioned decoder (the
# reason for decode_timestep and decode_noise_scale), 2048 channels at the encoder's end (how diffusers' single-file
# loader tells this VAE apart) — and the scheduler those repositories ship: FlowMatchEulerDiscreteScheduler with no
# resolution-dependent shift and no terminal stretch, so custom timesteps are the sigmas x 1000.
# ---------------------------------------------------------------------------------------------------------------
LTX_095_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=_LTX_LATENT_CHANNELS,
    block_out_channels=(16, 32, 64, 256, 2048),  # the real one: (128, 256, 512, 1024, 2048)
    down_block_types=("LTXVideo095DownBlock3D",) * 4,
    decoder_block_out_channels=(16, 32, 64),  # the real one: (256, 512, 1024)
    layers_per_block=(0, 0, 0, 0, 0),
    decoder_layers_per_block=(0, 0, 0, 0),
    spatio_temporal_scaling=(True, True, True, True),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False),
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2),
    timestep_conditioning=True,
    patch_size=4,
    patch_size_t=1,
    encoder_causal=True,
    decoder_causal=False,
    spatial_compression_ratio=32,
    temporal_compression_ratio=8,
)
LTX_095_SCHEDULER = dict(use_dynamic_shifting=False)  # diffusers' conversion script for 0.9.5 / 0.9.7
LTX_UPSAMPLER = dict(in_channels=_LTX_LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3,
                     spatial_upsample=True, temporal_upsample=False)  # fmt: skip  # the real one: 128 / 512 / 4
LTX_095_MAX_PROMPT_TOKENS = 256  # LTXConditionPipeline's max_sequence_length


def build_tiny_ltx_095(out_dir: Path, seed: int = 0, pipeline_class: str = "LTXConditionPipeline") -> Path:
    """Save a random-weight LTX-Video 0.9.5+-style pipeline (`pipeline_class` in its model_index.json)."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    cls = {"LTXPipeline": LTXPipeline, "LTXConditionPipeline": LTXConditionPipeline}[pipeline_class]
    tokenizer = offline_tokenizer(model_max_length=LTX_MAX_PROMPT_TOKENS)  # the published tokenizers say 128, too
    torch.manual_seed(seed)
    pipe = cls(
        scheduler=FlowMatchEulerDiscreteScheduler(**LTX_095_SCHEDULER),
        vae=AutoencoderKLLTXVideo(**LTX_095_VAE).eval(),
        text_encoder=T5EncoderModel(T5Config(**{**LTX_TEXT_ENCODER, "vocab_size": len(tokenizer)})).eval(),
        tokenizer=tokenizer,
        transformer=LTXVideoTransformer3DModel(**LTX_TRANSFORMER).eval(),
    )
    pipe.save_pretrained(Path(out_dir))
    return Path(out_dir)


def build_tiny_ltx_upsampler(out_dir: Path, seed: int = 0) -> Path:
    """Save a random-weight LTXLatentUpsamplePipeline (latent upsampler + a 0.9.5-style VAE), as the upscaler repos."""
    from diffusers import AutoencoderKLLTXVideo, LTXLatentUpsamplePipeline
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    torch.manual_seed(seed)
    LTXLatentUpsamplePipeline(
        vae=AutoencoderKLLTXVideo(**LTX_095_VAE).eval(), latent_upsampler=LTXLatentUpsamplerModel(**LTX_UPSAMPLER).eval()
    ).save_pretrained(Path(out_dir))
    return Path(out_dir)


# ---------------------------------------------------------------------------------------------------------------
# ACE-Step 1.5 (diffusers AceStepPipeline), laid out as ACE-Step/acestep-v15-xl-turbo-diffusers: model_index.json with
# vae (AutoencoderOobleck), text_encoder (transformers Qwen3Model, the real one is Qwen3-Embedding-0.6B), tokenizer,
# transformer (AceStepTransformer1DModel, turbo), condition_encoder, scheduler (FlowMatchEulerDiscreteScheduler with
# num_train_timesteps 1 and shift 1.0: the pipeline passes its own sigmas). Kept as the real one: 48 kHz stereo out
# and 25 latent frames per second (the VAE downsamples by 2·4·4·6·10 = 1920); 8 acoustic channels are shrunk. The VAE's
# encoder outputs mean and scale, so its hidden size is twice the latent channels (as the real one: 128 for 64): the
# repaint task encodes the source audio, and with fewer its latents do not fit the transformer's context.
# ---------------------------------------------------------------------------------------------------------------
ACE_STEP_DIRNAME = "tiny-ace-step"
ACE_STEP_TRANSFORMER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=8, in_channels=24, audio_acoustic_hidden_dim=8,
                            patch_size=2, rope_theta=10000.0, sliding_window=16, is_turbo=True)  # fmt: skip
ACE_STEP_TEXT_ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=8, max_position_embeddings=4096)  # fmt: skip
ACE_STEP_CONDITION_ENCODER = dict(hidden_size=32, intermediate_size=64, text_hidden_dim=32, timbre_hidden_dim=8,
                                  num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10000.0,
                                  sliding_window=16)  # fmt: skip
ACE_STEP_VAE = dict(encoder_hidden_size=16, downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 1, 1, 1, 1],
                    decoder_channels=3, decoder_input_channels=8, audio_channels=2, sampling_rate=48000)  # fmt: skip
ACE_STEP_SCHEDULER = dict(num_train_timesteps=1, shift=1.0)  # AceStepPipeline's docstring: it passes its own sigmas


def fast_word_tokenizer(model_max_length: int, special: dict[str, str], padding_side: str = "right"):
    """A `PreTrainedTokenizerFast` over the small word list (built offline with the `tokenizers` library): stands in
    for the Qwen / Gemma tokenizers, whose vocabularies are not reachable here. `special` maps the tokenizer's
    special-token roles (pad_token, eos_token, ...) to their strings; they get the first ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(dict.fromkeys([*special.values(), "<unk>", *_WORDS, *_PUNCT, *_DIGITS]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", model_max_length=model_max_length,
                                   padding_side=padding_side, **special)  # fmt: skip


def build_tiny_ace_step(out_dir: Path, seed: int = 0) -> Path:
    """Save a random-weight AceStepPipeline (turbo-shaped) into `out_dir`; returns `out_dir`."""
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = fast_word_tokenizer(4096, {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    torch.manual_seed(seed)
    AceStepPipeline(
        vae=AutoencoderOobleck(**ACE_STEP_VAE).eval(),
        text_encoder=Qwen3Model(Qwen3Config(**ACE_STEP_TEXT_ENCODER, vocab_size=len(tokenizer))).eval(),
        tokenizer=tokenizer,
        transformer=AceStepTransformer1DModel(**ACE_STEP_TRANSFORMER).eval(),
        condition_encoder=AceStepConditionEncoder(**ACE_STEP_CONDITION_ENCODER).eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(**ACE_STEP_SCHEDULER),
    ).save_pretrained(Path(out_dir))
    return Path(out_dir)


# ---------------------------------------------------------------------------------------------------------------
# LTX-2.5 (diffusers LTX2DFRPipeline), laid out as Lightricks/LTX-2.5-Diffusers: scheduler, vae
# (AutoencoderKLLTX2Video: 32x spatial, 8x temporal as the real one), audio_vae (AutoencoderKLLTX2Audio: 16 kHz, hop
# 160, 64 mel bins as the real one, so 25 audio latents per second), text_encoder (Gemma3ForConditionalGeneration),
# tokenizer, connectors (LTX2TextConnectors), transformer (LTX2VideoTransformer3DModel with keyframe slots, as 2.5),
# vocoder (LTX2Vocoder). Channels and layers shrunk.
# ---------------------------------------------------------------------------------------------------------------
LTX2_DIRNAME = "tiny-ltx2"
LTX2_TEXT_ENCODER = dict(
    text_config=dict(hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=8, sliding_window=16, max_position_embeddings=1024),
    vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=28, patch_size=14),
    mm_tokens_per_image=4,
)  # fmt: skip
LTX2_TRANSFORMER = dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
                        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=32, audio_out_channels=32,
                        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
                        num_layers=1, qk_norm="rms_norm_across_heads", caption_channels=32,
                        rope_double_precision=False, rope_type="split", vae_scale_factors=(8, 32, 32),
                        use_keyframes_abs_pos_embedding=True)  # fmt: skip
LTX2_CONNECTORS = dict(caption_channels=32, text_proj_in_factor=3, video_connector_num_attention_heads=4,
                       video_connector_attention_head_dim=8, video_connector_num_layers=1,
                       video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
                       audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
                       audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32,
                       rope_theta=10000.0, rope_double_precision=False, causal_temporal_positioning=False,
                       rope_type="split")  # fmt: skip
LTX2_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 8, 16, 32),
                decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1),
                decoder_layers_per_block=(1, 1, 1, 1), timestep_conditioning=False, patch_size=4, patch_size_t=1,
                spatial_compression_ratio=32, temporal_compression_ratio=8)  # fmt: skip
# latent channels x mel bins / 4 = the packed audio width = base_channels (its latent statistics) = audio_in_channels
LTX2_AUDIO_VAE = dict(base_channels=32, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=None,
                      in_channels=2, resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height",
                      mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True,
                      mel_bins=64)  # fmt: skip
LTX2_VOCODER = dict(in_channels=2 * 64, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
                    upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                    leaky_relu_negative_slope=0.1, output_sampling_rate=16000)  # fmt: skip


def build_tiny_ltx2(out_dir: Path, seed: int = 0) -> Path:
    """Save a random-weight LTX2DFRPipeline (LTX-2.5-shaped) into `out_dir`; returns `out_dir`."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2DFRPipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    tokenizer = fast_word_tokenizer(1024, {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"}, "left")
    torch.manual_seed(seed)
    text_config = {**LTX2_TEXT_ENCODER["text_config"], "vocab_size": len(tokenizer)}
    transformer = LTX2VideoTransformer3DModel(**LTX2_TRANSFORMER).eval()
    with torch.no_grad():
        transformer.keyframes_abs_pos_embedding.normal_(std=0.1)  # zeros at init: a slot marker that marks nothing
    LTX2DFRPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=AutoencoderKLLTX2Video(**LTX2_VAE).eval(),
        audio_vae=AutoencoderKLLTX2Audio(**LTX2_AUDIO_VAE).eval(),
        text_encoder=Gemma3ForConditionalGeneration(Gemma3Config(**{**LTX2_TEXT_ENCODER, "text_config": text_config})).eval(),
        tokenizer=tokenizer,
        connectors=LTX2TextConnectors(**LTX2_CONNECTORS).eval(),
        transformer=transformer,
        vocoder=LTX2Vocoder(**LTX2_VOCODER).eval(),
    ).save_pretrained(Path(out_dir))
    return Path(out_dir)


def _inverse_candidates(key: str, renames: list[tuple[str, str]]) -> list[str]:
    """Every key that undoing any subset of `renames` (diffusers name → original name) can give."""
    out = {key}
    for new, old in renames:
        out |= {candidate.replace(new, old) for candidate in out if new in candidate}
    return sorted(out, key=len)


def _original_ltx_checkpoint(transformer_sd: dict, vae_sd: dict) -> dict:
    """The state dicts of a diffusers LTX transformer and 0.9.5-style VAE in LTX-Video's single-file layout
    ("model.diffusion_model.*" and "vae.*"), each key checked to convert back exactly through diffusers' own
    single-file converters (which is what makes it a faithful stand-in for the published checkpoint)."""
    import re

    from diffusers.loaders.single_file_utils import (
        convert_ltx_transformer_checkpoint_to_diffusers,
        convert_ltx_vae_checkpoint_to_diffusers,
    )

    out: dict = {}
    t_renames = [("proj_in", "patchify_proj"), ("time_embed", "adaln_single"), ("norm_q", "q_norm"), ("norm_k", "k_norm")]
    for key, value in transformer_sd.items():
        for candidate in _inverse_candidates(key, t_renames):
            original = "model.diffusion_model." + candidate
            if list(convert_ltx_transformer_checkpoint_to_diffusers({original: value})) == [key]:
                out[original] = value.contiguous()
                break
        else:
            raise RuntimeError(f"no single-file key converts to transformer key {key}")
    # diffusers' 0.9.5 VAE renames (original block → diffusers block), inverted
    up = {"mid_block": "up_blocks.0", **{f"up_blocks.{i}.upsamplers.0": f"up_blocks.{2 * i + 1}" for i in range(4)},
          **{f"up_blocks.{i}": f"up_blocks.{2 * i + 2}" for i in range(4)}}  # fmt: skip
    down = {"mid_block": "down_blocks.8", **{f"down_blocks.{i}.downsamplers.0": f"down_blocks.{2 * i + 1}" for i in range(4)},
            **{f"down_blocks.{i}": f"down_blocks.{2 * i}" for i in range(4)}}  # fmt: skip
    v_renames = [("resnets", "res_blocks"), ("conv_shortcut.conv", "conv_shortcut"), ("norm3", "norm3.norm"),
                 ("latents_mean", "per_channel_statistics.mean-of-means"),
                 ("latents_std", "per_channel_statistics.std-of-means"),
                 ("time_embedder", "last_time_embedder"), ("scale_shift_table", "last_scale_shift_table")]  # fmt: skip
    probe_key = "vae.encoder.conv_out.conv.weight"  # the converter reads it to pick the 0.9.5 renames
    probe = vae_sd["encoder.conv_out.conv.weight"]
    for key, value in vae_sd.items():
        match = re.match(r"^(encoder|decoder)\.((?:up|down)_blocks\.\d(?:\.(?:up|down)samplers\.0)?|mid_block)(.*)$", key)
        if match:
            table = up if match[1] == "decoder" else down
            stems = [f"{match[1]}.{table[match[2]]}{rest}" for rest in _inverse_candidates(match[3], v_renames)]
        else:
            stems = _inverse_candidates(key, v_renames)
        for stem in stems:
            original = "vae." + stem
            converted = convert_ltx_vae_checkpoint_to_diffusers({original: value, probe_key: probe})
            if key in converted and converted[key] is value:
                out[original] = value.contiguous()
                break
        else:
            raise RuntimeError(f"no single-file key converts to VAE key {key}")
    return out


def build_tiny_ltx_single_file(path: Path, seed: int = 0) -> Path:
    """Save a random-weight 0.9.5+-style transformer + VAE as one LTX-Video single-file checkpoint at `path`."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(**LTX_TRANSFORMER).eval()
    vae = AutoencoderKLLTXVideo(**LTX_095_VAE).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_original_ltx_checkpoint(transformer.state_dict(), vae.state_dict()), str(path))
    return path


# What each published repository holds, as tiny builds: (builder, its arguments). The single-file checkpoints of
# Lightricks/LTX-Video sit next to its 0.9.0 diffusers weights, as in the real repository.
_HUB_BUILDS = {
    "Lightricks/LTX-Video": lambda out: (build_tiny_ltx(out), build_tiny_ltx_single_file(out / "ltxv-2b-0.9.8-distilled.safetensors")),
    "Lightricks/LTX-Video-0.9.5": lambda out: build_tiny_ltx_095(out, pipeline_class="LTXPipeline"),
    "Lightricks/LTX-Video-0.9.7-dev": lambda out: build_tiny_ltx_095(out),
    "Lightricks/LTX-Video-0.9.7-distilled": lambda out: build_tiny_ltx_095(out),
    "Lightricks/LTX-Video-0.9.8-13B-distilled": lambda out: build_tiny_ltx_095(out),
    "Lightricks/ltxv-spatial-upscaler-0.9.7": lambda out: build_tiny_ltx_upsampler(out),
    "Lightricks/LTX-2.5-Diffusers": lambda out: build_tiny_ltx2(out),
    "ACE-Step/acestep-v15-xl-turbo-diffusers": lambda out: build_tiny_ace_step(out),
}


def fake_revision(repo: str) -> str:
    """A stable 40-hex commit id for a fake repository snapshot."""
    import hashlib

    return hashlib.sha1(repo.encode()).hexdigest()


def write_fake_hub_cache(cache_dir: Path, presets=None) -> dict[str, Path]:
    """Lay out tiny models in `cache_dir` (an HF_HUB_CACHE) as the published LTX-Video repositories, so a preset's
    hub id loads offline (HF_HUB_OFFLINE=1) through the real code path: models--<org>--<name>/snapshots/<rev>/ and
    refs/main. Only the files each preset's `allow_patterns` select are kept, as `hf download --include` would
    fetch them, so a pattern that misses a needed file fails the load. Returns {repo: snapshot folder}."""
    import fnmatch

    from tunereel.presets import VIDEO_PRESETS

    wanted: dict[str, tuple[str | None, set[str]]] = {}
    from tunereel.catalog import repositories

    for preset in (presets or VIDEO_PRESETS.values()):
        if preset.source.startswith("local:"):
            continue
        for repo, revision, patterns in repositories(preset):
            rev, pats = wanted.setdefault(repo, (revision, set()))
            pats.update(patterns)
    snapshots = {}
    for repo, (revision, patterns) in wanted.items():
        root = Path(cache_dir) / f"models--{repo.replace('/', '--')}"
        rev = revision or fake_revision(repo)
        snapshot = root / "snapshots" / rev
        snapshots[repo] = snapshot
        done = root / f"{_DONE}-{rev}"  # beside the snapshot: `hf download` leaves nothing extra inside one
        if done.exists():
            continue
        with tempfile.TemporaryDirectory() as tmp:
            _HUB_BUILDS[repo](Path(tmp))
            for file in sorted(Path(tmp).rglob("*")):
                name = file.relative_to(tmp).as_posix()
                if file.is_file() and any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
                    (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(file, snapshot / name)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(rev)
        done.touch()
    return snapshots


_BUILDERS = {"musicgen": (MUSICGEN_DIRNAME, build_tiny_musicgen), "ltx": (LTX_DIRNAME, build_tiny_ltx),
             "ace-step": (ACE_STEP_DIRNAME, build_tiny_ace_step), "ltx2": (LTX2_DIRNAME, build_tiny_ltx2)}  # fmt: skip


def ensure_tiny_models(models_dir: Path) -> dict[str, Path]:
    """Build each tiny model that `models_dir` lacks; returns {"musicgen": folder, "ltx": folder}. Idempotent."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (dirname, build) in _BUILDERS.items():
        paths[key] = models_dir / dirname
        if (paths[key] / _DONE).exists() and outdated_build(key, paths[key]):
            shutil.rmtree(paths[key])
        if not (paths[key] / _DONE).exists():
            _build_atomically(build, paths[key])
    return paths


def outdated_build(key: str, folder: Path) -> bool:
    """A tiny model built before a fix of its shape: tiny-ace-step's VAE encoder once had fewer channels than its
    latents need (the repaint task encodes audio), so folders built then are built again."""
    if key != "ace-step":
        return False
    config = json.loads((folder / "vae" / "config.json").read_text())
    return config.get("encoder_hidden_size") != ACE_STEP_VAE["encoder_hidden_size"]


def _build_atomically(build, final: Path) -> None:
    """Build into a private temp folder next to `final`, then rename it into place in one step.

    A killed build leaves only a hidden `.<name>.*` temp folder, never a partial `final`. Two concurrent builders
    both succeed: the loser of the rename drops its copy (builds are deterministic, so the copies are identical).
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        (tmp / _DONE).touch()
        tmp.chmod(0o755)  # mkdtemp makes it 0700; services may run as other users
        try:
            os.rename(tmp, final)  # atomic; fails when `final` already exists
        except OSError:
            if not (final / _DONE).exists():
                raise RuntimeError(f"{final} exists but is not a complete tiny-model build; remove it") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunereel.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True, help="folder to build the tiny models into")
    parser.add_argument("--hub-cache", type=Path, default=None,
                        help="also lay out tiny LTX-Video models as the published repositories in this HF_HUB_CACHE")  # fmt: skip
    args = parser.parse_args(argv)
    for key, path in ensure_tiny_models(args.models_dir).items():
        print(f"{key}\t{path}")
    if args.hub_cache is not None:
        for repo, path in write_fake_hub_cache(args.hub_cache).items():
            print(f"{repo}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
