"""/openapi.json describes exactly the admin, token and operational routes the app serves."""

from __future__ import annotations

import re

from proxy.app import create_app
from proxy.openapi import openapi_document

# routes that are not part of the JSON API: the OpenAI-compatible proxy itself and the dashboard's pages
_NOT_API = re.compile(r"^/(v1|api/v1)/|^/static/|^/(logs|usage|tokens|cache)?$")


def _served(app) -> set[tuple[str, str]]:
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        method = route.method.lower()
        if method in {"head", "*"} or _NOT_API.search(path):
            continue
        served.add((method, path))
    return served


def test_openapi_lists_every_api_route_and_nothing_else(make_settings):
    app = create_app(make_settings())
    documented = {(method, path) for path, ops in openapi_document()["paths"].items() for method in ops}
    served = _served(app)
    assert served - documented == set(), "routes missing from /openapi.json"
    assert documented - served == set(), "/openapi.json documents routes the app does not serve"


def test_openapi_document_is_well_formed():
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids)), "operation ids are unique"
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == names, f"{path}: path parameters declared"
