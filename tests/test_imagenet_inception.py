"""The Inception weights: registry entry, offline conversion layer for layer, sFID feature layout; the CPU pass
(ONNX Runtime) against torch-fidelity's module."""
import dataclasses

import numpy as np
import pytest
import torch

from evaluators.imagenet import inception, onnx_inception
from pixeldit.data.digits import digits32_images
from pixeldit.infra import weights as registry

LAYERS = [("conv", "Conv2d_1a_3x3"), ("conv_1", "Conv2d_2a_3x3"), ("conv_2", "Conv2d_2b_3x3"), ("pool0", "MaxPool_1"),
          ("conv_3", "Conv2d_3b_1x1"), ("conv_4", "Conv2d_4a_3x3"), ("pool1", "MaxPool_2"), ("mixed", "Mixed_5b"),
          ("mixed_1", "Mixed_5c"), ("mixed_2", "Mixed_5d"), ("mixed_3", "Mixed_6a"), ("mixed_4", "Mixed_6b"),
          ("mixed_5", "Mixed_6c"), ("mixed_6", "Mixed_6d"), ("mixed_7", "Mixed_6e"), ("mixed_8", "Mixed_7a"),
          ("mixed_9", "Mixed_7b"), ("mixed_10", "Mixed_7c"), ("pool2", "AvgPool")]


pytestmark = pytest.mark.usefixtures("imagenet_env")


@pytest.fixture(scope="module")
def offline():
    return inception.resolve_weights("offline")


def test_registry_entry_is_torch_fidelity_s_file():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    entry = registry.get_entry("inception")
    assert entry.url == URL_INCEPTION_V3 and entry.filename == URL_INCEPTION_V3.rsplit("/", 1)[1]
    assert entry.sha256.startswith("6726825d")          # torch.hub's hash-prefix convention in the file name
    with pytest.raises(registry.MissingWeightsError, match="pixeldit-bench weights fetch inception"):
        inception.resolve_weights("inception")


def test_offline_weights_are_converted_once_and_verified(offline):
    assert offline.name == "inception-offline" and not offline.has_logits
    assert offline.path.parent == registry.weights_dir() and offline.tensor_sha256 == inception.OFFLINE_TENSOR_SHA256
    state = torch.load(offline.path, weights_only=True)
    assert torch.isnan(state["fc.weight"]).all() and torch.isnan(state["fc.bias"]).all()
    assert inception.resolve_weights("auto") == offline          # no full file here: auto falls back
    torch.save({**state, "Conv2d_1a_3x3.conv.weight": state["Conv2d_1a_3x3.conv.weight"] + 1}, offline.path)
    try:
        with pytest.raises(inception.ImageNetEvalError, match="tensor digest .* delete it and rerun"):
            inception.resolve_weights("offline")
    finally:
        offline.path.unlink()
        assert inception.resolve_weights("offline").tensor_sha256 == inception.OFFLINE_TENSOR_SHA256


def test_converted_network_matches_the_torchscript_layer_for_layer(offline):
    scripted = torch.jit.load(str(inception.fid_helper_torchscript()), map_location="cpu").eval()
    network = inception.load_network(offline, "cpu")
    outputs = {}
    for _, name in LAYERS:
        getattr(network, name).register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.clone()))
    network.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: outputs.__setitem__("sfid", o.clone()))
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pool3 = network(images)[0]                              # 299 input: the TF1 resize is the identity
        x = (images.float() - 128) / 128
        for ts_name, tf_name in LAYERS:
            layer = getattr(scripted.net.layers, ts_name)
            if ts_name == "mixed_6":
                sfid = layer.conv(x)
                assert (sfid - outputs["sfid"]).abs().max() <= 1e-4
            x = layer(x)
            assert (x - outputs[tf_name]).abs().max() <= 1e-4, ts_name
        reference_pool3 = scripted(((images.float() - 128) / 128))
    assert reference_pool3.shape == pool3.shape == (2, 2048)
    assert (reference_pool3 - pool3).abs().max() <= 1e-4


