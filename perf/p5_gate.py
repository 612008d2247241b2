"""P5 — the regression gate's own benchmark: every rule on the same simulated samples, side by side.

Cycles are lognormal noise around a true value; each trial draws a baseline of ``--baseline-cycles`` cycles and a
stream of 20 cycles of "this run". Scenarios: CV 3%; CV 10%; CV 3% with contamination (each cycle, on either side, 2-4x
off with probability 10%: a busy machine); CV 3% with a slow thermal drift (+0.2% per cycle in cycle order on both
sides: later cycles run warmer, which biases any rule that spends more cycles on one side). True changes: +10%, 0%,
+3%; threshold 5%, alpha 0.05. Rules, on the same samples:
- point: pytest-benchmark's --benchmark-compare-fail rule, the mean changed by more than 5% (5 cycles);
- asv: asv's rule, a ratio of means beyond 5% that is significant by Mann-Whitney at p < 0.002, or, when the sample
  sizes cannot reach that p, by non-overlapping 99% confidence intervals of the means (5 cycles);
- welch (old gate): the gate before issue 15, Welch's t-test on logs, regressed when the change of geometric means
  is beyond 5% and p < 0.05, unchanged whenever it is within 5% (5 cycles);
- fixed (new gate): ``pytest_llem.results.gate`` at one look, 5 cycles;
- adaptive: the new gate with ``--llem-max-cycles=20`` after 5 planned cycles (looks and alpha spending of
  ``pytest_llem.results.sequential``).
Printed per scenario and rule: P(regressed | +10%), P(regressed | 0%), P(regressed | +3%), P(unchanged | +10%), and
mean cycles spent (this run's side) at 0% and at +10%.

    python perf/p5_gate.py [--trials 2000] [--seed 1] [--baseline-cycles 20]

Goals (issue 15), adaptive at CV 3%, threshold 5%: >= 99% / <= 0.5% / <= 5%, P(unchanged | +10%) <= 0.1%, mean cycles
at 0% <= 8; with contamination the same within one point (and one cycle); at CV 10% never unchanged for +10% more than
1% of the time. Exit status 0.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scipy import stats

from pytest_llem.results.gate import compare
from pytest_llem.results.sequential import Plan, spending, walk

THRESHOLD = 5.0
ALPHA = 0.05
PLANNED, MAX_CYCLES = 5, 20
METRIC = "energy_per_output_token_j"
SCENARIOS = {  # name: (CV, contamination probability, drift per cycle)
    "CV 3%": (0.03, 0.0, 0.0),
    "CV 10%": (0.10, 0.0, 0.0),
    "CV 3% + contamination": (0.03, 0.10, 0.0),
    "CV 3% + drift": (0.03, 0.0, 0.002),
}
CHANGES = (0.10, 0.0, 0.03)
Rule = Callable[[np.ndarray, np.ndarray], tuple[str, int]]  # (baseline, the run's 20 cycles) -> (outcome, cycles)


def draw(rng: np.random.Generator, n: int, change: float, cv: float, contamination: float, drift: float) -> np.ndarray:
    sigma = math.sqrt(math.log(1 + cv**2))
    values = rng.lognormal(math.log1p(change), sigma, n) * (1 + drift * np.arange(n))
    if contamination:
        values *= np.where(rng.random(n) < contamination, rng.uniform(2, 4, n), 1.0)
    return values


def by_change(ratio: float) -> str:
    change = (ratio - 1) * 100
    return "regressed" if change > THRESHOLD else "improved" if change < -THRESHOLD else "unchanged"


def point(base: np.ndarray, run: np.ndarray) -> tuple[str, int]:
    return by_change(run[:PLANNED].mean() / base.mean()), PLANNED


def _ci99(values: np.ndarray) -> tuple[float, float]:
    low, high = stats.t.interval(0.99, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return float(low), float(high)


def asv(base: np.ndarray, run: np.ndarray) -> tuple[str, int]:
    now = run[:PLANNED]
    if 1 / math.comb(len(base) + len(now), len(now)) < 0.002:  # asv: the test only where it can reach p < 0.002
        different = stats.mannwhitneyu(base, now).pvalue < 0.002
    else:
        (a_low, a_high), (b_low, b_high) = _ci99(base), _ci99(now)
        different = a_high < b_low or b_high < a_low
    outcome = by_change(now.mean() / base.mean())
    return (outcome if different else "unchanged"), PLANNED


def welch(base: np.ndarray, run: np.ndarray) -> tuple[str, int]:
    log_base, log_now = np.log(base), np.log(run[:PLANNED])
    outcome = by_change(math.exp(log_now.mean() - log_base.mean()))
    if outcome != "unchanged" and stats.ttest_ind(log_now, log_base, equal_var=False).pvalue >= ALPHA:
        outcome = "inconclusive"
    return outcome, PLANNED


def gate(plan: Plan) -> Rule:
    def rule(base: np.ndarray, run: np.ndarray) -> tuple[str, int]:
        baseline, current = base.tolist(), run.tolist()
        counts = plan.looks()
        shares = spending(ALPHA, len(baseline), counts)
        done = walk(
            lambda n, alpha: [compare(METRIC, baseline, current[:n], THRESHOLD, alpha)], counts, shares, counts[-1]
        )
        return done.verdicts[0].outcome, done.cycles_judged

    return rule


RULES: dict[str, Rule] = {
    "point": point,
    "asv": asv,
    "welch (old gate)": welch,
    "fixed (new gate)": gate(Plan(PLANNED, PLANNED)),
    "adaptive 5..20": gate(Plan(PLANNED, MAX_CYCLES)),
}


def score(rng: np.random.Generator, scenario: tuple[float, float, float], trials: int, baseline_n: int) -> dict:
    """Per rule and true change: the outcomes' shares and the mean cycles spent, every rule on the same samples."""
    cv, contamination, drift = scenario
    figures: dict[str, dict[float, dict[str, float]]] = {name: {} for name in RULES}
    for change in CHANGES:
        samples = [
            (
                draw(rng, baseline_n, 0.0, cv, contamination, drift),
                draw(rng, MAX_CYCLES, change, cv, contamination, drift),
            )
            for _ in range(trials)
        ]
        for name, rule in RULES.items():
            outcomes, cycles = zip(*(rule(base, run) for base, run in samples), strict=True)
            figures[name][change] = {
                "regressed": outcomes.count("regressed") / trials,
                "unchanged": outcomes.count("unchanged") / trials,
                "cycles": float(np.mean(cycles)),
            }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-cycles", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(
        f"threshold {THRESHOLD:g}%, alpha {ALPHA:g}, {args.trials} trials per case, baseline {args.baseline_cycles} "
        f"cycles; this run {PLANNED} cycles (adaptive: up to {MAX_CYCLES})"
    )
    results = {}
    for name, scenario in SCENARIOS.items():
        figures = results[name] = score(rng, scenario, args.trials, args.baseline_cycles)
        print(f"\n{name}")
        print(
            f"  {'rule':18s} {'reg|+10%':>9s} {'reg|0%':>8s} {'reg|+3%':>8s} {'unch|+10%':>10s} "
            f"{'cycles@0%':>10s} {'cycles@+10%':>12s}"
        )
        for rule, by in figures.items():
            print(
                f"  {rule:18s} {by[0.10]['regressed'] * 100:8.2f}% {by[0.0]['regressed'] * 100:7.2f}% "
                f"{by[0.03]['regressed'] * 100:7.2f}% {by[0.10]['unchanged'] * 100:9.2f}% "
                f"{by[0.0]['cycles']:10.1f} {by[0.10]['cycles']:12.1f}"
            )
    adaptive = {name: figures["adaptive 5..20"] for name, figures in results.items()}
    clean, dirty, wide = adaptive["CV 3%"], adaptive["CV 3% + contamination"], adaptive["CV 10%"]
    checks = [
        ("CV 3%: P(regressed | +10%) >= 99%", clean[0.10]["regressed"] >= 0.99),
        ("CV 3%: P(regressed | 0%) <= 0.5%", clean[0.0]["regressed"] <= 0.005),
        ("CV 3%: P(regressed | +3%) <= 5%", clean[0.03]["regressed"] <= 0.05),
        ("CV 3%: P(unchanged | +10%) <= 0.1%", clean[0.10]["unchanged"] <= 0.001),
        ("CV 3%: mean cycles at 0% <= 8", clean[0.0]["cycles"] <= 8),
        ("contamination: P(regressed | +10%) >= 98%", dirty[0.10]["regressed"] >= 0.98),
        ("contamination: P(regressed | 0%) <= 1.5%", dirty[0.0]["regressed"] <= 0.015),
        ("contamination: P(regressed | +3%) <= 6%", dirty[0.03]["regressed"] <= 0.06),
        ("contamination: P(unchanged | +10%) <= 1.1%", dirty[0.10]["unchanged"] <= 0.011),
        ("contamination: mean cycles at 0% <= 9", dirty[0.0]["cycles"] <= 9),
        ("CV 10%: P(unchanged | +10%) <= 1%", wide[0.10]["unchanged"] <= 0.01),
    ]
    print("\ngoals (adaptive gate):")
    for label, met in checks:
        print(f"  {'met   ' if met else 'MISSED'} {label}")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
