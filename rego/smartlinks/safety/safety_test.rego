package smartlinks.safety_test

import data.smartlinks.safety

# A well-behaved action on a Wednesday morning (UTC).
request := {
	"action": {
		"type": "allocation.update",
		"actor": {"id": "algo:ucb", "kind": "algorithm"},
		"target": {"kind": "link", "id": "lnk_42"},
	},
	"controls": {"kill_switch": false, "target_kill_switch": false},
	"context": {"actor_action_counts": {"60": 0, "3600": 3, "86400": 40}},
	"mode": "test",
	"now": "2026-11-25T10:00:00Z",
}

with_fields(fields) := object.union(request, fields)

of_type(type) := with_fields({"action": {"type": type}})

at(now) := with_fields({"now": now})

codes(reasons) := {reason.code | some reason in reasons}

test_a_normal_action_passes if {
	safety.deny == set() with input as request
	safety.obligations == {} with input as request
}

test_every_reason_names_the_safety_policy if {
	deny := safety.deny with input as {}
	count(deny) > 0
	every reason in deny {
		reason.policy == "safety"
	}
}

# --- kill switches -------------------------------------------------------------------

test_the_runtime_kill_switch_stops_every_action if {
	codes(safety.deny) == {"kill_switch_active"} with input as with_fields({"controls": {"kill_switch": true}})
}

test_the_kill_switch_in_bundle_data_stops_every_action if {
	codes(safety.deny) == {"kill_switch_active"} with input as request
		with data.config.safety.kill_switch as true
}

test_a_target_kill_switch_stops_actions_on_that_target if {
	codes(safety.deny) == {"target_kill_switch_active"} with input as with_fields({"controls": {"target_kill_switch": true}})
}

test_the_kill_switch_action_is_exempt_from_the_kill_switch if {
	switched_off := object.union(of_type("controls.kill_switch"), {"controls": {"kill_switch": true, "target_kill_switch": true}})
	safety.deny == set() with input as switched_off
		with data.config.safety.kill_switch as true
}

# --- modes -----------------------------------------------------------------------

test_the_mode_must_be_allowed if {
	codes(safety.deny) == {"mode_not_allowed"} with input as with_fields({"mode": "yolo"})
	codes(safety.deny) == {"mode_not_allowed"} with input as object.remove(request, ["mode"])
	codes(safety.deny) == {"mode_not_allowed"} with input as with_fields({"mode": "shadow"})
		with data.config.safety.allowed_modes as ["test", "live"]
}

test_live_money_actions_need_live_enabled if {
	live_payout := with_fields({"mode": "live", "action": {"type": "payout.send"}})
	codes(safety.deny) == {"live_not_enabled"} with input as live_payout
	safety.deny == set() with input as live_payout
		with data.config.safety.live_enabled as true
	safety.deny == set() with input as with_fields({"mode": "test", "action": {"type": "payout.send"}})
}

test_live_actions_that_move_no_money_need_nothing_more if {
	safety.deny == set() with input as with_fields({"mode": "live"})
}

test_shadow_mode_records_without_executing if {
	safety.deny == set() with input as with_fields({"mode": "shadow"})
	safety.obligations == {"shadow": true} with input as with_fields({"mode": "shadow"})
}

# --- rate limits -------------------------------------------------------------------

test_an_actor_at_its_limit_is_denied if {
	deny := safety.deny with input as with_fields({"context": {"actor_action_counts": {"60": 120}}})
	deny == {{
		"code": "rate_limit_exceeded",
		"policy": "safety",
		"target": "60",
		"message": "the actor already ran 120 actions in the last 60 s, the limit is 120",
	}}
	safety.deny == set() with input as with_fields({"context": {"actor_action_counts": {"60": 119, "3600": 1999}}})
	codes(safety.deny) == {"rate_limit_exceeded"} with input as with_fields({"context": {"actor_action_counts": {"3600": 2000}}})
}

test_a_limit_on_a_window_the_server_does_not_count_is_denied if {
	deny := safety.deny with input as with_fields({"context": {"actor_action_counts": {"60": 1, "3600": 1}}})
		with data.config.safety.rate_limits as [{"window_seconds": 600, "max": 10}]
	codes(deny) == {"rate_window_unknown"}
	some reason in deny
	reason.target == "600"
}

test_a_missing_count_is_denied if {
	codes(safety.deny) == {"rate_window_unknown"} with input as object.remove(request, ["context"])
}

test_a_rate_limit_may_apply_to_some_action_types_only if {
	limits := [{"window_seconds": 86400, "max": 10, "action_types": ["budget."]}]
	safety.deny == set() with input as request
		with data.config.safety.rate_limits as limits
	codes(safety.deny) == {"rate_limit_exceeded"} with input as of_type("budget.reallocate")
		with data.config.safety.rate_limits as limits
}

test_a_rate_limit_may_leave_out_some_action_types if {
	limits := [{"window_seconds": 60, "max": 120, "exempt_action_types": ["payout."]}]
	busy := with_fields({"context": {"actor_action_counts": {"60": 500}}})
	codes(safety.deny) == {"rate_limit_exceeded"} with input as busy
		with data.config.safety.rate_limits as limits
	safety.deny == set() with input as object.union(busy, {"action": {"type": "payout.send"}})
		with data.config.safety.rate_limits as limits
}

# --- blocked targets -----------------------------------------------------------------

