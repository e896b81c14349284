# Configuration: the changes people (and services) make by hand to what the
# autopilot does, decided like the autopilot's own moves.
#
# link.configure: a smart link's allocation algorithm or its parameters change.
#   params: {algorithm, algorithm_params} as they would be after the change;
#   state: {algorithm, algorithm_params} as they are.
# user.update: an admin activates or deactivates a user or changes a staff role.
#   params: {active, role} after, state: {active, role, other_active_admins}; the
#   target is the user ("user:<id>"). Nobody changes themselves, and the last
#   active admin stays an active admin.
# link.commission: the affiliate's share of a link's revenue changes (what the
#   payouts pay). params: {commission_rate} after, state: {commission_rate} now;
#   the rate stays within bounds and moves at most max_change per edit (a typo
#   such as 0.07 -> 0.70 is refused, not paid out).
# campaign.configure: a campaign is created, or its daily budget, daily cap or
#   status changes. params: {daily_budget, daily_cap, status, currency} after the
#   change; state: {campaign: {...} or null when it is new, others_total: the
#   daily budgets of the other active campaigns in the same currency}.
#
# A campaign's budget stays under the same per-campaign and global caps the
# budget arbitrage engine obeys (data.config.budget_arbitrage), so that no hand
# edit can take total spend above the global cap either.
package smartlinks.configuration

import data.config.budget_arbitrage as budget_cfg
import data.config.configuration as cfg

action_types := {"link.configure", "link.commission", "campaign.configure", "user.update"}

action_type := input.action.type

params := p if {
	p := input.action.params
	is_object(p)
} else := {}

state := s if {
	s := input.state
	is_object(s)
} else := {}

# The caller is the authenticated subject; in a gate query it is input.subject.
caller := input.caller if {
	is_object(input.caller)
} else := input.subject

actor := a if {
	a := input.action.actor
	is_object(a)
} else := {}

roles contains role if some role in actor.roles

roles contains role if some role in caller.roles

permitted if {
	some role in cfg.allowed_roles[action_type]
	role in roles
}

permitted if actor.kind in cfg.allowed_actor_kinds[action_type]

deny contains {
	"code": "actor_not_permitted",
	"policy": "configuration",
	"message": sprintf("actor %v (kind %v, roles %v) may not run %v", [actor_id, actor_kind, roles, action_type]),
} if {
	not permitted
	actor_id := object.get(actor, "id", "unknown")
	actor_kind := object.get(actor, "kind", "unknown")
}

target_kind := {
	"link.configure": "link",
	"link.commission": "link",
	"campaign.configure": "campaign",
	"user.update": "user",
}

deny contains {
	"code": "invalid_target",
	"policy": "configuration",
	"message": sprintf("%v needs a target of kind %v with an id", [action_type, kind]),
} if {
	kind := target_kind[action_type]
	not valid_target(kind)
}

valid_target(kind) if {
	input.action.target.kind == kind
	is_string(input.action.target.id)
}

# --- link.configure --------------------------------------------------------------

deny contains {
	"code": "algorithm_not_allowed",
	"policy": "configuration",
	"message": sprintf("algorithm %v is not one of the allowed %v", [algorithm, cfg.link.algorithms]),
} if {
	action_type == "link.configure"
	algorithm := object.get(params, "algorithm", null)
	not algorithm in cfg.link.algorithms
}

deny contains {
	"code": "invalid_params",
	"policy": "configuration",
	"message": "link.configure needs params.algorithm_params (an object)",
} if {
	action_type == "link.configure"
	not params_given
}

params_given if is_object(params.algorithm_params)

deny contains {
	"code": "parameter_out_of_bounds",
	"policy": "configuration",
	"target": name,
	"message": sprintf("%v of %v is %v, outside [%v, %v]", [name, params.algorithm, value, bound.min, bound.max]),
} if {
	action_type == "link.configure"
	some name, bound in cfg.link.parameter_bounds[params.algorithm]
	value := params.algorithm_params[name]
	not within(value, bound)
}

within(value, bound) if {
	is_number(value)
	value >= bound.min
	value <= bound.max
}

# --- user.update -----------------------------------------------------------------

deny contains {
	"code": "invalid_params",
	"policy": "configuration",
	"message": "user.update needs params.active (boolean) and params.role, and state.active, state.role and state.other_active_admins",
} if {
	action_type == "user.update"
	not user_facts_given
}

