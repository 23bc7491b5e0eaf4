from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from surrogate.domains.calorimeter import DOMAIN, schema
from surrogate.errors import InputError, OutputExistsError

GEOMETRY = schema.dataset2_geometry()


def showers(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 6480) exponential voxel energies with 30 % exact zeros and (n, 1) energies, MeV float32."""
    rng = np.random.default_rng(seed)
    data = rng.exponential(5.0, (n, GEOMETRY.n_voxels)).astype(np.float32)
    data[rng.random(data.shape) < 0.3] = 0.0
    return data, rng.uniform(1e3, 1e6, (n, 1)).astype(np.float32)


def raw_file(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


def test_dataset2_geometry_matches_the_challenge_binning() -> None:
    assert GEOMETRY.shape == (45, 16, 9) and GEOMETRY.n_voxels == 6480
    # 9 radial bins of 4.65 mm (~0.5 Moliere radius of W), CaloChallenge binning_dataset_2.xml
    np.testing.assert_allclose(np.diff(GEOMETRY.r_edges_mm), 4.65, rtol=1e-9)
    assert GEOMETRY.r_edges_mm[0] == 0.0 and GEOMETRY.r_edges_mm[-1] == pytest.approx(41.85)
    assert GEOMETRY.describe() == "6480 = 45 layers x 16 angular x 9 radial bins"


def test_write_file_round_trips_values_and_attributes(tmp_path: Path) -> None:
    data, e_inc = showers(50)
    path = tmp_path / "out.h5"
    blocks = [(data[:20], e_inc[:20, 0]), (data[20:], e_inc[20:])]  # (n,) and (n, 1) energies both accepted
    schema.write_file(path, blocks, 50, GEOMETRY, {"sampling_fraction": 0.0127}, chunk_events=16)
    assert schema.check_file(path, GEOMETRY) == 50
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[schema.SHOWERS][:], data)
        np.testing.assert_array_equal(f[schema.INCIDENT][:], e_inc)
        assert f.attrs["sampling_fraction"] == 0.0127 and f.attrs["layout"] == "CaloChallenge2022"
        assert f[schema.SHOWERS].attrs["units"] == "MeV" and f[schema.SHOWERS].compression == "gzip"
        assert f[schema.SHOWERS].chunks == (16, 6480)
    loaded, loaded_e = DOMAIN.read_events(path, max_events=7)
    np.testing.assert_array_equal(loaded, data[:7])
    np.testing.assert_array_equal(loaded_e, e_inc[:7])
    with pytest.raises(OutputExistsError):
        schema.write_file(path, blocks, 50, GEOMETRY, {})


def test_float64_files_for_the_challenges_classifier(tmp_path: Path) -> None:
    # evaluate.py's cls-low / cls-high run in float64 and fail when showers and energies are both float32.
    data, e_inc = showers(30)
    data64 = data.astype(np.float64) * (1 + 1e-12)  # a value float32 cannot hold survives
    path = tmp_path / "f64.h5"
    schema.write_file(path, [(data64, e_inc[:, 0].astype(np.float64))], 30, GEOMETRY, {}, dtype="float64")
    with h5py.File(path, "r") as f:
        assert f[schema.SHOWERS].dtype == np.float64 and f[schema.INCIDENT].dtype == np.float64
        np.testing.assert_array_equal(f[schema.SHOWERS][:], data64)
    loaded, loaded_e = DOMAIN.read_events(path)  # kept in float64, as the challenge computes on it
    assert loaded.dtype == np.float64 and loaded_e.dtype == np.float64
    np.testing.assert_array_equal(loaded, data64)
    with pytest.raises(ValueError, match="float16"):
        schema.write_file(tmp_path / "f16.h5", [(data, e_inc)], 30, GEOMETRY, {}, dtype="float16")
    assert not (tmp_path / "f16.h5").exists()


@pytest.mark.parametrize("n_written", [49, 51])
def test_write_file_with_the_wrong_event_count_leaves_no_file(tmp_path: Path, n_written: int) -> None:
    data, e_inc = showers(n_written)
    with pytest.raises(ValueError, match="50"):
        schema.write_file(tmp_path / "out.h5", [(data, e_inc)], 50, GEOMETRY, {})
    assert list(tmp_path.iterdir()) == []


def test_write_file_accepts_zero_events(tmp_path: Path) -> None:
    # an empty split (val_fraction = 0) is written as an empty file: h5py refuses fixed-size empty chunks
    schema.write_file(tmp_path / "empty.h5", [], 0, GEOMETRY, {})
    with h5py.File(tmp_path / "empty.h5", "r") as f:
        assert f[schema.SHOWERS].shape == (0, 6480) and f[schema.INCIDENT].shape == (0, 1)


@pytest.mark.parametrize(("datasets", "field", "problem"), [
    ({"incident_energies": np.ones((4, 2)), "showers": np.ones((4, 6480))}, "incident_energies",
     r"shape \(4, 2\), expected \(N, 1\)"),
    ({"incident_energies": np.ones((4, 1)), "showers": np.ones(4)}, "showers", r"expected \(N, 6480\)"),
    ({"incident_energies": np.ones((4, 1)), "showers": np.ones((4, 533))}, "showers",
     "533 voxels per shower, expected 6480 = 45 layers"),
    ({"incident_energies": np.ones((3, 1)), "showers": np.ones((4, 6480))}, "showers",
     "4 showers but 3 incident energies"),
    ({"incident_energies": np.ones((0, 1)), "showers": np.ones((0, 6480))}, "showers", "holds no showers"),
    ({"incident_energies": np.ones((4, 1)), "showers": np.ones((4, 6480), dtype=np.int32)}, "showers",
     "dtype int32, expected floating point MeV"),
    ({"showers": np.ones((4, 6480))}, "incident_energies", "missing dataset"),
])
def test_check_file_names_file_field_and_problem(tmp_path: Path, datasets: dict[str, np.ndarray], field: str,
                                                 problem: str) -> None:
    path = raw_file(tmp_path / "bad.h5", **datasets)
    with pytest.raises(InputError, match=problem) as info:
        schema.check_file(path, GEOMETRY)
    assert info.value.path == str(path) and info.value.field == field


def test_bad_value_counts_finds_the_first_bad_event_and_counts() -> None:
    data, e_inc = showers(6)
    # E_tot = 6480 x 0.7 x 5 MeV = 22.7 GeV: against E_inc = 1 GeV (event 3) a response of ~23, against
    # the others (uniform in 1 GeV - 1 TeV) mostly below 0.1
    e_inc[3, 0] = 1000.0
    response = data.sum(axis=1) / e_inc[:, 0]
    n_low = int((response < 0.1).sum())
    assert 0 < n_low < 6 and response[3] > 20 and (response[:3] < 2).all()
    assert schema.bad_value_counts(data, e_inc).tolist() == [[-1, 0, 0, 6, 0, n_low, 3, -1]]
    data[4, 10] = np.nan
    data[4, 11] = np.inf
    data[2, 0] = -1.0
    e_inc[5, 0] = 0.0
    e_inc[3, 0] = -5.0
    # first bad event is 2; two non-finite values; negatives: one voxel, one energy, plus one zero energy
    assert schema.bad_value_counts(data, e_inc).tolist()[0][:4] == [2, 2, 3, 6]


def _plausible(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Showers whose voxels sum to 0.9-1.1 x a 1-10 GeV incident energy, MeV float32."""
    rng = np.random.default_rng(seed)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e4), (n, 1)))
    shape = rng.dirichlet(np.ones(GEOMETRY.n_voxels), n)
    return (shape * e_inc * rng.uniform(0.9, 1.1, (n, 1))).astype(np.float32), e_inc.astype(np.float32)


