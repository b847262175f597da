"""The helpers the monitoring tests rely on do catch what they are meant to catch."""

from __future__ import annotations

from tests.monitoring.contract import github_anchors, metric_names, unknown_metrics


def test_metric_names_skips_functions_labels_and_keywords() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (route, le) ("
        'rate(o2ims_http_request_duration_seconds_bucket{route=~"x|y",code!="5"}[5m] offset 1h)))'
        " / on (route) group_left sum without (instance) (o2ims:http_requests:rate5m) > bool 1"
    )
    assert metric_names(expr) == {
        "o2ims_http_request_duration_seconds_bucket",
        "o2ims:http_requests:rate5m",
    }


def test_a_misspelt_metric_is_reported() -> None:
    names = metric_names('sum(rate(o2ims_http_request_total{code=~"5.."}[5m]))')
    assert unknown_metrics(names, set()) == {"o2ims_http_request_total"}


def test_histogram_series_and_recorded_series_are_known() -> None:
    names = {"o2ims_webhook_delivery_latency_seconds_count", "o2ims:cache_hit:ratio_rate10m"}
    assert unknown_metrics(names, {"o2ims:cache_hit:ratio_rate10m"}) == set()
    assert unknown_metrics(names, set()) == {"o2ims:cache_hit:ratio_rate10m"}


def test_github_anchors() -> None:
    markdown = "# Title\n## 401 Unauthorized\n```sh\n# not a heading\n```\n## SLOs\n## SLOs\n"
    assert github_anchors(markdown) == {"title", "401-unauthorized", "slos", "slos-1"}
