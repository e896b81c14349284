package smartlinks.thompson_sampling_test

import data.smartlinks.thompson_sampling

# The contract's example: two well-sampled offers moving from 0.5/0.5 to 0.7/0.3.
proposal(weights) := proposal_with(weights, {"offer_1": 1200, "offer_2": 1100})

proposal_with(weights, clicks) := {
	"action": {
		"type": "allocation.update",
		"params": {"algorithm": "thompson_sampling", "weights": weights},
	},
	"state": {
		"arms": ["offer_1", "offer_2"],
		"current_weights": {"offer_1": 0.5, "offer_2": 0.5},
		"evidence": {arm: {"clicks": n} | some arm, n in clicks},
	},
}

# n arms named arm_1..arm_n, all new (no evidence), each proposed at 1/n.
equal_split(n) := {
	"action": {"params": {"algorithm": "thompson_sampling", "weights": {arm: share | some arm in names(n)}}},
	"state": {"arms": names(n)},
} if {
	share := 1 / n
}

names(n) := [sprintf("arm_%d", [i]) | some i in numbers.range(1, n)]

codes(reasons) := {reason.code | some reason in reasons}

has_reason(reasons, code, target) if {
	some reason in reasons
	reason.code == code
	reason.target == target
	reason.policy == "thompson_sampling"
}

note_codes(obligations) := {[note.code, note.arm] | some note in obligations.clamp.notes}

same_bounds(actual, expected) if {
	object.keys(actual) == object.keys(expected)
	every arm, interval in expected {
		abs(actual[arm][0] - interval[0]) < 1e-9
		abs(actual[arm][1] - interval[1]) < 1e-9
	}
}

test_the_contract_example_is_allowed_as_is if {
	thompson_sampling.deny == set() with input as proposal({"offer_1": 0.7, "offer_2": 0.3})
	thompson_sampling.obligations == {} with input as proposal({"offer_1": 0.7, "offer_2": 0.3})
}

# --- arms and shape --------------------------------------------------------------

test_the_weights_must_cover_exactly_the_links_arms if {
	has_reason(thompson_sampling.deny, "unknown_arm", "offer_3") with input as proposal({"offer_1": 0.5, "offer_2": 0.3, "offer_3": 0.2})
	has_reason(thompson_sampling.deny, "missing_arm", "offer_2") with input as proposal({"offer_1": 1})
}

test_the_weights_must_be_shares_summing_to_1 if {
	has_reason(thompson_sampling.deny, "invalid_weight", "offer_2") with input as proposal({"offer_1": 0.7, "offer_2": null})
	codes(thompson_sampling.deny) == {"weights_not_normalized"} with input as proposal({"offer_1": 0.7, "offer_2": 0.2})
	codes(thompson_sampling.deny) == {"missing_weights"} with input as {"action": {"params": {"weights": "0.7,0.3"}}}
}

test_a_malformed_vector_gets_no_clamp if {
	thompson_sampling.obligations == {} with input as proposal({"offer_1": 0.995, "offer_2": 0.001})
}

test_max_arms_bounds_the_number_of_arms if {
	thompson_sampling.deny == set() with input as equal_split(50)
	codes(thompson_sampling.deny) == {"too_many_arms"} with input as equal_split(51)
}

# --- exploration floor --------------------------------------------------------------

test_an_arm_below_the_exploration_floor_is_clamped if {
	weights := {"offer_1": 0.9999, "offer_2": 0.0001}
	thompson_sampling.deny == set() with input as proposal(weights)
	clamp := thompson_sampling.obligations.clamp with input as proposal(weights)
	clamp.param == "weights"
	clamp.total == 1
	same_bounds(clamp.bounds, {"offer_1": [0.0002, 1], "offer_2": [0.0002, 1]})
	note_codes(thompson_sampling.obligations) == {["below_exploration_floor", "offer_2"]} with input as proposal(weights)
}

test_the_exploration_floor_is_inclusive if {
	thompson_sampling.obligations == {} with input as proposal({"offer_1": 0.9998, "offer_2": 0.0002})
}

# --- minimum samples before an arm may be starved ----------------------------------

test_an_undersampled_arm_keeps_the_unsampled_min_share if {
	weights := {"offer_1": 0.97, "offer_2": 0.03}
	obligations := thompson_sampling.obligations with input as proposal_with(weights, {"offer_1": 1200, "offer_2": 99})
	same_bounds(obligations.clamp.bounds, {"offer_1": [0.0002, 1], "offer_2": [0.05, 1]})
	note_codes(obligations) == {["arm_starved", "offer_2"]}
}

test_an_arm_with_min_samples_may_be_starved_down_to_the_floor if {
	thompson_sampling.obligations == {} with input as proposal_with({"offer_1": 0.97, "offer_2": 0.03}, {"offer_1": 1200, "offer_2": 100})
}

test_an_arm_without_evidence_counts_as_unsampled if {
	obligations := thompson_sampling.obligations with input as proposal_with({"offer_1": 0.97, "offer_2": 0.03}, {"offer_1": 1200})
	note_codes(obligations) == {["arm_starved", "offer_2"]}
}

test_the_unsampled_share_is_capped_at_an_equal_split if {
	# 25 new arms cannot each keep 0.05: each keeps 1/25 = 0.04 and the split is allowed
	thompson_sampling.deny == set() with input as equal_split(25)
	thompson_sampling.obligations == {} with input as equal_split(25)
}

# --- max change per cycle --------------------------------------------------------------

test_max_change_per_cycle_1_means_no_limit if {
	thompson_sampling.obligations == {} with input as proposal({"offer_1": 0.99, "offer_2": 0.01})
}

test_a_configured_max_change_is_clamped if {
	obligations := thompson_sampling.obligations with input as proposal({"offer_1": 0.8, "offer_2": 0.2})
		with data.config.thompson_sampling.max_change_per_cycle as 0.2
	same_bounds(obligations.clamp.bounds, {"offer_1": [0.3, 0.7], "offer_2": [0.3, 0.7]})
	note_codes(obligations) == {["weight_change_too_large", "offer_1"], ["weight_change_too_large", "offer_2"]}
}

# --- infeasible bounds ---------------------------------------------------------------

test_floors_summing_above_1_are_infeasible if {
	codes(thompson_sampling.deny) == {"bounds_infeasible"} with input as proposal({"offer_1": 0.5, "offer_2": 0.5})
		with data.config.thompson_sampling.exploration_floor as 0.6
	thompson_sampling.obligations == {} with input as proposal({"offer_1": 0.5, "offer_2": 0.5})
		with data.config.thompson_sampling.exploration_floor as 0.6
}

test_a_floor_above_1_is_infeasible if {
	has_reason(thompson_sampling.deny, "bounds_infeasible", "offer_1") with input as proposal({"offer_1": 0.5, "offer_2": 0.5})
		with data.config.thompson_sampling.exploration_floor as 1.5
}
