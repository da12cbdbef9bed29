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
    assert ours.coefs_[1].shape == (5, n_classes)
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
    # W2 back as [0, W2[:, 1] - W2[:, 0]]: the same logits up to a shift per row.
    np.testing.assert_array_equal(again.coefs_[0], ours.coefs_[0])
    np.testing.assert_allclose(again.coefs_[1][:, 1],
                               ours.coefs_[1][:, 1] - ours.coefs_[1][:, 0])
    np.testing.assert_allclose(again.predict_proba(X), ours.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(again.feature_names_in_, ours.feature_names_in_)


@pytest.mark.parametrize("params, y_kind, match", [
    (dict(hidden_layer_sizes=(4, 3)), "multiclass", r"2 hidden layers \(mlp_cy has exactly one\)"),
    (dict(hidden_layer_sizes=4), "multilabel", r"multilabel"),
    (dict(hidden_layer_sizes=4, solver="lbfgs"), "multiclass", r"solver='lbfgs'"),
])
def test_from_sklearn_names_what_it_cannot_convert(params, y_kind, match):
    X, y = _data(3)
    if y_kind == "multilabel":
        y = np.c_[X[:, 0] > 0, X[:, 1] > 0].astype(int)
    theirs = _fit(sklearn_nn.MLPClassifier(max_iter=5, random_state=0, **params), X, y)
    with pytest.raises(ValueError, match=r"does not convert to mlp_cy: .*" + match):
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
