package smartlinks.config_test

# The shipped data (rego/config/data.json, data.config) holds every limit the
# policies read, with the right type: a missing limit must fail here, not make a
# rule silently undefined in production.

numbers_in(section, keys) if {
	every key in keys {
		is_number(data.config[section][key])
	}
}

test_safety_limits_are_configured if {
	cfg := data.config.safety
	is_boolean(cfg.kill_switch)
	is_boolean(cfg.live_enabled)
	{mode | some mode in cfg.allowed_modes} == {"test", "live", "shadow"}
	is_array(cfg.money_action_prefixes)
	every limit in cfg.rate_limits {
		is_number(limit.window_seconds)
		is_number(limit.max)
	}
	is_array(cfg.blocked_targets)
	is_array(cfg.freeze_windows)
	is_boolean(cfg.business_hours.enabled)
	"controls.kill_switch" in cfg.time_rules_exempt_action_types
}

test_the_server_counts_every_rate_limit_window if {
	every limit in data.config.safety.rate_limits {
		limit.window_seconds in {60, 3600, 86400}
	}
}

test_allocation_limits_are_configured if {
	numbers_in("traffic_optimizer", ["min_share", "max_share", "max_change_per_cycle", "min_total_clicks", "min_clicks_per_arm", "sum_tolerance", "bound_tolerance", "unchanged_tolerance"])
	every bandit in ["thompson_sampling", "ucb"] {
		numbers_in(bandit, ["exploration_floor", "min_samples_before_starve", "unsampled_min_share", "max_arms", "max_change_per_cycle", "sum_tolerance", "bound_tolerance"])
	}
}

test_budget_limits_are_configured if {
	numbers_in("budget_arbitrage", ["per_campaign_cap", "max_shift_ratio", "max_shift_amount", "roi_floor", "global_daily_cap", "amount_tolerance"])
	is_string(data.config.budget_arbitrage.approval.role)
}

test_every_operation_has_its_roles_and_actor_kinds if {
	every type in data.smartlinks.operations.action_types {
		is_array(data.config.operations.allowed_roles[type])
		is_array(data.config.operations.allowed_actor_kinds[type])
	}
}

# Permissions only admin (holding "*") is meant to have; any other permission an
# endpoint needs must be granted by some other role, or only admins could call it.
admin_only := {"tokens:manage", "users:manage", "policies:activate"}

test_every_permission_of_an_endpoint_is_granted_to_some_role if {
	every endpoint, permission in data.config.authz.endpoints {
		is_string(permission)
		granted_beyond_admin(endpoint, permission)
	}
}

granted_beyond_admin(_, permission) if permission in admin_only

granted_beyond_admin(endpoint, _) if {
	some role, _ in data.config.authz.roles
	role != "admin"
	data.smartlinks.authz.granted with input as {"subject": {"kind": "user", "roles": [role]}, "request": {"method": "GET", "endpoint": endpoint}}
}

test_no_endpoint_is_both_public_and_protected if {
	every endpoint in data.config.authz.public_endpoints {
		not data.config.authz.endpoints[endpoint]
	}
}

test_every_configuration_action_has_its_roles_actor_kinds_and_bounds if {
	cfg := data.config.configuration
	every type in data.smartlinks.configuration.action_types {
		is_array(cfg.allowed_roles[type])
		is_array(cfg.allowed_actor_kinds[type])
	}
	count(cfg.link.algorithms) > 0
	every algorithm, bounds in cfg.link.parameter_bounds {
		algorithm in cfg.link.algorithms
		every _, bound in bounds {
			is_number(bound.min)
			is_number(bound.max)
			bound.min <= bound.max
		}
	}
}

test_payout_holds_are_configured if {
	numbers_in("payouts", ["new_affiliate_hold_days", "destination_change_hold_hours"])
}
