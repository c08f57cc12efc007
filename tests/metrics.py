"""Reading the service's /metrics in tests (prometheus_client's own parser)."""

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} for every sample in a scrape."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent (a counter nobody incremented yet)."""
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def requests_by_route(text: str) -> dict[tuple[str, str, str], float]:
    """{(method, route, status): count} from lstm_http_requests_total."""
    return {
        (dict(labels)["method"], dict(labels)["route"], dict(labels)["status"]): count
        for (name, labels), count in samples(text).items()
        if name == "lstm_http_requests_total"
    }
