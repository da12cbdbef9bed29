"""README.md's Python examples run as written, and its commands are the real ones."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_examples_run_as_written(tmp_path, monkeypatch, capsys):
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.fail("the README's example needs Debian's dataset-fashion-mnist "
                    "(.ci/run installs it)")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy >= 0.85
    assert (tmp_path / "fashion.npz").exists()


def test_test_command_is_the_one_ci_runs():
    bash = "\n".join(_blocks("bash"))
    assert "python -m pytest tests" in bash
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest tests" in ci
