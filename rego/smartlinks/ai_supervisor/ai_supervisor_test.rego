package smartlinks.ai_supervisor_test

import data.smartlinks
import data.smartlinks.ai_supervisor

supervisor := {"id": "ai:supervisor", "kind": "ai", "roles": []}

operator := {"id": "user:2", "kind": "user", "roles": ["operator"]}

auditor := {"id": "user:3", "kind": "user", "roles": ["auditor"]}

counts := {
	"ai.link.pause": 0, "ai.link.resume": 0, "ai.offer.pause": 0, "ai.offer.resume": 0,
	"ai.algorithm.set_param": 0, "ai.budget.shift": 0, "ai.alert": 0, "ai.review.request": 0,
}

anomaly := {"code": "conversion_rate_drop", "severity": "critical"}

# The AI proposes an action (the envelope the server builds).
proposed(type, target, params, state) := {
	"action": {"type": type, "actor": supervisor, "target": target, "params": params},
	"caller": supervisor,
	"state": object.union({"ai_counts": counts}, state),
	"controls": {"kill_switch": false, "target_kill_switch": false},
	"context": {"actor_action_counts": {"60": 0, "3600": 0, "86400": 0}},
	"mode": "test",
	"now": "2026-11-25T10:00:00Z",
}

# A person approves what the AI proposed.
approved(type, target, params, state, person) := object.union(
	proposed(type, target, params, state),
	{
		"action": {"type": type, "actor": person, "target": target, "params": params},
		"caller": person,
		"state": object.union(state, {"approval": {"proposal_id": "aip_1", "proposed_by": "ai:supervisor"}}),
	},
)

link := {"kind": "link", "id": "lnk_1"}

offer := {"kind": "offer", "id": "off_1"}

healthy_links := {"total": 6, "active": 6, "paused_by_ai_24h": 0}

pause_link_state := {"target": {"status": "active"}, "links": healthy_links, "evidence": {"anomalies": [anomaly]}}

campaigns := {
	"cmp_a": {"budget": 500, "daily_cap": 1000, "currency": "EUR", "status": "active"},
	"cmp_b": {"budget": 300, "daily_cap": 400, "currency": "EUR", "status": "active"},
	"cmp_usd": {"budget": 300, "daily_cap": 1000, "currency": "USD", "status": "active"},
	"cmp_off": {"budget": 300, "daily_cap": 1000, "currency": "EUR", "status": "paused"},
}

shift(from, to, amount) := proposed("ai.budget.shift", {"kind": "account", "id": "campaigns"}, {"from_campaign": from, "to_campaign": to, "amount": amount}, {"campaigns": campaigns})

set_param(algorithm, param, value) := proposed("ai.algorithm.set_param", link, {"param": param, "value": value}, {"link": {"algorithm": algorithm, "params": {}}})

codes(reasons) := {r.code | some r in reasons}

decision(request) := d if {
	d := smartlinks.decision with input as request
}

allowed_as_is(request) if {
	d := decision(request)
	d.allow == true
	d.obligations == {}
}

waits_for_a_person(request) if {
	d := decision(request)
	d.allow == true
	d.obligations.require_approval.role == "operator"
}

denied_with(request, code) if {
	d := decision(request)
	d.allow == false
	code in codes(d.reasons)
}

# --- the shipped limits -----------------------------------------------------------------

test_the_limits_are_configured if {
	cfg := data.config.ai_supervisor
	cfg.enabled == true
	every t in cfg.allowed_actions {
		t in ai_supervisor.proposal_types
		is_number(cfg.hourly_limits[t])
	}
	every limit in cfg.rate_limits {
		limit.window_seconds in {60, 3600, 86400}
	}
	every _, params in cfg.param_ranges {
		every _, bounds in params {
			bounds.min <= bounds.max
		}
	}
	cfg.budget_shift.max_ratio < 1
	cfg.pause.max_ai_paused_share < 1
}

# --- what the AI may do on its own --------------------------------------------------------

test_the_ai_pauses_a_link_with_an_anomaly_on_its_own if {
	allowed_as_is(proposed("ai.link.pause", link, {"reason": "conversions collapsed"}, pause_link_state))
}

