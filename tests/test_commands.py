"""The job commands every shipped config prints (`snakemake -n -p --forceall`) are pinned: a refactor of the
package or the rules may not change what a single job would execute.

The pinned lists are in tests/fixtures/commands/<config>.txt.gz (sorted, the checkout's path written as <ROOT>).
After a change that is *meant* to alter the commands (a new spec key, a new flag), regenerate them with
``AOT_UPDATE_COMMANDS=1 python -m pytest tests/test_commands.py`` and review the diff in the commit.
"""

import difflib
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # starts Snakemake, torchrun or a cluster: not in the quick run (-m "not slow")

PINNED = ROOT / "tests/fixtures/commands"
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def printed_commands(config: Path) -> list[str]:
    """The sorted shell commands of every job a dry run of ``config`` schedules."""
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--configfile",
                        str(config.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    cmds = [line.removeprefix("Shell command: ").replace(str(ROOT), "<ROOT>")
            for line in r.stdout.splitlines() if line.startswith("Shell command: ")]
    assert cmds, "the dry run printed no job commands"
    return sorted(cmds)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_printed_job_commands_are_pinned(config):
    got = printed_commands(config)
    pinned = PINNED / f"{config.stem}.txt.gz"
    if os.environ.get("AOT_UPDATE_COMMANDS") == "1":
        PINNED.mkdir(parents=True, exist_ok=True)
        # mtime=0: the same bytes for the same commands
        pinned.write_bytes(gzip.compress("\n".join(got).encode() + b"\n", compresslevel=9, mtime=0))
    assert pinned.exists(), f"no pinned commands for {config.name}: run with AOT_UPDATE_COMMANDS=1"
    want = gzip.decompress(pinned.read_bytes()).decode().splitlines()
    if got != want:
        diff = "\n".join(list(difflib.unified_diff(want, got, "pinned", "now", lineterm="", n=0))[:40])
        pytest.fail(f"{config.name}: {len(got)} commands now, {len(want)} pinned; first differences:\n{diff}")
