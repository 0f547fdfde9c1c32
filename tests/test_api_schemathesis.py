"""The read API driven from its own OpenAPI spec (schemathesis): no 5xx, every answer as specified.

Every check schemathesis has runs on every case (status codes, content types, headers and
bodies conforming to the spec, invalid input refused, the token not ignored), in both
generation modes, over a store holding a few messages and incidents (``api_fixture``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from api_fixture import TOKEN, fill
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from monitor.metrics import Metrics
from monitor.service.api_spec import spec
from monitor.service.app import create_app
from monitor.store import Store


@pytest.fixture(scope="module")
def api_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path_factory.mktemp('st') / 'm.db'}") as store:
        fill(store)
        yield store


@pytest.fixture
def api_schema(api_store: Store) -> Any:
    app = create_app(Metrics(CollectorRegistry()), store=api_store, api_token=TOKEN)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


#: Every check that judges the answer alone; those that send more requests go through
#: ``requests``, which the urllib3 this environment has (urllib3-future, for niquests) breaks,
#: so the one of them that matters here (the token not ignored) is done below by hand.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          positive_data_acceptance]  # fmt: skip
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATHS = spec()["paths"]
# Negative cases where there is a query to break: a path holds no value schemathesis can
# send that breaks the message id's schema (empty, or holding NUL).
CASES = [(path, mode) for path in sorted(PATHS) for mode in GenerationMode
         if mode is GenerationMode.POSITIVE
         or any(p["in"] == "query" for p in PATHS[path]["get"].get("parameters", ()))]


@pytest.mark.parametrize(("path", "mode"), CASES, ids=[f"{p}-{m.value}" for p, m in CASES])
def test_api_conforms_to_its_spec(api_schema: Any, path: str, mode: GenerationMode) -> None:
    """Every generated request answers below 500, in the status, type and shape the spec says,
    and an /api request without the token is refused (401)."""
    # schemathesis.pytest.from_fixture does not work with pytest 9 (it sets a node id pytest
    # no longer has): the operation's strategy is drawn from with Hypothesis directly.
    operation = api_schema[path]["GET"]
    client = TestClient(api_schema.app)

    @given(case=operation.as_strategy(generation_mode=mode, headers=AUTH))
    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=AUTH)
        response = client.request(**_httpx(kwargs))
        assert response.status_code < 500
        case.validate_response(response, checks=CHECKS, headers=AUTH)
        if path.startswith("/api/"):
            kwargs["headers"] = {k: v for k, v in kwargs["headers"].items()
                                 if k.lower() != "authorization"}  # fmt: skip
            # A path no route matches is 404 before any token is asked for; all else is 401.
            unrouted = response.status_code == 404 and response.json() == {"error": "not found"}
            assert client.request(**_httpx(kwargs)).status_code == (404 if unrouted else 401)

    check()


def _httpx(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request's method, URL, headers and query, as httpx (under TestClient) takes them."""
    return {"method": kwargs["method"], "url": kwargs["url"], "headers": kwargs.get("headers"),
            "params": kwargs.get("params")}  # fmt: skip