test_a_pause_without_anomaly_evidence_waits_for_a_person if {
	request := proposed("ai.link.pause", link, {}, object.union(pause_link_state, {"evidence": {"anomalies": []}}))
	waits_for_a_person(request)
	decision(request).obligations.require_approval.why == ["no anomaly on the target backs this pause"]
}

test_the_ai_pauses_an_offer if {
	allowed_as_is(proposed("ai.offer.pause", offer, {}, {"target": {"status": "active"}, "offers": healthy_links, "evidence": {"anomalies": [anomaly]}}))
}

test_resuming_always_needs_a_person if {
	waits_for_a_person(proposed("ai.link.resume", link, {}, {"target": {"status": "paused"}}))
	waits_for_a_person(proposed("ai.offer.resume", offer, {}, {"target": {"status": "paused"}}))
}

test_a_review_request_waits_for_a_person if {
	waits_for_a_person(proposed("ai.review.request", link, {"reason": "EPC fell"}, {}))
}

test_the_ai_raises_warnings_but_not_critical_alerts if {
	allowed_as_is(proposed("ai.alert", null, {"severity": "warning", "title": "spend spike"}, {}))
	denied_with(proposed("ai.alert", null, {"severity": "critical", "title": "PAGE EVERYONE"}, {}), "ai_alert_severity_not_allowed")
}

test_an_action_outside_the_allowed_set_is_denied if {
	denied_with(proposed("ai.payout.approve", null, {}, {}), "unknown_ai_action")
	allowed := {"allowed_actions": ["ai.alert"]}
	request := proposed("ai.link.pause", link, {}, pause_link_state)
	denied_with(request, "ai_action_not_allowed") with data.config.ai_supervisor as object.union(data.config.ai_supervisor, allowed)
}

test_a_bundle_can_switch_the_ai_off if {
	request := proposed("ai.alert", null, {"severity": "info"}, {})
	denied_with(request, "ai_supervisor_disabled") with data.config.ai_supervisor.enabled as false
}

test_what_the_validator_refused_is_denied if {
	request := proposed("ai.invalid", null, {"proposed_type": "payout.approve", "errors": ["unknown action"]}, {})
	denied_with(request, "invalid_proposal")
}

test_the_kill_switch_stops_the_ai if {
	request := object.union(proposed("ai.link.pause", link, {}, pause_link_state), {"controls": {"kill_switch": true}})
	denied_with(request, "kill_switch_active")
}

# --- who may act --------------------------------------------------------------------------

test_a_service_cannot_pose_as_the_ai if {
	request := object.union(proposed("ai.link.pause", link, {}, pause_link_state), {"caller": {"id": "tok_1", "kind": "service", "roles": ["service"]}})
	denied_with(request, "ai_actor_not_recognised")
}

test_in_a_gate_query_the_subject_is_the_caller if {
	request := json.remove(proposed("ai.link.pause", link, {}, pause_link_state), ["caller"])
	denied_with(object.union(request, {"subject": {"id": "tok_1", "kind": "token", "roles": ["service"]}}), "ai_actor_not_recognised")
	allowed_as_is(object.union(request, {"subject": supervisor}))
}

test_an_unknown_supervisor_is_not_the_ai if {
	impostor := {"id": "ai:other", "kind": "ai", "roles": []}
	request := object.union(proposed("ai.alert", null, {"severity": "info"}, {}), {"action": {"actor": impostor}, "caller": impostor})
	denied_with(request, "ai_actor_not_recognised")
}

# --- rate limits --------------------------------------------------------------------------

test_per_action_hourly_limits if {
	request := proposed("ai.link.pause", link, {}, object.union(pause_link_state, {"ai_counts": {"ai.link.pause": 2}}))
	denied_with(request, "ai_rate_limit_exceeded")
}

test_missing_counts_are_a_deny if {
	request := json.remove(proposed("ai.alert", null, {"severity": "info"}, {}), ["state/ai_counts"])
	denied_with(request, "ai_counts_missing")
}

test_an_unconfigured_hourly_limit_allows_nothing if {
	request := proposed("ai.alert", null, {"severity": "info"}, {})
	denied_with(request, "ai_rate_limit_exceeded") with data.config.ai_supervisor.hourly_limits as {"ai.alert": "six"}
}

test_window_limits_over_all_ai_actions if {
	request := object.union(proposed("ai.alert", null, {"severity": "info"}, {}), {"context": {"actor_action_counts": {"60": 0, "3600": 120, "86400": 120}}})
	denied_with(request, "ai_rate_limit_exceeded")
}

