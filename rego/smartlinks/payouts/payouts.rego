# Payouts: when money may leave the platform for an affiliate.
#
# payout.create (the treasury or a person proposes a payout), payout.approve and
# payout.reject (a person decides a payout parked for approval). Amounts are
# integer minor units of params.currency; limits come from data.config.payouts,
# per currency with a "default".
#
# Denied: a malformed amount or an unsupported currency, more than the maximum
# single payout, more than the daily treasury cap, a treasury left under its
# floor, more than the affiliate is owed, an affiliate on hold, inactive, without
# a payout method, or newer than the hold period; live payouts unless enabled; a
# manual payout or an approval by someone without the role, or approving one's
# own payout. A payout above the approval threshold of the mode is allowed with a
# require_approval obligation: it waits in the finance approval queue.
package smartlinks.payouts

cfg := data.config.payouts

action_types := {"payout.create", "payout.approve", "payout.reject"}

action_type := input.action.type

params := p if {
	p := input.action.params
	is_object(p)
} else := {}

state := s if {
	s := input.state
	is_object(s)
} else := {}

actor := a if {
	a := input.action.actor
	is_object(a)
} else := {}

roles contains role if some role in actor.roles

amount := params.amount

currency := params.currency

# limit(name) is the data.config.payouts[name] value for this currency, or its default.
limit(name) := cfg[name][currency] if {
	is_number(cfg[name][currency])
} else := cfg[name].default

moves_money if action_type in {"payout.create", "payout.approve"}

# --- the request itself ------------------------------------------------------------

deny contains {
	"code": "invalid_amount",
	"policy": "payouts",
	"message": sprintf("params.amount must be a positive integer of minor units, got %v", [object.get(params, "amount", null)]),
} if {
	moves_money
	not valid_amount
}

valid_amount if {
	is_number(amount)
	amount == round(amount)
	amount > 0
}

deny contains {
	"code": "currency_not_supported",
	"policy": "payouts",
	"message": sprintf("payouts are made in %v, not %v", [sort(cfg.currencies), object.get(params, "currency", null)]),
} if {
	moves_money
	not object.get(params, "currency", null) in {c | some c in cfg.currencies}
}

checkable if {
	moves_money
	valid_amount
	currency in {c | some c in cfg.currencies}
}

# --- limits ------------------------------------------------------------------------

deny contains {
	"code": "above_max_single_payout",
	"policy": "payouts",
	"message": sprintf("%v %v minor units is more than the maximum single payout %v", [amount, currency, limit("max_single_payout")]),
} if {
	checkable
	amount > limit("max_single_payout")
}

committed_today := n if {
	n := state.treasury.committed_today
	is_number(n)
}

deny contains {
	"code": "daily_cap_exceeded",
	"policy": "payouts",
	"message": sprintf("%v already committed today; %v more would pass the daily cap %v %v", [committed_today, amount, limit("daily_cap"), currency]),
} if {
	checkable
	committed_today + amount > limit("daily_cap")
}

treasury_available := n if {
	n := state.treasury.available
	is_number(n)
}

deny contains {
	"code": "treasury_below_floor",
	"policy": "payouts",
	"message": sprintf("paying %v would leave %v %v in the treasury, under its floor %v", [amount, treasury_available - amount, currency, limit("treasury_floor")]),
} if {
	checkable
	treasury_available - amount < limit("treasury_floor")
}

deny contains {
	"code": "state_missing",
	"policy": "payouts",
	"message": "state.treasury.committed_today, state.treasury.available and state.payable.available must be numbers",
} if {
	checkable
	not complete_state
}

complete_state if {
	committed_today
	treasury_available
	is_number(state.payable.available)
}

deny contains {
	"code": "above_payable_balance",
	"policy": "payouts",
	"message": sprintf("the affiliate is owed %v %v, less than the %v asked for", [state.payable.available, currency, amount]),
} if {
	checkable
	amount > state.payable.available
}

# --- the affiliate -------------------------------------------------------------------

affiliate := a if {
	a := state.affiliate
	is_object(a)
} else := {}

deny contains {
	"code": "affiliate_not_active",
	"policy": "payouts",
	"message": sprintf("affiliate %v is %v", [object.get(affiliate, "id", "unknown"), object.get(affiliate, "status", "unknown")]),
} if {
	moves_money
	not affiliate.status == "active"
}

deny contains {
	"code": "affiliate_on_hold",
	"policy": "payouts",
	"message": sprintf("payouts to %v are on hold", [object.get(affiliate, "id", "unknown")]),
} if {
	moves_money
	affiliate.on_hold == true
}

deny contains {
	"code": "no_payout_method",
	"policy": "payouts",
	"message": "the affiliate has no payout method and destination on file",
} if {
	moves_money
	not has_payout_method
}

