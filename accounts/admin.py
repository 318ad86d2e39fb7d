"""Django admin: every model. Writes go through services (audit entries included); the audit log and
published plan versions are read-only; account managers see only the accounts assigned to them."""

from __future__ import annotations

import json
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ValidationError
from django.db import transaction

from billing_portal import admin_djstripe  # noqa: F401 - dj-stripe's mirrored objects made read-only
from billing_portal.admin_display import (
    count_column,
    decimal_plain,
    fields_formatted,
    money_column,
    unit_price_column,
)

from .forms import AdminSignInForm
from .models import (
    Account,
    ApiKey,
    AuditLogEntry,
    BillingMeter,
    BillingPeriod,
    CreditPackOffer,
    IdempotencyKey,
    PlanMigration,
    PricePlan,
    PricePlanVersion,
    PriceTier,
    Role,
    User,
)
from .pricing import plan_version_spec_parse
from .selectors import account_list_visible
from .services import (
    api_key_revoke,
    audit_log_write,
    price_plan_version_create,
    price_plan_version_publish,
    price_plan_version_retire,
    price_plan_version_snapshot,
    price_plan_version_update,
)


class ReadOnlyAdminMixin:
    """Ledgers and logs: visible, never editable from the admin."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdminMixin:
    """Plain admin edits and deletes still leave an audit entry, in the admin's own transaction.
    Secrets (password fields) are never written to the log."""

    @staticmethod
    def _audit_value(name, value):
        return "(hidden)" if "password" in name else str(value)

    def save_model(self, request, obj, form, change):
        before = {name: form.initial.get(name) for name in form.changed_data} if change else None
        super().save_model(request, obj, form, change)
        after = {name: form.cleaned_data.get(name) for name in form.changed_data}
        audit_log_write(
            actor=request.user,
            action=f"{obj._meta.model_name}.{'change' if change else 'add'}_via_admin",
            obj=obj,
            account=obj if isinstance(obj, Account) else getattr(obj, "account", None),
            before={k: self._audit_value(k, v) for k, v in before.items()} if before else None,
            after={k: self._audit_value(k, v) for k, v in after.items()},
        )

    def delete_model(self, request, obj):
        self._audit_delete(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self._audit_delete(request, obj)
        super().delete_queryset(request, queryset)

    def _audit_delete(self, request, obj):
        account = obj if isinstance(obj, Account) else getattr(obj, "account", None)
        audit_log_write(
            actor=request.user, action=f"{obj._meta.model_name}.delete_via_admin", obj=obj,
            account=None if isinstance(obj, Account) else account, before={"repr": str(obj)}, after=None,
        )  # fmt: skip


@admin.register(Account)
class AccountAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "status", "plan_version", "account_manager", "currency", "timezone"]
    list_filter = ["status", "plan_version__plan"]
    search_fields = ["name", "slug", "billing_email"]
    autocomplete_fields = ["account_manager"]
    # Plan, currency and status change Stripe too: they go through services, never a plain form.
    readonly_fields = ["slug", "currency", "status", "plan_version", "created_at"]

    def has_add_permission(self, request):
        return False  # accounts are provisioned with Stripe: `create_account`

    def has_delete_permission(self, request, obj=None):
        return False  # closing an account must also end its Stripe subscription

    def get_queryset(self, request):
        return account_list_visible(user=request.user)

    def has_change_permission(self, request, obj=None):
        return request.user.role == Role.ADMIN and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        # A new timezone moves resolutions to other local dates: the resolutions service changes it and
        # rebuilds the daily usage in the admin's transaction. The admin is an entry point, so it may call
        # into resolutions (lazily: the accounts app itself never imports it).
        if change and "timezone" in form.changed_data:
            from resolutions.services.rollups import account_timezone_change

            account_timezone_change(account=obj, timezone=form.cleaned_data["timezone"], actor=request.user)
        super().save_model(request, obj, form, change)


class CustomerRoleFormMixin:
    """A customer user has an account and a role; a staff user has neither (the database checks it too,
    but a form should say it in words instead of failing)."""

    def clean(self):
        cleaned = super().clean()
        account, role = cleaned.get("account"), cleaned.get("customer_role")
        is_staff = cleaned.get("is_staff", getattr(self.instance, "is_staff", False))
        if account and not role:
            self.add_error("customer_role", "A customer user needs a role: viewer or billing admin.")
        if role and not account:
            self.add_error("account", "A customer role needs the customer's account.")
        if account and is_staff:
            self.add_error("account", "Staff users do not belong to a customer account.")
        return cleaned


class UserChangeForm(CustomerRoleFormMixin, DjangoUserAdmin.form):
    pass


class UserCreationForm(CustomerRoleFormMixin, DjangoUserAdmin.add_form):
    pass


@admin.register(User)
class UserAdmin(AuditedAdminMixin, DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    list_display = ["username", "email", "account", "customer_role", "is_staff", "is_active"]
    list_filter = ["is_staff", "customer_role", "groups"]
    fieldsets = DjangoUserAdmin.fieldsets + (("Customer", {"fields": ["account", "customer_role"]}),)
    add_fieldsets = DjangoUserAdmin.add_fieldsets + (("Customer", {"fields": ["account", "customer_role"]}),)

    def get_queryset(self, request):
        users = super().get_queryset(request).select_related("account")
        if request.user.role == Role.ADMIN:
            return users
        return users.filter(account__in=account_list_visible(user=request.user))


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "account", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "account__name"]
    readonly_fields = [f.name for f in ApiKey._meta.fields]
    actions = ["revoke"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(account__in=account_list_visible(user=request.user))

    def has_add_permission(self, request):
        return False  # keys are created where they can be shown once: the portal or the API

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key, actor=request.user, reason="revoked in admin")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "object_repr", "account", "reason"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_label", "action", "object_repr", "reason"]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        entries = super().get_queryset(request)
        if request.user.role == Role.ADMIN:
            return entries
        return entries.filter(account__in=account_list_visible(user=request.user))


@admin.register(PlanMigration)
class PlanMigrationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: moves are scheduled, cancelled and retried on /staff/pricing/migrations/ (audited)."""

    list_display = ["account", "from_version", "to_version", "effective_at", "status", "applied_at", "last_error"]
    list_filter = ["status"]
    search_fields = ["account__name", "account__slug"]
    list_select_related = ["account", "from_version__plan", "to_version__plan"]


