# Authorisation of HTTP requests: may this subject call this endpoint?
#
# Public endpoints are open to anyone. Any other endpoint needs an authenticated
# subject (a session user or an API token) holding a role that grants the
# endpoint's permission. Endpoints, roles and permissions live in
# data.config.authz. The server answers 401 for authentication_required and 403
# for every other reason.
package smartlinks.authz

import data.config.authz as cfg

subject := s if {
	s := input.subject
	is_object(s)
} else := {}

endpoint := e if {
	e := input.request.endpoint
	is_string(e)
} else := ""

method := upper(m) if {
	m := input.request.method
	is_string(m)
} else := ""

public if endpoint in cfg.public_endpoints

authenticated if subject.kind in {"user", "token"}

known if _ = cfg.endpoints[endpoint]

# An endpoint maps to one permission, or to one per HTTP method; HEAD falls back
# to GET as in Flask.
permission := rule if {
	rule := cfg.endpoints[endpoint]
	is_string(rule)
}

permission := method_permission(rule) if {
	rule := cfg.endpoints[endpoint]
	is_object(rule)
}

method_permission(rule) := rule[method] if {
	is_string(rule[method])
} else := rule.GET if {
	method == "HEAD"
	is_string(rule.GET)
}

granted if {
	some role in subject.roles
	some held in cfg.roles[role]
	grants(held, permission)
}

# "*" grants everything; "prefix:*" grants every permission starting with "prefix:".
grants("*", _)

grants(held, wanted) if held == wanted

grants(held, wanted) if {
	endswith(held, ":*")
	startswith(wanted, trim_suffix(held, "*"))
}

reasons contains {
	"code": "authentication_required",
	"policy": "authz",
	"message": sprintf("%v needs a signed-in user or an API token", [endpoint]),
} if {
	not public
	not authenticated
}

reasons contains {
	"code": "unknown_endpoint",
	"policy": "authz",
	"message": sprintf("endpoint %v is not in the authorisation table", [endpoint]),
} if {
	not public
	authenticated
	not known
}

reasons contains {
	"code": "unknown_endpoint",
	"policy": "authz",
	"message": sprintf("endpoint %v has no permission for method %v", [endpoint, method]),
} if {
	not public
	authenticated
	known
	not permission
}

reasons contains {
	"code": "forbidden",
	"policy": "authz",
	"message": sprintf("%v needs permission %v, which no role of the subject grants", [endpoint, permission]),
} if {
	not public
	authenticated
	is_string(permission)
	not granted
}

admitted if public

admitted if granted

default allow := false

allow if {
	admitted
	count(reasons) == 0
}

result := {"allow": allow, "reasons": [reason | some reason in reasons]}
