"""Server-rendered pages and htmx actions on credits: the customer's packs, purchases and alert settings, and
the staff actions (seat conversion, promotional grants, a purchase for the customer)."""
