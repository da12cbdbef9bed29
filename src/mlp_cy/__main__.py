"""``python -m mlp_cy``: the ``mlp-cy`` command line (see :mod:`mlp_cy.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
