from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import h5py
import numpy as np
import pytest

from surrogate.config import PrepareConfig
from surrogate.data.prepare import OUTPUTS, dask_scheduler, prepare_store, split_labels
from surrogate.data.transforms import load_transform
from surrogate.domains.calorimeter import DOMAIN, schema
from surrogate.errors import InputError, OutputExistsError

Showers = tuple[np.ndarray, np.ndarray]
Prepared = tuple[Path, dict[str, float | int]]


def run_prepare(inputs: tuple[Path, ...], out: Path, **overrides: Any) -> dict[str, float | int]:
    cfg = PrepareConfig(**{"chunk_events": 256, **overrides})
    with dask_scheduler(cfg):
        return prepare_store(DOMAIN, cfg, tuple(str(p) for p in inputs), out, progress=False)


def read_store(out: Path) -> dict[str, Any]:
    """Every dataset and attribute of a prepared folder (sources excluded: they name the input path)."""
    content: dict[str, Any] = {"transform.json": (out / "transform.json").read_text()}
    for name in ("store.h5", "reference_val.h5", "reference_test.h5"):
        with h5py.File(out / name, "r") as f:
            content[name] = {k: v for k, v in f.attrs.items() if k != "sources"}
            f.visititems(lambda key, obj, name=name: content.__setitem__(
                f"{name}/{key}", obj[()] if isinstance(obj, h5py.Dataset) else dict(obj.attrs)))
    return content


def assert_same_store(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            assert a[key].dtype == b[key].dtype
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, calo_file: Path) -> Prepared:
    out = tmp_path_factory.mktemp("prepared") / "out"
    return out, run_prepare((calo_file,), out, scheduler="threads")


def test_split_labels_have_the_configured_sizes_and_follow_the_seed() -> None:
    labels = split_labels(1000, PrepareConfig(val_fraction=0.15, test_fraction=0.25, seed=3))
    assert labels.dtype == np.int8
    assert np.bincount(labels).tolist() == [600, 150, 250]
    np.testing.assert_array_equal(labels, split_labels(1000, PrepareConfig(val_fraction=0.15,
                                                                          test_fraction=0.25, seed=3)))
    other = split_labels(1000, PrepareConfig(val_fraction=0.15, test_fraction=0.25, seed=4))
    assert (labels != other).mean() > 0.3


def test_store_follows_the_contract(prepared: Prepared, calo_file: Path,
                                    showers_600: Showers) -> None:
    out, result = prepared
    data, e_inc = showers_600
    labels = split_labels(600, PrepareConfig())
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert (result["n_events"], result["n_train"], result["n_val"], result["n_test"]) == (600, 420, 60, 120)
    assert result["e_min_mev"] == float(e_inc.min()) and result["e_max_mev"] == float(e_inc.max())
    assert result["read_mb_per_s"] > 0 and result["input_mb"] == pytest.approx(600 * 6481 * 4 / 1e6)
    transform = load_transform(out / "transform.json")
    with h5py.File(out / "store.h5", "r") as f:
        assert f.attrs["domain"] == "calorimeter" and f.attrs["transform"] == "log_ratio"
        assert (f.attrs["n_features"], f.attrs["n_cond"], f.attrs["seed"]) == (6480, 1, 0)
        assert f.attrs["surrogate_schema_version"] == 1
        assert json.loads(f.attrs["sources"]) == [str(calo_file.resolve())]
        for i, split in enumerate(("train", "val", "test")):
            rows = labels == i
            group = f[split]
            assert group.attrs["n_events"] == rows.sum()
            for name, width in (("x", 6480), ("cond", 1), ("cond_raw", 1)):
                ds = group[name]
                assert ds.shape == (rows.sum(), width) and ds.dtype == np.float32
                assert ds.chunks == (min(256, rows.sum()), width) and ds.compression is None
            # events keep their input order within a split
            np.testing.assert_array_equal(group["cond_raw"][:], e_inc[rows])
            x, c = transform.forward(data[rows], e_inc[rows])
            np.testing.assert_array_equal(group["x"][:], x)
            np.testing.assert_array_equal(group["cond"][:], c)
    with h5py.File(out / "store.h5", "r") as f:
        np.testing.assert_allclose(transform.inverse(f["train"]["x"][:], e_inc[labels == 0]),
                                   data[labels == 0], rtol=4e-6)


def test_transform_is_fitted_on_the_training_split_alone(prepared: Prepared, showers_600: Showers) -> None:
    from surrogate.domains.calorimeter.transform import LogRatioTransform

    out, _ = prepared
    data, e_inc = showers_600
    train = split_labels(600, PrepareConfig()) == 0
    saved = load_transform(out / "transform.json")
    alone = LogRatioTransform.fit(data[train], e_inc[train].reshape(-1, 1), threshold=saved.threshold_mev)
    # every statistic is the training split's, bit for bit: the mean shower the generator starts from
    # holds nothing of the validation and test showers ...
    for key, value in alone.to_dict().items():
        if key not in ("e_min_mev", "e_max_mev"):
            assert saved.to_dict()[key] == value, key
    assert not np.array_equal(saved.mean_fraction, LogRatioTransform.fit(
        data, e_inc.reshape(-1, 1), threshold=saved.threshold_mev).mean_fraction)
    # ... while the condition range spans every split, so generate accepts the test split's energies
    assert (saved.e_min_mev, saved.e_max_mev) == (float(e_inc.min()), float(e_inc.max()))
    assert (alone.e_min_mev, alone.e_max_mev) != (saved.e_min_mev, saved.e_max_mev)


