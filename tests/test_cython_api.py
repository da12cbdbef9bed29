"""The public Cython API, used the way another project uses it.

Design:
a) Downstream builds go to a temporary directory and compile against the *installed*
   mlp_cy: its .pxd files come from mlp_cy.get_include() (tests/cimport_example) or
   from sys.path (the docs example, built with `cythonize -i` exactly as the doc
   says). A wheel that lost its .pxd files fails here; only an editable or in-tree
   install without them is skipped (the models are scipy's and numpy's
   test_extending/test_cython).
b) The downstream results are compared with MLPClassifier, which runs the same engine
   through mlp_cy.network's Python wrappers, for float32 and float64.
c) tests/capi_signatures.json pins every name and C signature string that
   mlp_cy.network, mlp_cy.kernels and mlp_cy.layers export in __pyx_capi__ (scipy's
   linalg/tests/test_cython_abi.py): a removed or changed entry is an ABI break and
   fails; added names pass. Regenerate after an intended change with
       python tests/test_cython_api.py --regenerate
   run against an installed build.
"""

import argparse
import ctypes
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import importorskip
from numpy.testing import assert_allclose

import mlp_cy
from mlp_cy import MLPClassifier, _blas
from mlp_cy.kernels import Activation
from mlp_cy.network import Solver

HERE = Path(__file__).resolve().parent
SIGNATURES = HERE / "capi_signatures.json"
CONSUMER = HERE / "cimport_example" / "consumer.pyx"
DOC = HERE.parent / "docs" / "cython-api.md"
PUBLIC_MODULES = ("mlp_cy.network", "mlp_cy.kernels", "mlp_cy.layers")
PUBLIC_PXD = ("network.pxd", "kernels.pxd", "layers.pxd", "_typedefs.pxd", "_parallel.pxd")

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-14}
N_SAMPLES, N_FEATURES, N_HIDDEN, N_CLASSES = 150, 6, 7, 3


# Building downstream modules ##################################################

def _require_pxd():
    """Skip or fail unless mlp_cy.get_include() holds the public .pxd files."""
    include = Path(mlp_cy.get_include())
    missing = [name for name in PUBLIC_PXD if not (include / "mlp_cy" / name).is_file()]
    if not missing:
        return
    where = Path(mlp_cy.__file__).parent
    if _is_editable_or_in_tree():
        pytest.skip(f"mlp_cy is imported from {where}, an editable or in-tree install "
                    f"without {', '.join(missing)}: install the wheel or the sdist "
                    "(pip install .) to test the Cython API")
    pytest.fail(f"the installed mlp_cy at {where} lacks {', '.join(missing)}: the "
                "wheel must ship its .pxd files (tool.setuptools.package-data)")


def _is_editable_or_in_tree():
    try:
        direct_url = importlib.metadata.distribution("mlp_cy").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return True     # imported from a source tree on sys.path, not installed
    if not direct_url:
        return False
    return bool(json.loads(direct_url).get("dir_info", {}).get("editable", False))


def _run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{shlex.join(map(str, command))} failed in {cwd} "
                    f"(exit {result.returncode}):\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-3000:]}")


def _load_extension(directory, name):
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = directory / (name + suffix)
        if path.is_file():
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    pytest.fail(f"no extension module {name} was built in {directory}: "
                f"{sorted(p.name for p in directory.iterdir())}")


BUILD_WITH_GET_INCLUDE = """
from Cython.Build import cythonize
from setuptools import Extension, setup

import mlp_cy

setup(
    name="mlp-cy-consumer",
    ext_modules=cythonize([Extension("consumer", ["consumer.pyx"])],
                          include_path=[mlp_cy.get_include()],
                          compiler_directives={"language_level": 3}),
    script_args=["build_ext", "--inplace"],
)
"""


@pytest.fixture(scope="module")
def consumer(tmp_path_factory):
    """tests/cimport_example/consumer.pyx, built against the installed mlp_cy."""
    _require_pxd()
    directory = tmp_path_factory.mktemp("consumer")
    shutil.copy(CONSUMER, directory / "consumer.pyx")
    _run([sys.executable, "-c", BUILD_WITH_GET_INCLUDE], cwd=directory)
    return _load_extension(directory, "consumer")


# The consumer against the estimator ###########################################

