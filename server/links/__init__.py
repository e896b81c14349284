"""Smart links: advertisers, offers, affiliates, links and their arms, approved allocations,
clicks, conversions, traffic sources and campaigns."""
