"""Credit APIs: the customer's balance and packs; staff grants."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.idempotency import idempotency_key_parameter, idempotent
from accounts.models import CreditPackOffer
from accounts.permissions import IsCustomer, IsCustomerBillingAdmin, IsStaffRole
from accounts.selectors import account_get_visible
from billing_portal.api_errors import STRIPE_ERRORS
from billing_portal.serializer_fields import StrictCharField, StrictIntegerField

from .conversions import seat_conversion_confirm, seat_conversion_preview
from .purchases import CreditPurchaseInterrupted, credit_pack_purchase
from .selectors import credit_balance, credit_pack_list
from .services import credit_pack_grant

IDEMPOTENCY_KEY = idempotency_key_parameter()


class PackOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source = serializers.CharField()
    granted = serializers.IntegerField()
    remaining = serializers.IntegerField()
    starts_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    status = serializers.CharField()


CREDITS_OUTPUT = inline_serializer(
    "Credits", {"remaining": serializers.IntegerField(), "packs": PackOutputSerializer(many=True)}
)


def _credits(account) -> dict:
    packs = credit_pack_list(account=account)
    return {"remaining": credit_balance(account=account), "packs": PackOutputSerializer(packs, many=True).data}


class CreditsApi(APIView):
    permission_classes = [IsCustomer]

    @extend_schema(summary="Resolutions left and every credit pack of the account", responses=CREDITS_OUTPUT)
    def get(self, request):
        return Response(_credits(request.user.account))


class CreditGrantInputSerializer(serializers.Serializer):
    quantity = StrictIntegerField(min_value=1, max_value=100_000_000)
    source = serializers.ChoiceField(choices=["promotional", "adjustment"], default="promotional")
    reason = StrictCharField(max_length=2000)
    starts_at = serializers.DateTimeField(required=False)
    expires_at = serializers.DateTimeField(required=False)


class StaffCreditGrantApi(APIView):
    """Promotional or adjustment credit, granted by an account manager (their accounts) or an admin."""

    permission_classes = [IsStaffRole]

    @extend_schema(
        summary="Grant promotional credits (audited)",
        request=CreditGrantInputSerializer,
        responses={201: PackOutputSerializer},
        parameters=[IDEMPOTENCY_KEY],
    )
    @idempotent
    def post(self, request, account_id: int):
        account = account_get_visible(user=request.user, pk=account_id)

        data = CreditGrantInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pack = credit_pack_grant(
            account=account, actor=request.user, idempotency_key=request.idempotency_key, **data.validated_data
        )
        return Response(PackOutputSerializer(pack).data, status=status.HTTP_201_CREATED)


class StaffCreditsApi(APIView):
    permission_classes = [IsStaffRole]

    @extend_schema(summary="Credits of one account (404 if not yours)", responses=CREDITS_OUTPUT)
    def get(self, request, account_id: int):
        return Response(_credits(account_get_visible(user=request.user, pk=account_id)))


class PurchaseInputSerializer(serializers.Serializer):
    offer_id = StrictIntegerField(help_text="An offer of the account's plan version.")


class PurchaseOutputSerializer(PackOutputSerializer):
    stripe_invoice_id = serializers.CharField()
    purchase_state = serializers.CharField(
        help_text="pending, invoice_created, item_added, finalized (awaiting payment), paid, void or failed."
    )


def _purchase(request, account):
    data = PurchaseInputSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    offer = CreditPackOffer.objects.filter(pk=data.validated_data["offer_id"], version=account.plan_version).first()
    if offer is None:
        raise serializers.ValidationError({"offer_id": "No such offer in the account's price plan."})
    try:
        pack = credit_pack_purchase(
            account=account, offer=offer, actor=request.user, idempotency_key=request.idempotency_key
        )
    except CreditPurchaseInterrupted as exc:
        # Not the generic Stripe 503: the purchase exists, and the caller must know how not to buy twice.
        if request.idempotency_key:
            how = "Retrying with the same Idempotency-Key continues it (a new key would start a second purchase)."
        else:
            how = (
                "Do not buy again: a new request would start a second purchase. Send an Idempotency-Key with "
                "purchases so that retrying with the same key continues the same one."
            )
        message = (
            f"Stripe could not be reached while invoicing the credit pack ({exc}). The purchase is saved "
            f"(pack {exc.pack.pk}, step '{exc.pack.purchase_state}') and will be completed automatically; nothing "
            f"is charged twice. {how}"
        )
        return Response(
            {"errors": [{"index": None, "field": None, "message": message}]},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "60"},
        )
    return Response(PurchaseOutputSerializer(pack).data, status=status.HTTP_201_CREATED)


class CreditPurchaseApi(APIView):
    permission_classes = [IsCustomerBillingAdmin]

    @extend_schema(
        summary="Buy a credit pack (a Stripe invoice; the pack activates when it is paid)",
        request=PurchaseInputSerializer, responses={201: PurchaseOutputSerializer, **STRIPE_ERRORS},
        parameters=[IDEMPOTENCY_KEY],
    )  # fmt: skip
    @idempotent
    def post(self, request):
        return _purchase(request, request.user.account)


class StaffCreditPurchaseApi(APIView):
    permission_classes = [IsStaffRole]

    @extend_schema(
        summary="Buy a credit pack for an account (staff)", request=PurchaseInputSerializer,
        responses={201: PurchaseOutputSerializer, **STRIPE_ERRORS}, parameters=[IDEMPOTENCY_KEY],
    )  # fmt: skip
    @idempotent
    def post(self, request, account_id: int):
        return _purchase(request, account_get_visible(user=request.user, pk=account_id))


class SeatConversionInputSerializer(serializers.Serializer):
    seats = StrictIntegerField(min_value=1, max_value=100_000)


class SeatConversionPreviewSerializer(serializers.Serializer):
    seats = serializers.IntegerField()
    seats_before = serializers.IntegerField()
    seats_after = serializers.IntegerField()
    remaining_days = serializers.IntegerField()
    term_days = serializers.IntegerField()
    value_minor = serializers.IntegerField()
    credits = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    currency = serializers.CharField()


class SeatConversionOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    seats = serializers.IntegerField()
    credits = serializers.IntegerField()
    value_minor = serializers.IntegerField()
    pack_id = serializers.IntegerField(allow_null=True)


class SeatConversionPreviewApi(APIView):
    permission_classes = [IsStaffRole]

    @extend_schema(
        summary="Preview converting seats into credits (changes nothing)",
        request=SeatConversionInputSerializer, responses={200: SeatConversionPreviewSerializer, **STRIPE_ERRORS},
    )  # fmt: skip
    def post(self, request, account_id: int):
        account = account_get_visible(user=request.user, pk=account_id)
        data = SeatConversionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        preview = seat_conversion_preview(account=account, seats=data.validated_data["seats"])
        return Response(SeatConversionPreviewSerializer(preview).data)


class SeatConversionConfirmApi(APIView):
    permission_classes = [IsStaffRole]

    @extend_schema(
        summary="Convert seats into credits: lower the Stripe seat quantity and grant a pack (audited)",
        request=SeatConversionInputSerializer, responses={201: SeatConversionOutputSerializer, **STRIPE_ERRORS},
        parameters=[IDEMPOTENCY_KEY],
    )  # fmt: skip
    @idempotent
    def post(self, request, account_id: int):
        account = account_get_visible(user=request.user, pk=account_id)
        data = SeatConversionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        conversion = seat_conversion_confirm(
            account=account, seats=data.validated_data["seats"], actor=request.user,
            idempotency_key=request.idempotency_key,
        )  # fmt: skip
        return Response(SeatConversionOutputSerializer(conversion).data, status=status.HTTP_201_CREATED)