@admin.display(description="Up to")
def tier_up_to(tier: PriceTier):
    return "and beyond (∞)" if tier.up_to is None else f"{tier.up_to:,} resolutions"


class PriceTierInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PriceTier
    fields = [
        "position", tier_up_to, unit_price_column("unit_amount_decimal", "Price per resolution"),
        money_column("flat_amount", "Flat amount"),
    ]  # fmt: skip
    readonly_fields = fields
    extra = 0


class CreditPackOfferInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = CreditPackOffer
    fields = [
        "name", count_column("resolutions", "Credits", unit="credit"),
        count_column("validity_days", "Valid for", unit="day"),
        unit_price_column("unit_amount_decimal", "Price per resolution"),
        money_column("amount_minor", "Pack price", sortable=False),
    ]  # fmt: skip
    readonly_fields = fields
    extra = 0


PRICE_TERMS_FIELDS = [
    "currency", "unit_amount_decimal", "tiers_mode", "inactivity_window", "seat_unit_amount",
    "seat_conversion_unit_amount_decimal", "effective_from",
]  # fmt: skip


class PricePlanVersionForm(forms.ModelForm):
    """One form for a draft's terms; tiers and offers as JSON lists, validated by the same parser the
    services and APIs use, so the admin cannot store a plan the rest of the portal would refuse."""

    tiers_json = forms.CharField(
        label="Tiers", required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text='e.g. [{"up_to": 1000, "unit_amount_decimal": "99"}, {"up_to": "inf", "unit_amount_decimal": "89"}]',
    )  # fmt: skip
    offers_json = forms.CharField(
        label="Credit pack offers", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text=(
            'e.g. [{"name": "Annual 10k", "resolutions": 10000, "validity_days": 365, '
            '"unit_amount_decimal": "90"}]'
        ),
    )  # fmt: skip

    class Meta:
        model = PricePlanVersion
        fields = ["plan", *PRICE_TERMS_FIELDS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("unit_amount_decimal", "seat_conversion_unit_amount_decimal"):
            if isinstance(self.initial.get(name), Decimal):  # "90", not the stored "90.000000000000"
                self.initial[name] = decimal_plain(self.initial[name])
        if self.instance.pk and "plan" in self.fields:
            snapshot = price_plan_version_snapshot(self.instance)
            self.fields["plan"].disabled = True
            self.initial["tiers_json"] = json.dumps(snapshot["tiers"], default=str) if snapshot["tiers"] else ""
            self.initial["offers_json"] = json.dumps(snapshot["offers"], default=str)

    def _json_list(self, name):
        raw = self.cleaned_data.get(name) or ""
        if not raw.strip():
            return []
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError({name: f"Not valid JSON: {exc.msg} (line {exc.lineno})."}) from None
        return value

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        raw = {name: cleaned.get(name) for name in PRICE_TERMS_FIELDS}
        raw["tiers"] = self._json_list("tiers_json")
        raw["offers"] = self._json_list("offers_json")
        try:
            self.spec = plan_version_spec_parse(raw)
        except ValidationError as exc:
            for field, messages_ in exc.message_dict.items():
                target = {"tiers": "tiers_json", "offers": "offers_json", "__all__": None}.get(
                    field.split("[")[0].split(".")[0], field
                )
                if target not in self.fields:
                    target = None
                self.add_error(
                    target,
                    [f"{field}: {m}" if target in (None, "tiers_json", "offers_json") else m for m in messages_],
                )
        return cleaned


@admin.display(description="Price per resolution", ordering="unit_amount_decimal")
def version_price(version: PricePlanVersion):
    if version.tiers_mode:
        return f"{version.get_tiers_mode_display()} tiers (see the version)"
    return unit_price_column("unit_amount_decimal", "")(version)


seat_price = money_column("seat_unit_amount", "Seat price (per seat, per month)")
FROZEN_VERSION_FIELDS = fields_formatted(
    PricePlanVersion,
    {
        "unit_amount_decimal": version_price,
        "seat_unit_amount": seat_price,
        "seat_conversion_unit_amount_decimal": unit_price_column(
            "seat_conversion_unit_amount_decimal", "Seat spend per credit", per="credit"
        ),
    },
)


@admin.register(PricePlanVersion)
class PricePlanVersionAdmin(admin.ModelAdmin):
    form = PricePlanVersionForm
    list_display = ["plan", "number", "status", "currency", version_price, seat_price, "effective_from"]
    list_filter = ["status", "plan"]
    inlines = [PriceTierInline, CreditPackOfferInline]
    actions = ["publish", "retire", "sync_to_stripe"]

    def get_inlines(self, request, obj):
        # A draft's tiers and offers are edited as JSON in the form; inlines only display frozen versions.
        return self.inlines if obj is not None and not obj.is_editable else []

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not obj.is_editable:
            return FROZEN_VERSION_FIELDS
        return ["number", "status", "published_at", "retired_at", "created_at"]

    def get_fields(self, request, obj=None):
        if obj is not None and not obj.is_editable:
            return FROZEN_VERSION_FIELDS
        return [*PricePlanVersionForm.Meta.fields, "tiers_json", "offers_json"]

    def has_change_permission(self, request, obj=None):
        # Published and retired versions are immutable: the admin shows them read-only.
        if obj is not None and not obj.is_editable:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            saved = price_plan_version_update(version=obj, spec=form.spec, actor=request.user)
        else:
            saved = price_plan_version_create(plan=form.cleaned_data["plan"], spec=form.spec, actor=request.user)
        obj.pk, obj.number = saved.pk, saved.number

    @admin.action(description="Publish the selected drafts (they become immutable)", permissions=["change"])
    def publish(self, request, queryset):
        self._each(request, queryset, price_plan_version_publish, "Published")

    @admin.action(description="Retire the selected published versions", permissions=["change"])
    def retire(self, request, queryset):
        self._each(request, queryset, price_plan_version_retire, "Retired")

    @admin.action(description="Create missing Stripe Prices now (published versions)", permissions=["view"])
    def sync_to_stripe(self, request, queryset):
        from .tasks import price_plan_version_stripe_sync_task

        versions = queryset.exclude(status=PricePlanVersion.Status.DRAFT)
        for version in versions:
            price_plan_version_stripe_sync_task.delay(version.pk)
        self.message_user(request, f"Queued the Stripe sync of {versions.count()} version(s).", messages.SUCCESS)

    def _each(self, request, queryset, service, verb):
        for version in queryset:
            try:
                with transaction.atomic():
                    service(version=version, actor=request.user, reason=f"{verb.lower()} in admin")
                self.message_user(request, f"{verb} {version}.", messages.SUCCESS)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)


@admin.register(BillingMeter)
class BillingMeterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["event_name", "stripe_id", "status", "created_at"]
    readonly_fields = [f.name for f in BillingMeter._meta.fields]


@admin.register(BillingPeriod)
class BillingPeriodAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Stripe's periods, as recorded from the subscription: read-only (Stripe is the source)."""

    list_display = ["account", "start", "end", "stripe_subscription_id", "recorded_at"]
    list_filter = ["account"]
    readonly_fields = [f.name for f in BillingPeriod._meta.fields]


class PricePlanVersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PricePlanVersion
    fields = ["number", "status", "currency", version_price, seat_price, "effective_from"]
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(PricePlan)
class PricePlanAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [PricePlanVersionInline]

    def get_readonly_fields(self, request, obj=None):
        # Stripe lookup keys are made from the slug: it cannot change once a version exists.
        return ["slug", "created_at"] if obj is not None and obj.versions.exists() else ["created_at"]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "scope", "status_code"]
    search_fields = ["scope"]


admin.site.site_header = "Resolution Billing — admin"
admin.site.login_form = AdminSignInForm  # throttled like the portal's login (accounts/services/login_throttle.py)
admin.site.site_title = "Resolution Billing admin"
