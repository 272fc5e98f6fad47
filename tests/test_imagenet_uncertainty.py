"""FID bootstrap and FID(N) (evaluators/imagenet/uncertainty.py): exact against a direct computation, seeded,
intervals that shrink with N on real digits, FID(N) ending at the FID."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from evaluators.imagenet.errors import ImageNetEvalError
from evaluators.imagenet.metrics import fid_statistics, frechet_distance
from evaluators.imagenet.uncertainty import (
    DEFAULT_BOOTSTRAP_RESAMPLES,
    ResampledFrechet,
    bootstrap_counts,
    bootstrap_fid,
    fid_vs_n,
    fid_vs_n_sizes,
    resolve_resamples,
)


def _case(count, dim, seed=1):
    rng = np.random.default_rng(seed)
    samples = rng.normal(size=(count, dim)) @ rng.normal(size=(dim, dim)) + 3
    reference = rng.normal(size=(400, dim)) @ rng.normal(size=(dim, dim)) + 2.5
    mu, sigma = fid_statistics(reference)
    return samples, mu, sigma


@pytest.mark.parametrize("method", ["gram", "root", "auto"])
def test_weighted_resample_equals_materialised_rows(method):
    samples, mu, sigma = _case(60, 8)
    frechet = ResampledFrechet(samples, mu, sigma, method)
    for counts in bootstrap_counts(len(samples), 5, seed=3):
        assert counts.sum() == len(samples) and (counts == 0).any() and (counts > 1).any()
        rows = np.repeat(samples, counts, axis=0)          # the slow way: duplicated rows, np.cov, ADM's sqrtm
        direct = frechet_distance(rows.mean(axis=0), np.cov(rows, rowvar=False), mu, sigma, route="sqrtm")
        assert frechet.distance(counts) == pytest.approx(direct, rel=1e-8)


def test_methods_agree_with_fewer_samples_than_dimensions():
    """n <= d: every resample's covariance is rank-deficient; the two methods are independent computations."""
    samples, mu, sigma = _case(20, 32)
    gram, root = ResampledFrechet(samples, mu, sigma, "gram"), ResampledFrechet(samples, mu, sigma, "root")
    assert ResampledFrechet(samples, mu, sigma).method == "gram"
    for counts in bootstrap_counts(len(samples), 5, seed=0):
        assert gram.distance(counts) == pytest.approx(root.distance(counts), rel=1e-9)
    full = np.ones(len(samples), dtype=int)
    reported = frechet_distance(*fid_statistics(samples), mu, sigma)
    assert gram.distance(full) == pytest.approx(reported, rel=1e-7)


@pytest.fixture(scope="module")
def digits():
    """Real data: the 1797 8x8 digits as 64-d pixel vectors in a seeded order, and the statistics of all of them as
    the fixed reference (the dataset statistics an FID is taken against; only the samples are resampled)."""
    pixels = load_digits().data.astype(np.float64)
    order = np.random.default_rng(0).permutation(len(pixels))
    return pixels[order], *fid_statistics(pixels)


def test_interval_shrinks_as_n_grows_on_real_digits(digits):
    samples, mu, sigma = digits
    widths = []
    for count in (100, 400, 1600):
        out = bootstrap_fid(samples[:count], mu, sigma, resamples=200, seed=0)
        assert out["p2.5"] < out["mean"] < out["p97.5"] and out["std"] > 0
        widths.append(out["p97.5"] - out["p2.5"])
    assert all(wider > narrower for wider, narrower in zip(widths, widths[1:])), widths


def test_bootstrap_is_seeded(digits):
    samples, mu, sigma = digits
    first = bootstrap_fid(samples[:150], mu, sigma, resamples=50, seed=7)
    again = bootstrap_fid(samples[:150], mu, sigma, resamples=50, seed=7)
    other = bootstrap_fid(samples[:150], mu, sigma, resamples=50, seed=8)
    keys = ("mean", "std", "p2.5", "p97.5")
    assert [first[key] for key in keys] == [again[key] for key in keys]
    assert [first[key] for key in keys] != [other[key] for key in keys]
    assert (first["resamples"], first["seed"], first["count"]) == (50, 7, 150) and "reference" in first["resampled"]


def test_fid_vs_n_ends_at_the_fid(digits):
    samples, mu, sigma = digits[0][:300], *digits[1:]
    # The digits' constant border pixels make sigma rank-deficient: there the eigh route's clipped eigenvalues
    # leave ~1e-7 of rounding in its FID (within the 1e-6 the routes are held to), ADM's sqrtm and the
    # resampling routes agree to ~1e-11.
    fid = frechet_distance(*fid_statistics(samples), mu, sigma)
    computed = fid_vs_n(samples, mu, sigma, seed=0)
    assert computed["n"] == [50, 100, 200, 300]
    assert computed["fid"][-1] == pytest.approx(frechet_distance(*fid_statistics(samples), mu, sigma, route="sqrtm"),
                                                rel=1e-9)
    assert computed["fid"][-1] == pytest.approx(fid, rel=1e-6)
    reported = fid_vs_n(samples, mu, sigma, seed=0, full_fid=fid)
    assert reported["fid"][-1] == fid and reported["fid"][:-1] == computed["fid"][:-1]
    # nested subsets of one seeded permutation: the first N rows of it, any N
    order = np.random.default_rng(0).permutation(len(samples))
    first_100 = samples[order[:100]]
    assert computed["fid"][1] == pytest.approx(frechet_distance(*fid_statistics(first_100), mu, sigma, route="sqrtm"),
                                                  rel=1e-9)
    assert fid_vs_n(samples, mu, sigma, seed=1)["fid"][0] != computed["fid"][0]


