# Global safety: rules every action must pass whatever its own policy says.
#
# Kill switches, run modes, per-actor rate limits, blocked targets, freeze windows
# and business hours. All limits come from data.config.safety.
package smartlinks.safety

import data.config.safety as cfg

action_type := t if {
	t := input.action.type
	is_string(t)
} else := ""

# matches(prefixes): the action type starts with one of prefixes; a rule without
# action_types (absent or null) applies to every action type.
matches(prefixes) if prefixes == null

matches(prefixes) if {
	some prefix in prefixes
	startswith(action_type, prefix)
}

scope_of(rule) := object.get(rule, "action_types", null)

# --- kill switches -----------------------------------------------------------------

# The action that turns the kill switch off cannot itself be stopped by it, nor can
# the policy changes (rollback first) that may be what ends the incident.
kill_switch_exempt := {
	"controls.kill_switch",
	"policy.publish", "policy.activate", "policy.rollback", "policy.shadow_start", "policy.shadow_stop",
}

deny contains {
	"code": "kill_switch_active",
	"policy": "safety",
	"message": sprintf("the global kill switch is on (%v): no action may run", [source]),
} if {
	not action_type in kill_switch_exempt
	some source in global_kill_switch
}

global_kill_switch contains "bundle data" if cfg.kill_switch == true

global_kill_switch contains "runtime control" if input.controls.kill_switch == true

deny contains {
	"code": "target_kill_switch_active",
	"policy": "safety",
	"message": "the kill switch of this action's target is on",
} if {
	not action_type in kill_switch_exempt
	input.controls.target_kill_switch == true
}

# --- modes -------------------------------------------------------------------------

allowed_modes := {m | some m in cfg.allowed_modes}

mode := m if {
	m := input.mode
} else := null

deny contains {
	"code": "mode_not_allowed",
	"policy": "safety",
	"message": sprintf("mode %v is not one of %v", [mode, allowed_modes]),
} if {
	not mode in allowed_modes
}

live_enabled if cfg.live_enabled == true

money_action if {
	some prefix in cfg.money_action_prefixes
	startswith(action_type, prefix)
}

deny contains {
	"code": "live_not_enabled",
	"policy": "safety",
	"message": sprintf("%v moves money and live mode is not enabled (safety.live_enabled)", [action_type]),
} if {
	input.mode == "live"
	money_action
	not live_enabled
}

default obligations := {}

# In shadow mode the action is recorded, never executed.
obligations := {"shadow": true} if input.mode == "shadow"

# --- rate limits -------------------------------------------------------------------

applicable_rate_limits contains limit if {
	some limit in cfg.rate_limits
	matches(scope_of(limit))
	not exempt_from(limit)
}

# A limit may leave out some action types (a treasury run pays thousands of
# affiliates in one go: payouts have limits of their own).
exempt_from(limit) if {
	some prefix in object.get(limit, "exempt_action_types", [])
	startswith(action_type, prefix)
}

deny contains {
	"code": "rate_window_unknown",
	"policy": "safety",
	"target": window,
	"message": sprintf("a rate limit counts actions over %v s, a window context.actor_action_counts does not give", [window]),
} if {
	some limit in applicable_rate_limits
	window := format_int(limit.window_seconds, 10)
	not counted(window)
}

# Helpers keep possibly undefined references inside their bodies, where a missing
# value makes them false (an undefined argument would make "not" undefined too).
counted(window) if is_number(input.context.actor_action_counts[window])

# The counts are actions already allowed in the window: this one would be one more.
deny contains {
	"code": "rate_limit_exceeded",
	"policy": "safety",
	"target": window,
	"message": sprintf("the actor already ran %v actions in the last %v s, the limit is %v", [done, window, limit.max]),
} if {
	some limit in applicable_rate_limits
	window := format_int(limit.window_seconds, 10)
	done := input.context.actor_action_counts[window]
	done >= limit.max
}

# --- blocked targets ---------------------------------------------------------------

blocked := {[target.kind, target.id] | some target in cfg.blocked_targets}

deny contains {
	"code": "target_blocked",
	"policy": "safety",
	"message": sprintf("target %v %v is blocked", [input.action.target.kind, input.action.target.id]),
} if {
	[input.action.target.kind, input.action.target.id] in blocked
}

# --- time rules --------------------------------------------------------------------

rfc3339 := `^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$`

# parse(value) is value as ns since the epoch, undefined unless it is RFC 3339.
parse(value) := time.parse_rfc3339_ns(value) if {
	is_string(value)
	regex.match(rfc3339, value)
}

time_rules_apply if not action_type in {t | some t in cfg.time_rules_exempt_action_types}

applicable_freeze_windows contains window if {
	time_rules_apply
	some window in cfg.freeze_windows
	matches(scope_of(window))
}

business_hours_apply if {
	time_rules_apply
	cfg.business_hours.enabled == true
	matches(scope_of(cfg.business_hours))
}

time_rule_applies if count(applicable_freeze_windows) > 0

time_rule_applies if business_hours_apply

now := parse(input.now)

deny contains {
	"code": "invalid_time",
	"policy": "safety",
	"message": "input.now must be an RFC 3339 time when a freeze window or business hours apply",
} if {
	time_rule_applies
	not now
}

deny contains {
	"code": "invalid_time",
	"policy": "safety",
	"message": sprintf("freeze window %v has a start or end that is not an RFC 3339 time", [window]),
} if {
	some window in applicable_freeze_windows
	not valid_window(window)
}

valid_window(window) if {
	parse(window.start)
	parse(window.end)
}

deny contains {
	"code": "freeze_window_active",
	"policy": "safety",
	"message": sprintf("frozen from %v to %v: %v", [window.start, window.end, object.get(window, "reason", "no reason given")]),
} if {
	some window in applicable_freeze_windows
	parse(window.start) <= now
	now < parse(window.end)
}

# ISO weekday: 1 = Monday ... 7 = Sunday.
iso_weekday := {"Monday": 1, "Tuesday": 2, "Wednesday": 3, "Thursday": 4, "Friday": 5, "Saturday": 6, "Sunday": 7}

deny contains {
	"code": "outside_business_hours",
	"policy": "safety",
	"message": sprintf("%v may run only on days %v between %v:00 and %v:00 UTC", [action_type, hours.days, hours.start_hour, hours.end_hour]),
} if {
	business_hours_apply
	hours := cfg.business_hours
	not within_business_hours(hours)
	now
}

within_business_hours(hours) if {
	iso_weekday[time.weekday(now)] in hours.days
	[hour, _, _] := time.clock(now)
	hours.start_hour <= hour
	hour < hours.end_hour
}
