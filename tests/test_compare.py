"""`pixeldit-bench compare`: one differing protocol field is named alone, identical protocols are comparable,
published rows compare with results, unreadable sides fail with exit code 1.

The result JSON every case starts from is written by the code itself (a tiny network sampled by
`pixeldit.sample`, scored by the ImageNet evaluator), so a change of the card format breaks these tests."""
import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from evaluators.imagenet import evaluate_imagenet
from pixeldit.cli import app
from pixeldit.cli.compare import EXIT_FOR_VERDICT
from pixeldit.cli.console import EXIT_BAD_INPUT, EXIT_CAVEAT, EXIT_CHECK_FAILED
from pixeldit.infra.files import write_json_atomic
from pixeldit.models import build_network
from pixeldit.models.io import save_network
from pixeldit.report.compare import PROTOCOL_FIELDS, Verdict
from pixeldit.sample import sample_shards
from pixeldit.samplers import Sampler

pytestmark = pytest.mark.usefixtures("imagenet_env")
runner = CliRunner()
RESOLUTION = 16


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A real result record: 10 samples of a random PixelDiT-T/4 (with its samples.json) scored against 10 images."""
    folder = tmp_path_factory.mktemp("compare")
    torch.manual_seed(0)
    model = build_network("PixelDiT-T/4")
    network = save_network(folder / "network-snapshot-0000005.safetensors", model.config, ema=model.state_dict(),
                           metadata={"resolution": RESOLUTION, "kimg": 5})
    sample_shards(network, folder / "samples", 10, Sampler("euler", 2, cfg_scale=1.5), seed=0, shard_size=10,
                  batch_size=10, merge=True)
    reference = folder / "reference.npz"
    np.savez(reference, arr_0=np.random.default_rng(0).integers(0, 256, (10, RESOLUTION, RESOLUTION, 3), np.uint8))
    return evaluate_imagenet(folder / "samples" / "samples.npz", reference, metrics=["fid", "kid"],
                             weights="offline", features="dinov2")       # offline: a dinov2 block, its values n/a


def _write(path, record):
    write_json_atomic(path, record)
    return str(path)


def _compare(*args):
    outcome = runner.invoke(app, ["compare", *args])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    return outcome


def _compare_json(*args):
    outcome = _compare(*args, "--json")
    return outcome, json.loads(outcome.stdout)


# (field name, path into the result record, a different value): one case per field of the registry.
ONE_FIELD_CHANGES = [
    ("evaluator", "evaluator.name", "geneval"),
    ("backend", "evaluator.backend", "clean-fid"),
    ("task version", "evaluator.version", "999"),
    ("extractor", "protocol.extractor.name", "torchvision inception_v3"),
    ("extractor weights sha256", "protocol.extractor.features_sha256", "0" * 64),
    ("other feature spaces (extractor: weights sha256)", "protocol.extractors",
     {"dinov2": {"card": {"weights_file": {"sha256": "0" * 64}}}}),
    ("reference file", "protocol.reference.file", "renamed.npz"),
    ("reference sha256", "protocol.reference.sha256", "0" * 64),
    ("FID reference statistics", "protocol.fid.reference_statistics", "file"),
    ("reference images (precision/recall, KID)", "protocol.reference.count", 10_000),
    ("sample count", "protocol.samples.count", 50_000),
    ("resolution", "protocol.samples.resolution", [256, 256]),
    ("resize", "protocol.resize", "clean-fid 'clean': PIL bicubic"),
    ("label sampling", "sampler.labels", "uniformly random"),
    ("quantisation", "sampler.quantization", "floor"),
    ("sampler method", "sampler.method", "heun"),
    ("sampler steps", "sampler.steps", 250),
    ("CFG scale", "sampler.cfg_scale", 4.0),
    ("CFG interval", "sampler.cfg_max", 0.9),
    ("time shift", "sampler.shift", 2.0),
    ("seed", "sampler.seed", 1),
    ("first sample index", "sampler.first_index", 10),
    ("seed ranges", "protocol.seed_ranges", {"count": 3, "images": 10}),
    ("EMA weights", "model.weights", "raw"),
    ("snapshot (kimg)", "model.kimg", 10),
    ("precision", "sampler.precision", "bf16-autocast"),
    ("Fréchet route", "protocol.fid.route", "sqrtm"),
    ("IS split rule", "protocol.is.split_rule", "ten-splits-below-50k"),
]


# Paths a single run's result does not hold: a mean over seed ranges adds them (evaluators/imagenet/seed_ranges.py).
ADDED_BY_SEED_RANGES = {"protocol.seed_ranges", "sampler.first_index"}


def test_every_registered_field_has_its_one_field_case():
    assert [name for name, _, _ in ONE_FIELD_CHANGES] == [field.name for field in PROTOCOL_FIELDS]


def _changed(record, path, value):
    """A copy of `record` with `path` set to `value`; the path must exist (unless a mean over seed ranges adds it), so
    a changed card format fails here."""
    changed = copy.deepcopy(record)
    *parents, last = path.split(".")
    section = changed
    for key in parents:
        section = section[key]
    if path in ADDED_BY_SEED_RANGES:
        assert last not in section, f"a single run's result now holds {path}"
    else:
        assert last in section and section[last] is not None, f"the result record no longer holds {path}"
        assert section[last] != value
    section[last] = value
    return changed


@pytest.mark.parametrize("name,path,value", ONE_FIELD_CHANGES, ids=[case[0] for case in ONE_FIELD_CHANGES])
def test_one_differing_field_is_named_alone(result, tmp_path, name, path, value):
    a = _write(tmp_path / "a.json", result)
    b = _write(tmp_path / "b.json", _changed(result, path, value))
    outcome, report = _compare_json(a, b)
    [difference] = report["differences"]
    field = next(field for field in PROTOCOL_FIELDS if field.name == name)
    assert difference["field"] == name and not difference["unknown"]
    assert difference["verdict"] == field.if_different.label == report["verdict"]
    assert outcome.exit_code == EXIT_FOR_VERDICT[field.if_different]
    assert difference["note"] == field.note


def test_the_table_names_the_field_its_values_and_the_verdict(result, tmp_path):
    a = _write(tmp_path / "a.json", result)
    b = _write(tmp_path / "b.json", _changed(result, "sampler.cfg_max", 0.9))
    outcome = _compare(a, b)
    assert outcome.exit_code == EXIT_CAVEAT
    line = next(line for line in outcome.stdout.splitlines() if "CFG interval" in line)
    assert "[0.0, 1.0]" in line and "[0.0, 0.9]" in line and "comparable with caveat" in line
    assert "verdict: comparable with caveat" in outcome.stdout


def test_identical_protocols_are_comparable(result, tmp_path):
    a = _write(tmp_path / "a.json", result)
    b = _write(tmp_path / "b.json", {**result, "env": {**result["env"], "date": "another day"}})
    outcome = _compare(a, b)
    assert outcome.exit_code == 0, outcome.output
    assert "every protocol field recorded on both sides is equal" in outcome.stdout
    assert "verdict: comparable" in outcome.stdout and "caveat" not in outcome.stdout
    assert "fid" in outcome.stdout and "+0" in outcome.stdout      # the values of both sides and their difference


def test_a_result_against_a_published_row(result, tmp_path):
    a = _write(tmp_path / "a.json", result)
    outcome, report = _compare_json(a, "published:imagenet-256/DiT-XL/2")
    assert outcome.exit_code == EXIT_CHECK_FAILED and report["verdict"] == Verdict.NOT_COMPARABLE.label
    fields = {difference["field"]: difference for difference in report["differences"]}
    assert fields["resolution"]["b"] == [256, 256] and fields["resolution"]["verdict"] == "not comparable"
    assert fields["sample count"]["b"] == 50_000
    assert fields["sampler steps"]["unknown"] and fields["sampler steps"]["b"] is None
    assert fields["sampler steps"]["verdict"] == "comparable with caveat"
    assert "backend" not in fields and "evaluator" not in fields     # the registry states ADM's evaluator
    [fid] = [metric for metric in report["metrics"] if metric["metric"] == "fid"]
    assert fid["b"] == 2.27 and fid["difference"] == pytest.approx(2.27 - result["values"]["fid"])
    assert "facebookresearch/DiT" in report["stated"]["published:imagenet-256/DiT-XL/2@1400"]


def test_a_published_row_with_a_matching_card_leaves_the_unknown_fields_as_caveats(result, tmp_path):
    at_256 = _changed(_changed(result, "protocol.samples.resolution", [256, 256]), "protocol.samples.count", 50_000)
    outcome, report = _compare_json(_write(tmp_path / "a.json", at_256), "published:imagenet-256/PixelDiT-XL@320")
    assert outcome.exit_code == EXIT_CAVEAT
    assert report["differences"] and all(difference["unknown"] for difference in report["differences"])
    assert "AB2" in report["stated"]["published:imagenet-256/PixelDiT-XL@320"]


def test_an_ambiguous_or_unknown_published_row_names_the_choices():
    outcome = _compare("published:imagenet-256/PixelDiT-XL", "published:imagenet-256/DiT-XL/2")
    assert outcome.exit_code == EXIT_BAD_INPUT and "published:imagenet-256/PixelDiT-XL@320" in outcome.output
    outcome = _compare("published:imagenet-256/DiT-XL2", "published:imagenet-256/DiT-XL/2")
    assert outcome.exit_code == EXIT_BAD_INPUT and "did you mean published:imagenet-256/DiT-XL/2" in outcome.output


@pytest.mark.parametrize("content,message", [(None, "does not exist"), ("[1, 2]", "schema None"),
                                             ('{"values": {}}', "schema None"), ("not json", "not valid JSON")],
                         ids=["missing", "a list", "another JSON", "not JSON"])
def test_an_unreadable_side_exits_1_with_the_fix(result, tmp_path, content, message):
    good = _write(tmp_path / "a.json", result)
    bad = tmp_path / "b.json"
    if content is not None:
        bad.write_text(content)
    outcome = _compare(good, str(bad))
    assert outcome.exit_code == EXIT_BAD_INPUT
    assert message in outcome.output and "Traceback" not in outcome.output and "error:" in outcome.output
