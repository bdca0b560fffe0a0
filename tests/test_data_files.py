"""Data files for runs: .npz, .npy pairs, CSV with a target column; errors name file and column."""

from __future__ import annotations

import io

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
    with pytest.raises(ValueError, match=r"d.csv: line 3 has 2 fields but the header has 3"):
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
    with pytest.raises(ValueError, match=r"g.npz: is not an .npz archive \(no zip header\)"):
        data.load_npz(tmp_path / "g.npz")


# -- CSV fuzz: every malformed file is a ValueError naming the file, the problem and the fix ----------
def _csv(tmp_path, content, name="d.csv"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


GOOD = "a,b,label\n1.5,2,0\n3,4.25,1\n"


@pytest.mark.parametrize("content", [
    GOOD,
    "\ufeff" + GOOD,                                   # UTF-8 byte-order mark (Excel)
    GOOD.encode("utf-16"),                              # UTF-16 with byte-order mark
    " a , b ,  label \n 1.5 , 2 ,0\n3,  4.25 , 1 \n",   # whitespace around names and values
    'a,"b",label\n"1.5","2","0"\n3,"4.25",1\n',         # quoted names and numbers
    GOOD + "\n\n  \n",                                  # trailing blank lines
    GOOD.replace("\n", "\r\n"),                         # Windows line ends
    "a;b;label\n1.5;2;0\n3;4.25;1\n",                  # semicolon-delimited
    "a\tb\tlabel\n1.5\t2\t0\n3\t4.25\t1\n",            # tab-delimited
])
def test_csv_variants_that_simply_work(tmp_path, content):
    X, y = data.load_csv(_csv(tmp_path, content), "label")
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4.25]])
    np.testing.assert_array_equal(y, [0, 1])
    assert y.dtype == np.int64 and X.dtype == np.float64


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01" + bytes(range(256))


@pytest.mark.parametrize("content, message", [
    ("", r"is empty; it needs a header row"),
    ("\n\n  \n", r"is empty; it needs a header row"),
    ("a,b,label\n", r"has a header but no data rows"),
    ("a,b,label\n\n", r"has a header but no data rows"),
    ("a,b\xe9,label\n1,2,0\n".encode("latin-1"), r"is not UTF-8 text \(byte 0xe9 on line 1\); re-save it as UTF-8"),
    ("a,b,label\n1,2,0\n".encode("utf-16-le"), r"NUL bytes.*UTF-16 without a byte-order mark.*UTF-8"),
    (PNG, r"is not a text CSV file"),
    ("a,a,label\n1,2,0\n", r"column\(s\) \['a'\] appear more than once"),
    ("a,label,label\n1,2,0\n", r"the target column \['label'\] appear more than once"),
    ("a,,label\n1,2,0\n", r"column\(s\) \[2\] of the header have no name"),
    ("label\n1\n2\n", r"has only the target column 'label'; it needs at least one feature column"),
    ("a,b,label\n1,2,0\n1,2\n", r"line 3 has 2 fields but the header has 3"),
    ("a,b,label\n1,2,0\n1,2,3,4\n", r"line 3 has 4 fields"),
    ("a,b,label\n1,2,0\n3,x,1\n", r"column 'b' is not numeric: line 3 has 'x'"),
    ("a;b;label\n1,5;2;0\n", r"column 'a' is not numeric: line 2 has '1,5' \(decimal commas"),
    ("a,b,label\n1,2,0\n3,NA,1\n", r"column 'b' has missing values \(line 3\)"),
    ("a,b,label\n1,2,0\n3,1e400,1\n", r"column 'b' has an infinite or out-of-range value '1e400' on line 3"),
    ("a,b,label\n1,2,0\n3,-inf,1\n", r"column 'b' has an infinite"),
    ("a,b,label\n1e308,2,0\n1.7e308,3,1\n-1.7e308,4,1\n", r"X has values too large to standardise.*\['a'\]"),
    ("a,b,label\n1,2,nan\n", r"column 'label' has missing values"),
    ('a,b,label\n"1,2,0\n', r"line 2 has 1 fields"),
])
def test_malformed_csv_is_refused_naming_file_and_fix(tmp_path, content, message):
    path = _csv(tmp_path, content)
    with pytest.raises(ValueError, match=r"d.csv: .*" + message):
        data.load_csv(path, "label")


def test_csv_paths_and_targets_that_are_wrong(tmp_path):
    with pytest.raises(ValueError, match=r"nothing.csv: does not exist"):
        data.load_csv(tmp_path / "nothing.csv", "label")
    with pytest.raises(ValueError, match=r": is a directory; pass the CSV file inside it"):
        data.load_csv(tmp_path, "label")
    path = _csv(tmp_path, GOOD)
    with pytest.raises(ValueError, match=r"no target column given; name it with --target"):
        data.load_csv(path, "")
    np.testing.assert_array_equal(data.load_csv(path, " label ")[1], [0, 1])


