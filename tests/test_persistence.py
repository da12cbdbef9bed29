"""Tests for model files: MLPClassifier.save and mlp_cy.load.

Round trips keep predictions bit for bit; every broken, tampered or malicious
file is refused with ModelFileError, and a malicious pickle payload never runs.
"""

import importlib.util
import os
import pickle
import warnings

import numpy as np
import pytest
from conftest import importorskip
from numpy.testing import assert_array_equal

import mlp_cy
from mlp_cy import MLPClassifier, _state, persistence
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
         r"hidden_layer_sizes=\(3,\) but the weights have hidden layers of \(7,\)"),
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


# Format version 2: any depth, classifiers and regressors ----------------------------
#
# Deep models built by hand have their files checked against a NumPy forward pass;
# scikit-learn's MLPRegressor stands in where a state must come from another library.

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _forward(coefs, intercepts, activation, X):
    """The output layer's input, z, of a network, in NumPy."""
    hidden = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
              "logistic": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z}
    for W, b in zip(coefs[:-1], intercepts[:-1]):
        X = hidden[activation](X @ W + b)
    return X @ coefs[-1] + intercepts[-1]


def _n_parameters(units):
    return sum((a + 1) * b for a, b in zip(units[:-1], units[1:]))


def _hand_made(hidden=(4,), classes=(0, 1, 2), out_activation="softmax", n_outputs=None,
               n_features=5, dtype=np.float64, seed=0, **params):
    """A 'fitted' MLPClassifier of any depth, its attributes set by hand."""
    rng = np.random.RandomState(seed)
    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="tanh", **params)
    units = [n_features, *hidden, len(classes) if n_outputs is None else n_outputs]
    clf.coefs_ = [rng.normal(size=shape).astype(dtype)
                  for shape in zip(units[:-1], units[1:])]
    clf.intercepts_ = [rng.normal(size=n).astype(dtype) for n in units[1:]]
    clf.classes_ = np.asarray(classes)
    clf.n_outputs_, clf.out_activation_, clf.n_layers_ = units[-1], out_activation, len(units)
    clf.n_features_in_, clf.n_iter_, clf.t_ = n_features, 3, 300
    clf.loss_, clf.loss_curve_, clf.best_loss_ = 0.5, [0.9, 0.7, 0.5], 0.5
    clf.validation_scores_ = clf.validation_loss_curve_ = clf.best_validation_score_ = None
    clf._no_improvement_count = 1
    clf._optimizer_state = rng.normal(size=2 * _n_parameters(units)).astype(dtype)
    clf._n_updates, clf._learning_rate = 6, 0.001
    return clf


def _regressor_state(hidden=(4, 3), n_outputs=2, out_activation="identity",
                     n_features=5, seed=0):
    """The state of an MLPRegressor, by hand: mlp_cy's does not exist yet."""
    rng = np.random.RandomState(seed)
    units = [n_features, *hidden, n_outputs]
    return {
        "estimator": "MLPRegressor",
        # scikit-learn's MLPRegressor's hyperparameters, and mlp_cy's.
        "params": {"hidden_layer_sizes": tuple(hidden), "activation": "relu",
                   "solver": "lbfgs", "alpha": 1e-4, "batch_size": "auto",
                   "learning_rate": "constant", "learning_rate_init": 0.001,
                   "power_t": 0.5, "max_iter": 200, "loss": "squared_error",
                   "shuffle": True, "random_state": 0, "tol": 1e-4, "verbose": False,
                   "warm_start": False, "momentum": 0.9, "nesterovs_momentum": True,
                   "early_stopping": False, "validation_fraction": 0.1, "beta_1": 0.9,
                   "beta_2": 0.999, "epsilon": 1e-8, "n_iter_no_change": 10,
                   "max_fun": 15000},
        "coefs_": [rng.normal(size=shape) for shape in zip(units[:-1], units[1:])],
        "intercepts_": [rng.normal(size=n) for n in units[1:]],
        "n_outputs_": n_outputs, "out_activation_": out_activation,
        "n_features_in_": n_features, "n_iter_": 12, "t_": 0, "loss_": 0.25,
        "_no_improvement_count": 0,     # lbfgs: no loss_curve_, no optimizer state
    }


def _sklearn_regressor():
    """scikit-learn's MLPRegressor under the name and protocol _state expects."""
    sklearn_nn = importorskip("sklearn.neural_network", reason="install scikit-learn")

    class MLPRegressor(sklearn_nn.MLPRegressor):
        def _validate_hyperparameters(self):
            self._validate_params()

        def __sklearn_is_fitted__(self):
            return hasattr(self, "coefs_")

    return MLPRegressor


