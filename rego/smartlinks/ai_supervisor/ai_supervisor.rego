# AI supervisor: what the AI may do on its own, what needs a person, and how far.
#
# Every action type starting with "ai." is judged here (see decision.rego).
#
# Who: the supervisor itself (actor and caller of kind "ai", one of
# supervisor_ids), or a person (actor and caller the same user) approving a
# proposal or undoing an executed one. API callers cannot pose as the AI: the
# server sets the caller from the authenticated subject.
#
# What the AI may propose at all (allowed_actions), per-hour limits per action
# type (state.ai_counts, counted by the server) and per window over all its
# actions (context.actor_action_counts), magnitude limits (budget shift ratio and
# amount, algorithm parameter ranges, the share of links or offers it may keep
# paused), and actions that always need a person (require_approval obligation).
# A pause without server-detected anomaly evidence on its target, and a budget
# shift above approval_above_amount, also wait for a person.
#
# A person approving a proposal is checked again with the same magnitude limits
# and must hold one of approver_roles; undoing needs one of undo_roles within
# undo_window_hours. ai.invalid records a proposal the server's validator
# refused: always denied.
package smartlinks.ai_supervisor

cfg := data.config.ai_supervisor

proposal_types := {
	"ai.link.pause", "ai.link.resume", "ai.offer.pause", "ai.offer.resume",
	"ai.algorithm.set_param", "ai.budget.shift", "ai.alert", "ai.review.request",
}

action_types := proposal_types | {"ai.undo", "ai.invalid"}

undoable_types := {"ai.link.pause", "ai.link.resume", "ai.offer.pause", "ai.offer.resume", "ai.algorithm.set_param", "ai.budget.shift"}

action_type := t if {
	t := input.action.type
	is_string(t)
} else := ""

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

# The caller is the authenticated subject; in a gate query it is input.subject.
caller := c if {
	c := input.caller
	is_object(c)
} else := c if {
	c := input.subject
	is_object(c)
} else := {}

roles contains role if some role in object.get(actor, "roles", [])

roles contains role if some role in object.get(caller, "roles", [])

# --- who is acting -------------------------------------------------------------------

ai_path if {
	actor.kind == "ai"
	caller.kind == "ai"
	caller.id == actor.id
	actor.id in {id | some id in cfg.supervisor_ids}
}

human_path if {
	actor.kind == "user"
	caller.kind == "user"
	caller.id == actor.id
}

reason(code, message) := {"code": code, "policy": "ai_supervisor", "message": message}

deny contains reason("ai_actor_not_recognised", msg) if {
	not ai_path
	not human_path
	msg := sprintf(
		"ai.* actions come from the supervisor (%v) or a person acting for themselves; actor %v (kind %v), caller %v (kind %v)",
		[cfg.supervisor_ids, object.get(actor, "id", "unknown"), object.get(actor, "kind", "unknown"), object.get(caller, "id", "unknown"), object.get(caller, "kind", "unknown")],
	)
}

deny contains reason("unknown_ai_action", sprintf("no ai_supervisor rule handles %v", [action_type])) if {
	not action_type in action_types
}

deny contains reason("invalid_proposal", msg) if {
	action_type == "ai.invalid"
	msg := sprintf("the supervisor's validator refused the proposal (%v): %v", [object.get(params, "proposed_type", "unknown"), object.get(params, "errors", [])])
}

deny contains reason("ai_supervisor_disabled", "data.config.ai_supervisor.enabled is off: no AI proposal may run") if {
	action_type in proposal_types
	not enabled
}

enabled if cfg.enabled == true

deny contains reason("ai_action_not_allowed", sprintf("the AI may not propose %v (allowed: %v)", [action_type, cfg.allowed_actions])) if {
	action_type in proposal_types
	not action_type in {t | some t in cfg.allowed_actions}
}

# --- the AI acting on its own: rate limits ----------------------------------------------

deny contains reason("rate_window_unknown", sprintf("an ai_supervisor rate limit counts over %v s, a window the server does not count", [window])) if {
	ai_path
	some limit in cfg.rate_limits
	window := format_int(limit.window_seconds, 10)
	not counted(window)
}

# Helpers keep possibly undefined references inside their bodies: an undefined
# argument of a call under "not" would make the whole expression undefined.
counted(window) if is_number(input.context.actor_action_counts[window])

deny contains reason("ai_rate_limit_exceeded", msg) if {
	ai_path
	some limit in cfg.rate_limits
	done := input.context.actor_action_counts[format_int(limit.window_seconds, 10)]
	done >= limit.max
	msg := sprintf("the AI already ran %v actions in the last %v s, its limit is %v", [done, limit.window_seconds, limit.max])
}

