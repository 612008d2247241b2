"""PNG plots of results: per study, each metric against each swept setting, and energy per token against latency
with its Pareto front; per test file, one bar chart of its ``llem_energy`` windows per energy metric.

matplotlib is an optional extra (``pytest-llem[plots]``) and is imported only while plotting, through
``Figure`` + ``FigureCanvasAgg`` rather than pyplot, so no global backend or figure state is touched.
A metric that nothing measured is never drawn (no plots of zeros)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from ..errors import LlemError
from ..results.session import ExperimentSummary, SessionResults
from ..study.ids import lookup, varying_paths
from .figures import Point, file_name, literal, new_figure, pareto_scatter, save
from .serving_plots import write_serving_plots

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PLOT_METRICS = (
    "energy_per_output_token_j",
    "energy_j",
    "tokens_per_s",
    "ttft_s.mean",
    "itl_s.mean",
    "mean_power_w",
    "peak_memory_mb",
)
WINDOW_METRICS = ("energy_j", "energy_per_output_token_j")
ENERGY_PER_TOKEN = "energy_per_output_token_j"
# Pareto x axis, best first: the first one any experiment of the study measured.
LATENCY_METRICS = ("ttft_s.mean", "itl_s.mean", "duration_s")
AXIS_LABELS = {
    "energy_per_output_token_j": "energy per output token (J/tok)",
    "energy_j": "energy (J)",
    "tokens_per_s": "throughput (tok/s)",
    "ttft_s.mean": "mean time to first token (s)",
    "itl_s.mean": "mean inter-token latency (s)",
    "mean_power_w": "mean power (W)",
    "peak_memory_mb": "peak memory (MB)",
    "duration_s": "duration of the window (s)",
}
INSTALL_HINT = "plots need matplotlib: pip install 'pytest-llem[plots]'"
MAX_LABELLED_TICKS = 12

Scalar = str | int | float | bool | None
Setting = tuple[str, ...]  # a path into an experiment's config, shown dotted: decoder.temperature


class PlotsUnavailable(LlemError):
    """matplotlib is not installed; plots are the optional extra ``plots``."""


@dataclass(frozen=True)
class Experiment:
    """An experiment's row of ``SessionResults.summarise`` and the config (``identity()``) its cycles ran."""

    row: ExperimentSummary
    config: dict[str, Any]

    @property
    def experiment_id(self) -> str:
        return self.row.experiment_id

    def setting(self, path: Setting) -> Scalar:
        return config_value(self.config, path)

    def mean(self, metric: str) -> float | None:
        return self.row.metrics[metric].mean

    # What matplotlib draws: NaN where there is nothing (no point, no error bar), never a zero standing in for it.

    def plotted_mean(self, metric: str) -> float:
        mean = self.mean(metric)
        return mean if mean is not None else math.nan

    def plotted_half_width(self, metric: str) -> float:
        """Half the 95% CI; NaN where a single cycle gives no interval."""
        half_width = self.row.metrics[metric].half_width
        return half_width if half_width is not None else math.nan


def write_plots(session: SessionResults, out_dir: Path) -> list[Path]:
    """Write every plot the session's results allow into ``out_dir`` (created if needed); the written files, sorted."""
    _require_matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    fixture_groups = session.fixture_groups()
    found = {study: _experiments(session, study) for study in session.groups()}
    studies = {study: experiments for study, experiments in found.items() if experiments}
    stems = _file_stems(sorted(studies))
    written: list[Path] = []
    for study, experiments in studies.items():
        stem = stems[study]
        if study in fixture_groups:
            written += _plot_windows(study, stem, experiments, out_dir)
        else:
            written += _plot_sweeps(study, stem, experiments, out_dir)
            pareto = _plot_pareto(study, experiments, out_dir / file_name(f"{stem}-pareto"))
            written += [pareto] if pareto else []
            written += write_serving_plots(session, study, stem, out_dir)
    return sorted(written)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotsUnavailable(INSTALL_HINT) from exc


# --- experiments and their settings ---------------------------------------------------------------------------------


