package smartlinks.operations_test

import data.smartlinks.operations

action(type, actor, caller) := {
	"action": {
		"type": type,
		"actor": actor,
		"target": {"kind": "link", "id": "lnk_42"},
		"params": {},
	},
	"caller": caller,
}

offer_action(type, actor) := {"action": {
	"type": type,
	"actor": actor,
	"target": {"kind": "offer", "id": "off_7"},
}}

kill_switch(params, actor) := {"action": {"type": "controls.kill_switch", "actor": actor, "params": params}}

operator := {"id": "user:2", "kind": "user", "roles": ["operator"]}

auditor := {"id": "user:3", "kind": "user", "roles": ["auditor"]}

ai := {"id": "ai:assistant", "kind": "ai", "roles": []}

system := {"id": "system:scheduler", "kind": "system"}

codes(reasons) := {reason.code | some reason in reasons}

test_it_handles_pause_resume_and_the_kill_switch if {
	operations.action_types == {"link.pause", "link.resume", "offer.pause", "offer.resume", "controls.kill_switch"}
}

# --- who may act ---------------------------------------------------------------

test_an_operator_may_pause_and_resume if {
	operations.deny == set() with input as action("link.pause", operator, {})
	operations.deny == set() with input as action("link.resume", operator, {})
	operations.deny == set() with input as offer_action("offer.pause", operator)
	operations.deny == set() with input as offer_action("offer.resume", operator)
}

test_the_callers_roles_count_too if {
	operations.deny == set() with input as action("link.resume", {"id": "user:3", "kind": "user"}, {"kind": "user", "roles": ["admin"]})
}

test_in_a_gate_query_the_subject_is_the_caller if {
	request := object.union(action("link.resume", {"kind": "user"}, null), {"subject": {"kind": "user", "roles": ["operator"]}})
	operations.deny == set() with input as request
}

test_a_role_without_the_permission_is_denied if {
	deny := operations.deny with input as action("link.pause", auditor, {"roles": ["service"]})
	deny == {{
		"code": "actor_not_permitted",
		"policy": "operations",
		"message": "actor user:3 (kind user, roles {\"auditor\", \"service\"}) may not run link.pause",
	}}
}

test_automation_may_pause_but_not_resume if {
	operations.deny == set() with input as action("link.pause", ai, {})
	operations.deny == set() with input as offer_action("offer.pause", {"kind": "algorithm"})
	codes(operations.deny) == {"actor_not_permitted"} with input as action("link.resume", ai, {})
	operations.deny == set() with input as action("link.resume", system, {})
}

test_an_actor_kind_allowed_by_the_data_is_permitted if {
	operations.deny == set() with input as action("link.resume", ai, {})
		with data.config.operations.allowed_actor_kinds["link.resume"] as ["ai"]
}

test_an_anonymous_action_is_denied if {
	codes(operations.deny) == {"actor_not_permitted", "invalid_target"} with input as {"action": {"type": "link.pause"}}
}

# --- targets ---------------------------------------------------------------------

test_a_pause_needs_a_target_of_the_right_kind if {
	codes(operations.deny) == {"invalid_target"} with input as offer_action("link.pause", operator)
	codes(operations.deny) == {"invalid_target"} with input as action("offer.resume", operator, {})
	codes(operations.deny) == {"invalid_target"} with input as {"action": {"type": "link.pause", "actor": operator, "target": {"kind": "link"}}}
}

# --- the kill switch ----------------------------------------------------------------

test_an_operator_may_set_the_kill_switch if {
	operations.deny == set() with input as kill_switch({"enabled": true, "scope": "global"}, operator)
	operations.deny == set() with input as kill_switch({"enabled": false, "scope": "global"}, operator)
}

test_automation_may_not_touch_the_kill_switch_by_default if {
	codes(operations.deny) == {"actor_not_permitted"} with input as kill_switch({"enabled": true, "scope": "global"}, ai)
}

test_the_kill_switch_needs_enabled_and_scope if {
	codes(operations.deny) == {"invalid_params"} with input as kill_switch({"scope": "global"}, operator)
	codes(operations.deny) == {"invalid_params"} with input as kill_switch({"enabled": "yes", "scope": "global"}, operator)
	codes(operations.deny) == {"invalid_params"} with input as kill_switch({"enabled": true}, operator)
	codes(operations.deny) == {"invalid_params"} with input as kill_switch({"enabled": true, "scope": "planet"}, operator)
	codes(operations.deny) == {"invalid_params"} with input as {"action": {"type": "controls.kill_switch", "actor": operator, "params": "on"}}
}

test_a_link_kill_switch_needs_a_link_target if {
	codes(operations.deny) == {"invalid_target"} with input as kill_switch({"enabled": true, "scope": "link"}, operator)
	request := object.union(kill_switch({"enabled": true, "scope": "link"}, operator), {"action": {"target": {"kind": "link", "id": "lnk_42"}}})
	operations.deny == set() with input as request
}

test_operations_have_no_obligations if {
	operations.obligations == {} with input as action("link.pause", operator, {})
}
