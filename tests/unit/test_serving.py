"""Serving's library code: arrival times, the metrics' definitions on timelines written by hand, the steady-state
window, the load generator against a local OpenAI-compatible server, the server's start and stop, and the study
fields."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pytest_llem.backends.vllm import sampling_options
from pytest_llem.config.models import ExperimentConfig
from pytest_llem.runner.serve import request_options, request_specs
from pytest_llem.serving.arrivals import arrival_times
from pytest_llem.serving.client import run_load, warm_up
from pytest_llem.serving.metrics import steady_warnings, steady_window, summarize, tokens_between
from pytest_llem.serving.requests import RequestRecord, RequestSpec, payload
from pytest_llem.serving.server import (
    ServerError,
    StartedServer,
    external,
    free_port,
    on_this_machine,
    reset_prefix_cache,
)
from pytest_llem.serving.vllm_server import server_argv
from pytest_llem.study.hashing import compute_config_hash
from pytest_llem.workload.build import Workload
from tests.openai_fake import FakeOpenAIServer


def record(send: float, *chunks: float, tokens: int | None = None, error: str | None = None) -> RequestRecord:
    return RequestRecord(send_s=send, chunk_s=list(chunks), output_tokens=tokens, prompt_tokens=10, error=error)


# --- arrivals ---------------------------------------------------------------------------------------------------


@given(n=st.integers(1, 300), rate=st.floats(0.1, 100.0), burstiness=st.floats(0.2, 5.0), seed=st.integers(0, 2**31))
def test_arrivals_are_seeded_ordered_and_span_n_over_rate(n: int, rate: float, burstiness: float, seed: int) -> None:
    times = arrival_times(n, rate, burstiness, seed)
    assert times == arrival_times(n, rate, burstiness, seed)  # the same for every config and cycle
    assert len(times) == n
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert times[-1] == pytest.approx(n / rate)  # vLLM's rescaling: the load lasts n / rate whatever the draw


def test_arrivals_are_the_ones_vllm_bench_serve_draws_for_the_same_seed() -> None:
    """vllm bench serve calls np.random.seed(seed), then np.random.gamma once per request (serve.py), and rescales the
    sum to n / rate: the same seed gives the same send times (perf/p7_serving.py checks it against vLLM's own)."""
    import numpy as np

    state = np.random.get_state()
    try:
        np.random.seed(42)
        gaps = [np.random.gamma(shape=0.5, scale=1.0 / (4.0 * 0.5)) for _ in range(50)]
    finally:
        np.random.set_state(state)
    sums = list(itertools.accumulate(gaps))
    assert arrival_times(50, 4.0, 0.5, 42) == pytest.approx([t * (50 / 4.0) / sums[-1] for t in sums])


def test_rate_inf_sends_everything_at_once_and_burstiness_inf_evenly() -> None:
    assert arrival_times(5, math.inf, 1.0, 0) == [0.0] * 5
    assert arrival_times(4, 2.0, math.inf, 0) == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_burstiness_shapes_the_gaps_and_the_seed_changes_them() -> None:
    def spread(burstiness: float) -> float:
        times = arrival_times(2000, 10.0, burstiness, 1)
        gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
        mean = sum(gaps) / len(gaps)
        return (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean

    assert spread(1.0) == pytest.approx(1.0, abs=0.1)  # Poisson: exponential gaps, CV 1
    assert spread(4.0) == pytest.approx(0.5, abs=0.1)  # gamma of shape k: CV 1/sqrt(k)
    assert arrival_times(10, 5.0, 1.0, 1) != arrival_times(10, 5.0, 1.0, 2)


# --- the metrics' definitions -------------------------------------------------------------------------------------


def test_ttft_tpot_itl_e2el_as_vllm_bench_serve_defines_them() -> None:
    # sent at 0, first token at 0.5, then 4 more tokens; the last at 1.3 → E2EL 1.3, TPOT (1.3 - 0.5) / 4
    a = record(0.0, 0.5, 0.7, 0.9, 1.1, 1.3, tokens=5)
    b = record(1.0, 1.2, tokens=1)  # one token: no TPOT, no interval
    summary = summarize([a, b], {})
    assert summary.ttft == pytest.approx([0.5, 0.2])
    assert summary.e2el == pytest.approx([1.3, 0.2])
    assert summary.tpot == pytest.approx([0.2])
    assert summary.itl == pytest.approx([0.2, 0.2, 0.2, 0.2])
    assert (summary.sent, summary.completed, summary.failed) == (2, 2, 0)
    assert (summary.input_tokens, summary.output_tokens) == (20, 6)


def test_tpot_spreads_bundled_chunks_over_the_server_count() -> None:
    # 2 chunks carrying 9 tokens: TPOT is per token (usage count), ITL per chunk
    summary = summarize([record(0.0, 1.0, 1.8, tokens=9)], {})
    assert summary.tpot == pytest.approx([0.1])
    assert summary.itl == pytest.approx([0.8])


def test_output_tokens_without_usage_come_from_the_text_else_the_chunks() -> None:
    no_usage = RequestRecord(send_s=0.0, chunk_s=[0.1, 0.2, 0.3], text="a b c d")
    assert summarize([no_usage], {}, count_tokens=lambda text: len(text.split())).output_tokens == 4
    assert summarize([no_usage], {}).output_tokens == 3


def test_goodput_counts_requests_within_every_target() -> None:
    fast = record(0.0, 0.1, 0.2, tokens=2)  # ttft 0.1, tpot 0.1
    slow_first = record(0.0, 0.9, 1.0, tokens=2)  # ttft 0.9
    slow_rest = record(0.0, 0.1, 1.1, tokens=2)  # tpot 1.0
    failed = record(0.0, error="HTTP 500")
    summary = summarize([fast, slow_first, slow_rest, failed], {"ttft": 0.5, "tpot": 0.5})
    assert summary.meeting_slo == 1
    assert (summary.completed, summary.failed) == (3, 1)
    assert summary.errors == ["HTTP 500"]
    assert summarize([fast, slow_first, slow_rest], {"ttft": 0.5}).meeting_slo == 2
    assert summarize([fast, slow_first, slow_rest], {}).meeting_slo == 3


# --- the steady-state window --------------------------------------------------------------------------------------


def test_rate_inf_window_runs_from_a_full_batch_to_the_drain() -> None:
    # 6 requests, batch limit 2: starts at the 2nd first token (0.3), ends at the 4th end (n - limit = 4 finished)
    records = [record(0.0, first, end, tokens=2) for first, end in
               [(0.1, 1.0), (0.3, 2.0), (0.5, 3.0), (0.7, 4.0), (0.9, 5.0), (1.1, 6.0)]]  # fmt: skip
    window = steady_window(records, math.inf, batch_limit=2)
    assert (window.start_s, window.end_s) == (0.3, 4.0)
    assert window.reason is None


def test_rate_inf_window_needs_a_batch_limit_and_enough_requests() -> None:
    records = [record(0.0, 0.1 * k, 1.0 + k, tokens=2) for k in range(1, 4)]
    assert "max_num_seqs" in (steady_window(records, math.inf, None).reason or "")
    too_few = steady_window(records, math.inf, batch_limit=2)
    assert too_few.duration_s is None and "2 x 2" in (too_few.reason or "")


def test_finite_rate_window_runs_from_the_first_token_to_the_last_arrival() -> None:
    records = [record(0.0, 0.4, 0.9, tokens=2), record(1.0, 1.3, 2.0, tokens=2), record(2.5, 2.6, 3.5, tokens=2)]
    window = steady_window(records, 2.0, batch_limit=None)
    assert (window.start_s, window.end_s, window.duration_s) == (0.4, 2.5, pytest.approx(2.1))
    first_failed = [record(0.0, error="boom"), *records[1:]]  # the window starts at the first token that came
    assert (steady_window(first_failed, 2.0, None).start_s, steady_window(first_failed, 2.0, None).end_s) == (1.3, 2.5)


def test_tokens_inside_the_window_share_each_request_over_its_chunks() -> None:
    records = [record(0.0, 1.0, 2.0, 3.0, 4.0, tokens=8), record(0.0, 5.0, error="x")]
    assert tokens_between(records, 1.5, 3.5) == pytest.approx(4.0)  # 2 of 4 chunks, 2 tokens each


def test_short_steady_windows_are_warned_about() -> None:
    window = steady_window([record(0.0, 1.0, tokens=1), record(11.0, 11.5, tokens=1)], 0.2, None)
    assert window.duration_s == 10.0
    assert any("30 s" in w for w in steady_warnings(window, load_s=12.0, on_gpu=True))
    assert steady_warnings(window, load_s=12.0, on_gpu=False) == []
    assert any("under 20%" in w for w in steady_warnings(window, load_s=100.0, on_gpu=False))


# --- the load generator against a local server --------------------------------------------------------------------


def test_load_streams_every_request_and_times_each_chunk() -> None:
    specs = [RequestSpec(f"prompt number {k}", max_tokens=3 + k) for k in range(4)]
    with FakeOpenAIServer(model="m") as server:
        records = run_load(server.url, "m", specs, [0.0] * 4, {"temperature": 0.0})
    assert [r.output_tokens for r in records] == [3, 4, 5, 6]  # the order of the specs, counts from usage
    assert [len(r.chunk_s) for r in records] == [3, 4, 5, 6]
    assert [r.prompt_tokens for r in records] == [3, 3, 3, 3]
    assert all(r.ok and r.send_s <= r.chunk_s[0] <= r.chunk_s[-1] for r in records)
    assert records[0].text == " t0 t1 t2"
    body = server.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["temperature"]) == ("m", 0.0)


def test_requests_wait_for_their_arrival_time() -> None:
    with FakeOpenAIServer() as server:
        before = time.perf_counter()
        records = run_load(server.url, "fake-model", [RequestSpec("a", 1)] * 2, [0.0, 0.3], {})
    assert records[1].send_s - before >= 0.3  # the load starts after ``before``: never sent early, however busy


def test_max_concurrency_caps_requests_in_flight() -> None:
    with FakeOpenAIServer(token_s=0.02) as server:
        records = run_load(server.url, "fake-model", [RequestSpec("a", 3)] * 8, [0.0] * 8, {}, max_concurrency=2)
    assert all(r.ok for r in records)
    assert server.most_in_flight == 2


def test_a_failed_request_is_recorded_not_raised() -> None:
    with FakeOpenAIServer(fail_every=2) as server:
        records = warm_up(server.url, "fake-model", [RequestSpec("a", 2)] * 4, {}, max_concurrency=1)
    assert [r.ok for r in records] == [True, False, True, False]
    assert "HTTP 500" in (records[1].error or "")


def test_an_unreachable_server_fails_every_request_with_the_reason() -> None:
    records = run_load(f"http://127.0.0.1:{free_port()}", "m", [RequestSpec("a", 2)], [0.0], {})
    assert not records[0].ok and "Connect" in (records[0].error or "")


# --- the server --------------------------------------------------------------------------------------------------


def test_the_prefix_cache_is_emptied_where_the_server_offers_it() -> None:
    with FakeOpenAIServer() as server:
        assert reset_prefix_cache(server.url) is None and server.resets == 1
    with FakeOpenAIServer(prefix_cache_reset=False) as server:
        assert reset_prefix_cache(server.url) == "POST /reset_prefix_cache answered HTTP 404"
    assert "failed" in (reset_prefix_cache(f"http://127.0.0.1:{free_port()}") or "")


def test_a_url_on_another_host_is_told_apart_from_this_machine() -> None:
    import socket

    assert on_this_machine("http://127.0.0.1:8000") and on_this_machine("http://localhost:8000/")
    assert on_this_machine(f"http://{socket.gethostname()}:8000") and on_this_machine("http://[::1]:8000")
    assert not on_this_machine("http://192.0.2.7:8000")  # TEST-NET-1: nobody's address
    assert not on_this_machine("http://gpu-node-17.example.com:8000")


def test_external_server_names_its_model_or_says_why_not() -> None:
    with FakeOpenAIServer(model="served") as server:
        assert external(server.url + "/").model_name == "served"
        assert external(server.url, "served").base_url == server.url
    with pytest.raises(ServerError, match="OpenAI-compatible"):
        external(f"http://127.0.0.1:{free_port()}")


def test_started_server_is_ready_when_healthy_and_gone_after_stop(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("ok")  # python's http.server answers /health with this file
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with StartedServer(argv, port, tmp_path / "log", 60.0, dict(os.environ)) as server:
        process = server._process
        assert process is not None and process.poll() is None
        assert server.startup_s is not None
    assert process.poll() is not None  # stopped: the port is free for the next item


def test_a_server_that_exits_fails_with_the_end_of_its_output(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('engine says: no such model'); sys.exit(3)"]
    with pytest.raises(ServerError, match=r"exited with code 3(.|\n)*no such model"):
        StartedServer(argv, free_port(), tmp_path / "log", 60.0, dict(os.environ)).__enter__()


def test_a_server_that_never_answers_is_given_up_after_the_timeout(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('loading', flush=True); time.sleep(60)"]
    started = time.perf_counter()
    with pytest.raises(ServerError, match=r"not ready after(.|\n)*loading"):
        StartedServer(argv, free_port(), tmp_path / "log", 1.0, dict(os.environ)).__enter__()
    assert time.perf_counter() - started < 30  # and the process was stopped, not waited for


# --- the study fields ---------------------------------------------------------------------------------------------


def serving(**fields: object) -> ExperimentConfig:
    """A serving experiment; its requests are capped at 2 in flight (rate inf needs a batch limit) unless ``fields``
    give a serving section of their own."""
    base = {"model": "m", "backend": "vllm", "scenario": "serving", "n": 8}
    return ExperimentConfig(**(base | fields))


def capped(**serving_fields: object) -> dict:
    return {"max_concurrency": 2} | serving_fields


@pytest.mark.parametrize("written", ["inf", float("inf")])
def test_request_rate_inf_has_one_spelling(written: object) -> None:
    assert serving(serving=capped(request_rate=written)).serving_settings.request_rate == "inf"
    assert serving(serving=capped(request_rate=written)).serving_settings.rate == math.inf


@pytest.mark.parametrize("written", [0, -1, "fast", True, float("nan")])
def test_request_rate_refuses_what_is_not_a_rate(written: object) -> None:
    with pytest.raises(ValidationError, match="positive number of requests per second or inf"):
        serving(serving={"request_rate": written})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"backend": "pytorch"}, "backend pytorch has none"),
        ({"phases": True}, "phases"),
        ({"vllm": {"beam_search": {"beam_width": 2}}}, "beam search is offline only"),
        ({"vllm": {"sampling": {"n": 2}}}, "one completion"),
        (
            {"serving": {"url": "http://127.0.0.1:1"}, "vllm": {"engine": {"max_num_seqs": 4}}},
            "vllm.engine: serving.url",
        ),
        ({"scenario": "offline", "serving": {"request_rate": 2.0}}, "scenario is offline"),
    ],
)
def test_impossible_serving_settings_are_invalid_combinations(fields: dict, reason: str) -> None:
    base: dict = {"model": "m", "backend": "vllm", "scenario": "serving", "serving": capped()}
    with pytest.raises(ValidationError, match="invalid_combination") as raised:
        ExperimentConfig(**(base | fields))
    assert reason in str(raised.value)


