from django.http import Http404


def _being_built(*args, **kwargs):
    raise Http404("This page is being built.")


credit_page = credit_purchase_form = alert_settings_form = _being_built
