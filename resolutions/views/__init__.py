"""Server-rendered pages of the resolutions app: the customer's dashboard, resolutions and invoices, and the
staff pages that bring usage, credits and invoices of an account together (this app sits on top of the
other two, so pages that need all three live here)."""
