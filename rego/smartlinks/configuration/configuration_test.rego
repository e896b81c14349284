package smartlinks.configuration_test

import data.smartlinks
import data.smartlinks.configuration

operator := {"id": "user:2", "kind": "user", "roles": ["operator"]}

auditor := {"id": "user:3", "kind": "user", "roles": ["auditor"]}

algorithm_actor := {"id": "algo:thompson", "kind": "algorithm"}

link_change(params, actor) := {
	"action": {
		"type": "link.configure",
		"actor": actor,
		"target": {"kind": "link", "id": "lnk_1"},
		"params": params,
	},
	"state": {"algorithm": "traffic_optimizer", "algorithm_params": {}},
	"caller": actor,
}

campaign_change(params, others_total) := {
	"action": {
		"type": "campaign.configure",
		"actor": operator,
		"target": {"kind": "campaign", "id": "cmp_1"},
		"params": params,
	},
	"state": {"campaign": {"daily_budget": 100, "daily_cap": 500, "status": "active"}, "others_total": others_total},
	"caller": operator,
	"mode": "test",
	"context": {"actor_action_counts": {"60": 0, "3600": 0, "86400": 0}},
}

budget(amount, cap, status) := {"daily_budget": amount, "daily_cap": cap, "status": status, "currency": "EUR"}

codes(deny) := {reason.code | some reason in deny}

test_it_handles_link_and_campaign_configuration if {
	configuration.action_types == {"link.configure", "link.commission", "campaign.configure", "user.update"}
	smartlinks.handler == "configuration" with input as campaign_change(budget(200, 500, "active"), 1000)
}

# --- links ---------------------------------------------------------------------

test_an_operator_may_switch_a_links_algorithm if {
	configuration.deny == set() with input as link_change({"algorithm": "thompson_sampling", "algorithm_params": {"n_samples": 10000, "gamma": 1}}, operator)
}

test_an_algorithm_may_not_reconfigure_a_link if {
	deny := configuration.deny with input as link_change({"algorithm": "ucb", "algorithm_params": {}}, algorithm_actor)
	codes(deny) == {"actor_not_permitted"}
}

test_a_role_without_the_permission_is_denied if {
	deny := configuration.deny with input as link_change({"algorithm": "ucb", "algorithm_params": {}}, auditor)
	codes(deny) == {"actor_not_permitted"}
}

test_an_algorithm_outside_the_allowed_list_is_denied if {
	deny := configuration.deny with input as link_change({"algorithm": "epsilon_greedy", "algorithm_params": {}}, operator)
	codes(deny) == {"algorithm_not_allowed"}
}

test_parameters_outside_their_bounds_are_denied_by_name if {
	deny := configuration.deny with input as link_change({"algorithm": "thompson_sampling", "algorithm_params": {"n_samples": 10, "gamma": 0.5}}, operator)
	{reason.target | some reason in deny} == {"n_samples", "gamma"}
	codes(deny) == {"parameter_out_of_bounds"}
}

test_a_non_numeric_bounded_parameter_is_denied if {
	deny := configuration.deny with input as link_change({"algorithm": "ucb", "algorithm_params": {"floor": "high"}}, operator)
	codes(deny) == {"parameter_out_of_bounds"}
}

test_parameters_must_be_an_object if {
	deny := configuration.deny with input as link_change({"algorithm": "ucb"}, operator)
	codes(deny) == {"invalid_params"}
}

test_the_target_must_be_a_link if {
	request := json.patch(link_change({"algorithm": "ucb", "algorithm_params": {}}, operator), [{"op": "replace", "path": "/action/target", "value": {"kind": "offer", "id": "off_1"}}])
	codes(configuration.deny) == {"invalid_target"} with input as request
}

# --- campaigns -----------------------------------------------------------------

test_a_budget_within_every_cap_is_allowed if {
	configuration.deny == set() with input as campaign_change(budget(400, 500, "active"), 1000)
	smartlinks.decision.allow with input as campaign_change(budget(400, 500, "active"), 1000)
}

test_a_budget_above_the_per_campaign_cap_is_denied if {
	deny := configuration.deny with input as campaign_change(budget(6000, 10000, "active"), 0)
	codes(deny) == {"above_campaign_cap"}
}

test_a_budget_above_the_campaigns_own_cap_is_denied if {
	deny := configuration.deny with input as campaign_change(budget(600, 500, "active"), 0)
	codes(deny) == {"above_daily_cap"}
}

test_the_active_total_may_not_pass_the_global_cap if {
	deny := configuration.deny with input as campaign_change(budget(4000, 5000, "active"), 47000)
	codes(deny) == {"total_above_global_cap"}
	not smartlinks.decision.allow with input as campaign_change(budget(4000, 5000, "active"), 47000)
}

test_a_paused_campaign_does_not_count_against_the_global_cap if {
	configuration.deny == set() with input as campaign_change(budget(4000, 5000, "paused"), 47000)
}

