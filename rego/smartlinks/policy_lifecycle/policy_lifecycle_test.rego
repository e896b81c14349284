package smartlinks.policy_lifecycle_test

import data.smartlinks
import data.smartlinks.policy_lifecycle

admin := {"id": "user:1", "kind": "user", "roles": ["admin"]}

other_admin := {"id": "user:9", "kind": "user", "roles": ["admin"]}

author := {"id": "user:2", "kind": "user", "roles": ["policy_author"]}

auditor := {"id": "user:3", "kind": "user", "roles": ["auditor"]}

system := {"id": "system:bootstrap", "kind": "system", "roles": []}

validated := {"revision": "abc123", "status": "draft", "validated": true, "published_by": "user:2", "problems": []}

small_impact := {"report_id": 7, "changed_share": 0.001, "sample_size": 10000}

large_impact := {"report_id": 8, "changed_share": 0.25, "sample_size": 10000}

request(type, actor, params, state) := {
	"action": {"type": type, "actor": actor, "target": {"kind": "policy", "id": "abc123"}, "params": params},
	"state": state,
	"caller": actor,
}

activation(actor, state) := request("policy.activate", actor, {"revision": "abc123", "reason": null}, state)

running := {"active_revision": "old111", "version": validated, "impact": small_impact, "self_approval_allowed": false}

codes(reasons) := {reason.code | some reason in reasons}

test_it_handles_the_policy_actions if {
	policy_lifecycle.action_types == {"policy.publish", "policy.activate", "policy.rollback", "policy.shadow_start", "policy.shadow_stop"}
}

# --- who may act ---------------------------------------------------------------

test_authors_and_admins_publish_and_propose if {
	every actor in [author, admin] {
		every type in ["policy.publish", "policy.shadow_start"] {
			policy_lifecycle.deny == set() with input as request(type, actor, {"revision": "abc123"}, running)
		}
	}
}

test_only_admins_activate_and_roll_back if {
	policy_lifecycle.deny == set() with input as activation(other_admin, running)
	"actor_not_permitted" in codes(policy_lifecycle.deny) with input as activation(author, running)
	rollback := request("policy.rollback", author, {}, {"rollback_target": "old000"})
	codes(policy_lifecycle.deny) == {"actor_not_permitted"} with input as rollback
	policy_lifecycle.deny == set() with input as request("policy.rollback", admin, {}, {"rollback_target": "old000"})
}

test_a_role_without_the_permission_is_denied_by_name if {
	deny := policy_lifecycle.deny with input as request("policy.publish", auditor, {}, running)
	deny == {{
		"code": "actor_not_permitted",
		"policy": "policy_lifecycle",
		"message": "actor user:3 (kind user, roles {\"auditor\"}) may not run policy.publish",
	}}
}

test_in_a_gate_query_the_subject_is_the_caller if {
	query := {"action": {"type": "policy.publish", "actor": {"id": "user:2", "kind": "user"}}, "subject": author}
	policy_lifecycle.deny == set() with input as query
}

test_an_empty_request_is_denied if {
	codes(policy_lifecycle.deny) == {"actor_not_permitted"} with input as {"action": {"type": "policy.publish"}}
}

# --- bootstrap -----------------------------------------------------------------

test_the_system_bootstraps_the_first_version if {
	every type in ["policy.publish", "policy.activate"] {
		first := request(type, system, {"revision": "abc123", "bootstrap": true}, {"active_revision": null, "version": validated})
		policy_lifecycle.deny == set() with input as first
	}
}

test_no_bootstrap_once_a_version_is_active if {
	later := request("policy.activate", system, {"revision": "abc123", "bootstrap": true}, running)
	codes(policy_lifecycle.deny) == {"actor_not_permitted"} with input as later
}

test_the_system_cannot_roll_back_or_bootstrap_a_failing_version if {
	codes(policy_lifecycle.deny) == {"actor_not_permitted"} with input as request("policy.rollback", system, {"bootstrap": true}, {"rollback_target": "x"})
	failing := object.union(validated, {"validated": false, "problems": ["2 test(s) failed"]})
	first := request("policy.activate", system, {"bootstrap": true}, {"version": failing})
	codes(policy_lifecycle.deny) == {"version_not_validated"} with input as first
}

# --- activation ----------------------------------------------------------------

test_an_unvalidated_version_is_refused_with_its_problems if {
	failing := object.union(validated, {"validated": false, "problems": ["opa check --strict failed", "2 test(s) failed"]})
	deny := policy_lifecycle.deny with input as activation(admin, object.union(running, {"version": failing}))
	some reason in deny
	reason.code == "version_not_validated"
	reason.message == "version abc123 cannot run: opa check --strict failed; 2 test(s) failed"
}

