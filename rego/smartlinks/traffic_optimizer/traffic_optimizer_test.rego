package smartlinks.traffic_optimizer_test

import data.smartlinks.traffic_optimizer

# A link with three arms, each with plenty of evidence, currently at 0.4/0.4/0.2.
current := {"a": 0.4, "b": 0.4, "c": 0.2}

evidence(clicks) := {arm: {"clicks": clicks, "conversions": 1, "revenue": 1.0} | some arm in ["a", "b", "c"]}

proposal(weights) := proposal_with(weights, current, evidence(500))

proposal_with(weights, current_weights, arm_evidence) := {
	"action": {
		"type": "allocation.update",
		"params": {"algorithm": "traffic_optimizer", "weights": weights},
	},
	"state": {"arms": ["a", "b", "c"], "current_weights": current_weights, "evidence": arm_evidence},
}

codes(reasons) := {reason.code | some reason in reasons}

has_reason(reasons, code, target) if {
	some reason in reasons
	reason.code == code
	reason.target == target
	reason.policy == "traffic_optimizer"
}

# Bounds are computed in floating point: compare them to 1e-9.
same_bounds(actual, expected) if {
	object.keys(actual) == object.keys(expected)
	every arm, interval in expected {
		abs(actual[arm][0] - interval[0]) < 1e-9
		abs(actual[arm][1] - interval[1]) < 1e-9
	}
}

note_codes(obligations) := {[note.code, note.arm] | some note in obligations.clamp.notes}

# --- a good proposal -----------------------------------------------------------------

test_a_small_move_with_enough_evidence_is_allowed_as_is if {
	traffic_optimizer.deny == set() with input as proposal({"a": 0.5, "b": 0.3, "c": 0.2})
	traffic_optimizer.obligations == {} with input as proposal({"a": 0.5, "b": 0.3, "c": 0.2})
}

# --- the shape of the vector -------------------------------------------------------------

test_weights_must_be_given_as_an_object if {
	codes(traffic_optimizer.deny) == {"missing_weights"} with input as {"action": {"params": {"algorithm": "traffic_optimizer"}}, "state": {"arms": ["a"]}}
	codes(traffic_optimizer.deny) == {"missing_weights"} with input as proposal([0.5, 0.5])
}

test_an_arm_the_link_does_not_have_is_denied if {
	has_reason(traffic_optimizer.deny, "unknown_arm", "z") with input as proposal({"a": 0.4, "b": 0.4, "c": 0.1, "z": 0.1})
}

test_every_arm_of_the_link_needs_a_weight if {
	deny := traffic_optimizer.deny with input as proposal({"a": 0.6, "b": 0.4})
	has_reason(deny, "missing_arm", "c")
	codes(deny) == {"missing_arm"}
}

test_a_weight_must_be_a_number_between_0_and_1 if {
	has_reason(traffic_optimizer.deny, "invalid_weight", "a") with input as proposal({"a": "0.4", "b": 0.4, "c": 0.2})
	has_reason(traffic_optimizer.deny, "invalid_weight", "c") with input as proposal({"a": 0.7, "b": 0.4, "c": -0.1})
	has_reason(traffic_optimizer.deny, "invalid_weight", "a") with input as proposal({"a": 1.2, "b": 0, "c": 0})
}

test_weights_must_sum_to_1 if {
	codes(traffic_optimizer.deny) == {"weights_not_normalized"} with input as proposal({"a": 0.5, "b": 0.4, "c": 0.2})
	codes(traffic_optimizer.deny) == {"weights_not_normalized"} with input as proposal({"a": 0.3, "b": 0.3, "c": 0.2})
}

test_the_sum_is_checked_within_the_tolerance if {
	traffic_optimizer.deny == set() with input as proposal({"a": 0.5, "b": 0.3, "c": 0.2000005})
	codes(traffic_optimizer.deny) == {"weights_not_normalized"} with input as proposal({"a": 0.5, "b": 0.3, "c": 0.200002})
}

