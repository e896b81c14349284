# Policy lifecycle: who may publish, shadow, activate and roll back policy versions.
#
# Policy authors publish and propose (shadow) versions; admins decide what runs.
# The server puts the facts in input.state: the version concerned (its status,
# whether `opa check --strict`, its tests and the coverage threshold passed, who
# published it), the active and shadow revisions, the impact analysis of the
# candidate against the active version, whether self-approval is allowed by the
# server's configuration (POLICY_SELF_APPROVAL), and the rollback target.
#
# Denied: a role without the permission (data.config.policy_lifecycle.roles);
# activating a version that failed validation, is retired or already active, or
# whose stored bundle no longer matches its published SHA-256;
# activating one's own version unless self-approval is allowed; activating a
# version whose impact analysis changes more than reason_required_above_share of
# the recorded decisions without a reason, or without an impact analysis; a
# rollback with nothing to roll back to; shadowing the active or a retired
# version; stopping a shadow that is not running. The server's own system actor
# may publish and activate the first version (bootstrap) while none is active.
package smartlinks.policy_lifecycle

import data.config.policy_lifecycle as cfg

action_types := {"policy.publish", "policy.activate", "policy.rollback", "policy.shadow_start", "policy.shadow_stop"}

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

# The caller is the authenticated subject; in a gate query it is input.subject.
caller := input.caller if {
	is_object(input.caller)
} else := input.subject

roles contains role if some role in actor.roles

roles contains role if some role in caller.roles

version := v if {
	v := state.version
	is_object(v)
} else := {}

active_revision := r if {
	r := state.active_revision
	is_string(r)
} else := null

# Helpers keep possibly undefined references inside their bodies, where a missing
# value makes them false (an undefined argument would make "not" undefined too).
validated if version.validated == true

self_approval_allowed if state.self_approval_allowed == true

impact_known if is_object(state.impact)

rollback_target_known if is_string(state.rollback_target)

shadow_running if is_string(state.shadow_revision)

# --- who may act -------------------------------------------------------------------

permitted if {
	some role in cfg.roles[action_type]
	role in roles
}

permitted if bootstrap

# The first version: the server itself publishes and activates the working tree's
# policies while no version is active.
bootstrap if {
	action_type in {"policy.publish", "policy.activate"}
	actor.kind in {k | some k in cfg.bootstrap_actor_kinds}
	params.bootstrap == true
	active_revision == null
}

deny contains {
	"code": "actor_not_permitted",
	"policy": "policy_lifecycle",
	"message": sprintf("actor %v (kind %v, roles %v) may not run %v", [actor_id, actor_kind, roles, action_type]),
} if {
	not permitted
	actor_id := object.get(actor, "id", "unknown")
	actor_kind := object.get(actor, "kind", "unknown")
}

# --- activation --------------------------------------------------------------------

deny contains {
	"code": "version_not_validated",
	"policy": "policy_lifecycle",
	"message": sprintf("version %v cannot run: %v", [version_name, concat("; ", problems)]),
} if {
	action_type == "policy.activate"
	not validated
	problems := object.get(version, "problems", ["it was not validated"])
}

deny contains {
	"code": "version_retired",
	"policy": "policy_lifecycle",
	"message": sprintf("version %v is retired; publish a new version (or roll back to return to the previous one)", [version_name]),
} if {
	action_type in {"policy.activate", "policy.shadow_start"}
	version.status == "retired"
}

deny contains {
	"code": "already_active",
	"policy": "policy_lifecycle",
	"message": sprintf("version %v is already the active version", [version_name]),
} if {
	action_type in {"policy.activate", "policy.shadow_start"}
	version.status == "active"
}

deny contains {
	"code": "self_approval",
	"policy": "policy_lifecycle",
	"message": sprintf("%v published version %v and may not activate it too; another admin must (or allow self-approval: POLICY_SELF_APPROVAL)", [actor.id, version_name]),
} if {
	action_type == "policy.activate"
	not bootstrap
	version.published_by == actor.id
	not self_approval_allowed
}

deny contains {
	"code": "impact_unknown",
	"policy": "policy_lifecycle",
	"message": sprintf("no impact analysis of version %v against the active version %v", [version_name, active_revision]),
} if {
	action_type == "policy.activate"
	activatable
	active_revision != null
	not impact_known
}

# A version refused for what it is gets no extra reason about its (unneeded) impact analysis.
activatable if {
	validated
	not version.status in {"active", "retired"}
	not altered
}

altered if version.intact == false

deny contains {
	"code": "reason_required",
	"policy": "policy_lifecycle",
	"message": sprintf("version %v changes %v%% of the last %v decisions (more than %v%%): give a reason", [
		version_name,
		percent(state.impact.changed_share),
		state.impact.sample_size,
		percent(cfg.reason_required_above_share),
	]),
} if {
	action_type == "policy.activate"
	state.impact.changed_share > cfg.reason_required_above_share
	not reason_given
}

reason_given if {
	is_string(params.reason)
	trim_space(params.reason) != ""
}

percent(share) := round(share * 10000) / 100

version_name := object.get(version, "revision", object.get(params, "revision", "unknown"))

deny contains {
	"code": "bundle_altered",
	"policy": "policy_lifecycle",
	"message": sprintf("the stored bundle of version %v does not match the SHA-256 recorded when it was published; it is never served", [version_name]),
} if {
	action_type in {"policy.activate", "policy.rollback", "policy.shadow_start"}
	altered
}

# --- rollback ----------------------------------------------------------------------

deny contains {
	"code": "nothing_to_roll_back",
	"policy": "policy_lifecycle",
	"message": "no version was active before the current one",
} if {
	action_type == "policy.rollback"
	not rollback_target_known
}

# --- shadow ------------------------------------------------------------------------

deny contains {
	"code": "no_shadow",
	"policy": "policy_lifecycle",
	"message": "no version runs in shadow",
} if {
	action_type == "policy.shadow_stop"
	not shadow_running
}

default obligations := {}
