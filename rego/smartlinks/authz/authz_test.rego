package smartlinks.authz_test

import data.smartlinks.authz

call(subject, method, endpoint) := {
	"subject": subject,
	"request": {"method": method, "endpoint": endpoint, "path": "/somewhere"},
}

anonymous := {"id": null, "kind": "anonymous", "roles": []}

user(roles) := {"id": "user:1", "kind": "user", "roles": roles}

token(roles) := {"id": "tok_1", "kind": "token", "roles": roles}

allowed(request) if authz.result == {"allow": true, "reasons": []} with input as request

denied_with(request, code) if {
	result := authz.result with input as request
	result.allow == false
	[reason.code | some reason in result.reasons] == [code]
}

# --- public endpoints --------------------------------------------------------------

test_anyone_may_call_a_public_endpoint if {
	allowed(call(anonymous, "GET", "health.healthz"))
	allowed(call(anonymous, "GET", "clicks.redirect"))
	allowed(call(anonymous, "POST", "webhooks.stripe"))
	allowed(call(user([]), "POST", "auth.login"))
	allowed({"request": {"method": "GET", "endpoint": "static"}})
}

# --- 401: authentication required ------------------------------------------------------

test_an_anonymous_caller_must_authenticate if {
	denied_with(call(anonymous, "GET", "decisions_api.list_decisions"), "authentication_required")
}

test_an_unknown_endpoint_asks_an_anonymous_caller_to_authenticate_first if {
	denied_with(call(anonymous, "GET", "secret.thing"), "authentication_required")
}

test_a_subject_of_no_known_kind_counts_as_anonymous if {
	denied_with(call({"kind": "robot", "roles": ["admin"]}, "GET", "pages.index"), "authentication_required")
	denied_with({"request": {"method": "GET", "endpoint": "pages.index"}}, "authentication_required")
	denied_with({}, "authentication_required")
}

# --- 403: unknown endpoint and forbidden ---------------------------------------------------

test_an_endpoint_missing_from_the_table_is_denied if {
	denied_with(call(user(["admin"]), "GET", "secret.thing"), "unknown_endpoint")
}

test_a_role_without_the_permission_is_forbidden if {
	denied_with(call(user(["affiliate"]), "GET", "decisions_api.list_decisions"), "forbidden")
	denied_with(call(token(["service"]), "POST", "tokens_api.create_token"), "forbidden")
	denied_with(call(user([]), "GET", "pages.index"), "forbidden")
	denied_with(call(user(["no_such_role"]), "GET", "pages.index"), "forbidden")
}

test_a_forbidden_reason_names_the_permission if {
	result := authz.result with input as call(user(["auditor"]), "POST", "controls_api.set_kill_switch")
	result.reasons == [{
		"code": "forbidden",
		"policy": "authz",
		"message": "controls_api.set_kill_switch needs permission controls:write, which no role of the subject grants",
	}]
}

# --- granted -------------------------------------------------------------------------

test_a_role_with_the_permission_is_allowed if {
	allowed(call(token(["service"]), "POST", "decisions_api.create_decision"))
	allowed(call(user(["operator"]), "POST", "controls_api.set_kill_switch"))
	allowed(call(user(["auditor"]), "GET", "pages.decision_detail"))
	allowed(call(user(["affiliate"]), "POST", "auth.logout"))
}

test_any_of_the_subjects_roles_may_grant if {
	allowed(call(user(["affiliate", "policy_author"]), "GET", "controls_api.get_controls"))
}

test_admin_holds_every_permission if {
	allowed(call(user(["admin"]), "POST", "tokens_api.revoke_token"))
	allowed(call(user(["admin"]), "DELETE", "tokens_api.revoke_token"))
}

