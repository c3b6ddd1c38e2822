"""The fault sweep: bad-input and fault cases generated for every command, and the contract each must meet.

Cases come from the command registry (``keras_ucaps.cli.main.commands``). Each command has one working call
(:data:`BASE`, the only hand-written part; a command without one, or a path parameter neither in it nor in
:data:`NOT_SWEPT` with a reason, fails ``tests/test_fault_sweep.py``), and each case changes one thing in it,
chosen by the parameter's type:

- an output path (a value under ``{out}``): an existing file, a folder, a symbolic link to a file, a dangling
  link, a device (``/dev/null``), a path under a file, a folder on a full disk (a 64 KiB tmpfs, where this
  machine lets us mount one);
- an input path (a value under ``{ws}``): truncated to half (for a folder: its largest file), empty, of the wrong
  kind (another input's bytes), another command's output, missing, a folder in a file's place;
- a number option: 0, -1, a huge value, nan, inf (each of its values alike).

The contract: exit 0 with every output of the call present and a regular file or a non-empty folder, or exit 2
with one line on stderr naming an option or a path of the call, and the output folder exactly as before (names,
sizes, modes). No other exit, no traceback. The workspace's inputs are never changed. A case still running at
its time limit has accepted its input (``fit --epochs 1000000000000`` is a long run, not a fault): it is counted
apart, not as a failure.

``python benchmarks/fault_sweep.py`` runs every case; ``tests/test_fault_sweep.py`` a seeded sample.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shlex
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click

# One working call per command; {ws} is the workspace of inputs (make_workspace), {out} the output folder.
BASE = {
    "classes": "classes big=120 small=45 --out {out}/classes.json",
    "convert": "convert {ws}/sim/tomo_00_particles.csv {out}/picks.star --to relion4 --voxel-size 10 "
               "--classes {ws}/sim/classes.json --tomogram {ws}/sim/tomo_00.mrc",
    "evaluate": "evaluate {ws}/sim/tomo_00_particles.csv {ws}/picks.csv --classes {ws}/sim/classes.json "
                "--voxel-size 10 --json {out}/scores.json --report {out}/report.png --false-picks {out}/false.star",
    "export": "export {ws}/run --base {out}/served --name tiny",
    "fit": "fit --model unet --data {ws}/store.h5 --out {out}/run --epochs 1 --steps-per-epoch 1 "
           "--validation-steps 1 --batch-size 2 --filters 4,6,8",
    "patches": "patches --tomogram {ws}/sim/tomo_00.mrc --tomogram {ws}/sim/tomo_01.mrc "
               "--particles {ws}/sim/tomo_00_particles.csv --particles {ws}/sim/tomo_01_particles.csv "
               "--classes {ws}/sim/classes.json --out {out}/p.h5 --patch-size 32",
    "pick": "pick {ws}/maps/tomo_00_labels.mrc --out {out}/picks.csv",
    "predict": "predict {ws}/run {ws}/sim/tomo_00.mrc --out {out}/maps",
    "show": "show {ws}/sim/tomo_00.mrc --picks {ws}/sim/tomo_00_particles.csv --out {out}/slices.png",
    "simulate": "simulate --shape 32 64 64 --out {out}/sim --seed 1 --particles 6",
    "targets": "targets {ws}/sim/tomo_00_particles.csv --tomogram {ws}/sim/tomo_00.mrc "
               "--classes {ws}/sim/classes.json --out {out}/labels.mrc",
}
# Path parameters the sweep does not vary, and why.
NOT_SWEPT = {
    ("convert", "--tomograms-star"): "a RELION 5 tomograms.star; its faults are tests/test_formats.py's",
    ("evaluate", "--truth-labels"): "an alternative truth; the call scores tables",
    ("evaluate", "--predictions"): "probability maps for the report; the call scores tables",
    ("evaluate", "--tomogram"): "a density weight for --model; the call scores tables",
    ("evaluate", "--model"): "threshold tuning; tests/test_pick_evaluate.py",
    ("patches", "--labels"): "label maps in place of spheres; tests/test_patches.py",
    ("patches", "--simulation"): "another way to name the same inputs",
    ("patches", "--negatives"): "tests/test_patches.py",
    ("patches", "--copick"): "a copick project; tests/test_copick_project.py",
    ("pick", "--classes"): "read from beside the maps in the call",
    ("pick", "--thresholds"): "read from beside the maps in the call",
    ("pick", "--tomogram"): "a density weight; tests/test_pick_evaluate.py",
    ("pick", "--maps"): "with --model only",
    ("pick", "--copick"): "a copick project; tests/test_copick_project.py",
    ("predict", "--pick"): "tests/test_contract.py",
    ("predict", "--copick"): "a copick project; tests/test_copick_project.py",
    ("show", "--classes"): "read from beside the tomogram in the call",
}
OUTPUT_FAULTS = ("an existing file", "a folder", "a link to a file", "a dangling link", "a device", "under a file",
                 "a full disk")
INPUT_FAULTS = ("truncated", "empty", "of the wrong kind", "another command's output", "missing",
                "a folder in its place")
NUMBER_VALUES = ("0", "-1", "huge", "nan", "inf")


@dataclasses.dataclass(frozen=True)
class Case:
    command: str
    target: str  # the option or argument changed
    fault: str

    @property
    def name(self) -> str:
        return f"{self.command} {self.target} {self.fault}"


@dataclasses.dataclass
class Outcome:
    case: Case
    verdict: str  # "ok (exit 0)", "ok (exit 2)", "accepted (time limit)", or what broke the contract
    detail: str = ""

    @property
    def failed(self) -> bool:
        return not (self.verdict.startswith("ok") or self.verdict.startswith("accepted"))


def _numeric(param: click.Parameter) -> bool:
    return isinstance(param, click.Option) and isinstance(param.type, (click.types.FloatParamType,
                                                                       click.types.IntParamType))


def _path_tokens(command: str) -> dict[str, list[int]]:
    """The path tokens of the command's working call (indices into its tokens, the command's name first), by the
    option or argument they belong to (``NAME[k]`` for the k-th value of an argument that takes several)."""
    tokens = shlex.split(BASE[command])
    params = _command(command).params
    arguments = [p for p in params if isinstance(p, click.Argument)]
    options = {opt: p for p in params if isinstance(p, click.Option) for opt in p.opts}
    found: dict[str, list[int]] = {}
    position, i = 0, 1
    while i < len(tokens):
        token = tokens[i]
        if token in options:
            option = options[token]
            count = 0 if option.is_flag else option.nargs
            for j in range(i + 1, i + 1 + count):
                if "{out}" in tokens[j] or "{ws}" in tokens[j]:
                    found.setdefault(token, []).append(j)
            i += 1 + count
            continue
        argument = arguments[min(position, len(arguments) - 1)]
        name = argument.name if argument.nargs == 1 else f"{argument.name}[{position - arguments.index(argument)}]"
        position += 1
        if "{out}" in token or "{ws}" in token:
            found.setdefault(name, []).append(i)
        i += 1
    return found


def _command(name: str) -> click.Command:
    from keras_ucaps.cli import main

    return main.commands[name]


def cases(full_disk: bool = True) -> list[Case]:
    """Every case, in a fixed order."""
    from keras_ucaps.cli import main

    out = []
    for name in sorted(main.commands):
        tokens = shlex.split(BASE[name])
        for target, indices in _path_tokens(name).items():
            for fault in OUTPUT_FAULTS if "{out}" in tokens[indices[0]] else INPUT_FAULTS:
                if fault == "a full disk" and not full_disk:
                    continue
                out.append(Case(name, target, fault))
        for param in main.commands[name].params:
            if _numeric(param):
                out += [Case(name, param.opts[0], value) for value in NUMBER_VALUES]
    return out


def sample(n: int, seed: int, full_disk: bool = True) -> list[Case]:
    """``n`` cases drawn at random with ``seed`` (every command at least once when ``n`` allows)."""
    every = cases(full_disk)
    rng = random.Random(seed)
    by_command: dict[str, list[Case]] = {}
    for case in every:
        by_command.setdefault(case.command, []).append(case)
    chosen = [rng.choice(group) for group in by_command.values()][:n]
    rest = [c for c in every if c not in chosen]
    return chosen + rng.sample(rest, max(0, n - len(chosen)))


def make_workspace(ws: Path) -> Path:
    """The inputs every working call reads: a small simulation, a patch store, a tiny trained run, its maps and
    picks, and their scores (made once; a workspace that holds them all is kept)."""
    from click.testing import CliRunner

    from keras_ucaps.cli import main

    ws = Path(ws)
    if (ws / "done").is_file():
        return ws
    ws.mkdir(parents=True, exist_ok=True)
    steps = [
        f"simulate --size small --count 2 --seed 5 --occupancy 0.05 --out {ws}/sim",
        f"patches --simulation {ws}/sim --out {ws}/store.h5 --patch-size 32",
        f"fit --model unet --data {ws}/store.h5 --out {ws}/run --epochs 1 --steps-per-epoch 2 --validation-steps 1 "
        "--batch-size 2 --filters 4,6,8",
        f"predict {ws}/run {ws}/sim/tomo_00.mrc --out {ws}/maps",
        f"pick {ws}/maps/tomo_00_labels.mrc --out {ws}/picks.csv",
        f"evaluate {ws}/sim/tomo_00_particles.csv {ws}/picks.csv --voxel-size 10 --classes {ws}/sim/classes.json "
        f"--json {ws}/scores.json",
    ]
    for step in steps:
        result = CliRunner().invoke(main, shlex.split(step))
        if result.exit_code != 0:
            raise RuntimeError(f"workspace step failed: {step}\n{result.output}\n{result.exception}")
    (ws / "done").write_text("")
    return ws


def listing(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: kind, size and mode (links as links, not followed)."""
    out = {}
    if not folder.exists():
        return out
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            kind = "link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode) else "file"
            out[str(path.relative_to(folder))] = (kind, info.st_size if kind == "file" else 0,
                                                  stat.S_IMODE(info.st_mode))
    return out