def test_csv_targets_too_large_for_int64_stay_float(tmp_path):
    _, y = data.load_csv(_csv(tmp_path, "a,label\n1,1e300\n2,3\n"), "label")
    assert y.dtype == np.float64 and y[0] == 1e300
    with pytest.raises(ValueError, match=r"largest class label is 1e\+300"):
        data.check_class_labels(y, "d.csv")


# -- npz / npy fuzz ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arrays, message", [
    ({"X": np.ones((3, 2, 2)), "y": np.ones(3)}, r"X must be 2-D \(samples, features\), got shape \(3, 2, 2\)\. "
                                                   r"Flatten each sample"),
    ({"X": np.ones(3), "y": np.ones(3)}, r"X.reshape\(-1, 1\)"),
    ({"X": np.ones((3, 2)), "y": np.ones((3, 1, 1))}, r"y must be 1-D .* or 2-D"),
    ({"X": np.ones((3, 2), complex), "y": np.ones(3)}, r"X must be real numbers .* complex128.*real and imaginary"),
    ({"X": np.array([["a", "b"]] * 3), "y": np.ones(3)}, r"X must be real numbers .* <U1"),
    ({"X": np.ones((0, 2)), "y": np.ones(0)}, r"no data"),
    ({"X": np.ones((3, 0)), "y": np.ones(3)}, r"no data"),
    ({"X": np.ones((3, 2)), "y": np.ones(4)}, r"X has 3 rows but y has 4"),
    ({"X": np.array([[1.0, np.nan]] * 3), "y": np.ones(3)}, r"X has missing or infinite values in column\(s\) \[1\]"),
    ({"X": np.ones((3, 2)), "y": np.array([1.0, np.inf, 0])}, r"y has missing or infinite values"),
    ({"X": np.array([[1e308], [-1.7e308], [1.7e308]]), "y": np.ones(3)}, r"too large to standardise"),
    ({"X": np.ones((3, 2)), "Y": np.ones(3)}, r"lacks array\(s\) \['y'\]; it holds \['X', 'Y'\]"),
])
def test_malformed_npz_is_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=r"d.npz: .*" + message):
        data.load_npz(tmp_path / "d.npz")


def test_npz_that_works_bool_features_and_a_one_column_target(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.array([[True, False], [False, True]]), y=np.array([[0.5], [1.5]]))
    X, y = data.load_npz(tmp_path / "d.npz")
    assert X.dtype == np.float64 and X.tolist() == [[1, 0], [0, 1]] and y.shape == (2, 1)


def test_damaged_or_foreign_npz_files_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.array([object(), 1], dtype=object).reshape(2, 1), y=np.ones(2))  # savez pickles objects
    with pytest.raises(ValueError, match=r"d.npz: array 'X' holds Python objects.*astype\(float\)"):
        data.load_npz(path)
    np.savez_compressed(path, X=np.ones((50, 4)), y=np.ones(50))
    whole = path.read_bytes()
    for cut in (0, 2, 10, 100, len(whole) // 2, len(whole) - 10):
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=r"d.npz: (is not an .npz archive|cannot be read as .npz)"):
            data.load_npz(path)
    for offset in range(0, len(whole), 13):  # flipped bytes: refused, or (in slack bytes) the same data
        damaged = bytearray(whole)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            X, y = data.load_npz(path)
        except ValueError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert X.shape == (50, 4) and np.all(X == 1) and np.all(y == 1)
    np.save(tmp_path / "x.npy", np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"x.npy: is not an .npz archive.*pair of .npy files"):
        data.load_npz(tmp_path / "x.npy")
    with pytest.raises(ValueError, match=r"is a directory"):
        data.load_npz(tmp_path)
    with pytest.raises(ValueError, match=r"nope.npz: does not exist"):
        data.load_npz(tmp_path / "nope.npz")


def _pair(tmp_path, X, y):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "x.npy", tmp_path / "y.npy"


def test_malformed_npy_files_are_refused(tmp_path):
    xp, yp = _pair(tmp_path, np.ones((20, 3)), np.arange(20))
    whole = xp.read_bytes()
    for cut in (0, 3, 6, 9, 60, len(whole) - 8, len(whole) - 1):
        xp.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=r"x.npy: (is not a .npy file|cannot be read as .npy)"):
            data.load_npy_pair(xp, yp)
    xp.write_bytes(b"\x93NUMPX" + whole[6:])
    with pytest.raises(ValueError, match=r"x.npy: is not a .npy file \(wrong magic bytes"):
        data.load_npy_pair(xp, yp)
    header = io.BytesIO()  # a header promising 24 TB that the file does not hold: refused, not allocated
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 3)})
    xp.write_bytes(header.getvalue() + whole[whole.index(b"\n") + 1:])
    with pytest.raises(ValueError, match=r"x.npy: cannot be read as .npy"):
        data.load_npy_pair(xp, yp)
    np.savez(tmp_path / "z.npz", X=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"z.npz: is not a .npy file .*It is an .npz archive"):
        data.load_npy_pair(tmp_path / "z.npz", yp)
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match=r"o.npy: holds Python objects"):
        data.load_npy_pair(tmp_path / "o.npy", yp)


