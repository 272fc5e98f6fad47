"""GenEval detector backends and colour classifier, random-init end to end on CPU, and the
compiled-ops self-check that keeps the mmdet backend from scoring with broken operators."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import evaluators  # noqa: F401  (torchvision shim before open_clip / transformers)
from evaluators.geneval import detectors as detectors_module
from evaluators.geneval import prompts, require_weights
from evaluators.geneval.colour import ClipColourClassifier, masked_crop
from evaluators.geneval.detectors import (
    CompiledOpsError,
    TransformersMask2Former,
    boxes_from_masks,
    check_mmcv_ops,
    instances_from_queries,
    resize_for_test,
)
from evaluators.geneval.evaluate import ProtocolMismatchError, score_folder
from evaluators.geneval.rules import Detection, Thresholds
from evaluators.geneval.summary import read_results
from pixeldit.infra.results import read_result
from pixeldit.infra.weights import MissingWeightsError

# Every path, the colour classifier included, runs only when random-init detections pass the thresholds.
LOW = Thresholds(score=0.0, counting_score=0.0)


TINY_CLIP = {"embed_dim": 16, "quick_gelu": True,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip():
    import open_clip
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP)
    preprocess = open_clip.image_transform(32, is_train=False)
    return ClipColourClassifier(model, preprocess, open_clip.get_tokenizer("ViT-L-14-quickgelu"), "cpu",
                                {"model": "tiny-random", "weights": None, "weights_sha256": None})


def tiny_mask2former():
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
    torch.manual_seed(0)
    swin = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=swin, num_labels=80, feature_size=32, mask_feature_size=32,
                               hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1,
                               decoder_layers=2, num_attention_heads=2, num_queries=10, use_pretrained_backbone=False)
    return Mask2FormerForUniversalSegmentation(config)


@pytest.fixture(scope="module")
def tiny_hf_detector():
    return TransformersMask2Former(tiny_mask2former(), "cpu", {"config": "tiny-random"}, test_scale=(128, 128))


def make_images(root, indices=(0, 80, 179, 259, 353, 453), per_prompt=1, size=64):
    """A GenEval folder with one prompt of each task (the first of each in the metadata)."""
    metadata = prompts.load_metadata()
    prompts.write_prompt_folders(root, metadata)
    rng = np.random.default_rng(0)
    for index in indices:
        for sample in range(per_prompt):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(prompts.sample_path(root, index, sample))
    return len(indices) * per_prompt


# ------------------------------------------------------------------ transformers backend, end to end

def test_transformers_backend_end_to_end_and_resume(tmp_path, tiny_hf_detector, tiny_clip, monkeypatch):
    count = make_images(tmp_path / "images")
    asked = []
    classify = tiny_clip.classify
    monkeypatch.setattr(tiny_clip, "classify", lambda image, objs, name: asked.append(name) or classify(image, objs, name))
    record = score_folder(tmp_path / "images", tmp_path / "out", tiny_hf_detector, tiny_clip, LOW)
    rows = read_results(tmp_path / "out" / "results.jsonl")
    assert len(rows) == count and tuple(row["tag"] for row in rows) == prompts.TASKS
    assert any(json.loads(row["details"]) for row in rows), "low thresholds must keep some random detections"
    colour_prompt = json.loads(next(row["metadata"] for row in rows if row["tag"] == "colors"))
    assert colour_prompt["include"][0]["class"] in asked, "the colour classifier must be asked about colour prompts"
    stored = read_result(tmp_path / "out" / "geneval.json")
    assert stored == json.loads(json.dumps(record))
    assert stored["evaluator"]["name"] == "geneval" and stored["evaluator"]["backend"] == "transformers"
    assert all(stored["values"][task] in (0.0, 1.0) for task in prompts.TASKS) and not stored["unavailable"]
    assert stored["protocol"]["images_per_prompt"] == 1 and stored["protocol"]["prompts_scored"] == 6
    assert stored["protocol"]["detector"]["test_scale"] == [128, 128]
    assert stored["protocol"]["prompt_set_sha1"] == prompts.SHA1[prompts.METADATA_FILE]
    assert stored["protocol"]["thresholds"]["score"] == 0.0

    # Resume: a torn last line is dropped and rescored; nothing else reaches the detector again, and
    # a rescore after deleting the results comes from the detection cache alone.
    results = tmp_path / "out" / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:-1]) + lines[-1][:20])
    calls = []
    original = tiny_hf_detector.detect
    monkeypatch.setattr(tiny_hf_detector, "detect", lambda image: calls.append(1) or original(image))
    resumed = score_folder(tmp_path / "images", tmp_path / "out", tiny_hf_detector, tiny_clip, LOW)
    assert calls == [] and resumed["values"] == record["values"]          # the torn image came from the cache
    results.unlink()
    rescored = score_folder(tmp_path / "images", tmp_path / "out", tiny_hf_detector, tiny_clip, LOW)
    assert calls == [] and rescored["values"] == record["values"]
    assert [r["correct"] for r in read_results(results)] == [r["correct"] for r in rows]

    with pytest.raises(ProtocolMismatchError, match="thresholds"):
        score_folder(tmp_path / "images", tmp_path / "out", tiny_hf_detector, tiny_clip, Thresholds())


def test_default_thresholds_reject_random_detections(tmp_path, tiny_hf_detector, tiny_clip):
    make_images(tmp_path / "images", indices=(0, 1), per_prompt=2)
    record = score_folder(tmp_path / "images", tmp_path / "out", tiny_hf_detector, tiny_clip)
    assert record["values"]["overall"] == 0.0       # 1/81-ish class scores never pass 0.3
    assert record["values"]["two_object"] is None and "two_object" in record["unavailable"]
    assert record["samples"]["count"] == 4 and record["samples"]["prompts"] == 2


# ------------------------------------------------------------------ pieces of the detector pipeline

def test_resize_follows_the_mmdet_test_pipeline():
    pixels, (height, width) = resize_for_test(Image.new("RGB", (512, 256), (123, 116, 103)))
    assert (height, width) == (667, 1333)            # min(1333/512, 800/256) keeps the long side in 1333
    assert pixels.shape == (1, 3, 672, 1344)          # padded to /32 with zeros
    assert pixels[0, :, :height, :width].abs().max() < 0.02 and pixels[0, :, height:].abs().max() == 0


def test_boxes_from_masks_are_right_bottom_exclusive():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert boxes_from_masks(masks).tolist() == [[3, 2, 7, 5], [0, 0, 0, 0]]


def test_instance_postprocess_scores_class_times_mask():
    class_logits = torch.full((2, 81), -20.0)
    class_logits[0, 5], class_logits[1, 80] = 20.0, 20.0     # query 0: class 5; query 1: no object
    mask_logits = torch.full((2, 8, 8), -5.0)
    mask_logits[0, 1:3, 2:6] = 5.0
    found = instances_from_queries(class_logits, mask_logits, max_per_image=3)
    assert found.labels[0] == 5 and found.boxes[0].tolist() == [2, 1, 6, 3]
    assert abs(found.scores[0] - torch.sigmoid(torch.tensor(5.0)).item()) < 1e-4
    assert found.scores[1:].max() < 1e-6 and found.masks.shape == (3, 8, 8)


def test_colour_crop_composites_the_mask_on_grey():
    image = Image.new("RGB", (10, 10), (255, 0, 0))
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = True
    crop = masked_crop(image, Detection(np.array([1.0, 1.0, 5.0, 5.0]), 0.9, mask))
    assert crop.size == (4, 4)
    assert crop.getpixel((0, 0)) == (0x99, 0x99, 0x99) and crop.getpixel((1, 1)) == (255, 0, 0)


def test_colour_classifier_text_weights_are_unit_mean_of_unit_templates(tiny_clip):
    weights = tiny_clip.text_classifier("car")
    assert weights.shape == (16, 10)
    assert torch.allclose(weights.norm(dim=0), torch.ones(10), atol=1e-5)
    tokens = tiny_clip.tokenizer(["a photo of a red car", "a photo of a red-colored car", "a photo of a red object"])
    expected = torch.nn.functional.normalize(tiny_clip.model.encode_text(tokens), dim=-1).mean(0)
    assert torch.allclose(weights[:, 0], expected / expected.norm(), atol=1e-5)


# ------------------------------------------------------------------ weights and compiled ops

def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="pixeldit-bench weights fetch geneval-clip-vit-l-14 geneval-mask2former-mmdet"):
        require_weights("mmdet")
    with pytest.raises(MissingWeightsError, match="geneval-mask2former-hf-config geneval-mask2former-hf-weights"):
        require_weights("transformers")
    with pytest.raises(MissingWeightsError, match="weights fetch geneval-clip-vit-l-14"):
        ClipColourClassifier.from_registry()


def test_weights_load_from_the_registry_folder(tmp_path, monkeypatch, tiny_clip):
    """The loading code the real weights go through, fed tiny random files in the registry's places."""
    import open_clip

    from pixeldit.infra.weights import path_of
    monkeypatch.setenv("PIXELDIT_WEIGHTS", str(tmp_path))
    model = tiny_mask2former()
    folder = path_of("geneval-mask2former-hf-weights").parent
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")        # the hub repo's format
    loaded = TransformersMask2Former.from_registry("cpu")
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    assert np.allclose(loaded.detect(image).scores, TransformersMask2Former(model, "cpu").detect(image).scores, atol=1e-6)
    assert len(loaded.card["weights_sha256"]) == 64 and loaded.card["config"] == "facebook/mask2former-swin-small-coco-instance"

    # OpenAI ships CLIP as a TorchScript archive with the open_clip parameter names.
    (tmp_path / "tiny-clip-quickgelu.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "tiny-clip-quickgelu.json")
    archive = tmp_path / "tiny-openai.pt"
    torch.jit.save(torch.jit.script(tiny_clip.model), str(archive))
    colours = ClipColourClassifier.from_openai_file(archive, "tiny-clip-quickgelu")
    assert torch.allclose(colours.text_classifier("car"), tiny_clip.text_classifier("car"), atol=1e-6)
    assert colours.protocol()["weights_sha256"] == __import__("hashlib").sha256(archive.read_bytes()).hexdigest()


def test_self_check_refuses_without_compiled_mmcv(monkeypatch):
    import importlib
    real_import = importlib.import_module

    def no_ext(name, *args):
        if name == "mmcv._ext":
            raise ImportError("No module named 'mmcv._ext'")
        return real_import(name, *args)
    monkeypatch.setattr(detectors_module.importlib, "import_module", no_ext)
    with pytest.raises(CompiledOpsError, match="mmcv-lite.*--no-build-isolation"):
        check_mmcv_ops("cpu")


# ------------------------------------------------------------------ mmdet backend (needs mmcv built from source)

try:
    import mmcv  # noqa: F401
    import mmdet  # noqa: F401
    MMDET = True
except ImportError:
    MMDET = False
needs_mmdet = pytest.mark.skipif(not MMDET, reason="mmdet==3.3.0 + mmcv==2.1.0 (source build, install-notes §3) "
                                                   "not installed in this environment")


@pytest.fixture(scope="module")
def mmdet_detector():
    from evaluators.geneval.detectors import MMDetMask2Former
    torch.manual_seed(0)
    return MMDetMask2Former.from_config(None, "cpu", test_scale=(128, 128))


@needs_mmdet
def test_self_check_passes_with_the_source_build_on_cpu():
    check_mmcv_ops("cpu")


@needs_mmdet
@pytest.mark.parametrize("kernel", ["zeros", "raises"])
def test_self_check_refuses_a_broken_device_kernel(monkeypatch, kernel):
    # What the reference meets on a GPU its mmcv was not built for: an error message per call
    # ("implementation for device cuda:0 not found") or garbage, while scoring goes on.
    def broken(value, shapes, level_start, locations, weights):
        if kernel == "raises":
            raise RuntimeError("ms_deform_attn_impl_forward: implementation for device cuda:0 not found")
        return torch.zeros(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3])
    monkeypatch.setattr(detectors_module, "_compiled_msda", lambda device: broken)
    with pytest.raises(CompiledOpsError, match="silently wrong"):
        check_mmcv_ops("cpu")