hourly_limit := n if {
	n := cfg.hourly_limits[action_type]
	is_number(n)
} else := 0

deny contains reason("ai_counts_missing", sprintf("state.ai_counts[%v] must say how many %v the AI ran in the last hour", [action_type, action_type])) if {
	ai_path
	action_type in proposal_types
	not counts_given
}

counts_given if is_number(state.ai_counts[action_type])

deny contains reason("ai_rate_limit_exceeded", msg) if {
	ai_path
	action_type in proposal_types
	done := state.ai_counts[action_type]
	done >= hourly_limit
	msg := sprintf("the AI already ran %v %v in the last hour, its limit is %v", [done, action_type, hourly_limit])
}

# --- a person approving a proposal ----------------------------------------------------------

deny contains reason("approver_role_required", msg) if {
	human_path
	action_type in proposal_types
	not may_approve
	msg := sprintf("approving %v needs one of the roles %v", [action_type, cfg.approver_roles])
}

may_approve if {
	some role in cfg.approver_roles
	role in roles
}

may_undo if {
	some role in cfg.undo_roles
	role in roles
}

deny contains reason("approval_context_missing", "a person runs an ai.* proposal only by approving it: state.approval.proposal_id is missing") if {
	human_path
	action_type in proposal_types
	not approving
}

approving if is_string(state.approval.proposal_id)

# --- pausing and resuming -----------------------------------------------------------------

toggles := {
	"ai.link.pause": {"kind": "link", "from": "active", "group": "links"},
	"ai.link.resume": {"kind": "link", "from": "paused", "group": "links"},
	"ai.offer.pause": {"kind": "offer", "from": "active", "group": "offers"},
	"ai.offer.resume": {"kind": "offer", "from": "paused", "group": "offers"},
}

toggle := toggles[action_type]

valid_target(kind) if {
	input.action.target.kind == kind
	is_string(input.action.target.id)
}

deny contains reason("invalid_target", sprintf("%v needs a target of kind %v with an id", [action_type, toggle.kind])) if {
	not valid_target(toggle.kind)
}

deny contains reason("target_state_mismatch", msg) if {
	wanted := toggle.from
	not state.target.status == wanted
	msg := sprintf("%v acts on a %v that is %v; this one is %v", [action_type, toggle.kind, wanted, object.get(object.get(state, "target", {}), "status", "unknown")])
}

pausing if action_type in {"ai.link.pause", "ai.offer.pause"}

group := object.get(state, toggle.group, {})

deny contains reason("ai_pause_share_exceeded", msg) if {
	ai_path
	pausing
	paused := object.get(group, "paused_by_ai_24h", 0)
	total := object.get(group, "total", 0)
	paused + 1 > cfg.pause.max_ai_paused_share * total
	msg := sprintf("the AI paused %v of %v %v in the last 24 h; one more passes its share %v", [paused, total, toggle.group, cfg.pause.max_ai_paused_share])
}

deny contains reason("last_active_target", msg) if {
	pausing
	object.get(group, "active", 0) - 1 < cfg.pause.min_active
	msg := sprintf("pausing it would leave fewer than %v active %v", [cfg.pause.min_active, toggle.group])
}

anomalies := a if {
	a := state.evidence.anomalies
	is_array(a)
} else := []

needs_person contains "no anomaly on the target backs this pause" if {
	pausing
	cfg.pause.require_anomaly_evidence == true
	count(anomalies) == 0
}

# --- algorithm parameters -----------------------------------------------------------------

algorithm := object.get(object.get(state, "link", {}), "algorithm", "unknown")

param_range := cfg.param_ranges[algorithm][params.param]

deny contains reason("invalid_target", "ai.algorithm.set_param needs a target of kind link with an id") if {
	action_type == "ai.algorithm.set_param"
	not valid_target("link")
}

deny contains reason("ai_param_not_allowed", msg) if {
	action_type == "ai.algorithm.set_param"
	not param_range
	msg := sprintf("the AI may not set %v of %v (allowed: %v)", [object.get(params, "param", null), algorithm, object.keys(object.get(cfg.param_ranges, algorithm, {}))])
}

deny contains reason("ai_param_out_of_range", msg) if {
	action_type == "ai.algorithm.set_param"
	param_range
	not value_within(param_range)
	msg := sprintf("%v of %v must be a number in [%v, %v], got %v", [params.param, algorithm, param_range.min, param_range.max, object.get(params, "value", null)])
}

value_within(bounds) if {
	is_number(params.value)
	bounds.min <= params.value
	params.value <= bounds.max
}

# --- budget shifts ------------------------------------------------------------------------

shifting if action_type == "ai.budget.shift"

