package smartlinks.payouts_test

import data.smartlinks.payouts

state := {
	"affiliate": {"id": "aff_1", "status": "active", "age_days": 40, "on_hold": false, "payout_method": "stripe", "has_destination": true},
	"payable": {"available": 12000},
	"treasury": {"available": 10000000, "committed_today": 0},
	"payout": {"id": "po_1", "requested_by": "system:treasury", "approval": "none"},
}

treasury := {"id": "system:treasury", "kind": "system", "roles": []}

finance := {"id": "user:7", "kind": "user", "roles": ["finance"]}

payout(amount) := request("payout.create", treasury, {"amount": amount}, {})

request(type, actor, extra_params, extra_state) := {
	"action": {
		"type": type,
		"actor": actor,
		"params": object.union({"payout_id": "po_1", "affiliate_id": "aff_1", "amount": 12000, "currency": "EUR", "provider": "stripe", "manual": false, "payments_mode": "test"}, extra_params),
	},
	"state": object.union(state, extra_state),
	"mode": "test",
}

codes(reasons) := {reason.code | some reason in reasons}

test_a_payout_within_every_limit_is_allowed_without_obligations if {
	payouts.deny == set() with input as payout(12000)
	payouts.obligations == {} with input as payout(12000)
}

test_the_amount_is_a_positive_integer_of_minor_units if {
	"invalid_amount" in codes(payouts.deny) with input as payout(0)
	"invalid_amount" in codes(payouts.deny) with input as payout(-5)
	"invalid_amount" in codes(payouts.deny) with input as payout(12.5)
	"invalid_amount" in codes(payouts.deny) with input as payout("120.00")
}

test_only_configured_currencies_are_paid if {
	"currency_not_supported" in codes(payouts.deny) with input as {"action": {"type": "payout.create", "actor": treasury, "params": {"amount": 5}}, "state": state}
	codes(payouts.deny) == {"currency_not_supported"} with input as request("payout.create", treasury, {"currency": "XAU"}, {})
}

test_the_maximum_single_payout if {
	deny := payouts.deny with input as payout(2000001)
		with data.config.payouts.max_single_payout as {"default": 2000000}
		with data.config.payouts.approval.above.test as {"default": null}
	"above_max_single_payout" in codes(deny)
	payouts.deny == set() with input as request("payout.create", treasury, {"amount": 5000}, {"payable": {"available": 5000}})
		with data.config.payouts.max_single_payout as {"default": 2000000, "EUR": 5000}
	"above_max_single_payout" in codes(payouts.deny) with input as payout(5001)
		with data.config.payouts.max_single_payout as {"default": 2000000, "EUR": 5000}
}

test_the_daily_treasury_cap_counts_what_was_committed_today if {
	near_cap := {"treasury": {"available": 10000000, "committed_today": 99995000}}
	codes(payouts.deny) == {"daily_cap_exceeded"} with input as request("payout.create", treasury, {}, near_cap)
	payouts.deny == set() with input as request("payout.create", treasury, {"amount": 5000}, near_cap)
}

test_the_treasury_keeps_its_floor if {
	low := {"treasury": {"available": 12000, "committed_today": 0}}
	codes(payouts.deny) == {"treasury_below_floor"} with input as request("payout.create", treasury, {}, low)
		with data.config.payouts.treasury_floor as {"default": 1}
	payouts.deny == set() with input as request("payout.create", treasury, {}, low)
		with data.config.payouts.treasury_floor as {"default": 0}
}

test_missing_treasury_facts_deny if {
	"state_missing" in codes(payouts.deny) with input as request("payout.create", treasury, {}, {"treasury": null})
}

test_an_affiliate_is_never_paid_more_than_it_is_owed if {
	codes(payouts.deny) == {"above_payable_balance"} with input as payout(12001)
}

aff(fields) := {"affiliate": object.union(state.affiliate, fields)}

test_affiliate_conditions if {
	codes(payouts.deny) == {"affiliate_on_hold"} with input as request("payout.create", treasury, {}, aff({"on_hold": true}))
	codes(payouts.deny) == {"affiliate_not_active"} with input as request("payout.create", treasury, {}, aff({"status": "suspended"}))
	codes(payouts.deny) == {"no_payout_method"} with input as request("payout.create", treasury, {}, aff({"payout_method": "none"}))
	codes(payouts.deny) == {"no_payout_method"} with input as request("payout.create", treasury, {}, aff({"has_destination": false}))
	codes(payouts.deny) == {"affiliate_in_hold_period"} with input as request("payout.create", treasury, {}, aff({"age_days": 3.5}))
	codes(payouts.deny) == {"affiliate_in_hold_period"} with input as request("payout.create", treasury, {}, aff({"age_days": null}))
}

test_a_destination_changed_through_the_portal_waits_for_the_hold if {
	recent := aff({"destination": {"self_service": true, "changed_hours_ago": 2.5}})
	codes(payouts.deny) == {"destination_recently_changed"} with input as request("payout.create", treasury, {}, recent)
	past := aff({"destination": {"self_service": true, "changed_hours_ago": 48}})
	payouts.deny == set() with input as request("payout.create", treasury, {}, past)
	by_staff := aff({"destination": {"self_service": false, "changed_hours_ago": 0.1}})
	payouts.deny == set() with input as request("payout.create", treasury, {}, by_staff)
	never := aff({"destination": {"self_service": false, "changed_hours_ago": null}})
	payouts.deny == set() with input as request("payout.create", treasury, {}, never)
	payouts.deny == set() with input as request("payout.create", treasury, {}, recent)
		with data.config.payouts.destination_change_hold_hours as 2
}

