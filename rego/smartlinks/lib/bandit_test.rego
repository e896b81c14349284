package smartlinks.lib.bandit_test

import data.smartlinks.lib.bandit

# The bandit rules are specified through the policies that use them
# (thompson_sampling_test.rego, ucb_test.rego); these tests pin the helpers.

cfg := {
	"exploration_floor": 0.01,
	"min_samples_before_starve": 100,
	"unsampled_min_share": 0.05,
	"max_change_per_cycle": 1.0,
	"sum_tolerance": 1e-6,
	"bound_tolerance": 1e-9,
}

link(clicks) := {"state": {"arms": ["a", "b", "c"], "evidence": {"a": {"clicks": clicks}}}}

test_an_arm_is_undersampled_below_min_samples_before_starve if {
	bandit.undersampled(cfg) == {"a", "b", "c"} with input as link(99)
	bandit.undersampled(cfg) == {"b", "c"} with input as link(100)
}

test_an_undersampled_arm_has_the_higher_floor if {
	floors := bandit.floors_of(cfg) with input as link(99)
	floors.a.share == 0.05
	floors.a.code == "arm_starved"
	sampled := bandit.floors_of(cfg) with input as link(100)
	sampled.a.share == 0.01
	sampled.a.code == "below_exploration_floor"
	sampled.b.code == "arm_starved"
}

test_the_unsampled_floor_is_at_most_an_equal_split if {
	result := bandit.evaluate("b", object.union(cfg, {"unsampled_min_share": 0.5})) with input as {
		"action": {"params": {"weights": {"a": 0.98, "b": 0.01, "c": 0.01}}},
		"state": {"arms": ["a", "b", "c"]},
	}
	result.obligations.clamp.bounds.b[0] == 1 / 3
}

test_a_max_change_of_1_does_not_narrow if {
	weights_interval := data.smartlinks.lib.weights.arm_interval([0.01, 1], "a", 1) with input as {"state": {"current_weights": {"a": 0.5}}}
	weights_interval == [0.01, 1]
}

test_evaluate_reports_under_the_given_policy_name if {
	result := bandit.evaluate("some_bandit", cfg) with input as {"action": {"params": {"weights": {}}}, "state": {"arms": ["a"]}}
	{reason.policy | some reason in result.deny} == {"some_bandit"}
	result.obligations == {}
}
