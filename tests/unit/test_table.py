"""The terminal table's columns that depend on the study (results built as the plot tests build them)."""

from __future__ import annotations

from typing import Any

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


def serving_result(experiment_id: str, rate: float | str, steady: float | None, attainment: float, **fields: Any):
    settings = config(scenario="serving", serving={"request_rate": rate, "slo": {"ttft_ms": 500.0, "attainment": 0.9}})
    m = metrics(steady_energy_per_output_token_j=steady, slo_attainment=attainment, **fields)
    return result(experiment_id, settings, m)


def test_serving_rows_get_their_own_table_and_the_cheapest_config_meeting_the_slo_per_rate() -> None:
    results = [
        serving_result("a-8", 8.0, 0.030, 0.95),
        serving_result("b-8", 8.0, 0.020, 0.92),  # the cheapest meeting the SLO at 8 req/s
        serving_result("c-8", 8.0, 0.010, 0.50),  # cheaper, but misses the SLO
        serving_result("a-inf", "inf", None, 1.0),  # its steady state could not be measured
        serving_result("b-inf", "inf", 0.040, 0.99),
        result("offline", config(), metrics()),
    ]
    session = session_of(results)
    lines = render_study(session.studies[STUDY], session)
    headers = [line for line in lines if line.startswith("experiment")]
    assert len(headers) == 2 and "steady J/tok (95% CI)" in headers[1] and "steady" not in headers[0]
    below = lines[lines.index("cheapest steady energy per token meeting the SLO, per request rate:") :]
    assert below[1:6] == [
        "  rate 8 req/s: b-8 costs the least meeting the SLO: 0.0200 J/tok steady",
        "    a-8: +50%",
        "    c-8: misses the SLO (50% of requests within it)",
        "  rate inf: b-inf costs the least meeting the SLO: 0.0400 J/tok steady",
        "    a-inf: steady J/tok not measured",
    ]


def test_without_a_price_at_a_rate_the_lines_say_why_and_still_list_each_configuration() -> None:
    results = [
        serving_result("met", 8.0, None, 0.95),  # meets the SLO, its steady J/tok not measured
        serving_result("missed", 8.0, 0.01, 0.50),
        serving_result("missed-inf", "inf", 0.01, 0.38),
    ]
    session = session_of(results)
    lines = render_study(session.studies[STUDY], session)
    below = lines[lines.index("cheapest steady energy per token meeting the SLO, per request rate:") + 1 :]
    assert below[:5] == [
        "  rate 8 req/s: steady J/tok was not measured",
        "    missed: misses the SLO (50% of requests within it)",
        "    met: steady J/tok not measured",
        "  rate inf: no configuration meets the SLO",
        "    missed-inf: misses the SLO (38% of requests within it)",
    ]


def test_the_serving_table_gains_the_limit_where_it_varies() -> None:
    results = [
        serving_result("low", 8.0, 0.02, 1.0, gpu_power_limit_w=300.0),
        serving_result("high", 8.0, 0.03, 1.0, gpu_power_limit_w=700.0),
    ]
    session = session_of(results)
    lines = render_study(session.studies[STUDY], session)
    header = next(line for line in lines if line.startswith("experiment"))
    assert header.split()[:3] == ["experiment", "limit", "W"]
