"""Tests for model files: MLPClassifier.save and mlp_cy.load.

Round trips keep predictions bit for bit; every broken, tampered or malicious
file is refused with ModelFileError, and a malicious pickle payload never runs.
"""

import os
import pickle
import warnings

import numpy as np
import pytest
from conftest import importorskip
from numpy.testing import assert_array_equal

import mlp_cy
from mlp_cy import MLPClassifier, persistence
from mlp_cy.persistence import FORMAT_VERSION, ModelFileError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # ConvergenceWarning


def _data(n_classes=3, n_samples=90, n_features=5, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n_samples) % n_classes
    centers = rng.normal(scale=3, size=(n_classes, n_features))
    X = centers[y] + rng.normal(size=(n_samples, n_features))
    return X, y


def _fitted(dtype=np.float32, labels=None, n_classes=3, **params):
    X, y = _data(n_classes)
    X = X.astype(dtype)
    if labels is not None:
        y = np.asarray(labels)[y]
    params = {"hidden_layer_sizes": 7, "learning_rate_init": 0.1, "max_iter": 5,
              "random_state": 0, **params}
    return MLPClassifier(**params).fit(X, y), X


@pytest.fixture
def model_file(tmp_path):
    clf, X = _fitted()
    path = tmp_path / "model.npz"
    clf.save(path)
    return path


