package smartlinks.batch_test

import data.smartlinks
import data.smartlinks.batch

treasury := {"id": "system:treasury", "kind": "system", "roles": []}

payout(amount, committed) := {
	"action": {
		"type": "payout.create",
		"actor": treasury,
		"target": {"kind": "affiliate", "id": "aff_1"},
		"params": {"payout_id": "po_1", "affiliate_id": "aff_1", "amount": amount, "currency": "EUR", "provider": "stripe", "manual": false, "payments_mode": "test"},
	},
	"state": {
		"affiliate": {"id": "aff_1", "status": "active", "age_days": 40, "on_hold": false, "payout_method": "stripe", "has_destination": true},
		"payable": {"available": 12000},
		"treasury": {"available": 10000000, "committed_today": committed},
		"payout": {"id": "po_1", "requested_by": "system:treasury", "approval": "none"},
	},
	"controls": {"kill_switch": false, "target_kill_switch": false},
	"context": {"actor_action_counts": {"60": 0, "3600": 0, "86400": 0}},
	"caller": treasury,
	"mode": "test",
	"now": "2026-11-25T10:00:00Z",
}

codes(decision) := {reason.code | some reason in decision.reasons}

test_each_input_gets_the_decision_it_would_get_alone if {
	inputs := [payout(12000, 0), payout(12001, 0), payout(12000, 99995000), {}]
	decisions := batch.decisions with input as {"inputs": inputs}
	count(decisions) == 4
	every i, doc in inputs {
		decisions[i] == smartlinks.decision with input as doc
	}
	decisions[0].allow == true
	codes(decisions[1]) == {"above_payable_balance"}
	codes(decisions[2]) == {"daily_cap_exceeded"}
	"unknown_action_type" in codes(decisions[3])
}

test_obligations_are_answered_per_item if {
	big := json.patch(payout(1500000, 0), [{"op": "replace", "path": "/state/payable/available", "value": 1500000}])
	decisions := batch.decisions with input as {"inputs": [payout(12000, 0), big]}
	decisions[0].obligations == {}
	decisions[1].allow == true
	decisions[1].obligations.require_approval.role == "finance"
}

test_the_kill_switch_denies_every_item if {
	off := json.patch(payout(12000, 0), [{"op": "replace", "path": "/controls/kill_switch", "value": true}])
	decisions := batch.decisions with input as {"inputs": [off, off]}
	every d in decisions {
		d.allow == false
		"kill_switch_active" in codes(d)
	}
}

test_no_inputs_no_decisions if {
	batch.decisions == {} with input as {"inputs": []}
	batch.decisions == {} with input as {}
	batch.decisions == {} with input as {"inputs": "not a list"}
}
