"""Random-init mPLUG VQA folders in the layout modelscope's VQA pipeline loads (tests and cost runs).

`write_random_mplug(folder, sizes)` writes what `pipeline(Tasks.visual_question_answering, model=...)`
reads for `damo/mplug_visual-question-answering_coco_large_en`, so the `modelscope` backend runs its real
code path offline:

* `configuration.json` — framework, task, and the model / pipeline types modelscope's registry dispatches on;
* `config.yaml` — `MPlugConfig` (image size, CLIP vision tower, beam search);
* `config_bert.json` — the BERT text encoder, fusion and answer decoder (`*_layers` pick the depths);
* `vocab.txt` — BERT WordPiece vocabulary for `BertTokenizer`;
* `pytorch_model.bin` — the state dict, built with modelscope's own `MPlug` classes and a fixed seed.

The answers of such a model mean nothing. `answer_bias` adds to the answer decoder's output bias so that
it answers one word then stops, as a trained VQA model does; without it a random decoder never emits
[SEP] and runs all `max_length` beam-search steps, which would overstate the cost per question.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

# modelscope's beam search hard-codes [CLS] = 101 as the start and [SEP] = 102 as the end token,
# so the vocabulary keeps BERT's layout: [PAD] 0, [unused*] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
SPECIAL_TOKENS = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# mPLUG-large VQA: CLIP ViT-L/14 at 504² (modelscope's MPlugConfig defaults, which its VQA checkpoint uses)
# with BERT-base text encoder (6 layers), fusion (6 of 12) and answer decoder (12), as in X-PLUG/mPLUG's
# configs/config_bert.json. Beam search: 5 beams, answers of 1 to 10 tokens.
MPLUG_LARGE: dict[str, Any] = {
    "config": {"image_res": 504, "vision_width": 1024, "clip_name": "ViT-L-14", "clip_embed_dim": 768,
               "clip_image_resolution": 224, "clip_vision_layers": 24, "clip_vision_width": 1024,
               "clip_vision_patch_size": 14, "clip_context_length": 77, "clip_vocab_size": 49408,
               "clip_transformer_width": 768, "clip_transformer_heads": 12, "clip_transformer_layers": 12,
               "beam_size": 5, "min_length": 1, "max_length": 10},
    "bert": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
             "vocab_size": 30522, "text_encoder_layers": 6, "fusion_layers": 6, "text_decode_layers": 12,
             "stride_layer": 6},
}

# The smallest model the same classes build: modelscope sizes the ViT-B/16 position table at width 768,
# so the vision tower keeps that width with one layer on a 2x2 patch grid; BERT is 32 wide.
TINY: dict[str, Any] = {
    "config": {"image_res": 32, "vision_width": 768, "clip_name": "ViT-B-16", "clip_embed_dim": 16,
               "clip_image_resolution": 32, "clip_vision_layers": 1, "clip_vision_width": 768,
               "clip_vision_patch_size": 16, "clip_context_length": 4, "clip_vocab_size": 8,
               "clip_transformer_width": 16, "clip_transformer_heads": 1, "clip_transformer_layers": 1,
               "beam_size": 2, "min_length": 1, "max_length": 3},
    "bert": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
             "text_encoder_layers": 1, "fusion_layers": 1, "text_decode_layers": 1, "stride_layer": 1},
}

# Step 1 must be a word (min_length=1 masks [SEP]): "yes" and "no" are favoured equally, so the image and
# question decide between them; then [SEP] wins and the answer is that one word.
ONE_WORD_ANSWERS = {"yes": 8.0, "no": 8.0, "[SEP]": 12.0}


def write_random_mplug(folder: str | Path, sizes: Mapping[str, Any], words: Sequence[str] = (),
                       answer_bias: Mapping[str, float] | None = None, seed: int = 0) -> Path:
    """Write a random-init mPLUG VQA model folder; returns it. Needs the `modelscope` package."""
    import torch
    import yaml
    from modelscope.models.multi_modal.mplug import MPlug

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bert = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "pad_token_id": 0, "type_vocab_size": 2,
            "add_cross_attention": False, "use_cache": False, **sizes["bert"]}
    bert["encoder_width"] = bert["hidden_size"]
    vocab = list(SPECIAL_TOKENS) + sorted({"yes", "no", *words} - set(SPECIAL_TOKENS))
    bert.setdefault("vocab_size", len(vocab))
    if bert["vocab_size"] < len(vocab):
        raise ValueError(f"vocab_size {bert['vocab_size']} < {len(vocab)} words")
    vocab += [f"[unused{i}]" for i in range(99, 99 + bert["vocab_size"] - len(vocab))]
    # distill builds momentum copies of every tower; they are used in training only.
    config = {"task": "visual-question-answering", "bert_config": "config_bert.json", "distill": False,
              **sizes["config"]}
    (folder / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "visual-question-answering",
        "model": {"type": "mplug"}, "pipeline": {"type": "visual-question-answering"}}, indent=2))
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "config_bert.json").write_text(json.dumps(bert, indent=2))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")

    torch.manual_seed(seed)
    model = MPlug.from_pretrained(str(folder), load_checkpoint=False)
    if answer_bias:
        with torch.no_grad():
            bias = model.text_decoder.cls.predictions.bias
            for word, value in answer_bias.items():
                bias[vocab.index(word)] += value
    state = model.state_dict()
    # modelscope's loader strips every "model." from the keys; none of these may contain it.
    clashing = [key for key in state if "model." in key]
    if clashing:
        raise ValueError(f"state-dict keys that modelscope's loader would rename: {clashing[:3]}")
    torch.save(state, folder / "pytorch_model.bin")
    return folder
