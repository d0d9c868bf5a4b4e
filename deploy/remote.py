"""`fpgaslim deploy push/run --host user@board`: copy a bundle to a board and run it there.

Plain OpenSSH (`ssh`, `scp`) through `subprocess.run([...], check=True)`: no shell on this
side, and every remote argument is quoted with shlex (ssh joins its arguments into one remote
command line). The board needs `fpgaslim-board` on its PATH (fpgaslim installed there with
`pip install --no-deps`, next to numpy, pynq and finn-plus-driver).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from fpgaslim.core.errors import ConfigError, ToolMissingError


class Remote:
    """One board reachable over ssh; `ssh`/`scp` can name other clients (e.g. with -i KEY)."""

    def __init__(self, host: str, remote_dir: str = "fpgaslim-deploy",
                 ssh: Sequence[str] = ("ssh",), scp: Sequence[str] = ("scp",)) -> None:
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise ConfigError(f"--host {host!r}: give user@board (no spaces, no options)")
        self.host, self.dir = host, PurePosixPath(remote_dir)
        self.ssh, self.scp = list(ssh), list(scp)

    def commands_run(self, bundle_name: str, data_name: str, extra: Sequence[str]) -> list[str]:
        """The remote command line of `run`, as a list (quoted when joined)."""
        d = self.dir
        return ["fpgaslim-board", str(d / bundle_name), "--data", str(d / data_name),
                "--out", str(d / "result.json"), "--workdir", str(d / "unpacked"), *extra]

    def _ssh(self, *remote: str) -> None:
        self._call([*self.ssh, self.host, shlex.join(remote)])

    def _call(self, cmd: list[str]) -> None:
        try:
            subprocess.run(cmd, check=True)
        except FileNotFoundError as exc:
            raise ToolMissingError(f"{cmd[0]} not found: install OpenSSH client") from exc
        except subprocess.CalledProcessError as exc:
            raise ToolMissingError(f"`{shlex.join(cmd)}` failed with exit code "
                                   f"{exc.returncode}") from exc

    def push(self, *files: str | Path) -> list[str]:
        """Copy files into the remote folder; returns their remote paths."""
        self._ssh("mkdir", "-p", str(self.dir))
        self._call([*self.scp, *map(str, files), f"{self.host}:{self.dir}/"])
        return [str(self.dir / Path(f).name) for f in files]

    def run(self, bundle: str | Path, data: str | Path, out: str | Path,
            extra: Sequence[str] = ()) -> dict[str, Any]:
        """Push bundle and dataset, run the board runner there, fetch its JSON result."""
        bundle, data, out = Path(bundle), Path(data), Path(out)
        self.push(bundle, data)
        self._ssh(*self.commands_run(bundle.name, data.name, extra))
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "result.json"
            self._call([*self.scp, f"{self.host}:{self.dir / 'result.json'}", str(local)])
            result = json.loads(local.read_text(encoding="utf-8"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return result
