from django.http import Http404


def _being_built(*args, **kwargs):
    raise Http404("This page is being built.")


seat_conversion_form = credit_grant_form = staff_purchase_form = _being_built
