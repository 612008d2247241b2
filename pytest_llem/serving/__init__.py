"""Serving items: an OpenAI-compatible server (started or given), a seeded load of streamed requests, and what the
requests' timelines say (latencies, SLO goodput, the steady-state window)."""
