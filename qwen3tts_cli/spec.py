"""Facts of the official Qwen3-TTS 12 Hz models, each named once.

Values come from the released checkpoints' config.json / generation_config.json and the official
`qwen-tts` 0.1.1 code. Checkpoint configs are the source of truth at run time; these names exist so
that code and tests never repeat a bare literal.
"""

from __future__ import annotations

# ---- audio / codec ----------------------------------------------------------------------------------
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920  # 12.5 frames per second
NUM_CODE_GROUPS = 16  # codebook 0 (semantic) + 15 residual groups per frame
CODEBOOK_SIZE = 2048

# ---- text-side special token ids (config.json top level) --------------------------------------------
IM_START_ID = 151644
IM_END_ID = 151645
ENDOFTEXT_ID = 151643
ASSISTANT_ID = 77091
USER_ID = 872
SYSTEM_ID = 8948
TTS_PAD_ID = 151671
TTS_BOS_ID = 151672
TTS_EOS_ID = 151673
NEWLINE_ID = 198

# ---- codec-side control ids (talker_config) ---------------------------------------------------------
CODEC_PAD_ID = 2148
CODEC_BOS_ID = 2149
CODEC_EOS_ID = 2150
CODEC_THINK_ID = 2154
CODEC_NOTHINK_ID = 2155
CODEC_THINK_BOS_ID = 2156
CODEC_THINK_EOS_ID = 2157
TALKER_VOCAB_SIZE = 3072
# ids 2048..3071 are control, language and speaker ids: never sampled, except EOS
SUPPRESSED_TOKENS_START = 2048

# ---- languages and preset speakers ------------------------------------------------------------------
LANGUAGE_IDS: dict[str, int] = {
    "chinese": 2055,
    "english": 2050,
    "german": 2053,
    "italian": 2070,
    "portuguese": 2071,
    "spanish": 2054,
    "japanese": 2058,
    "korean": 2064,
    "french": 2061,
    "russian": 2069,
}
DIALECT_IDS: dict[str, int] = {"beijing_dialect": 2074, "sichuan_dialect": 2062}

SPEAKER_IDS: dict[str, int] = {
    "vivian": 3065,
    "serena": 3066,
    "uncle_fu": 3010,
    "dylan": 2878,
    "eric": 2875,
    "ryan": 3061,
    "aiden": 2861,
    "ono_anna": 2873,
    "sohee": 2864,
}
SPEAKER_DIALECTS: dict[str, str | bool] = {name: False for name in SPEAKER_IDS} | {
    "dylan": "beijing_dialect",
    "eric": "sichuan_dialect",
}

# ---- generation defaults (generation_config.json, identical in every released repo) -----------------
GENERATION_DEFAULTS: dict[str, float | int | bool] = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.9,
    "top_p": 1.0,
    "top_k": 50,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0,
    "subtalker_top_k": 50,
    "max_new_tokens": 8192,
}
MIN_NEW_TOKENS = 2

# ---- model kinds ------------------------------------------------------------------------------------
KIND_CUSTOM_VOICE = "custom_voice"
KIND_VOICE_DESIGN = "voice_design"
KIND_BASE = "base"
MODEL_KINDS = (KIND_CUSTOM_VOICE, KIND_VOICE_DESIGN, KIND_BASE)
