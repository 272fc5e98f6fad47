"""The Inception pass on CPU: torch-fidelity's network, transcribed op for op into ONNX, run by ONNX Runtime.

On two CPU cores the Inception pass is almost all of an evaluation. ONNX Runtime's CPU kernels (blocked NCHWc
convolutions with BatchNorm and ReLU fused in at session start) run this network 1.4-1.8x faster than torch's
oneDNN path in channels-last layout; pool3 stays within ~1e-5 (absolute) of torch-fidelity's plain NCHW pass
(`tests/test_imagenet_inception.py`). The GPU keeps torch-fidelity's module (`inception.py`).

The graph is built here from the loaded module rather than by `torch.onnx.export`: torch.fx traces the blocks'
`forward`, and each of the five operations they use (BasicConv2d = conv, BN, ReLU; max and average pooling;
concatenation) becomes the ONNX node of the same definition, with the module's own tensors. That takes about a
second, needs only `onnx`, and fails loudly on an operation it does not know.

The TF1 bilinear resize to 299 stays in torch, with torch-fidelity's float32 arithmetic element for element
(bit-identical), reordered to interpolate each input row once instead of gathering four full-size images.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from evaluators.imagenet.errors import ImageNetEvalError

INPUT_SIZE = 299
# torch-fidelity's stages from the resized image to Mixed_7c, in forward order (the tail is pool3).
STAGES = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
SPATIAL_LAYER = "Mixed_6d.branch1x1"           # TF mixed_6/conv (sFID); its first 7 channels are a graph output
SPATIAL_CHANNELS = 7
OPSET, IR_VERSION = 17, 8
ONNX_INSTALL = "pip install onnx==1.23.2 onnxruntime==1.32.0"


# --------------------------------------------------------------------------------------------- resize

def _tf1_grid(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch-fidelity's TF1 source coordinates (float32): the lower index and the fraction towards the next."""
    coordinate = torch.arange(out_size, dtype=torch.float32) * torch.tensor(in_size / out_size, dtype=torch.float32)
    lower = coordinate.long()
    return lower, coordinate - lower.float()