@pytest.mark.parametrize(("mistake", "field", "problem"), [
    ("e_inc_in_gev", "incident_energies", "look like GeV"),
    ("both_in_gev", "incident_energies", "look like GeV"),
    ("showers_in_gev", "showers", "voxels in GeV, or Si deposits not divided"),
    ("raw_si_deposits", "showers", "voxels in GeV, or Si deposits not divided"),
    ("one_event_5x", "showers", "above 2 x the incident energy at event 13"),
    ("absurd", "showers/incident_energies", "above 1e[+]08 MeV .100 TeV. at event 7"),
], ids=lambda x: x if isinstance(x, str) and " " not in x else "")
def test_plausibility_rules_catch_the_usual_mistakes(mistake: str, field: str, problem: str) -> None:
    data, e_inc = _plausible(20)
    assert schema.implausibility(schema.bad_value_counts(data, e_inc)) is None
    if mistake in ("e_inc_in_gev", "both_in_gev"):
        e_inc = e_inc / 1e3
        data = data / 1e3 if mistake == "both_in_gev" else data
    elif mistake == "showers_in_gev":
        data = data / 1e3
    elif mistake == "raw_si_deposits":
        data = data * 0.032
    elif mistake == "one_event_5x":
        data[13] *= 5.0
    elif mistake == "absurd":
        e_inc[7] = 1e33
        data[7] *= 1e30
    # Two blocks of 10 events: the rules combine them and name events by their global index.
    counts = np.concatenate([schema.bad_value_counts(data[:10], e_inc[:10]),
                             schema.bad_value_counts(data[10:], e_inc[10:])])
    found = schema.implausibility(counts, np.array([0, 10]))
    assert found is not None
    assert found[0] == field
    assert __import__("re").search(problem, found[1]), found[1]