test_a_window_the_server_does_not_count_is_a_deny if {
	request := json.patch(proposed("ai.alert", null, {"severity": "info"}, {}), [{"op": "replace", "path": "/context/actor_action_counts", "value": {"60": 0}}])
	denied_with(request, "rate_window_unknown")
}

# --- pauses -------------------------------------------------------------------------------

test_the_ai_keeps_only_a_share_of_links_paused if {
	request := proposed("ai.link.pause", link, {}, object.union(pause_link_state, {"links": {"total": 6, "active": 4, "paused_by_ai_24h": 2}}))
	denied_with(request, "ai_pause_share_exceeded")
}

test_nobody_pauses_the_last_active_link if {
	request := proposed("ai.link.pause", link, {}, object.union(pause_link_state, {"links": {"total": 1, "active": 1, "paused_by_ai_24h": 0}}))
	denied_with(request, "last_active_target")
	approval := approved("ai.link.pause", link, {}, object.union(pause_link_state, {"links": {"total": 1, "active": 1}}), operator)
	denied_with(approval, "last_active_target")
}

test_pausing_what_is_paused_is_denied if {
	denied_with(proposed("ai.link.pause", link, {}, object.union(pause_link_state, {"target": {"status": "paused"}})), "target_state_mismatch")
	denied_with(proposed("ai.offer.resume", offer, {}, {}), "target_state_mismatch")
}

test_a_pause_needs_a_target_of_the_right_kind if {
	denied_with(proposed("ai.link.pause", offer, {}, pause_link_state), "invalid_target")
	denied_with(proposed("ai.link.pause", null, {}, pause_link_state), "invalid_target")
}

# --- algorithm parameters -----------------------------------------------------------------

test_a_parameter_inside_its_range_is_allowed if {
	allowed_as_is(set_param("thompson_sampling", "gamma", 0.95))
	allowed_as_is(set_param("traffic_optimizer", "explore_share", 0.05))
}

test_a_parameter_outside_its_range_is_denied if {
	denied_with(set_param("thompson_sampling", "gamma", 0.2), "ai_param_out_of_range")
	denied_with(set_param("thompson_sampling", "gamma", "0.95"), "ai_param_out_of_range")
	denied_with(set_param("ucb", "floor", 0.5), "ai_param_out_of_range")
}

test_a_parameter_the_ai_may_not_touch_is_denied if {
	denied_with(set_param("thompson_sampling", "n_samples", 100), "ai_param_not_allowed")
	denied_with(set_param("mystery", "gamma", 0.95), "ai_param_not_allowed")
}

test_a_parameter_change_needs_a_link if {
	request := object.union(set_param("ucb", "floor", 0.05), {"action": {"target": offer}})
	denied_with(request, "invalid_target")
}

# --- budget shifts ------------------------------------------------------------------------

test_a_small_shift_is_allowed if {
	allowed_as_is(shift("cmp_a", "cmp_b", 50))
}

test_a_larger_shift_waits_for_a_person if {
	request := json.patch(shift("cmp_a", "cmp_b", 100.5), [{"op": "replace", "path": "/state/campaigns/cmp_a/budget", "value": 900}, {"op": "replace", "path": "/state/campaigns/cmp_b/daily_cap", "value": 900}])
	waits_for_a_person(request)
}

test_shifts_above_the_ratio_the_amount_or_the_cap_are_denied if {
	denied_with(shift("cmp_b", "cmp_a", 61), "ai_shift_too_large") # 0.2 of 300
	denied_with(shift("cmp_a", "cmp_b", 101), "ai_shift_above_cap") # 300 + 101 > 400
	request := json.patch(shift("cmp_a", "cmp_b", 250), [{"op": "replace", "path": "/state/campaigns/cmp_a/budget", "value": 5000}, {"op": "replace", "path": "/state/campaigns/cmp_b/daily_cap", "value": 5000}])
	denied_with(request, "ai_shift_too_large") # more than max_amount 200
}

