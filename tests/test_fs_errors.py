"""lib.fs_errors and where it is used: a file-system fault is one line naming the path and what to do, never a traceback."""

from __future__ import annotations

import errno
import os

import pytest

from lib import fs_errors


def test_explain_names_the_path_the_cause_and_what_to_do():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/r/m/run/checkpoint.pt")
    assert fs_errors.explain(full) == ("/r/m/run/checkpoint.pt: No space left on device; "
                                       "the disk is full: free space, then 'make continue' resumes")
    moved = OSError(errno.EROFS, os.strerror(errno.EROFS), "/r/.a.partial", None, "/r/a")
    assert fs_errors.explain(moved).startswith("/r/.a.partial -> /r/a: Read-only file system; the file system is read-only")
    assert fs_errors.is_storage_fault(full) and not fs_errors.is_storage_fault(FileNotFoundError(errno.ENOENT, "x", "p"))
    assert not fs_errors.is_storage_fault(ValueError("no"))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC, errno.ENOTDIR])
def test_the_graphs_and_the_runner_say_one_line_for_an_unwritable_matrix(tmp_path, monkeypatch, capsys, code):
    from lib.results import write_json
    from scripts import graphs
    from scripts import matrix as runner

    mdir = tmp_path / "20260101-000000-x"
    write_json(mdir / "matrix.json", {"id": mdir.name, "runs": [], "config": {}})

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(mdir / "graphs"))

    monkeypatch.setattr(graphs.evidence, "load", refuse)
    assert graphs.main(["--results", str(mdir)]) == 2
    monkeypatch.setattr(runner, "remove_partial", refuse)
    monkeypatch.setattr(runner, "plan", lambda values, matrix_dir, overrides: [])
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / "no.config"))
    assert runner.main(["continue", "--results", str(mdir)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # one from each
    for line in lines:
        assert line == f"error: {fs_errors.explain(OSError(code, os.strerror(code), str(mdir / 'graphs')))}"


def test_make_on_a_full_disk_says_which_file_and_leaves_no_matrix_directory(tmp_path, monkeypatch, capsys):
    from lib import atomic
    from scripts import matrix as runner

    results = tmp_path / "results"
    (tmp_path / ".config").write_text("CONFIG_MODEL_LENET5=y\nCONFIG_OPTIMIZER_SGD=y\nCONFIG_PRUNING_NONE=y\n"
                                      f'CONFIG_RESULTS_DIR="{results}"\n')
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / ".config"))
    monkeypatch.setattr(atomic, "_writes", 0)
    monkeypatch.setenv(atomic.FAULT_ENV, "1:ENOSPC")  # matrix.json is the run's first file write
    assert runner.main(["run"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {results}/") and line.endswith("/matrix.json: No space left on device; "
                                                                  "the disk is full: free space, then 'make continue' resumes")
    assert not [p for p in results.iterdir() if p.is_dir()]
