"""Prometheus metrics of the daemon, served over HTTP by :func:`start_metrics_server`.

Counters and histograms are updated as requests run:

* ``agentd_requests_total{rpc, code}`` — every RPC by its final status code;
* ``agentd_time_to_first_token_seconds{model}`` and
  ``agentd_inter_token_latency_seconds{model}`` — as the client sees them
  (from the request's arrival; between consecutive tokens);
* ``agentd_generated_tokens_total{model}`` and
  ``agentd_prompt_tokens_total{model, source}`` (``prefilled`` or ``cached``:
  state reused from a session or the prefix cache).

Gauges are read from the served models at scrape time (nothing to keep in
step): ``agentd_queue_depth``, ``agentd_active_sequences``,
``agentd_active_sessions``, ``agentd_model_memory_bytes{model, kind}``
(``weights``; ``states``: running sequences, sessions and the prefix cache),
``agentd_model_loaded{model}`` and the prefix cache's hits and misses.
Everything lives in prometheus_client's default registry, next to its
process metrics (resident memory, CPU time).
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Iterator

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from agentd.server.served import ModelTable

# Latencies of a small model on a phone-class CPU span sub-millisecond to seconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("agentd_requests", "RPCs served, by method and final gRPC status code.", ["rpc", "code"])
TIME_TO_FIRST_TOKEN = Histogram(
    "agentd_time_to_first_token_seconds",
    "Seconds from a Generate request's arrival to its first token.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "agentd_inter_token_latency_seconds",
    "Seconds between consecutive tokens of one Generate stream.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
GENERATED_TOKENS = Counter("agentd_generated_tokens", "Tokens generated.", ["model"])
PROMPT_TOKENS = Counter(
    "agentd_prompt_tokens",
    "Prompt tokens by source: prefilled, or cached (state reused from a session or the prefix cache).",
    ["model", "source"],
)

_tables: "weakref.WeakSet[ModelTable]" = weakref.WeakSet()
_tables_lock = threading.Lock()


def watch(table: "ModelTable") -> None:
    """Report ``table``'s models in the scrape-time gauges (for as long as it lives)."""
    with _tables_lock:
        _tables.add(table)


def unwatch(table: "ModelTable") -> None:
    with _tables_lock:
        _tables.discard(table)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> "WSGIServer":
    """Serve ``/metrics`` over HTTP on ``host:port`` in a daemon thread; port 0 picks a free one.

    Returns the server: ``server.server_port`` is the bound port, ``server.shutdown()`` stops it.
    Loopback by default: metrics name models and sessions counts, so exposing
    them further is a choice to make explicitly.
    """
    server, _thread = start_http_server(port, addr=host)
    return server


class _ServingCollector(Collector):
    """Gauges read from every watched :class:`ModelTable` at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        queue = GaugeMetricFamily("agentd_queue_depth", "Generate requests waiting for a slot.", labels=["model"])
        active = GaugeMetricFamily("agentd_active_sequences", "Sequences holding a slot (prefilling or decoding).", labels=["model"])
        sessions = GaugeMetricFamily("agentd_active_sessions", "Sessions held in memory.", labels=["model"])
        memory = GaugeMetricFamily(
            "agentd_model_memory_bytes",
            "Memory per model: weights, and states (running sequences, sessions, prefix cache).",
            labels=["model", "kind"],
        )
        loaded = GaugeMetricFamily("agentd_model_loaded", "1 if the model is loaded and ready, else 0.", labels=["model"])
        hits = CounterMetricFamily("agentd_prefix_cache_hits", "Prompts that started from a cached prefix state.", labels=["model"])
        misses = CounterMetricFamily("agentd_prefix_cache_misses", "Prompts that found no cached prefix state.", labels=["model"])
        with _tables_lock:
            tables = list(_tables)
        for table in tables:
            per_model = {s.model: 0 for s in table.sessions.list()}
            for session in table.sessions.list():
                per_model[session.model] += 1
            for served in table:
                name = served.name
                engine, cache = served.engine, served.prefix_cache
                queue.add_metric([name], engine.queued_count() if engine is not None else 0)
                active.add_metric([name], engine.active_count() if engine is not None else 0)
                sessions.add_metric([name], per_model.get(name, 0))
                states = table.sessions.total_bytes(name)
                states += engine.state_bytes() if engine is not None else 0
                states += cache.nbytes if cache is not None else 0
                weights = served.weight_bytes if served.status == "ready" else 0
                memory.add_metric([name, "weights"], weights)
                memory.add_metric([name, "states"], states)
                loaded.add_metric([name], 1 if served.status == "ready" else 0)
                if cache is not None:
                    hits.add_metric([name], cache.hits)
                    misses.add_metric([name], cache.misses)
        yield from (queue, active, sessions, memory, loaded, hits, misses)


REGISTRY.register(_ServingCollector())
