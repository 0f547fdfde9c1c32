"""Golden stats: each fixture log of every MTA, through the pipeline and the store, gives the stats on file."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_exim_parser
import test_postfix_parser
from golden import check_json
from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.providers import ProviderResolver
from monitor.store import Store

SOURCES = {"postfix": test_postfix_parser, "exim": test_exim_parser}
CASES = [(name, case) for name, module in SOURCES.items() for case in module.CASES]


@pytest.mark.parametrize(("source", "case"), CASES)
def test_golden_stats(source: str, case: str, tmp_path: Path) -> None:
    """A log in, per-domain and per-provider stats and the outcome counters out."""
    module = SOURCES[source]
    events, _ = module.load(case)
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
                for f in metrics.registry.collect() if f.name == "mailmon_deliveries"
                for s in f.samples if s.name.endswith("_total")
            },
        }
    check_json(module.DATA / f"{case}.stats.json", result)
