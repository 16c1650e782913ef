"""Prometheus metrics, one registry per app so that several apps (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "icl_requests", "HTTP requests by route and status.", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "icl_request_latency_seconds", "HTTP request latency by route.", ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.prompt_tokens = Counter("icl_prompt_tokens", "Prompt tokens of predicted inputs.",
                                     registry=self.registry)
        self.calibration_tokens = Counter("icl_calibration_tokens", "Prompt tokens spent on calibration.",
                                          registry=self.registry)
        self.cached_tokens = Counter("icl_cached_tokens", "Tokens served from the prefix cache.",
                                     registry=self.registry)
        self.demos_per_input = Histogram(
            "icl_demos_per_input", "Demonstrations placed in each input's prompt.", registry=self.registry,
            buckets=(0, 1, 2, 4, 8, 16, 32, 64),
        )
        self.predicted_inputs = Counter("icl_predicted_inputs", "Inputs classified.", registry=self.registry)
        self.engine_queue_depth = Gauge("icl_engine_queue_depth", "Requests waiting or running in the engine.",
                                        registry=self.registry)
        self.engine_ready = Gauge("icl_engine_ready", "1 once the engine answers.", registry=self.registry)
