"""The package's one atomic writer (xsmom.files)."""

import os

import pytest
from xsmom.files import atomic_write


def test_bytes_text_and_writer_functions_replace_the_file_and_keep_its_mode(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    atomic_write(path, "first")
    assert path.read_text() == "first"
    os.chmod(path, 0o600)
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second" and path.stat().st_mode & 0o777 == 0o600
    atomic_write(path, lambda temp: temp.write_text("third"))
    assert path.read_text() == "third" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"], "no temp file left"


def test_a_new_file_gets_the_umask_default_mode(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o640


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")

    def half_then_fail(temp):
        temp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
