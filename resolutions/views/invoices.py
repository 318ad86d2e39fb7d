from django.http import Http404


def _being_built(*args, **kwargs):
    raise Http404("This page is being built.")


invoice_list_page = _being_built
