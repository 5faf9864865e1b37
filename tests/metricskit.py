"""A local Ray of a test module's own exporting Prometheus metrics on a loopback port, and
reading that endpoint (tests/test_metrics.py, tests/test_dashboards.py)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import paused_shared_ray
from prometheus_client.samples import Sample
from s3kit import free_port

# Ray's workers report metrics to their node's agent this often (metrics_report_interval_ms).
REPORT_INTERVAL_S = 10


@contextmanager
def metrics_endpoint(report_interval_s: float = REPORT_INTERVAL_S) -> Iterator[str]:
    """Start a 2-CPU local Ray serving ``/metrics`` on a free loopback port; yield its URL.

    Args:
        report_interval_s: How often workers report to the agent (Ray's default unless given).
    """
    import ray

    try:  # the node agent's module that serves the endpoint; without it Ray exports nothing
        import ray.dashboard.modules.reporter.reporter_agent  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"Ray's metrics endpoint needs ray[default]: {exc}")
    port = free_port()
    with paused_shared_ray():
        # "local": never join a cluster that another process on this machine started.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _metrics_export_port=port,
            _system_config={"metrics_report_interval_ms": int(report_interval_s * 1000)},
        )
        try:
            yield f"http://127.0.0.1:{port}/metrics"
        finally:
            ray.shutdown()


def samples(url: str) -> Iterator[Sample]:
    """Every sample the endpoint serves now."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        yield from family.samples