def test_units_attribute_is_honoured_and_unknown_units_refused(tmp_path: Path) -> None:
    data, e_inc = _plausible(12)
    path = raw_file(tmp_path / "gev.h5", incident_energies=e_inc / 1e3, showers=data / 1e3)
    with h5py.File(path, "a") as f:
        f["incident_energies"].attrs["units"] = "GeV"
        f["showers"].attrs["units"] = "GeV"
    showers_mev, e_mev = DOMAIN.read_events(path)
    np.testing.assert_allclose(e_mev, e_inc, rtol=1e-6)
    np.testing.assert_allclose(showers_mev, data, rtol=1e-6, atol=1e-9)
    lazy = DOMAIN.open_lazy((str(path),), 5)
    np.testing.assert_allclose(lazy.cond.compute(), e_inc, rtol=1e-6)
    DOMAIN.check_plausible(path, setting="validate.accept_implausible")  # in MeV after the units: fine
    with h5py.File(path, "a") as f:
        f["showers"].attrs["units"] = "ADC counts"
    with pytest.raises(InputError, match=r"showers.attrs\['units'\]: 'ADC counts'; expected one of MeV"):
        schema.check_file(path, GEOMETRY)


def test_check_plausible_names_the_file_and_the_switch(tmp_path: Path) -> None:
    data, e_inc = _plausible(30)
    path = raw_file(tmp_path / "gev.h5", incident_energies=e_inc / 1e3, showers=data)
    with pytest.raises(InputError, match="30 of 30 incident energies below 100 MeV") as info:
        DOMAIN.check_plausible(path, setting="validate.accept_implausible")
    assert str(info.value).startswith(f"{path}: incident_energies: ")
    assert str(info.value).endswith("(to use it as it is: --set validate.accept_implausible=true)")


def test_lazy_value_check_reports_global_event_index(tmp_path: Path) -> None:
    data, e_inc = showers(40)
    data[33, 7] = np.nan
    path = tmp_path / "nan.h5"
    schema.write_file(path, [(data, e_inc)], 40, GEOMETRY, {})
    events = DOMAIN.open_lazy((str(path),), chunk_events=8)
    result = DOMAIN.check_values(events).compute(scheduler="synchronous")
    assert result.shape == (5, 8) and result[4].tolist()[:3] == [1, 1, 0]  # block 4 holds events 32-39
    with pytest.raises(InputError, match="event 33 of the inputs") as info:
        DOMAIN.raise_bad_values(result, events)
    assert info.value.path == str(path)