test_a_version_without_validation_facts_is_refused if {
	bare := activation(admin, json.patch(running, [{"op": "replace", "path": "/version", "value": {"revision": "abc123"}}]))
	"version_not_validated" in codes(policy_lifecycle.deny) with input as bare
}

test_a_retired_or_active_version_is_refused if {
	retired := object.union(running, {"version": object.union(validated, {"status": "retired"})})
	"version_retired" in codes(policy_lifecycle.deny) with input as activation(admin, retired)
	"version_retired" in codes(policy_lifecycle.deny) with input as request("policy.shadow_start", author, {}, retired)
	active := object.union(running, {"version": object.union(validated, {"status": "active"})})
	"already_active" in codes(policy_lifecycle.deny) with input as activation(admin, active)
	"already_active" in codes(policy_lifecycle.deny) with input as request("policy.shadow_start", author, {}, active)
}

test_an_altered_bundle_is_never_activated_shadowed_or_rolled_back_to if {
	altered := object.union(running, {"version": object.union(validated, {"intact": false})})
	codes(policy_lifecycle.deny) == {"bundle_altered"} with input as activation(admin, altered)
	codes(policy_lifecycle.deny) == {"bundle_altered"} with input as request("policy.shadow_start", author, {}, altered)
	back := object.union(altered, {"rollback_target": "old000"})
	codes(policy_lifecycle.deny) == {"bundle_altered"} with input as request("policy.rollback", admin, {}, back)
}

test_the_publisher_may_not_approve_their_own_version if {
	own := object.union(running, {"version": object.union(validated, {"published_by": "user:1"})})
	codes(policy_lifecycle.deny) == {"self_approval"} with input as activation(admin, own)
	allowed := object.union(own, {"self_approval_allowed": true})
	policy_lifecycle.deny == set() with input as activation(admin, allowed)
}

test_a_large_impact_needs_a_reason if {
	large := object.union(running, {"impact": large_impact})
	deny := policy_lifecycle.deny with input as activation(admin, large)
	deny == {{
		"code": "reason_required",
		"policy": "policy_lifecycle",
		"message": "version abc123 changes 25% of the last 10000 decisions (more than 2%): give a reason",
	}}
	blank := request("policy.activate", admin, {"revision": "abc123", "reason": "   "}, large)
	codes(policy_lifecycle.deny) == {"reason_required"} with input as blank
	explained := request("policy.activate", admin, {"revision": "abc123", "reason": "tighter caps, agreed with finance"}, large)
	policy_lifecycle.deny == set() with input as explained
}

test_activation_over_a_running_version_needs_an_impact_analysis if {
	unknown := json.remove(running, ["impact"])
	codes(policy_lifecycle.deny) == {"impact_unknown"} with input as activation(admin, unknown)
}

# --- rollback and shadow ---------------------------------------------------------

test_a_rollback_needs_a_previous_version if {
	codes(policy_lifecycle.deny) == {"nothing_to_roll_back"} with input as request("policy.rollback", admin, {}, {"rollback_target": null})
}

test_stopping_a_shadow_needs_one_running if {
	codes(policy_lifecycle.deny) == {"no_shadow"} with input as request("policy.shadow_stop", author, {}, {})
	policy_lifecycle.deny == set() with input as request("policy.shadow_stop", author, {}, {"shadow_revision": "abc123"})
}

test_there_are_no_obligations if {
	policy_lifecycle.obligations == {} with input as activation(admin, running)
}

# --- through the decision entry point ------------------------------------------

envelope(action) := {
	"action": action,
	"state": {"rollback_target": "old000"},
	"controls": {"kill_switch": true, "target_kill_switch": false},
	"context": {"actor_action_counts": {"60": 0, "3600": 0, "86400": 0}},
	"caller": admin,
	"mode": "test",
	"now": "2026-11-25T10:00:00Z",
}

test_a_rollback_runs_even_with_the_kill_switch_on if {
	decision := smartlinks.decision with input as envelope({"type": "policy.rollback", "actor": admin, "params": {}})
	decision.allow == true
	decision.reasons == []
}

test_the_decision_names_the_lifecycle_rule if {
	by_author := json.patch(envelope({"type": "policy.rollback", "actor": author, "params": {}}), [{"op": "replace", "path": "/caller", "value": author}])
	decision := smartlinks.decision with input as by_author
	decision.allow == false
	{reason.policy | some reason in decision.reasons} == {"policy_lifecycle"}
}
