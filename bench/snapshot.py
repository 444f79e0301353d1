"""`--commit REV` of `make bench` and `make chaos`: the same command run from a `git archive`
of a commit, so a before/after pair is measured on the same machine in the same hour, and edits
made to the working tree during a run (a restarted role imports the code afresh) cannot change
what is measured. The snapshot runs with this checkout's Python and virtualenv."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import tempfile

from tests.support.process import ROOT

# Set in a run from `--commit`: the commit it is (named when only `make chaos` had `--commit`;
# snapshots of older commits read it under this name).
SNAPSHOT_OF = "NOTIFI_CHAOS_SNAPSHOT_OF"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def snapshot_of() -> str | None:
    """The commit this run is a snapshot of (None: the working tree)."""
    return os.environ.get(SNAPSHOT_OF)


def without_commit(argv: list[str]) -> list[str]:
    """`argv` less its `--commit REV` or `--commit=REV`."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--commit="):
            skip = False
            continue
        if arg == "--commit":
            skip = True
            continue
        out.append(arg)
    return out


def run_snapshot(module: str, rev: str, argv: list[str]) -> int:
    """Exports `rev` with `git archive` and runs `python -m module argv` from there (argv
    without `--commit`); its exit status."""
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not sha:
        print(f"--commit: no commit {rev!r}", file=sys.stderr)
        return 2
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True)
    with tempfile.TemporaryDirectory(prefix="notifi-snapshot-") as src:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(src, filter="data")
        child = subprocess.Popen(
            [sys.executable, "-m", module, *without_commit(argv)],
            cwd=src,
            env={**os.environ, SNAPSHOT_OF: sha},
        )
        # A SIGTERM for us is one for the run, which then stops what it started.
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        try:
            return child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the child too; let it clean up
            return child.wait()
