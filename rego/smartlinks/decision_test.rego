package smartlinks_test

import data.smartlinks

# The contract's example: Thompson sampling moving two offers from 0.5/0.5 to 0.7/0.3.
example := {
	"action": {
		"type": "allocation.update",
		"actor": {"id": "algo:thompson_sampling", "kind": "algorithm", "roles": []},
		"target": {"kind": "link", "id": "lnk_42"},
		"params": {"algorithm": "thompson_sampling", "weights": {"offer_1": 0.7, "offer_2": 0.3}},
	},
	"state": {
		"current_weights": {"offer_1": 0.5, "offer_2": 0.5},
		"arms": ["offer_1", "offer_2"],
		"evidence": {
			"offer_1": {"clicks": 1200, "conversions": 40, "revenue": 400.0},
			"offer_2": {"clicks": 1100, "conversions": 20, "revenue": 200.0},
		},
	},
	"controls": {"kill_switch": false, "target_kill_switch": false},
	"context": {"actor_action_counts": {"60": 0, "3600": 3, "86400": 40}},
	"caller": {"id": "tok_1", "kind": "token", "roles": ["service"]},
	"mode": "test",
	"now": "2026-11-25T10:00:00Z",
}

# example with action fields replaced
acting(action) := object.union(example, {"action": action})

# example with action.params replaced (object.union would merge the weights)
allocation(algorithm, weights) := json.patch(example, [{
	"op": "replace",
	"path": "/action/params",
	"value": {"algorithm": algorithm, "weights": weights},
}])

codes(decision) := {reason.code | some reason in decision.reasons}

allowed_as_is := {"allow": true, "reasons": [], "obligations": {}}

# --- totality ----------------------------------------------------------------------

test_the_decision_is_defined_for_an_empty_input if {
	decision := smartlinks.decision with input as {}
	decision.allow == false
	"unknown_action_type" in codes(decision)
	decision.obligations == {}
}

test_the_decision_is_defined_for_odd_inputs if {
	every odd in [{"action": "pause"}, {"action": {"type": 42}}, {"action": null}, {"mode": ["test"]}, {"state": 1, "action": {"type": "budget.reallocate"}}] {
		decision := smartlinks.decision with input as odd
		decision.allow == false
		count(decision.reasons) > 0
	}
	smartlinks.decision.allow == false with input as []
	smartlinks.decision.allow == false with input as "allocation.update"
}

test_without_input_the_decision_is_a_deny if {
	smartlinks.decision.allow == false
}

# --- composition ---------------------------------------------------------------------

test_the_contract_example_is_allowed if {
	smartlinks.decision == allowed_as_is with input as example
}

test_an_unknown_action_type_is_denied if {
	decision := smartlinks.decision with input as acting({"type": "link.delete"})
	decision.allow == false
	decision.reasons == [{"code": "unknown_action_type", "policy": "decision", "message": "no policy handles action type link.delete"}]
}

test_an_allocation_by_an_unknown_algorithm_is_denied if {
	decision := smartlinks.decision with input as allocation("epsilon_greedy", {"offer_1": 0.7, "offer_2": 0.3})
	decision.reasons == [{
		"code": "unknown_action_type",
		"policy": "decision",
		"message": "no policy handles action type allocation.update with algorithm epsilon_greedy",
	}]
}

test_a_missing_action_type_is_an_unknown_action_type if {
	decision := smartlinks.decision with input as object.remove(example, ["action"])
	decision.reasons == [{"code": "unknown_action_type", "policy": "decision", "message": "input.action.type is missing or not a string"}]
}

test_each_action_goes_to_its_own_policy if {
	smartlinks.handler == "traffic_optimizer" with input as allocation("traffic_optimizer", {})
	smartlinks.handler == "thompson_sampling" with input as example
	smartlinks.handler == "ucb" with input as allocation("ucb", {})
	smartlinks.handler == "budget_arbitrage" with input as acting({"type": "budget.reallocate"})
	every type in ["link.pause", "link.resume", "offer.pause", "offer.resume", "controls.kill_switch"] {
		smartlinks.handler == "operations" with input as acting({"type": type})
	}
}

