"""``llem``: the run folders pytest-llem leaves behind, read from the shell without running pytest.

    llem report [RUN] [--plots DIR]                 the table of a run
    llem compare BASELINE [RUN] [--fail METRIC:PCT] [--alpha A] [--any-hardware]
    llem merge RUN... -o OUT                        shards (or runs of different studies) into one run folder
    llem doctor [--timeout SECONDS]                 what this machine can measure, and how to get the rest
    llem doctor --restore [RESULTS_DIR]             put back GPU settings a killed session left (default .llem)

RUN is a run folder, a run id under ./.llem/runs, or a folder of runs (its latest run); it defaults to ./.llem.
Exit codes: 0 done, 1 a regression (compare), nothing to measure (doctor) or GPU settings left unrestored or no
such results folder (doctor --restore), 2 a usage error or a refusal, said in one line on stderr.
Only light modules are imported: scipy comes in when compare tests, matplotlib when plots are asked for, Zeus when
doctor looks at the devices (torch and vLLM only in doctor's own child processes).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from .energy.doctor import DEFAULT_IMPORT_TIMEOUT_S, diagnose  # light: Zeus is imported when doctor runs
from .energy.gpu_restore import restore_journals
from .errors import LlemError
from .report.table import render_session
from .results import baselines, gate
from .results.baselines import Baseline
from .results.runfolder import RunFolder, merge
from .results.store import BASELINES, DEFAULT_RESULTS_DIR, RUN_ID, RUNS
from .study.ids import safe_name

RESULTS_DIR = Path(DEFAULT_RESULTS_DIR)  # the plugin's default, relative to where llem runs (usually the rootdir)
REGRESSED, USAGE = 1, 2
NOTHING_TO_MEASURE = 1  # doctor
UNRESTORED = 1  # doctor --restore: a journal of this host is left, or the results folder does not exist


class HardwareMismatch(LlemError):
    """The baseline was measured on other hardware: its energy figures say nothing about this run's."""


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        _die_quietly_on_closed_pipe()
    parser = _parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help (0), or a usage error argparse has printed already (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except (LlemError, gate.ThresholdError) as exc:
        print(f"llem: {exc}", file=sys.stderr)
        return USAGE


def _die_quietly_on_closed_pipe() -> None:
    """``llem report | head``: end like other shell tools when the reader stops, not with a BrokenPipeError."""
    if hasattr(signal, "SIGPIPE"):  # not on Windows
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llem",
        description="Read, compare and merge pytest-llem run folders (.llem/runs/<run-id>/); "
        "say what this machine can measure (doctor).",
    )
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    run_help = "run folder, run id or folder of runs (latest run); default: .llem"

    report = commands.add_parser("report", help="print a run's table")
    report.add_argument("run", nargs="?", default=str(RESULTS_DIR), metavar="RUN", help=run_help)
    report.add_argument("--plots", metavar="DIR", type=Path, help="also write plots of the results into DIR")
    report.set_defaults(command=_report)

    compare = commands.add_parser("compare", help="judge a run against a baseline; exit 1 on a regression")
    compare.add_argument(
        "baseline", metavar="BASELINE", help="saved baseline (name, path to its .json, latest) or a run folder"
    )
    compare.add_argument("run", nargs="?", default=str(RESULTS_DIR), metavar="RUN", help=run_help)
    compare.add_argument(
        "--fail",
        action="append",
        metavar="METRIC:PCT",
        help="a regression is a change beyond PCT in METRIC's bad direction "
        f"(repeatable; default {gate.DEFAULT_THRESHOLD.pct:g}%%)",
    )
    compare.add_argument("--alpha", type=_probability, default=gate.DEFAULT_ALPHA, help="significance level")
    compare.add_argument("--any-hardware", action="store_true", help="compare even when the hardware differs")
    compare.set_defaults(command=_compare)

    merger = commands.add_parser("merge", help="merge run folders into one")
    merger.add_argument("runs", nargs="+", metavar="RUN", help="run folders to merge")
    merger.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="new (or empty) run folder")
    merger.set_defaults(command=_merge)

    doctor = commands.add_parser(
        "doctor", help="what this machine can measure, and how to get the rest; exit 1 when nothing"
    )
    doctor.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_IMPORT_TIMEOUT_S,
        metavar="SECONDS",
        help="longest wait for torch and vLLM to import, each in a child process "
        f"(default {DEFAULT_IMPORT_TIMEOUT_S:g}; 0 skips them)",
    )
    doctor.add_argument(
        "--restore",
        nargs="?",
        const=str(RESULTS_DIR),
        type=Path,
        metavar="RESULTS_DIR",
        help="put back the GPU power limits and clocks that a session killed mid-item left changed, from this host's "
        "journals in RESULTS_DIR/gpu-settings (default: .llem, where llem runs; exit 1 when it does not exist); "
        "then exit",
    )
    doctor.set_defaults(command=_doctor)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _probability(text: str) -> float:
    try:
        return gate.parse_alpha(text)
    except gate.ThresholdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def open_run(reference: str) -> RunFolder:
    """A run folder by path, or by bare run id under ./.llem/runs."""
    path = Path(reference)
    if not path.exists() and RUN_ID.fullmatch(reference):
        path = RESULTS_DIR / RUNS / reference
    return RunFolder.open(path)