test_missing_values_are_a_deny if {
	denied_with(proposed("ai.alert", null, {}, {}), "ai_alert_severity_not_allowed")
	denied_with(set_param("ucb", "floor", null), "ai_param_out_of_range")
	denied_with(json.remove(set_param("ucb", "floor", 0.01), ["action/params/value"]), "ai_param_out_of_range")
	denied_with(json.remove(shift("cmp_a", "cmp_b", 5), ["action/params/amount"]), "invalid_amount")
	denied_with(undo(operator, {}), "not_undoable")
	denied_with(undo(operator, {}), "not_executed")
	denied_with(undo(operator, {}), "undo_window_passed")
	denied_with(json.remove(shift("cmp_a", "cmp_b", 5), ["state/campaigns/cmp_b/status"]), "campaign_not_active")
	denied_with(json.remove(shift("cmp_a", "cmp_b", 5), ["state/campaigns/cmp_b/currency"]), "currency_mismatch")
}

test_a_malformed_shift_is_denied if {
	denied_with(shift("cmp_a", "cmp_b", -5), "invalid_amount")
	denied_with(shift("cmp_a", "cmp_b", "50"), "invalid_amount")
	denied_with(shift("cmp_a", "cmp_a", 5), "invalid_params")
	denied_with(shift("cmp_a", "cmp_nope", 5), "unknown_campaign")
	denied_with(shift("cmp_a", "cmp_usd", 5), "currency_mismatch")
	denied_with(shift("cmp_a", "cmp_off", 5), "campaign_not_active")
	request := json.patch(shift("cmp_a", "cmp_b", 5), [{"op": "remove", "path": "/state/campaigns/cmp_b/daily_cap"}])
	denied_with(request, "state_missing")
}

# --- a person approving ---------------------------------------------------------------------

test_an_operator_approves_what_waits_for_a_person if {
	allowed_as_is(approved("ai.link.resume", link, {}, {"target": {"status": "paused"}}, operator))
	allowed_as_is(approved("ai.budget.shift", {"kind": "account", "id": "campaigns"}, {"from_campaign": "cmp_a", "to_campaign": "cmp_b", "amount": 100}, {"campaigns": campaigns}, operator))
}

test_an_approval_is_checked_against_the_limits_again if {
	request := approved("ai.budget.shift", {"kind": "account", "id": "campaigns"}, {"from_campaign": "cmp_b", "to_campaign": "cmp_a", "amount": 90}, {"campaigns": campaigns}, operator)
	denied_with(request, "ai_shift_too_large")
	denied_with(approved("ai.link.resume", link, {}, {"target": {"status": "active"}}, operator), "target_state_mismatch")
}

test_an_auditor_cannot_approve if {
	denied_with(approved("ai.link.resume", link, {}, {"target": {"status": "paused"}}, auditor), "approver_role_required")
}

test_a_person_runs_an_ai_action_only_by_approving_it if {
	request := json.remove(approved("ai.link.resume", link, {}, {"target": {"status": "paused"}}, operator), ["state/approval"])
	denied_with(request, "approval_context_missing")
}

test_a_person_acts_only_for_themselves if {
	request := object.union(approved("ai.link.resume", link, {}, {"target": {"status": "paused"}}, operator), {"caller": auditor})
	denied_with(request, "ai_actor_not_recognised")
}

# --- undo ---------------------------------------------------------------------------------

undo(person, proposal) := object.union(proposed("ai.undo", link, {"proposal_id": "aip_1"}, {"proposal": proposal}), {"action": {"actor": person}, "caller": person})

executed_pause := {"action_type": "ai.link.pause", "status": "executed", "age_hours": 2}

test_an_operator_undoes_an_executed_action if {
	allowed_as_is(undo(operator, executed_pause))
	allowed_as_is(undo(operator, object.union(executed_pause, {"status": "approved"})))
}

test_the_ai_cannot_undo if {
	request := object.union(undo(operator, executed_pause), {"action": {"actor": supervisor}, "caller": supervisor})
	denied_with(request, "only_people_may_undo")
}

test_undo_needs_the_role_an_executed_action_and_time_left if {
	denied_with(undo(auditor, executed_pause), "undo_role_required")
	denied_with(undo(operator, object.union(executed_pause, {"status": "undone"})), "not_executed")
	denied_with(undo(operator, object.union(executed_pause, {"age_hours": 200})), "undo_window_passed")
	denied_with(undo(operator, object.union(executed_pause, {"action_type": "ai.alert"})), "not_undoable")
}
