from django.http import Http404


def _being_built(*args, **kwargs):
    raise Http404("This page is being built.")


resolution_list_page = resolution_export_csv = _being_built
