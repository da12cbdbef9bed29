"""Each elementwise kernel against NumPy, for float32 and float64."""

import numpy as np
import pytest
from scipy.special import expit, log_softmax, softmax

from mlp_cy import kernels

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]

ACTIVATIONS = {
    kernels.Activation.IDENTITY: (lambda z: z, lambda a: np.ones_like(a)),
    kernels.Activation.LOGISTIC: (expit, lambda a: a * (1 - a)),
    kernels.Activation.TANH: (np.tanh, lambda a: 1 - a**2),
    kernels.Activation.RELU: (lambda z: np.maximum(z, 0), lambda a: (a > 0) * 1.0),
}


def _data(dtype, shape=(9, 6), scale=3.0, seed=0):
    rng = np.random.RandomState(seed)
    return (scale * rng.randn(*shape)).astype(dtype), rng.randn(shape[1]).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_bias_activation(dtype, activation):
    Z, b = _data(dtype)
    expected = ACTIVATIONS[activation][0](Z.astype(np.float64) + b)
    kernels._bias_activation(Z, b, activation)
    np.testing.assert_allclose(Z, expected, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_extremes_do_not_overflow(dtype):
    Z0 = np.array([[-1e30, -1000.0, -89.0, 0.0, 89.0, 1000.0, 1e30]], dtype=dtype)
    Z = Z0.copy()
    with np.errstate(all="raise"):
        kernels._bias_activation(Z, np.zeros(Z.shape[1], dtype), kernels.Activation.LOGISTIC)
    assert np.isfinite(Z).all()
    assert Z[0, 3] == 0.5 and Z[0, -1] == 1.0 and (Z[0, :3] >= 0).all()
    # Below the clamp (exp(88) for float, exp(708) for double) sigmoid is < 1e-38.
    limit = 88.0 if dtype == np.float32 else 708.0
    expected = expit(Z0.astype(np.float64).clip(-limit, None))
    np.testing.assert_allclose(Z, expected, rtol=RTOL[dtype], atol=1e-37)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_activation_backward(dtype, activation):
    Z, b = _data(dtype, seed=1)
    A = ACTIVATIONS[activation][0](Z).astype(dtype)
    dA = np.random.RandomState(2).randn(*Z.shape).astype(dtype)
    expected = dA.astype(np.float64) * ACTIVATIONS[activation][1](A.astype(np.float64))
    bias_grad = np.full(Z.shape[1], np.nan, dtype=dtype)
    kernels._activation_backward(dA, A, activation, bias_grad)
    np.testing.assert_allclose(dA, expected, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(bias_grad, expected.sum(axis=0), rtol=10 * RTOL[dtype],
                               atol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_softmax(dtype):
    Z, b = _data(dtype, scale=30.0)
    expected = softmax(Z.astype(np.float64) + b, axis=1)
    kernels._bias_softmax(Z, b)
    np.testing.assert_allclose(Z, expected, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(Z.sum(axis=1), 1, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy(dtype, weighted):
    Z, b = _data(dtype, shape=(8, 5), scale=5.0)
    rng = np.random.RandomState(3)
    y = rng.randint(0, 5, size=8).astype(np.int32)
    w = rng.rand(8).astype(dtype) if weighted else None
    weights = np.ones(8) if w is None else w.astype(np.float64)
    scale = 1.0 / weights.sum()
    Z64 = Z.astype(np.float64) + b
    Y = np.eye(5)[y]
    expected_loss = -(weights * (log_softmax(Z64, axis=1) * Y).sum(axis=1)).sum()
    expected_grad = weights[:, None] * (softmax(Z64, axis=1) - Y) * scale
    bias_grad = np.full(5, np.nan, dtype=dtype)
    loss = kernels._softmax_cross_entropy(Z, b, y, w, scale, bias_grad)
    np.testing.assert_allclose(loss, expected_loss, rtol=RTOL[dtype])
    np.testing.assert_allclose(Z, expected_grad, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(bias_grad, expected_grad.sum(axis=0), rtol=10 * RTOL[dtype],
                               atol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_finite_when_the_true_class_probability_underflows(dtype):
    # The true class is 1e4 below the others: its probability is exactly 0 in
    # floating point, yet the loss must be the exact logsumexp value, not inf.
    Z = np.array([[0.0, 1e4, 0.0]], dtype=dtype)
    bias_grad = np.zeros(3, dtype=dtype)
    loss = kernels._softmax_cross_entropy(Z, np.zeros(3, dtype), np.array([0], np.int32),
                                          None, 1.0, bias_grad)
    assert loss == pytest.approx(1e4, rel=1e-6)
    np.testing.assert_allclose(Z, [[-1.0, 1.0, 0.0]], atol=1e-6)


def test_float_sigmoid_is_accurate_over_its_whole_range():
    # float's exp is mlp_cy's own vectorisable one (_fastexp.h): sweep it densely.
    z = np.linspace(-87, 87, 200001).astype(np.float32)[None, :]
    out = z.copy()
    kernels._bias_activation(out, np.zeros(z.shape[1], np.float32),
                             kernels.Activation.LOGISTIC)
    expected = expit(z.astype(np.float64))
    np.testing.assert_allclose(out, expected, rtol=4 * np.finfo(np.float32).eps, atol=0)


def test_float_softmax_is_accurate_for_wide_logit_ranges():
    rng = np.random.RandomState(4)
    Z = (rng.rand(500, 10) * 170 - 85).astype(np.float32)
    out = Z.copy()
    kernels._bias_softmax(out, np.zeros(10, np.float32))
    expected = softmax(Z.astype(np.float64), axis=1)
    # z - max is itself rounded to float (about 1e-5 absolute at |z| ~ 85), which
    # bounds the relative accuracy of tiny probabilities for any exp.
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=1e-7)
