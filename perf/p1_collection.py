"""P1 — collection speed: a 10,000-config study file vs a test parametrised over 10,000 values.

Both are collected by ``pytest --collect-only -q --llem-cycles=1 -p no:cacheprovider`` in a fresh subprocess, so
both pay the same interpreter start-up and load the same plugins (pytest-llem included). Runs are interleaved
(A, B, A, B, ...) on this noisy machine and the figure is the ratio of the medians, A/B.

Bytecode: this environment sets PYTHONDONTWRITEBYTECODE=1 and the editable package has no ``__pycache__``, so every
pytest process would recompile (and assertion-rewrite) pytest-llem's modules. By default the subprocesses get
PYTHONDONTWRITEBYTECODE unset and PYTHONPYCACHEPREFIX pointing into the temp folder, as on a normal machine where
bytecode is cached (nothing is written outside the temp folder); ``--env-as-is`` keeps the environment untouched.

    python perf/p1_collection.py [--reps 5] [--profile | --no-profile] [--env-as-is]

Exit status 0 whether or not the goal is met; 2 when a check fails (wrong collected count, pytest error).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_ITEMS = 10_000
GOAL = 1.2  # A/B wall time, at most
PYTEST_ARGS = ["--collect-only", "-q", "--llem-cycles=1", "-p", "no:cacheprovider"]
_COLLECTED = re.compile(r"^(?:(\d+)/)?(\d+) tests? collected(?: \((\d+) deselected\))? in ([\d.]+)s", re.MULTILINE)
_NO_TESTS = re.compile(r"^no tests collected in ([\d.]+)s", re.MULTILINE)


def write_cases(root: Path) -> dict[str, Path]:
    """Three folders, each with its own (empty) pytest.ini so nothing above /tmp configures the run."""
    cases = {name: root / name for name in ("study", "param", "empty")}
    for folder in cases.values():
        folder.mkdir()
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    values = ", ".join(str(i) for i in range(1, 101))
    (cases["study"] / "study_collect.yaml").write_text(
        "model: builtin:tiny-llama\n"
        "backend: pytorch\n"
        "precision: fp32\n"
        "sweep:\n"
        f"  n: [{values}]\n"
        f"  random_seed: [{values}]\n",
        encoding="utf-8",
    )
    (cases["param"] / "test_param.py").write_text(
        "import pytest\n\n\n"
        f"@pytest.mark.parametrize('value', range({N_ITEMS}))\n"
        "def test_value(value):\n"
        "    assert value >= 0\n",
        encoding="utf-8",
    )
    return cases


def child_env(root: Path, as_is: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def collect_once(folder: Path, expected: int, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds of the whole subprocess, seconds pytest itself reports for the session)."""
    cmd = [sys.executable, "-m", "pytest", *PYTEST_ARGS]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if expected == 0:
        match = _NO_TESTS.search(out)
        if proc.returncode != 5 or match is None:  # 5: "no tests collected"
            fail(f"empty folder: expected 'no tests collected' (exit 5), got exit {proc.returncode}:\n{out[-2000:]}")
        return wall, float(match.group(1))
    match = _COLLECTED.search(out)
    if proc.returncode != 0 or match is None:
        fail(f"{folder.name}: pytest exit {proc.returncode}, no 'N tests collected' line:\n{out[-2000:]}")
    collected = int(match.group(2))
    node_lines = sum(1 for line in proc.stdout.splitlines() if "::" in line)
    if collected != expected or node_lines != expected:
        fail(f"{folder.name}: expected {expected} items, pytest says {collected}, {node_lines} node ids printed")
    return wall, float(match.group(4))


def fail(message: str) -> None:
    print(f"CHECK FAILED: {message}", flush=True)
    raise SystemExit(2)


