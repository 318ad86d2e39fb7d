"""Staff JSON API for plan migrations (admins): list, schedule (with `Idempotency-Key`), cancel, retry. The
rules are in services/plan_migrations.py."""

from __future__ import annotations

import hashlib
import uuid

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_portal.api_errors import ERRORS
from billing_portal.serializer_fields import StrictCharField, StrictIntegerField

from .idempotency import idempotency_key_parameter, idempotent
from .models import Account, PlanMigration
from .permissions import IsAdminRole
from .selectors import price_plan_version_given
from .services.plan_migrations import plan_migration_cancel, plan_migration_retry, plan_migrations_schedule

IDEMPOTENCY_KEY = idempotency_key_parameter()
MAX_ACCOUNTS = 1000
LIST_LIMIT = 500


class PlanMigrationOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    account_id = serializers.IntegerField()
    account_name = serializers.CharField(source="account.name")
    from_version_id = serializers.IntegerField()
    to_version_id = serializers.IntegerField()
    effective_at = serializers.DateTimeField()
    status = serializers.ChoiceField(choices=PlanMigration.Status.choices)
    last_error = serializers.CharField()
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()
    applied_at = serializers.DateTimeField(allow_null=True)
    cancelled_at = serializers.DateTimeField(allow_null=True)


class ScheduleInputSerializer(serializers.Serializer):
    to_version_id = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    account_ids = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=2**31 - 1), required=False, min_length=1,
        max_length=MAX_ACCOUNTS, help_text="The accounts to move (1 to 1,000); or give from_version_id instead.",
    )  # fmt: skip
    from_version_id = StrictIntegerField(
        min_value=1, max_value=2**31 - 1, required=False, help_text="Move every account now on this version."
    )
    not_before = serializers.DateTimeField(
        required=False, help_text="The first billing-period start at or after this instant (default: the next one)."
    )
    reason = StrictCharField(required=False, allow_blank=True, max_length=500, default="")

    def validate(self, data):
        if ("account_ids" in data) == ("from_version_id" in data):
            raise serializers.ValidationError("Give account_ids or from_version_id (one of them).")
        return data


SCHEDULE_OUTPUT = inline_serializer(
    "PlanMigrationSchedule",
    {
        "scheduled": PlanMigrationOutputSerializer(many=True),
        "skipped": inline_serializer(
            "PlanMigrationSkipped",
            {"account_id": serializers.IntegerField(), "reason": serializers.CharField()},
            many=True,
        ),  # fmt: skip
    },
)


def _batch_key(request) -> str:
    """The schedule's key: the client's Idempotency-Key, hashed with the admin who sent it (two admins' keys, or
    two long keys sharing a prefix, never name the same schedule); without one, each POST is its own."""
    if not request.idempotency_key:
        return uuid.uuid4().hex
    return hashlib.sha256(f"api:{request.user.pk}:{request.idempotency_key}".encode()).hexdigest()[:64]


class PlanMigrationListApi(APIView):
    permission_classes = [IsAdminRole]

    @extend_schema(
        summary="Plan migrations, open ones first (at most 500)",
        parameters=[
            OpenApiParameter("status", str, enum=PlanMigration.Status.values, required=False),
            OpenApiParameter("account_id", int, required=False),
        ],
        responses=PlanMigrationOutputSerializer(many=True),
    )
    def get(self, request):
        moves = PlanMigration.objects.select_related("account").order_by("-effective_at", "-pk")
        # A parameter given empty is refused like any other value outside the schema (it is not "no filter").
        status_filter = request.query_params.get("status")
        if status_filter is not None:
            if status_filter not in PlanMigration.Status.values:
                raise ValidationError({"status": f"status is one of {', '.join(PlanMigration.Status.values)}."})
            moves = moves.filter(status=status_filter)
        account_id = request.query_params.get("account_id")
        if account_id is not None:
            if not (account_id.isascii() and account_id.isdecimal() and len(account_id) < 12):
                raise ValidationError({"account_id": "account_id is a whole number."})
            moves = moves.filter(account_id=int(account_id))
        return Response(PlanMigrationOutputSerializer(moves[:LIST_LIMIT], many=True).data)

    @extend_schema(
        summary="Schedule accounts to move to a published version at a billing-period start (audited)",
        request=ScheduleInputSerializer,
        responses={201: SCHEDULE_OUTPUT},
        parameters=[IDEMPOTENCY_KEY],
    )
    @idempotent
    def post(self, request):
        data = ScheduleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        kwargs = {}
        if "account_ids" in values:
            ids = set(values["account_ids"])
            accounts = list(Account.objects.filter(pk__in=ids))
            missing = sorted(ids - {a.pk for a in accounts})
            if missing:
                raise ValidationError({"account_ids": f"No account has the id {', '.join(map(str, missing[:10]))}."})
            kwargs["accounts"] = accounts
        else:
            kwargs["from_version"] = price_plan_version_given(values["from_version_id"], "from_version_id")
        result = plan_migrations_schedule(
            to_version=price_plan_version_given(values["to_version_id"], "to_version_id"), actor=request.user,
            # The client's key names the batch (a retry is one schedule); without one, each POST is its own.
            batch_key=_batch_key(request), not_before=values.get("not_before"),
            reason=values.get("reason", ""), **kwargs,
        )  # fmt: skip
        body = {
            "scheduled": PlanMigrationOutputSerializer(result.scheduled, many=True).data,
            "skipped": [{"account_id": a.pk, "reason": why} for a, why in result.skipped],
        }
        return Response(body, status=status.HTTP_201_CREATED)


class _MigrationActionApi(APIView):
    permission_classes = [IsAdminRole]
    service = None

    def post(self, request, migration_id: int):
        migration = get_object_or_404(PlanMigration, pk=migration_id)
        try:
            moved = type(self).service(migration=migration, actor=request.user)
        except ValidationError as refused:  # the move's state does not allow it: a conflict, not bad input
            message = " ".join(refused.messages)
            return Response({"errors": [{"index": None, "field": None, "message": message}]}, status=409)
        return Response(PlanMigrationOutputSerializer(moved).data)


class PlanMigrationCancelApi(_MigrationActionApi):
    service = staticmethod(plan_migration_cancel)

    @extend_schema(summary="Cancel a scheduled move (until 15 minutes before it takes effect)", request=None,
                   responses={200: PlanMigrationOutputSerializer, 409: ERRORS})  # fmt: skip
    def post(self, request, migration_id: int):
        return super().post(request, migration_id)


class PlanMigrationRetryApi(_MigrationActionApi):
    service = staticmethod(plan_migration_retry)

    @extend_schema(summary="Send a move Stripe refused again", request=None,
                   responses={200: PlanMigrationOutputSerializer, 409: ERRORS})  # fmt: skip
    def post(self, request, migration_id: int):
        return super().post(request, migration_id)
