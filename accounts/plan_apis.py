"""Staff JSON API for price plans and their versions (admins): list, create a plan, create and update a
draft (terms validated by `pricing.plan_version_spec_parse`, the parser the pages use), publish, retire and
retry a failed Stripe sync. The rules are in services/plans.py and services/stripe_catalog.py.

Errors have the one shape; the parser's field names ("tiers[1].up_to") are the errors' `field`. A version in
the wrong state for the operation (not a draft, still in use) is 409, not 400: the request was well formed."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_portal.api_errors import ERRORS
from billing_portal.serializer_fields import StrictCharField, StrictSlugField

from .idempotency import idempotency_key_parameter, idempotent
from .models import PricePlan, PricePlanVersion, StripeSyncStatus
from .permissions import IsAdminRole
from .pricing import PLAN_VERSION_FIELDS, plan_version_spec_parse
from .selectors import price_plan_list, price_plan_version_usage
from .services import (
    PlanVersionConflict,
    price_plan_create,
    price_plan_version_create,
    price_plan_version_digest,
    price_plan_version_publish,
    price_plan_version_retire,
    price_plan_version_snapshot,
    price_plan_version_update,
)
from .services.stripe_catalog import price_plan_version_stripe_sync_retry

IDEMPOTENCY_KEY = idempotency_key_parameter()
# Django's <slug:…> converter: anything else is no URL of the API (404).
PLAN_SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, required=True, pattern=r"^[-a-zA-Z0-9_]+$")
COMMON_ERRORS = {400: ERRORS, 401: ERRORS, 403: ERRORS, 404: ERRORS}


@extend_schema_field(OpenApiTypes.STR)
class DecimalText(serializers.Field):
    """A Decimal of minor units as plain text without trailing zeros ("99", "0.5")."""

    def to_representation(self, value: Decimal) -> str:
        text = format(value.normalize(), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text


class TierOutputSerializer(serializers.Serializer):
    up_to = serializers.IntegerField(allow_null=True, help_text="null: no limit (the last tier).")
    unit_amount_decimal = DecimalText(allow_null=True)
    flat_amount = serializers.IntegerField(allow_null=True)


class OfferOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    resolutions = serializers.IntegerField()
    validity_days = serializers.IntegerField()
    unit_amount_decimal = DecimalText()
    stripe_price_id = serializers.CharField()


class VersionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    plan = serializers.CharField(source="plan.slug")
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=PricePlanVersion.Status.choices)
    currency = serializers.CharField()
    unit_amount_decimal = DecimalText(allow_null=True, help_text="Minor units per resolution; null when tiered.")
    tiers_mode = serializers.CharField(help_text="'' (one price per resolution), 'graduated' or 'volume'.")
    tiers = TierOutputSerializer(many=True, source="tiers.all")
    inactivity_window = serializers.DurationField()
    seat_unit_amount = serializers.IntegerField()
    seat_conversion_unit_amount_decimal = DecimalText()
    effective_from = serializers.DateTimeField()
    offers = OfferOutputSerializer(many=True, source="offers.all")
    created_at = serializers.DateTimeField()
    published_at = serializers.DateTimeField(allow_null=True)
    retired_at = serializers.DateTimeField(allow_null=True)
    stripe_sync_status = serializers.ChoiceField(
        choices=[("", "not started (a draft)"), *StripeSyncStatus.choices], help_text="'' for a draft."
    )
    stripe_sync_error = serializers.CharField()
    stripe_price_id = serializers.CharField()
    stripe_seat_price_id = serializers.CharField()
    accounts = serializers.SerializerMethodField(help_text="Accounts on this version now.")
    terms_digest = serializers.SerializerMethodField(
        help_text="A fingerprint of the terms as shown: send it with publish to be refused (409) if the draft "
        "changed since you read it."
    )

    def get_terms_digest(self, version) -> str:
        return price_plan_version_digest(version)

    def get_accounts(self, version) -> int:
        usage = self.context.get("usage")
        if usage is None:
            usage = price_plan_version_usage()
        return usage.get(version.pk, {}).get("accounts", 0)


class PlanOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()
    versions = VersionOutputSerializer(many=True, source="versions.all")


class PlanInputSerializer(serializers.Serializer):
    slug = StrictSlugField(max_length=64, help_text="Names the plan's Stripe Prices; cannot change.")
    name = StrictCharField(max_length=200)
    description = StrictCharField(required=False, allow_blank=True, max_length=2000, default="")


class TierInputSerializer(serializers.Serializer):  # documentation: the parser validates
    up_to = serializers.CharField(required=False, allow_null=True, help_text="Whole number; null or 'inf' last.")
    unit_amount_decimal = serializers.CharField(required=False, allow_null=True, help_text="Minor units, ≤ 12 dp.")
    flat_amount = serializers.IntegerField(required=False, allow_null=True, help_text="Minor units.")


class OfferInputSerializer(serializers.Serializer):  # documentation: the parser validates
    name = serializers.CharField()
    resolutions = serializers.IntegerField()
    validity_days = serializers.IntegerField(required=False, default=365)
    unit_amount_decimal = serializers.CharField()


class TermsInputSerializer(serializers.Serializer):
    """The terms of a version, as `plan_version_spec_parse` reads them (it, not this, validates them)."""

    currency = serializers.CharField(help_text="ISO 4217, lowercase: usd, eur…")
    unit_amount_decimal = serializers.CharField(
        required=False, allow_null=True, help_text="Minor units per resolution (99 = $0.99); leave out when tiered."
    )
    tiers_mode = serializers.ChoiceField(choices=["", "graduated", "volume"], required=False)
    tiers = TierInputSerializer(many=True, required=False)
    inactivity_window = serializers.CharField(help_text="A duration: 24:00:00, or '2 00:00:00' for two days.")
    seat_unit_amount = serializers.IntegerField(help_text="Minor units per seat per month.")
    seat_conversion_unit_amount_decimal = serializers.CharField(help_text="Seat spend that buys one credit.")
    effective_from = serializers.DateTimeField(help_text="ISO 8601 with a timezone.")
    offers = OfferInputSerializer(many=True, required=False)


class ReasonInputSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=500, default="")


class PublishInputSerializer(ReasonInputSerializer):
    terms_digest = StrictCharField(
        required=False,
        max_length=64,
        help_text="The version's `terms_digest` as you reviewed it: if the draft "
        "changed since, the publish is refused with 409 and nothing changes.",
    )


def _conflict(refused: ValidationError) -> Response:
    message = " ".join(refused.messages)
    return Response({"errors": [{"index": None, "field": None, "message": message}]}, status=409)


def _versions():
    return PricePlanVersion.objects.select_related("plan").prefetch_related("tiers", "offers")


def _version_body(version: PricePlanVersion) -> dict:
    return VersionOutputSerializer(_versions().get(pk=version.pk)).data


class PricePlanListApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(summary="Price plans with their versions", responses={200: PlanOutputSerializer(many=True),
                                                                          **COMMON_ERRORS})  # fmt: skip
    def get(self, request):
        plans = price_plan_list().prefetch_related("versions__plan")
        usage = price_plan_version_usage()
        return Response(PlanOutputSerializer(plans, many=True, context={"usage": usage}).data)

    @extend_schema(
        summary="Create a price plan (audited); its versions are created as drafts",
        request=PlanInputSerializer, parameters=[IDEMPOTENCY_KEY],
        responses={201: PlanOutputSerializer, **COMMON_ERRORS, 409: ERRORS},
    )  # fmt: skip
    @idempotent
    def post(self, request):
        data = PlanInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if PricePlan.objects.filter(slug=values["slug"]).exists():
            return _conflict(ValidationError(f"A price plan with the slug '{values['slug']}' already exists."))
        plan = price_plan_create(
            slug=values["slug"], name=values["name"], description=values["description"], actor=request.user
        )
        return Response(PlanOutputSerializer(plan).data, status=status.HTTP_201_CREATED)


class PricePlanVersionListApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(summary="The versions of a plan, newest first", parameters=[PLAN_SLUG],
                   responses={200: VersionOutputSerializer(many=True), **COMMON_ERRORS})  # fmt: skip
    def get(self, request, slug: str):
        plan = get_object_or_404(PricePlan, slug=slug)
        versions = _versions().filter(plan=plan).order_by("-number")
        return Response(
            VersionOutputSerializer(versions, many=True, context={"usage": price_plan_version_usage()}).data
        )

    @extend_schema(
        summary="Create a draft version of a plan (audited); numbered after the plan's last version",
        request=TermsInputSerializer, parameters=[PLAN_SLUG, IDEMPOTENCY_KEY],
        responses={201: VersionOutputSerializer, **COMMON_ERRORS, 409: ERRORS},
    )  # fmt: skip
    @idempotent
    def post(self, request, slug: str):
        plan = get_object_or_404(PricePlan, slug=slug)
        spec = plan_version_spec_parse(request.data)  # a ValidationError is a 400 naming each bad field
        try:  # the key is stored with the draft: a concurrent repeat finds it, other terms are refused
            version = price_plan_version_create(
                plan=plan, spec=spec, actor=request.user, idempotency_key=request.idempotency_key
            )
        except PlanVersionConflict as refused:
            return _conflict(refused)
        return Response(_version_body(version), status=status.HTTP_201_CREATED)


def _patched_terms(version: PricePlanVersion, patch) -> object:
    """The draft's terms with `patch` laid over them. Switching to one price per resolution drops the tiers,
    and switching to tiers drops the one price, unless the patch gives them (so the mode can change in one
    call). A patch that is not an object goes to the parser as it is, which refuses it plainly."""
    if not isinstance(patch, Mapping):
        return patch
    current = price_plan_version_snapshot(version)
    terms = {name: current[name] for name in PLAN_VERSION_FIELDS if name in current}
    terms.update(patch)
    if "tiers_mode" in patch:
        if not patch["tiers_mode"] and "tiers" not in patch:
            terms["tiers"] = []
        if patch["tiers_mode"] and "unit_amount_decimal" not in patch:
            terms["unit_amount_decimal"] = None
    return terms


class PricePlanVersionDetailApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(summary="One plan version", responses={200: VersionOutputSerializer, **COMMON_ERRORS})
    def get(self, request, version_id: int):
        return Response(VersionOutputSerializer(get_object_or_404(_versions(), pk=version_id)).data)

    @extend_schema(
        summary="Change a draft's terms (audited): the fields given replace the draft's; 409 unless a draft",
        request=TermsInputSerializer(partial=True), responses={200: VersionOutputSerializer, **COMMON_ERRORS,
                                                               409: ERRORS},
    )  # fmt: skip
    def patch(self, request, version_id: int):
        version = get_object_or_404(_versions(), pk=version_id)
        if version.status != PricePlanVersion.Status.DRAFT:
            return _conflict(ValidationError(f"{version} is {version.status}: only a draft can be edited."))
        patch = request.data
        try:  # the patch is laid over the terms as locked by the service, so concurrent patches both stay
            version = price_plan_version_update(
                version=version, actor=request.user,
                build=lambda locked: plan_version_spec_parse(_patched_terms(locked, patch)),
            )  # fmt: skip
        except PlanVersionConflict as refused:  # published meanwhile; a parser error stays a 400
            return _conflict(refused)
        return Response(_version_body(version))


class _VersionActionApi(APIView):
    permission_classes = [IsAdminRole]

    def act(self, request, version_id: int, service, *, with_reason: bool, serializer=ReasonInputSerializer):
        version = get_object_or_404(PricePlanVersion, pk=version_id)
        kwargs = {}
        if with_reason:
            data = serializer(data=request.data)
            data.is_valid(raise_exception=True)
            kwargs["reason"] = data.validated_data["reason"]
            if "terms_digest" in data.validated_data:
                kwargs["expected_digest"] = data.validated_data["terms_digest"]
        try:
            version = service(version=version, actor=request.user, **kwargs)
        except ValidationError as refused:  # the version's state does not allow it
            return _conflict(refused)
        return Response(_version_body(version))


ACTION_RESPONSES = {200: VersionOutputSerializer, **COMMON_ERRORS, 409: ERRORS}


class PricePlanVersionPublishApi(_VersionActionApi):
    @extend_schema(summary="Publish a draft: it becomes immutable and its Stripe Prices are created (audited)",
                   request=PublishInputSerializer, responses=ACTION_RESPONSES)  # fmt: skip
    def post(self, request, version_id: int):
        return self.act(
            request, version_id, price_plan_version_publish, with_reason=True, serializer=PublishInputSerializer
        )


class PricePlanVersionRetireApi(_VersionActionApi):
    @extend_schema(summary="Retire a published version no account is on or moving to (audited)",
                   request=ReasonInputSerializer, responses=ACTION_RESPONSES)  # fmt: skip
    def post(self, request, version_id: int):
        return self.act(request, version_id, price_plan_version_retire, with_reason=True)


class PricePlanVersionStripeSyncRetryApi(_VersionActionApi):
    @extend_schema(summary="Create a version's Stripe Prices again after the sync failed (audited)",
                   request=None, responses=ACTION_RESPONSES)  # fmt: skip
    def post(self, request, version_id: int):
        return self.act(request, version_id, price_plan_version_stripe_sync_retry, with_reason=False)