def profile_study(folder: Path, env: dict[str, str]) -> None:
    """Profile the study's collection in a fresh process (same environment as the timed runs) and show its report."""
    cmd = [sys.executable, __file__, "--profile-child", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        fail(f"profiling child exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    print(proc.stdout, end="")


def profile_child(folder: Path, top: int = 15) -> None:
    """cProfile one in-process ``pytest.main`` collection of the study; show pytest_llem's top cumulative entries."""
    import pytest

    profiler = cProfile.Profile()
    sink = io.StringIO()
    old_cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(sink):
            profiler.enable()
            start = time.perf_counter()
            code = pytest.main([*PYTEST_ARGS, str(folder)])
            elapsed = time.perf_counter() - start
            profiler.disable()
    finally:
        os.chdir(old_cwd)
    if code != 0:
        fail(f"profiled collection exited {code}:\n{sink.getvalue()[-2000:]}")
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "pytest_llem" in filename:
            short = filename[filename.index("pytest_llem") :]
            rows.append((cumtime, tottime, ncalls, f"{short}:{line}({func})"))
    rows.sort(reverse=True)
    print(
        f"\nprofile: one pytest.main collection of the study in a fresh process, {elapsed:.2f} s wall "
        f"({total:.2f} s profiled; cProfile inflates Python-heavy code)"
    )
    print(f"top {top} cumulative entries under pytest_llem:")
    print(f"  {'cumtime':>8} {'tottime':>8} {'ncalls':>8}  function")
    for cumtime, tottime, ncalls, where in rows[:top]:
        print(f"  {cumtime:8.3f} {tottime:8.3f} {ncalls:8d}  {where}")
    print("top 10 by own time (any module):")
    own = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in own:
        print(f"  {cumtime:8.3f} {tottime:8.3f} {ncalls:8d}  {Path(filename).name}:{line}({func})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="interleaved A/B pairs (default 5)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--profile", action="store_true", help="profile the study collection even if the goal is met")
    group.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument(
        "--env-as-is",
        action="store_true",
        help="do not give the subprocesses a bytecode cache (keep PYTHONDONTWRITEBYTECODE etc.)",
    )
    parser.add_argument("--profile-child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_child:
        profile_child(Path(args.profile_child))
        return

    print(
        f"P1 collection speed: {N_ITEMS} study items (A) vs {N_ITEMS} parametrised tests (B); "
        f"{args.reps} interleaved pairs; python {sys.executable}; {os.cpu_count()} CPUs"
    )
    print(f"command: python -m pytest {' '.join(PYTEST_ARGS)}")
    with tempfile.TemporaryDirectory(prefix="llem-p1-") as tmp:
        cases = write_cases(Path(tmp))
        env = child_env(Path(tmp), args.env_as_is)
        print(
            "bytecode: "
            + (
                f"environment as is (PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', 'unset')})"
                if args.env_as_is
                else "cached in a private PYTHONPYCACHEPREFIX, as on a normal machine"
            )
        )
        for case, expected in (("study", N_ITEMS), ("param", N_ITEMS), ("empty", 0)):
            collect_once(cases[case], expected, env)  # untimed: warms the file cache and the bytecode cache
        raw: dict[str, list[tuple[float, float]]] = {"A": [], "B": [], "empty": []}
        for rep in range(args.reps):
            order = [("A", "study", N_ITEMS), ("B", "param", N_ITEMS), ("empty", "empty", 0)]
            if rep % 2:  # alternate who goes first, so neither always runs right after the other
                order[0], order[1] = order[1], order[0]
            for key, case, expected in order:
                raw[key].append(collect_once(cases[case], expected, env))
            a, b, e = raw["A"][-1], raw["B"][-1], raw["empty"][-1]
            print(
                f"  rep {rep + 1}: A {a[0]:6.2f} s (session {a[1]:5.2f})  B {b[0]:6.2f} s (session {b[1]:5.2f})  "
                f"empty {e[0]:5.2f} s  A/B {a[0] / b[0]:.3f}"
            )

        def med(key: str, index: int) -> float:
            return statistics.median(r[index] for r in raw[key])

        pair_ratios = [a[0] / b[0] for a, b in zip(raw["A"], raw["B"], strict=True)]
        ratio = med("A", 0) / med("B", 0)
        print("raw wall times (s):")
        for key in ("A", "B", "empty"):
            print(f"  {key:5}: " + " ".join(f"{w:.2f}" for w, _ in raw[key]))
        print(
            f"median wall: A (study) {med('A', 0):.2f} s, B (parametrize) {med('B', 0):.2f} s, "
            f"fixed start-up (empty folder) {med('empty', 0):.2f} s"
        )
        print(
            f"median session time pytest reports: A {med('A', 1):.2f} s, B {med('B', 1):.2f} s, "
            f"empty {med('empty', 1):.2f} s"
        )
        above_a, above_b = med("A", 0) - med("empty", 0), med("B", 0) - med("empty", 0)
        print(
            f"above the empty-folder start-up: A {above_a:.2f} s, B {above_b:.2f} s "
            f"(ratio {above_a / above_b:.2f}x; per item A {above_a / N_ITEMS * 1e6:.0f} us, "
            f"B {above_b / N_ITEMS * 1e6:.0f} us)"
        )
        print(
            f"per-pair A/B ratios: {' '.join(f'{r:.3f}' for r in pair_ratios)} "
            f"(median {statistics.median(pair_ratios):.3f})"
        )
        met = ratio <= GOAL
        if args.profile or (not met and not args.no_profile):
            profile_study(cases["study"], env)
    print(f"RESULT: {ratio:.2f}x (goal <= {GOAL}x: {'met' if met else 'MISSED'})")


if __name__ == "__main__":
    main()
