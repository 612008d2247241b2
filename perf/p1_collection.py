"""P1 — collection speed: 10,000-config study files vs a test parametrised over 10,000 values, and how collection
grows with the study's size.

Every run is ``pytest --collect-only -q --llem-cycles=1 -p no:cacheprovider`` in a fresh subprocess, so both sides pay
the same interpreter start-up and load the same plugins (pytest-llem included). Runs are interleaved on this noisy
machine and every figure is a ratio of medians measured in this one run.

- Against parametrize (goal: each <= 1.2x, whole processes): two study shapes, a backend-scoped 2-D sweep
  (``pytorch.batch_size`` x ``max_output_tokens``) and a plain 2-D sweep (``n`` x ``random_seed``), each in two
  bytecode settings: cached (PYTHONDONTWRITEBYTECODE unset, a private PYTHONPYCACHEPREFIX, as on a normal machine) and
  not written (PYTHONDONTWRITEBYTECODE=1, every process compiles again).
- Linear growth: the backend-scoped study at 20,000 and 100,000 configs against 10,000 (goals: at most 2.2x and 11x,
  on whole processes and on the session time pytest reports).

    python perf/p1_collection.py [--reps 5] [--scale-reps 3] [--profile | --no-profile]

Exit status 0 whether or not the goals are met; 2 when a check fails (wrong collected count, pytest error).
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
GOAL = 1.2  # study / parametrize, whole processes, at most
SCALE_GOALS = {20_000: 2.2, 100_000: 11.0}  # time(N) / time(10,000), at most
PYTEST_ARGS = ["--collect-only", "-q", "--llem-cycles=1", "-p", "no:cacheprovider"]
_COLLECTED = re.compile(r"^(?:(\d+)/)?(\d+) tests? collected(?: \((\d+) deselected\))? in ([\d.]+)s", re.MULTILINE)
_NO_TESTS = re.compile(r"^no tests collected in ([\d.]+)s", re.MULTILINE)
ENVS = ("cached", "no-bytecode")


def _values(count: int) -> str:
    return ", ".join(str(i) for i in range(1, count + 1))


def scoped_study(configs: int) -> str:
    """A backend-scoped 2-D sweep: pytorch.batch_size [1..configs/100] x max_output_tokens [1..100]."""
    return (
        "model: builtin:tiny-llama\nbackend: pytorch\nprecision: fp32\nsweep:\n"
        f"  pytorch.batch_size: [{_values(configs // 100)}]\n  max_output_tokens: [{_values(100)}]\n"
    )


def plain_study() -> str:
    """The shape P1 measured first: n [1..100] x random_seed [1..100]."""
    return (
        "model: builtin:tiny-llama\nbackend: pytorch\nprecision: fp32\nsweep:\n"
        f"  n: [{_values(100)}]\n  random_seed: [{_values(100)}]\n"
    )


def write_cases(root: Path) -> dict[str, tuple[Path, int]]:
    """One folder per case, each with its own (empty) pytest.ini so nothing above /tmp configures the run."""
    studies = {
        "scoped": (scoped_study(N_ITEMS), N_ITEMS),
        "plain": (plain_study(), N_ITEMS),
        "scoped-20k": (scoped_study(20_000), 20_000),
        "scoped-100k": (scoped_study(100_000), 100_000),
    }
    cases: dict[str, tuple[Path, int]] = {}
    for name, (text, count) in studies.items():
        folder = root / name
        folder.mkdir()
        (folder / "study_collect.yaml").write_text(text, encoding="utf-8")
        cases[name] = (folder, count)
    cases["param"] = (root / "param", N_ITEMS)
    cases["param"][0].mkdir()
    (cases["param"][0] / "test_param.py").write_text(
        "import pytest\n\n\n"
        f"@pytest.mark.parametrize('value', range({N_ITEMS}))\n"
        "def test_value(value):\n"
        "    assert value >= 0\n",
        encoding="utf-8",
    )
    cases["empty"] = (root / "empty", 0)
    cases["empty"][0].mkdir()
    for folder, _ in cases.values():
        (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return cases


def child_env(root: Path, setting: str) -> dict[str, str]:
    env = dict(os.environ)
    if setting == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
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


def _median(runs: list[tuple[float, float]], index: int) -> float:
    return statistics.median(r[index] for r in runs)


def against_parametrize(cases: dict[str, tuple[Path, int]], env: dict[str, str], reps: int) -> dict[str, float]:
    """Interleaved runs of both study shapes, parametrize and the empty folder; returns study/param ratios."""
    keys = ("scoped", "plain", "param", "empty")
    for key in keys:
        collect_once(*cases[key], env)  # untimed: warms the file cache (and the bytecode cache, if written)
    raw: dict[str, list[tuple[float, float]]] = {key: [] for key in keys}
    for rep in range(reps):
        order = keys if rep % 2 == 0 else tuple(reversed(keys))  # neither side always runs right after the other
        for key in order:
            raw[key].append(collect_once(*cases[key], env))
        print(
            f"    rep {rep + 1}: "
            + "  ".join(f"{key} {raw[key][-1][0]:5.2f} s (session {raw[key][-1][1]:5.2f})" for key in keys)
        )
    empty = _median(raw["empty"], 0)
    ratios = {}
    for study in ("scoped", "plain"):
        ratio = _median(raw[study], 0) / _median(raw["param"], 0)
        ratios[study] = ratio
        above = (_median(raw[study], 0) - empty) / (_median(raw["param"], 0) - empty)
        print(
            f"  {study:6} study {_median(raw[study], 0):.2f} s vs parametrize {_median(raw['param'], 0):.2f} s "
            f"(empty folder {empty:.2f} s): whole process {ratio:.3f}x, above start-up {above:.2f}x, "
            f"session {_median(raw[study], 1):.2f} s vs {_median(raw['param'], 1):.2f} s "
            f"({_median(raw[study], 1) / _median(raw['param'], 1):.2f}x)"
        )
    return ratios


def growth(cases: dict[str, tuple[Path, int]], env: dict[str, str], reps: int) -> dict[int, tuple[float, float]]:
    """The scoped study at 10,000, 20,000 and 100,000 configs, interleaved; (whole, session) ratios to 10,000."""
    keys = ("scoped", "scoped-20k", "scoped-100k")
    raw: dict[str, list[tuple[float, float]]] = {key: [] for key in keys}
    for rep in range(reps):
        for key in keys if rep % 2 == 0 else tuple(reversed(keys)):
            raw[key].append(collect_once(*cases[key], env))
        print("    rep " + f"{rep + 1}: " + "  ".join(f"{cases[k][1]:,} {raw[k][-1][0]:6.2f} s" for k in keys))
    out = {}
    for key in keys[1:]:
        size = cases[key][1]
        whole = _median(raw[key], 0) / _median(raw["scoped"], 0)
        session = _median(raw[key], 1) / _median(raw["scoped"], 1)
        out[size] = (whole, session)
        print(
            f"  {size:,} configs: whole {_median(raw[key], 0):.2f} s, session {_median(raw[key], 1):.2f} s; "
            f"vs {N_ITEMS:,}: whole {whole:.2f}x, session {session:.2f}x (goal <= {SCALE_GOALS[size]}x)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds against parametrize (default 5)")
    parser.add_argument("--scale-reps", type=int, default=3, help="interleaved rounds of the growth check (default 3)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--profile", action="store_true", help="profile the study collection even if goals are met")
    group.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--profile-child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_child:
        profile_child(Path(args.profile_child))
        return

    print(
        f"P1 collection speed: {N_ITEMS:,}-config studies vs {N_ITEMS:,} parametrised tests; "
        f"python {sys.executable}; {os.cpu_count()} CPUs"
    )
    print(f"command: python -m pytest {' '.join(PYTEST_ARGS)}")
    results: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="llem-p1-") as tmp:
        cases = write_cases(Path(tmp))
        for setting in ENVS:
            print(f"bytecode {setting}:")
            for study, ratio in against_parametrize(cases, child_env(Path(tmp), setting), args.reps).items():
                results.append((f"{study} study / parametrize, bytecode {setting}", ratio, GOAL))
        print("growth (bytecode cached):")
        for size, (whole, session) in growth(cases, child_env(Path(tmp), "cached"), args.scale_reps).items():
            results.append((f"{size:,} / {N_ITEMS:,} configs, whole process", whole, SCALE_GOALS[size]))
            results.append((f"{size:,} / {N_ITEMS:,} configs, session", session, SCALE_GOALS[size]))
        met = all(ratio <= goal for _, ratio, goal in results)
        if args.profile or (not met and not args.no_profile):
            profile_study(cases["scoped"][0], child_env(Path(tmp), "cached"))
    for label, ratio, goal in results:
        print(f"  {label}: {ratio:.2f}x (goal <= {goal}x: {'met' if ratio <= goal else 'MISSED'})")
    worst = max(results, key=lambda r: r[1] / r[2])
    print(f"RESULT: {'all goals met' if met else 'MISSED'}; closest to its goal: {worst[0]} {worst[1]:.2f}x")


if __name__ == "__main__":
    main()