test_the_policys_reasons_deny if {
	decision := smartlinks.decision with input as allocation("ucb", {"offer_1": 0.7, "offer_3": 0.3})
	decision.allow == false
	codes(decision) == {"unknown_arm", "missing_arm"}
	every reason in decision.reasons {
		reason.policy == "ucb"
	}
}

test_safety_and_policy_reasons_are_all_reported if {
	stopped := object.union(allocation("traffic_optimizer", {"offer_1": 0.7}), {"controls": {"kill_switch": true}})
	decision := smartlinks.decision with input as stopped
	decision.allow == false
	codes(decision) == {"kill_switch_active", "missing_arm", "weights_not_normalized"}
}

test_a_clamp_keeps_allow_true_with_no_reasons if {
	decision := smartlinks.decision with input as allocation("traffic_optimizer", {"offer_1": 0.9, "offer_2": 0.1})
	decision.allow == true
	decision.reasons == []
	decision.obligations.clamp.param == "weights"
	decision.obligations.clamp.bounds == {"offer_1": [0.25, 0.75], "offer_2": [0.25, 0.75]}
}

test_obligations_of_safety_and_policy_are_merged if {
	shadow := object.union(allocation("traffic_optimizer", {"offer_1": 0.9, "offer_2": 0.1}), {"mode": "shadow"})
	decision := smartlinks.decision with input as shadow
	decision.allow == true
	decision.obligations.shadow == true
	decision.obligations.clamp.param == "weights"
}

test_a_budget_reallocation_is_judged_by_budget_arbitrage if {
	request := object.union(acting({"type": "budget.reallocate", "params": {"budgets": {"c1": 1100}}}), {"state": {"campaigns": {"c1": {"budget": 1000}}}})
	smartlinks.decision == allowed_as_is with input as request
	decision := smartlinks.decision with input as object.union(request, {"action": {"params": {"budgets": {"c2": 10}}}})
	codes(decision) == {"unknown_campaign"}
}

test_an_operation_is_judged_by_operations_and_safety if {
	pause := acting({"type": "link.pause", "params": {}})
	smartlinks.decision == allowed_as_is with input as pause
	stopped := object.union(pause, {"controls": {"kill_switch": true}})
	codes(smartlinks.decision) == {"kill_switch_active"} with input as stopped
	resume := acting({"type": "link.resume", "params": {}})
	codes(smartlinks.decision) == {"actor_not_permitted"} with input as resume
}

test_the_kill_switch_can_be_turned_off_while_it_is_on if {
	off := object.union(example, {
		"action": {"type": "controls.kill_switch", "actor": {"id": "user:2", "kind": "user", "roles": ["operator"]}, "params": {"enabled": false, "scope": "global"}},
		"controls": {"kill_switch": true},
	})
	smartlinks.decision == allowed_as_is with input as off
}

test_a_policy_that_gives_no_answer_denies if {
	decision := smartlinks.decision with input as allocation("ucb", {"offer_1": 0.7, "offer_2": 0.3})
		with data.smartlinks.ucb.deny as "not a set"
	decision.allow == false
	decision.reasons == [{"code": "policy_error", "policy": "decision", "message": "policy ucb gave no answer for this input"}]
}

test_a_policy_without_its_configuration_denies if {
	decision := smartlinks.decision with input as allocation("traffic_optimizer", {"offer_1": 0.7, "offer_2": 0.3})
		with data.config.traffic_optimizer as null
	decision.reasons == [{"code": "policy_error", "policy": "decision", "message": "data.config.traffic_optimizer is missing from the bundle"}]
}

