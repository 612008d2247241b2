"""When each request of a load is sent: the rule of ``vllm bench serve`` (gamma-distributed gaps, rescaled so the
whole load lasts n / rate), drawn as it draws them: numpy's legacy generator seeded with the seed, one draw per
request. So the times are the same for every config and cycle, and the same as ``vllm bench serve --seed`` sends."""

from __future__ import annotations

import math


def arrival_times(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Seconds from the load's start at which each of ``n`` requests is sent. ``rate`` inf: all at 0; burstiness inf:
    evenly spaced; otherwise gaps of a gamma distribution of shape ``burstiness`` and mean 1 / rate (a Poisson process
    at 1), their sum rescaled to n / rate as vLLM does (the raw sum drifts 1-2% from it between seeds)."""
    if n <= 0:
        return []
    if math.isinf(rate):
        return [0.0] * n
    if math.isinf(burstiness):
        gaps = [1.0 / rate] * n
    else:
        import numpy as np

        generator = np.random.RandomState(seed)  # vLLM seeds np.random (this generator) and draws one gap per request
        gaps = [float(generator.gamma(shape=burstiness, scale=1.0 / (rate * burstiness))) for _ in range(n)]
    times: list[float] = []
    total = 0.0
    for gap in gaps:
        total += gap
        times.append(total)
    scale = (n / rate) / total
    return [t * scale for t in times]