test_the_limits_come_from_bundle_data if {
	configuration.deny == set() with input as campaign_change(budget(4000, 5000, "active"), 47000)
		with data.config.budget_arbitrage.global_daily_cap as 100000
}

test_amounts_must_be_numbers if {
	deny := configuration.deny with input as campaign_change(budget("lots", -1, "active"), 0)
	codes(deny) == {"invalid_params"}
	count(deny) == 2
}

test_the_other_campaigns_total_is_required if {
	request := json.remove(campaign_change(budget(100, 500, "active"), 0), ["state/others_total"])
	codes(configuration.deny) == {"invalid_params"} with input as request
}

test_the_caller_may_hold_the_role_in_a_gate_query if {
	request := object.union(
		json.remove(campaign_change(budget(100, 500, "active"), 0), ["caller"]),
		{"action": {"actor": {"id": "user:9", "kind": "user"}}, "subject": {"kind": "user", "roles": ["admin"]}},
	)
	configuration.deny == set() with input as request
}

test_no_obligations if {
	configuration.obligations == {} with input as campaign_change(budget(100, 500, "active"), 0)
}

# --- commission -------------------------------------------------------------------

commission_change(after, before, actor) := {
	"action": {
		"type": "link.commission",
		"actor": actor,
		"target": {"kind": "link", "id": "lnk_1"},
		"params": {"commission_rate": after},
	},
	"state": {"commission_rate": before},
	"caller": actor,
}

test_an_operator_may_move_a_commission_within_the_step if {
	configuration.deny == set() with input as commission_change(0.75, 0.7, operator)
	configuration.deny == set() with input as commission_change(0.6, 0.7, operator)
	smartlinks.handler == "configuration" with input as commission_change(0.75, 0.7, operator)
}

test_a_typo_sized_commission_jump_is_denied if {
	deny := configuration.deny with input as commission_change(0.7, 0.07, operator)
	codes(deny) == {"commission_change_too_large"}
}

test_a_commission_outside_the_bounds_is_denied if {
	deny := configuration.deny with input as commission_change(0.99, 0.95, operator)
	codes(deny) == {"commission_out_of_bounds"}
	low := configuration.deny with input as commission_change(0.01, 0.06, operator)
	codes(low) == {"commission_out_of_bounds"}
}

test_a_commission_needs_both_rates if {
	missing := configuration.deny with input as commission_change(null, 0.7, operator)
	codes(missing) == {"invalid_params"}
	over := configuration.deny with input as commission_change(0.7, 1.5, operator)
	codes(over) == {"invalid_params"}
}

test_only_permitted_roles_change_a_commission if {
	deny := configuration.deny with input as commission_change(0.75, 0.7, auditor)
	codes(deny) == {"actor_not_permitted"}
	by_algorithm := configuration.deny with input as commission_change(0.75, 0.7, algorithm_actor)
	codes(by_algorithm) == {"actor_not_permitted"}
}

# --- users ------------------------------------------------------------------------

admin := {"id": "user:1", "kind": "user", "roles": ["admin"]}

user_change(target, after, before, others, actor) := {
	"action": {
		"type": "user.update",
		"actor": actor,
		"target": {"kind": "user", "id": target},
		"params": after,
	},
	"state": object.union(before, {"other_active_admins": others}),
	"caller": actor,
}

test_an_admin_deactivates_another_user if {
	configuration.deny == set() with input as user_change("user:7", {"active": false, "role": "operator"}, {"active": true, "role": "operator"}, 1, admin)
}

test_nobody_changes_themselves if {
	off := configuration.deny with input as user_change("user:1", {"active": false, "role": "admin"}, {"active": true, "role": "admin"}, 1, admin)
	codes(off) == {"self_change"}
	demoted := configuration.deny with input as user_change("user:1", {"active": true, "role": "auditor"}, {"active": true, "role": "admin"}, 1, admin)
	codes(demoted) == {"self_change"}
}

test_the_last_active_admin_stays if {
	deny := configuration.deny with input as user_change("user:2", {"active": true, "role": "finance"}, {"active": true, "role": "admin"}, 0, admin)
	codes(deny) == {"last_admin"}
	configuration.deny == set() with input as user_change("user:2", {"active": true, "role": "finance"}, {"active": true, "role": "admin"}, 1, admin)
	configuration.deny == set() with input as user_change("user:2", {"active": true, "role": "admin"}, {"active": false, "role": "admin"}, 0, admin)
}

test_only_admins_change_users if {
	deny := configuration.deny with input as user_change("user:7", {"active": false, "role": "auditor"}, {"active": true, "role": "auditor"}, 1, operator)
	codes(deny) == {"actor_not_permitted"}
	missing := configuration.deny with input as user_change("user:7", {"active": "no"}, {"active": true, "role": "auditor"}, 1, admin)
	codes(missing) == {"invalid_params"}
}
