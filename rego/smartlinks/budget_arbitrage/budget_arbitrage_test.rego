package smartlinks.budget_arbitrage_test

import data.smartlinks.budget_arbitrage

campaigns := {
	"c1": {"budget": 1000, "daily_cap": 3000, "spend_today": 100, "roi": 0.5},
	"c2": {"budget": 800, "spend_today": 200, "roi": 0.2},
	"c3": {"budget": 500, "roi": 1.0},
}

proposal(budgets) := proposal_in(budgets, {"campaigns": campaigns})

proposal_in(budgets, state) := {
	"action": {"type": "budget.reallocate", "params": {"budgets": budgets}},
	"state": state,
}

# the same campaigns, with c's fields replaced
changed(c, fields) := {"campaigns": object.union(campaigns, {c: fields})}

codes(reasons) := {reason.code | some reason in reasons}

has_reason(reasons, code, target) if {
	some reason in reasons
	reason.code == code
	reason.target == target
	reason.policy == "budget_arbitrage"
}

note_codes(obligations) := {[note.code, object.get(note, "campaign", null)] | some note in obligations.clamp.notes}

test_a_modest_reallocation_is_allowed_as_is if {
	budget_arbitrage.deny == set() with input as proposal({"c1": 1200, "c2": 700})
	budget_arbitrage.obligations == {} with input as proposal({"c1": 1200, "c2": 700})
}

# --- shape -------------------------------------------------------------------------

test_budgets_must_be_given_as_an_object if {
	codes(budget_arbitrage.deny) == {"missing_budgets"} with input as {"action": {"params": {}}, "state": {"campaigns": campaigns}}
	codes(budget_arbitrage.deny) == {"missing_budgets"} with input as proposal([1200, 700])
}

test_a_campaign_not_in_the_state_is_denied if {
	deny := budget_arbitrage.deny with input as proposal({"c1": 1200, "c9": 10})
	has_reason(deny, "unknown_campaign", "c9")
	codes(deny) == {"unknown_campaign"}
	has_reason(budget_arbitrage.deny, "unknown_campaign", "c1") with input as {"action": {"params": {"budgets": {"c1": 1}}}}
}

test_a_budget_must_be_a_number_at_least_0 if {
	has_reason(budget_arbitrage.deny, "invalid_budget", "c1") with input as proposal({"c1": -5})
	has_reason(budget_arbitrage.deny, "invalid_budget", "c1") with input as proposal({"c1": "1200"})
	has_reason(budget_arbitrage.deny, "invalid_budget", "c2") with input as proposal({"c1": 1000, "c2": null})
	budget_arbitrage.deny == set() with input as proposal({"c3": 400})
}

test_a_malformed_proposal_gets_no_clamp if {
	budget_arbitrage.obligations == {} with input as proposal({"c1": 999999, "c9": 1})
}

# --- per-campaign cap -------------------------------------------------------------

test_a_budget_above_the_campaigns_own_cap_is_clamped if {
	obligations := budget_arbitrage.obligations with input as proposal({"c1": 3500})
		with data.config.budget_arbitrage.max_shift_ratio as 10
	obligations.clamp.bounds.c1 == [100, 3000]
	note_codes(obligations) == {["above_campaign_cap", "c1"]}
}

test_the_default_cap_wins_when_lower if {
	obligations := budget_arbitrage.obligations with input as proposal_in({"c1": 6000}, changed("c1", {"budget": 4900, "daily_cap": 8000}))
	obligations.clamp.bounds.c1 == [3430, 5000]
	note_codes(obligations) == {["above_campaign_cap", "c1"]}
}

# --- max shift per cycle -------------------------------------------------------

test_a_shift_larger_than_max_shift_ratio_is_clamped if {
	budget_arbitrage.deny == set() with input as proposal({"c1": 2000})
	obligations := budget_arbitrage.obligations with input as proposal({"c1": 2000})
	obligations.clamp == {
		"param": "budgets",
		"bounds": {"c1": [700, 1300]},
		"total_max": 48700,
		"notes": [{"code": "shift_too_large", "campaign": "c1", "message": "c1 moves by 1000, more than the allowed shift 300"}],
	}
}

test_the_shift_limit_is_inclusive if {
	budget_arbitrage.obligations == {} with input as proposal({"c1": 1300, "c2": 560})
}

test_max_shift_amount_lets_a_small_budget_move if {
	state := changed("c3", {"budget": 0})
	budget_arbitrage.obligations == {} with input as proposal_in({"c3": 100}, state)
	obligations := budget_arbitrage.obligations with input as proposal_in({"c3": 150}, state)
	obligations.clamp.bounds.c3 == [0, 100]
	note_codes(obligations) == {["shift_too_large", "c3"]}
}

