"""How the format-version-1 model files here were made (kept for the record).

They were written by mlp_cy 0.1.0 at commit 9748dae, the last one that wrote format
version 1; run with that version, this script writes them again. Newer mlp_cy write
format version 2 and read both, which tests/test_persistence.py checks against the
predictions stored next to them in v1_expected.npz.
"""

import os
import warnings

import numpy as np

from mlp_cy import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))


def data(n_classes, seed):
    """90 rows of 5 features around ``n_classes`` centres; X is float64."""
    rng = np.random.RandomState(seed)
    y = np.arange(90) % n_classes
    centers = rng.normal(scale=3, size=(n_classes, 5))
    return centers[y] + rng.normal(size=(90, 5)), y


def main():
    expected = {}
    X3, y3 = data(3, seed=0)
    multiclass = MLPClassifier(hidden_layer_sizes=3, solver="adam", max_iter=20,
                               learning_rate_init=0.05, random_state=0)
    X2, y2 = data(2, seed=1)
    binary = MLPClassifier(hidden_layer_sizes=3, solver="sgd", momentum=0.9,
                           max_iter=20, learning_rate_init=0.05, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # ConvergenceWarning
        multiclass.fit(X3.astype(np.float32), y3)
        binary.fit(X2, np.array(["no", "yes"])[y2])
    for name, clf, X in (("v1_multiclass", multiclass, X3), ("v1_binary", binary, X2)):
        clf.save(os.path.join(HERE, f"{name}.npz"))
        expected[f"{name}_X"] = X
        expected[f"{name}_proba"] = clf.predict_proba(X)
        expected[f"{name}_predict"] = clf.predict(X)
    np.savez(os.path.join(HERE, "v1_expected.npz"), **expected)


if __name__ == "__main__":
    main()
