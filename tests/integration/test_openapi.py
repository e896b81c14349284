"""The OpenAPI document (`server/openapi.yaml`, served at /v1/openapi.yaml) matches the app: every
JSON API route with its methods and path parameters, one error contract (problem+json) on every
error response, the action type registry and the marshmallow request schemas; its examples and
real responses validate against its schemas.

No OPA is needed: the app is built against a closed loopback port, so OPA is "unreachable" and the
fail-closed answers (503) are what the live checks see."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from server import create_app
from server.auth.api import TokenCreateSchema
from server.auth.models import ROLES
from server.extensions import services
from server.governance.actions import ACTOR_KINDS, ActorSchema, DecisionRequestSchema, TargetSchema, action_types
from server.governance.api import DecisionQuerySchema, KillSwitchRequestSchema
from server.migrate import upgrade
from server.policy.sidecar import free_loopback_port
from tests.conftest import ROOT, make_settings, make_token

SPEC_PATH = ROOT / "server" / "openapi.yaml"
SPEC_URI = "urn:smartlinks:openapi"
API_PREFIXES = ("/v1/", "/healthz", "/readyz", "/metrics")
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_JSON = "application/problem+json"
# The documented error responses whose body is not (only) a problem: (path, method, status) ->
# the other media type. POST /v1/decisions answers an unreachable OPA with the recorded decision
# (allow=false, reason opa_unavailable); /readyz answers "not ready" with its readiness report.
NOT_PROBLEMS = {
    ("/v1/decisions", "post", "503"): "application/json",
    ("/readyz", "get", "503"): "application/json",
}
MAX_BODY = 4096

ALLOCATION = {
    "action": {
        "type": "allocation.update",
        "actor": {"id": "algo:thompson_sampling", "kind": "algorithm"},
        "target": {"kind": "link", "id": "lnk_42"},
        "params": {"algorithm": "thompson_sampling", "weights": {"offer_1": 0.7, "offer_2": 0.3}},
    },
    "state": {"arms": ["offer_1", "offer_2"], "current_weights": {"offer_1": 0.5, "offer_2": 0.5}},
}


# -- helpers ---------------------------------------------------------------------------------------
def openapi_path(rule: str) -> str:
    """/v1/tokens/<int:token_id> -> /v1/tokens/{token_id}"""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def converters(rule: str) -> dict[str, str]:
    """{variable: converter} of a Flask rule ("default" when none is named)."""
    return {m.group(2): m.group(1) or "default" for m in re.finditer(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", rule)}


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def is_page(operation: dict[str, Any]) -> bool:
    return "pages" in operation.get("tags", [])


def resolve(spec: dict[str, Any], node: Any) -> Any:
    """Follow local `$ref`s until a node that is not a reference."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references are used: {ref}"
        assert ref not in seen, f"reference cycle at {ref}"
        seen.add(ref)
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refers_to_problem(spec: dict[str, Any], schema: Any, depth: int = 0) -> bool:
    """The schema is Problem, a reference to it, an allOf that includes it, or an anyOf/oneOf
    whose every branch does."""
    assert depth < 20, "schema nesting too deep"
    if not isinstance(schema, dict):
        return False
    if schema.get("$ref") == PROBLEM_REF:
        return True
    if "$ref" in schema:
        return refers_to_problem(spec, resolve(spec, schema), depth + 1)
    if any(refers_to_problem(spec, s, depth + 1) for s in schema.get("allOf", [])):
        return True
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return all(refers_to_problem(spec, s, depth + 1) for s in schema[key])
    return False


def api_routes(app: Flask) -> dict[str, dict[str, str]]:
    """{openapi path: {method: endpoint}} of the app's JSON API routes."""
    out: dict[str, dict[str, str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIXES):
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            out.setdefault(openapi_path(rule.rule), {})[method.lower()] = rule.endpoint
    return out


def marshmallow_fields(schema: type[Schema]) -> tuple[set[str], set[str]]:
    """(field names, required field names) of a marshmallow schema."""
    declared = schema().fields
    return set(declared), {name for name, f in declared.items() if f.required}


def schema_fields(spec: dict[str, Any], name: str) -> tuple[set[str], set[str]]:
    schema = spec["components"]["schemas"][name]
    return set(schema.get("properties", {})), set(schema.get("required", []))


def one_of_choices(schema: type[Schema], field: str) -> list[str]:
    (choice,) = [v for v in schema().fields[field].validators if isinstance(v, validate.OneOf)]
    return list(choice.choices)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def registry(spec: dict[str, Any]) -> Registry:
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))


