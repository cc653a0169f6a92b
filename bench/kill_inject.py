"""Whole-run fault test: SIGKILL `run_all.sh` at random moments, restart it, compare the submission.

    python bench/kill_inject.py CONFIG N [--set key=value ...] [--seed S] [--workdir DIR]

Shows that a run killed N times (the whole process group, SIGKILL: no handler, no clean-up) and
restarted each time finishes with a submission byte-identical to an uninterrupted run's: stage
caching, partial folders, checkpoints and locks recover from a hard kill at any point.

1. `run_all.sh CONFIG --set experiment.artifacts=DIR/ref` once, uninterrupted (the reference;
   reused when DIR already holds a finished one and no DIR/fault).
2. Into DIR/fault: start run_all.sh in its own process group, SIGKILL the group after
   uniform(0.05, 1) x the time the reference took for what is left (its pipeline time less the
   stages already finished in DIR/fault), shared among the kills still to come and the finish (seeded by
   --seed), so that the kills spread over the run, land in different stages, and each lands
   before the restart ends; wait until every process of the group is gone (so no stage lock is
   still held), restart; after N kills let it finish.
3. Compare `<artifacts>/<experiment>/submit-<key>/submission.csv` of both runs byte for byte.

Exit 0 only if identical and the final run exited 0; 1 if a restart failed on its own (its log's
tail is printed). Both runs also write submissions/<experiment>-cv<score>.csv under the repo root:
the same name, so the second overwrites the first; that copy is not compared.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    kills: list[str] = field(default_factory=list)  # the stage running at each kill
    recovered: int = 0  # restarts after a kill that did not fail on their own
    final_rc: int | None = None
    identical: bool = False
    ref_seconds: float = 0.0
    total_seconds: float = 0.0


def _start(config: str, sets: list[str], artifacts: Path, log: Path) -> subprocess.Popen:
    cmd = [str(REPO / "run_all.sh"), config, *[a for s in sets for a in ("--set", s)], "--set", f"experiment.artifacts={artifacts}"]
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGKILL the process group and return once none of its processes is left."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()  # reap the leader, else its zombie keeps the group alive
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"process group {proc.pid} still alive {timeout:.0f}s after SIGKILL")
        time.sleep(0.05)


def _running_stage(artifacts: Path, log: Path, since: float) -> str:
    """The stage whose lock this attempt took last (`<exp>/<stage>-<key>.lock`), or what its log last says."""
    locks = sorted((p for p in artifacts.glob("*/*.lock") if p.stat().st_mtime >= since), key=lambda p: p.stat().st_mtime)
    if locks:
        stage = locks[-1].name.rsplit("-", 1)[0]
        if not (locks[-1].with_suffix("") / "manifest.json").exists():
            return stage
    done = [ln.split("]")[0][1:] for ln in log.read_text(errors="replace").splitlines() if ln.startswith("[")]
    return f"after {done[-1]}" if done else "setup"


def _ref_times(log: Path, wall: float) -> tuple[dict[str, float], float]:
    """Each stage's time in the reference log and the pipeline's time ('done in Ns', else `wall`):
    the one-off venv set-up and demo data generation of a first run_all.sh are left out."""
    text = log.read_text()
    stages = {m[0]: float(m[1]) for m in re.findall(r"^\[(\w+)\] ran in ([\d.]+)s", text, re.M)}
    done = re.search(r"run_all.sh: done in (\d+)s", text)
    return stages, float(done[1]) if done else wall


def _submission(artifacts: Path) -> bytes | None:
    found = [p for p in artifacts.glob("*/submit-*/submission.csv") if (p.parent / "manifest.json").exists()]
    return found[0].read_bytes() if len(found) == 1 else None


def _tail(log: Path, n: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def inject(config: str, n: int, sets: list[str], seed: int, workdir: Path) -> Result:
    res, rng, t0 = Result(), random.Random(seed), time.perf_counter()
    config = str(Path(config).resolve())
    ref, fault = workdir / "ref", workdir / "fault"
    if fault.exists():
        raise SystemExit(f"{workdir}: holds fault/ already; give a fresh --workdir")
    if _submission(ref) is not None and "run_all.sh: done" in (workdir / "ref.log").read_text():
        res.ref_seconds = float(re.search(r"run_all.sh: done in (\d+)s", (workdir / "ref.log").read_text()).group(1))
        print(f"reference: reused from {ref}", flush=True)
    elif ref.exists():
        raise SystemExit(f"{workdir}: holds an unfinished ref/; give a fresh --workdir")
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        rc = _start(config, sets, ref, workdir / "ref.log").wait()
        res.ref_seconds = time.perf_counter() - t0
        print(f"reference: rc {rc} in {res.ref_seconds:.1f}s", flush=True)
        if rc != 0:
            raise SystemExit(f"reference run failed (rc {rc}):\n{_tail(workdir / 'ref.log')}")
    stage_s, pipeline_s = _ref_times(workdir / "ref.log", res.ref_seconds)
    for attempt in range(n + 1):
        log = workdir / f"fault-{attempt}.log"
        started = time.time()
        proc = _start(config, sets, fault, log)
        if attempt == n:
            res.final_rc = proc.wait()
        else:
            left = pipeline_s - sum(t for name, t in stage_s.items() if any(fault.glob(f"*/{name}-*/manifest.json")))
            delay = rng.uniform(0.05, 1.0) * left / (n - attempt + 1)  # +1: the last kill too lands before the end
            try:
                res.final_rc = proc.wait(timeout=delay)  # finished before its kill
            except subprocess.TimeoutExpired:
                stage = _running_stage(fault, log, started)
                _kill_group(proc)
                res.kills.append(stage)
                print(f"kill {len(res.kills)}: after {delay:.1f}s, in {stage}", flush=True)
                if attempt:
                    res.recovered += 1
                continue
            print(f"kill {attempt + 1}: not delivered, the run ended first (rc {res.final_rc})", flush=True)
        if res.final_rc != 0:
            print(f"restart {attempt} failed (rc {res.final_rc}); {log} ends:\n{_tail(log)}", flush=True)
        elif attempt:
            res.recovered += 1
        break
    a, b = _submission(ref), _submission(fault)
    res.identical = a is not None and a == b
    res.total_seconds = time.perf_counter() - t0
    print(
        f"kills {len(res.kills)}/{n} ({', '.join(res.kills) or '-'}); recovered {res.recovered}/{len(res.kills)} restarts; "
        f"final rc {res.final_rc}; submission {'identical' if res.identical else 'DIFFERS' if b else 'MISSING'}; "
        f"reference {res.ref_seconds:.1f}s, total {res.total_seconds:.1f}s; logs in {workdir}",
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("n", type=int, help="number of kills")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="default: a new temp folder")
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kill_inject-"))
    res = inject(args.config, args.n, args.sets, args.seed, workdir)
    return 0 if res.identical and res.final_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