test_a_link_without_arms_has_nothing_to_allocate if {
	deny := traffic_optimizer.deny with input as {"action": {"params": {"weights": {}}}, "state": {}}
	"no_arms" in codes(deny)
}

test_too_many_arms_when_a_maximum_is_configured if {
	codes(traffic_optimizer.deny) == {"too_many_arms"} with input as proposal({"a": 0.5, "b": 0.3, "c": 0.2})
		with data.config.traffic_optimizer.max_arms as 2
}

test_a_malformed_vector_gets_no_clamp if {
	traffic_optimizer.obligations == {} with input as proposal({"a": 0.99, "b": 0.01})
}

# --- minimum evidence before moving traffic ---------------------------------------

test_moving_traffic_with_too_few_clicks_in_total_is_denied if {
	deny := traffic_optimizer.deny with input as proposal_with({"a": 0.5, "b": 0.3, "c": 0.2}, current, evidence(60))
	codes(deny) == {"insufficient_evidence"}
}

test_min_total_clicks_is_inclusive if {
	# 3 arms x 67 clicks = 201 >= 200; 3 x 66 = 198 < 200
	traffic_optimizer.deny == set() with input as proposal_with({"a": 0.5, "b": 0.3, "c": 0.2}, current, evidence(67))
	codes(traffic_optimizer.deny) == {"insufficient_evidence"} with input as proposal_with({"a": 0.5, "b": 0.3, "c": 0.2}, current, evidence(66))
}

test_an_arm_in_rotation_with_too_few_clicks_blocks_any_move if {
	thin := object.union(evidence(500), {"c": {"clicks": 19}})
	has_reason(traffic_optimizer.deny, "insufficient_evidence", "c") with input as proposal_with({"a": 0.5, "b": 0.3, "c": 0.2}, current, thin)
	enough := object.union(evidence(500), {"c": {"clicks": 20}})
	traffic_optimizer.deny == set() with input as proposal_with({"a": 0.5, "b": 0.3, "c": 0.2}, current, enough)
}

test_an_arm_in_rotation_without_evidence_blocks_any_move if {
	no_c := {"a": {"clicks": 500}, "b": {"clicks": 500}}
	has_reason(traffic_optimizer.deny, "insufficient_evidence", "c") with input as proposal_with({"a": 0.5, "b": 0.3, "c": 0.2}, current, no_c)
}

test_keeping_the_weights_needs_no_evidence if {
	traffic_optimizer.deny == set() with input as proposal_with(current, current, {})
	traffic_optimizer.deny == set() with input as proposal_with({"a": 0.4000001, "b": 0.3999999, "c": 0.2}, current, {})
}

test_a_new_arm_may_enter_without_evidence if {
	# c has no current share and no clicks yet: introducing it is not blocked.
	established := {"a": {"clicks": 500}, "b": {"clicks": 500}}
	traffic_optimizer.deny == set() with input as proposal_with({"a": 0.45, "b": 0.45, "c": 0.1}, {"a": 0.5, "b": 0.5}, established)
	traffic_optimizer.deny == set() with input as proposal_with({"a": 0.45, "b": 0.45, "c": 0.1}, {"a": 0.5, "b": 0.5, "c": 0}, established)
}

test_a_first_allocation_needs_no_evidence if {
	traffic_optimizer.deny == set() with input as proposal_with({"a": 0.4, "b": 0.3, "c": 0.3}, {}, {})
}

# --- clamping: floors, ceilings and max change -------------------------------------

test_a_share_below_the_floor_is_clamped_not_denied if {
	weights := {"a": 0.39, "b": 0.6, "c": 0.01}
	traffic_optimizer.deny == set() with input as proposal(weights)
	clamp := traffic_optimizer.obligations.clamp with input as proposal(weights)
	clamp.param == "weights"
	clamp.total == 1
	same_bounds(clamp.bounds, {"a": [0.15, 0.65], "b": [0.15, 0.65], "c": [0.02, 0.45]})
	note_codes(traffic_optimizer.obligations) == {["share_below_floor", "c"]} with input as proposal(weights)
}