def _rewrite(path, **changes):
    """Rewrite the model file at ``path`` with keys replaced (None deletes a key)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# Round trips ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "dtype, labels, n_classes",
    [
        (np.float32, None, 3),
        (np.float64, None, 3),
        (np.float32, ["cat", "dog", "emu"], 3),
        (np.float64, np.array([-5, 10, 2**40]), 3),
        (np.float32, np.array([3, 7], dtype=np.uint8), 2),  # binary, MNIST's label dtype
        (np.float64, np.array([-1.0, 0.0, 2.0, 7.0]), 4),
        (np.float32, np.array([False, True]), 2),
    ],
    ids=["float32", "float64", "str", "int64", "binary-uint8", "float-labels", "bool"],
)
def test_round_trip_predicts_identically(tmp_path, dtype, labels, n_classes):
    clf, X = _fitted(dtype, labels, n_classes)
    path = tmp_path / "model.npz"
    clf.save(path)
    loaded = mlp_cy.load(path)

    assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.predict(X).dtype == clf.predict(X).dtype
    assert_array_equal(loaded.classes_, clf.classes_)
    for saved, restored in zip(clf.coefs_ + clf.intercepts_,
                               loaded.coefs_ + loaded.intercepts_):
        assert restored.dtype == dtype
        assert_array_equal(restored, saved)
    assert loaded.get_params() == clf.get_params()
    for name in ("n_features_in_", "n_iter_", "t_", "loss_", "best_loss_",
                 "loss_curve_", "n_layers_", "n_outputs_", "out_activation_"):
        assert getattr(loaded, name) == getattr(clf, name), name


def test_loaded_model_continues_training_like_the_original(tmp_path):
    clf, X = _fitted(np.float64)
    y = clf.predict(X)
    clf.save(tmp_path / "m.npz")
    loaded = mlp_cy.load(tmp_path / "m.npz")
    clf.partial_fit(X, y)
    loaded.partial_fit(X, y)
    for a, b in zip(clf.coefs_ + clf.intercepts_, loaded.coefs_ + loaded.intercepts_):
        assert_array_equal(a, b)
    assert loaded.t_ == clf.t_ and loaded.loss_curve_ == clf.loss_curve_


@pytest.mark.parametrize(
    "params",
    [
        {"solver": "adam", "learning_rate_init": 0.01},
        {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": False},
        {"learning_rate": "invscaling", "power_t": 0.25},
        {"class_weight": {0: 2.0, 2: 0.5}},
    ],
    ids=["adam", "momentum", "invscaling", "class_weight"],
)
def test_partial_fit_after_loading_continues_the_optimizer(tmp_path, params):
    X, y = _data()
    clf = MLPClassifier(hidden_layer_sizes=6, random_state=0, **params)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y))
    clf.save(tmp_path / "m.npz")
    loaded = mlp_cy.load(tmp_path / "m.npz")
    assert loaded.get_params() == clf.get_params()
    clf.partial_fit(X, y)
    loaded.partial_fit(X, y)
    for a, b in zip(clf.coefs_ + clf.intercepts_, loaded.coefs_ + loaded.intercepts_):
        assert_array_equal(a, b)


def test_early_stopping_attributes_round_trip(tmp_path):
    clf, X = _fitted(np.float64, early_stopping=True, max_iter=8, validation_fraction=0.2,
                     class_weight="balanced")
    assert clf.best_loss_ is None and len(clf.validation_scores_) > 0
    clf.save(tmp_path / "m.npz")
    loaded = mlp_cy.load(tmp_path / "m.npz")
    assert loaded.best_loss_ is None
    for name in ("validation_scores_", "validation_loss_curve_", "best_validation_score_"):
        assert getattr(loaded, name) == getattr(clf, name), name
    assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_feature_names_round_trip(tmp_path):
    pd = importorskip("pandas")
    X, y = _data()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = MLPClassifier(hidden_layer_sizes=4, max_iter=3, random_state=0).fit(frame, y)
    clf.save(tmp_path / "m.npz")
    loaded = mlp_cy.load(tmp_path / "m.npz")
    assert_array_equal(loaded.feature_names_in_, clf.feature_names_in_)
    assert_array_equal(loaded.predict(frame), clf.predict(frame))


def test_path_is_written_exactly_as_given(tmp_path):
    clf, X = _fitted()
    clf.save(str(tmp_path / "model"))  # numpy.savez would write "model.npz"
    assert os.listdir(tmp_path) == ["model"]
    assert_array_equal(mlp_cy.load(tmp_path / "model").predict(X), clf.predict(X))


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "m.npz"
    first, X = _fitted(hidden_layer_sizes=4)
    first.save(path)
    second, _ = _fitted(hidden_layer_sizes=9)
    second.save(path)
    assert mlp_cy.load(path).coefs_[0].shape == (5, 9)
    assert os.listdir(tmp_path) == ["m.npz"]


def test_object_labels_all_str_are_stored_as_unicode(tmp_path):
    clf, X = _fitted(labels=np.array(["a", "bb", "ccc"], dtype=object))
    clf.save(tmp_path / "m.npz")
    loaded = mlp_cy.load(tmp_path / "m.npz")
    assert loaded.classes_.dtype.kind == "U"
    assert list(loaded.predict(X)) == list(clf.predict(X))


def test_object_labels_of_mixed_types_are_refused_at_save(tmp_path):
    clf, _ = _fitted()
    clf.classes_ = np.array([1, "b", 2.5], dtype=object)
    with pytest.raises(ValueError, match="all numbers or all strings"):
        clf.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_random_state_instance_is_stored_as_none(tmp_path):
    clf, _ = _fitted(random_state=np.random.RandomState(3))
    clf.save(tmp_path / "m.npz")
    assert mlp_cy.load(tmp_path / "m.npz").random_state is None


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(Exception, match="not fitted"):
        MLPClassifier().save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_non_finite_weights_are_refused_at_save(tmp_path):
    clf, _ = _fitted()
    clf.coefs_[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


# Atomic writes ----------------------------------------------------------------------

@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, error, existing):
    path = tmp_path / "model.npz"
    clf, X = _fitted()
    if existing:
        clf.save(path)
        before = path.read_bytes()

    def write_half_then_fail(f, arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise error

    monkeypatch.setattr(persistence, "_write_npz", write_half_then_fail)
    with pytest.raises(type(error)):
        _fitted(hidden_layer_sizes=3)[0].save(path)
    if existing:
        assert os.listdir(tmp_path) == ["model.npz"]
        assert path.read_bytes() == before
    else:
        assert os.listdir(tmp_path) == []


def test_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fail(src, dst):
        raise PermissionError("no")

    monkeypatch.setattr(persistence.os, "replace", fail)
    with pytest.raises(PermissionError):
        _fitted()[0].save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# Broken and tampered files ----------------------------------------------------------

@pytest.mark.parametrize("keep", [0, 3, 100, 0.5, -1])
def test_truncated_file(model_file, keep):
    data = model_file.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    model_file.write_bytes(data[:n])
    with pytest.raises(ModelFileError, match="not a valid mlp_cy model file"):
        mlp_cy.load(model_file)


def test_corrupt_member_is_detected(model_file):
    data = bytearray(model_file.read_bytes())
    offset = data.index(b"\x93NUMPY", data.index(b"coef_1.npy")) + 200
    data[offset:offset + 8] = b"\xff" * 8  # the zip's CRC no longer matches
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="'coef_1'"):
        mlp_cy.load(model_file)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        mlp_cy.load(tmp_path / "nope.npz")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: {"coef_1": a["coef_1"][:, :2], "intercept_1": a["intercept_1"][:2],
                    **dict.fromkeys(["optimizer_state", "n_updates",
                                     "current_learning_rate"])},
         "'n_outputs_' is 3 but the last layer has 2 outputs"),
        (lambda a: {"coef_1": a["coef_1"][1:]}, "inconsistent shapes"),
        (lambda a: {"intercept_0": a["intercept_0"][:-1]}, "inconsistent shapes"),
        (lambda a: {"intercept_1": a["intercept_1"][None]}, "dimensions"),
        (lambda a: {"classes_": a["classes_"][:2]}, "classes"),
        (lambda a: {"classes_": a["classes_"][::-1]}, "sorted"),
        (lambda a: {"n_features_in_": np.array(6)}, "n_features_in_"),
        (lambda a: {"n_iter_": np.array(1.5)}, "integer"),
        (lambda a: {"loss_": np.array(np.nan)}, "'loss_' is NaN"),
        (lambda a: {"validation_scores_": np.array([[0.5]])}, "1-D array of finite"),
        (lambda a: {"feature_names_in_": np.array(["a", "b"])}, "5 strings"),
        (lambda a: {"n_updates": None}, "all present"),
        (lambda a: {"optimizer_state": np.zeros(3), "n_updates": np.array(1),
                    "current_learning_rate": np.array(0.1)},
         "float32 values like the weights"),
        (lambda a: {"coef_0": a["coef_0"].astype(np.float16)}, "float32"),
        (lambda a: {"intercept_1": a["intercept_1"].astype(np.float64)},
         "float32 or all float64"),
        (lambda a: {"coef_0": np.where(a["coef_0"] > 0, np.nan, a["coef_0"])
                    .astype(np.float32)}, "NaN"),
        (lambda a: {"intercept_0": np.full_like(a["intercept_0"], np.inf)},
         "NaN or infinite"),
        (lambda a: {"format_version": np.array(FORMAT_VERSION + 1)},
         "newer mlp_cy.*upgrade"),
        (lambda a: {"format_version": np.array(0)}, "not valid"),
        (lambda a: {"format": np.array("something-else")}, "format"),
        (lambda a: {"format": None}, "no 'format' key"),
        (lambda a: {"n_outputs_": None}, r"n_outputs_.*missing"),
        (lambda a: {"coef_0": None}, r"coef_0.*missing"),
        (lambda a: {"extra": np.zeros(3)}, "does not define"),
        (lambda a: {"params_json": np.array("{not json")}, "not valid JSON"),
        (lambda a: {"params_json": np.array("[1, 2]")}, "not a JSON object"),
        (lambda a: {"params_json": np.array('{"evil": 1}')}, "unknown hyperparameters"),
        (lambda a: {"params_json": np.array('{"activation": "softplus"}')},
         "bad hyperparameters"),
        (lambda a: {"params_json": np.array('{"hidden_layer_sizes": [3]}')},
         r"hidden_layer_sizes=\(3,\) but its weights have hidden layers of \(7,\)"),
        (lambda a: {"params_json": np.array('{"class_weight": {"0": 1}}')},
         "malformed value for 'class_weight'"),
        (lambda a: {"params_json": np.frombuffer(b"{}", dtype=np.uint8)},
         "string scalar"),
    ],
)
def test_tampered_file_is_refused(model_file, change, match):
    with np.load(model_file) as npz:
        _rewrite(model_file, **change(dict(npz)))
    with pytest.raises(ModelFileError, match=match):
        mlp_cy.load(model_file)


def test_not_a_model_file(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ModelFileError, match="single .npy array"):
        mlp_cy.load(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", x=np.zeros(3))
    with pytest.raises(ModelFileError, match="no 'format' key"):
        mlp_cy.load(tmp_path / "b.npz")
    (tmp_path / "c.txt").write_text("hello")
    with pytest.raises(ModelFileError):
        mlp_cy.load(tmp_path / "c.txt")


# Malicious files --------------------------------------------------------------------

class _Payload:
    """Unpickling this creates the file ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_in_an_object_array_never_runs(tmp_path, model_file):
    # The payload is live: unpickling it (allow_pickle=True) does create its marker.
    control_marker = tmp_path / "control-marker"
    control = tmp_path / "control.npz"
    np.savez(control, classes_=np.array([_Payload(control_marker)], dtype=object))
    with np.load(control, allow_pickle=True) as npz:
        npz["classes_"]
    assert control_marker.exists()

    marker = tmp_path / "marker"
    pristine = model_file.read_bytes()
    for key in ("classes_", "params_json", "format"):
        model_file.write_bytes(pristine)
        _rewrite(model_file, **{key: np.array([_Payload(marker), 1], dtype=object)})
        with pytest.raises(ModelFileError, match="pickle"):
            mlp_cy.load(model_file)
        assert not marker.exists()