def _data(dtype, seed=0):
    """Small integer features, exact in uint8, float32 and float64 alike."""
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 4, (N_SAMPLES, N_FEATURES)).astype(dtype)
    y = np.array(["a", "b", "c"])[rng.randint(0, N_CLASSES, N_SAMPLES)]
    return X, y


def _fitted(X, y, **params):
    settings = dict(hidden_layer_sizes=N_HIDDEN, activation="logistic", solver="sgd",
                    momentum=0.0, alpha=0.0, learning_rate_init=0.05, max_iter=2,
                    random_state=0)
    clf = MLPClassifier(**{**settings, **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # ConvergenceWarning: a deliberately short fit
        clf.fit(X, y)
    return clf


def _params(clf):
    """Copies of W1, b1, W2, b2: the order of the C API's arguments."""
    (W1, W2), (b1, b2) = clf.coefs_, clf.intercepts_
    return [p.copy() for p in (W1, b1, W2, b2)]


def _codes(clf, y):
    return np.searchsorted(clf.classes_, y).astype(np.int32)


# (dtype of X, dtype of the parameters)
DTYPES = [(np.float32, np.float32), (np.float64, np.float64), (np.uint8, np.float32),
          (np.uint8, np.float64), (np.float32, np.float64)]


@pytest.mark.parametrize("x_dtype, dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_predict_proba_matches_the_estimator(consumer, x_dtype, dtype, activation):
    X, y = _data(dtype)
    clf = _fitted(X, y, activation=activation)
    X = X.astype(x_dtype)
    proba = np.full((N_SAMPLES, N_CLASSES), np.nan, dtype=dtype)
    work = np.empty(16 * (N_HIDDEN + N_FEATURES), dtype=dtype)   # 16 rows a chunk
    consumer.proba(X, *_params(clf), Activation[activation.upper()], proba, work)
    assert_allclose(proba, clf.predict_proba(X), rtol=RTOL[dtype], atol=ATOL[dtype])


# Estimator settings -> the TrainOptions fields that differ from sgd_options(...)
SOLVERS = {
    "sgd": ({"solver": "sgd"}, {}),
    "nesterov": ({"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": True},
                 {"momentum": 0.9, "nesterov": True}),
    "adam": ({"solver": "adam", "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-7},
             {"solver": Solver.ADAM, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-7}),
}


def _train_options(consumer, solver, activation, learning_rate, alpha):
    options = consumer.sgd(activation, learning_rate, alpha)
    options.update(SOLVERS[solver][1])
    return options


def _buffers(consumer, options, batch_size, dtype):
    """Zeroed optimizer state (None for plain SGD) and the work buffer."""
    size = consumer.state_size(options, N_FEATURES, N_HIDDEN, N_CLASSES)
    state = np.zeros(size, dtype=dtype) if size else None
    work = np.empty(consumer.workspace_size(options, batch_size, N_FEATURES, N_HIDDEN,
                                            N_CLASSES), dtype=dtype)
    return state, work


def test_sgd_options_are_plain_sgd(consumer):
    options = consumer.sgd(Activation.RELU, 0.25, 1e-4)
    assert options == {"activation": Activation.RELU, "solver": Solver.SGD,
                       "learning_rate": 0.25, "alpha": 1e-4, "momentum": 0.0,
                       "nesterov": False, "beta_1": 0.9, "beta_2": 0.999,
                       "epsilon": 1e-8}
    assert consumer.state_size(options, N_FEATURES, N_HIDDEN, N_CLASSES) == 0


@pytest.mark.parametrize("x_dtype, dtype", DTYPES)
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_train_epoch_matches_one_warm_started_epoch(consumer, x_dtype, dtype, solver,
                                                    weighted):
    """From the same weights and a fresh optimiser (the estimator makes one per fit)."""
    X, y = _data(dtype)
    batch_size, alpha = 32, 1e-3     # 150 rows: four batches of 32 and one of 22
    clf = _fitted(X, y, activation="tanh", batch_size=batch_size, alpha=alpha,
                  warm_start=True, shuffle=False, max_iter=1, **SOLVERS[solver][0])
    params = _params(clf)
    options = _train_options(consumer, solver, Activation.TANH, 0.05, alpha)
    state, work = _buffers(consumer, options, batch_size, dtype)
    sample_weight = (np.random.RandomState(1).uniform(0.5, 2, N_SAMPLES).astype(dtype)
                     if weighted else None)

    loss_sum, n_rows, n_batches, diverged, n_updates = consumer.epoch(
        X.astype(x_dtype), _codes(clf, y), *params, sample_weight, None, batch_size,
        options, state, 0, work)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y, sample_weight=sample_weight)

    assert (n_rows, n_batches, diverged, n_updates) == (N_SAMPLES, 5, False, 5)
    for mine, theirs in zip(params, _params(clf)):
        assert_allclose(mine, theirs, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(loss_sum / n_rows, clf.loss_, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_train_step_is_an_epoch_of_one_batch(consumer, dtype, solver):
    X, y = _data(dtype)
    clf = _fitted(X, y, batch_size=N_SAMPLES, warm_start=True, shuffle=False,
                  max_iter=1, **SOLVERS[solver][0])
    params = _params(clf)
    options = _train_options(consumer, solver, Activation.LOGISTIC, 0.05, 0.0)
    state, work = _buffers(consumer, options, N_SAMPLES, dtype)

    loss, n_updates = consumer.step(X, _codes(clf, y), *params, None, options, state, 0,
                                    work)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)

    assert n_updates == 1
    for mine, theirs in zip(params, _params(clf)):
        assert_allclose(mine, theirs, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(loss, clf.loss_, rtol=RTOL[dtype])


@pytest.mark.parametrize("x_dtype, dtype", [(np.float32, np.float32),
                                            (np.uint8, np.float64)])
def test_train_step_on_several_threads_matches_one(consumer, x_dtype, dtype):
    # train_step is the layers step: on 3 forced parts skipping X's zeros, against
    # the same step on one thread by gemm.
    rng = np.random.default_rng(0)
    X = rng.random((61, 784))
    X[rng.random(X.shape) < 0.7] = 0
    X = (X * 255).astype(np.uint8) if x_dtype == np.uint8 else X.astype(x_dtype)
    y = rng.integers(0, 10, 61).astype(np.int32)
    weights = rng.random(61).astype(dtype)
    init = [0.05 / (255 if x_dtype == np.uint8 else 1) * rng.standard_normal((784, 32)), 0.1 * rng.standard_normal(32),
            0.3 * rng.standard_normal((32, 10)), 0.1 * rng.standard_normal(10)]
    options = consumer.sgd(Activation.LOGISTIC, 0.05, 1e-3)
    work = np.empty(consumer.workspace_size(options, 61, 784, 32, 10), dtype=dtype)
    threadpoolctl = importorskip("threadpoolctl")
    results = []
    for threads, mode in ((0, "never"), (3, "always")):   # 0: one thread, the serial step
        params = [p.astype(dtype) for p in init]
        old_threads = _blas._set_parallel_threads(threads)
        old_mode = _blas._set_skipzero_mode(mode)
        _blas._kernel_use_reset()
        try:
            with threadpoolctl.threadpool_limits(1):
                loss, n_updates = consumer.step(X, y, *params, weights, options, None, 0,
                                                work)
        finally:
            _blas._set_parallel_threads(old_threads)
            _blas._set_skipzero_mode(old_mode)
        assert n_updates == 1
        # the zero-skipping kernels ran where the plan was made to skip zeros only
        assert bool(_blas._kernel_levels_used()) == (threads == 3)
        results.append((loss, params))
    (serial_loss, serial), (loss, parallel) = results
    assert_allclose(loss, serial_loss, rtol=RTOL[dtype])
    for mine, theirs in zip(parallel, serial):
        assert_allclose(mine, theirs, rtol=RTOL[dtype], atol=ATOL[dtype])
    # Other sums, so other roundings: proof that two different steps ran.
    assert any(not np.array_equal(a, b) for a, b in zip(parallel, serial))


def test_train_epoch_visits_rows_in_the_given_order(consumer):
    X, y = _data(np.float64)
    clf = _fitted(X, y)
    codes = _codes(clf, y)
    order = np.random.RandomState(2).permutation(N_SAMPLES).astype(np.intp)
    options = consumer.sgd(Activation.LOGISTIC, 0.05, 0.0)
    _, work = _buffers(consumer, options, 40, np.float64)
    by_order, by_copy = _params(clf), _params(clf)
    stats = consumer.epoch(X, codes, *by_order, None, order, 40, options, None, 0, work)
    stats_copy = consumer.epoch(X[order], codes[order], *by_copy, None, None, 40, options,
                                None, 0, work)
    for a, b in zip(by_order, by_copy):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert_allclose(stats, stats_copy, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_are_callable_for_both_dtypes(consumer, dtype):
    x = np.linspace(-2, 3, 101).astype(dtype)
    assert_allclose(consumer.squares(x), np.sum(x.astype(np.float64) ** 2),
                    rtol=RTOL[dtype])


ACTIVATIONS = {                       # act(z), and act'(z) from a = act(z)
    0: (lambda z: z, lambda a: np.ones_like(a)),
    1: (lambda z: 1 / (1 + np.exp(-z)), lambda a: a * (1 - a)),
    2: (np.tanh, lambda a: 1 - a ** 2),
    3: (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(a.dtype)),
}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_kernels_from_cython_match_numpy(consumer, dtype, activation):
    # The four other public kernels of mlp_cy.kernels, called from another project's
    # Cython module, against their formulas in NumPy (float64).
    rng = np.random.default_rng(activation)
    Z = rng.standard_normal((9, 13)).astype(dtype)
    bias = rng.standard_normal(13).astype(dtype)
    act, derivative = ACTIVATIONS[activation]
    A = Z.copy()
    consumer.activate(A, bias, activation)
    expected_A = act(Z.astype(np.float64) + bias)
    assert_allclose(A, expected_A, rtol=RTOL[dtype], atol=ATOL[dtype])

    dA = rng.standard_normal((9, 13)).astype(dtype)
    dZ = dA.copy()
    bias_grad = np.empty(13, dtype)
    consumer.backward(dZ, A, activation, bias_grad)
    expected_dZ = dA.astype(np.float64) * derivative(A.astype(np.float64))
    assert_allclose(dZ, expected_dZ, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(bias_grad, expected_dZ.sum(axis=0), rtol=RTOL[dtype],
                    atol=10 * ATOL[dtype])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_kernels_from_cython_match_numpy(consumer, dtype, weighted):
    rng = np.random.default_rng(7)
    Z = (3 * rng.standard_normal((11, 5))).astype(dtype)
    bias = rng.standard_normal(5).astype(dtype)
    y = rng.integers(0, 5, 11).astype(np.int32)
    w = rng.random(11).astype(dtype) if weighted else None
    logits = Z.astype(np.float64) + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)

    proba = Z.copy()
    consumer.softmax(proba, bias)
    assert_allclose(proba, p, rtol=RTOL[dtype], atol=ATOL[dtype])

    weights = np.ones(11) if w is None else w.astype(np.float64)
    scale = 1 / weights.sum()
    grad = Z.copy()
    bias_grad = np.empty(5, dtype)
    total = consumer.cross_entropy(grad, bias, y, w, scale, bias_grad)
    onehot = np.eye(5)[y]
    expected_total = np.sum(weights * -np.log(p[np.arange(11), y]))
    expected_grad = weights[:, None] * scale * (p - onehot)
    assert_allclose(total, expected_total, rtol=RTOL[dtype])
    assert_allclose(grad, expected_grad, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(bias_grad, expected_grad.sum(axis=0), rtol=RTOL[dtype],
                    atol=10 * ATOL[dtype])


@pytest.mark.parametrize("output", ["logistic", "identity", "exp"])
def test_layers_from_cython_match_the_estimators_engine(consumer, output):
    # A three-hidden-layer network through layers.pxd's pointer-array API, against
    # the engine the estimators call (layers.Network) on the same arrays.
    from mlp_cy._base import ACTIVATIONS, OUTPUTS
    from mlp_cy.layers import Network

    rng = np.random.RandomState(3)
    units = [N_FEATURES, 8, 5, 4, 3]
    coefs = [rng.uniform(-0.5, 0.5, (a, b)) for a, b in zip(units[:-1], units[1:])]
    intercepts = [rng.uniform(-0.2, 0.2, b) for b in units[1:]]
    X = rng.randn(40, N_FEATURES)
    Y = rng.randint(0, 3, (40, units[-1])).astype(np.float64)
    if output == "logistic":
        Y = (Y > 1).astype(np.float64)
    activation, code = ACTIVATIONS["tanh"], OUTPUTS[output]
    out = np.empty((40, units[-1]))
    consumer.deep_predict(X, coefs, intercepts, activation, code, out)
    net = Network(coefs, intercepts, activation, code)
    assert_allclose(out, net.predict(X), rtol=1e-13, atol=1e-15)
    gradient = np.empty(net.n_parameters)
    expected = np.empty(net.n_parameters)
    loss = consumer.deep_loss_gradient(X, Y, coefs, intercepts, activation, code, 0.1,
                                       gradient)
    assert loss == pytest.approx(net.loss_gradient(X, Y, None, 0.1, expected), rel=1e-13)
    assert_allclose(gradient, expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="unknown output"):
        consumer.deep_predict(X, coefs, intercepts, activation, 7, out)


def test_errors_raised_without_the_gil_reach_python(consumer):
    X, y = _data(np.float64)
    params = _params(_fitted(X, y))
    wrong_shape = np.empty((N_SAMPLES, N_CLASSES + 1))
    with pytest.raises(ValueError, match="proba_out must be"):
        consumer.proba(X, *params, Activation.LOGISTIC, wrong_shape, np.empty(N_HIDDEN))


# The example of docs/cython-api.md ############################################

def _doc_blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def test_docs_example_builds_and_matches_the_estimator(tmp_path, monkeypatch, capsys):
    """The ```cython block, built with the doc's own cythonize command, then its
    ```python usage block, which asserts that it agrees with MLPClassifier."""
    assert DOC.is_file(), f"{DOC} is missing (the sdist must include docs/)"
    _require_pxd()
    (source,) = _doc_blocks("cython")
    module_name = re.match(r"# (\w+)\.pyx", source).group(1)
    (build_line,) = [line for block in _doc_blocks("sh") for line in block.splitlines()
                     if line.startswith("cythonize ")]
    command = shlex.split(build_line)
    assert command[-1] == f"{module_name}.pyx", build_line
    (usage,) = [block for block in _doc_blocks("python")
                if f"import {module_name}" in block]

    (tmp_path / f"{module_name}.pyx").write_text(source, encoding="utf-8")
    # `cythonize` is the console script of Cython.Build.Cythonize, for this Python.
    _run([sys.executable, "-m", "Cython.Build.Cythonize", *command[1:]], cwd=tmp_path)
    monkeypatch.setitem(sys.modules, module_name, _load_extension(tmp_path, module_name))
    exec(compile(usage, str(DOC), "exec"), {"__name__": "cython_api_doc"})
    assert "same probabilities and the same epoch" in capsys.readouterr().out


# The exported C API ###########################################################

def exported_signatures(module_name):
    """{name: C signature} of a module's __pyx_capi__ (the capsule names)."""
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    module = importlib.import_module(module_name)
    return {name: get_name(capsule).decode()
            for name, capsule in module.__pyx_capi__.items()}


def test_exported_c_api_matches_the_pinned_signatures():
    pinned = json.loads(SIGNATURES.read_text(encoding="utf-8"))
    assert sorted(pinned) == sorted(PUBLIC_MODULES)
    problems = []
    for module_name, entries in pinned.items():
        exported = exported_signatures(module_name)
        for name, signature in entries.items():
            if name not in exported:
                problems.append(f"{module_name}: {name} was removed")
            elif exported[name] != signature:
                problems.append(f"{module_name}: {name} changed from\n    {signature}\n"
                                f"  to\n    {exported[name]}")
    assert not problems, (
        "ABI break: Cython extensions built against the pinned declarations no longer "
        "import. If intended, bump the version and run "
        "`python tests/test_cython_api.py --regenerate`.\n" + "\n".join(problems))


@pytest.mark.parametrize("function", ["predict_proba", "train_step", "train_epoch"])
def test_network_exports_float_and_double_versions(function):
    # Cython >= 3.3 names a specialisation by its fused arguments' types, in order:
    # X first, then the parameters'.
    exported = exported_signatures("mlp_cy.network")
    for c_type in ("float", "double"):
        prefix = f"{function}[const {c_type}[:, ::1],const {c_type}["
        assert any(name.startswith(prefix) for name in exported), (prefix, sorted(exported))


def _regenerate():
    pinned = {name: dict(sorted(exported_signatures(name).items()))
              for name in PUBLIC_MODULES}
    SIGNATURES.write_text(json.dumps(pinned, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {SIGNATURES} from {Path(mlp_cy.__file__).parent}: "
          + ", ".join(f"{name} {len(entries)}" for name, entries in pinned.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regenerate", action="store_true",
                        help=f"rewrite {SIGNATURES.name} from the installed mlp_cy")
    if parser.parse_args().regenerate:
        _regenerate()
    else:
        parser.print_help()
