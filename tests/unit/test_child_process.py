"""The one process helper: the whole process group stops, and a child that never gets
ready is reported with the end of its log."""

import os
import sys
import time
from pathlib import Path

import pytest

from service.child_process import ChildProcess

# A child that starts a grandchild, writes its pid and waits: the process tree a server is.
PARENT_OF_SLEEPER = (
    "import subprocess, sys, pathlib; "
    "sleeper = subprocess.Popen(['sleep', '600']); "
    "pathlib.Path(sys.argv[1]).write_text(str(sleeper.pid)); "
    "sleeper.wait()"
)


def alive(pid: int) -> bool:
    """Running, not merely a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until_dead(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.mark.parametrize("ending", ["stop", "kill"])
def test_stop_and_kill_reach_the_grandchildren(tmp_path, ending):
    pid_file = tmp_path / "grandchild.pid"
    child = ChildProcess("parent", [sys.executable, "-c", PARENT_OF_SLEEPER, str(pid_file)])
    child.start(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=60, poll=0.05)
    grandchild = int(pid_file.read_text())
    assert child.running and alive(grandchild)
    assert os.getpgid(grandchild) == child.pid  # one group, led by the child

    getattr(child, ending)()

    assert not child.running
    assert wait_until_dead(grandchild)


def test_a_child_that_exits_early_is_reported_with_its_log(tmp_path):
    log = tmp_path / "child.log"
    say_and_fail = "import sys; print('port 1 is taken'); sys.exit(3)"
    child = ChildProcess("failing", [sys.executable, "-c", say_and_fail], log_path=log)
    with pytest.raises(RuntimeError, match=r"failing exited with 3(.|\n)*port 1 is taken"):
        child.start(lambda: False, timeout=60, poll=0.05)


def test_a_child_never_ready_is_stopped_and_reported(tmp_path):
    child = ChildProcess("sleeper", ["sleep", "600"], log_path=tmp_path / "sleeper.log")
    with pytest.raises(RuntimeError, match=r"sleeper not ready after 0\.5s"):
        child.start(lambda: False, timeout=0.5, poll=0.05)
    assert not child.running
