"""Fault injection through the real entry point (`pixeldit.cli.main`): each bad input or damaged file gives a
documented exit code and a message naming the problem, never a traceback, and leaves valid files as they were."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pixeldit.cli import main
from pixeldit.cli.console import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_MISSING_FILE
from pixeldit.infra.datasets import DatasetWriter
from pixeldit.infra.files import write_json_atomic
from pixeldit.infra.runs import load_newest_training_state, save_training_state
from pixeldit.models import build_network, save_network
from pixeldit.models.io import load_state


def run_cli(args, capsys, log_dir: Path) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{len(list(log_dir.iterdir())):03d}.log").write_text(output)
    assert "Traceback" not in output, output
    return exit_info.value.code or 0, output


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def damaged_dataset(tiny_dataset, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(tiny_dataset, copy)
    images = np.load(copy / "images-00000.npy", mmap_mode="r+")
    images[3:5] = 0                     # rows overwritten, shape kept: only the checksum can tell
    images.flush()
    manifest = json.loads((copy / "dataset.json").read_text())   # as `data prepare` writes it, built elsewhere
    manifest.update(source={"kind": "tests"}, prepare_command="pixeldit-bench data prepare SRC --out /old/place --res 16")
    (copy / "dataset.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("args, message", [
    (["eval", "imagenet", "{data}", "--ref", "{data}", "--device", "cuda", "--out", "{tmp}/e.json"],
     "no CUDA device is usable here"),
    (["eval", "imagenet", "{data}", "--ref", "{data}", "--device", "cpu:x", "--out", "{tmp}/e.json"],
     "unknown device 'cpu:x'"),
    (["eval", "imagenet", "{data}", "--ref", "{data}", "--out", "{tmp}/a-file/e.json"], "Not a directory"),
    (["train", "digits32-s4", "--kimg", "0", "--out", "{tmp}/run"], "budget must be at least 1 kimg"),
    (["train", "digits32-s4", "--set", "lr=fast", "--out", "{tmp}/run"], "lr"),
    (["train", "digits32-s4", "--set", "ablation=vanila-dit", "--out", "{tmp}/run"], "vanila-dit"),
    (["train", "digits32-s4", "--set", "batch_size=3.5", "--out", "{tmp}/run"], "batch_size"),
])
def test_bad_input_is_one_message_and_exit_1(args, message, tiny_dataset, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    before = digests(tiny_dataset)
    args = [a.format(data=tiny_dataset, tmp=tmp_path) for a in args]
    code, output = run_cli(args, capsys, tmp_path / "logs")
    assert code == EXIT_BAD_INPUT and message in output, output
    assert digests(tiny_dataset) == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "e.json").exists()


def test_training_refuses_a_damaged_shard_before_writing_anything(damaged_dataset, tmp_path, capsys):
    code, output = run_cli(["train", "digits32-s4", "--dataset", damaged_dataset, "--out", tmp_path / "run"],
                           capsys, tmp_path / "logs")
    assert code == EXIT_BAD_INPUT and "checksum mismatch" in output and "images-00000.npy" in output, output
    assert f"--out {damaged_dataset} " in output, output   # the rebuild hint names where the dataset is now
    assert not (tmp_path / "run").exists()


def test_data_info_hint_points_at_the_damaged_copy(damaged_dataset, tmp_path, capsys):
    code, output = run_cli(["data", "info", damaged_dataset], capsys, tmp_path / "logs")
    assert code == EXIT_BAD_INPUT and f"--out {damaged_dataset} " in output and "--overwrite" in output, output


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("injected")
    monkeypatch.setattr(sys.modules["pixeldit.cli.main"], "count_params", broken)
    code, output = run_cli(["models", "--json"], capsys, tmp_path / "logs")
    assert code == EXIT_INTERNAL and "internal error: RuntimeError: injected" in output and "--debug" in output
    monkeypatch.setenv("PIXELDIT_DEBUG", "1")
    with pytest.raises(RuntimeError, match="injected"):
        main(["models", "--json"])


def test_a_package_outside_the_base_stack_names_the_command_that_installs_it(monkeypatch, tmp_path, capsys):
    """README command (a) installs only the base stack; a command needing the full one says how to get it."""
    def without_clean_fid(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'cleanfid'", name="cleanfid")
    monkeypatch.setattr(sys.modules["pixeldit.cli.main"], "count_params", without_clean_fid)
    code, output = run_cli(["models", "--json"], capsys, tmp_path / "logs")
    assert code == EXIT_MISSING_FILE and "`cleanfid`" in output and "PIXELDIT_STACKS=full" in output, output


def test_resume_falls_back_past_damaged_and_unreadable_states(tmp_path):
    for kimg in (1, 2, 3):
        save_training_state({"nimg": kimg * 1000, "weights": torch.full((4,), float(kimg))}, tmp_path, kimg)
    newest = tmp_path / "training-state-0000003.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF                          # one flipped byte: caught by the .sha256
    newest.write_bytes(bytes(data))
    (tmp_path / "training-state-0000002.pt.sha256").unlink()
    (tmp_path / "training-state-0000002.pt").write_bytes(b"truncated")   # no checksum, and torch cannot load it
    warnings = []
    path, state = load_newest_training_state(tmp_path, warnings.append)
    assert path.name == "training-state-0000001.pt" and state["nimg"] == 1000
    assert len(warnings) == 2 and "damaged" in warnings[0] and "unreadable" in warnings[1], warnings


def test_resume_refuses_to_start_over_when_no_state_is_usable(tmp_path):
    (tmp_path / "training-state-0000001.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no usable training state"):
        load_newest_training_state(tmp_path, lambda message: None)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF                                       # inside the tensor bytes, past the header
    path.write_bytes(bytes(data))


def test_a_damaged_snapshot_is_refused_by_sample(tmp_path, capsys):
    model = build_network("PixelDiT-T/4")
    snapshot = save_network(tmp_path / "network-snapshot-0000001.safetensors", model.config, ema=model.state_dict(),
                            metadata={"resolution": 16})
    _flip_last_byte(snapshot)
    code, output = run_cli(["sample", snapshot, "--out", tmp_path / "samples", "--n", "10", "--sampler", "euler-20"],
                           capsys, tmp_path / "logs")
    assert code == EXIT_BAD_INPUT and "weights are damaged" in output and snapshot.name in output, output
    assert not list(tmp_path.rglob("*.npz"))


def test_training_rerun_rewrites_a_damaged_final_snapshot(tiny_dataset, tmp_path, capsys):
    args = ["train", "digits32-t4-smoke", "--dataset", tiny_dataset, "--kimg", "1", "--out", tmp_path / "run",
            "--set", "resolution=16", "--set", "batch_size=16", "--set", "snapshot_kimg=1", "--set", "state_kimg=1",
            "--set", "deterministic=true"]
    assert run_cli(args, capsys, tmp_path / "logs")[0] == 0
    snapshot = tmp_path / "run" / "network-snapshot-0000001.safetensors"
    original = snapshot.read_bytes()
    _flip_last_byte(snapshot)
    with pytest.raises(ValueError, match="weights are damaged"):
        load_state(snapshot)
    code, output = run_cli(args, capsys, tmp_path / "logs")
    assert code == 0 and "rewritten from the final training state" in output, output
    assert snapshot.read_bytes() == original               # the same bytes as the first write (sorted header)


def _killed_while_writing(target: Path, directory: bool) -> Path:
    """A job that made its temporary beside `target` and was SIGKILLed before it finished: returns what it left."""
    code = ("import os, signal, sys; from pixeldit.infra.files import temp_beside; "
            f"t = temp_beside({str(target)!r}, directory={directory}); (t / 'half' if t.is_dir() else t).write_text('half'); "
            "print(t, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    left = Path(run.stdout.strip())
    assert left.exists()
    return left


def _write_dataset(target: Path) -> None:
    with DatasetWriter(target, resolution=4):      # leaving the block without finish() discards it
        pass


@pytest.mark.parametrize("directory, write", [(False, lambda target: write_json_atomic(target, {"value": 1})),
                                              (True, _write_dataset)], ids=["file", "folder"])
def test_the_next_write_removes_what_a_killed_job_left(directory, write, tmp_path):
    target = tmp_path / "written"
    left = _killed_while_writing(target, directory)
    live = tmp_path / f".{target.name}.partial-{os.getpid()}@{socket.gethostname()}-live0000"
    foreign = tmp_path / f".{target.name}.partial-1@another-host-abc12345"   # a shared file system: not ours to judge
    live.write_text("in progress"), foreign.write_text("elsewhere")
    with pytest.warns(UserWarning, match="stopped before it finished"):
        write(target)
    assert not left.exists() and live.exists() and foreign.exists()


@pytest.fixture
def snapshot(tmp_path):
    model = build_network("PixelDiT-T/4")
    return save_network(tmp_path / "net" / "network-snapshot-0000001.safetensors", model.config,
                        ema=model.state_dict(), metadata={"resolution": 16})


def _mismatched_snapshot(snapshot: Path) -> None:
    other = build_network("PixelDiT-S/4")                 # PixelDiT-T/4's header over PixelDiT-S/4's tensors
    save_network(snapshot, build_network("PixelDiT-T/4").config, ema=other.state_dict(), metadata={"resolution": 16})


def _malformed_manifest(dataset: Path) -> None:
    manifest = json.loads((dataset / "dataset.json").read_text())
    manifest["source"] = "a string where an object belongs"
    (dataset / "dataset.json").write_text(json.dumps(manifest))


def _non_number_result(results: Path) -> None:
    path = next((results / "metrics").rglob("*.json"))
    record = json.loads(path.read_text())
    record["values"]["fid"] = "n/a"
    path.write_text(json.dumps(record))


REPORT_FIXTURE = Path(__file__).parent / "fixtures" / "report" / "results"


@pytest.mark.parametrize("prepare, args, message", [
    (None, ["sample", "{snapshot}", "--out", "{tmp}/s", "--n", "20", "--sampler", "euler-20", "--shards", "5-3"],
     "runs backwards; write it as '3-5'"),
    (None, ["sample", "{snapshot}", "--out", "{tmp}/s", "--n", "-5", "--sampler", "euler-20"], "n=-5"),
    (None, ["sample", "{snapshot}", "--out", "{tmp}/s", "--n", "10", "--sampler", "ab2-20-cgf"],
     "unknown sampler 'ab2-20-cgf'"),
    (_mismatched_snapshot, ["sample", "{snapshot}", "--out", "{tmp}/s", "--n", "10", "--sampler", "euler-20"],
     "weights do not fit the PixelDiT-T/4 network"),
    (None, ["data", "prepare", "{tmp}", "--out", "{tmp}/d", "--res", "0"], "--res 0: the resolution must be a positive number"),
    (None, ["train", "digits32-s4", "--set", "mu=3", "--out", "{tmp}/run"], "['mu']"),   # brackets kept, not markup
    (None, ["train", "digits32-s4", "--kimg", "-2", "--out", "{tmp}/run"], "budget must be at least 1 kimg"),
    (_malformed_manifest, ["data", "info", "{data}"], "is malformed: source is str"),
    (_non_number_result, ["report", "--results", "{results}", "--out", "{tmp}/report"],
     "values.fid is 'n/a', not a number"),
], ids=["shards-backwards", "negative-n", "sampler-typo", "header-vs-weights", "res-0", "markup", "negative-kimg",
        "manifest-types", "report-non-number"])
def test_fault_rows(prepare, args, message, snapshot, tiny_dataset, tmp_path, capsys):
    data, results = tmp_path / "data", tmp_path / "results"
    shutil.copytree(tiny_dataset, data)
    shutil.copytree(REPORT_FIXTURE, results)
    target = {"_mismatched_snapshot": snapshot, "_malformed_manifest": data, "_non_number_result": results}
    if prepare is not None:
        prepare(target[prepare.__name__])
    before = {name: digests(folder) for name, folder in (("data", data), ("results", results), ("net", snapshot.parent))}
    args = [a.format(snapshot=snapshot, tmp=tmp_path, data=data, results=results) for a in args]
    code, output = run_cli(args, capsys, tmp_path / "logs")
    assert code == EXIT_BAD_INPUT and message in output, output
    assert {name: digests(folder) for name, folder in (("data", data), ("results", results), ("net", snapshot.parent))} \
        == before
    assert not any((tmp_path / name).exists() for name in ("s", "d", "run", "report"))


def _images(shape) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _samples(folder: Path) -> None:
    """The sample archives the rows below score: channel-first, 8×8 against a 16×16 reference, a bad zip CRC."""
    np.savez(folder / "chw.npz", arr_0=_images((20, 3, 16, 16)))
    np.savez(folder / "small.npz", arr_0=_images((20, 8, 8, 3)))
    np.savez(folder / "crc.npz", arr_0=_images((20, 16, 16, 3)))
    data = bytearray((folder / "crc.npz").read_bytes())
    data[600:664] = bytes(64)                              # inside arr_0: np.load would say "Bad CRC-32"
    (folder / "crc.npz").write_bytes(bytes(data))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.parametrize("args, message", [
    (["eval", "imagenet", "{inputs}/chw.npz", "--ref", "{data}", "--out", "{tmp}/e.json"], "looks channel-first"),
    (["eval", "imagenet", "{inputs}/small.npz", "--ref", "{data}", "--out", "{tmp}/e.json"],
     "are 8×8 but reference"),
    (["eval", "imagenet", "{inputs}/crc.npz", "--ref", "{data}", "--out", "{tmp}/e.json"], "fails its zip CRC"),
    (["weights", "import", "c2i", "{inputs}/code.ckpt", "{tmp}/e.safetensors"], "needs a full pickle load"),
    (["sample", "merge", "{inputs}/shards"], "does not match the sha256 in its sidecar"),
], ids=["channel-first", "resolution-mismatch", "zip-crc", "pickle-runs-code", "merge-damaged-shard"])
def test_existing_bad_input_rows(args, message, snapshot, tiny_dataset, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _samples(inputs)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": _RunsCode()}, inputs / "code.ckpt")
    assert run_cli(["sample", snapshot, "--out", inputs / "shards", "--n", "10", "--sampler", "euler-20",
                    "--shard-size", "5", "--no-merge"], capsys, tmp_path / "logs")[0] == 0
    shard = sorted((inputs / "shards").glob("shard-*.npz"))[0]
    data = bytearray(shard.read_bytes())
    data[-300] ^= 0xFF
    shard.write_bytes(bytes(data))
    before = digests(inputs)
    args = [a.format(inputs=inputs, data=tiny_dataset, tmp=tmp_path) for a in args]
    code, output = run_cli(args, capsys, tmp_path / "logs")
    assert code == EXIT_BAD_INPUT and message in output, output
    assert "this ran while loading" not in output and digests(inputs) == before
    assert not list(tmp_path.glob("e.*")) and not (inputs / "shards" / "samples.npz").exists()