def test_serving_url_measures_any_backend_s_server() -> None:
    assert serving(backend="pytorch", serving=capped(url="http://127.0.0.1:8000")).serving_settings.url


def test_offline_experiments_keep_their_hash_and_serving_ones_differ_by_rate() -> None:
    offline = ExperimentConfig(model="m")
    assert "scenario" not in offline.identity() and "serving" not in offline.identity()
    hashes = {compute_config_hash(serving(serving=capped(request_rate=r))) for r in (2, 8, "inf")}
    assert len(hashes) == 3 and compute_config_hash(offline) not in hashes
    waited_longer = serving(serving=capped(request_rate=2, startup_timeout_seconds=60.0))
    assert compute_config_hash(waited_longer) == compute_config_hash(serving(serving=capped(request_rate=2)))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"serving": {"request_rate": "inf"}}, "set vllm.engine.max_num_seqs (or serving.max_concurrency)"),
        ({"serving": capped(), "n": 3}, "n: 3 requests at rate inf never fill a batch of 2 and drain it again"),
        (
            {"serving": capped(max_concurrency=8), "vllm": {"engine": {"max_num_seqs": 4}}, "n": 7},
            "never fill a batch of 4",  # the smaller of the two limits
        ),
    ],
)
def test_rate_inf_without_a_steady_state_is_an_invalid_combination(fields: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match="invalid_combination") as raised:
        serving(**fields)
    assert reason in str(raised.value)
    finite = fields | {"serving": {**fields["serving"], "request_rate": 4.0, "max_concurrency": None}}
    assert serving(**finite).serving_settings.rate == 4.0  # a finite rate needs neither a batch limit nor n over it