@pytest.mark.parametrize("hidden", [(7,), (6, 4), (6, 5, 4)], ids=["1", "2", "3"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_at_any_depth(tmp_path, hidden, dtype):
    clf = _hand_made(hidden, classes=["a", "b", "c"], dtype=dtype)
    clf.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as npz:
        L = len(hidden) + 1
        assert {f"coef_{i}" for i in range(L)} <= set(npz)
        assert f"coef_{L}" not in npz and "W1" not in npz
        assert str(npz["estimator"]) == "MLPClassifier"
        assert npz["optimizer_state"].shape == (2 * _n_parameters([5, *hidden, 3]),)
    loaded = mlp_cy.load(tmp_path / "m.npz")

    assert type(loaded) is MLPClassifier and loaded.get_params() == clf.get_params()
    assert loaded.n_layers_ == len(hidden) + 2
    for a, b in zip(clf.coefs_ + clf.intercepts_ + [clf._optimizer_state],
                    loaded.coefs_ + loaded.intercepts_ + [loaded._optimizer_state]):
        assert b.dtype == dtype
        assert_array_equal(a, b)
    for name in ("classes_", "n_outputs_", "out_activation_", "n_features_in_",
                 "n_iter_", "t_", "loss_", "loss_curve_", "best_loss_",
                 "validation_scores_", "_no_improvement_count", "_n_updates",
                 "_learning_rate"):
        assert_array_equal(getattr(loaded, name), getattr(clf, name), err_msg=name)
    X = np.random.RandomState(1).rand(10, 5).astype(dtype)
    assert_array_equal(_forward(loaded.coefs_, loaded.intercepts_, "tanh", X),
                       _forward(clf.coefs_, clf.intercepts_, "tanh", X))
    assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize(
    "classes, out_activation, n_outputs",
    [([3, 9], "logistic", 1), ([0, 1, 2, 3], "logistic", 4), (["only"], "softmax", 1),
     ([0, 1], "softmax", 2)],
    ids=["binary-logistic", "multilabel", "one-class", "binary-softmax"])
def test_output_layers_round_trip(tmp_path, classes, out_activation,
                                  n_outputs):
    clf = _hand_made((4, 3), classes, out_activation, n_outputs)
    clf.save(tmp_path / "m.npz")
    loaded = mlp_cy.load(tmp_path / "m.npz")
    assert loaded.out_activation_ == out_activation and loaded.n_outputs_ == n_outputs
    assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.coefs_[-1].shape == (3, n_outputs)


def test_regressor_state_round_trips_through_a_file(tmp_path):
    state = _regressor_state()
    persistence.write_state(tmp_path / "r.npz", state)
    with np.load(tmp_path / "r.npz") as npz:
        assert "classes_" not in npz and "loss_curve_" not in npz
        assert "optimizer_state" not in npz
    read = persistence.read_state(tmp_path / "r.npz")
    assert read["estimator"] == "MLPRegressor" and read["params"] == state["params"]
    assert "classes_" not in read and "loss_curve_" not in read
    assert "_optimizer_state" not in read and read["best_loss_"] is None
    for a, b in zip(state["coefs_"] + state["intercepts_"],
                    read["coefs_"] + read["intercepts_"]):
        assert_array_equal(a, b)
    for key in ("n_outputs_", "out_activation_", "n_features_in_", "n_iter_", "t_",
                "loss_", "_no_improvement_count"):
        assert read[key] == state[key], key


@pytest.mark.parametrize("out_activation", ["identity", "exp"])
def test_restore_builds_any_estimator_generically(tmp_path, out_activation):
    # scikit-learn's MLPRegressor stands in for mlp_cy's: restore takes its
    # hyperparameters from the class, and the restored model predicts with the weights.
    MLPRegressor = _sklearn_regressor()
    state = _regressor_state(out_activation=out_activation)
    if out_activation == "exp":
        state["params"]["loss"] = "poisson"
    persistence.write_state(tmp_path / "r.npz", state)
    reg = _state.restore(MLPRegressor, persistence.read_state(tmp_path / "r.npz"))
    assert reg.get_params()["loss"] == state["params"]["loss"]
    assert reg.n_layers_ == 4 and not hasattr(reg, "loss_curve_")
    X = np.random.RandomState(1).rand(8, 5)
    z = _forward(state["coefs_"], state["intercepts_"], "relu", X)
    np.testing.assert_allclose(reg.predict(X), np.exp(z) if out_activation == "exp" else z,
                               rtol=1e-12)
    # ... and captures it back to the same file content.
    persistence.write_state(tmp_path / "again.npz", _state.capture(reg))
    with np.load(tmp_path / "r.npz") as first, np.load(tmp_path / "again.npz") as again:
        assert sorted(first) == sorted(again)
        for key in first:
            assert_array_equal(first[key], again[key], err_msg=key)


@pytest.mark.parametrize("out_activation", ["identity", "exp"])
def test_regressor_round_trip(tmp_path, out_activation):
    # After the merge: mlp_cy's MLPRegressor, fitted, saved and loaded.
    from mlp_cy.regressor import MLPRegressor

    rng = np.random.RandomState(0)
    X = rng.rand(60, 5)
    y = np.exp(X @ rng.rand(5, 2)) if out_activation == "exp" else X @ rng.rand(5, 2)
    loss = "poisson" if out_activation == "exp" else "squared_error"
    for solver in ("adam", "lbfgs"):
        reg = MLPRegressor(hidden_layer_sizes=(6, 4), solver=solver, loss=loss,
                           max_iter=20, random_state=0).fit(X, y)
        assert reg.out_activation_ == out_activation
        reg.save(tmp_path / "r.npz")
        loaded = mlp_cy.load(tmp_path / "r.npz")
        assert type(loaded) is MLPRegressor and loaded.get_params() == reg.get_params()
        assert_array_equal(loaded.predict(X), reg.predict(X))
        assert not hasattr(loaded, "classes_")


def test_deep_classifier_fits_saves_and_continues(tmp_path):
    # After the merge: the multi-layer engine, fitted, saved, loaded, trained on.
    X, y = _data()
    for classes in (3, 2):
        X, y = _data(classes)
        clf = MLPClassifier(hidden_layer_sizes=(6, 5), solver="adam", max_iter=5,
                            random_state=0).fit(X, y)
        clf.save(tmp_path / "m.npz")
        loaded = mlp_cy.load(tmp_path / "m.npz")
        assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
        clf.partial_fit(X, y)
        loaded.partial_fit(X, y)
        for a, b in zip(clf.coefs_ + clf.intercepts_, loaded.coefs_ + loaded.intercepts_):
            assert_array_equal(a, b)


# Files of format version 1 ------------------------------------------------------------

def _v1_expected(name):
    with np.load(os.path.join(DATA, "v1_expected.npz")) as npz:
        return {key[len(name) + 1:]: npz[key] for key in npz if key.startswith(name)}


def test_version_1_multiclass_file_loads_and_predicts_as_before():
    expected = _v1_expected("v1_multiclass")
    clf = mlp_cy.load(os.path.join(DATA, "v1_multiclass.npz"))
    assert [c.shape for c in clf.coefs_] == [(5, 3), (3, 3)]
    assert clf.out_activation_ == "softmax" and clf.n_outputs_ == 3
    assert clf.n_layers_ == 3 and clf.coefs_[0].dtype == np.float32
    assert clf._optimizer_state.shape == (2 * _n_parameters([5, 3, 3]),)   # Adam's, kept
    X = expected["X"].astype(np.float32)
    assert_array_equal(clf.predict_proba(X), expected["proba"])
    assert_array_equal(clf.predict(X), expected["predict"])
    clf.partial_fit(X, expected["predict"])     # continues its optimizer


def test_version_1_binary_file_becomes_one_logistic_unit():
    expected = _v1_expected("v1_binary")
    path = os.path.join(DATA, "v1_binary.npz")
    with np.load(path) as npz:
        W2, b2 = npz["W2"], npz["b2"]
        assert int(npz["format_version"]) == 1 and W2.shape == (3, 2)
        assert "optimizer_state" in npz
    clf = mlp_cy.load(path)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert_array_equal(clf.coefs_[1], W2[:, 1:] - W2[:, :1])
    assert_array_equal(clf.intercepts_[1], b2[1:] - b2[:1])
    assert_array_equal(clf.classes_, ["no", "yes"])
    # Momentum's velocities of two units do not convert: dropped.
    assert not hasattr(clf, "_optimizer_state") and not hasattr(clf, "_n_updates")
    z = _forward(clf.coefs_, clf.intercepts_, clf.activation, expected["X"])
    np.testing.assert_allclose(1 / (1 + np.exp(-z[:, 0])), expected["proba"][:, 1],
                               rtol=1e-12, atol=1e-15)
    assert_array_equal(np.where(z[:, 0] > 0, "yes", "no"), expected["predict"])


def test_version_1_binary_file_predicts_as_before():
    # After the merge: the engine's logistic output predicts the converted model.
    expected = _v1_expected("v1_binary")
    clf = mlp_cy.load(os.path.join(DATA, "v1_binary.npz"))
    np.testing.assert_allclose(clf.predict_proba(expected["X"]), expected["proba"],
                               rtol=1e-12, atol=1e-15)
    assert_array_equal(clf.predict(expected["X"]), expected["predict"])
    clf.partial_fit(expected["X"], expected["predict"])    # a new optimizer


def test_version_1_files_are_still_checked(tmp_path):
    path = tmp_path / "v1.npz"
    path.write_bytes(open(os.path.join(DATA, "v1_multiclass.npz"), "rb").read())
    pristine = path.read_bytes()
    for change, match in [
        (lambda a: {"W2": a["W2"][1:]}, "inconsistent shapes: 'coef_1'"),
        (lambda a: {"b2": None}, r"\['b2'\] are missing"),
        (lambda a: {"coef_0": a["W1"]}, r"\['coef_0.npy'\] that format version 1"),
        (lambda a: {"estimator": np.array("MLPClassifier")}, "does not define"),
        (lambda a: {"optimizer_state": a["optimizer_state"][:-1]}, "holds 59 values"),
        (lambda a: {"classes_": a["classes_"][:2]}, "2 classes in 'classes_' for a "
                                                    "softmax output of 3 units"),
    ]:
        path.write_bytes(pristine)
        with np.load(path) as npz:
            _rewrite(path, **change(dict(npz)))
        with pytest.raises(ModelFileError, match=match):
            mlp_cy.load(path)


# What format 2 checks -----------------------------------------------------------------

@pytest.fixture
def deep_file(tmp_path):
    """A model file of a classifier with hidden layers (4, 3) and Adam's state."""
    path = tmp_path / "deep.npz"
    _hand_made((4, 3), classes=[5, 6, 7]).save(path)
    return path


def _without_optimizer():
    return dict.fromkeys(["optimizer_state", "n_updates", "current_learning_rate"])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: {"coef_1": a["coef_1"][1:]},
         r"inconsistent shapes: 'coef_1' \(3, 3\) and 'intercept_1' \(3,\) after a "
         r"layer of 4 units"),
        (lambda a: {"intercept_2": a["intercept_2"][:2]}, "inconsistent shapes"),
        (lambda a: {"coef_2": a["coef_2"][None]}, "'coef_2' and 'intercept_2' have 3"),
        (lambda a: {"intercept_2": None}, r"the keys \['intercept_2'\] are missing"),
        (lambda a: {"coef_1": None, "intercept_1": None},
         r"\['coef_1', 'intercept_1'\] are missing"),
        (lambda a: {"coef_3": np.zeros((3, 3))}, r"\['intercept_3'\] are missing"),
        (lambda a: {"coef_300": np.zeros((3, 3))}, "at most 256 layers"),
        (lambda a: {"coef_01": a["coef_0"]}, r"\['coef_01.npy'\] that format version 2"),
        (lambda a: {"W1": a["coef_0"]}, r"\['W1.npy'\] that format version 2"),
        (lambda a: {"intercept_1": a["intercept_1"].astype(np.float32)},
         "float32 or all float64"),
        (lambda a: {"n_outputs_": np.array(4)},
         "'n_outputs_' is 4 but the last layer has 3 outputs"),
        (lambda a: {"n_outputs_": np.array(3.0)}, "'n_outputs_' must be an integer"),
        (lambda a: {"n_features_in_": np.array(6)}, "'n_features_in_' is 6 but 'coef_0'"),
        (lambda a: {"estimator": np.array("SVC")},
         "'estimator' is 'SVC'; model files hold MLPClassifier or MLPRegressor"),
        (lambda a: {"estimator": np.array(1)}, "'estimator' must be a string"),
        (lambda a: {"estimator": None}, r"\['estimator'\] are missing"),
        (lambda a: {"out_activation_": np.array("identity")},
         "'out_activation_' is 'identity'; an MLPClassifier has 'softmax' or 'logistic'"),
        (lambda a: {"out_activation_": np.array("logistic")},
         "3 classes in 'classes_' for a logistic output of 3 units"),
        (lambda a: {"out_activation_": np.array("logistic"),
                    "classes_": np.array([5, 6])},
         "2 classes in 'classes_' for a logistic output of 3 units"),
        (lambda a: {"classes_": None}, "'classes_' is missing"),
        (lambda a: {"classes_": a["classes_"][:2]},
         "2 classes in 'classes_' for a softmax output of 3 units"),
        (lambda a: {"estimator": np.array("MLPRegressor")},
         "'out_activation_' is 'softmax'; an MLPRegressor has 'identity' or 'exp'"),
        (lambda a: {"estimator": np.array("MLPRegressor"),
                    "out_activation_": np.array("identity")},
         "it has 'classes_', which an MLPRegressor has not"),
        (lambda a: {"optimizer_state": a["optimizer_state"][:-1]},
         "'optimizer_state' holds 101 values; a network of 51 weights and biases has 0 "
         r"\(plain SGD\), 51 \(momentum\) or 102 \(Adam\)"),
        (lambda a: {"optimizer_state": a["optimizer_state"][:51]}, None),
        (lambda a: {"optimizer_state": a["optimizer_state"][:0]}, None),
        (lambda a: _without_optimizer(), None),
        (lambda a: {"loss_curve_": None}, None),
        (lambda a: {"params_json": np.array('{"hidden_layer_sizes": [4]}')},
         r"hidden_layer_sizes=\(4,\) but the weights have hidden layers of \(4, 3\)"),
        (lambda a: {"params_json": np.array('{"hidden_layer_sizes": [4, 3], '
                                            '"loss": "poisson"}')},
         r"unknown hyperparameters \['loss'\]; an MLPClassifier has"),
    ],
)
def test_format_2_mismatches_are_refused(deep_file, change, match):
    with np.load(deep_file) as npz:
        _rewrite(deep_file, **change(dict(npz)))
    if match is None:    # a change that leaves a valid file
        assert mlp_cy.load(deep_file).n_layers_ == 4
        return
    with pytest.raises(ModelFileError, match=match) as info:
        mlp_cy.load(deep_file)
    assert str(info.value).startswith(f"{str(deep_file)!r} is not a valid mlp_cy model")


