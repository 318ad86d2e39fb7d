"""Input fields that take only the JSON type the schema gives them.

DRF's CharField also takes a number and keeps its text ({"name": 5} is the name "5") and its IntegerField also
takes "5", 5.0 and "5.0": the schema says string and integer, and schemathesis's negative_data_rejection check
found APIs accepting bodies the schema says are invalid. The API's input serializers use these instead; the
message is DRF's own "invalid" message for the field.
"""

from __future__ import annotations

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)