def validator(registry: Registry, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for a schema taken from the spec; its local `$ref`s resolve inside the spec."""
    return jsonschema.Draft202012Validator(_absolute_refs(schema), registry=registry)


def _absolute_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (SPEC_URI + v if k == "$ref" and isinstance(v, str) and v.startswith("#/") else _absolute_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


@pytest.fixture
def offline_app(tmp_path: Path) -> Iterator[Flask]:
    """The app on a migrated SQLite database, with OPA "at" a loopback port nobody listens on."""
    url = f"sqlite:///{tmp_path / 'openapi.db'}"
    upgrade(url)
    settings = make_settings(url, f"http://127.0.0.1:{free_loopback_port()}", tmp_path, max_content_length=MAX_BODY)
    app = create_app(settings)
    app.testing = True
    yield app
    services(app).close()


# -- the document ----------------------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validator_module = pytest.importorskip("openapi_spec_validator", reason="dev dependency openapi-spec-validator")
    assert str(spec["openapi"]).startswith("3.1.")
    validator_module.validate(spec)


def test_the_served_file_is_this_document(offline_app: Flask) -> None:
    # GET /v1/openapi.yaml sends <app.root_path>/openapi.yaml; it is public only once OPA said so.
    assert (Path(offline_app.root_path) / "openapi.yaml").resolve() == SPEC_PATH.resolve()


def test_every_api_route_is_documented_with_its_methods(offline_app: Flask, spec: dict[str, Any]) -> None:
    routes = api_routes(offline_app)
    assert "/v1/decisions" in routes and "/healthz" in routes and "/readyz" in routes
    documented = {
        path: {m: op.get("x-flask-endpoint") for m, op in item.items() if m in HTTP_METHODS}
        for path, item in spec["paths"].items()
        if path.startswith(API_PREFIXES)
    }
    missing = {path: methods for path, methods in routes.items() if path not in documented}
    assert not missing, f"routes missing from server/openapi.yaml: {missing}"
    for path, methods in routes.items():
        assert set(documented[path]) == set(methods), (path, sorted(documented[path]), sorted(methods))
        assert documented[path] == methods, f"{path}: x-flask-endpoint {documented[path]} != routes {methods}"
    stale = sorted(set(documented) - set(routes))
    assert not stale, f"server/openapi.yaml documents routes the app does not have: {stale}"


def test_documented_pages_exist(offline_app: Flask, spec: dict[str, Any]) -> None:
    rules = {rule.rule: rule for rule in offline_app.url_map.iter_rules()}
    pages = [(path, method, op) for path, method, op in operations(spec) if is_page(op)]
    assert pages, "the login and logout forms are documented under the pages tag"
    for path, method, op in pages:
        assert path in rules, path
        assert method.upper() in (rules[path].methods or set()), (path, method)
        assert op["x-flask-endpoint"] == rules[path].endpoint, (path, method)
        assert not path.startswith(API_PREFIXES), f"{path} is an API path, not a page"


def test_path_parameters_match_the_url_converters(offline_app: Flask, spec: dict[str, Any]) -> None:
    for rule in offline_app.url_map.iter_rules():
        path = openapi_path(rule.rule)
        if path not in spec["paths"]:
            continue
        item = spec["paths"][path]
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = item[method.lower()]
            params = [resolve(spec, p) for p in item.get("parameters", []) + op.get("parameters", [])]
            in_path = {p["name"]: p for p in params if p["in"] == "path"}
            assert set(in_path) == set(rule.arguments), (path, method, sorted(in_path))
            for name, converter in converters(rule.rule).items():
                assert in_path[name]["required"] is True, (path, name)
                expected = "integer" if converter == "int" else "string"
                assert in_path[name]["schema"]["type"] == expected, (path, name, converter)


# -- the error contract ----------------------------------------------------------------------------
def test_every_error_response_is_a_problem(spec: dict[str, Any]) -> None:
    seen_exceptions = set()
    checked = 0
    for path, method, op in operations(spec):
        if is_page(op):
            continue  # HTML forms answer HTML error pages
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            key = (path, method, status)
            content = resolve(spec, response).get("content", {})
            allowed = {PROBLEM_JSON} | ({NOT_PROBLEMS[key]} if key in NOT_PROBLEMS else set())
            assert set(content) <= allowed, f"{key}: media types {sorted(content)}"
            if key in NOT_PROBLEMS:
                seen_exceptions.add(key)
                other = content[NOT_PROBLEMS[key]]
                assert not refers_to_problem(spec, other["schema"]), f"{key}: the documented exception is a problem"
            else:
                assert PROBLEM_JSON in content, f"{key}: no {PROBLEM_JSON} response"
            if PROBLEM_JSON in content:
                assert refers_to_problem(spec, content[PROBLEM_JSON]["schema"]), f"{key}: not the Problem schema"
            checked += 1
    assert seen_exceptions == set(NOT_PROBLEMS), "the documented non-problem error bodies moved"
    assert checked >= 40


def test_error_responses_cover_what_the_server_answers(spec: dict[str, Any]) -> None:
    for path, method, op in operations(spec):
        if is_page(op):
            continue
        statuses = set(op["responses"])
        assert "500" in statuses, (path, method)
        # Authorised by OPA: 401, 403 and 503 when OPA is down (a public endpoint such as /metrics
        # may check its own credential instead).
        if op.get("security", spec["security"]) and op.get("x-permission") != "public":
            assert {"401", "403", "503"} <= statuses, (path, method, sorted(statuses))
        if "requestBody" in op:
            assert {"400", "413", "415"} <= statuses, (path, method, sorted(statuses))
            params = [resolve(spec, p)["name"] for p in op.get("parameters", [])]
            assert "X-CSRF-Token" in params, (path, method)


def test_problem_schema_has_the_contract_members(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "errors", "reasons", "reason"} <= set(problem["properties"])
    assert set(problem["required"]) == {"type", "title", "status"}
    assert problem["additionalProperties"] is True


# -- schemas follow the code -----------------------------------------------------------------------
def test_action_types_match_the_registry(spec: dict[str, Any]) -> None:
    action = spec["components"]["schemas"]["Action"]
    registry = {a.name: a for a in action_types()}
    assert set(action["discriminator"]["mapping"]) == set(registry)
    branches: dict[str, dict[str, Any]] = {}
    for ref in action["oneOf"]:
        branch = resolve(spec, ref)
        type_schema = branch["properties"]["type"]
        names = [type_schema["const"]] if "const" in type_schema else type_schema["enum"]
        for name in names:
            assert name not in branches, f"{name} is in two branches"
            branches[name] = branch
            assert action["discriminator"]["mapping"][name] == ref["$ref"], name
    assert set(branches) == set(registry)
    action_props = {"type", "actor", "target", "params"}
    for name, action_type in registry.items():
        branch = branches[name]
        assert set(branch["properties"]) == action_props, name
        params = resolve(spec, branch["properties"]["params"])
        declared, required = marshmallow_fields(action_type.params_schema)
        assert set(params["properties"]) == declared, name
        assert set(params.get("required", [])) == required, name
        assert ("params" in branch["required"]) == bool(required), name
        assert name in spec["info"]["description"], f"{name} is missing from the action types table"


def test_request_schemas_match_marshmallow(spec: dict[str, Any]) -> None:
    pairs = {
        "DecisionRequest": DecisionRequestSchema,
        "Actor": ActorSchema,
        "Target": TargetSchema,
        "KillSwitchRequest": KillSwitchRequestSchema,
        "TokenCreate": TokenCreateSchema,
    }
    for name, schema in pairs.items():
        assert schema_fields(spec, name) == marshmallow_fields(schema), name
        assert spec["components"]["schemas"][name]["additionalProperties"] is False, name  # unknown fields: 400
    schemas = spec["components"]["schemas"]
    assert schemas["Role"]["enum"] == list(ROLES)
    assert schemas["Actor"]["properties"]["kind"]["enum"] == list(ACTOR_KINDS)
    assert schemas["DecisionOutcomeKind"]["enum"] == one_of_choices(DecisionQuerySchema, "outcome")
    assert schemas["KillSwitchRequest"]["properties"]["scope"]["enum"] == one_of_choices(
        KillSwitchRequestSchema, "scope"
    )


def test_decision_filters_match_the_query_schema(spec: dict[str, Any]) -> None:
    op = spec["paths"]["/v1/decisions"]["get"]
    query = {p["name"]: p for p in (resolve(spec, p) for p in op["parameters"]) if p["in"] == "query"}
    declared, required = marshmallow_fields(DecisionQuerySchema)
    assert set(query) == declared
    assert not required and not any(p.get("required") for p in query.values())
    limit = DecisionQuerySchema().fields["limit"]
    assert query["limit"]["schema"]["default"] == limit.load_default


def test_examples_match_their_schemas(spec: dict[str, Any], registry: Registry) -> None:
    checked = 0
    for path, method, op in operations(spec):
        media: list[tuple[str, dict[str, Any]]] = []
        body = resolve(spec, op.get("requestBody", {}))
        media += [(f"{path} {method} request {t}", m) for t, m in body.get("content", {}).items()]
        for status, response in op["responses"].items():
            content = resolve(spec, response).get("content", {})
            media += [(f"{path} {method} {status} {t}", m) for t, m in content.items()]
        for where, item in media:
            examples = [item["example"]] if "example" in item else []
            examples += [resolve(spec, e)["value"] for e in item.get("examples", {}).values()]
            check = validator(registry, item["schema"])
            for example in examples:
                errors = [e.message for e in check.iter_errors(example)]
                assert not errors, f"{where}: {errors}"
                checked += 1
    assert checked >= 20


# -- real answers conform --------------------------------------------------------------------------
def conforms(spec: dict[str, Any], registry: Registry, response: TestResponse, path: str, method: str) -> Any:
    """Check a real response against the documented one (status, media type, body schema)."""
    op = spec["paths"][path][method]
    status = str(response.status_code)
    assert status in op["responses"], f"{method.upper()} {path} answered undocumented {status}"
    content = resolve(spec, op["responses"][status]).get("content", {})
    assert response.mimetype in content, f"{method.upper()} {path} {status}: {response.mimetype} not documented"
    body = response.get_json(force=True)
    errors = [e.message for e in validator(registry, content[response.mimetype]["schema"]).iter_errors(body)]
    assert not errors, f"{method.upper()} {path} {status}: {errors} in {body}"
    return body


def test_real_answers_without_opa_conform(offline_app: Flask, spec: dict[str, Any], registry: Registry) -> None:
    client: FlaskClient = offline_app.test_client()
    token = {"Authorization": f"Bearer {make_token(offline_app, 'service')}"}

    assert conforms(spec, registry, client.get("/healthz"), "/healthz", "get") == {"status": "alive"}

    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.mimetype == "application/json"
    assert conforms(spec, registry, ready, "/readyz", "get")["not_ready"] == ["opa"]

    # The documented exception: an authenticated decision with OPA unreachable is the decision itself.
    decided = client.post("/v1/decisions", json=ALLOCATION, headers=token)
    assert decided.status_code == 503 and decided.mimetype == "application/json"
    body = conforms(spec, registry, decided, "/v1/decisions", "post")
    assert body["allow"] is False and body["outcome"] == "error"
    assert [r["code"] for r in body["reasons"]] == ["opa_unavailable"]

    # Every other failure is a problem.
    anonymous = client.post("/v1/decisions", json=ALLOCATION)
    assert anonymous.status_code == 503 and anonymous.mimetype == PROBLEM_JSON
    assert conforms(spec, registry, anonymous, "/v1/decisions", "post")["reason"] == "opa_unavailable"
    for path, method, kwargs in [
        ("/v1/decisions", "get", {"headers": token}),
        ("/v1/decisions/{decision_id}", "get", {"headers": token}),
        ("/v1/controls", "get", {"headers": token}),
        ("/v1/tokens", "get", {"headers": token}),
        ("/v1/me", "get", {"headers": token}),
        ("/v1/decisions", "post", {"headers": {"Authorization": "Basic abc"}, "json": ALLOCATION}),
        ("/v1/decisions", "post", {"headers": {"Authorization": "Bearer slk_unknown"}, "json": ALLOCATION}),
        ("/v1/decisions", "post", {"headers": token, "data": "x" * (MAX_BODY + 1), "content_type": "application/json"}),
    ]:
        url = path.replace("{decision_id}", "dec_missing")
        response = client.open(url, method=method.upper(), **kwargs)
        assert response.status_code >= 400 and response.mimetype == PROBLEM_JSON, (path, method, response.status_code)
        problem = conforms(spec, registry, response, path, method)
        assert problem["status"] == response.status_code
        assert problem["type"].startswith("https://smartlinks.dev/problems/")

    unknown = client.get("/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.mimetype == PROBLEM_JSON
    errors = list(validator(registry, {"$ref": PROBLEM_REF}).iter_errors(unknown.get_json()))
    assert not errors
