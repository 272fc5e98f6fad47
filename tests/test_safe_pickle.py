"""The restricted unpickler: NumPy arrays in builtin containers load at every protocol, nothing else runs."""
import os
import pickle

import numpy as np
import pytest

from pixeldit.infra.safe_pickle import UnsafePickleError, load_array_pickle

STATS = {"num_images": 7, "fid": {"mu": np.arange(4.0), "sigma": np.eye(4, dtype=np.float32)},
         "scalars": [np.float64(2.5), np.int64(-3)], "name": "img512", "shape": (1, 2)}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_arrays_dicts_and_scalars_load_at_every_protocol(protocol):
    loaded = load_array_pickle(pickle.dumps(STATS, protocol=protocol))
    np.testing.assert_array_equal(loaded["fid"]["sigma"], STATS["fid"]["sigma"])
    assert loaded["fid"]["sigma"].dtype == np.float32 and loaded["fid"]["mu"].dtype == np.float64
    assert loaded["scalars"] == [2.5, -3] and loaded["name"] == "img512" and loaded["shape"] == (1, 2)


def test_a_pickle_written_by_numpy_1_loads():
    # NumPy 1.x names its reconstruction function numpy.core.multiarray._reconstruct (2.x: numpy._core); protocol
    # 2 writes module names as newline-ended text, so the name can be swapped in place
    data = pickle.dumps(np.arange(3.0), protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    np.testing.assert_array_equal(load_array_pickle(data), np.arange(3.0))


class _Reduces:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("function", [os.system, eval, getattr, np.load], ids=lambda f: f.__name__)
def test_any_other_callable_is_refused_before_it_is_called(function, tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"fid": _Reduces(function, f"touch {marker}")})
    with pytest.raises(UnsafePickleError, match="asks the unpickler for"):
        load_array_pickle(payload)
    assert not marker.exists()


def test_object_arrays_are_refused():
    with pytest.raises(UnsafePickleError, match="array of Python objects"):
        load_array_pickle(pickle.dumps({"fid": {"mu": np.array([1, "a"], dtype=object)}}))
