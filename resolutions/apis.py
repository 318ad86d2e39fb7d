"""Ingestion and read APIs (DESIGN §4)."""

from __future__ import annotations

import datetime as dt

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication
from accounts.models import Account
from accounts.permissions import IsCustomer, IsStaffRole
from accounts.selectors import account_get_visible
from accounts.throttling import ConversationEventsRateThrottle
from billing_portal import clock
from billing_portal.api_errors import ERRORS
from billing_portal.parsers import JsonParser, JsonValueRefused
from billing_portal.serializer_fields import StrictCharField

from .ingestion import MAX_BATCH, events_parse, refused_value_error
from .selectors import DATE_MAX, DATE_MIN, MAX_USAGE_DAYS, resolution_get_visible, resolution_list, usage_get
from .services import EventConflict, conversation_events_ingest, resolution_void
from .services.invoice_preview import invoice_preview_get


class IsApiKey(BasePermission):
    message = "Send events with the account's API key: Authorization: Bearer rbp_…"

    def has_permission(self, request, view):
        return getattr(request.user, "api_key", None) is not None


class AccountIsOpen(BasePermission):
    message = "This account is closed: it takes no more conversation events, and nothing was stored."

    def has_permission(self, request, view):
        return request.user.account.status != Account.Status.CLOSED


class EventSerializer(serializers.Serializer):  # for the schema; validation is events_parse
    id = serializers.CharField(max_length=255)
    conversation_id = serializers.CharField(max_length=255)
    type = serializers.ChoiceField(choices=["ai_answer", "customer_confirmed", "customer_reply", "handoff"])
    occurred_at = serializers.DateTimeField(help_text="ISO 8601 with a timezone; at most 35 days old, 5 min ahead.")


class EventBatchSerializer(serializers.Serializer):  # for the schema; validation is events_parse
    events = serializers.ListField(
        child=EventSerializer(), min_length=1, max_length=MAX_BATCH,
        help_text=f"1 to {MAX_BATCH:,} events; one invalid event rejects the whole batch (400) and stores nothing.",
    )  # fmt: skip


# The body is one event, or a batch of 1 to 1,000 (DESIGN §4).
EVENTS_BODY = PolymorphicProxySerializer(
    component_name="ConversationEventsBody",
    serializers=[EventSerializer, EventBatchSerializer],
    resource_type_field_name=None,
)