def test_references_hold_the_split_events_bit_for_bit(prepared: Prepared,
                                                     showers_600: Showers) -> None:
    out, _ = prepared
    data, e_inc = showers_600
    labels = split_labels(600, PrepareConfig())
    for label, name in ((1, "reference_val.h5"), (2, "reference_test.h5")):
        with h5py.File(out / name, "r") as f:
            np.testing.assert_array_equal(f[schema.SHOWERS][:], data[labels == label])
            np.testing.assert_array_equal(f[schema.INCIDENT][:], e_inc[labels == label])
            assert f.attrs["split"] == ("val" if label == 1 else "test")
        loaded, _ = DOMAIN.read_events(out / name)
        assert loaded.shape == ((labels == label).sum(), 6480)


def test_output_does_not_depend_on_chunking_or_local_scheduler(
        tmp_path: Path, calo_file: Path, prepared: Prepared) -> None:
    run_prepare((calo_file,), tmp_path / "sync", scheduler="synchronous", chunk_events=100)
    a, b = read_store(prepared[0]), read_store(tmp_path / "sync")
    # the HDF5 chunking of the store follows chunk_events; everything else is identical
    assert_same_store(a, b)


def test_several_inputs_are_concatenated(tmp_path: Path, make_file: Callable[..., Path],
                                         showers_600: Showers) -> None:
    data, e_inc = showers_600
    first = make_file("first.h5", data[:250], e_inc[:250])
    second = make_file("second.h5", data[250:], e_inc[250:])
    result = run_prepare((first, second), tmp_path / "out", chunk_events=100)
    assert result["n_events"] == 600
    labels = split_labels(600, PrepareConfig())
    with h5py.File(tmp_path / "out" / "reference_test.h5", "r") as f:
        np.testing.assert_array_equal(f[schema.SHOWERS][:], data[labels == 2])
    with h5py.File(tmp_path / "out" / "store.h5", "r") as f:
        assert len(json.loads(f.attrs["sources"])) == 2


def test_empty_validation_split_and_progress_on_stderr(tmp_path: Path, calo_file: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = PrepareConfig(val_fraction=0.0, chunk_events=512)
    with dask.config.set(scheduler="threads"):
        result = prepare_store(DOMAIN, cfg, (str(calo_file),), tmp_path / "out", progress=True)
    assert (result["n_train"], result["n_val"], result["n_test"]) == (480, 0, 120)
    with h5py.File(tmp_path / "out" / "store.h5", "r") as f:
        assert f["val"]["x"].shape == (0, 6480) and f["val"].attrs["n_events"] == 0
    with h5py.File(tmp_path / "out" / "reference_val.h5", "r") as f:
        assert f[schema.SHOWERS].shape == (0, 6480)
    err = capsys.readouterr().err
    assert "prepare: check + fit" in err and "prepare: write" in err


def _not_hdf5(tmp_path: Path, calo_file: Path, showers: Showers) -> Path:
    path = tmp_path / "notes.h5"
    path.write_text("incident_energies,showers\n1000,0.5\n")
    return path


def _truncated(tmp_path: Path, calo_file: Path, showers: Showers) -> Path:
    path = tmp_path / "truncated.h5"
    raw = calo_file.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    return path


def _corrupt_chunk(tmp_path: Path, calo_file: Path, showers: Showers) -> Path:
    """Valid metadata, garbage inside a compressed chunk: fails only when that chunk is read."""
    path = tmp_path / "corrupt.h5"
    raw = bytearray(calo_file.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(raw))
    return path


def _without_showers(tmp_path: Path, calo_file: Path, showers: Showers) -> Path:
    path = tmp_path / "no_showers.h5"
    with h5py.File(path, "w") as f:
        f[schema.INCIDENT] = showers[1]
    return path


def _ds1_photons(tmp_path: Path, calo_file: Path, showers: Showers) -> Path:
    path = tmp_path / "ds1_photons.h5"
    with h5py.File(path, "w") as f:
        f[schema.INCIDENT] = showers[1]
        f[schema.SHOWERS] = showers[0][:, :368]
    return path


def _with_value(index: int, voxel: int, value: float) -> Callable[[Path, Path, Showers], Path]:
    def make(tmp_path: Path, calo_file: Path, showers: Showers) -> Path:
        data, e_inc = showers[0].copy(), showers[1].copy()
        if voxel < 0:
            e_inc[index, 0] = value
        else:
            data[index, voxel] = value
        path = tmp_path / f"bad_{index}.h5"
        schema.write_file(path, [(data, e_inc)], len(data), schema.dataset2_geometry(), {})
        return path

    return make


@pytest.mark.parametrize(("make", "expected"), [
    (_not_hdf5, "not an HDF5 file"),
    (_truncated, "truncated or corrupt"),
    (_corrupt_chunk, "truncated or corrupt"),
    (_without_showers, "showers: missing dataset"),
    (_ds1_photons, "368 voxels per shower, expected 6480"),
    (_with_value(437, 100, np.nan), "NaN or inf .*event 437"),
    (_with_value(123, 6479, np.inf), "NaN or inf .*event 123"),
    (_with_value(300, 5, -0.25), "negative .*event 300"),
    (_with_value(599, -1, 0.0), "zero incident.*event 599"),
], ids=["not_hdf5", "truncated", "corrupt_chunk", "no_showers", "368_voxels", "nan", "inf", "negative",
        "zero_e_inc"])
def test_bad_input_is_one_input_error_and_leaves_nothing(
        tmp_path: Path, calo_file: Path, showers_600: Showers,
        make: Callable[[Path, Path, Showers], Path], expected: str) -> None:
    bad = make(tmp_path, calo_file, showers_600)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=expected) as info:
        run_prepare((bad,), out, chunk_events=128)
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_existing_outputs_are_never_overwritten(tmp_path: Path, calo_file: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "store.h5").write_bytes(b"an earlier store")
    with pytest.raises(OutputExistsError, match=r"store\.h5"):
        run_prepare((calo_file,), out)
    assert (out / "store.h5").read_bytes() == b"an earlier store"
    assert [p.name for p in out.iterdir()] == ["store.h5"]