def test_server_command_carries_the_engine_options_as_flags() -> None:
    config = serving(
        precision="fp32",
        n=32,
        vllm={"engine": {"max_num_seqs": 16, "enable_prefix_caching": False, "enforce_eager": True}},
        passthrough_kwargs={"override_generation_config": {"temperature": 0.5}},
    )
    argv = server_argv(config, "/models/m", "cpu", 8123)
    joined = " ".join(argv)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--model /models/m --host 127.0.0.1 --port 8123 --served-model-name m" in joined
    assert "--max-num-seqs 16" in joined and "--no-enable-prefix-caching" in joined and "--enforce-eager" in joined
    assert "--dtype float32" in joined and '--override-generation-config {"temperature": 0.5}' in joined
    assert "--disable-log-stats" not in joined and "--use-tqdm-on-load" not in joined


ITEM = """
import os, sys, time
from pathlib import Path
from pytest_llem.serving.server import StartedServer, free_port

os.setsid()  # as an isolated item does (runner/child.py)
folder = Path(sys.argv[1])
server = '''
import os, subprocess, sys, time
from pathlib import Path
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
Path(sys.argv[1], "pids").write_text(f"{os.getpid()} {helper.pid}")
time.sleep(600)  # never healthy: the item waits for it until it is killed
'''
argv = [sys.executable, "-c", server, str(folder)]
StartedServer(argv, free_port(), folder / "log", 600.0, dict(os.environ)).__enter__()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")  # a zombie is gone, only not yet reaped


def wait_for(condition, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("kill", ["item only", "item's process group"])
def test_a_server_never_outlives_the_item_that_started_it(tmp_path: Path, kill: str) -> None:
    """Killed alone (pytest died: the item gets SIGKILL from its parent's death), the item's server gets SIGTERM from
    the kernel; killed with its group (a timeout), everything the server started goes too. Waits on pid files, not on
    the machine's speed."""
    import signal
    import subprocess

    (tmp_path / "item.py").write_text(ITEM)
    item = subprocess.Popen([sys.executable, str(tmp_path / "item.py"), str(tmp_path)])
    try:
        assert wait_for(lambda: (tmp_path / "pids").exists() and len((tmp_path / "pids").read_text().split()) == 2)
        server, helper = map(int, (tmp_path / "pids").read_text().split())
        if kill == "item only":
            os.kill(item.pid, signal.SIGKILL)
            assert wait_for(lambda: not alive(server), 30.0)
        else:
            os.killpg(item.pid, signal.SIGKILL)
            assert wait_for(lambda: not alive(server) and not alive(helper), 30.0)
    finally:
        item.kill()
        item.wait()
        for pid in [int(p) for p in (tmp_path / "pids").read_text().split()] if (tmp_path / "pids").exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_request_samples_as_an_offline_vllm_item_of_the_same_config_with_its_own_length() -> None:
    config = serving(
        decoder={"temperature": 0.7, "top_k": 20, "min_new_tokens": 16, "repetition_penalty": 1.2},
        max_output_tokens=32,
        vllm={"sampling": {"presence_penalty": 0.5}},
        serving=capped(),
    )
    options = request_options(config, Workload(["hi"], templated=True))
    offline = sampling_options(config)
    assert {k: v for k, v in options.items() if k not in ("seed", "add_special_tokens")} == {
        k: v for k, v in offline.items() if k not in ("max_tokens", "n")
    }
    assert options["seed"] == config.random_seed and options["add_special_tokens"] is False
    [spec] = request_specs(config, Workload(["hi"], templated=True, output_lens=[6]))  # e.g. a reference length
    body = payload(spec, "m", options)
    assert body["max_tokens"] == 6 and body["presence_penalty"] == 0.5
    assert body["min_tokens"] == 6  # 16 asked, but no request may ask for more than its own length
