"""Output locks (align_mamba.core.lock): where the lock lives, what the refusal says, what releases it."""

from __future__ import annotations

import os
import socket

import pytest

from align_mamba.core.errors import AlignMambaError
from align_mamba.core.lock import OutputLockedError, lock_path, output_lock


def test_lock_lives_beside_the_output_and_goes_away(tmp_path):
    out = tmp_path / "runs" / "cell"
    with output_lock(out) as path:
        assert path == tmp_path / "runs" / ".cell.lock" == lock_path(out)
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines())
        assert fields["pid"] == str(os.getpid()) and fields["host"] == socket.gethostname()
        assert not out.exists(), "taking the lock writes nothing into the output"
    assert not path.exists() and sorted(p.name for p in tmp_path.rglob("*")) == ["runs"]
    assert lock_path(tmp_path / "x" / ".." / "m.json") == tmp_path / ".m.json.lock"


def test_second_writer_gets_one_line_naming_the_holder(tmp_path):
    out = tmp_path / "metrics.json"
    with output_lock(out):
        with pytest.raises(OutputLockedError) as caught:
            with output_lock(out):  # flock belongs to the open file: a second open conflicts, even in-process
                pass
    message = str(caught.value)
    assert isinstance(caught.value, AlignMambaError) and "\n" not in message
    assert message.startswith(f"{out} is being written by pid {os.getpid()} on {socket.gethostname()} since ")
    assert message.endswith(f"(lock file {tmp_path / '.metrics.json.lock'}); wait for it or stop it")
    with output_lock(out):  # released on exit from the block
        pass


def test_a_stale_lock_file_of_a_dead_run_does_not_block(tmp_path):
    out = tmp_path / "data"
    lock_path(out).write_text("pid=999999\nhost=gone\nstarted=2020-01-01T00:00:00+00:00\n")
    with output_lock(out) as path:
        assert f"pid={os.getpid()}" in path.read_text()


def test_holder_not_yet_written_is_another_process(tmp_path):
    out = tmp_path / "o"
    with output_lock(out) as path:
        path.write_text("")  # the instant between the holder's flock and its record
        with pytest.raises(OutputLockedError, match=r"is being written by another process \(lock file"):
            with output_lock(out):
                pass
