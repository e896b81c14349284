# Batch decisions: data.smartlinks.decision for many inputs in one query.
#
# OPA's Data API answers one input per request; the treasury decides hundreds of
# payouts at a time. input.inputs is a list of ordinary decision inputs, and
# decisions[i] is exactly what data.smartlinks.decision answers for
# input.inputs[i] (keyed by position, so that an input whose decision were
# undefined is missing rather than shifting the others). Obligations, clamps and
# the re-ask after a clamp stay with the gateway, per item.
package smartlinks.batch

import data.smartlinks

decisions[i] := decision if {
	some i, doc in input.inputs
	decision := smartlinks.decision with input as doc
}
