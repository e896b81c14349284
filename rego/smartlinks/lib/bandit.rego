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
evaluate(policy, cfg) := {"deny": deny, "obligations": obligations} if {
	shape := weights.shape_violations(cfg)
	floors := {arm: floor_of(arm, cfg) | some arm in weights.arms}
	intervals := {arm: interval |
		some arm, floor in floors
		interval := weights.arm_interval(weights.hard_interval(floor.share, 1), arm, cfg.max_change_per_cycle)
	}
	problems := problems_of(shape, intervals, cfg)
	deny := {object.union(problem, {"policy": policy}) | some problem in problems}
	obligations := obligations_of(problems, floors, intervals, cfg)
}

undersampled(arm, cfg) if weights.clicks[arm] < cfg.min_samples_before_starve

floor_of(arm, cfg) := {
	"share": max([cfg.exploration_floor, min([cfg.unsampled_min_share, 1 / count(weights.arms)])]),
	"code": "arm_starved",
	"why": sprintf("it has %v clicks, fewer than min_samples_before_starve %v", [weights.clicks[arm], cfg.min_samples_before_starve]),
} if {
	undersampled(arm, cfg)
} else := {
	"share": cfg.exploration_floor,
	"code": "below_exploration_floor",
	"why": "exploration_floor",
}

# A malformed vector is judged on its shape alone; a well-formed one on whether
# its bounds can be met at all.
problems_of(shape, intervals, cfg) := shape if {
	count(shape) > 0
} else := weights.infeasibility(intervals, cfg)

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
		"message": sprintf("%v gets %v, less than %v (%v)", [arm, weights.proposed[arm], floor.share, floor.why]),
	}
}
