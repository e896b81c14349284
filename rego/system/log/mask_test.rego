package system.log_test

import data.system.log

event(decision_input) := {"decision_id": "d1", "path": "smartlinks/decision", "input": decision_input}

pointers(masks) := {m.path | some m in masks}

test_payout_account_details_are_masked_at_any_depth if {
	decision_input := {
		"action": {"type": "payout.create", "params": {"amount": 1200, "currency": "EUR", "destination": "FR7630006000011234567890189"}},
		"state": {"affiliate": {"id": "aff_1", "payout_account": {"iban": "FR76...", "holder": "Jane"}, "email": "jane@example.com"}},
	}
	masks := log.mask with input as event(decision_input)
	pointers(masks) == {
		"/input/action/params/destination",
		"/input/state/affiliate/payout_account",
		"/input/state/affiliate/payout_account/iban",
		"/input/state/affiliate/email",
	}
	every m in masks {
		m.op == "upsert"
		m.value == "***"
	}
}

test_keys_match_in_any_case_and_inside_arrays if {
	decision_input := {"state": {"contacts": [{"Email": "a@example.com"}, {"name": "b"}]}, "caller": {"Token": "slk_x"}}
	pointers(log.mask) == {"/input/state/contacts/0/Email", "/input/caller/Token"} with input as event(decision_input)
}

test_pointer_parts_are_escaped if {
	pointers(log.mask) == {"/input/a~1b~0c/secret"} with input as event({"a/b~c": {"secret": "s"}})
}

test_ordinary_decisions_and_null_values_are_left_alone if {
	decision_input := {"action": {"type": "allocation.update", "params": {"weights": {"a": 0.5, "b": 0.5}}}, "state": {"email": null}}
	log.mask == set() with input as event(decision_input)
	log.mask == set() with input as {"decision_id": "d2"}
}

test_the_public_endpoint_lookup_is_not_logged if {
	log.drop with input as {"path": "config/authz/public_endpoints"}
	not log.drop with input as {"path": "smartlinks/decision"}
}