@needs_mmdet
def test_mmdet_backend_end_to_end(tmp_path, mmdet_detector, tiny_clip):
    count = make_images(tmp_path / "images", indices=(259, 453))
    record = score_folder(tmp_path / "images", tmp_path / "out", mmdet_detector, tiny_clip, LOW)
    rows = read_results(tmp_path / "out" / "results.jsonl")
    assert len(rows) == count and any(json.loads(row["details"]) for row in rows)
    assert record["evaluator"]["backend"] == "mmdet"
    assert record["protocol"]["detector"]["config"].endswith("mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py")
    found = mmdet_detector.detect(Image.new("RGB", (96, 64)))
    assert found.masks.shape[1:] == (64, 96) and found.boxes.shape == (len(found.scores), 4)


@needs_mmdet
def test_transformers_preprocessing_equals_the_mmdet_test_pipeline(mmdet_detector):
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    pipeline_cfg = get_test_pipeline_cfg(mmdet_detector.model.cfg).copy()
    pipeline_cfg[0].type = "mmdet.LoadImageFromNDArray"
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 100, 3), dtype=np.uint8))
    data = Compose(pipeline_cfg)({"img": np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), "img_id": 0})
    batch = mmdet_detector.model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]})
    ours, (height, width) = resize_for_test(image, (128, 128))
    assert batch["inputs"].shape == ours.shape
    assert (height, width) == tuple(batch["data_samples"][0].img_shape)
    assert torch.allclose(batch["inputs"], ours, atol=1e-4)


@needs_mmdet
def test_instance_postprocess_equals_mmdet(mmdet_detector):
    generator = torch.Generator().manual_seed(0)
    class_logits = torch.randn(100, 81, generator=generator) * 3
    mask_logits = torch.randn(100, 24, 32, generator=generator)
    theirs = mmdet_detector.model.panoptic_fusion_head.instance_postprocess(class_logits, mask_logits)
    ours = instances_from_queries(class_logits, mask_logits)
    order_theirs = torch.argsort(theirs.scores, descending=True).numpy()
    order_ours = np.argsort(-ours.scores)
    assert np.allclose(theirs.scores.numpy()[order_theirs], ours.scores[order_ours], atol=1e-6)
    assert (theirs.labels.numpy()[order_theirs] == ours.labels[order_ours]).all()
    assert np.allclose(theirs.bboxes.numpy()[order_theirs], ours.boxes[order_ours])
    assert (theirs.masks.numpy()[order_theirs] == ours.masks[order_ours]).all()
