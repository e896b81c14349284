# Building blocks shared by the allocation policies (traffic_optimizer,
# thompson_sampling, ucb): reading the proposed weight vector and the link state,
# checking the vector's shape, and turning per-arm limits into a clamp obligation.
#
# Violations returned here are partial reasons ({code, message[, target]}); the
# calling policy adds its own "policy" name.
package smartlinks.lib.weights

import data.smartlinks.lib.bounds

# --- what the input says ------------------------------------------------------

state := s if {
	s := input.state
	is_object(s)
} else := {}

# The proposed vector, or null when the action carries none.
proposed := w if {
	w := input.action.params.weights
} else := null

arms := {arm | some arm in state.arms} if {
	is_array(state.arms)
} else := set()

# current[arm] is the arm's current share, for arms that have one (a new arm has none).
current := {arm: share |
	some arm, share in state.current_weights
	is_number(share)
}

# clicks[arm] is the arm's click count, 0 when the state has no evidence for it.
clicks := object.union({arm: 0 | some arm in arms}, {arm: n |
	some arm in arms
	n := state.evidence[arm].clicks
	is_number(n)
})

total_clicks := sum([c | some c in clicks])

# --- shape of the vector --------------------------------------------------------

# shape_violations(cfg) is the set of reasons the vector is malformed (empty when
# it is a share for exactly the link's arms, summing to 1). The common case, a
# well-formed vector, is recognised first without building every check.
shape_violations(cfg) := {{
	"code": "missing_weights",
	"message": "params.weights must be an object mapping each arm to its share",
}} if {
	not is_object(proposed)
} else := set() if {
	well_formed(cfg)
} else := ((no_arms | unknown_arms) | (missing_arms | invalid_weights)) | (not_normalized(cfg) | too_many_arms(cfg))

well_formed(cfg) if {
	count(arms) > 0
	object.keys(proposed) == arms
	every share in proposed {
		valid_share(share)
	}
	abs(sum([share | some share in proposed]) - 1) <= cfg.sum_tolerance
	count(too_many_arms(cfg)) == 0
}

no_arms := {{"code": "no_arms", "message": "state.arms is empty or missing: there is nothing to allocate"}} if {
	count(arms) == 0
} else := set()

unknown_arms := {v |
	some arm, _ in proposed
	not arm in arms
	v := {"code": "unknown_arm", "target": arm, "message": sprintf("%v is not an arm of this link", [arm])}
}

missing_arms := {v |
	some arm in arms
	not has_key(proposed, arm)
	v := {"code": "missing_arm", "target": arm, "message": sprintf("arm %v has no weight", [arm])}
}

invalid_weights := {v |
	some arm, w in proposed
	not valid_share(w)
	v := {"code": "invalid_weight", "target": arm, "message": sprintf("weight of %v must be a number in [0, 1], got %v", [arm, w])}
}

not_normalized(cfg) := {{
	"code": "weights_not_normalized",
	"message": sprintf("weights sum to %v, not 1 (tolerance %v)", [total, cfg.sum_tolerance]),
}} if {
	every w in proposed {
		is_number(w)
	}
	total := sum([w | some w in proposed])
	abs(total - 1) > cfg.sum_tolerance
} else := set()

too_many_arms(cfg) := {{
	"code": "too_many_arms",
	"message": sprintf("%d arms, more than max_arms %v", [count(arms), cfg.max_arms]),
}} if {
	is_number(cfg.max_arms)
	count(arms) > cfg.max_arms
} else := set()

valid_share(w) if {
	is_number(w)
	w >= 0
	w <= 1
}

has_key(obj, key) if {
	_ = obj[key]
}

# --- limits and clamping ---------------------------------------------------------

# hard_interval(floor, ceiling) is [floor, ceiling] kept inside [0, 1]. A floor above
# the ceiling is kept as is (reversed) so that infeasibility reports it.
hard_interval(floor, ceiling) := [max([0, floor]), min([1, ceiling])]

# arm_interval(hard, arm, max_change): the arm's bounds for this cycle. The hard
# interval (floors, ceilings) wins over the max change from the current share; an
# arm without a current share (a new arm) only gets the hard interval.
arm_interval(hard, arm, max_change) := hard if {
	hard[0] > hard[1]
} else := hard if {
	# shares live in [0, 1]: a max change of 1 or more does not limit anything
	max_change >= 1
} else := bounds.narrow(hard, [current[arm] - max_change, current[arm] + max_change]) if {
	is_number(current[arm])
} else := hard

# respects(arm, floor, ceiling, change) is a cheap test, with no per-arm interval,
# that arm's proposed share needs no clamp: it lies in [floor, ceiling] and moves by
# at most change from its current share (limits already widened by the tolerance;
# a change of 1 or more is no limit). Float arithmetic is slow in OPA: this test
# spends one subtraction per arm, and only when the change is limited.
respects(arm, floor, ceiling, change) if {
	share := proposed[arm]
	share >= floor
	share <= ceiling
	not moves_more_than(arm, share, change)
}

moves_more_than(arm, share, change) if {
	change < 1
	abs(share - current[arm]) > change
}

# infeasibility(intervals, cfg): no vector summing to 1 fits in the per-arm bounds.
infeasibility(intervals, cfg) := reversed_intervals(intervals) | infeasible_total(intervals, cfg)

reversed_intervals(intervals) := {v |
	some arm, interval in intervals
	interval[0] > interval[1]
	v := {"code": "bounds_infeasible", "target": arm, "message": sprintf("the floor of %v is above its ceiling: %v", [arm, interval])}
}

infeasible_total(intervals, cfg) := {{
	"code": "bounds_infeasible",
	"message": sprintf("the arm bounds allow shares summing to [%v, %v], which excludes 1", [lo, hi]),
}} if {
	lo := sum([interval[0] | some interval in intervals])
	hi := sum([interval[1] | some interval in intervals])
	not total_reachable(lo, hi, cfg.bound_tolerance)
} else := set()

total_reachable(lo, hi, tolerance) if {
	lo <= 1 + tolerance
	hi >= 1 - tolerance
}

# out_of_bounds(intervals, cfg): the arms whose proposed share is outside its bounds.
out_of_bounds(intervals, cfg) := {arm |
	some arm, interval in intervals
	bounds.outside(proposed[arm], interval, cfg.bound_tolerance)
}

# change_note(arm, max_change, cfg) explains a clamp caused by the max change per cycle.
change_note(arm, max_change, cfg) := {
	"code": "weight_change_too_large",
	"arm": arm,
	"message": sprintf("%v moves by %v, more than max_change_per_cycle %v", [arm, change, max_change]),
} if {
	change := abs(proposed[arm] - current[arm])
	change > max_change + cfg.bound_tolerance
}

# clamp(intervals, notes) is the obligation asking the server to project the
# weights into the bounds (every arm is listed) keeping their sum at 1.
clamp(intervals, notes) := {
	"param": "weights",
	"bounds": intervals,
	"total": 1.0,
	"notes": [note | some note in notes],
}