def test_a_regressor_file_with_a_classifiers_output_is_refused(tmp_path):
    for out_activation in ("softmax", "logistic"):
        state = _regressor_state(out_activation=out_activation)
        with pytest.raises(ValueError, match="The model cannot be saved: its "
                                             f"'out_activation_' is '{out_activation}'"):
            persistence.write_state(tmp_path / "r.npz", state)
    state = _regressor_state()
    persistence.write_state(tmp_path / "r.npz", state)
    _rewrite(tmp_path / "r.npz", estimator=np.array("MLPClassifier"))
    with pytest.raises(ModelFileError, match="'out_activation_' is 'identity'"):
        persistence.read_state(tmp_path / "r.npz")


def test_restore_refuses_another_estimators_state(tmp_path):
    with pytest.raises(ModelFileError, match="holds an MLPRegressor, not an MLPClassifier"):
        _state.restore(MLPClassifier, _regressor_state())


def test_states_that_would_not_load_are_not_saved(tmp_path):
    clf = _hand_made((4, 3))
    clf.n_outputs_ = 2
    with pytest.raises(ValueError, match="cannot be saved: 'n_outputs_' is 2"):
        clf.save(tmp_path / "m.npz")
    clf = _hand_made((4, 3))
    clf._optimizer_state = clf._optimizer_state[:-1]
    with pytest.raises(ValueError, match="cannot be saved: 'optimizer_state' holds"):
        clf.save(tmp_path / "m.npz")
    clf = _hand_made((4, 3))
    clf.intercepts_ = clf.intercepts_[:-1]
    with pytest.raises(ValueError, match="3 coefs_ and 2 intercepts_"):
        clf.save(tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


def test_256_layers_are_written_and_read(tmp_path):
    state = _regressor_state(hidden=(2,) * 255, n_outputs=1)
    persistence.write_state(tmp_path / "r.npz", state)
    assert len(persistence.read_state(tmp_path / "r.npz")["coefs_"]) == 256
    with pytest.raises(ValueError, match="1 to 256 layers"):
        persistence.write_state(tmp_path / "r.npz", _regressor_state(hidden=(2,) * 256))


def test_persistence_imports_no_estimator():
    # The circle that was: persistence imported classifier, which imports persistence.
    import ast

    for module in (persistence, _state):
        tree = ast.parse(open(module.__file__).read())
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"classifier", "regressor"}, module.__name__
    assert persistence.load is mlp_cy.load    # mlp_cy 0.1's names still work
    assert persistence.save_model.__module__ == "mlp_cy._estimator_files"