def test_fid_vs_n_streams_when_samples_outnumber_dimensions(digits, monkeypatch):
    """300 samples of 64-d: every N above 64 comes from sums streamed in chunks (here of 37 rows, so the subsets
    cut across chunks) and equals the weighted-resampling route, which holds every row in float64."""
    import evaluators.imagenet.uncertainty as uncertainty

    monkeypatch.setattr(uncertainty, "STREAM_CHUNK", 37)
    samples, mu, sigma = digits[0][:300], *digits[1:]
    streamed = fid_vs_n(samples, mu, sigma, seed=3)
    resampled = fid_vs_n(samples, mu, sigma, seed=3, method="root")
    assert (streamed["method"], resampled["method"]) == ("streamed", "root")
    assert streamed["n"] == resampled["n"] == [50, 100, 200, 300]
    np.testing.assert_allclose(streamed["fid"], resampled["fid"], rtol=1e-9)


def test_sizes_and_settings():
    assert fid_vs_n_sizes(200) == [50, 100, 200] and fid_vs_n_sizes(50) == [50] and fid_vs_n_sizes(30) == [30]
    assert fid_vs_n_sizes(50000)[-2:] == [25600, 50000]
    assert resolve_resamples(None, 200, 2048) == (DEFAULT_BOOTSTRAP_RESAMPLES, None)
    resamples, why = resolve_resamples(None, 50000, 2048)
    assert resamples == 0 and "--bootstrap B" in why
    assert resolve_resamples(0, 200, 2048)[0] == 0 and resolve_resamples(50, 50000, 2048) == (50, None)
    with pytest.raises(ImageNetEvalError, match="at least 2"):
        resolve_resamples(1, 200, 2048)
    with pytest.raises(ImageNetEvalError, match="do not fit"):
        ResampledFrechet(np.zeros((4, 3)), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------ wired into evaluate_imagenet


def test_evaluate_records_bootstrap_and_fid_vs_n(digit_sets):
    from evaluators.imagenet import evaluate_imagenet

    record = evaluate_imagenet(*digit_sets, metrics="fid", weights="offline")
    fid, extra = record["values"]["fid"], record["extra"]
    assert list(record["values"]) == ["fid"]                        # the values block is unchanged
    boot = extra["fid_bootstrap"]
    assert (boot["resamples"], boot["seed"], boot["count"], boot["method"]) == (DEFAULT_BOOTSTRAP_RESAMPLES, 0, 60,
                                                                                "gram")
    assert boot["p2.5"] < boot["mean"] < boot["p97.5"] and boot["std"] > 0
    assert extra["fid_vs_n"]["n"] == [50, 60] and extra["fid_vs_n"]["fid"][-1] == fid
    assert {"fid_bootstrap", "fid_vs_n"} <= set(extra["timings_s"])
    card = extra["fid_uncertainty"]
    assert "uncertainty" not in record["protocol"]["fid"]         # the report keys tables by the protocol card
    assert card["bootstrap_resamples"] == DEFAULT_BOOTSTRAP_RESAMPLES and card["bootstrap_seed"] == 0
    assert card["fid_vs_n"]["sizes"] == [50, 60] and "reference statistics fixed" in card["resampled"]

    again = evaluate_imagenet(*digit_sets, metrics="fid", weights="offline")
    assert again["extra"]["cache"]["metrics"] == "hit" and again["extra"]["fid_bootstrap"] == boot
    off = evaluate_imagenet(*digit_sets, metrics="fid", weights="offline", bootstrap=0)
    assert off["extra"]["cache"]["metrics"] == "miss" and off["values"] == record["values"]   # memo key holds B
    assert "fid_bootstrap" not in off["extra"] and off["extra"]["fid_vs_n"]["fid"][-1] == fid
    assert off["extra"]["fid_uncertainty"]["bootstrap_note"] == "disabled (--bootstrap 0)"
    assert off["protocol"] == record["protocol"]
    # another B and seed: test_cli_bootstrap_options

def test_cli_bootstrap_options(digit_sets, tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from pixeldit.cli.eval_imagenet import eval_imagenet

    app, eval_app = typer.Typer(), typer.Typer()
    eval_app.command("imagenet")(eval_imagenet)
    app.add_typer(eval_app, name="eval")
    runner = CliRunner()
    base = ["eval", "imagenet", str(digit_sets[0]), "--ref", str(digit_sets[1]), "--weights", "offline"]
    dry = runner.invoke(app, [*base, "--bootstrap", "0", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["fid_bootstrap"] == {"resamples": 0, "seed": 0, "note": "disabled (--bootstrap 0)"}
    assert runner.invoke(app, [*base, "--bootstrap", "1", "--dry-run"]).exit_code == 1
    out = tmp_path / "fid.json"
    run = runner.invoke(app, [*base, "--metrics", "fid", "--bootstrap", "40", "--bootstrap-seed", "2", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "FID bootstrap (40 resamples of the samples, seed 2)" in " ".join(run.output.split())
    boot = json.loads(out.read_text())["extra"]["fid_bootstrap"]
    assert (boot["resamples"], boot["seed"]) == (40, 2)