@pytest.mark.parametrize("X, y, message", [
    (np.array(3.0), np.arange(3), r"x.npy must be 2-D"),
    (np.ones((3, 2)), np.array(1), r"y.npy must be 1-D .* got shape \(\)"),
    (np.ones((3, 2)), np.arange(4), r"x.npy has 3 rows but .*y.npy has 4"),
])
def test_npy_pairs_with_wrong_shapes(tmp_path, X, y, message):
    xp, yp = _pair(tmp_path, X, y)
    with pytest.raises(ValueError, match=r"x.npy \+ .*y.npy: .*" + message):
        data.load_npy_pair(xp, yp)


# -- labels and targets for the loss ---------------------------------------------------------------------
def test_check_class_labels_counts_classes_and_refuses_absurd_ones():
    assert data.check_class_labels(np.array([0, 2, 1]), "w") == 3
    assert data.check_class_labels(np.array([[0.0], [4.0]]), "w") == 5
    assert data.check_class_labels(np.array([False, True]), "w") == 2
    assert data.check_class_labels(np.array([0, 999]), "w") == 1000  # small data may have up to 1000 classes
    with pytest.raises(ValueError, match=r"w: class labels must be 0, 1, 2, ...; found -1"):
        data.check_class_labels(np.array([0, -1]), "w")
    with pytest.raises(ValueError, match=r"w: the largest class label is 1000, .*1001 output classes for 2 samples "
                                         r"\(at most 1000 are allowed\).*numpy.unique"):
        data.check_class_labels(np.array([0, 1000]), "w")
    with pytest.raises(ValueError, match=r"the largest class label is 9e\+18.*\(at most 100000"):
        data.check_class_labels(np.array([0, 9 * 10**18] * 20_000), "w")
    with pytest.raises(ValueError, match=r"whole numbers .* --loss mse"):
        data.check_class_labels(np.array([0.5, 1.0]), "w")


def test_targets_for_loss_converts_or_explains():
    y = data.targets_for_loss(np.array([0.0, 2.0, 1.0]), "cross_entropy", "w")
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 1]
    assert data.targets_for_loss(np.array([[1], [0]]), "cross_entropy", "w").tolist() == [1, 0]
    onehot = data.targets_for_loss(np.eye(3, dtype=np.int64), "cross_entropy", "w")
    assert onehot.dtype == np.float64 and onehot.shape == (3, 3)
    with pytest.raises(ValueError, match=r"w: class labels must be whole numbers.*--loss mse.*--loss bce"):
        data.targets_for_loss(np.array([0.5, 1.0]), "cross_entropy", "w")
    bce = data.targets_for_loss(np.array([0, 1, 1]), "bce", "w")
    assert bce.dtype == np.float64 and bce.tolist() == [[0.0], [1.0], [1.0]]
    assert data.targets_for_loss(np.array([0.25, 1.0]), "bce", "w").shape == (2, 1)  # probabilities are fine
    with pytest.raises(ValueError, match=r"w: --loss bce needs targets in \[0, 1\].*from 0 to 2.*cross_entropy"):
        data.targets_for_loss(np.array([0, 1, 2]), "bce", "w")
    mse = data.targets_for_loss(np.array([3, 4]), "mse", "w")
    assert mse.dtype == np.float64 and mse.shape == (2, 1)
    with pytest.raises(ValueError, match=r"loss='hinge' is unknown"):
        data.targets_for_loss(np.array([1]), "hinge", "w")


def test_split_is_stratified_seeded_and_standardised_on_train_only():
    cfg = {"source": "synthetic", "n_samples": 400, "n_features": 5, "n_classes": 4, "test_fraction": 0.25,
           "val_fraction": 0.1, "standardize": True}
    parts = data.load_for_run(cfg, "cross_entropy", seed=3)
    again = data.load_for_run(cfg, "cross_entropy", seed=3)
    np.testing.assert_array_equal(parts["test"][0], again["test"][0])
    Xtr = parts["train"][0]
    np.testing.assert_allclose(Xtr.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Xtr.std(axis=0), 1, atol=1e-12)
    assert abs(parts["test"][0].mean()) > 1e-6  # test data is scaled with the train statistics, not its own
    counts = [np.bincount(parts[k][1], minlength=4) for k in ("train", "test")]
    assert np.all(np.abs(counts[1] / counts[1].sum() - counts[0] / counts[0].sum()) < 0.03)
