"""The shard engine on its own: plan, naming, completeness, the failure modes a merge must refuse, the merge."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pixeldit.infra import shards
from pixeldit.infra.files import save_npz_atomic

SETTINGS = {"seed": 7, "sampler": "euler"}
N, SIZE = 10, 4   # shards 0..3, 4..7, 8..9


def fill(out: Path, first: int, last: int, settings: dict = SETTINGS) -> Path:
    """One npz shard whose rows are their own indices, then its sidecar, as a generator writes them."""
    path = shards.shard_file(out, first, last)
    indices = np.arange(first, last + 1)
    save_npz_atomic(path, arr_0=np.repeat(indices.astype(np.uint8), 6).reshape(-1, 2, 3), arr_1=indices)
    shards.write_sidecar(out, first, last, settings, [path])
    return path


@pytest.fixture
def complete(tmp_path) -> Path:
    for first, last in shards.shard_ranges(N, SIZE):
        fill(tmp_path, first, last)
    return tmp_path


def test_plan_ranges_ids_and_this_ranks_share(monkeypatch):
    assert shards.shard_ranges(N, SIZE) == [(0, 3), (4, 7), (8, 9)]
    assert shards.parse_shard_ids("0,3,5-7") == [0, 3, 5, 6, 7]
    with pytest.raises(ValueError, match=r"shard ids \[3\] do not exist: 3 shards \(ids 0\.\.2\)"):
        shards.ranks_shard_ids(3, [0, 3], "3 shards")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shards.ranks_shard_ids(5, None, "") == [1, 3]


def test_one_naming_rule_for_files_sidecars_and_the_workflow(tmp_path):
    assert shards.shard_file(tmp_path, 0, 3).name == "shard-0000000-0000003.npz"
    assert shards.sidecar_path(tmp_path, 0, 3) == tmp_path / ".shards" / "shard-0000000-0000003.json"
    assert shards.shard_sidecars("out", N, SIZE)[-1] == "out/.shards/shard-0000008-0000009.json"
    assert shards.sidecar_template("out").format(first="0000008", last="0000009") == "out/.shards/shard-0000008-0000009.json"


def test_complete_needs_same_settings_and_intact_files(complete):
    assert shards.pending_shards(complete, shards.shard_ranges(N, SIZE), SETTINGS) == []
    corrupt = shards.shard_file(complete, 4, 7)
    corrupt.write_bytes(corrupt.read_bytes()[:-1] + b"?")
    assert shards.pending_shards(complete, shards.shard_ranges(N, SIZE), SETTINGS) == [(4, 7)]
    with pytest.raises(ValueError, match=r"shard-0000004-0000007.npz does not match the sha256.*rerun the same"):
        shards.verified_shards(complete, N)


def test_a_kill_between_the_npz_and_its_sidecar(complete):
    shards.sidecar_path(complete, 8, 9).unlink()   # the npz was renamed into place, the sidecar never written
    assert shards.pending_shards(complete, shards.shard_ranges(N, SIZE), SETTINGS) == [(8, 9)]
    with pytest.raises(ValueError, match=r"shard-0000008-0000009.npz has no readable sidecar"):
        shards.verified_shards(complete, N)


def test_a_gap_is_refused(complete):
    shards.shard_file(complete, 4, 7).unlink()
    shards.sidecar_path(complete, 4, 7).unlink()
    with pytest.raises(ValueError, match=r"gap: indices 4\.\.7 are missing after shard-0000000-0000003"):
        shards.verified_shards(complete, N)


def test_a_missing_tail_is_a_gap(complete):
    with pytest.raises(ValueError, match=r"gap: prompts 10\.\.11 are missing after shard-0000008-0000009"):
        shards.verified_shards(complete, 12, unit="prompts")


def test_an_overlap_and_a_straddling_n_are_refused(complete):
    fill(complete, 2, 5)
    with pytest.raises(ValueError, match=r"shard-0000002-0000005 overlaps shard-0000000-0000003: indices 2\.\.3"):
        shards.verified_shards(complete)
    with pytest.raises(ValueError, match=r"cross n=5"):
        shards.verified_shards(complete, 5)


def test_other_settings_are_refused_or_redone(complete):
    other = {**SETTINGS, "seed": 8}
    with pytest.raises(ValueError, match=r"shard-0000000-0000003.json was sampled with other settings.*seed"):
        shards.pending_shards(complete, [(0, 3)], other)
    assert shards.pending_shards(complete, [(0, 3)], other, refuse_foreign=False) == [(0, 3)]
    fill(complete, 4, 7, other)
    with pytest.raises(ValueError, match=r"shard-0000004-0000007 and shard-0000000-0000003 were made with different "
                                         r"settings \{'seed': \(8, 7\)\}"):
        shards.verified_shards(complete, N)


@pytest.mark.parametrize("old_file", ["shard-0000000-0000003.json", ".shards/shard-00000-00003.json"])
def test_an_old_layout_is_refused_with_the_fix(complete, old_file):
    (complete / old_file).write_text(json.dumps({"schema": "pixeldit-bench/sample-shard/v1", "settings": SETTINGS}))
    for check in (lambda: shards.pending_shards(complete, [(0, 3)], SETTINGS), lambda: shards.verified_shards(complete)):
        with pytest.raises(ValueError, match=r"older shard layout.*Delete the shards"):
            check()


def test_merge_concatenates_every_array_in_order(complete, tmp_path):
    files = [shards.shard_file(complete, first, last) for first, last in shards.shard_ranges(N, SIZE)]
    merged = shards.merge_npz(tmp_path / "samples.npz", files)
    with np.load(merged) as data:
        assert data["arr_1"].tolist() == list(range(N)) and data["arr_1"].dtype == np.int64
        assert data["arr_0"].shape == (N, 2, 3) and data["arr_0"][:, 0, 0].tolist() == list(range(N))
    expected = tmp_path / "expected.npz"
    save_npz_atomic(expected, arr_0=np.concatenate([np.load(f)["arr_0"] for f in files]),
                    arr_1=np.arange(N))
    with np.load(expected) as want, np.load(merged) as got:
        assert all(np.array_equal(want[key], got[key]) for key in ("arr_0", "arr_1"))
