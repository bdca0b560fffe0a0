"""Data files for runs: .npz, .npy pairs, CSV with a target column; errors name file and column."""

from __future__ import annotations

import numpy as np
import pytest

from xpnet import data


def test_npz_npy_and_csv_load_the_same_data(tmp_path):
    r = np.random.default_rng(0)
    X, y = r.normal(size=(30, 3)), r.integers(0, 3, 30)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    lines = ["a,b,label,c"] + [f"{float(x[0])!r},{float(x[1])!r},{t},{float(x[2])!r}" for x, t in zip(X, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    for Xl, yl in (data.load_npz(tmp_path / "d.npz"), data.load_npy_pair(tmp_path / "x.npy", tmp_path / "y.npy"),
                   data.load_csv(tmp_path / "d.csv", "label")):
        np.testing.assert_array_equal(Xl, X)
        np.testing.assert_array_equal(yl, y)
        assert yl.dtype.kind == "i"


def test_csv_errors_name_file_and_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n3,,1\n")
    with pytest.raises(ValueError, match=r"d.csv: column 'b' has missing values"):
        data.load_csv(path, "label")
    path.write_text("a,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"d.csv: has no target column 'y'; its columns are \['a', 'b', 'label'\]"):
        data.load_csv(path, "y")
    path.write_text("a,b,label\n1,x,0\n")
    with pytest.raises(ValueError, match=r"d.csv: column 'b' is not numeric"):
        data.load_csv(path, "label")
    path.write_text("a,b,label\n1,2,0\n1,2\n")
    with pytest.raises(ValueError, match=r"d.csv: line 3 has a different number of fields"):
        data.load_csv(path, "label")


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.ones((3, 2)), y=np.ones(3))
    with pytest.raises(ValueError, match=r"d.npz: lacks array\(s\) \['X'\]"):
        data.load_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", X=np.ones((3, 2)), y=np.ones(4))
    with pytest.raises(ValueError, match=r"e.npz: X has 3 rows but y has 4"):
        data.load_npz(tmp_path / "e.npz")
    X = np.ones((3, 2))
    X[1, 1] = np.nan
    np.savez(tmp_path / "f.npz", X=X, y=np.ones(3))
    with pytest.raises(ValueError, match=r"f.npz: X has missing or infinite values in column\(s\) \[1\]"):
        data.load_npz(tmp_path / "f.npz")
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"g.npz: cannot be read as .npz"):
        data.load_npz(tmp_path / "g.npz")


def test_split_is_stratified_seeded_and_standardised_on_train_only():
    cfg = {"source": "synthetic", "n_samples": 400, "n_features": 5, "n_classes": 4, "test_fraction": 0.25,
           "val_fraction": 0.1, "standardize": True}
    parts = data.load_for_run(cfg, regression=False, seed=3)
    again = data.load_for_run(cfg, regression=False, seed=3)
    np.testing.assert_array_equal(parts["test"][0], again["test"][0])
    Xtr = parts["train"][0]
    np.testing.assert_allclose(Xtr.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Xtr.std(axis=0), 1, atol=1e-12)
    assert abs(parts["test"][0].mean()) > 1e-6  # test data is scaled with the train statistics, not its own
    counts = [np.bincount(parts[k][1], minlength=4) for k in ("train", "test")]
    assert np.all(np.abs(counts[1] / counts[1].sum() - counts[0] / counts[0].sum()) < 0.03)
