# Operations: pausing and resuming links and offers, and the kill switch.
#
# Allowed (subject to safety) when the actor or the caller holds a role listed in
# data.config.operations.allowed_roles for the action type, or when the actor's
# kind is listed in allowed_actor_kinds for it (automation may pause, say, but not
# resume).
package smartlinks.operations

import data.config.operations as cfg

# The action types this package handles.
action_types := {"link.pause", "link.resume", "offer.pause", "offer.resume", "controls.kill_switch"}

action_type := input.action.type

params := p if {
	p := input.action.params
	is_object(p)
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
	"policy": "operations",
	"message": sprintf("actor %v (kind %v, roles %v) may not run %v", [actor_id, actor_kind, roles, action_type]),
} if {
	not permitted
	actor_id := object.get(actor, "id", "unknown")
	actor_kind := object.get(actor, "kind", "unknown")
}

# --- the target of a pause or resume ------------------------------------------------

target_kind := {
	"link.pause": "link",
	"link.resume": "link",
	"offer.pause": "offer",
	"offer.resume": "offer",
}

deny contains {
	"code": "invalid_target",
	"policy": "operations",
	"message": sprintf("%v needs a target of kind %v with an id", [action_type, kind]),
} if {
	kind := target_kind[action_type]
	not valid_target(kind)
}

valid_target(kind) if {
	input.action.target.kind == kind
	is_string(input.action.target.id)
}

# --- the kill switch ---------------------------------------------------------------

deny contains {
	"code": "invalid_params",
	"policy": "operations",
	"message": "controls.kill_switch needs params.enabled (a boolean)",
} if {
	action_type == "controls.kill_switch"
	not switch_state_given
}

switch_state_given if is_boolean(params.enabled)

deny contains {
	"code": "invalid_params",
	"policy": "operations",
	"message": sprintf("params.scope must be \"global\" or \"link\", got %v", [scope]),
} if {
	action_type == "controls.kill_switch"
	scope := object.get(params, "scope", null)
	not scope in {"global", "link"}
}

deny contains {
	"code": "invalid_target",
	"policy": "operations",
	"message": "a kill switch with scope \"link\" needs a target of kind link with an id",
} if {
	action_type == "controls.kill_switch"
	params.scope == "link"
	not valid_target("link")
}

default obligations := {}