test_a_prefix_wildcard_grants_the_whole_family if {
	endpoints := {"ledger_api.list_entries": "ledger:read", "ledger_api.post_entry": "ledger:write", "finance_api.payouts": "finance:payouts:read", "ledger_api.export": "ledgers:read"}
	allowed(call(user(["finance"]), "GET", "ledger_api.list_entries")) with data.config.authz.endpoints as endpoints
	allowed(call(user(["finance"]), "POST", "ledger_api.post_entry")) with data.config.authz.endpoints as endpoints
	allowed(call(user(["finance"]), "GET", "finance_api.payouts")) with data.config.authz.endpoints as endpoints
	denied_with(call(user(["auditor"]), "POST", "ledger_api.post_entry"), "forbidden") with data.config.authz.endpoints as endpoints

	# "ledger:*" does not grant "ledgers:read"
	denied_with(call(user(["finance"]), "GET", "ledger_api.export"), "forbidden") with data.config.authz.endpoints as endpoints
}

# --- a permission per HTTP method ------------------------------------------------------

per_method := {"decisions_api.decisions": {"GET": "decisions:read", "POST": "decisions:write"}}

test_each_method_may_need_its_own_permission if {
	allowed(call(user(["auditor"]), "GET", "decisions_api.decisions")) with data.config.authz.endpoints as per_method
	denied_with(call(user(["auditor"]), "POST", "decisions_api.decisions"), "forbidden") with data.config.authz.endpoints as per_method
	allowed(call(token(["service"]), "POST", "decisions_api.decisions")) with data.config.authz.endpoints as per_method
}

test_the_method_is_case_insensitive if {
	allowed(call(user(["auditor"]), "get", "decisions_api.decisions")) with data.config.authz.endpoints as per_method
}

test_head_falls_back_to_get if {
	allowed(call(user(["auditor"]), "HEAD", "decisions_api.decisions")) with data.config.authz.endpoints as per_method
}

test_a_method_without_a_permission_is_an_unknown_endpoint if {
	denied_with(call(user(["admin"]), "DELETE", "decisions_api.decisions"), "unknown_endpoint") with data.config.authz.endpoints as per_method
	denied_with(call(user(["admin"]), "HEAD", "decisions_api.decisions"), "unknown_endpoint") with data.config.authz.endpoints as {"decisions_api.decisions": {"POST": "decisions:write"}}
}

test_a_request_without_a_method_is_judged_on_a_single_permission if {
	allowed({"subject": user(["auditor"]), "request": {"endpoint": "pages.index"}})
}

test_a_request_without_a_method_gets_no_method_specific_permission if {
	denied_with({"subject": user(["admin"]), "request": {"endpoint": "decisions_api.decisions"}}, "unknown_endpoint") with data.config.authz.endpoints as per_method
}

# --- the self-service portal and onboarding -------------------------------------------------

test_anyone_may_open_an_invitation if {
	allowed(call(anonymous, "GET", "portal.invitation"))
	allowed(call(anonymous, "POST", "portal.accept_invitation"))
}

test_portal_users_reach_their_own_part_of_the_portal_only if {
	allowed(call(user(["affiliate"]), "GET", "portal.home"))
	allowed(call(user(["affiliate"]), "GET", "portal_api.balances"))
	allowed(call(user(["advertiser"]), "GET", "portal_api.dashboard"))
	allowed(call(user(["advertiser"]), "GET", "portal_api.list_offers"))
	denied_with(call(user(["affiliate"]), "GET", "portal_api.list_offers"), "forbidden")
	denied_with(call(user(["advertiser"]), "PUT", "portal_api.put_payout_profile"), "forbidden")
	denied_with(call(user(["affiliate"]), "POST", "onboarding_api.invite_affiliate"), "forbidden")
	denied_with(call(user(["affiliate"]), "GET", "links_api.get_affiliate"), "forbidden")
}

test_operators_invite_and_auditors_only_read_onboarding if {
	allowed(call(user(["operator"]), "POST", "onboarding_api.invite_advertiser"))
	allowed(call(user(["operator"]), "GET", "onboarding_pages.affiliate_detail"))
	allowed(call(user(["auditor"]), "GET", "onboarding_api.affiliate_acceptances"))
	denied_with(call(user(["auditor"]), "POST", "onboarding_pages.invite_affiliate"), "forbidden")
	denied_with(call(user(["policy_author"]), "GET", "onboarding_api.advertiser_acceptances"), "forbidden")
}
