"""`pixeldit-bench compare A B --explain`: a difference the harness can measure is measured on A's own samples (the
value equals a direct evaluation under B's setting), one it cannot says why in a line, and the exit codes stay the
verdict's.

A is a real result: 60 real digits scored against 40 other digits with the offline Inception weights; B is A's
record with protocol fields changed, as `compare` sees a result scored another way."""
import copy
import json

import pytest
from typer.testing import CliRunner

from evaluators.imagenet import evaluate_imagenet
from pixeldit.cli import app
from pixeldit.cli.console import EXIT_BAD_INPUT, EXIT_CAVEAT, EXIT_CHECK_FAILED
from pixeldit.explain import NEEDS_NEW_SAMPLES
from pixeldit.infra.files import write_json_atomic

pytestmark = pytest.mark.usefixtures("imagenet_env")
runner = CliRunner()


@pytest.fixture(scope="module")
def scored(digit_sets):
    """(A's record, its samples, its reference): FID and KID of 60 digits against 40 others, gram route."""
    samples, reference = digit_sets
    record = evaluate_imagenet(samples, reference, metrics="fid,kid", weights="offline")
    record["sampler"] = {"cfg_scale": 1.0}
    return record, samples, reference


def _explain(tmp_path, a, b, *options):
    """compare --explain --json of two records; (exit code, report, {field: its difference entry})."""
    paths = []
    for name, record in (("a.json", a), ("b.json", b)):
        write_json_atomic(tmp_path / name, record)
        paths.append(str(tmp_path / name))
    outcome = runner.invoke(app, ["compare", *paths, "--explain", *options])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    if "--json" not in options:
        return outcome.exit_code, outcome.stdout, None
    report = json.loads(outcome.stdout)
    return outcome.exit_code, report, {entry["field"]: entry for entry in report["differences"]}


def _with(record, **changes):
    """A copy of `record` with dotted paths set (each path must already hold a value)."""
    changed = copy.deepcopy(record)
    for path, value in changes.items():
        *parents, last = path.split("__")
        section = changed
        for key in parents:
            section = section[key]
        assert section[last] is not None and section[last] != value
        section[last] = value
    return changed


def test_a_route_difference_is_measured_on_a_samples(scored, tmp_path):
    record, samples, reference = scored
    code, report, fields = _explain(tmp_path, record, _with(record, protocol__fid__route="eigh"), "--json")
    assert code == 0 and report["verdict"] == "comparable"           # the measurement explains, never re-judges
    effect = fields["Fréchet route"]["explain"]
    eigh = evaluate_imagenet(samples, reference, metrics="fid,kid", weights="offline", frechet="eigh", bootstrap=0)
    assert effect["setting"] == "frechet=eigh" and effect["reason"] is None
    assert effect["b_setting"] == {"fid": eigh["values"]["fid"]}                  # KID does not take the route
    assert effect["a_settings"]["fid"] == record["values"]["fid"]
    difference = effect["difference"]["fid"]
    assert difference == eigh["values"]["fid"] - record["values"]["fid"]
    assert difference != 0 and abs(difference) < 1e-5 * record["values"]["fid"]     # real, and within the note's bound
    assert report["explain"]["rescored_a"]["fid"] == record["values"]["fid"]


def test_a_smaller_sample_count_is_measured_on_the_nested_subsets(scored, tmp_path):
    record, _, _ = scored
    code, _, fields = _explain(tmp_path, record, _with(record, protocol__samples__count=50), "--json")
    assert code == EXIT_CHECK_FAILED                                  # another sample count: not comparable
    effect = fields["sample count"]["explain"]
    curve = record["extra"]["fid_vs_n"]                               # FID(50) of the same seeded subsets
    assert curve["n"][0] == 50
    assert effect["b_setting"]["fid"] == pytest.approx(curve["fid"][0], rel=1e-12)
    assert effect["difference"]["fid"] > 0                            # FID is biased upward at smaller N
    larger = _explain(tmp_path, record, _with(record, protocol__samples__count=50_000), "--json")[2]
    assert "more than A's 60" in larger["sample count"]["explain"]["reason"]


def test_what_cannot_be_measured_says_why_in_one_line(scored, tmp_path):
    record, _, _ = scored
    b = _with(record, sampler__cfg_scale=1.5, protocol__is__split_rule="ten-splits-below-50k")
    code, text, _ = _explain(tmp_path, record, b)
    assert code == EXIT_CAVEAT
    line = next(line for line in text.splitlines() if "CFG scale" in line)
    assert "not measured: needs new samples" in line
    code, _, fields = _explain(tmp_path, record, b, "--json")
    assert code == EXIT_CAVEAT
    assert fields["CFG scale"]["explain"]["reason"] == NEEDS_NEW_SAMPLES
    assert "none of A's metrics (fid, kid, kid_std) changes with is_split_rule" in (
        fields["IS split rule"]["explain"]["reason"])                  # offline weights: no IS to split
    full = _with(record, protocol__extractor__weights="inception", protocol__extractor__features_sha256="0" * 64)
    code, _, fields = _explain(tmp_path, record, full, "--json")
    assert code == EXIT_CHECK_FAILED                                  # other extractor weights: not comparable
    reason = fields["extractor weights sha256"]["explain"]["reason"]
    assert reason.startswith("rescoring failed") and "weights fetch inception" in reason   # offline: not installed


def test_unreadable_samples_and_bad_devices(scored, tmp_path):
    record, _, _ = scored
    gone = _with(record, samples__path=str(tmp_path / "moved.npz"))
    code, _, fields = _explain(tmp_path, gone, _with(gone, protocol__fid__route="eigh"), "--json")
    assert code == 0 and "is not readable here" in fields["Fréchet route"]["explain"]["reason"]
    outcome = runner.invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--explain",
                                  "--device", "cuda:99"])
    assert outcome.exit_code == EXIT_BAD_INPUT and "error:" in outcome.output and "cuda" in outcome.output


@pytest.mark.slow
def test_a_backend_difference_is_measured_with_the_other_backend(scored, tmp_path):
    record, samples, reference = scored
    code, _, fields = _explain(tmp_path, record, _with(record, evaluator__backend="clean-fid"), "--json")
    assert code == EXIT_CHECK_FAILED
    clean = evaluate_imagenet(samples, reference, metrics="fid,kid", weights="offline", backend="clean-fid")
    effect = fields["backend"]["explain"]
    assert effect["b_setting"]["fid"] == clean["values"]["fid"] and effect["b_setting"]["kid"] == clean["values"]["kid"]
    assert abs(effect["difference"]["fid"]) > 0.1                    # another resize and metric code: points of FID