user_facts_given if {
	is_boolean(params.active)
	is_string(params.role)
	is_boolean(state.active)
	is_string(state.role)
	is_number(state.other_active_admins)
}

deny contains {
	"code": "self_change",
	"policy": "configuration",
	"message": "nobody deactivates themselves or changes their own role; ask another admin",
} if {
	action_type == "user.update"
	input.action.target.id == caller.id
	user_change_restricts
}

user_change_restricts if params.active == false

user_change_restricts if params.role != state.role

deny contains {
	"code": "last_admin",
	"policy": "configuration",
	"message": "this is the last active admin; make another user admin first",
} if {
	action_type == "user.update"
	state.role == "admin"
	state.active == true
	user_change_restricts
	state.other_active_admins == 0
}

# --- link.commission -------------------------------------------------------------

rate := params.commission_rate

valid_rate(value) if {
	is_number(value)
	value >= 0
	value <= 1
}

deny contains {
	"code": "invalid_params",
	"policy": "configuration",
	"message": sprintf("link.commission needs params.commission_rate and state.commission_rate in [0, 1], got %v and %v", [after, before]),
} if {
	action_type == "link.commission"
	after := object.get(params, "commission_rate", null)
	before := object.get(state, "commission_rate", null)
	not rates_given
}

rates_given if {
	valid_rate(params.commission_rate)
	valid_rate(state.commission_rate)
}

deny contains {
	"code": "commission_out_of_bounds",
	"policy": "configuration",
	"message": sprintf("a commission rate of %v is outside [%v, %v]", [rate, bounds.min, bounds.max]),
} if {
	action_type == "link.commission"
	bounds := cfg.link.commission
	valid_rate(rate)
	not within(rate, bounds)
}

deny contains {
	"code": "commission_change_too_large",
	"policy": "configuration",
	"message": sprintf("the commission rate may move by at most %v per change, not %v -> %v", [cfg.link.commission.max_change, state.commission_rate, rate]),
} if {
	action_type == "link.commission"
	rates_given
	abs(rate - state.commission_rate) > cfg.link.commission.max_change + 1e-9
}

# --- campaign.configure ----------------------------------------------------------

budget := params.daily_budget

daily_cap := params.daily_cap

valid_amount(amount) if {
	is_number(amount)
	amount >= 0
}

deny contains {
	"code": "invalid_params",
	"policy": "configuration",
	"message": sprintf("params.%v must be a number >= 0", [name]),
} if {
	action_type == "campaign.configure"
	some name in ["daily_budget", "daily_cap"]
	not valid_amount(object.get(params, name, null))
}

deny contains {
	"code": "invalid_params",
	"policy": "configuration",
	"message": "state.others_total (the other active campaigns' budgets) must be a number >= 0",
} if {
	action_type == "campaign.configure"
	not valid_amount(object.get(state, "others_total", null))
}

deny contains {
	"code": "above_campaign_cap",
	"policy": "configuration",
	"message": sprintf("a daily budget of %v is above the per-campaign cap %v", [budget, budget_cfg.per_campaign_cap]),
} if {
	action_type == "campaign.configure"
	valid_amount(budget)
	budget > budget_cfg.per_campaign_cap + budget_cfg.amount_tolerance
}

deny contains {
	"code": "above_daily_cap",
	"policy": "configuration",
	"message": sprintf("a daily budget of %v is above the campaign's own daily cap %v", [budget, daily_cap]),
} if {
	action_type == "campaign.configure"
	valid_amount(budget)
	valid_amount(daily_cap)
	budget > daily_cap + budget_cfg.amount_tolerance
}

# A paused campaign spends nothing: only active ones count against the global cap.
active if object.get(params, "status", "active") == "active"

deny contains {
	"code": "total_above_global_cap",
	"policy": "configuration",
	"message": sprintf("the active campaigns' budgets would sum to %v, above the global cap %v", [total, budget_cfg.global_daily_cap]),
} if {
	action_type == "campaign.configure"
	active
	valid_amount(budget)
	valid_amount(state.others_total)
	total := state.others_total + budget
	total > budget_cfg.global_daily_cap + budget_cfg.amount_tolerance
}

default obligations := {}
