"""Staff JSON API for price simulations (admins): start one (with `Idempotency-Key`), list them, read one
(status, progress, totals and its rows, largest movers first, paginated). The figures are computed by
services/simulation.py in a Celery task; these views only call it."""

from __future__ import annotations

import uuid

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.idempotency import idempotency_key_parameter, idempotent
from accounts.permissions import IsAdminRole
from accounts.selectors import price_plan_version_given
from billing_portal.api_errors import ERRORS
from billing_portal.serializer_fields import StrictIntegerField

from .models import PriceSimulation
from .services.simulation import (
    DEFAULT_PERIODS,
    MAX_PERIODS,
    MIN_PERIODS,
    price_simulation_rows,
    price_simulation_start,
)

LIST_LIMIT = 200
ROWS_PAGE_SIZE, ROWS_PAGE_SIZE_MAX = 100, 1000


def _percent(value) -> str | None:
    return None if value is None else format(value, "f")


class PriceSimulationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    version_id = serializers.IntegerField()
    version_label = serializers.CharField(source="terms.label")
    terms = serializers.JSONField(help_text="The version's prices frozen when the simulation started.")
    periods = serializers.IntegerField()
    filter_version_id = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=PriceSimulation.Status.choices)
    accounts_done = serializers.IntegerField()
    accounts_total = serializers.IntegerField()
    accounts_other_currency = serializers.IntegerField(help_text="Accounts left out: billed in another currency.")
    currency = serializers.CharField()
    actual_minor = serializers.IntegerField(help_text="Overage spend as billed (0 until done).")
    simulated_minor = serializers.IntegerField(help_text="The same overage rated by the simulated terms.")
    difference_minor = serializers.IntegerField()
    difference_percent = serializers.SerializerMethodField()
    seats_included = serializers.SerializerMethodField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_difference_percent(self, obj) -> str | None:
        return _percent(obj.difference_percent)

    def get_seats_included(self, obj) -> bool:
        return False  # past periods' seat counts are not recorded: seat spend is in neither figure


class PriceSimulationRowSerializer(serializers.Serializer):
    account_id = serializers.IntegerField()
    account_name = serializers.CharField(source="account.name")
    plan_version_id = serializers.IntegerField()
    periods = serializers.IntegerField()
    billable = serializers.IntegerField()
    credited = serializers.IntegerField()
    overage = serializers.IntegerField()
    actual_minor = serializers.IntegerField()
    simulated_minor = serializers.IntegerField()
    difference_minor = serializers.IntegerField()
    percent = serializers.SerializerMethodField()
    currency = serializers.CharField()

    def get_percent(self, obj) -> str | None:
        return _percent(obj.percent)


class StartInputSerializer(serializers.Serializer):
    version_id = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    periods = StrictIntegerField(
        min_value=MIN_PERIODS, max_value=MAX_PERIODS, default=DEFAULT_PERIODS,
        help_text=f"Each account's last closed billing periods to re-price ({MIN_PERIODS} to {MAX_PERIODS}).",
    )  # fmt: skip
    filter_version_id = StrictIntegerField(
        min_value=1, max_value=2**31 - 1, required=False, allow_null=True,
        help_text="Only the accounts now on this version.",
    )  # fmt: skip


DETAIL_OUTPUT = inline_serializer(
    "PriceSimulationDetail",
    {
        "simulation": PriceSimulationOutputSerializer(),
        "rows": PriceSimulationRowSerializer(many=True),
        "rows_count": serializers.IntegerField(),
        "page": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
    },
)


def _whole(request, name: str, default: int, maximum: int) -> int:
    text = request.query_params.get(name)
    if text is None:  # given empty, it is refused like any other text that is not a number (the schema's integer)
        return default
    if not (text.isascii() and text.isdecimal() and len(text) < 10 and 1 <= int(text) <= maximum):
        raise ValidationError({name: f"{name} is a whole number from 1 to {maximum:,}."})
    return int(text)


class PriceSimulationListApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(
        summary="Price simulations, newest first (at most 200)",
        responses={200: PriceSimulationOutputSerializer(many=True)},
    )
    def get(self, request):
        simulations = PriceSimulation.objects.order_by("-created_at", "-pk")[:LIST_LIMIT]
        return Response(PriceSimulationOutputSerializer(simulations, many=True).data)

    @extend_schema(
        summary="Start re-pricing each account's last N closed billing periods under a version (audited)",
        description="The simulation runs as a background task: poll GET …/price-simulations/{id} until its status "
        "is done or failed. It reads usage only and changes no bill, resolution or credit.",
        request=StartInputSerializer,
        responses={202: PriceSimulationOutputSerializer, 400: ERRORS, 409: ERRORS},
        parameters=[idempotency_key_parameter()],
    )
    @idempotent
    def post(self, request):
        data = StartInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        filter_id = values.get("filter_version_id")
        try:
            simulation, _ = price_simulation_start(
                version=price_plan_version_given(values["version_id"], "version_id"), periods=values["periods"],
                filter_version=price_plan_version_given(filter_id, "filter_version_id") if filter_id else None,
                actor=request.user,
                # The client's key names the simulation (a retry is one simulation); without one, each POST is its own.
                idempotency_key=request.idempotency_key or f"api:{uuid.uuid4().hex}",
            )  # fmt: skip
        except ValidationError as exc:  # the service names the version `version`; this API calls it `version_id`
            if hasattr(exc, "error_dict") and "version" in exc.error_dict:
                raise ValidationError({"version_id": exc.error_dict["version"]}) from None
            raise
        return Response(PriceSimulationOutputSerializer(simulation).data, status=status.HTTP_202_ACCEPTED)


class PriceSimulationDetailApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(
        summary="One price simulation: status, progress, totals and its accounts, largest movers first",
        parameters=[
            OpenApiParameter("page", {"type": "integer", "minimum": 1, "maximum": 10**8}, required=False),
            OpenApiParameter(
                "page_size",
                {"type": "integer", "minimum": 1, "maximum": ROWS_PAGE_SIZE_MAX},
                required=False,
                description=f"1 to {ROWS_PAGE_SIZE_MAX}",
            ),
            OpenApiParameter(
                "plan_version_id",
                {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                required=False,
                description="Only accounts on this version.",
            ),
        ],
        responses={200: DETAIL_OUTPUT, 400: ERRORS, 404: ERRORS},
    )
    def get(self, request, simulation_id: int):
        simulation = get_object_or_404(PriceSimulation, pk=simulation_id)
        page_size = _whole(request, "page_size", ROWS_PAGE_SIZE, ROWS_PAGE_SIZE_MAX)
        number = _whole(request, "page", 1, 10**8)
        version_text = request.query_params.get("plan_version_id")
        version_id = _whole(request, "plan_version_id", 0, 2**31 - 1) if version_text is not None else None
        rows = price_simulation_rows(simulation=simulation, plan_version_id=version_id)
        paginator = Paginator(rows, page_size)
        count = paginator.count
        shown = list(rows[(number - 1) * page_size : number * page_size])
        next_url = None
        if number * page_size < count:
            query = request.query_params.copy()
            query["page"] = str(number + 1)
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        return Response({
            "simulation": PriceSimulationOutputSerializer(simulation).data,
            "rows": PriceSimulationRowSerializer(shown, many=True).data,
            "rows_count": count, "page": number, "next": next_url,
        })  # fmt: skip