test_a_share_above_the_ceiling_is_clamped if {
	# a new link: no current weights, so only the floor and the ceiling bound the arms
	weights := {"a": 0.95, "b": 0.03, "c": 0.02}
	obligations := traffic_optimizer.obligations with input as proposal_with(weights, {}, evidence(500))
	same_bounds(obligations.clamp.bounds, {"a": [0.02, 0.9], "b": [0.02, 0.9], "c": [0.02, 0.9]})
	note_codes(obligations) == {["share_above_ceiling", "a"]}
}

test_a_move_larger_than_max_change_per_cycle_is_clamped if {
	weights := {"a": 0.7, "b": 0.1, "c": 0.2}
	traffic_optimizer.deny == set() with input as proposal(weights)
	obligations := traffic_optimizer.obligations with input as proposal(weights)
	same_bounds({"a": obligations.clamp.bounds.a}, {"a": [0.15, 0.65]})
	note_codes(obligations) == {["weight_change_too_large", "a"], ["weight_change_too_large", "b"]}
}

test_limits_are_inclusive if {
	# a moves by exactly 0.25, c sits exactly on the floor
	traffic_optimizer.obligations == {} with input as proposal({"a": 0.65, "b": 0.33, "c": 0.02})
	traffic_optimizer.obligations == {} with input as proposal({"a": 0.65 + 1e-12, "b": 0.33 - 1e-12, "c": 0.02})
}

test_a_new_arm_is_bounded_by_floor_and_ceiling_only if {
	obligations := traffic_optimizer.obligations with input as proposal_with({"a": 0.99, "b": 0.005, "c": 0.005}, {"a": 1.0}, evidence(500))
	same_bounds(obligations.clamp.bounds, {"a": [0.75, 0.9], "b": [0.02, 0.9], "c": [0.02, 0.9]})
}

test_the_ceiling_wins_over_max_change if {
	# a currently holds 0.98, above the ceiling: it must come down to 0.9 even if
	# that is a larger move than max_change_per_cycle allows.
	obligations := traffic_optimizer.obligations with input as proposal_with({"a": 0.96, "b": 0.02, "c": 0.02}, {"a": 0.98, "b": 0.01, "c": 0.01}, evidence(500))
		with data.config.traffic_optimizer.max_change_per_cycle as 0.05
	same_bounds(obligations.clamp.bounds, {"a": [0.9, 0.9], "b": [0.02, 0.06], "c": [0.02, 0.06]})
}

test_data_overrides_change_the_limits if {
	traffic_optimizer.obligations == {} with input as proposal({"a": 0.7, "b": 0.1, "c": 0.2})
		with data.config.traffic_optimizer.max_change_per_cycle as 1
}

# --- infeasible bounds ---------------------------------------------------------------

test_floors_that_sum_above_1_are_infeasible if {
	deny := traffic_optimizer.deny with input as proposal({"a": 0.5, "b": 0.3, "c": 0.2})
		with data.config.traffic_optimizer.min_share as 0.4
	codes(deny) == {"bounds_infeasible"}
	traffic_optimizer.obligations == {} with input as proposal({"a": 0.5, "b": 0.3, "c": 0.2})
		with data.config.traffic_optimizer.min_share as 0.4
}

test_ceilings_that_sum_below_1_are_infeasible if {
	codes(traffic_optimizer.deny) == {"bounds_infeasible"} with input as proposal({"a": 0.3, "b": 0.3, "c": 0.4})
		with data.config.traffic_optimizer.max_share as 0.3
}

test_a_floor_above_the_ceiling_is_infeasible if {
	has_reason(traffic_optimizer.deny, "bounds_infeasible", "a") with input as proposal({"a": 0.4, "b": 0.4, "c": 0.2})
		with data.config.traffic_optimizer.min_share as 0.5
		with data.config.traffic_optimizer.max_share as 0.3
}
