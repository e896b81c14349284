# Entry points of the Runtime Control Policies (see docs/policy-contract.md).
#
# decision: may this action run? Global safety composed with the action's own
# policy, chosen by action.type (and params.algorithm for allocation.update).
# gate: authorisation and decision in one round trip.
#
# Both are total: defined for any input, with a boolean allow.
package smartlinks

import data.smartlinks.ai_supervisor
import data.smartlinks.authz
import data.smartlinks.budget_arbitrage
import data.smartlinks.configuration
import data.smartlinks.operations
import data.smartlinks.payouts
import data.smartlinks.policy_lifecycle
import data.smartlinks.safety
import data.smartlinks.thompson_sampling
import data.smartlinks.traffic_optimizer
import data.smartlinks.ucb

action_type := t if {
	t := input.action.type
	is_string(t)
} else := ""

algorithm := a if {
	a := input.action.params.algorithm
	is_string(a)
} else := ""

allocation_policies := {"traffic_optimizer", "thompson_sampling", "ucb"}

# handler is the package that judges this action ("" when none does).
default handler := ""

handler := algorithm if {
	action_type == "allocation.update"
	algorithm in allocation_policies
}

handler := "budget_arbitrage" if action_type == "budget.reallocate"

handler := "operations" if action_type in operations.action_types

handler := "configuration" if action_type in configuration.action_types

handler := "payouts" if action_type in payouts.action_types

handler := "policy_lifecycle" if action_type in policy_lifecycle.action_types

handler := "ai_supervisor" if startswith(action_type, "ai.")

outcome := {"deny": traffic_optimizer.deny, "obligations": traffic_optimizer.obligations} if handler == "traffic_optimizer"

outcome := {"deny": thompson_sampling.deny, "obligations": thompson_sampling.obligations} if handler == "thompson_sampling"

outcome := {"deny": ucb.deny, "obligations": ucb.obligations} if handler == "ucb"

outcome := {"deny": budget_arbitrage.deny, "obligations": budget_arbitrage.obligations} if handler == "budget_arbitrage"

outcome := {"deny": operations.deny, "obligations": operations.obligations} if handler == "operations"

outcome := {"deny": configuration.deny, "obligations": configuration.obligations} if handler == "configuration"

outcome := {"deny": payouts.deny, "obligations": payouts.obligations} if handler == "payouts"

outcome := {"deny": policy_lifecycle.deny, "obligations": policy_lifecycle.obligations} if handler == "policy_lifecycle"

outcome := {"deny": ai_supervisor.deny, "obligations": ai_supervisor.obligations} if handler == "ai_supervisor"

unknown_action := {
	"code": "unknown_action_type",
	"policy": "decision",
	"message": "input.action.type is missing or not a string",
} if {
	action_type == ""
} else := {
	"code": "unknown_action_type",
	"policy": "decision",
	"message": sprintf("no policy handles action type %v with algorithm %v", [action_type, algorithm]),
} if {
	action_type == "allocation.update"
} else := {
	"code": "unknown_action_type",
	"policy": "decision",
	"message": sprintf("no policy handles action type %v", [action_type]),
}

# A handler that fails to produce an answer denies (fail closed) rather than
# letting the action through unchecked.
policy_deny := {unknown_action} if {
	handler == ""
} else := {{
	"code": "policy_error",
	"policy": "decision",
	"message": sprintf("data.config.%v is missing from the bundle", [handler]),
}} if {
	not configured(handler)
} else := outcome.deny if {
	is_set(outcome.deny)
} else := {{
	"code": "policy_error",
	"policy": "decision",
	"message": sprintf("policy %v gave no answer for this input", [handler]),
}}

configured(section) if is_object(data.config[section])

policy_obligations := outcome.obligations if {
	is_object(outcome.obligations)
} else := {}

reasons := safety.deny | policy_deny

default allow := false

allow if count(reasons) == 0

decision := {
	"allow": allow,
	"reasons": [reason | some reason in reasons],
	"obligations": object.union(safety.obligations, policy_obligations),
}

has_action if _ = input.action

gate := {"authz": authz.result, "decision": decision} if {
	has_action
	authz.result.allow == true
} else := {"authz": authz.result}