def test_failure_in_an_existing_folder_removes_only_what_it_created(
        tmp_path: Path, calo_file: Path, showers_600: Showers) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    bad = _with_value(590, 7, np.nan)(tmp_path, calo_file, showers_600)
    with pytest.raises(InputError, match="event 590"):
        run_prepare((bad,), out, chunk_events=64, scheduler="synchronous")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    shutil.rmtree(out)


# --------------------------------------------------------------------------------------------------
# A real dask.distributed LocalCluster (2 worker processes). These tests come last in this module: the
# cluster stays dask's default scheduler from its first use until the module ends.


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One LocalCluster per module (worker start-up costs seconds), active as dask's scheduler.

    Its scratch space is a fresh folder: in the shared /tmp/dask-scratch-space, purging other runs'
    leftovers can pass distributed's 1 s warning, which pytest turns into an error.
    """
    scratch = tmp_path_factory.mktemp("dask-scratch")
    with dask.config.set({"temporary-directory": str(scratch)}), \
            dask_scheduler(PrepareConfig(scheduler="distributed", n_workers=2)):
        yield


def test_distributed_output_equals_threaded_for_two_chunk_sizes(cluster: None, tmp_path: Path,
                                                                 calo_file: Path) -> None:
    from distributed import default_client

    assert len(default_client().nthreads()) == 2
    inputs = (str(calo_file),)
    prepare_store(DOMAIN, PrepareConfig(chunk_events=256), inputs, tmp_path / "distributed_256",
                  progress=False)
    # a second client connecting to the running cluster by address, as on a shared cluster
    by_address = PrepareConfig(scheduler="distributed", address=default_client().scheduler.address,
                               chunk_events=100)
    with dask_scheduler(by_address):
        prepare_store(DOMAIN, by_address, inputs, tmp_path / "distributed_100", progress=False)
    with dask.config.set(scheduler="threads"):
        prepare_store(DOMAIN, PrepareConfig(chunk_events=256), inputs, tmp_path / "threads", progress=False)
    reference = read_store(tmp_path / "threads")
    assert_same_store(read_store(tmp_path / "distributed_100"), reference)
    assert_same_store(read_store(tmp_path / "distributed_256"), reference)


def test_distributed_bad_value_is_an_input_error(cluster: None, tmp_path: Path, showers_600: Showers) -> None:
    data, e_inc = showers_600[0].copy(), showers_600[1]
    data[211, 3000] = -np.inf
    bad = tmp_path / "bad.h5"
    schema.write_file(bad, [(data, e_inc)], len(data), schema.dataset2_geometry(), {})
    with pytest.raises(InputError, match=r"bad\.h5: .*NaN or inf .*event 211"):
        prepare_store(DOMAIN, PrepareConfig(chunk_events=100), (str(bad),), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_implausible_input_is_refused_unless_accepted(tmp_path: Path, showers_600: Showers,
                                                      make_file: Callable[..., Path]) -> None:
    """Incident energies written in GeV: finite, positive, and wrong. Refused by default, named, nothing left."""
    showers, e_inc = showers_600
    bad = make_file("gev.h5", showers, e_inc / 1000.0)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="600 of 600 incident energies below 100 MeV: they look like GeV") as info:
        run_prepare((bad,), out, chunk_events=128)
    assert str(info.value).startswith(f"{bad}: incident_energies: ")
    assert "--set prepare.accept_implausible=true" in str(info.value)
    assert not out.exists()
    summary = run_prepare((bad,), out, chunk_events=128, accept_implausible=True)
    assert summary["n_events"] == 600 and summary["e_max_mev"] == pytest.approx(float(e_inc.max()) / 1000, rel=1e-6)
