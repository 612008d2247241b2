"""P4 — isolation overhead: time per item outside the measured window, isolation ``process`` vs ``none``.

The same one-experiment study (tests/studies.py FAST: builtin:tiny-llama, fp32, 4 prompts, 4 new tokens, no idle
baseline) runs with
``--llem-cycles=N`` under each isolation, alternating (process, none, none, process, ...), each a fresh
``python -m pytest`` in its own temp folder. Per item, the overhead is the item's wall time in the run folder's
manifest (``finished_at - started_at``) minus its measured window (``duration_s``). The first item of a run is left
out: it pays the one-time start (imports; for ``process``, the forkserver preloading them).

    python perf/p4_isolation.py [--cycles 6] [--reps 2]

Check: every item passed and produced a result in both modes, else exit 2.
Goal: median overhead(process) − median overhead(none) ≤ 0.5 s per item. Exit status 0 whether or not it is met.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_S = 0.5
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.studies import FAST as STUDY  # noqa: E402  (the tests' smallest real study: tiny-llama, no idle baseline)


def one_run(isolation: str, cycles: int) -> list[float]:
    """Per-item overhead (s) outside the window, first item excluded."""
    with tempfile.TemporaryDirectory(prefix="llem-p4-") as folder:
        root = Path(folder)
        (root / "study_p4.yaml").write_text(STUDY)
        (root / "pytest.ini").write_text("[pytest]\n")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--llem-cycles={cycles}"]
        done = subprocess.run([*command, f"--llem-isolation={isolation}"], cwd=root, capture_output=True, text=True)
        (run,) = (root / ".llem" / "runs").iterdir()
        manifest = json.loads((run / "manifest.json").read_text())
        items = [i for i in manifest["items"] if i["status"] == "passed" and i["result_file"]]
        if done.returncode != 0 or len(items) != cycles:
            print(f"CHECK FAILED ({isolation}): exit {done.returncode}, {len(items)}/{cycles} results\n{done.stdout}")
            raise SystemExit(2)
        overheads = []
        for item in sorted(items, key=lambda i: i["started_at"])[1:]:
            result = json.loads((run / item["result_file"]).read_text())
            overheads.append(item["finished_at"] - item["started_at"] - result["metrics"]["duration_s"])
        return overheads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"process": [], "none": []}
    for rep in range(args.reps):
        for isolation in ("process", "none") if rep % 2 == 0 else ("none", "process"):
            overheads = one_run(isolation, args.cycles)
            samples[isolation] += overheads
            print(f"{isolation:8s} rep {rep + 1}: " + " ".join(f"{o:.3f}" for o in overheads))
    process, none = statistics.median(samples["process"]), statistics.median(samples["none"])
    print(f"median overhead per item: process {process:.3f} s, none {none:.3f} s")
    added = process - none
    print(
        f"RESULT: process isolation adds {added:.3f} s per warm item (goal <= {GOAL_S} s) — "
        f"{'met' if added <= GOAL_S else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
