# Budget arbitrage: limits on the daily budgets it proposes for campaigns.
#
# Denies a malformed proposal (unknown campaign, negative or non-numeric amount).
# Budgets above a campaign's cap, shifts larger than allowed, increases for
# campaigns under the ROI floor, budgets below what was already spent today and a
# total above the global cap are repaired by a clamp obligation instead.
package smartlinks.budget_arbitrage

import data.config.budget_arbitrage as cfg
import data.smartlinks.lib.bounds

campaigns := c if {
	c := input.state.campaigns
	is_object(c)
} else := {}

proposed := b if {
	b := input.action.params.budgets
} else := null

# --- shape of the proposal ---------------------------------------------------------

shape contains {
	"code": "missing_budgets",
	"policy": "budget_arbitrage",
	"message": "params.budgets must be an object mapping each campaign to its daily budget",
} if {
	not is_object(proposed)
}

shape contains {
	"code": "unknown_campaign",
	"policy": "budget_arbitrage",
	"target": campaign,
	"message": sprintf("%v is not a campaign in state.campaigns", [campaign]),
} if {
	is_object(proposed)
	some campaign, _ in proposed
	not known_campaign(campaign)
}

known_campaign(campaign) if is_object(campaigns[campaign])

shape contains {
	"code": "invalid_budget",
	"policy": "budget_arbitrage",
	"target": campaign,
	"message": sprintf("the budget of %v must be a number >= 0, got %v", [campaign, amount]),
} if {
	is_object(proposed)
	some campaign, amount in proposed
	not valid_amount(amount)
}

valid_amount(amount) if {
	is_number(amount)
	amount >= 0
}

well_formed if count(shape) == 0

deny contains reason if some reason in shape

deny contains {
	"code": "budget_bounds_infeasible",
	"policy": "budget_arbitrage",
	"message": sprintf("the campaigns' minimum budgets sum to %v, above the %v left under the global cap", [lowest_total, total_max]),
} if {
	well_formed
	lowest_total > total_max + cfg.amount_tolerance
}

# --- per-campaign limits -----------------------------------------------------------

current(campaign) := campaigns[campaign].budget if {
	is_number(campaigns[campaign].budget)
} else := 0

spent(campaign) := campaigns[campaign].spend_today if {
	is_number(campaigns[campaign].spend_today)
} else := 0

# The lower of the campaign's own daily cap and the default per-campaign cap.
cap(campaign) := min([cfg.per_campaign_cap, campaigns[campaign].daily_cap]) if {
	is_number(campaigns[campaign].daily_cap)
} else := cfg.per_campaign_cap

# A budget may move by max_shift_ratio of the current budget, or by
# max_shift_amount when that is larger (so a small or zero budget can still grow).
shift_limit(campaign) := max([cfg.max_shift_ratio * current(campaign), cfg.max_shift_amount]) if {
	is_number(cfg.max_shift_amount)
} else := cfg.max_shift_ratio * current(campaign)

roi_below_floor(campaign) if campaigns[campaign].roi < cfg.roi_floor

# Bounds in order of precedence: what was spent cannot be unspent, then the cap,
# then no increase under the ROI floor, then the shift limit.
hard_interval(campaign) := [max([0, spent(campaign)]), max([spent(campaign), cap(campaign)])]

roi_interval(campaign) := bounds.narrow(hard_interval(campaign), [0, current(campaign)]) if {
	roi_below_floor(campaign)
} else := hard_interval(campaign)

intervals[campaign] := bounds.narrow(roi_interval(campaign), [old - limit, old + limit]) if {
	well_formed
	some campaign, _ in proposed
	old := current(campaign)
	limit := shift_limit(campaign)
}

# --- the global cap ---------------------------------------------------------------

global_cap := min([cfg.global_daily_cap, input.state.global_daily_cap]) if {
	is_number(input.state.global_daily_cap)
} else := cfg.global_daily_cap

# Campaigns left out of params.budgets keep their budget, so the proposed vector
# may use only what they leave under the global cap.
total_max := global_cap - sum([current(campaign) |
	some campaign, _ in campaigns
	not listed(campaign)
]) if {
	well_formed
}

listed(campaign) if _ = proposed[campaign]

lowest_total := sum([interval[0] | some interval in intervals])

proposed_total := sum([amount | some amount in proposed]) if well_formed

# --- clamping -------------------------------------------------------------------

out_of_bounds contains campaign if {
	some campaign, interval in intervals
	bounds.outside(proposed[campaign], interval, cfg.amount_tolerance)
}

total_exceeded if {
	well_formed
	not bounds.within(proposed_total, total_max, cfg.amount_tolerance)
}

notes contains {
	"code": "above_campaign_cap",
	"campaign": campaign,
	"message": sprintf("%v gets %v, more than its cap %v", [campaign, proposed[campaign], cap(campaign)]),
} if {
	some campaign in out_of_bounds
	proposed[campaign] > cap(campaign) + cfg.amount_tolerance
}

notes contains {
	"code": "below_spend",
	"campaign": campaign,
	"message": sprintf("%v gets %v, less than the %v it already spent today", [campaign, proposed[campaign], spent(campaign)]),
} if {
	some campaign in out_of_bounds
	proposed[campaign] < spent(campaign) - cfg.amount_tolerance
}

notes contains {
	"code": "roi_below_floor",
	"campaign": campaign,
	"message": sprintf("%v has ROI %v, under roi_floor %v: its budget may not increase", [campaign, campaigns[campaign].roi, cfg.roi_floor]),
} if {
	some campaign in out_of_bounds
	roi_below_floor(campaign)
	proposed[campaign] > current(campaign) + cfg.amount_tolerance
}

notes contains {
	"code": "shift_too_large",
	"campaign": campaign,
	"message": sprintf("%v moves by %v, more than the allowed shift %v", [campaign, shift, shift_limit(campaign)]),
} if {
	some campaign in out_of_bounds
	shift := abs(proposed[campaign] - current(campaign))
	shift > shift_limit(campaign) + cfg.amount_tolerance
}

notes contains {
	"code": "total_above_global_cap",
	"message": sprintf("the budgets sum to %v, more than the %v left under the global cap %v", [proposed_total, total_max, global_cap]),
} if {
	total_exceeded
}

clamp := {"clamp": {
	"param": "budgets",
	"bounds": intervals,
	"total_max": total_max,
	"notes": [note | some note in notes],
}} if {
	well_formed
	lowest_total <= total_max + cfg.amount_tolerance
	clamp_needed
} else := {}

clamp_needed if count(out_of_bounds) > 0

clamp_needed if total_exceeded

# --- approval -------------------------------------------------------------------

# A total increase above approval.increase_above (null: never) needs a human with
# approval.role to approve it first.
approval := {"require_approval": {"role": cfg.approval.role}} if {
	well_formed
	is_number(cfg.approval.increase_above)
	increase := proposed_total - sum([current(campaign) | some campaign, _ in proposed])
	increase > cfg.approval.increase_above
} else := {}

obligations := object.union(clamp, approval)
