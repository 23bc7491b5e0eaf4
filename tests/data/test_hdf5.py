from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from surrogate.data.hdf5 import SCHEMA_VERSION, H5Slice, atomic_h5, lazy_dataset, open_h5, require_dataset
from surrogate.errors import InputError, OutputExistsError


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("values", data=np.arange(70, dtype=np.float32).reshape(35, 2), chunks=(8, 2))
    return path


def test_open_h5_turns_every_failure_into_one_line(tmp_path: Path, small_file: Path) -> None:
    (tmp_path / "text.h5").write_text("not hdf5")
    raw = small_file.read_bytes()
    (tmp_path / "half.h5").write_bytes(raw[:len(raw) // 2])
    cases = {"missing.h5": "no such file", "text.h5": "not an HDF5 file", "half.h5": "truncated or corrupt"}
    for name, problem in cases.items():
        with pytest.raises(InputError, match=problem) as info:
            open_h5(tmp_path / name)
        assert info.value.path == str(tmp_path / name) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="is a directory"):
        open_h5(tmp_path)
    with open_h5(small_file) as f:
        assert f.mode == "r"


def test_require_dataset_lists_what_the_file_holds(small_file: Path) -> None:
    with open_h5(small_file) as f:
        assert require_dataset(f, "values").shape == (35, 2)
        with pytest.raises(InputError, match=r"showers: missing dataset \(file holds: values\)"):
            require_dataset(f, "showers")


def test_atomic_h5_renames_on_success_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.h5"
    with pytest.raises(RuntimeError, match="boom"), atomic_h5(target, kind="test") as f:
        f["x"] = np.ones(3)
        raise RuntimeError("boom")
    assert list((tmp_path / "sub").iterdir()) == []
    with atomic_h5(target, kind="test") as f:
        f["x"] = np.ones(3)
        assert not target.exists()  # visible only once complete
    with h5py.File(target, "r") as f:
        assert f.attrs["surrogate_schema_version"] == SCHEMA_VERSION and f.attrs["kind"] == "test"
        np.testing.assert_array_equal(f["x"][:], np.ones(3))
    with pytest.raises(OutputExistsError), atomic_h5(target):
        pass
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.h5"]


def test_h5_slice_pickles_by_name_and_reads_per_call(small_file: Path) -> None:
    src = H5Slice(small_file, "values")
    assert (src.shape, src.dtype, src.ndim, src.chunks) == ((35, 2), np.float32, 2, (8, 2))
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone[3:5], [[6.0, 7.0], [8.0, 9.0]])


def test_lazy_dataset_chunks_along_events_and_reads_the_values(small_file: Path) -> None:
    arr = lazy_dataset(small_file, "values", chunk_events=10)
    assert arr.chunks == ((8, 8, 8, 8, 3), (2,))  # whole 8-event HDF5 chunks, at most 10 events
    np.testing.assert_array_equal(arr.sum(axis=0).compute(scheduler="synchronous"),
                                  [sum(range(0, 70, 2)), sum(range(1, 70, 2))])
    assert lazy_dataset(small_file, "values", chunk_events=17).chunks == ((16, 16, 3), (2,))
    assert lazy_dataset(small_file, "values", chunk_events=5).chunks == ((5,) * 7, (2,))
    assert lazy_dataset(small_file, "values", chunk_events=1000).chunks == ((35,), (2,))
