"""Golden stats: each Exim fixture log, through the pipeline and the store, gives the stats on file."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden import check_json
from prometheus_client import CollectorRegistry
from test_exim_parser import CASES, DATA, load

from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.providers import ProviderResolver
from monitor.store import Store


@pytest.mark.parametrize("case", CASES)
def test_golden_stats(case: str, tmp_path: Path) -> None:
    """A log in, per-domain and per-provider stats and the outcome counters out."""
    events, _ = load(case)
    metrics = Metrics(CollectorRegistry())
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        pipeline = Pipeline(store, resolver=ProviderResolver(resolve_mx=False), metrics=metrics)
        pipeline.put_many(events)
        pipeline.flush()
        result = {
            "by_domain": store.stats("domain", include_ndr=True),
            "by_provider": store.stats("provider", include_ndr=True),
            "deliveries_total": {
                "/".join(s.labels[k] for k in ("provider", "domain", "outcome")): s.value
                for f in metrics.registry.collect()
                if f.name == "mailmon_deliveries"
                for s in f.samples
                if s.name.endswith("_total")
            },
        }
    check_json(DATA / f"{case}.stats.json", result)
