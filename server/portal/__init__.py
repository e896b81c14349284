"""The self-service portal: affiliates and advertisers see their own numbers, after an
invitation (onboarding) and the acceptance of the current terms (CGU / CGV)."""
