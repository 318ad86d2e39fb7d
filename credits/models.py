"""Credit packs and the credit ledger arrive with the credit-pack issue (DESIGN §3.3)."""
