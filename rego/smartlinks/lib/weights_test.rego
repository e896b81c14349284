package smartlinks.lib.weights_test

import data.smartlinks.lib.weights

link := {
	"action": {"params": {"weights": {"a": 0.6, "b": 0.4}}},
	"state": {
		"arms": ["a", "b"],
		"current_weights": {"a": 0.5, "b": "half", "gone": 0.1},
		"evidence": {"a": {"clicks": 30}, "b": {"conversions": 2}},
	},
}

cfg := {"sum_tolerance": 1e-6, "bound_tolerance": 1e-9}

test_reads_arms_current_shares_and_clicks_from_the_state if {
	weights.arms == {"a", "b"} with input as link
	weights.current == {"a": 0.5, "gone": 0.1} with input as link
	weights.clicks == {"a": 30, "b": 0} with input as link
	weights.total_clicks == 30 with input as link
}

test_a_state_that_is_not_an_object_has_no_arms if {
	weights.arms == set() with input as {"state": ["a", "b"]}
	weights.proposed == null with input as {}
}

test_a_well_formed_vector_has_no_shape_violations if {
	weights.shape_violations(cfg) == set() with input as link
}

test_hard_intervals_stay_within_0_and_1 if {
	weights.hard_interval(-0.5, 2) == [0, 1]
	weights.hard_interval(0.02, 0.9) == [0.02, 0.9]
}

test_an_arm_interval_narrows_the_hard_interval_by_the_max_change if {
	weights.arm_interval([0.02, 0.9], "a", 0.25) == [0.25, 0.75] with input as link
	weights.arm_interval([0.02, 0.9], "b", 0.25) == [0.02, 0.9] with input as link
	weights.arm_interval([0.6, 0.4], "a", 0.25) == [0.6, 0.4] with input as link
}

test_a_change_note_only_when_the_change_is_too_large if {
	note := weights.change_note("a", 0.05, cfg) with input as link
	note.code == "weight_change_too_large"
	note.arm == "a"
	not weights.change_note("a", 0.1, cfg) with input as link
}

test_a_clamp_lists_bounds_total_and_notes if {
	weights.clamp({"a": [0, 1]}, {{"code": "x", "arm": "a", "message": "m"}}) == {
		"param": "weights",
		"bounds": {"a": [0, 1]},
		"total": 1,
		"notes": [{"code": "x", "arm": "a", "message": "m"}],
	}
}
