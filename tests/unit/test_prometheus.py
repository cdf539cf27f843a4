"""The Prometheus text exposition (format 0.0.4) of the in-process registry."""

from __future__ import annotations

import threading

import pytest

from ragserve.observability.prometheus import CONTENT_TYPE, Registry


@pytest.fixture()
def registry() -> Registry:
    return Registry()  # a fresh one: never the process-wide REGISTRY


def samples(text: str) -> dict[str, str]:
    """'name{labels}' -> value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = value
    return out


def test_content_type_is_the_text_format():
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_counter_has_help_and_type_lines_then_samples(registry):
    counter = registry.counter("jobs_total", "Jobs done.")
    counter.inc(operation="embed", status="2xx")
    counter.inc(2, operation="embed", status="2xx")
    counter.inc(operation="embed", status="4xx")

    lines = registry.render().splitlines()

    assert lines[:2] == ["# HELP jobs_total Jobs done.", "# TYPE jobs_total counter"]
    assert lines[2:] == ['jobs_total{operation="embed",status="2xx"} 3',
                         'jobs_total{operation="embed",status="4xx"} 1']
    assert counter.value(status="2xx", operation="embed") == 3
    assert counter.total() == 4


def test_render_ends_with_a_newline_and_orders_metrics_by_name(registry):
    registry.gauge("b_gauge", "B.").set(1.5)
    registry.counter("a_total", "A.").inc()

    text = registry.render()

    assert text.endswith("\n")
    assert text.index("# HELP a_total") < text.index("# HELP b_gauge")
    assert "# TYPE b_gauge gauge" in text
    assert samples(text) == {"a_total": "1", "b_gauge": "1.5"}


def test_labels_are_sorted_by_name(registry):
    registry.counter("c_total", "C.").inc(zeta="1", alpha="2")

    assert 'c_total{alpha="2",zeta="1"} 1' in registry.render()


def test_label_values_are_escaped(registry):
    registry.counter("e_total", "E.").inc(path='C:\\dir "quoted"\nnext')

    line = registry.render().splitlines()[2]

    assert line == 'e_total{path="C:\\\\dir \\"quoted\\"\\nnext"} 1'
    assert "\n" not in line


def test_help_text_is_escaped(registry):
    # Format 0.0.4: in HELP, backslash and line feed must be escaped as \\ and \n.
    registry.counter("h_total", "First line\nsecond line, a \\ backslash").inc()

    lines = registry.render().splitlines()

    assert lines[0] == "# HELP h_total First line\\nsecond line, a \\\\ backslash"
    assert lines[1] == "# TYPE h_total counter"


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count(registry):
    histogram = registry.histogram("latency_seconds", "Latency.", buckets=(0.5, 0.1, 1.0))  # unsorted on purpose
    for value in (0.05, 0.1, 0.3, 0.7, 5.0):
        histogram.observe(value, operation="embed")

    text = registry.render()

    assert "# TYPE latency_seconds histogram" in text
    assert samples(text) == {
        'latency_seconds_bucket{operation="embed",le="0.1"}': "2",  # le is inclusive: 0.1 counts
        'latency_seconds_bucket{operation="embed",le="0.5"}': "3",
        'latency_seconds_bucket{operation="embed",le="1"}': "4",
        'latency_seconds_bucket{operation="embed",le="+Inf"}': "5",
        'latency_seconds_sum{operation="embed"}': "6.15",
        'latency_seconds_count{operation="embed"}': "5",
    }
    assert histogram.count(operation="embed") == 5


def test_histogram_bucket_lines_come_in_increasing_le_order(registry):
    histogram = registry.histogram("h_seconds", "H.", buckets=(10, 1, 5))
    histogram.observe(3)

    bucket_lines = [line for line in registry.render().splitlines() if "_bucket" in line]

    assert [line.split('le="')[1].split('"')[0] for line in bucket_lines] == ["1", "5", "10", "+Inf"]
    counts = [float(line.rpartition(" ")[2]) for line in bucket_lines]
    assert counts == sorted(counts)


def test_registry_returns_the_same_metric_for_the_same_name(registry):
    first = registry.counter("same_total", "Same.")

    assert registry.counter("same_total", "Same.") is first


def test_counter_is_thread_safe(registry):
    counter = registry.counter("t_total", "T.")

    def work():
        for _ in range(2000):
            counter.inc(kind="x")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert counter.value(kind="x") == 16_000