class ConversationEventsApi(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [IsApiKey, AccountIsOpen]
    throttle_classes = [ConversationEventsRateThrottle]  # instead of the general limit: far above it
    parser_classes = [JsonParser]

    @extend_schema(
        summary="Post conversation events (one, or a batch of up to 1,000)",
        description=(
            "A batch is validated whole and stored; 202 means every event is stored (or was already, with the "
            "same payload). The conversations it touches are evaluated into resolutions right after, by a "
            "worker (within seconds; GET /api/v1/usage and /api/v1/resolutions show them then), or before the "
            'answer when the portal runs with EVENT_EVALUATION="inline".'
        ),
        request=EVENTS_BODY,
        responses={
            202: inline_serializer(
                "Accepted", {"accepted": serializers.IntegerField(), "duplicates": serializers.IntegerField()}
            ),
            400: ERRORS,
            401: ERRORS,
            403: ERRORS,
            409: ERRORS,
            413: ERRORS,
            429: ERRORS,
        },
    )
    def post(self, request):
        try:
            body = request.data
        except JsonValueRefused as refused:  # a NUL or lone surrogate: say which event and field
            return Response({"errors": [refused_value_error(refused)]}, status=status.HTTP_400_BAD_REQUEST)
        events, errors = events_parse(body, now=clock.now())
        if errors:
            return Response({"errors": errors}, status=status.HTTP_400_BAD_REQUEST)
        try:
            result = conversation_events_ingest(account=request.user.account, events=events)
        except EventConflict as conflict:
            return Response({"errors": conflict.errors}, status=status.HTTP_409_CONFLICT)
        return Response({"accepted": result.accepted, "duplicates": result.duplicates}, status=status.HTTP_202_ACCEPTED)


def _date_in_range(value: dt.date) -> None:
    if not DATE_MIN <= value <= DATE_MAX:
        raise serializers.ValidationError(f"Give a date between {DATE_MIN} and {DATE_MAX}.")


class DateRangeSerializer(serializers.Serializer):
    # "from" is a Python keyword, hence the explicit field names.
    def get_fields(self):
        required = self.context.get("required", True)
        return {
            "from": serializers.DateField(required=required, validators=[_date_in_range]),
            "to": serializers.DateField(required=required, validators=[_date_in_range]),
        }

    def validate(self, attrs):
        # DRF skips an optional field given empty (?from=): it is refused, like any other text that is not a date.
        blank = {name: "Give a date as YYYY-MM-DD." for name in ("from", "to") if self.initial_data.get(name) == ""}
        if blank:
            raise serializers.ValidationError(blank)
        start, end = attrs.get("from"), attrs.get("to")
        if start and end and start > end:
            raise serializers.ValidationError({"to": "to must not be before from."})
        if self.context.get("max_days") and start and end and (end - start).days + 1 > self.context["max_days"]:
            raise serializers.ValidationError({"to": f"At most {self.context['max_days']} days at a time."})
        return attrs


USAGE_ROW = {
    "resolutions": serializers.IntegerField(),
    "credited": serializers.IntegerField(),
    "overage": serializers.IntegerField(),
    "amount_minor": serializers.IntegerField(help_text="Overage money, minor units of currency."),
}


class UsageApi(APIView):
    permission_classes = [IsCustomer]

    @extend_schema(
        summary="Usage per day (dates in the account's timezone) and totals",
        parameters=[
            OpenApiParameter(
                "from",
                dt.date,
                required=True,
                description=f"First day, in the account's timezone ({DATE_MIN} or later).",
            ),
            OpenApiParameter(
                "to",
                dt.date,
                required=True,
                description=f"Last day, included: not before `from`, and at most {MAX_USAGE_DAYS} days from `from` to "
                f"`to` counted inclusively (a longer range is a 400); {DATE_MAX} at the latest.",
            ),
        ],
        responses={
            200: inline_serializer(
                "Usage",
                {
                    "currency": serializers.CharField(),
                    "days": inline_serializer("UsageDay", {"date": serializers.DateField(), **USAGE_ROW}, many=True),
                    "totals": inline_serializer("UsageTotals", USAGE_ROW),
                },
            ),
            400: ERRORS,
            401: ERRORS,
            403: ERRORS,
        },
    )
    def get(self, request):
        params = DateRangeSerializer(data=request.query_params, context={"max_days": MAX_USAGE_DAYS})
        params.is_valid(raise_exception=True)
        data = params.validated_data
        return Response(usage_get(account=request.user.account, date_from=data["from"], date_to=data["to"]))


class ResolutionCursorPagination(CursorPagination):
    ordering = ("resolved_at", "id")
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def get_page_size(self, request):
        # DRF falls back to the default for a limit it cannot read (limit=abc, 0) and cuts a larger one: the
        # schema says 1 to 1,000, so anything else is a 400 rather than a page of another size than asked.
        text = request.query_params.get(self.page_size_query_param)
        if text is None:
            return self.page_size
        if not (text.isascii() and text.isdecimal() and len(text) <= 4 and 1 <= int(text) <= self.max_page_size):
            raise serializers.ValidationError({"limit": f"limit is a whole number from 1 to {self.max_page_size:,}."})
        return int(text)

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:  # the position is the client's text: an instant in range, or the cursor is not ours
                clock.parse_instant(cursor.position)
            except ValueError:
                raise NotFound(self.invalid_cursor_message) from None
        return cursor

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})


class ResolutionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    conversation_id = serializers.CharField()
    kind = serializers.CharField()
    resolved_at = serializers.DateTimeField()
    funding = serializers.CharField()
    pack_id = serializers.SerializerMethodField()
    amount_minor = serializers.IntegerField()
    voided = serializers.SerializerMethodField()

    def get_pack_id(self, obj) -> int | None:
        return getattr(obj, "credit_pack_id", None)

    def get_voided(self, obj) -> bool:
        return obj.voided_at is not None


class ResolutionListApi(APIView):
    permission_classes = [IsCustomer]

    @extend_schema(
        summary="Resolutions of the account, oldest first, cursor-paginated",
        parameters=[
            OpenApiParameter("from", dt.date, required=False),
            OpenApiParameter("to", dt.date, required=False),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                required=False,
                description="Page size, 1 to 1,000 (default 100).",
            ),
            OpenApiParameter("cursor", str, required=False),
        ],
        responses={
            200: inline_serializer(
                "ResolutionPage",
                {
                    "results": ResolutionOutputSerializer(many=True),
                    "next": serializers.URLField(
                        allow_null=True, help_text="The next page's full URL; null at the end."
                    ),
                },
            ),
            400: ERRORS,
            401: ERRORS,
            403: ERRORS,
            404: OpenApiResponse(ERRORS, description="The cursor is not one of ours (or no longer valid)."),
        },  # fmt: skip
    )
    def get(self, request):
        params = DateRangeSerializer(data=request.query_params, context={"required": False})
        params.is_valid(raise_exception=True)
        data = params.validated_data
        resolutions = resolution_list(account=request.user.account, date_from=data.get("from"), date_to=data.get("to"))
        paginator = ResolutionCursorPagination()
        page = paginator.paginate_queryset(resolutions, request, view=self)
        return paginator.get_paginated_response(ResolutionOutputSerializer(page, many=True).data)


