"""Conversation events, resolutions and rating arrive with the resolution-ledger issue (DESIGN §3.1)."""
