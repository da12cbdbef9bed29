"""README.md's Python examples run as written, and its commands are the real ones."""

import re
from pathlib import Path

from conftest import require_system_fashion_mnist

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_examples_run_as_written(tmp_path, monkeypatch, capsys):
    require_system_fashion_mnist()
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


def test_cython_example_is_the_one_tested_in_docs():
    # tests/test_cython_api.py builds and runs docs/cython-api.md's example against
    # the installed package; the README must show exactly that code.
    doc = (README.parent / "docs" / "cython-api.md").read_text()
    doc_cython = re.findall(r"```cython\n(.*?)```", doc, flags=re.S)
    usage = doc[doc.index("Used from Python, it gives what the estimator gives:"):]
    doc_usage = re.findall(r"```python\n(.*?)```", usage, flags=re.S)[0]
    assert _blocks("cython") == doc_cython[:1]
    assert doc_usage in _blocks("py")
