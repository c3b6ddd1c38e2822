"""Run the commands the documents tell users to run, so that documentation cannot drift from the code.

Every fenced ``bash`` and ``python`` block of a Markdown document is run, in order, in one fresh folder per
document (later blocks use what earlier ones wrote), with this interpreter's ``bin`` first on PATH (so
``keras-ucaps`` and ``python`` are the ones under test). HTML comments directly above a block adjust it:

- ``<!-- doc-test: not run: REASON -->``: not run; the reason is required (a GPU, a server, hours);
- ``<!-- doc-test: setup: COMMAND -->``: run COMMAND (bash) first, to provide the files the block assumes;
- ``<!-- doc-test: replace: OLD => NEW -->``: run the block with OLD replaced by NEW (a small-size variant).

A block fails the test when it exits non-zero, or when a replace directive does not match it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*doc-test:\s*(not run|setup|replace):\s*(.*?)\s*-->", re.S)


@dataclasses.dataclass
class Block:
    document: str
    line: int
    language: str
    code: str
    not_run: str | None = None
    setups: list = dataclasses.field(default_factory=list)
    replacements: list = dataclasses.field(default_factory=list)

    def runnable_code(self) -> str:
        code = self.code
        for old, new in self.replacements:
            if old not in code:
                raise AssertionError(f"{self.document}:{self.line}: replace {old!r} matches nothing")
            code = code.replace(old, new)
        return code


def blocks(path: Path) -> list[Block]:
    """The bash and python blocks of ``path``, with the directives in the comments right above each."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        language = match.group(1)
        if language not in ("bash", "python"):
            continue
        before = text[:match.start()]
        # the directives: the run of comment lines (and blank lines) immediately above the fence
        lines = before.rstrip("\n").split("\n")
        directives = []
        while lines and (lines[-1].strip().startswith("<!--") or not lines[-1].strip()):
            directives.insert(0, lines.pop())
        block = Block(path.name, before.count("\n") + 1, language, match.group(2))
        for kind, value in DIRECTIVE.findall("\n".join(directives)):
            if kind == "not run":
                block.not_run = value
            elif kind == "setup":
                block.setups.append(value)
            else:
                parts = re.split(r"\s+=>(?:\s+|$)", value, maxsplit=1)
                assert len(parts) == 2, f"{path.name}:{block.line}: replace needs 'OLD => NEW', got {value!r}"
                block.replacements.append((parts[0], parts[1]))
        found.append(block)
    return found


def run_document(path: Path, folder: Path, timeout: float = 900) -> list[str]:
    """Run every block of ``path`` in ``folder``; returns a line per block run or skipped."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    done = []
    for block in blocks(path):
        where = f"{block.document}:{block.line}"
        if block.not_run is not None:
            assert block.not_run.strip(), f"{where}: 'not run' needs a reason"
            done.append(f"{where} not run: {block.not_run}")
            continue
        for setup in block.setups:
            _run(["bash", "-euo", "pipefail", "-c", setup], folder, env, f"{where} (setup)", timeout)
        code = block.runnable_code()
        command = (["bash", "-euo", "pipefail", "-c", code] if block.language == "bash"
                   else [sys.executable, "-c", code])
        _run(command, folder, env, where, timeout)
        done.append(f"{where} ran")
    return done


def _run(command, folder, env, where, timeout):
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{where} exited {result.returncode}:\n{command[-1]}\n--- stdout\n"
                             f"{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
