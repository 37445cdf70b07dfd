"""Prometheus metrics of one server (its own registry, so two apps in one process never collide).

Histogram buckets reach minutes: a long text streams for a long time, and the default buckets stop at 10 s.
Queue depth and batch occupancy are read from the scheduler when scraped.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qwen3tts_cli.engine.scheduler import SchedulerStats

FIRST_AUDIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300)
DURATION_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200)
RTF_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 20)


class _SchedulerCollector(Collector):
    """Gauges read from the scheduler at scrape time."""

    def __init__(self, stats: Callable[[], SchedulerStats]) -> None:
        self._stats = stats

    def collect(self):  # type: ignore[no-untyped-def]
        stats = self._stats()
        values = {
            "qwen3tts_queue_depth": ("Requests waiting for a batch slot.", stats.requests_waiting),
            "qwen3tts_queue_limit": (
                "Requests that may wait before new ones are refused.",
                stats.max_waiting,
            ),
            "qwen3tts_batch_sequences": (
                "Sequences in the shared llama.cpp batch.",
                stats.sequences_in_flight,
            ),
            "qwen3tts_batch_slots": ("Sequence slots of the shared batch (--max-batch).", stats.max_batch),
            "qwen3tts_requests_generating": ("Requests with generation started.", stats.requests_running),
        }
        for name, (help_text, value) in values.items():
            yield GaugeMetricFamily(name, help_text, value=value)


class Metrics:
    def __init__(self, stats: Callable[[], SchedulerStats]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "qwen3tts_http_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "qwen3tts_http_requests_in_flight", "HTTP requests being answered.", registry=self.registry
        )
        self.first_audio = Histogram(
            "qwen3tts_time_to_first_audio_seconds",
            "From the request to its first audio bytes.",
            buckets=FIRST_AUDIO_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "qwen3tts_request_duration_seconds",
            "Whole synthesis requests, first byte to last.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            "qwen3tts_audio_seconds", "Seconds of audio generated.", registry=self.registry
        )
        self.rtf = Histogram(
            "qwen3tts_real_time_factor",
            "Request wall time / audio seconds (below 1: faster than real time).",
            buckets=RTF_BUCKETS,
            registry=self.registry,
        )
        self.cancelled = Counter(
            "qwen3tts_requests_cancelled",
            "Synthesis requests stopped early (client gone or timeout).",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_SchedulerCollector(stats))

    def record_synthesis(self, first_audio: float | None, wall: float, audio: float) -> None:
        if first_audio is not None:
            self.first_audio.observe(first_audio)
        self.duration.observe(wall)
        self.audio_seconds.inc(audio)
        if audio > 0:
            self.rtf.observe(wall / audio)

    def render(self) -> bytes:
        return generate_latest(self.registry)
