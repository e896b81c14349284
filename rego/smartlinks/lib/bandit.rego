# Limits shared by the bandit allocation policies (thompson_sampling, ucb), each
# with its own section of data.config.
#
# Every arm keeps at least exploration_floor; an arm with fewer than
# min_samples_before_starve clicks may not be starved and keeps at least
# unsampled_min_share (capped at an equal split, 1/number of arms, so a link whose
# arms are all new stays feasible); no share moves by more than
# max_change_per_cycle (1.0 means no limit). Shortfalls are clamped, not denied.
package smartlinks.lib.bandit

import data.smartlinks.lib.weights

# evaluate(policy, cfg) is {"deny": set of reasons, "obligations": object} for the
# weights in input, judged with the limits in cfg and reported under policy's name.
evaluate(policy, cfg) := {"deny": deny, "obligations": verdict.obligations} if {
	verdict := judge(weights.shape_violations(cfg), floors_of(cfg), cfg)
	deny := {object.union(problem, {"policy": policy}) | some problem in verdict.problems}
}

# floors_of(cfg)[arm] is the least share arm must keep ("share"; "slack" is share
# less the tolerance) and the note code used when a proposal gives it less.
floors_of(cfg) := object.union(
	{arm: explored | some arm in weights.arms},
	{arm: starved | some arm in undersampled(cfg)},
) if {
	unsampled := max([cfg.exploration_floor, min([cfg.unsampled_min_share, 1 / max([count(weights.arms), 1])])])
	starved := {"share": unsampled, "slack": unsampled - cfg.bound_tolerance, "code": "arm_starved"}
	explored := {"share": cfg.exploration_floor, "slack": cfg.exploration_floor - cfg.bound_tolerance, "code": "below_exploration_floor"}
}

# The arms with fewer than min_samples_before_starve clicks.
undersampled(cfg) := {arm |
	some arm, clicks in weights.clicks
	clicks < cfg.min_samples_before_starve
}

# A malformed vector is judged on its shape alone. A well-formed one whose every
# share respects its limits needs nothing more (and, summing to 1 inside them,
# proves the bounds feasible); otherwise the bounds are worked out per arm.
judge(shape, floors, cfg) := {"problems": shape, "obligations": {}} if {
	count(shape) > 0
} else := {"problems": set(), "obligations": {}} if {
	change := cfg.max_change_per_cycle + cfg.bound_tolerance
	every arm, floor in floors {
		weights.respects(arm, floor.slack, 1, change)
	}
} else := bounded(floors, cfg)

bounded(floors, cfg) := {"problems": problems, "obligations": obligations_of(problems, floors, intervals, cfg)} if {
	intervals := {arm: interval |
		some arm, floor in floors
		interval := weights.arm_interval(weights.hard_interval(floor.share, 1), arm, cfg.max_change_per_cycle)
	}
	problems := weights.infeasibility(intervals, cfg)
}

obligations_of(problems, floors, intervals, cfg) := {"clamp": weights.clamp(intervals, notes)} if {
	count(problems) == 0
	out_of_bounds := weights.out_of_bounds(intervals, cfg)
	count(out_of_bounds) > 0
	notes := floor_notes(out_of_bounds, floors, cfg) | {note |
		some arm in out_of_bounds
		note := weights.change_note(arm, cfg.max_change_per_cycle, cfg)
	}
} else := {}

floor_notes(arms, floors, cfg) := {note |
	some arm in arms
	floor := floors[arm]
	weights.proposed[arm] < floor.share - cfg.bound_tolerance
	note := {
		"code": floor.code,
		"arm": arm,
		"message": sprintf("%v gets %v, less than %v (%v)", [arm, weights.proposed[arm], floor.share, floor_reason(arm, floor.code, cfg)]),
	}
}

floor_reason(arm, "arm_starved", cfg) := sprintf("it has %v clicks, fewer than min_samples_before_starve %v", [weights.clicks[arm], cfg.min_samples_before_starve])

floor_reason(_, "below_exploration_floor", _) := "exploration_floor"
