package smartlinks.ucb_test

import data.smartlinks.ucb

# UCB shares its rules with Thompson sampling (data.smartlinks.lib.bandit, specified
# in thompson_sampling_test.rego); these tests show it is judged with its own
# section, data.config.ucb, and reports under its own name.

proposal(weights) := {
	"action": {
		"type": "allocation.update",
		"params": {"algorithm": "ucb", "weights": weights},
	},
	"state": {
		"arms": ["offer_1", "offer_2"],
		"current_weights": {"offer_1": 0.5, "offer_2": 0.5},
		"evidence": {"offer_1": {"clicks": 1200}, "offer_2": {"clicks": 40}},
	},
}

test_a_proposal_within_the_limits_is_allowed_as_is if {
	ucb.deny == set() with input as proposal({"offer_1": 0.9, "offer_2": 0.1})
	ucb.obligations == {} with input as proposal({"offer_1": 0.9, "offer_2": 0.1})
}

test_reasons_name_the_ucb_policy if {
	ucb.deny == {{
		"code": "unknown_arm",
		"policy": "ucb",
		"target": "offer_9",
		"message": "offer_9 is not an arm of this link",
	}} with input as proposal({"offer_1": 0.5, "offer_2": 0.5, "offer_9": 0})
}

test_an_argmax_that_starves_an_undersampled_arm_is_clamped if {
	# UCB tends to put everything on its best arm; offer_2 has 40 clicks (< 100)
	obligations := ucb.obligations with input as proposal({"offer_1": 1, "offer_2": 0})
	obligations.clamp.bounds.offer_2[0] == 0.05
	[note.code | some note in obligations.clamp.notes] == ["arm_starved"]
}

test_ucb_uses_its_own_section_of_the_data if {
	# a stricter floor for ucb only
	obligations := ucb.obligations with input as proposal({"offer_1": 0.85, "offer_2": 0.15})
		with data.config.ucb.unsampled_min_share as 0.2
	obligations.clamp.bounds.offer_2[0] == 0.2
	ucb.obligations == {} with input as proposal({"offer_1": 0.85, "offer_2": 0.15})
		with data.config.thompson_sampling.unsampled_min_share as 0.2
}

test_too_many_arms_for_ucb if {
	[reason.code | some reason in ucb.deny] == ["too_many_arms"] with input as proposal({"offer_1": 0.5, "offer_2": 0.5})
		with data.config.ucb.max_arms as 1
}
