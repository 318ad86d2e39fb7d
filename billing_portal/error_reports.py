"""What Django's error reports (the admins' 500 emails, DEBUG off) may show: no API key, no credential.

Django 5.2's filter already hides request headers and settings whose names match API|AUTH|TOKEN|KEY|SECRET|
PASS|SIGNATURE|HTTP_COOKIE (so HTTP_AUTHORIZATION). This one also says AUTHORIZATION outright (that name must
stay hidden whatever Django's list becomes) and blanks anything shaped like one of our API keys wherever it
appears in what the filter sees: any request header (META, QUERY_STRING included), a setting, a frame's local
variable. Django's report shows the URL and request.GET unfiltered: the API takes keys only in the Authorization
header, never in a query string.
"""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter

API_KEY_SHAPE = re.compile(r"rbp_[0-9a-f]{8}_[A-Za-z0-9_\-]+")


class CredentialHidingReporterFilter(SafeExceptionReporterFilter):
    hidden_settings = re.compile("API|AUTH|AUTHORIZATION|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE", flags=re.I)

    def _without_keys(self, value):
        if isinstance(value, str):
            return API_KEY_SHAPE.sub(self.cleansed_substitute, value)
        try:
            shown = repr(value)
        except Exception:
            return value
        return API_KEY_SHAPE.sub(self.cleansed_substitute, shown) if API_KEY_SHAPE.search(shown) else value

    def cleanse_setting(self, key, value):
        return self._without_keys(super().cleanse_setting(key, value))

    def get_traceback_frame_variables(self, request, tb_frame):
        if not self.is_active(request):
            return super().get_traceback_frame_variables(request, tb_frame)
        return [
            (name, self._without_keys(value))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]