amount := params.amount

campaign(side) := c if {
	c := state.campaigns[params[side]]
	is_object(c)
}

deny contains reason("invalid_amount", sprintf("params.amount must be a positive number, got %v", [object.get(params, "amount", null)])) if {
	shifting
	not positive_amount
}

positive_amount if {
	is_number(amount)
	amount > 0
}

deny contains reason("invalid_params", "a budget shift moves money between two different campaigns") if {
	shifting
	params.from_campaign == params.to_campaign
}

deny contains reason("unknown_campaign", sprintf("%v is not a campaign in state.campaigns", [object.get(params, side, null)])) if {
	shifting
	some side in ["from_campaign", "to_campaign"]
	not campaign(side)
}

both_known if {
	campaign("from_campaign")
	campaign("to_campaign")
	positive_amount
}

deny contains reason("currency_mismatch", "a budget moves only between campaigns in the same currency") if {
	shifting
	both_known
	not same_currency
}

deny contains reason("state_missing", sprintf("state.campaigns[%v] needs numbers budget and daily_cap", [params[side]])) if {
	shifting
	some side in ["from_campaign", "to_campaign"]
	c := campaign(side)
	not amounts_given(c)
}

amounts_given(c) if {
	is_number(c.budget)
	is_number(c.daily_cap)
}

same_currency if campaign("from_campaign").currency == campaign("to_campaign").currency

deny contains reason("campaign_not_active", sprintf("campaign %v is %v", [params[side], object.get(campaign(side), "status", "unknown")])) if {
	shifting
	both_known
	some side in ["from_campaign", "to_campaign"]
	not active_campaign(side)
}

active_campaign(side) if campaign(side).status == "active"

deny contains reason("ai_shift_too_large", msg) if {
	shifting
	both_known
	limit := cfg.budget_shift.max_ratio * campaign("from_campaign").budget
	amount > limit
	msg := sprintf("%v is more than %v of the source budget %v", [amount, cfg.budget_shift.max_ratio, campaign("from_campaign").budget])
}

deny contains reason("ai_shift_too_large", sprintf("%v is more than the largest shift %v", [amount, cfg.budget_shift.max_amount])) if {
	shifting
	both_known
	amount > cfg.budget_shift.max_amount
}

deny contains reason("ai_shift_above_cap", msg) if {
	shifting
	both_known
	to := campaign("to_campaign")
	to.budget + amount > to.daily_cap
	msg := sprintf("%v + %v would pass the daily cap %v of %v", [to.budget, amount, to.daily_cap, params.to_campaign])
}

needs_person contains sprintf("a shift above %v", [cfg.budget_shift.approval_above_amount]) if {
	shifting
	positive_amount
	amount > cfg.budget_shift.approval_above_amount
}

# --- alerts -------------------------------------------------------------------------------

deny contains reason("ai_alert_severity_not_allowed", msg) if {
	action_type == "ai.alert"
	not severity_allowed
	msg := sprintf("the AI raises alerts of severity %v, not %v", [cfg.alert_severities, object.get(params, "severity", null)])
}

severity_allowed if params.severity in {s | some s in cfg.alert_severities}

# --- undo ---------------------------------------------------------------------------------

undoing if action_type == "ai.undo"

proposal := p if {
	p := state.proposal
	is_object(p)
} else := {}

deny contains reason("only_people_may_undo", "undoing an AI action is a person's decision") if {
	undoing
	not human_path
}

deny contains reason("undo_role_required", sprintf("undoing an AI action needs one of the roles %v", [cfg.undo_roles])) if {
	undoing
	human_path
	not may_undo
}

deny contains reason("not_undoable", sprintf("%v cannot be undone", [object.get(proposal, "action_type", "unknown")])) if {
	undoing
	not undoable
}

undoable if proposal.action_type in undoable_types

deny contains reason("not_executed", "only an executed action can be undone, and only once") if {
	undoing
	not executed
}

executed if proposal.status in {"executed", "approved"}

deny contains reason("undo_window_passed", msg) if {
	undoing
	not within_undo_window
	msg := sprintf("the action ran %v h ago; undo is possible for %v h", [object.get(proposal, "age_hours", "unknown"), cfg.undo_window_hours])
}

within_undo_window if proposal.age_hours <= cfg.undo_window_hours

# --- obligations --------------------------------------------------------------------------

needs_person contains sprintf("%v always needs a person", [action_type]) if {
	action_type in {t | some t in cfg.always_require_approval}
}

default obligations := {}

obligations := {"require_approval": {"role": cfg.approval_role, "why": sort([why | some why in needs_person])}} if {
	ai_path
	action_type in proposal_types
	count(needs_person) > 0
}
