"""Yes/no VQA backends behind one interface: ``backend.answer(images, questions) -> VQAAnswers``.

* ``transformers``: BLIP VQA (`Salesforce/blip-vqa-base`) through `BlipForQuestionAnswering`;
  the answer is ranked between the two candidates "yes" and "no" by their decoder likelihood
  (README.md explains the choice). Tiles shared by several questions are encoded once.
* ``modelscope``: mPLUG-large (`damo/mplug_visual-question-answering_coco_large_en`), the model
  of ELLA's reference script, through modelscope's own VQA pipeline, with its rule: an answer counts
  as yes only when the generated text is exactly ``"yes"``. Needs the optional modelscope stack
  (``MODELSCOPE_INSTALL``) and the model folder (a local folder or the ModelScope cache).
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib.machinery
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from pixeldit.infra.devices import resolve_device
from pixeldit.infra.weights import MissingWeightsError, WeightFile, register_weight, weights_dir

BLIP_MODEL_ID = "Salesforce/blip-vqa-base"
BLIP_DIR = "blip-vqa-base"
# The files `BlipForQuestionAnswering` / `BlipProcessor.from_pretrained` read from a local folder.
# Checksums are not pinned yet (no hub access where this was written): the result's protocol card
# records the sha256 of the weights that were actually loaded.
BLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "special_tokens_map.json",
              "tokenizer.json", "tokenizer_config.json", "vocab.txt")
BLIP_WEIGHTS = tuple(
    register_weight(WeightFile(
        name=f"blip-vqa-base:{filename}",
        url=f"https://huggingface.co/{BLIP_MODEL_ID}/resolve/main/{filename}",
        filename=f"{BLIP_DIR}/{filename}", licence="BSD-3-Clause (Salesforce BLIP)",
        description=f"BLIP VQA base ({filename}) for the DPG-Bench transformers backend"))
    for filename in BLIP_FILES)
MPLUG_MODEL_ID = "damo/mplug_visual-question-answering_coco_large_en"
# modelscope's VQA pipeline module imports its OFA and audio code too (fairseq, librosa, torchaudio, decord),
# even for mPLUG, and both need transformers < 5, so this lives in its own environment (evaluators/dpg/README.md,
# "Installing the modelscope backend", has the measured times). fairseq-fixed is an sdist with C++ extensions
# that compiles against the installed torch, hence the second command.
MODELSCOPE_INSTALL = ("pip install modelscope==1.40.2 addict==2.4.0 datasets==4.8.4 transformers==4.57.6 "
                      "huggingface-hub==0.36.2 tokenizers==0.22.2 "
                      "librosa==0.11.0 decord==0.6.0 unicodedata2==18.0.0 zhconv==1.4.3 rapidfuzz==3.14.6 "
                      "simplejson==4.3.0 cython==3.3.1 wheel==0.48.0 setuptools==80.10.2 && "
                      "pip install --no-build-isolation fairseq-fixed==0.12.3.1")
MPLUG_DOWNLOAD = f"modelscope download {MPLUG_MODEL_ID} --local-dir FOLDER"
BACKENDS = ("transformers", "modelscope")


class VQABackendUnavailable(RuntimeError):
    """A backend's optional package or weights are not installed; the message names the fix."""


@dataclasses.dataclass
class VQAAnswers:
    yes: list[bool]                 # the decision that scoring uses
    p_yes: list[float | None]       # the backend's probability of "yes" (None where it has none)
    text: list[str]                 # the raw answer, kept for the answer cache and audits


class VQABackend(abc.ABC):
    name: str

    @abc.abstractmethod
    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> VQAAnswers:
        """Answer questions[i] about images[i]; the same image object may appear many times."""

    @abc.abstractmethod
    def card(self) -> dict[str, Any]:
        """Model id, weights checksum and decision rule, for the result's protocol card."""

    def fingerprint(self) -> str:
        """Short id of everything that changes answers: keys the answer cache."""
        return hashlib.sha256(json.dumps(self.card(), sort_keys=True).encode()).hexdigest()[:16]


def pick_device(device: str = "auto") -> str:
    return str(resolve_device(device, mps=True))


def weights_sha256(folder: Path) -> str:
    """sha256 over the weight files of a model folder (name and content), in name order."""
    digest = hashlib.sha256()
    files = sorted(path for path in folder.iterdir()
                   if path.suffix in {".safetensors", ".bin", ".pth", ".pt"} and path.is_file())
    if not files:
        raise MissingWeightsError(f"{folder} holds no weight file (*.safetensors, *.bin, *.pth)")
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def blip_source(model: str | None) -> Path:
    """A local BLIP folder: `model` if given (folder or cached hub id), else the registry's folder."""
    if model is None:
        folder = weights_dir() / BLIP_DIR
        absent = [entry.name for entry in BLIP_WEIGHTS if not (weights_dir() / entry.filename).is_file()]
        if not absent:
            return folder
        model = BLIP_MODEL_ID
        fallback = (f"the registry's copy is incomplete ({len(absent)} file(s) absent); on a connected machine "
                    f"run `pixeldit-bench weights fetch` for each of: {' '.join(absent)}")
    else:
        fallback = f"{model} is neither a folder nor a model in the Hugging Face cache"
    if Path(model).is_dir():
        return Path(model)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as error:  # the hub client raises several types for "not cached"
        raise MissingWeightsError(f"BLIP VQA weights not found: {fallback} ({type(error).__name__}). "
                                  f"Or pass --vqa-model PATH to a saved BlipForQuestionAnswering folder.") from None


