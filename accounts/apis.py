"""Account APIs: the caller's own account, its API keys, and the staff view of accounts."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_portal.serializer_fields import StrictCharField

from .idempotency import idempotency_key_parameter, idempotent
from .permissions import IsCustomer, IsCustomerBillingAdmin, IsStaffRole
from .selectors import account_get_visible, account_list_visible, api_key_get, api_key_list
from .services import api_key_create, api_key_revoke


class AccountOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    currency = serializers.CharField()
    timezone = serializers.CharField()
    status = serializers.CharField()
    plan = serializers.CharField(source="plan_version.plan.slug")
    plan_version = serializers.IntegerField(source="plan_version.number")


class AccountDetailApi(APIView):
    permission_classes = [IsCustomer]

    @extend_schema(responses=AccountOutputSerializer, summary="The caller's own account")
    def get(self, request):
        # A customer user and an API key both act for exactly one account: theirs.
        return Response(AccountOutputSerializer(request.user.account).data)


class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiKeyListCreateApi(APIView):
    permission_classes = [IsCustomerBillingAdmin]

    class InputSerializer(serializers.Serializer):
        name = StrictCharField(max_length=100)

    @extend_schema(responses=ApiKeyOutputSerializer(many=True), summary="List the account's API keys")
    def get(self, request):
        return Response(ApiKeyOutputSerializer(api_key_list(account=request.user.account), many=True).data)

    @extend_schema(
        request=inline_serializer("ApiKeyCreateInput", {"name": serializers.CharField(max_length=100)}),
        responses={
            201: inline_serializer(
                "ApiKeyCreated",
                {"key": serializers.CharField(help_text="Shown once; only a hash is stored.")}
                | ApiKeyOutputSerializer().get_fields(),
            )
        },
        summary="Create an API key (the key is shown once)",
        parameters=[idempotency_key_parameter()],
    )
    @idempotent(secret_fields=("key",))  # the stored answer never holds the key; a replay re-derives it
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, raw_key = api_key_create(
            account=request.user.account, name=data.validated_data["name"], actor=request.user,
            idempotency_key=request.idempotency_key,
        )  # fmt: skip
        return Response({**ApiKeyOutputSerializer(api_key).data, "key": raw_key}, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    permission_classes = [IsCustomerBillingAdmin]

    @extend_schema(responses=ApiKeyOutputSerializer, summary="One API key of the account")
    def get(self, request, key_id: int):
        return Response(ApiKeyOutputSerializer(api_key_get(account=request.user.account, pk=key_id)).data)


class ApiKeyRevokeApi(APIView):
    permission_classes = [IsCustomerBillingAdmin]

    @extend_schema(request=None, responses=ApiKeyOutputSerializer, summary="Revoke an API key, at once")
    def post(self, request, key_id: int):
        api_key = api_key_get(account=request.user.account, pk=key_id)
        return Response(ApiKeyOutputSerializer(api_key_revoke(api_key=api_key, actor=request.user)).data)


class StaffAccountOutputSerializer(AccountOutputSerializer):
    account_manager = serializers.CharField(source="account_manager.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()


class StaffAccountListApi(APIView):
    permission_classes = [IsStaffRole]

    @extend_schema(responses=StaffAccountOutputSerializer(many=True), summary="Accounts visible to this staff user")
    def get(self, request):
        accounts = account_list_visible(user=request.user)
        return Response(StaffAccountOutputSerializer(accounts, many=True).data)


class StaffAccountDetailApi(APIView):
    permission_classes = [IsStaffRole]

    @extend_schema(responses=StaffAccountOutputSerializer, summary="One account (404 if not assigned to you)")
    def get(self, request, account_id: int):
        return Response(StaffAccountOutputSerializer(account_get_visible(user=request.user, pk=account_id)).data)
