"""lib.atomic: whole files or nothing, the umask's mode, leftovers of killed writes removed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from lib.atomic import PARTIAL, atomic_open, remove_partial


def test_the_file_appears_whole_with_the_umask_s_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "metrics.json") as f:
            f.write("{}\n")
            assert not (tmp_path / "metrics.json").exists()  # nothing until the block ends
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").read_text() == "{}\n"
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644  # readable by colleagues, not 0600
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_an_error_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    (tmp_path / "run.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "run.json", "wb") as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert (tmp_path / "run.json").read_text() == "old" and os.listdir(tmp_path) == ["run.json"]
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_a_killed_write_leaves_a_partial_file_that_remove_partial_deletes(tmp_path):
    # A writer killed between creating and renaming its temporary file (the fault hook's KILL at its first write).
    code = f"from lib.atomic import atomic_open\nwith atomic_open({str(tmp_path / 'checkpoint.pt')!r}, 'wb') as f:\n    f.write(b'x' * 1000)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)),
                          env={**os.environ, "HARNESS_FAULT": "1:KILL"})
    assert proc.returncode == -9
    (tmp_path / "keep.json").write_text("{}")
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(PARTIAL)]
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint.pt.")
    assert remove_partial(tmp_path) == leftovers
    assert os.listdir(tmp_path) == ["keep.json"] and remove_partial(tmp_path) == []


@pytest.mark.parametrize("fault, code", [("ENOSPC", 28), ("EACCES", 13)])
def test_the_fault_hook_fails_the_nth_write_half_way_and_keeps_the_old_file(tmp_path, monkeypatch, fault, code):
    import lib.atomic as atomic

    monkeypatch.setattr(atomic, "_writes", 0)
    monkeypatch.setenv(atomic.FAULT_ENV, f"2:{fault}")
    for text in ("one", "two", "three"):
        try:
            with atomic_open(tmp_path / "f") as f:
                f.write(text)
        except OSError as e:
            assert e.errno == code and text == "two" and e.filename == str(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "three" and os.listdir(tmp_path) == ["f"]
