"""scikit-learn's own estimator checks (check_estimator, check by check), run on
mlp_cy.MLPClassifier and mlp_cy.MLPRegressor."""

import pytest
from conftest import importorskip

importorskip("sklearn", reason="scikit-learn is a test dependency")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlp_cy import MLPClassifier, MLPRegressor  # noqa: E402

# The checks' small fits stop at max_iter, which warns by design.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Each declared failure with its reason. None today: every check passes, including
# check_sample_weight_equivalence_on_dense_data, which scikit-learn's own MLPClassifier
# declares as failing.
EXPECTED_FAILED_CHECKS = {}


# The default constructors, as a user would write them: the defaults have to learn the
# checks' small problems. The classic network (sigmoid, plain SGD) passes them too,
# at a learning rate that suits plain SGD.
@parametrize_with_checks(
    [MLPClassifier(),
     MLPRegressor(),
     MLPClassifier(activation="logistic", solver="sgd", momentum=0.0, alpha=0.0,
                   learning_rate_init=0.1, max_iter=300, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
