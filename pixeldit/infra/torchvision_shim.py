"""Let PyPI's torchvision (built against CUDA torch) import beside the CPU-only torch wheel.

PyPI's torchvision 0.28 links its compiled ops against libtorch_cuda; on the CPU build of torch the
load fails and torchvision's fake-op registration then raises "operator torchvision::nms does not
exist", which breaks torch-fidelity, clean-fid, open_clip, timm and diffusers. Declaring the two op
schemas it registers fakes for lets the pure-Python parts import. Only done when the compiled ops
really cannot load: defining them twice aborts the process.
"""
import glob
import importlib.util
import os

import torch


def _torchvision_ops_loadable() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # not installed: nothing to patch
    libraries = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
    if not libraries:
        return False
    try:
        torch.ops.load_library(libraries[0])
        return True
    except OSError:
        return False


PATCHED = False
if "torchvision" not in __import__("sys").modules and not _torchvision_ops_loadable():
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for _schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"):
        _library.define(_schema)
    PATCHED = True