class TransformersBlipVQA(VQABackend):
    """BLIP VQA; an answer is "yes" when P(yes) > P(no) under the answer decoder."""

    name = "transformers"

    def __init__(self, model: str | None = None, device: str = "auto", batch_size: int = 32):
        import torch
        from transformers import BlipForQuestionAnswering, BlipProcessor

        self.source = blip_source(model)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.processor = BlipProcessor.from_pretrained(self.source)
        self.model = BlipForQuestionAnswering.from_pretrained(self.source).to(self.device).eval()
        self.weights_sha256 = weights_sha256(self.source)
        tokenizer = self.processor.tokenizer
        candidates = []
        for word in ("yes", "no"):
            ids = tokenizer(word, add_special_tokens=False).input_ids
            if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                raise ValueError(f"the BLIP tokenizer in {self.source} maps {word!r} to {ids}; "
                                 f"expected one known token (is this a BLIP VQA checkpoint?)")
            candidates.append([self.model.config.text_config.bos_token_id, ids[0], tokenizer.sep_token_id])
        # decoder inputs "[DEC] yes [SEP]" and "[DEC] no [SEP]"
        self.candidates = torch.tensor(candidates, device=self.device)

    def card(self) -> dict[str, Any]:
        # No local path here: the card keys the answer cache and the protocol, which must not
        # depend on where the weights happen to live.
        return {"backend": self.name, "model": BLIP_MODEL_ID, "weights_sha256": self.weights_sha256,
                "decision": "yes iff log P('[DEC] yes [SEP]') > log P('[DEC] no [SEP]') under the answer decoder",
                "image_size": dict(self.processor.image_processor.size)}

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> VQAAnswers:
        import torch

        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions; pass one image per question")
        # Batch only questions of equal token length: padding the question changes BLIP's answer
        # (its answer decoder does not mask padded question positions in cross-attention).
        lengths = [len(ids) for ids in self.processor.tokenizer(list(questions), truncation=True, max_length=64).input_ids]
        by_length: dict[int, list[int]] = {}
        for index, length in enumerate(lengths):
            by_length.setdefault(length, []).append(index)
        p_yes = [0.0] * len(questions)
        with torch.inference_mode():
            for indices in by_length.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start:start + self.batch_size]
                    values = self._p_yes([images[i] for i in chunk], [questions[i] for i in chunk]).tolist()
                    for index, value in zip(chunk, values):
                        p_yes[index] = value
        return VQAAnswers(yes=[value > 0.5 for value in p_yes], p_yes=p_yes,
                          text=["yes" if value > 0.5 else "no" for value in p_yes])

    def _p_yes(self, images: Sequence[Image.Image], questions: Sequence[str]):
        import torch

        # Encode each distinct tile once: a tile is asked all of its item's questions.
        unique: dict[int, Image.Image] = {}
        for image in images:
            unique.setdefault(id(image), image)
        position = {key: index for index, key in enumerate(unique)}
        pixels = self.processor.image_processor(list(unique.values()), return_tensors="pt").pixel_values
        image_embeds = self.model.vision_model(pixel_values=pixels.to(self.device)).last_hidden_state
        image_embeds = image_embeds[torch.tensor([position[id(image)] for image in images], device=self.device)]
        text = self.processor.tokenizer(list(questions), truncation=True, max_length=64,
                                        return_tensors="pt").to(self.device)
        question_embeds = self.model.text_encoder(
            input_ids=text.input_ids, attention_mask=text.attention_mask, encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long, device=self.device),
        ).last_hidden_state
        count, n_candidates = len(questions), len(self.candidates)
        # Every question against both candidates: rows [q0 yes, q0 no, q1 yes, ...].
        logits = self.model.text_decoder(
            input_ids=self.candidates.repeat(count, 1),
            encoder_hidden_states=question_embeds.repeat_interleave(n_candidates, dim=0),
            encoder_attention_mask=text.attention_mask.repeat_interleave(n_candidates, dim=0),
            return_logits=True,
        )
        # return_logits gives the logits that predict tokens 1..L-1 from tokens 0..L-2.
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        targets = self.candidates.repeat(count, 1)[:, 1:]
        sequence_log_prob = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1).view(count, n_candidates)
        return torch.softmax(sequence_log_prob, dim=-1)[:, 0].cpu()


