# Interval helpers shared by the clampable policies (allocation weights and budgets).
#
# An interval is a two-element array [lo, hi]. Constraints are applied in order of
# precedence with narrow: a constraint that cannot be met at all inside the interval
# built so far gives way to the stronger ones, and the value is pinned to the
# nearest end instead (for example a ceiling beats a max-change-per-cycle limit).
package smartlinks.lib.bounds

# narrow(interval, constraint) is the part of interval that satisfies constraint,
# or, when they do not overlap, the end of interval nearest to constraint.
narrow(interval, constraint) := [lo, hi] if {
	lo := max([interval[0], constraint[0]])
	hi := min([interval[1], constraint[1]])
	lo <= hi
} else := [interval[1], interval[1]] if {
	constraint[0] > interval[1]
} else := [interval[0], interval[0]]

# outside(value, interval, tolerance) holds when value lies outside interval by
# more than tolerance (tolerance absorbs floating point noise from the server's
# projection, so a projected vector is never clamped twice).
# (The plain comparison comes first: arithmetic is the costly part and most
# values are inside.)
outside(value, interval, tolerance) if {
	value < interval[0]
	value < interval[0] - tolerance
}

outside(value, interval, tolerance) if {
	value > interval[1]
	value > interval[1] + tolerance
}

# within(value, limit, tolerance): value is at most limit, up to tolerance.
within(value, limit, tolerance) if value <= limit + tolerance
