"""Weights I/O and official-checkpoint import, proven against the upstream implementation's own outputs."""
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pixeldit.cli import app
from pixeldit.models import build_network, load_network, load_weights_into, save_network
from pixeldit.models.official import from_official_state_dict, import_official_checkpoint, rename_official_key


def _golden(fixtures_dir, name):
    tensors = load_file(f"{fixtures_dir}/official_c2i/{name}.safetensors")
    state = {key[len("state."):]: value for key, value in tensors.items() if key.startswith("state.")}
    return state, tensors


@pytest.mark.parametrize("variant", ["pre_modulation", "post_modulation"])
def test_converted_official_weights_reproduce_the_upstream_output(fixtures_dir, variant):
    state, golden = _golden(fixtures_dir, variant)
    model = from_official_state_dict(state).eval()
    assert model.config.pit_adaln_post_modulation == (variant == "post_modulation")
    with torch.no_grad():
        out = model(golden["x"], golden["t"], golden["y"])
    assert (out - golden["out"]).abs().max().item() <= 1e-5


def test_unexpected_official_keys_are_refused():
    with pytest.raises(KeyError, match="unexpected key"):
        rename_official_key("text_embedder.proj.weight")


class _NotATensor:
    """Stands in for the non-tensor objects a Lightning checkpoint pickles (loggers, configs)."""


def _lightning_checkpoint(fixtures_dir, tmp_path, with_object):
    state, _ = _golden(fixtures_dir, "pre_modulation")
    ckpt = {"state_dict": {**{f"ema_denoiser.{k}": v for k, v in state.items()},
                           **{f"denoiser.{k}": v + 1 for k, v in state.items()}},
            "global_step": 10}
    if with_object:
        ckpt["hyper_parameters"] = _NotATensor()
    path = tmp_path / "release.ckpt"
    torch.save(ckpt, path)
    return path, state


def test_import_official_writes_a_loadable_network_with_the_ema_weights(fixtures_dir, tmp_path):
    path, state = _lightning_checkpoint(fixtures_dir, tmp_path, with_object=False)
    result = CliRunner().invoke(app, ["weights", "import", "c2i", str(path), str(tmp_path / "net.safetensors")])
    assert result.exit_code == 0, result.output
    model, meta = load_network(tmp_path / "net.safetensors", which="ema")
    reference = from_official_state_dict(state)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0, rtol=0)
    assert json.loads((tmp_path / "net.json").read_text())["config"]["hidden_size"] == 64
    assert meta["weights"] == "ema"
    with pytest.raises(ValueError, match="holds only"):
        load_network(tmp_path / "net.safetensors", which="net")


def test_a_pickle_needing_more_than_tensors_is_refused_unless_trusted(fixtures_dir, tmp_path):
    path, _ = _lightning_checkpoint(fixtures_dir, tmp_path, with_object=True)
    with pytest.raises(ValueError, match="--trust-pickle"):
        import_official_checkpoint(path, tmp_path / "net.safetensors")
    config, _ = import_official_checkpoint(path, tmp_path / "net.safetensors", which="online", trust_pickle=True)
    assert load_network(tmp_path / "net.safetensors", which="net")[1]["weights"] == "online"


def test_truncated_checkpoints_give_a_clear_error(fixtures_dir, tmp_path):
    path, _ = _lightning_checkpoint(fixtures_dir, tmp_path, with_object=False)
    path.write_bytes(path.read_bytes()[:1000])
    result = CliRunner().invoke(app, ["weights", "import", "c2i", str(path), str(tmp_path / "x.safetensors")])
    assert result.exit_code == 1
    assert "not a readable PyTorch checkpoint" in result.output


def test_network_round_trip_and_wrong_architecture(tmp_path):
    model = build_network("PixelDiT-T/4")
    torch.nn.init.normal_(model.final_linear.weight)
    path = save_network(tmp_path / "snap.safetensors", model.config, net=model.state_dict(), ema=model.state_dict(),
                        metadata={"kimg": 12})
    loaded, meta = load_network(path)
    assert meta["kimg"] == 12 and meta["config"]["name"] == "PixelDiT-T/4"
    x, t, y = torch.randn(1, 3, 16, 16), torch.rand(1), torch.tensor([2])
    torch.testing.assert_close(loaded(x, t, y), model.eval()(x, t, y), atol=0, rtol=0)
    other = build_network("PixelDiT-T/4", hidden_size=32)
    with pytest.raises(ValueError, match=r"differing fields.*hidden_size.*\(64, 32\)"):
        load_weights_into(other, path)


def test_equal_networks_are_equal_bytes(tmp_path):
    """Issue 17: safetensors writes metadata in hash-map order, so bit-identical weights got different sha256s;
    with the header sorted, five saves of one network are one file, and it still loads."""
    model = build_network("PixelDiT-T/4")
    metadata = {f"key{index}": index for index in range(12)} | {"kimg": 3, "résumé": "non-ASCII stays"}
    files = {save_network(tmp_path / f"snap{index}.safetensors", model.config, net=model.state_dict(),
                          ema=model.state_dict(), metadata=metadata).read_bytes() for index in range(5)}
    assert len(files) == 1
    loaded, meta = load_network(tmp_path / "snap0.safetensors")
    assert meta["kimg"] == 3 and meta["résumé"] == "non-ASCII stays"
    assert load_file(tmp_path / "snap0.safetensors").keys() == {f"{s}.{key}" for s in ("net", "ema") for key in model.state_dict()}


def test_corrupt_or_foreign_network_files_are_refused(tmp_path):
    model = build_network("PixelDiT-T/4")
    path = save_network(tmp_path / "snap.safetensors", model.config, net=model.state_dict())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_network(truncated)
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="not a pixeldit-bench network file"):
        load_network(tmp_path / "foreign.safetensors")
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.safetensors")


def test_models_command_lists_the_registry_with_exact_counts():
    result = CliRunner().invoke(app, ["models", "--json", "--res", "256"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["PixelDiT-XL/16"]["params"] == 797_383_203
    assert rows["PixelDiT-XL/16"]["gflops@256"] == pytest.approx(311.19, abs=0.01)


def test_text_to_image_networks_round_trip_through_the_same_format(tmp_path):
    from pixeldit.models import build_network

    model = build_network("PixelDiT-T2I-T/4")
    path = save_network(tmp_path / "t2i.safetensors", model.config, ema=model.state_dict())
    loaded, meta = load_network(path)
    assert meta["family"] == "pixeldit-t2i" and type(loaded) is type(model)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