@contextlib.contextmanager
def full_disk() -> Iterator[Path | None]:
    """A 64 KiB tmpfs of this process's own (None where mounting is not allowed)."""
    import tempfile

    mount = Path(tempfile.mkdtemp(prefix="keras-ucaps-full-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    try:
        yield mount if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def _fill(path: Path) -> None:
    """Take every free block of the disk ``path`` lies on: the next write fails with ENOSPC, however small."""
    import errno

    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):  # big writes first, then the last bytes of a partial block
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as err:
                if err.errno != errno.ENOSPC:
                    raise


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("kept\n")
    (out / "adir").mkdir()
    (out / "a_link").symlink_to(out / "keep.txt")
    (out / "dangling").symlink_to(out / "nowhere")


def _output_value(fault: str, token: str, out: Path, disk: Path | None) -> str:
    name = Path(token).name
    return {
        "an existing file": str(out / "keep.txt"),
        "a folder": str(out / "adir"),
        "a link to a file": str(out / "a_link"),
        "a dangling link": str(out / "dangling"),
        "a device": "/dev/null",
        "under a file": str(out / "keep.txt" / name),
        "a full disk": str((disk or out) / "full" / name),
    }[fault]


# Bytes of the wrong kind for an input of each suffix, and another command's output in its place.
def _wrong(ws: Path, suffix: str) -> Path:
    return ws / ("sim/tomo_00_particles.csv" if suffix in (".mrc", ".h5", ".json", "") else "sim/tomo_00.mrc")


def _foreign(ws: Path, suffix: str) -> Path:
    return ws / {".mrc": "scores.json", ".csv": "sim/classes.json", ".h5": "run/weights_best.keras",
                 ".json": "picks.csv", "": "store.h5"}.get(suffix, "store.h5")


def _input_value(fault: str, token: str, ws: Path, bad: Path) -> str:
    source = Path(token)
    bad.mkdir(parents=True, exist_ok=True)
    target = bad / source.name
    if target.is_symlink():  # a sibling an earlier input of the same call linked here: never write through it
        target.unlink()
    if fault == "missing":
        return str(bad / ("missing_" + source.name))
    if fault == "a folder in its place":
        if source.is_dir():
            target.write_text("a file where a folder should be\n")
        else:
            target.mkdir()
        return str(target)
    if source.is_dir():  # a run or maps folder: fault its largest file
        shutil.copytree(source, target, symlinks=True)
        files = sorted((p for p in target.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        _write_fault(fault, files[-1], files[-1].read_bytes(), ws)
        return str(target)
    _write_fault(fault, target, source.read_bytes(), ws)
    # files read beside the input (classes.json, probability maps) come along, so only the input is at fault
    for sibling in source.parent.iterdir():
        if sibling.is_file() and sibling.name != source.name and not (bad / sibling.name).exists():
            os.symlink(sibling, bad / sibling.name)
    return str(target)


def _write_fault(fault: str, path: Path, data: bytes, ws: Path) -> None:
    """Write ``fault`` of an input whose good bytes are ``data`` to ``path``."""
    if fault == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif fault == "empty":
        path.write_bytes(b"")
    elif fault == "of the wrong kind":
        path.write_bytes(_wrong(ws, path.suffix).read_bytes())
    else:
        path.write_bytes(_foreign(ws, path.suffix).read_bytes())


def _huge(param: click.Parameter) -> str:
    return "1000000000000" if isinstance(param.type, click.types.IntParamType) else "1e30"


class _TimeLimit(Exception):
    pass


def run_case(case: Case, ws: Path, folder: Path, limit_s: float = 60.0, disk: Path | None = None) -> Outcome:
    """Run one case in this process (click's runner) in ``folder`` and judge it by the contract."""
    from click.testing import CliRunner

    from keras_ucaps.cli import main

    out = folder / "out"
    _prepare_out(out)
    if disk is not None and case.fault == "a full disk":
        for entry in disk.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        (disk / "full").mkdir()
        (disk / "full" / "keep.txt").write_text("kept\n")
        _fill(disk / "full" / "filler")
    tokens = shlex.split(BASE[case.command])
    targets = _path_tokens(case.command).get(case.target, [])
    args, outputs = [], []
    for i, token in enumerate(tokens):
        value = token.replace("{ws}", str(ws)).replace("{out}", str(out))
        if i in targets and case.fault in OUTPUT_FAULTS:
            value = _output_value(case.fault, token, out, disk)
        elif i in targets and case.fault in INPUT_FAULTS:
            value = _input_value(case.fault, value, ws, folder / "bad")
        if "{out}" in token:
            outputs.append(Path(value))
        args.append(value)
    if case.fault in NUMBER_VALUES:
        param = next(p for p in _command(case.command).params if p.opts and p.opts[0] == case.target)
        value = _huge(param) if case.fault == "huge" else case.fault
        args += [case.target, *[value] * param.nargs]
    watched = [out] + ([disk / "full"] if disk is not None and case.fault == "a full disk" else [])
    before = {str(w): listing(w) for w in watched}

    def alarm(signum, frame):
        raise _TimeLimit()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=True)
    except _TimeLimit:
        return Outcome(case, "accepted (time limit)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if isinstance(result.exception, _TimeLimit):
        return Outcome(case, "accepted (time limit)")
    stderr = result.stderr.strip()
    call = " ".join(args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        where = traceback.extract_tb(result.exc_info[2])[-1] if result.exc_info else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        return Outcome(case, "traceback", f"{type(result.exception).__name__}: {result.exception}{at} | {call}")
    if result.exit_code == 2:
        lines = stderr.splitlines()
        if len(lines) != 1:
            return Outcome(case, "not one line", f"{stderr[-400:]} | {call}")
        named = [a for a in args if a.startswith("--")] + [a for a in args if "/" in a] + [
            Path(a).name for a in args if "/" in a] + [p.human_readable_name for p in _command(case.command).params]
        if not any(n and n in lines[0] for n in named):
            return Outcome(case, "names nothing", f"{lines[0]} | {call}")
        after = {str(w): listing(w) for w in watched}
        if after != before:
            changed_entries = {k: (before[k].keys() ^ after[k].keys()) or "sizes or modes" for k in before
                               if before[k] != after[k]}
            return Outcome(case, "output folder changed on exit 2", f"{changed_entries} | {call}")
        return Outcome(case, "ok (exit 2)", lines[0])
    if result.exit_code != 0:
        return Outcome(case, f"exit {result.exit_code}", f"{stderr[-400:]} | {call}")
    for path in outputs:
        if path.is_char_device() or path.is_block_device():
            return Outcome(case, "exit 0 onto a device", call)
        if not path.exists() or (path.is_dir() and not any(path.iterdir())) or (
                path.is_file() and path.stat().st_size == 0):
            return Outcome(case, "exit 0 without its output", f"{path} | {call}")
    scratch = [k for k in listing(out) if Path(k).name.startswith(".keras-ucaps-")]
    if scratch:
        return Outcome(case, "exit 0 with scratch left", f"{scratch} | {call}")
    return Outcome(case, "ok (exit 0)")


# --- Kill tests: a command killed (SIGKILL) at a random moment leaves the previous result intact or the new one
# complete, and the next run works. ---

KILL_CALLS = {
    "fit": "fit --model unet --data {ws}/store.h5 --out {out}/run --epochs 3 --steps-per-epoch 2 "
           "--validation-steps 1 --batch-size 2 --filters 4,6,8",
    "predict": BASE["predict"],
    "pick": BASE["pick"],
    "convert --to copick": "convert {ws}/sim/tomo_00_particles.csv {out}/project --to copick --voxel-size 10",
    "export": BASE["export"],
}


def _valid(command: str, out: Path) -> str | None:
    """What is wrong with ``command``'s result in ``out`` (None: absent or complete)."""
    from keras_ucaps.io import read_particles, read_volume

    try:
        if command == "predict":
            maps = out / "maps"
            if not (maps / "tomo_00_labels.mrc").exists():
                return "prob maps without a label map" if list(maps.glob("*_prob_*.mrc")) else None
            shapes = {read_volume(p).shape for p in maps.glob("tomo_00_*.mrc")}
            classes = (maps / "classes.json").read_text()
            return None if len(shapes) == 1 and classes else f"maps of shapes {shapes}"
        if command == "pick":
            if (out / "picks.csv").exists():
                read_particles(out / "picks.csv")
            return None
        if command == "convert --to copick":
            if (out / "project").exists():
                from keras_ucaps.io import FormatContext

                read_particles(out / "project", "copick", FormatContext(voxel_size=10.0))
            return None
        if command == "export":
            for version in (out / "served" / "tiny").glob("[0-9]*"):
                variables = version / "variables" / "variables.index"
                if not ((version / "saved_model.pb").is_file() and variables.is_file()):
                    return f"{version} is incomplete"
            return None
        if command == "fit":
            return None  # the rerun says it
    except Exception as err:  # noqa: BLE001 - any unreadable result is the finding
        return f"{type(err).__name__}: {err}"
    return None


def _call(command: str, ws: Path, out: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "keras_ucaps", *shlex.split(
        KILL_CALLS[command].replace("{ws}", str(ws)).replace("{out}", str(out)))]


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")} if out.exists() else {}


def run_kill(command: str, ws: Path, folder: Path, fraction: float) -> Outcome:
    """Kill ``command`` after ``fraction`` of its measured duration (a previous result in place, except for fit,
    which is killed in its first run), then check its outputs and run it again."""
    import time

    case = Case(command, "killed", f"at {fraction:.0%} of its run")
    out = folder / "out"
    out.mkdir(parents=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    if command != "fit":
        first = subprocess.run(_call(command, ws, out), capture_output=True, text=True, env=env)
        if first.returncode != 0:
            return Outcome(case, "the working call failed", first.stderr[-400:])
    duration = time.perf_counter() - start
    previous = _snapshot(out)
    process = subprocess.Popen(_call(command, ws, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        process.wait(timeout=max(0.2, fraction * (duration if command != "fit" else 25.0)))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    problem = _valid(command, out)
    if problem:
        return Outcome(case, "a killed run left a broken result", problem)
    now = _snapshot(out)
    if command in ("predict", "pick"):
        kept = {k: v for k, v in now.items() if k in previous}
        if kept != previous and any(now.get(k) == v for k, v in previous.items()) and problem is None:
            # some files of the old result beside others of the new: a mixed result
            labels = [k for k in previous if k.endswith("labels.mrc") or k.endswith(".csv")]
            if any(now.get(k) != previous[k] for k in labels) and any(now.get(k) == previous[k] for k in previous
                                                                      if k not in labels and "prob" in k):
                return Outcome(case, "a killed run mixed old and new files", str(sorted(now)))
    again = _call(command, ws, out)
    if command == "fit" and (out / "run" / "config.json").exists():
        again.append("--resume")
    rerun = subprocess.run(again, capture_output=True, text=True, env=env)
    if rerun.returncode != 0:
        return Outcome(case, "the next run failed", rerun.stderr[-400:])
    problem = _valid(command, out)
    if problem:
        return Outcome(case, "the next run left a broken result", problem)
    return Outcome(case, "ok (killed, then ran again)")
