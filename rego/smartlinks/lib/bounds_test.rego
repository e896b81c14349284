package smartlinks.lib.bounds_test

import data.smartlinks.lib.bounds

test_narrow_keeps_the_overlap if {
	bounds.narrow([0.02, 0.9], [0.25, 0.75]) == [0.25, 0.75]
	bounds.narrow([0.02, 0.9], [0, 1]) == [0.02, 0.9]
	bounds.narrow([0.2, 0.5], [0.5, 0.9]) == [0.5, 0.5]
}

test_narrow_pins_to_the_upper_end_when_the_constraint_lies_above if {
	bounds.narrow([0.02, 0.9], [0.95, 1.05]) == [0.9, 0.9]
}

test_narrow_pins_to_the_lower_end_when_the_constraint_lies_below if {
	bounds.narrow([0.05, 0.9], [-0.1, 0.01]) == [0.05, 0.05]
}

test_outside_with_tolerance if {
	bounds.outside(0.01, [0.02, 0.9], 1e-9)
	bounds.outside(0.91, [0.02, 0.9], 1e-9)
	not bounds.outside(0.02 - 1e-12, [0.02, 0.9], 1e-9)
	not bounds.outside(0.9 + 1e-12, [0.02, 0.9], 1e-9)
	not bounds.outside(0.5, [0.02, 0.9], 1e-9)
}

test_within_with_tolerance if {
	bounds.within(1.0, 1.0, 1e-9)
	bounds.within(1.0 + 1e-12, 1.0, 1e-9)
	not bounds.within(1.1, 1.0, 1e-9)
}
