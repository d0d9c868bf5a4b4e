"""One way to run a child process under a time limit: in its own session, output to a log, and
at the limit the whole process group killed (the child and whatever it started: FINN's
helpers, Yosys, a Verilator-built testbench). The estimate build, the verification run and the
second opinion's tools all run through it, so a time-out means the same thing everywhere."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path


def die_with_parent() -> None:
    """Linux: the child gets SIGKILL when the process that started it dies, so a killed sweep
    leaves no orphan build writing into a folder that the resumed sweep reuses."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the build folder lock in the sweep still serialises reuse


def run_logged(cmd: list[str], log: Path, timeout_s: float, *, env: Mapping[str, str] | None
               = None, cwd: Path | None = None, append: bool = False,
               tie_to_parent: bool = False) -> int:
    """Run `cmd` with stdout and stderr into `log`; return its exit code. Past `timeout_s` its
    process group is killed and `subprocess.TimeoutExpired` raised (callers say what timed
    out and what to do)."""
    with open(log, "a" if append else "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=None if env is None else dict(env), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent if tie_to_parent else None)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def kill_group(proc: subprocess.Popen) -> None:
    """Kill a child started with start_new_session=True, with everything it started."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


__all__ = ["die_with_parent", "kill_group", "run_logged"]
