"""Named training presets: the paper's ImageNet configs and small ones for the embedded digits32 benchmark.

A preset is a dict of `TrainConfig` fields; `pixeldit-bench train PRESET --set key=value` overrides any.
ImageNet values come from upstream c2i/configs/pix256_xl.yaml / pix512_xl.yaml and the paper
(arXiv 2511.20645, training details). The lr 1e-4 -> 1e-5 and clip 1.0 -> 0.5 drop happens "late in
training" at an unpublished step: the presets place it at 90% of the 256² budget and say so.
"""
from __future__ import annotations

from pixeldit.models import ABLATION_LADDER

IMAGENET_EPOCH_KIMG = 1281.167          # images per ImageNet-1k epoch, in thousands

_REPA = dict(encoder="dinov2-vitb14", align_layer=8, weight=0.5)

_IMAGENET256 = dict(
    model="PixelDiT-XL/16", dataset="data/imagenet256", resolution=256, num_classes=1000,
    batch_size=256, total_kimg=round(320 * IMAGENET_EPOCH_KIMG), lr=1e-4,
    lr_schedule=[[round(288 * IMAGENET_EPOCH_KIMG), 1e-5]], grad_clip=1.0,
    grad_clip_schedule=[[round(288 * IMAGENET_EPOCH_KIMG), 0.5]],
    ema_decay=0.9999, time_shift=1.0, label_dropout=0.1, repa=_REPA, precision="bf16",
    snapshot_kimg=round(10 * IMAGENET_EPOCH_KIMG), state_kimg=256)

# The embedded default: ~600 steps of batch 32 on one CPU core. Two departures from the ImageNet recipe, both
# measured on PixelDiT-S/4 at 20 kimg (200 samples vs the 500 held-out digits; 200 real training digits score
# FID 28.2): lr 2e-3 (1e-3: FID 244 -> loss still falling) and JiT-style x-prediction (v-prediction leaves
# per-pixel noise — mean |R - G| 6.4 levels on grey digits — at this step count: FID 242; x-prediction 48.0).
_DIGITS32 = dict(
    model="PixelDiT-S/4", dataset="results/data/digits32", resolution=32, num_classes=10,
    batch_size=32, total_kimg=20, lr=2e-3, prediction="x", ema_halflife_kimg=0.5, ema_rampup=0.1, time_shift=1.0,
    label_dropout=0.1, repa=None, precision="fp32", snapshot_kimg=5, state_kimg=2, log_every=10)

TRAINING_PRESETS: dict[str, dict] = {
    "imagenet256-xl": _IMAGENET256,
    # 512²: continues from the 256² model for 530 epochs with shift 3 (upstream pix512_xl.yaml), clip 0.5
    "imagenet512-xl": {**_IMAGENET256, "dataset": "data/imagenet512", "resolution": 512,
                       "total_kimg": round(530 * IMAGENET_EPOCH_KIMG), "time_shift": 3.0, "grad_clip": 0.5,
                       "lr_schedule": [], "grad_clip_schedule": [], "init_from": "results/runs/imagenet256-xl-0"},
    "digits32-s4": _DIGITS32,
    "digits32-t4-smoke": {**_DIGITS32, "model": "PixelDiT-T/4", "batch_size": 16, "total_kimg": 1,
                          "snapshot_kimg": 1, "state_kimg": 1, "log_every": 5},
    # The latent baseline: DiT on the small autoencoder's 4x8x8 latents (autoencoder preset "digits32-ae",
    # pixeldit.train_autoencoder), same recipe as digits32-s4 at the same training compute:
    #   matched_kimg(training_flops("PixelDiT-S/4", 32, kimg=20), "LatentDiT-S/1", 32)     (pixeldit.models.flops)
    #   = 20 kimg x 159.1 / 110.1 MFLOPs per forward = 28.9 kimg -> 29 (budgets are whole kimg: +0.4% compute)
    "digits32-latent-s1": {**_DIGITS32, "model": "LatentDiT-S/1", "total_kimg": 29,
                           "latent": {"cache": "results/latent/digits32-train", "autoencoder": "results/latent/digits32-ae"}},
}
# Text-to-image on the embedded digits (pixeldit.data.captions: four caption templates per digit, embedded by
# all-MiniLM-L6-v2 once per run), text dropout 10% as upstream's T2I configs. The captions are under 16 MiniLM
# tokens, so the text stream has 16 positions, not 32. lr 1e-3: at 4e-4 the loss fell half as fast (0.5 kimg).
# digits32-t2i-t4 is the 15-minute CPU demo's model (PixelDiT-T2I-T/4 trains at ~100 images/s on one core,
# 20 kimg); digits32-t2i-s4 (16M parameters, ~9 images/s) needs far more than the demo's budget to make digits.
_DIGITS32_T2I = {**_DIGITS32, "model": "PixelDiT-T2I-S/4", "model_overrides": {"text_max_length": 16},
                 "batch_size": 16, "lr": 1e-3, "prediction": "v", "total_kimg": 6, "snapshot_kimg": 2, "state_kimg": 1,
                 "text": {"encoder": "all-minilm-l6-v2", "captions": "digits"}}
TRAINING_PRESETS["digits32-t2i-s4"] = _DIGITS32_T2I
TRAINING_PRESETS["digits32-t2i-t4"] = {**_DIGITS32_T2I, "model": "PixelDiT-T2I-T/4", "batch_size": 32, "total_kimg": 20,
                              "snapshot_kimg": 10, "state_kimg": 5, "log_every": 32}
TRAINING_PRESETS["digits32-t2i-t4-smoke"] = {**_DIGITS32_T2I, "model": "PixelDiT-T2I-T/4", "batch_size": 16, "lr": 4e-4,
                                    "total_kimg": 1, "snapshot_kimg": 1, "state_kimg": 1, "log_every": 5}
# The paper's ablation ladder: 80 epochs at 256² (its Table 5) and the same rungs at the embedded scale.
for _rung in ABLATION_LADDER:
    TRAINING_PRESETS[f"imagenet256-xl-80ep-{_rung}"] = {**_IMAGENET256, "ablation": _rung,
                                               "total_kimg": round(80 * IMAGENET_EPOCH_KIMG), "lr_schedule": [],
                                               "grad_clip_schedule": []}
    TRAINING_PRESETS[f"digits32-s4-{_rung}"] = {**_DIGITS32, "ablation": _rung}


def get_preset(name: str) -> dict:
    try:
        return dict(TRAINING_PRESETS[name])
    except KeyError:
        raise KeyError(f"unknown training preset {name!r}; known: {', '.join(TRAINING_PRESETS)}") from None