class ResolutionVoidApi(APIView):
    permission_classes = [IsStaffRole]

    class InputSerializer(serializers.Serializer):
        reason = StrictCharField(max_length=2000)

    @extend_schema(
        summary="Void a disputed resolution (staff; audited)",
        request=inline_serializer("ResolutionVoidInput", {"reason": serializers.CharField(max_length=2000)}),
        responses={200: ResolutionOutputSerializer, 400: ERRORS},
    )
    def post(self, request, resolution_id: int):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        resolution = resolution_get_visible(user=request.user, pk=resolution_id)
        voided = resolution_void(resolution=resolution, actor=request.user, reason=data.validated_data["reason"])
        return Response(ResolutionOutputSerializer(voided).data)


def _money(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(help_text=f"{help_text}, minor units of the account's currency.")


INVOICE_PREVIEW = inline_serializer(
    "InvoicePreview",
    {
        "account_id": serializers.IntegerField(),
        "currency": serializers.CharField(),
        "period_start": serializers.DateTimeField(help_text="The current Stripe billing period (its overage)."),
        "period_end": serializers.DateTimeField(),
        "portal": inline_serializer(
            "InvoicePreviewPortal",
            {
                "seats_minor": _money("Seats for the next period at the current quantity"),
                "overage_resolutions": serializers.IntegerField(help_text="Non-voided overage resolutions."),
                "overage_minor": _money("This period's overage, priced by tier as Stripe prices it"),
                "total_minor": _money("seats_minor + overage_minor"),
            },
        ),
        "stripe": inline_serializer("InvoicePreviewStripe", {"total_minor": _money("create_preview's total")}),
        "agrees": serializers.BooleanField(help_text="The two totals are equal to the cent."),
        "difference_minor": _money("Stripe's total minus the portal's"),
        "note": serializers.CharField(help_text="Why the two can differ: Stripe counts only reported overage."),
        "breakdown": inline_serializer(
            "InvoicePreviewBreakdown",
            {
                "seats": inline_serializer(
                    "InvoicePreviewSeats",
                    {
                        "quantity": serializers.IntegerField(), "unit_amount": _money("Per seat per month"),
                        "amount_minor": _money("The seats' line"), "period_start": serializers.DateTimeField(),
                        "period_end": serializers.DateTimeField(),
                    },
                ),
                "overage_tiers": inline_serializer(
                    "InvoicePreviewTier",
                    {
                        "tier": serializers.IntegerField(allow_null=True, help_text="1-based; null for per-unit."),
                        "first_unit": serializers.IntegerField(),
                        "last_unit": serializers.IntegerField(allow_null=True, help_text="null: no upper bound."),
                        "quantity": serializers.IntegerField(),
                        "unit_amount_decimal": serializers.CharField(allow_null=True),
                        "flat_amount": _money("The tier's flat amount"),
                        "amount_minor": _money("The line, rounded half up once"),
                    },
                    many=True,
                ),
                "credited_resolutions": serializers.IntegerField(help_text="Credits used this period."),
                "unfunded_resolutions": serializers.IntegerField(help_text="Not drawn down yet."),
                "meter": inline_serializer(
                    "InvoicePreviewMeter",
                    {
                        "reported_resolutions": serializers.IntegerField(help_text="In Stripe's meter, confirmed."),
                        "awaiting_report": serializers.IntegerField(help_text="Negative: a correction to send."),
                        "reported_through": serializers.DateTimeField(),
                        "window_minutes": serializers.IntegerField(),
                    },
                ),
                "stripe_subscription_id": serializers.CharField(),
                "stripe_lines": inline_serializer(
                    "InvoicePreviewStripeLine",
                    {
                        "description": serializers.CharField(allow_null=True),
                        "quantity": serializers.IntegerField(allow_null=True),
                        "amount_minor": serializers.IntegerField(),
                        "period_start": serializers.DateTimeField(allow_null=True),
                        "period_end": serializers.DateTimeField(allow_null=True),
                    },
                    many=True,
                ),
            },
        ),
    },
)  # fmt: skip


class InvoicePreviewApi(APIView):
    permission_classes = [IsStaffRole]

    @extend_schema(
        summary="The account's next invoice: the portal's computation beside Stripe's create_preview (staff)",
        description=(
            "Seats at the current quantity for the next period plus this period's overage by tier, beside "
            "Stripe's create_preview of the account's subscription; `agrees` is true only if the totals are equal "
            "to the cent. Stripe counts only overage already reported to its meter (once each reporting window "
            "has closed; Stripe's figures lag behind ingestion in production): compare after reporting. 404 also "
            "when the account has no Stripe subscription; 503 when Stripe cannot be reached."
        ),
        responses={200: INVOICE_PREVIEW, 401: ERRORS, 403: ERRORS, 404: ERRORS, 502: ERRORS, 503: ERRORS},
    )
    def get(self, request, account_id: int):
        account = account_get_visible(user=request.user, pk=account_id)
        return Response(invoice_preview_get(account=account, now=clock.now()))