def test_plain_pickle_file_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelFileError, match="pickle"):
        mlp_cy.load(path)
    assert not marker.exists()


def test_model_file_has_no_pickled_content(model_file):
    # Every member loads with allow_pickle=False and none has an object dtype.
    with np.load(model_file, allow_pickle=False) as npz:
        arrays = dict(npz)
    assert not any(a.dtype.hasobject for a in arrays.values())
    assert str(arrays["format"]) == "mlp_cy-model"
    assert int(arrays["format_version"]) == FORMAT_VERSION


def test_errors_name_the_users_path_and_no_pickle_advice(tmp_path):
    # A text file is "not an .npz archive", without talk of pickles; saving into a
    # folder that does not exist names that folder, not a temporary file.
    import mlp_cy
    from mlp_cy.persistence import ModelFileError

    text = tmp_path / "model.txt"
    text.write_text("W1,b1\n1,2\n")
    with pytest.raises(ModelFileError) as info:
        mlp_cy.load(text)
    assert "not an .npz archive" in str(info.value)
    assert "pickle" not in str(info.value)

    clf = MLPClassifier(hidden_layer_sizes=4, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(np.random.RandomState(0).rand(20, 3), np.arange(20) % 2)
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(OSError) as info:
        clf.save(missing / "model.npz")
    assert str(missing) in str(info.value)
    assert ".tmp" not in str(info.value)