# -- report -----------------------------------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    run = open_run(args.run)
    print(describe_run(run))
    session = run.session()
    print("\n".join(render_session(session)))
    if args.plots is not None:
        from .report.plots import write_plots  # matplotlib only when asked for

        for path in write_plots(session, args.plots):
            print(f"plot: {path}")
    return 0


def describe_run(run: RunFolder) -> str:
    counts = Counter(entry.status for entry in run.entries)
    states = ", ".join(f"{n} {status}" for status, n in counts.most_common())
    line = f"run {run.run_id} ({run.status}) in {run.folder}: {len(run.entries)} items"
    return f"{line} ({states})" if states else line


# -- compare ----------------------------------------------------------------------------------------------------------


def _compare(args: argparse.Namespace) -> int:
    thresholds = [gate.Threshold.parse(text) for text in args.fail] if args.fail else [gate.DEFAULT_THRESHOLD]
    run = open_run(args.run)
    baseline = load_baseline(args.baseline, run)
    note = _hardware_note(baseline, run, args.any_hardware)
    session = run.session()
    session.baseline_name = baseline.name
    labels = ", ".join(t.label() for t in thresholds)
    print(f"run {run.run_id} against baseline {baseline.name!r} ({labels}; alpha {args.alpha:g})")
    if note:
        print(f"note: {note}; compared anyway (--any-hardware)")
    regressed: list[str] = []
    judged = baselines.judge_results(baseline, run.results, thresholds, args.alpha)
    for found in judged:
        name = f"{found.study}::{found.experiment_id}"
        if found.verdicts is None:
            print(f"{name}: not in baseline")
            continue
        session.add_verdicts(found.study, found.experiment_id, found.verdicts)
        print("\n".join(f"{name}: {verdict.describe()}" for verdict in found.verdicts))
        if gate.worst(found.verdicts) == "regressed":
            regressed.append(name)
    print("", *render_session(session), "", sep="\n")
    compared = sum(found.verdicts is not None for found in judged)
    only_in_baseline = len(set(baseline.experiments) - {found.identity for found in judged})
    print(_conclusion(regressed, compared, only_in_baseline))
    needing = [
        f"  {found.study}::{found.experiment_id}: {v.metric}: {v.more_cycles_text()}"
        for found in judged
        for v in found.verdicts or []
        if v.more_cycles_may_decide
    ]
    if needing:  # what --llem-cycles / --llem-max-cycles would have to be for a verdict
        print(f"inconclusive, more cycles would decide ({len(needing)}):", *needing, sep="\n")
    if not compared:  # a gate that compared nothing must not read as a pass
        print(f"llem: no experiment of run {run.run_id} is in baseline {baseline.name!r}", file=sys.stderr)
        return USAGE
    return REGRESSED if regressed else 0


def load_baseline(reference: str, run: RunFolder) -> Baseline:
    """A saved baseline (name, path or ``latest``, names looked up in the ``baselines`` folder beside the run's
    ``runs`` folder), or a run folder whose passed results become a baseline named after it."""
    baselines_dir = run.folder.parent.parent / BASELINES
    saved = reference == "latest" or (baselines_dir / f"{reference}.json").is_file()
    if not saved and (Path(reference).is_dir() or RUN_ID.fullmatch(reference)):
        other = open_run(reference)
        name = safe_name(other.run_id)  # a merged folder may have any name; a baseline may not
        return baselines.build(name, other.results, other.run_id, other.environment)
    return baselines.load(reference, baselines_dir)


def _hardware_note(baseline: Baseline, run: RunFolder, any_hardware: bool) -> str | None:
    """Why the hardware differs, or None; refused unless ``any_hardware``."""
    environment = run.environment
    difference = baselines.hardware_difference(baseline, environment) if environment is not None else None
    if difference and not any_hardware:
        raise HardwareMismatch(
            f"{difference}; energy figures of different hardware are not comparable (--any-hardware compares anyway)"
        )
    return difference


def _conclusion(regressed: list[str], compared: int, only_in_baseline: int) -> str:
    missing = f"; {only_in_baseline} baseline experiments not in this run" if only_in_baseline else ""
    if regressed:
        return f"regressed: {len(regressed)} of {compared} compared experiments ({', '.join(regressed)}){missing}"
    return f"no regression in {compared} compared experiments{missing}"


# -- merge ------------------------------------------------------------------------------------------------------------


def _merge(args: argparse.Namespace) -> int:
    folders = [open_run(reference) for reference in args.runs]
    merged = merge(folders, args.out)
    sources = ", ".join(folder.run_id for folder in folders)
    print(f"merged {len(folders)} runs ({sources}) into {merged.folder}")
    print(f"{describe_run(merged)}; {len(merged.results)} results")
    missing = merged.manifest.get("missing_shards")
    if missing:
        print(f"missing shard(s) {', '.join(missing)}: their experiments are not in the merged run", file=sys.stderr)
    return 0


# -- doctor -----------------------------------------------------------------------------------------------------------


def _doctor(args: argparse.Namespace) -> int:
    if args.restore is not None:
        lines, complete = restore_journals(args.restore)
        print("\n".join(lines))
        return 0 if complete else UNRESTORED
    report = diagnose(args.timeout or None)
    print("\n".join(report.lines()))
    return 0 if report.ok else NOTHING_TO_MEASURE


if __name__ == "__main__":
    sys.exit(main())