test_without_max_shift_amount_only_the_ratio_applies if {
	obligations := budget_arbitrage.obligations with input as proposal_in({"c3": 100}, changed("c3", {"budget": 0}))
		with data.config.budget_arbitrage.max_shift_amount as null
	obligations.clamp.bounds.c3 == [0, 0]
}

# --- ROI floor -------------------------------------------------------------------

test_a_campaign_under_the_roi_floor_may_not_grow if {
	state := changed("c2", {"budget": 800, "roi": -0.1})
	obligations := budget_arbitrage.obligations with input as proposal_in({"c2": 900}, state)
	obligations.clamp.bounds.c2 == [560, 800]
	note_codes(obligations) == {["roi_below_floor", "c2"]}
	budget_arbitrage.obligations == {} with input as proposal_in({"c2": 700}, state)
}

test_a_campaign_at_the_roi_floor_may_grow if {
	budget_arbitrage.obligations == {} with input as proposal_in({"c2": 900}, changed("c2", {"budget": 800, "roi": 0}))
}

test_a_campaign_without_roi_may_grow if {
	budget_arbitrage.obligations == {} with input as proposal_in({"c2": 900}, changed("c2", {"budget": 800}))
}

# --- spend ---------------------------------------------------------------------

test_a_budget_below_todays_spend_is_clamped_up if {
	obligations := budget_arbitrage.obligations with input as proposal({"c2": 150})
		with data.config.budget_arbitrage.max_shift_ratio as 1
	obligations.clamp.bounds.c2 == [200, 1600]
	note_codes(obligations) == {["below_spend", "c2"]}
}

test_spend_wins_over_the_cap_and_the_shift_limit if {
	# c1 already spent 3500, above its cap of 3000: its budget can only be 3500
	obligations := budget_arbitrage.obligations with input as proposal_in({"c1": 1000}, changed("c1", {"budget": 1000, "daily_cap": 3000, "spend_today": 3500}))
	obligations.clamp.bounds.c1 == [3500, 3500]
}

# --- global cap ------------------------------------------------------------------

test_a_total_above_the_global_cap_is_clamped if {
	# c3 keeps its 500, so c1 and c2 may use 2500 - 500 = 2000
	obligations := budget_arbitrage.obligations with input as proposal({"c1": 1300, "c2": 800})
		with data.config.budget_arbitrage.global_daily_cap as 2500
	obligations.clamp.total_max == 2000
	obligations.clamp.bounds == {"c1": [700, 1300], "c2": [560, 1040]}
	note_codes(obligations) == {["total_above_global_cap", null]}
	budget_arbitrage.obligations == {} with input as proposal({"c1": 1200, "c2": 800})
		with data.config.budget_arbitrage.global_daily_cap as 2500
}

test_a_lower_global_cap_in_the_state_wins if {
	obligations := budget_arbitrage.obligations with input as proposal_in({"c1": 1200, "c2": 800}, {"campaigns": campaigns, "global_daily_cap": 2000})
		with data.config.budget_arbitrage.global_daily_cap as 2500
	obligations.clamp.total_max == 1500
}

test_a_higher_global_cap_in_the_state_does_not_raise_the_data_cap if {
	obligations := budget_arbitrage.obligations with input as proposal_in({"c1": 1300, "c2": 800}, {"campaigns": campaigns, "global_daily_cap": 99999})
		with data.config.budget_arbitrage.global_daily_cap as 2500
	obligations.clamp.total_max == 2000
}

test_minimum_budgets_above_the_global_cap_are_infeasible if {
	# c1 may not drop below 700 nor c2 below 560: 1260 > 1000 - 500
	deny := budget_arbitrage.deny with input as proposal({"c1": 500, "c2": 300})
		with data.config.budget_arbitrage.global_daily_cap as 1000
	codes(deny) == {"budget_bounds_infeasible"}
	budget_arbitrage.obligations == {} with input as proposal({"c1": 500, "c2": 300})
		with data.config.budget_arbitrage.global_daily_cap as 1000
}

# --- approval ------------------------------------------------------------------

test_no_approval_is_needed_by_default if {
	not budget_arbitrage.obligations.require_approval with input as proposal({"c1": 1300, "c2": 1040})
}

test_a_total_increase_above_the_threshold_needs_approval if {
	obligations := budget_arbitrage.obligations with input as proposal({"c1": 1200, "c2": 800})
		with data.config.budget_arbitrage.approval.increase_above as 100
	obligations == {"require_approval": {"role": "finance"}}
	budget_arbitrage.obligations == {} with input as proposal({"c1": 1100, "c2": 800})
		with data.config.budget_arbitrage.approval.increase_above as 100
}

test_a_campaign_without_a_budget_starts_from_0 if {
	obligations := budget_arbitrage.obligations with input as proposal_in({"c4": 500}, {"campaigns": {"c4": {}}})
	obligations.clamp.bounds.c4 == [0, 100]
}