def resize_tf1(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """B×3×H×W uint8 -> B×3×size×size float32 (x - 128) / 128, bit-identical to torch-fidelity's
    `interpolate_bilinear_2d_like_tensorflow1x` followed by its normalisation.

    Each value is still lower + (upper - lower) * fraction, first along W, then along H; `upper - lower` is taken
    once per input row or column (`diff`, 0 at the last one, where TF1 clamps) and gathered, so the full-size
    work is two gathers and three in-place passes instead of eight gathers and eight passes."""
    x = images.float()
    x_lower, dx = _tf1_grid(x.shape[3], size)
    y_lower, dy = _tf1_grid(x.shape[2], size)
    step = torch.diff(x, dim=3, append=x[:, :, :, -1:])
    rows = step[:, :, :, x_lower].mul_(dx).add_(x[:, :, :, x_lower])          # B×3×H×size
    step = torch.diff(rows, dim=2, append=rows[:, :, -1:])
    out = step[:, :, y_lower].mul_(dy[:, None]).add_(rows[:, :, y_lower])     # B×3×size×size
    return out.sub_(128).div_(128)


# --------------------------------------------------------------------------------------------- graph

class _Trunk(torch.nn.Module):
    """The stages of torch-fidelity's network after its resize, as one traceable forward."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        for name in STAGES:
            self.add_module(name, getattr(network, name))

    def forward(self, x):
        for name in STAGES:
            x = getattr(self, name)(x)
        return x


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


def _pool_attributes(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, **_) -> dict:
    if _pair(dilation) != [1, 1] or ceil_mode:
        raise ValueError(f"pooling with dilation {dilation} / ceil_mode {ceil_mode} is not transcribed")
    stride = kernel_size if stride in (None, []) else stride
    return {"kernel_shape": _pair(kernel_size), "strides": _pair(stride), "pads": _pair(padding) * 2}


def onnx_model(network: torch.nn.Module) -> bytes:
    """torch-fidelity's FeatureExtractorInceptionV3 from its 299×299 normalised input to pool3 (B×2048) and
    `Mixed_6d.branch1x1`'s first 7 channels (B×7×17×17, NCHW), as a serialised ONNX model."""
    from onnx import TensorProto, helper, numpy_helper
    from torch.fx.operator_schemas import normalize_function
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, module, qualified_name):           # conv + BN + ReLU stays one call
            return isinstance(module, BasicConv2d) or super().is_leaf_module(module, qualified_name)

    trunk = _Trunk(network)
    graph = Tracer().trace(trunk)
    nodes, tensors, value_of = [], [], {}

    def add(op: str, inputs: list[str], name: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def tensor(name: str, value: torch.Tensor) -> str:
        tensors.append(numpy_helper.from_array(value.detach().cpu().numpy(), name))
        return name

    for node in graph.nodes:
        if node.op == "placeholder":
            value_of[node] = "image"
        elif node.op == "call_module":
            module = trunk.get_submodule(node.target)
            source = value_of[node.args[0]]
            if isinstance(module, BasicConv2d):
                conv, bn = module.conv, module.bn
                if conv.bias is not None or conv.groups != 1 or _pair(conv.dilation) != [1, 1]:
                    raise ValueError(f"{node.target}: only bias-free, ungrouped, undilated convolutions are transcribed")
                convolved = add("Conv", [source, tensor(f"{node.target}.conv.weight", conv.weight)], f"{node.name}.conv",
                                kernel_shape=_pair(conv.kernel_size), strides=_pair(conv.stride),
                                pads=_pair(conv.padding) * 2)
                normalised = add("BatchNormalization",
                                 [convolved] + [tensor(f"{node.target}.bn.{field}", getattr(bn, field))
                                                for field in ("weight", "bias", "running_mean", "running_var")],
                                 f"{node.name}.bn", epsilon=bn.eps)
                value_of[node] = add("Relu", [normalised], node.name)
            elif isinstance(module, torch.nn.MaxPool2d):
                value_of[node] = add("MaxPool", [source], node.name, **_pool_attributes(
                    module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode))
            else:
                raise ValueError(f"{node.target}: module {type(module).__name__} is not transcribed")
        elif node.op == "call_function" and node.target is torch.cat:
            inputs, dim = node.args
            value_of[node] = add("Concat", [value_of[item] for item in inputs], node.name, axis=dim)
        elif node.op == "call_function" and node.target in (F.max_pool2d, F.avg_pool2d):
            arguments = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True).kwargs
            source = value_of[arguments.pop("input")]
            if node.target is F.max_pool2d:
                if arguments.pop("return_indices", False):
                    raise ValueError(f"{node.name}: max pooling with indices is not transcribed")
                value_of[node] = add("MaxPool", [source], node.name, **_pool_attributes(**arguments))
            else:
                if arguments.get("divisor_override") is not None:
                    raise ValueError(f"{node.name}: average pooling with a divisor override is not transcribed")
                # TF's average pool leaves the padding out of the mean (count_include_pad=False)
                value_of[node] = add("AveragePool", [source], node.name, **_pool_attributes(**arguments),
                                     count_include_pad=int(arguments.get("count_include_pad", True)))
        elif node.op == "output":
            mixed_7c = value_of[node.args[0]]
        else:
            raise ValueError(f"{node.op} {node.target} is not transcribed")

    spatial = next(value_of[node] for node in graph.nodes if node.target == SPATIAL_LAYER)
    pooled = add("GlobalAveragePool", [mixed_7c], "pool3_map")           # AdaptiveAvgPool2d((1, 1))
    add("Flatten", [pooled], "pool3", axis=1)
    slice_bounds = [tensor(name, torch.tensor([value])) for name, value in
                    (("spatial_start", 0), ("spatial_end", SPATIAL_CHANNELS), ("spatial_axis", 1))]
    add("Slice", [spatial, *slice_bounds], "spatial")
    model = helper.make_model(
        helper.make_graph(nodes, "torch-fidelity inception-v3-compat trunk",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
                          [helper.make_tensor_value_info("pool3", TensorProto.FLOAT, ["batch", 2048]),
                           helper.make_tensor_value_info("spatial", TensorProto.FLOAT, ["batch", SPATIAL_CHANNELS, 17, 17])],
                          tensors),
        opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return model.SerializeToString()


# --------------------------------------------------------------------------------------------- runner

class OnnxInception:
    """uint8 B×H×W×3 images -> (pool3 B×2048, mixed_6/conv first 7 channels B×7×17×17 NCHW), float32 NumPy."""

    def __init__(self, network: torch.nn.Module, threads: int | None = None):
        try:
            import onnx  # noqa: F401  (onnx_model writes the graph with it)
            import onnxruntime
        except ImportError as error:
            raise ImageNetEvalError(f"the CPU Inception pass needs onnx and onnxruntime ({error}); "
                                    f"`{ONNX_INSTALL}`") from None
        options = onnxruntime.SessionOptions()
        # the threads torch was given (OMP_NUM_THREADS, one per process under torchrun); one op at a time
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(onnx_model(network), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        pool3, spatial = self.session.run(["pool3", "spatial"], {"image": resize_tf1(batch).numpy()})
        return pool3, spatial