def test_sfid_feature_is_nhwc_first_seven_channels():
    mixed_6_conv = torch.arange(2 * 192 * 17 * 17, dtype=torch.float32).reshape(2, 192, 17, 17)
    flat = inception.flatten_spatial(mixed_6_conv)
    assert flat.shape == (2, 2023)
    # channels vary fastest (H, W, C order): positions 0..6 are channels 0..6 of pixel (0, 0)
    np.testing.assert_array_equal(flat[0, :8].numpy(), [*mixed_6_conv[0, :7, 0, 0].tolist(), mixed_6_conv[0, 0, 0, 1]])
    assert not torch.equal(flat, mixed_6_conv[:, :7].reshape(2, -1))          # NCHW flattening would differ
    assert torch.equal(flat[1].reshape(17, 17, 7), mixed_6_conv[1, :7].permute(1, 2, 0))


def test_cpu_extractor_matches_torch_fidelity_s_plain_network_on_real_digits(offline):
    """The CPU pass (ONNX Runtime) against torch-fidelity's own module in plain NCHW: pool3, the sFID layer."""
    extractor = inception.InceptionFeatures(offline, "cpu")
    plain = inception.load_network(offline, "cpu")
    grabbed = {}
    plain.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: grabbed.__setitem__("x", o.clone()))
    images = digits32_images()[0][:24]                                # real 32×32 digits, resized to 299 inside
    with torch.inference_mode():
        expected = plain(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())[0].numpy()   # (24, 2048)
    out = extractor(images)
    assert set(out) == {"pool3", "spatial"}                          # no logits without the classifier
    assert out["pool3"].shape == (24, 2048) and out["spatial"].shape == (24, 2023)
    # measured on 512 digits: at most 1.6e-5 (pool3, values up to 5.5) and 2.8e-5 (spatial, up to 3.8)
    assert np.abs(out["pool3"] - expected).max() <= 2e-5
    np.testing.assert_allclose(out["spatial"], inception.flatten_spatial(grabbed["x"]).numpy(), rtol=0, atol=4e-5)


def test_onnx_graph_gives_the_same_bits_at_any_batch_split_and_thread_count(offline):
    network = inception.load_network(offline, "cpu")
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    one_thread = onnx_inception.OnnxInception(network, threads=1)(images)
    two_threads = onnx_inception.OnnxInception(network, threads=2)
    split = [two_threads(images[:2]), two_threads(images[2:])]
    for whole, parts in zip(one_thread, zip(*split)):
        np.testing.assert_array_equal(whole, np.concatenate(parts))


def test_onnx_graph_refuses_an_operation_it_does_not_transcribe(offline):
    network = inception.load_network(offline, "cpu")
    network.Mixed_7c = torch.nn.Sequential(torch.nn.Sigmoid())
    with pytest.raises(ValueError, match="Sigmoid is not transcribed"):
        onnx_inception.onnx_model(network)


@pytest.mark.parametrize("shape", [(32, 32), (8, 8), (256, 256), (512, 384), (299, 299), (17, 300)])
def test_cpu_resize_is_bit_identical_to_torch_fidelity_s_tf1_resize(shape):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    images = torch.randint(0, 256, (2, 3, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = (interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
                - 128) / 128
    assert torch.equal(onnx_inception.resize_tf1(images), expected)


def test_cpu_logits_are_torch_fidelity_s_unbiased_logits(offline, tmp_path):
    """IS logits on CPU (pool3 @ fc.weight.T outside the ONNX graph), with a stand-in classifier: the real one
    needs the full weights file, which is not here."""
    state = torch.load(offline.path, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(state["fc.weight"].shape, generator=generator) * 0.05
    state["fc.bias"] = torch.randn(state["fc.bias"].shape, generator=generator)
    torch.save(state, tmp_path / "with-classifier.pth")
    weights = dataclasses.replace(offline, path=tmp_path / "with-classifier.pth", has_logits=True)
    images = digits32_images()[0][:4]
    with torch.inference_mode():
        expected = inception.load_network(weights, "cpu")(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    out = inception.InceptionFeatures(weights, "cpu")(images)
    assert set(out) == {"pool3", "spatial", "logits"} and out["logits"].shape == (4, 1008)
    np.testing.assert_allclose(out["logits"], expected[1].numpy(), rtol=0, atol=1e-4)   # no bias: it is ~N(0, 1)