has_payout_method if {
	affiliate.payout_method in {m | some m in cfg.methods}
	affiliate.has_destination == true
}

# A destination the affiliate changed themselves (the portal) is not paid until
# destination_change_hold_hours have passed: a stolen portal login must not be able to redirect
# the next payout. A change made by staff (finance) carries no hold. Missing facts (an older
# caller) mean no recorded change.
destination := d if {
	d := affiliate.destination
	is_object(d)
} else := {}

deny contains {
	"code": "destination_recently_changed",
	"policy": "payouts",
	"message": sprintf("the payout destination was changed through the portal %v hours ago; it is paid after %v hours", [round(destination.changed_hours_ago * 10) / 10, cfg.destination_change_hold_hours]),
} if {
	moves_money
	destination.self_service == true
	is_number(destination.changed_hours_ago)
	destination.changed_hours_ago < cfg.destination_change_hold_hours
}

deny contains {
	"code": "affiliate_in_hold_period",
	"policy": "payouts",
	"message": sprintf("the affiliate joined %v days ago; new affiliates are paid after %v days", [floor(affiliate.age_days), cfg.new_affiliate_hold_days]),
} if {
	moves_money
	affiliate.age_days < cfg.new_affiliate_hold_days
}

deny contains {
	"code": "affiliate_in_hold_period",
	"policy": "payouts",
	"message": "state.affiliate.age_days must be a number",
} if {
	moves_money
	not is_number(affiliate.age_days)
}

# --- live money ----------------------------------------------------------------------

live if params.payments_mode == "live"

deny contains {
	"code": "live_payouts_disabled",
	"policy": "payouts",
	"message": "live payouts are not enabled (data.config.payouts.live_enabled)",
} if {
	moves_money
	live
	not cfg.live_enabled == true
}

deny contains {
	"code": "live_payout_outside_live_mode",
	"policy": "payouts",
	"message": sprintf("a live payout needs the server in live mode, not %v", [input.mode]),
} if {
	moves_money
	live
	input.mode != "live"
}

# --- who may do what ----------------------------------------------------------------

manual if params.manual == true

deny contains {
	"code": "manual_payout_not_permitted",
	"policy": "payouts",
	"message": sprintf("%v may not make manual payouts (roles %v needed)", [object.get(actor, "id", "unknown"), cfg.manual_roles]),
} if {
	action_type == "payout.create"
	manual
	not holds_any(cfg.manual_roles)
}

deny contains {
	"code": "automatic_payout_not_permitted",
	"policy": "payouts",
	"message": sprintf("automatic payouts are proposed by %v, not %v", [cfg.treasury_actors, object.get(actor, "id", "unknown")]),
} if {
	action_type == "payout.create"
	not manual
	not object.get(actor, "id", null) in {a | some a in cfg.treasury_actors}
}

holds_any(wanted) if {
	some role in wanted
	role in roles
}

deciding if action_type in {"payout.approve", "payout.reject"}

deny contains {
	"code": "approver_not_permitted",
	"policy": "payouts",
	"message": sprintf("%v may not approve or reject payouts (roles %v needed)", [object.get(actor, "id", "unknown"), cfg.approval.approver_roles]),
} if {
	deciding
	not holds_any(cfg.approval.approver_roles)
}

deny contains {
	"code": "approver_is_requester",
	"policy": "payouts",
	"message": "a payout is approved by someone other than the person who asked for it",
} if {
	deciding
	actor.id == state.payout.requested_by
}

deny contains {
	"code": "not_awaiting_approval",
	"policy": "payouts",
	"message": sprintf("payout %v is not waiting for approval", [object.get(params, "payout_id", "unknown")]),
} if {
	deciding
	not state.payout.approval == "required"
}

deny contains {
	"code": "reason_required",
	"policy": "payouts",
	"message": "a rejection gives its reason",
} if {
	action_type == "payout.reject"
	not non_empty(object.get(params, "reason", null))
}

non_empty(s) if {
	is_string(s)
	count(trim_space(s)) > 0
}

# --- approval -----------------------------------------------------------------------

approval_mode := "live" if live

else := "test"

approval_threshold := cfg.approval.above[approval_mode][currency] if {
	is_number(cfg.approval.above[approval_mode][currency])
} else := cfg.approval.above[approval_mode].default

needs_approval if {
	action_type == "payout.create"
	checkable
	is_number(approval_threshold)
	amount > approval_threshold
}

needs_approval if {
	action_type == "payout.create"
	checkable
	manual
	cfg.approval.manual_always == true
}

default obligations := {}

obligations := {"require_approval": {"role": cfg.approval.role}} if needs_approval