def mplug_source(model: str | None) -> Path:
    """A local mPLUG folder: `model` if it is a folder, else the ModelScope cache's copy of `model`
    (default: the reference model). Never downloads: a run must not depend on the network."""
    if model is not None and Path(model).is_dir():
        return Path(model)
    model_id = model or MPLUG_MODEL_ID
    try:
        from modelscope.hub.snapshot_download import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception as error:  # the hub client raises several types for "not cached"
        raise MissingWeightsError(
            f"mPLUG VQA weights not found: {model_id} is neither a folder nor in the ModelScope cache "
            f"({type(error).__name__}). On a connected machine run `{MPLUG_DOWNLOAD}` and pass "
            f"--vqa-model FOLDER (or let modelscope fill its cache, MODELSCOPE_CACHE).") from None


class ModelscopeMplugVQA(VQABackend):
    """mPLUG-large through modelscope's VQA pipeline, as ELLA's script calls it (one pair at a time)."""

    name = "modelscope"

    def __init__(self, model: str | None = None, device: str = "auto", pipeline_factory=None):
        self.device = pick_device(device)
        if pipeline_factory is None:
            pipeline_factory = _modelscope_pipeline_factory()
            self.source = mplug_source(model)
            self.weights_sha256 = weights_sha256(self.source)
            self.pipeline = pipeline_factory(str(self.source), self.device)
        else:  # tests inject a pipeline and no weights
            self.source, self.weights_sha256 = None, None
            self.pipeline = pipeline_factory(model or MPLUG_MODEL_ID, self.device)

    def card(self) -> dict[str, Any]:
        # As for BLIP: no local path, the weights checksum tells checkpoints apart.
        return {"backend": self.name, "model": MPLUG_MODEL_ID, "weights_sha256": self.weights_sha256,
                "decision": "yes iff the generated answer is exactly 'yes' (ELLA compute_dpg_bench.py)"}

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> VQAAnswers:
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions; pass one image per question")
        texts = [self.pipeline({"image": image, "question": question})["text"]
                 for image, question in zip(images, questions)]
        return VQAAnswers(yes=[text == "yes" for text in texts], p_yes=[None] * len(texts), text=texts)


def _stand_in_for_unloadable_torchaudio() -> None:
    """Let modelscope's VQA pipeline import where torchaudio is installed but cannot load.

    The pipeline module imports OFA's audio preprocessors, which `import torchaudio` at module level;
    mPLUG never calls it. PyPI's torchaudio (newest 2.11) links libtorch_cuda and has no build for
    torch 2.13, so beside the CPU-only torch wheel its library fails to load and the whole import fails.
    Then a stand-in module takes its place and raises on any use. A torchaudio that is not installed at
    all is left alone: that is an incomplete install, reported with the install line.
    """
    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401
        return
    except OSError as error:
        reason = f"{type(error).__name__}: {error}"
    except ImportError:
        return
    for name in [name for name in sys.modules if name == "torchaudio" or name.startswith("torchaudio.")]:
        del sys.modules[name]

    class Unloadable(types.ModuleType):
        def __getattr__(self, attribute):
            if attribute.startswith("__"):
                raise AttributeError(attribute)
            raise ImportError(f"torchaudio.{attribute}: torchaudio is installed but cannot load ({reason}); "
                              f"install the torchaudio build that matches torch")

    stand_in = Unloadable("torchaudio")
    stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stand_in


def _modelscope_pipeline_factory():
    _stand_in_for_unloadable_torchaudio()
    try:
        from modelscope.pipelines import pipeline

        # pipeline() imports this module lazily and wraps its ImportErrors; importing it here reports
        # a missing package (fairseq, librosa, decord...) with the install line instead.
        from modelscope.pipelines.multi_modal import visual_question_answering_pipeline  # noqa: F401
        from modelscope.utils.constant import Tasks
    except (ImportError, RuntimeError) as error:
        raise VQABackendUnavailable(
            f"the modelscope VQA backend needs the optional modelscope stack ({type(error).__name__}: {error}). "
            f"Install it in an environment of its own (it needs transformers<5; evaluators/dpg/README.md): "
            f"`{MODELSCOPE_INSTALL}`, or use --vqa transformers") from None

    def build(model_dir: str, device: str):
        return pipeline(Tasks.visual_question_answering, model=model_dir, device=device)
    return build


def make_backend(name: str, model: str | None = None, device: str = "auto", batch_size: int = 32) -> VQABackend:
    if name == "transformers":
        return TransformersBlipVQA(model=model, device=device, batch_size=batch_size)
    if name == "modelscope":
        return ModelscopeMplugVQA(model=model, device=device)
    raise ValueError(f"unknown VQA backend {name!r}; choose one of {', '.join(BACKENDS)}")