test_policy_obligations_that_are_not_an_object_are_ignored if {
	decision := smartlinks.decision with input as allocation("ucb", {"offer_1": 0.7, "offer_2": 0.3})
		with data.smartlinks.ucb.obligations as ["clamp"]
	decision == allowed_as_is
}

# --- the gate ------------------------------------------------------------------------

gated(subject, endpoint) := object.union(example, {
	"subject": subject,
	"request": {"method": "POST", "endpoint": endpoint, "path": "/v1/decisions"},
})

service := {"id": "tok_1", "kind": "token", "roles": ["service"]}

test_the_gate_decides_when_the_caller_is_authorised if {
	gate := smartlinks.gate with input as gated(service, "decisions_api.create_decision")
	gate == {"authz": {"allow": true, "reasons": []}, "decision": allowed_as_is}
}

test_the_gate_does_not_decide_for_an_unauthorised_caller if {
	gate := smartlinks.gate with input as gated({"kind": "anonymous"}, "decisions_api.create_decision")
	object.keys(gate) == {"authz"}
	[reason.code | some reason in gate.authz.reasons] == ["authentication_required"]
	forbidden := smartlinks.gate with input as gated({"kind": "user", "roles": ["affiliate"]}, "decisions_api.create_decision")
	object.keys(forbidden) == {"authz"}
	[reason.code | some reason in forbidden.authz.reasons] == ["forbidden"]
}

test_the_gate_does_not_decide_without_an_action if {
	gate := smartlinks.gate with input as object.remove(gated(service, "decisions_api.create_decision"), ["action"])
	gate == {"authz": {"allow": true, "reasons": []}}
}

test_the_gate_passes_a_deny_through if {
	stopped := object.union(gated(service, "decisions_api.create_decision"), {"controls": {"kill_switch": true}})
	gate := smartlinks.gate with input as stopped
	gate.authz.allow == true
	gate.decision.allow == false
	codes(gate.decision) == {"kill_switch_active"}
}

test_the_gate_is_defined_for_an_empty_input if {
	smartlinks.gate == {"authz": {"allow": false, "reasons": [{
		"code": "authentication_required",
		"policy": "authz",
		"message": " needs a signed-in user or an API token",
	}]}} with input as {}
}

test_an_allocation_without_an_algorithm_is_an_unknown_action_type if {
	decision := smartlinks.decision with input as json.patch(example, [{"op": "remove", "path": "/action/params/algorithm"}])
	codes(decision) == {"unknown_action_type"}
}

# --- the clamp round trip ----------------------------------------------------------

test_a_vector_projected_into_the_clamp_bounds_is_allowed_as_is if {
	# first answer: clamp offer_1 into [0.25, 0.75]; the server projects and asks again
	first := smartlinks.decision with input as allocation("traffic_optimizer", {"offer_1": 0.9, "offer_2": 0.1})
	first.obligations.clamp.bounds.offer_1[1] == 0.75
	smartlinks.decision == allowed_as_is with input as allocation("traffic_optimizer", {"offer_1": 0.75, "offer_2": 0.25})
	smartlinks.decision == allowed_as_is with input as allocation("traffic_optimizer", {"offer_1": 0.7500000000000001, "offer_2": 0.2499999999999999})
}

test_budgets_projected_into_the_clamp_bounds_are_allowed_as_is if {
	request := object.union(acting({"type": "budget.reallocate", "params": {}}), {"state": {"campaigns": {
		"c1": {"budget": 1000, "spend_today": 100},
		"c2": {"budget": 800, "spend_today": 600},
	}}})
	first := smartlinks.decision with input as json.patch(request, [{"op": "replace", "path": "/action/params", "value": {"budgets": {"c1": 2000, "c2": 500}}}])
	first.obligations.clamp.bounds == {"c1": [700, 1300], "c2": [600, 1040]}
	smartlinks.decision == allowed_as_is with input as json.patch(request, [{"op": "replace", "path": "/action/params", "value": {"budgets": {"c1": 1300, "c2": 600}}}])
}