test_live_payouts_need_live_enabled_and_live_mode if {
	live := request("payout.create", treasury, {"payments_mode": "live"}, {})
	codes(payouts.deny) == {"live_payouts_disabled", "live_payout_outside_live_mode"} with input as live
	codes(payouts.deny) == {"live_payouts_disabled"} with input as object.union(live, {"mode": "live"})
	payouts.deny == set() with input as object.union(live, {"mode": "live"})
		with data.config.payouts.live_enabled as true
}

test_live_payouts_above_the_threshold_wait_for_finance if {
	live := object.union(request("payout.create", treasury, {"payments_mode": "live", "amount": 60000}, {"payable": {"available": 60000}}), {"mode": "live"})
	payouts.obligations == {"require_approval": {"role": "finance"}} with input as live
		with data.config.payouts.live_enabled as true
	payouts.deny == set() with input as live
		with data.config.payouts.live_enabled as true
	payouts.obligations == {} with input as object.union(live, {"action": object.union(live.action, {"params": object.union(live.action.params, {"amount": 50000})})})
		with data.config.payouts.live_enabled as true
}

test_test_mode_has_its_own_approval_threshold if {
	big := request("payout.create", treasury, {"amount": 1500000}, {"payable": {"available": 1500000}})
	payouts.obligations == {"require_approval": {"role": "finance"}} with input as big
	payouts.obligations == {} with input as big with data.config.payouts.approval.above.test as {"default": null}
}

manual(actor) := request("payout.create", actor, {"manual": true}, {})

test_manual_payouts_need_a_finance_role if {
	payouts.deny == set() with input as manual(finance)
	codes(payouts.deny) == {"manual_payout_not_permitted"} with input as manual({"id": "user:9", "kind": "user", "roles": ["operator"]})
	payouts.obligations == {"require_approval": {"role": "finance"}} with input as manual(finance)
		with data.config.payouts.approval.manual_always as true
}

test_automatic_payouts_come_only_from_the_treasury if {
	"automatic_payout_not_permitted" in codes(payouts.deny) with input as {"action": {"type": "payout.create", "params": {"amount": 5, "currency": "EUR"}}, "state": state}
	codes(payouts.deny) == {"automatic_payout_not_permitted"} with input as request("payout.create", {"id": "algo:x", "kind": "algorithm"}, {}, {})
}

awaiting := {"payout": {"id": "po_1", "requested_by": "user:3", "approval": "required"}}

test_a_finance_user_approves_a_parked_payout_with_every_limit_checked_again if {
	payouts.deny == set() with input as request("payout.approve", finance, {}, awaiting)
	payouts.obligations == {} with input as request("payout.approve", finance, {"amount": 1500000}, object.union(awaiting, {"payable": {"available": 1500000}}))
	"above_payable_balance" in codes(payouts.deny) with input as request("payout.approve", finance, {"amount": 20000}, awaiting)
}

test_who_may_approve if {
	codes(payouts.deny) == {"approver_not_permitted"} with input as request("payout.approve", {"id": "user:9", "roles": ["operator"]}, {}, awaiting)
	codes(payouts.deny) == {"approver_is_requester"} with input as request("payout.approve", object.union(finance, {"id": "user:3"}), {}, awaiting)
	codes(payouts.deny) == {"not_awaiting_approval"} with input as request("payout.approve", finance, {}, {})
}

test_a_rejection_gives_its_reason if {
	codes(payouts.deny) == {"reason_required"} with input as request("payout.reject", finance, {}, awaiting)
	codes(payouts.deny) == {"reason_required"} with input as request("payout.reject", finance, {"reason": "  "}, awaiting)
	payouts.deny == set() with input as request("payout.reject", finance, {"reason": "duplicate account"}, awaiting)
	payouts.deny == set() with input as request("payout.reject", finance, {"reason": "fraud", "amount": -1, "currency": "XAU"}, object.union(awaiting, {"affiliate": {}}))
}

# --- composed with global safety ---------------------------------------------------------

test_payouts_are_exempt_from_the_generic_rate_limits_but_have_their_own if {
	busy := object.union(payout(12000), {"context": {"actor_action_counts": {"60": 500, "3600": 4000, "86400": 4000}}, "controls": {}, "now": "2026-11-25T10:00:00Z"})
	data.smartlinks.decision.allow with input as busy
	flooded := object.union(busy, {"context": {"actor_action_counts": {"60": 500, "3600": 50000, "86400": 50000}}})
	result := data.smartlinks.decision with input as flooded
	{r.code | some r in result.reasons} == {"rate_limit_exceeded"}
}

test_the_decision_dispatches_payout_actions_here if {
	result := data.smartlinks.decision with input as object.union(payout(0), {"context": {"actor_action_counts": {"60": 0, "3600": 0, "86400": 0}}})
	result.allow == false
	{r.policy | some r in result.reasons} == {"payouts"}
}
