"""Tests of the algorithm registry: names, schemas, validation and creation."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from algorithms import registry
from algorithms.base import AllocationAlgorithm, ArmStats, BudgetAlgorithm, CampaignStats
from algorithms.params import InvalidParameters, ParamSchema, to_json_schema, validate_against
from algorithms.registry import UnknownAlgorithm, create, get, json_schema, names, validate_params

REQUIRED_SPEC_KEYS = {"type", "default", "description"}


def test_names_match_the_policy_contract() -> None:
    assert names() == ["budget_arbitrage", "thompson_sampling", "traffic_optimizer", "ucb"]


@pytest.mark.parametrize("name", names())
def test_info_and_schema(name: str) -> None:
    info = get(name)
    assert info.name == name and info.version and info.description
    assert info.kind in ("allocation", "budget")
    for pname, spec in info.params.items():
        assert REQUIRED_SPEC_KEYS <= set(spec), pname
        assert spec["type"] in ("number", "integer", "boolean", "string")
        if spec["type"] in ("number", "integer"):
            assert "minimum" in spec or "exclusiveMinimum" in spec, pname
            assert "maximum" in spec or "exclusiveMaximum" in spec, pname
    json.dumps(info.to_dict())
    assert validate_params(name, {}) == info.defaults()


@pytest.mark.parametrize("name", names())
def test_schema_defaults_match_constructor_defaults(name: str) -> None:
    info = get(name)
    algo = create(name)
    sig = inspect.signature(type(algo).__init__)
    for pname, spec in info.params.items():
        assert sig.parameters[pname].default == spec["default"], pname


@pytest.mark.parametrize("name", names())
def test_create_gives_working_algorithm(name: str) -> None:
    algo = create(name, {})
    if get(name).kind == "allocation":
        assert isinstance(algo, AllocationAlgorithm)
        stats = [ArmStats("a", 100, 5, 10.0), ArmStats("b", 100, 9, 20.0)]
        proposal = algo.propose(stats, None, np.random.default_rng(0))
        assert proposal.algorithm == name
        assert proposal.version == get(name).version
    else:
        assert isinstance(algo, BudgetAlgorithm)
        camp = CampaignStats("c", 100.0, 200.0, 40.0, 150.0, 100.0, 0.5)
        assert algo.propose([camp], 150.0).algorithm == name


def test_get_returns_a_copy() -> None:
    info = get("thompson_sampling")
    info.params["gamma"]["maximum"] = 99
    assert get("thompson_sampling").params["gamma"]["maximum"] == 1.0


def test_unknown_algorithm() -> None:
    for call in (lambda: get("nope"), lambda: validate_params("nope", {}), lambda: create("nope")):
        with pytest.raises(UnknownAlgorithm, match="nope"):
            call()
    assert issubclass(UnknownAlgorithm, KeyError)


def test_validation_reports_every_field() -> None:
    with pytest.raises(InvalidParameters) as err:
        validate_params(
            "thompson_sampling",
            {"gamma": 1.5, "n_samples": 10.5, "prior_alpha": "1", "floor": True, "bogus": 1},
        )
    errors = err.value.errors
    assert set(errors) == {"gamma", "n_samples", "prior_alpha", "floor", "bogus"}
    assert "<= 1.0" in errors["gamma"]
    assert "integer" in errors["n_samples"]
    assert "number" in errors["prior_alpha"]
    assert "number" in errors["floor"]
    assert errors["bogus"] == "unknown parameter"
    assert err.value.algorithm == "thompson_sampling"
    assert isinstance(err.value, ValueError)
    assert "gamma" in str(err.value)


def test_validation_bounds_and_coercion() -> None:
    with pytest.raises(InvalidParameters) as err:
        validate_params("thompson_sampling", {"gamma": 0.0, "prior_beta": -1})
    assert "> 0.0" in err.value.errors["gamma"]
    ok = validate_params("thompson_sampling", {"gamma": 1, "n_samples": 2000.0})
    assert ok["gamma"] == 1.0 and isinstance(ok["gamma"], float)
    assert ok["n_samples"] == 2000 and isinstance(ok["n_samples"], int)
    with pytest.raises(InvalidParameters) as err2:
        validate_params("ucb", {"variant": "lin_ucb"})
    assert "one of" in err2.value.errors["variant"]
    assert validate_params("ucb", {"exploration": None})["exploration"] is None
    with pytest.raises(InvalidParameters):
        validate_params("ucb", {"floor": None})
    with pytest.raises(InvalidParameters):
        validate_params("traffic_optimizer", {"smoothing": float("nan")})


def test_create_validates() -> None:
    with pytest.raises(InvalidParameters):
        create("traffic_optimizer", {"explore_share": 2})
    algo = create("traffic_optimizer", {"explore_share": 0.3})
    assert getattr(algo, "explore_share") == 0.3  # noqa: B009


def test_json_schema_is_standard() -> None:
    schema = json_schema("ucb")
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["exploration"]["type"] == ["number", "null"]
    assert schema["properties"]["variant"]["enum"] == ["ucb1", "kl_ucb"]
    json.dumps(schema)


def test_generic_validator_types() -> None:
    schema: ParamSchema = {
        "flag": {"type": "boolean", "default": False, "description": "x"},
        "name": {"type": "string", "default": "a", "description": "x"},
        "n": {"type": "integer", "default": 1, "minimum": 0, "exclusiveMaximum": 10, "description": "x"},
    }
    assert validate_against(schema, None) == {"flag": False, "name": "a", "n": 1}
    with pytest.raises(InvalidParameters) as err:
        validate_against(schema, {"flag": 1, "name": 3, "n": 10})
    assert set(err.value.errors) == {"flag", "name", "n"}
    assert to_json_schema(schema)["properties"]["n"]["exclusiveMaximum"] == 10


def test_module_doctest() -> None:
    import doctest

    assert doctest.testmod(registry).failed == 0
