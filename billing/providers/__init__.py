"""Payment providers behind one interface (`base.PayoutProvider`): Stripe Connect transfers and
PayPal Payouts. Each provider is idempotent by the payout's key, which is stored before any call."""
