"""The whole fault sweep: every generated bad-input and fault case of every command, judged by the contract.

    python benchmarks/fault_sweep.py [--work DIR] [--limit 60] [--only COMMAND] [--json OUT.json]

Cases and contract: tests/fault_sweep.py (generated from the command registry: output paths, input files and
number options of each command's working call). Prints the count of cases per command and verdict, and every
case that broke the contract; tests/test_fault_sweep.py runs a seeded sample of the same cases in CI.
"""

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fault_sweep  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="Workspace (kept and reused; default temporary)")
    parser.add_argument("--limit", type=float, default=60.0, help="Seconds a case may run (then: accepted)")
    parser.add_argument("--only", default=None, help="One command's cases")
    parser.add_argument("--json", type=Path, default=None, help="Write every case's verdict here")
    parser.add_argument("--kills", type=int, default=5, help="Kill points per command (SIGKILL at 10-90 %% of a run)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fault-sweep-"))
    start = time.perf_counter()
    ws = fault_sweep.make_workspace(work / "ws")
    inputs = fault_sweep.listing(ws)
    outcomes = []
    for name in sorted(fault_sweep.BASE):  # every case changes a working call: each must work as it is
        works = fault_sweep.run_case(fault_sweep.Case(name, "", "unchanged"), ws, Path(tempfile.mkdtemp(dir=work)),
                                     300.0)
        if works.verdict != "ok (exit 0)":
            raise SystemExit(f"the working call of {name} does not work: {works.verdict} {works.detail}")
    with fault_sweep.full_disk() as disk:
        cases = [c for c in fault_sweep.cases(full_disk=disk is not None) if args.only in (None, c.command)]
        for i, case in enumerate(cases):
            outcome = fault_sweep.run_case(case, ws, Path(tempfile.mkdtemp(dir=work)), args.limit, disk)
            outcomes.append(outcome)
            mark = "FAIL" if outcome.failed else "ok"
            print(f"[{i + 1}/{len(cases)}] {mark} {case.name}: {outcome.verdict} {outcome.detail[:300]}", flush=True)
    kills = [(command, (k + 0.5) / args.kills) for command in fault_sweep.KILL_CALLS for k in range(args.kills)
             if args.only in (None, command.split()[0])]
    for i, (command, fraction) in enumerate(kills):
        outcome = fault_sweep.run_kill(command, ws, Path(tempfile.mkdtemp(dir=work)), fraction)
        outcomes.append(outcome)
        mark = "FAIL" if outcome.failed else "ok"
        print(f"[kill {i + 1}/{len(kills)}] {mark} {outcome.case.name}: {outcome.verdict} {outcome.detail[:300]}",
              flush=True)
    changed = fault_sweep.listing(ws) != inputs
    if changed:  # every verdict after the change is in doubt
        print("FAIL: the workspace's inputs changed")
    verdicts = Counter(o.verdict for o in outcomes)
    failed = [o for o in outcomes if o.failed]
    print(f"\n{len(outcomes)} cases, {len(failed)} broke the contract; {time.perf_counter() - start:.0f} s; "
          f"full disk {'injected' if disk is not None else 'not available (no tmpfs mount)'}")
    for verdict, n in sorted(verdicts.items()):
        print(f"  {verdict}: {n}")
    per_command = Counter(o.case.command for o in outcomes)
    print("per command: " + ", ".join(f"{c} {n}" for c, n in sorted(per_command.items())))
    for o in failed:
        print(f"FAILED {o.case.name}: {o.verdict}: {o.detail}")
    if args.json:
        args.json.write_text(json.dumps([{"case": o.case.name, "verdict": o.verdict, "detail": o.detail}
                                         for o in outcomes], indent=1))
    return 1 if failed or changed else 0


if __name__ == "__main__":
    sys.exit(main())