def _experiments(session: SessionResults, study: str) -> list[Experiment]:
    """The study's experiments that passed a cycle (only those have a config and means), in the session's order."""
    configs = {r.experiment_id: r.config for r in session.results if r.study == study}
    return [
        Experiment(row, configs[row.experiment_id]) for row in session.summarise(study) if row.experiment_id in configs
    ]


def swept_settings(configs: Sequence[Mapping[str, Any]]) -> list[Setting]:
    """The settings whose values differ between configs, sorted by dotted name. Unset and absent are alike: a section
    absent for one backend (``vllm.*`` under pytorch) is not a sweep of its own."""
    varying = varying_paths(configs)
    return sorted((p for p in varying if len({config_value(c, p) for c in configs}) > 1), key=_dotted)


def config_value(config: Mapping[str, Any], path: Setting) -> Scalar:
    """A setting's value, None where unset or absent; a list as its JSON text, so every value can be compared and
    shown."""
    value = lookup(config, path)
    return value if value is None or isinstance(value, str | int | float | bool) else json.dumps(value, sort_keys=True)


def _dotted(path: Setting) -> str:
    return ".".join(path)


def _file_stems(studies: Sequence[str]) -> dict[str, str]:
    """A study's file stem, or its whole path where two studies share a stem (so neither overwrites the other)."""
    counts = Counter(Path(study).stem for study in studies)
    return {
        study: Path(study).stem if counts[Path(study).stem] == 1 else str(Path(study).with_suffix("")).replace("/", "_")
        for study in studies
    }


# --- metric against a swept setting ---------------------------------------------------------------------------------


def _plot_sweeps(study: str, stem: str, experiments: Sequence[Experiment], out_dir: Path) -> list[Path]:
    swept = swept_settings([e.config for e in experiments])
    written = []
    for setting in swept:
        others = [other for other in swept if other != setting]
        for metric in PLOT_METRICS:
            path = out_dir / file_name(f"{stem}-{metric}-vs-{_dotted(setting)}")
            if _plot_metric_against(study, experiments, metric, setting, others, path):
                written.append(path)
    return written


def _plot_metric_against(
    study: str, experiments: Sequence[Experiment], metric: str, setting: Setting, others: Sequence[Setting], path: Path
) -> bool:
    numeric = _is_numeric(experiments, setting)
    # A numeric axis has no place for "not set"; a categorical one shows it as the category None.
    shown = [e for e in experiments if e.mean(metric) is not None and not (numeric and e.setting(setting) is None)]
    if not shown:
        return False
    positions = _positions([e.setting(setting) for e in shown], numeric)
    figure, axes = new_figure()
    series = _series(shown, others)
    for index, (label, members) in enumerate(series.items()):
        offset = 0.0 if numeric else _dodge(index, len(series))
        members = sorted(members, key=lambda e: positions[e.setting(setting)])
        axes.errorbar(
            [positions[e.setting(setting)] + offset for e in members],
            [e.plotted_mean(metric) for e in members],
            yerr=[e.plotted_half_width(metric) for e in members],
            marker="o",
            linestyle="-" if numeric else "none",  # a line between categories would suggest values in between
            capsize=3,
            label=literal(label) if label else None,
        )
    _label_x_axis(axes, positions, numeric)
    axes.set_xlabel(literal(_dotted(setting)))
    axes.set_ylabel(AXIS_LABELS[metric])
    axes.set_title(literal(f"{study}: {metric} vs {_dotted(setting)}\nmean ± 95% CI over cycles"), fontsize="medium")
    if others:
        axes.legend(fontsize="small")
    save(figure, path)
    return True


def _is_numeric(experiments: Sequence[Experiment], setting: Setting) -> bool:
    values = [e.setting(setting) for e in experiments if e.setting(setting) is not None]
    return bool(values) and all(_is_number(value) for value in values)


def _is_number(value: Scalar) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _order(value: Scalar) -> tuple[int, float, str]:
    """Sort key across types: numbers by value, everything else by its text after them."""
    if _is_number(value):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _positions(values: Sequence[Scalar], numeric: bool) -> dict[Scalar, float]:
    distinct = sorted(set(values), key=_order)
    if numeric:
        return {value: float(value) for value in distinct if _is_number(value)}
    return {value: float(index) for index, value in enumerate(distinct)}