test_a_blocked_target_is_denied if {
	blocked := [{"kind": "link", "id": "lnk_42"}]
	codes(safety.deny) == {"target_blocked"} with input as request
		with data.config.safety.blocked_targets as blocked
	safety.deny == set() with input as with_fields({"action": {"target": {"kind": "link", "id": "lnk_43"}}})
		with data.config.safety.blocked_targets as blocked
	safety.deny == set() with input as with_fields({"action": {"target": {"kind": "offer", "id": "lnk_42"}}})
		with data.config.safety.blocked_targets as blocked
}

# --- freeze windows ----------------------------------------------------------------

black_friday := [{
	"start": "2026-11-27T00:00:00Z",
	"end": "2026-11-28T00:00:00Z",
	"reason": "Black Friday",
}]

test_no_action_runs_inside_a_freeze_window if {
	deny := safety.deny with input as at("2026-11-27T12:00:00Z")
		with data.config.safety.freeze_windows as black_friday
	deny == {{
		"code": "freeze_window_active",
		"policy": "safety",
		"message": "frozen from 2026-11-27T00:00:00Z to 2026-11-28T00:00:00Z: Black Friday",
	}}
}

test_a_freeze_window_includes_its_start_and_excludes_its_end if {
	codes(safety.deny) == {"freeze_window_active"} with input as at("2026-11-27T00:00:00Z")
		with data.config.safety.freeze_windows as black_friday
	safety.deny == set() with input as at("2026-11-28T00:00:00Z")
		with data.config.safety.freeze_windows as black_friday
	safety.deny == set() with input as at("2026-11-26T23:59:59.999Z")
		with data.config.safety.freeze_windows as black_friday
}

test_a_freeze_window_may_cover_some_action_types_only if {
	money_only := [object.union(black_friday[0], {"action_types": ["budget.", "payout."]})]
	safety.deny == set() with input as at("2026-11-27T12:00:00Z")
		with data.config.safety.freeze_windows as money_only
	frozen := object.union(of_type("budget.reallocate"), {"now": "2026-11-27T12:00:00Z"})
	codes(safety.deny) == {"freeze_window_active"} with input as frozen
		with data.config.safety.freeze_windows as money_only
}

test_the_kill_switch_action_ignores_time_rules if {
	switch := object.union(of_type("controls.kill_switch"), {"now": "2026-11-27T12:00:00Z"})
	safety.deny == set() with input as switch
		with data.config.safety.freeze_windows as black_friday
}

test_a_freeze_window_with_a_bad_time_is_denied if {
	codes(safety.deny) == {"invalid_time"} with input as request
		with data.config.safety.freeze_windows as [{"start": "tomorrow", "end": "2026-11-28T00:00:00Z"}]
}

test_an_unreadable_now_is_denied_when_a_time_rule_applies if {
	codes(safety.deny) == {"invalid_time"} with input as at("25/11/2026 10:00")
		with data.config.safety.freeze_windows as black_friday
	codes(safety.deny) == {"invalid_time"} with input as object.remove(request, ["now"])
		with data.config.safety.freeze_windows as black_friday
	codes(safety.deny) == {"invalid_time"} with input as at(1764064800)
		with data.config.safety.freeze_windows as black_friday
}

test_now_is_not_needed_without_time_rules if {
	safety.deny == set() with input as object.remove(request, ["now"])
}

# --- business hours ----------------------------------------------------------------

# Every action type (action_types null), weekdays 08:00 to 18:00 UTC. ("with" merges
# an object into the shipped one, so the shipped action_types must be overridden.)
office := {"enabled": true, "days": [1, 2, 3, 4, 5], "start_hour": 8, "end_hour": 18, "action_types": null}

test_business_hours_allow_weekdays_between_the_hours if {
	safety.deny == set() with input as request
		with data.config.safety.business_hours as office
	safety.deny == set() with input as at("2026-11-25T08:00:00Z")
		with data.config.safety.business_hours as office
	safety.deny == set() with input as at("2026-11-25T17:59:59Z")
		with data.config.safety.business_hours as office
}

test_business_hours_deny_evenings_and_weekends if {
	codes(safety.deny) == {"outside_business_hours"} with input as at("2026-11-25T18:00:00Z")
		with data.config.safety.business_hours as office
	codes(safety.deny) == {"outside_business_hours"} with input as at("2026-11-25T07:59:59Z")
		with data.config.safety.business_hours as office
	codes(safety.deny) == {"outside_business_hours"} with input as at("2026-11-29T10:00:00Z") # a Sunday
		with data.config.safety.business_hours as office
}

test_business_hours_may_cover_some_action_types_only if {
	# the shipped data limits them to money actions, once enabled
	safety.deny == set() with input as at("2026-11-29T10:00:00Z")
		with data.config.safety.business_hours.enabled as true
	weekend_budget := object.union(of_type("budget.reallocate"), {"now": "2026-11-29T10:00:00Z"})
	codes(safety.deny) == {"outside_business_hours"} with input as weekend_budget
		with data.config.safety.business_hours.enabled as true
}

test_business_hours_need_a_readable_now if {
	codes(safety.deny) == {"invalid_time"} with input as object.remove(request, ["now"])
		with data.config.safety.business_hours as office
}

test_disabled_business_hours_do_nothing if {
	safety.deny == set() with input as at("2026-11-29T03:00:00Z")
		with data.config.safety.business_hours as object.union(office, {"enabled": false})
}
