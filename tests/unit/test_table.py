"""The terminal table's columns that depend on the study (results built as the plot tests build them)."""

from __future__ import annotations

from pytest_llem.report.table import render_study
from tests.unit.test_plots import STUDY, config, metrics, result, session_of


def test_the_table_gains_the_limit_read_back_only_where_it_varies_across_the_study() -> None:
    def table(limits: list[int | None]) -> list[str]:
        results = [
            result(f"e{k}", config(batch_size=k), metrics(gpu_power_limit_w=None if w is None else float(w)))
            for k, w in enumerate(limits, start=1)
        ]
        session = session_of(results)
        return render_study(session.studies[STUDY], session)

    varying = table([300, 700])
    assert varying[1].split()[:3] == ["experiment", "limit", "W"]
    assert [line.split()[:2] for line in varying[3:5]] == [["e1", "300"], ["e2", "700"]]
    assert not any("limit W" in line for line in table([400, 400]) + table([None, None]))
