"""README.md's Python examples run as written, and its commands are the real ones."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import importorskip, require_system_fashion_mnist

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _run_block(block, cwd, env=None):
    """Run one block as a script of its own: a fresh interpreter, no names left over
    from the blocks before it (only their files, in cwd)."""
    script = cwd / "block.py"
    script.write_text(block)
    # A home of its own: a block that downloads or caches writes under cwd, never into
    # the real ~/.cache; MLP_CY_DATA unset, as on a newcomer's machine.
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    isolated = {k: v for k, v in os.environ.items() if k != "MLP_CY_DATA"}
    isolated.update(HOME=str(home), USERPROFILE=str(home),
                    XDG_CACHE_HOME=str(home / ".cache"))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=cwd, timeout=900, env={**isolated, **(env or {})})
    assert result.returncode == 0, f"{block}\n{result.stderr}"
    return result.stdout


def _is_dask(block):
    return "dask" in block


def test_python_examples_run_as_written(tmp_path):
    # Each ```python block runs as it stands, in the order shown.
    require_system_fashion_mnist()
    blocks = [b for b in _blocks("python") if not _is_dask(b)]
    assert len(blocks) >= 2
    outputs = [_run_block(block, tmp_path) for block in blocks]
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", outputs[0]).group(1))
    assert accuracy >= 0.85
    assert (tmp_path / "fashion.npz").exists()


def test_dask_example_runs_against_a_cluster(tmp_path):
    # The Dask block, against a local cluster whose address it reads from
    # DASK_SCHEDULER, as it would read a real scheduler's.
    require_system_fashion_mnist()
    for module in ("dask", "distributed", "dask_ml", "sklearn"):
        importorskip(module, reason="install the 'dask' extra")
    from distributed import LocalCluster

    [block] = [b for b in _blocks("python") if _is_dask(b)]
    assert 'os.environ.get("DASK_SCHEDULER")' in block
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        out = _run_block(block, tmp_path, env={"DASK_SCHEDULER": cluster.scheduler_address})
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy > 0.8
    assert "hidden_layer_sizes" in out


def test_install_commands_work_from_a_clone():
    # mlp_cy is installed from its source tree, not from a package index: extras are
    # asked for as '.[extra]'; and python3-venv is named before `python3 -m venv`.
    text = README.read_text()
    assert not re.search(r"pip install ['\"]?mlp_cy", text)
    for extra in re.findall(r"pip install '\.\[([a-z,]+)\]'", text):
        assert set(extra.split(",")) <= set(_extras()), extra
    assert text.index("python3-venv") < text.index("python3 -m venv")
    first = _blocks("bash")[0]
    assert "python3-venv" in first.split("python3 -m venv")[0]


def _extras():
    pyproject = (README.parent / "pyproject.toml").read_text()
    table = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return re.findall(r"^([a-z]+) = ", table, flags=re.M)


def test_no_unexplained_jargon():
    # "the seed's network" meant nothing to a newcomer: the textbook network is named.
    text = README.read_text()
    assert "seed's" not in text and "textbook" in text


def _commands(text):
    """The shell commands of text as argument lists, a line split at && and ;:
    comments and blank lines left out, leading VAR=value assignments dropped."""
    import shlex

    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            end = next((i for i, w in enumerate(words) if w in ("&&", ";")), len(words))
            command, words = words[:end], words[end + 1:]
            while command and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", command[0]):
                command.pop(0)
            if command:
                commands.append(command)
    return commands


def test_test_command_is_the_one_ci_runs():
    # A real command on a line of its own in both, not a mention or a comment; .ci/run
    # may add report options (-rs).
    readme = _commands("\n".join(_blocks("bash")))
    assert ["python", "-m", "pytest", "tests"] in readme
    ci = _commands((README.parent / ".ci" / "run").read_text())
    without_report_options = [[w for w in c if not w.startswith("-r")] for c in ci]
    assert ["python", "-m", "pytest", "tests"] in without_report_options


def test_commands_skip_comments_and_mentions():
    assert _commands("# python -m pytest tests\necho 'python -m pytest tests'") == \
        [["echo", "python -m pytest tests"]]
    assert _commands("A=1 B=2 python -m pytest tests  # note") == \
        [["python", "-m", "pytest", "tests"]]
    assert _commands("pip install . && python -m pytest tests") == \
        [["pip", "install", "."], ["python", "-m", "pytest", "tests"]]


def test_cython_example_is_the_one_tested_in_docs():
    # tests/test_cython_api.py builds and runs docs/cython-api.md's example against
    # the installed package; the README must show exactly that code.
    doc = (README.parent / "docs" / "cython-api.md").read_text()
    doc_cython = re.findall(r"```cython\n(.*?)```", doc, flags=re.S)
    usage = doc[doc.index("Used from Python, it gives what the estimator gives:"):]
    doc_usage = re.findall(r"```python\n(.*?)```", usage, flags=re.S)[0]
    assert _blocks("cython") == doc_cython[:1]
    assert doc_usage in _blocks("py")
