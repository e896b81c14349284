# Traffic optimizer: limits on the weights it proposes for a smart link's arms.
#
# Denies a malformed vector and moving traffic on too little evidence; a share
# below the floor, above the ceiling or moving more than max_change_per_cycle is
# repaired by a clamp obligation instead (allow stays true).
package smartlinks.traffic_optimizer

import data.config.traffic_optimizer as cfg
import data.smartlinks.lib.weights

shape := weights.shape_violations(cfg)

well_formed if count(shape) == 0

# The same hard interval for every arm: [min_share, max_share].
hard := weights.hard_interval(cfg.min_share, cfg.max_share)

# Common case: every share within its limits. Nothing to clamp then, and the
# shares, summing to 1 inside their bounds, prove the bounds feasible.
within_limits if {
	well_formed
	floor := hard[0] - cfg.bound_tolerance
	ceiling := hard[1] + cfg.bound_tolerance
	change := cfg.max_change_per_cycle + cfg.bound_tolerance
	every arm in weights.arms {
		weights.respects(arm, floor, ceiling, change)
	}
}

# Otherwise the bounds are worked out per arm.
bounded if {
	well_formed
	not within_limits
}

intervals[arm] := weights.arm_interval(hard, arm, cfg.max_change_per_cycle) if {
	bounded
	some arm in weights.arms
}

infeasible := weights.infeasibility(intervals, cfg) if {
	bounded
} else := set()

deny contains with_policy(violation) if some violation in shape

deny contains with_policy(violation) if some violation in infeasible

# --- minimum evidence before moving traffic --------------------------------------

# An arm in rotation has a positive current share; an arm being introduced does
# not need evidence yet (it could never collect any otherwise).
in_rotation contains arm if {
	some arm, share in weights.current
	share > 0
}

moved if {
	some arm, share in weights.proposed
	share != weights.current[arm]
	abs(share - weights.current[arm]) > cfg.unchanged_tolerance
}

deny contains {
	"code": "insufficient_evidence",
	"policy": "traffic_optimizer",
	"message": sprintf("only %v clicks in total, min_total_clicks is %v: the weights may not change yet", [weights.total_clicks, cfg.min_total_clicks]),
} if {
	well_formed
	moved
	weights.total_clicks < cfg.min_total_clicks
}

deny contains {
	"code": "insufficient_evidence",
	"policy": "traffic_optimizer",
	"target": arm,
	"message": sprintf("%v has only %v clicks, min_clicks_per_arm is %v: the weights may not change yet", [arm, weights.clicks[arm], cfg.min_clicks_per_arm]),
} if {
	well_formed
	moved
	some arm in in_rotation
	weights.clicks[arm] < cfg.min_clicks_per_arm
}

# --- clampable limits ------------------------------------------------------------

out_of_bounds := weights.out_of_bounds(intervals, cfg) if {
	bounded
} else := set()

notes contains {
	"code": "share_below_floor",
	"arm": arm,
	"message": sprintf("%v gets %v, less than min_share %v", [arm, weights.proposed[arm], hard[0]]),
} if {
	some arm in out_of_bounds
	weights.proposed[arm] < hard[0] - cfg.bound_tolerance
}

notes contains {
	"code": "share_above_ceiling",
	"arm": arm,
	"message": sprintf("%v gets %v, more than max_share %v", [arm, weights.proposed[arm], hard[1]]),
} if {
	some arm in out_of_bounds
	weights.proposed[arm] > hard[1] + cfg.bound_tolerance
}

notes contains weights.change_note(arm, cfg.max_change_per_cycle, cfg) if some arm in out_of_bounds

default obligations := {}

obligations := {"clamp": weights.clamp(intervals, notes)} if {
	count(infeasible) == 0
	count(out_of_bounds) > 0
}

with_policy(violation) := object.union(violation, {"policy": "traffic_optimizer"})
