# Decision-log masking and dropping (OPA's decision_logs plugin evaluates
# data.system.log.mask and data.system.log.drop on every event before it is
# buffered; input is the event: input.input is the decision's input).
#
# mask: sensitive fields are replaced with "***" (an "upsert", listed in the
# event's `masked`) wherever they occur in the input, at any depth: payout account
# and card details, bank identifiers, secrets and tokens, email addresses and
# phone numbers. The server's own decision record (decisions table) keeps the
# full input; the log shipped out of the sidecar does not.
#
# drop: the public-endpoint list lookup the server makes every few seconds is
# not a decision about anyone: it is not logged.
package system.log

# Keys whose values never leave the sidecar, compared in lower case.
sensitive_keys := {
	"account", "account_number", "account_holder", "iban", "bic", "swift", "routing_number", "sort_code",
	"card", "card_number", "pan", "cvc", "cvv",
	"destination", "payout_account", "payout_destination", "bank_account", "paypal_email",
	"email", "phone",
	"password", "secret", "token", "api_key", "authorization", "access_token", "refresh_token",
}

mask contains {"op": "upsert", "path": pointer, "value": "***"} if {
	walk(input.input, [path, value])
	count(path) > 0
	key := path[count(path) - 1]
	is_string(key)
	lower(key) in sensitive_keys
	value != null
	pointer := concat("/", array.concat(["", "input"], [escape(part) | some part in path]))
}

# JSON pointer escaping (RFC 6901): "~" as "~0", "/" as "~1"; array indices as digits.
escape(part) := replace(replace(part, "~", "~0"), "/", "~1") if is_string(part)

escape(part) := format_int(part, 10) if is_number(part)

drop if input.path == "config/authz/public_endpoints"
