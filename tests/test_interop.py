"""MLPClassifier.to_sklearn / from_sklearn (issue 17, item 6), and ONNX export of the
converted estimator through skl2onnx, checked with onnxruntime."""

import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier

sklearn_nn = importorskip("sklearn.neural_network", reason="install scikit-learn")


def _data(n_classes, dtype=np.float64, n=120):
    rng = np.random.RandomState(0)
    X = rng.randn(n, 5).astype(dtype)
    codes = (X[:, 0] > 0).astype(int) + (n_classes > 2) * (X[:, 1] > 0) \
        + (n_classes > 3) * (X[:, 2] > 0)
    y = np.array(["a", "b", "c", "d"])[codes]
    return X, y


def _fit(clf, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(X, y)


@pytest.mark.parametrize("n_classes", [2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_sklearn_predicts_as_mlp_cy(n_classes, dtype):
    X, y = _data(n_classes, dtype)
    ours = _fit(MLPClassifier(hidden_layer_sizes=6, max_iter=30, random_state=0), X, y)
    theirs = ours.to_sklearn()
    assert isinstance(theirs, sklearn_nn.MLPClassifier)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(theirs.predict_proba(X), ours.predict_proba(X), rtol=rtol,
                               atol=rtol)
    np.testing.assert_array_equal(theirs.predict(X), ours.predict(X))
    assert theirs.score(X, y) == ours.score(X, y)
    assert theirs.out_activation_ == ("logistic" if n_classes == 2 else "softmax")
    assert theirs.coefs_[1].shape == (6, 1 if n_classes == 2 else n_classes)
    assert theirs.coefs_[0].dtype == dtype
    assert theirs.n_iter_ == ours.n_iter_ and theirs.t_ == ours.t_
    assert theirs.loss_curve_ == ours.loss_curve_
    # A fitted scikit-learn estimator: it trains on, by partial_fit and warm start.
    theirs.partial_fit(X, y)
    _fit(theirs.set_params(warm_start=True, max_iter=2), X, y)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_from_sklearn_predicts_as_sklearn(n_classes):
    X, y = _data(n_classes)
    theirs = _fit(sklearn_nn.MLPClassifier(hidden_layer_sizes=5, max_iter=30,
                                           random_state=0), X, y)
    ours = MLPClassifier.from_sklearn(theirs)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.coefs_[1].shape == (5, 1 if n_classes == 2 else n_classes)
    assert ours.n_iter_ == theirs.n_iter_ and ours.loss_ == theirs.loss_
    # And it trains on, and goes back.
    ours.partial_fit(X, y)
    _fit(ours.set_params(warm_start=True, max_iter=2), X, y)
    back = ours.to_sklearn()
    np.testing.assert_allclose(back.predict_proba(X), ours.predict_proba(X), rtol=1e-12,
                               atol=1e-12)


def test_round_trip_keeps_the_weights_and_feature_names():
    pd = importorskip("pandas", reason="install pandas")
    X, y = _data(2)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    ours = _fit(MLPClassifier(hidden_layer_sizes=4, max_iter=10, random_state=0), X, y)
    theirs = ours.to_sklearn()
    np.testing.assert_array_equal(theirs.feature_names_in_, ours.feature_names_in_)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        theirs.predict(X)
    again = MLPClassifier.from_sklearn(theirs)
    # The same layout both ways: the weights come back as they were.
    for a, b in zip(again.coefs_ + again.intercepts_, ours.coefs_ + ours.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.predict_proba(X), ours.predict_proba(X))
    np.testing.assert_array_equal(again.feature_names_in_, ours.feature_names_in_)


@pytest.mark.parametrize("params, y_kind", [
    (dict(hidden_layer_sizes=(4, 3)), "multiclass"),
    (dict(hidden_layer_sizes=(4, 3, 2)), "binary"),
    (dict(hidden_layer_sizes=4), "multilabel"),
    (dict(hidden_layer_sizes=(4, 3), solver="lbfgs"), "multiclass"),
    (dict(hidden_layer_sizes=(4, 3)), "regression"),
    (dict(hidden_layer_sizes=(4, 3), loss="poisson"), "poisson"),
])
def test_every_depth_output_and_solver_converts_both_ways(params, y_kind):
    from mlp_cy import MLPRegressor

    X, y = _data(3)
    regression = y_kind in ("regression", "poisson")
    if y_kind == "multilabel":
        y = np.c_[X[:, 0] > 0, X[:, 1] > 0, X[:, 2] > 0].astype(int)
    elif y_kind == "binary":
        y = X[:, 0] > 0
    elif regression:
        y = np.exp(X[:, :2] / 2) if y_kind == "poisson" else X[:, :2] @ [[1, 2], [3, 4]]
    sk_class = sklearn_nn.MLPRegressor if regression else sklearn_nn.MLPClassifier
    ours_class = MLPRegressor if regression else MLPClassifier
    theirs = _fit(sk_class(max_iter=20, random_state=0, **params), X, y)
    ours = ours_class.from_sklearn(theirs)
    assert ours.out_activation_ == theirs.out_activation_
    predict = "predict" if regression else "predict_proba"
    np.testing.assert_allclose(getattr(ours, predict)(X), getattr(theirs, predict)(X),
                               rtol=1e-12, atol=1e-12)
    if regression:
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-12)
    else:
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    back = ours.to_sklearn()
    assert type(back) is sk_class
    np.testing.assert_allclose(getattr(back, predict)(X), getattr(theirs, predict)(X),
                               rtol=1e-12, atol=1e-12)
    # Both train on from there.
    if params.get("solver") != "lbfgs":
        ours.partial_fit(X, y)
        back.partial_fit(X, y)


def test_a_regressor_does_not_convert_to_a_classifier():
    X, _ = _data(2)
    theirs = _fit(sklearn_nn.MLPRegressor(hidden_layer_sizes=3, max_iter=2), X, X[:, 0])
    with pytest.raises(ValueError, match="use the MLPRegressor of mlp_cy"):
        MLPClassifier.from_sklearn(theirs)


def test_unfitted_and_one_class_models_do_not_convert():
    from mlp_cy._compat import NotFittedError

    with pytest.raises(NotFittedError):
        MLPClassifier().to_sklearn()
    with pytest.raises(ValueError, match="is not fitted"):
        MLPClassifier.from_sklearn(sklearn_nn.MLPClassifier())
    X, _ = _data(2)
    one = _fit(MLPClassifier(hidden_layer_sizes=3, max_iter=2), X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="one class does not convert"):
        one.to_sklearn()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_onnx_export_of_the_converted_model_gives_mlp_cys_probabilities(n_classes):
    skl2onnx = importorskip("skl2onnx", reason="install the 'onnx' extra")
    onnxruntime = importorskip("onnxruntime", reason="install the 'onnx' extra")
    from skl2onnx.common.data_types import FloatTensorType

    X, y = _data(n_classes, np.float32)
    ours = _fit(MLPClassifier(hidden_layer_sizes=8, max_iter=30, random_state=0), X, y)
    onnx_model = skl2onnx.convert_sklearn(
        ours.to_sklearn(), initial_types=[("X", FloatTensorType([None, X.shape[1]]))],
        options={"zipmap": False})
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    labels, proba = session.run(None, {"X": X})
    np.testing.assert_allclose(proba, ours.predict_proba(X), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(labels, ours.predict(X))