def _series(experiments: Sequence[Experiment], others: Sequence[Setting]) -> dict[str, list[Experiment]]:
    """One series per combination of the other swept settings, labelled ``backend=pytorch, precision=fp16``."""
    keyed: dict[tuple[Scalar, ...], list[Experiment]] = defaultdict(list)
    for experiment in experiments:
        keyed[tuple(experiment.setting(other) for other in others)].append(experiment)
    ordered = sorted(keyed.items(), key=lambda item: [_order(value) for value in item[0]])
    return {
        ", ".join(f"{_dotted(other)}={value!s}" for other, value in zip(others, key, strict=True)): members
        for key, members in ordered
    }


def _dodge(index: int, count: int) -> float:
    """Side-by-side offsets on a categorical axis, so error bars of different series at one category stay apart."""
    return (index - (count - 1) / 2) * min(0.1, 0.6 / count)


def _label_x_axis(axes: Axes, positions: dict[Scalar, float], numeric: bool) -> None:
    values = list(positions.values())
    if numeric and _spans_doublings(values):
        axes.set_xscale("log", base=2)  # batch sizes and token counts are swept by doubling
    if not numeric or len(values) <= MAX_LABELLED_TICKS:
        axes.set_xticks(values, [literal(str(value)) for value in positions])
        axes.minorticks_off()
    if not numeric and any(len(str(value)) > 8 for value in positions):
        axes.tick_params(axis="x", labelrotation=30)


def _spans_doublings(values: Sequence[float]) -> bool:
    return len(values) >= 3 and min(values) > 0 and max(values) / min(values) >= 8


# --- Pareto: energy per token against latency -----------------------------------------------------------------------


def _plot_pareto(study: str, experiments: Sequence[Experiment], path: Path) -> Path | None:
    latency = _latency_metric(experiments)
    shown = [e for e in experiments if e.mean(latency) is not None and e.mean(ENERGY_PER_TOKEN) is not None]
    if not shown:
        return None
    points = [
        Point(
            e.experiment_id,
            e.plotted_mean(latency),
            e.plotted_mean(ENERGY_PER_TOKEN),
            e.plotted_half_width(latency),
            e.plotted_half_width(ENERGY_PER_TOKEN),
        )
        for e in shown
    ]
    pareto_scatter(
        points,
        title=f"{study}: energy per token vs latency (lower left is better)",
        x_label=f"latency: {AXIS_LABELS[latency]}",
        y_label=AXIS_LABELS[ENERGY_PER_TOKEN],
        bars="experiment (mean ± 95% CI)",
        path=path,
    )
    return path


def _latency_metric(experiments: Sequence[Experiment]) -> str:
    """TTFT where measured, else the median inter-token latency, else the window's duration (always there)."""
    for metric in LATENCY_METRICS[:-1]:
        if any(e.mean(metric) is not None for e in experiments):
            return metric
    return LATENCY_METRICS[-1]


# --- llem_energy windows --------------------------------------------------------------------------------------------


def _plot_windows(study: str, stem: str, windows: Sequence[Experiment], out_dir: Path) -> list[Path]:
    written = []
    for metric in WINDOW_METRICS:
        path = out_dir / file_name(f"{stem}-windows-{metric}")
        if _plot_window_bars(study, windows, metric, path):
            written.append(path)
    return written


def _plot_window_bars(study: str, windows: Sequence[Experiment], metric: str, path: Path) -> bool:
    shown = [w for w in windows if w.mean(metric) is not None]  # an unmeasured window gets no bar, not a zero
    if not shown:
        return False
    figure, axes = new_figure()
    axes.bar(
        range(len(shown)),
        [w.plotted_mean(metric) for w in shown],
        yerr=[w.plotted_half_width(metric) for w in shown],
        capsize=3,
    )
    axes.set_xticks(range(len(shown)), [literal(w.experiment_id) for w in shown])
    axes.tick_params(axis="x", labelrotation=30)
    axes.set_ylabel(AXIS_LABELS[metric])
    axes.set_title(literal(f"{study}: llem_energy windows"), fontsize="medium")
    save(figure, path)
    return True
