"""Generate ``param_schemas.json`` from stripe-python's request-parameter TypedDicts.

stripe-python's ``stripe.params`` modules are generated from Stripe's OpenAPI spec, so they are an
authoritative list of the parameters each endpoint accepts. This is a development tool: the emulator
itself only reads the generated JSON (standard library only at run time).

Run: ``.venv/bin/python -m stripe_emulator.tools.gen_param_schemas``

Schema format (JSON): ``null`` is a scalar leaf (strings, numbers, lists of scalars); an object maps
parameter names to schemas, with three special keys: ``"*"`` (free-form keys, e.g. metadata),
``"[]"`` (a list whose elements follow the schema) and ``"!"`` (names of required keys).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import typing
from pathlib import Path

import typing_extensions

OUT = Path(__file__).resolve().parent.parent / "param_schemas.json"

# endpoint key -> (module under stripe.params, class name)
ENDPOINTS = {
    "account.retrieve": ("_account_retrieve_current_params", "AccountRetrieveCurrentParams"),
    "customer.create": ("_customer_create_params", "CustomerCreateParams"),
    "customer.retrieve": ("_customer_retrieve_params", "CustomerRetrieveParams"),
    "customer.update": ("_customer_modify_params", "CustomerModifyParams"),
    "customer.list": ("_customer_list_params", "CustomerListParams"),
    "customer.delete": ("_customer_delete_params", "CustomerDeleteParams"),
    "product.create": ("_product_create_params", "ProductCreateParams"),
    "product.retrieve": ("_product_retrieve_params", "ProductRetrieveParams"),
    "product.update": ("_product_modify_params", "ProductModifyParams"),
    "product.list": ("_product_list_params", "ProductListParams"),
    "product.delete": ("_product_delete_params", "ProductDeleteParams"),
    "product_feature.list": ("_product_feature_list_params", "ProductFeatureListParams"),
    "price.create": ("_price_create_params", "PriceCreateParams"),
    "price.retrieve": ("_price_retrieve_params", "PriceRetrieveParams"),
    "price.update": ("_price_modify_params", "PriceModifyParams"),
    "price.list": ("_price_list_params", "PriceListParams"),
    "subscription.create": ("_subscription_create_params", "SubscriptionCreateParams"),
    "subscription.retrieve": ("_subscription_retrieve_params", "SubscriptionRetrieveParams"),
    "subscription.update": ("_subscription_modify_params", "SubscriptionModifyParams"),
    "subscription.list": ("_subscription_list_params", "SubscriptionListParams"),
    "subscription.cancel": ("_subscription_cancel_params", "SubscriptionCancelParams"),
    "subscription_item.create": ("_subscription_item_create_params", "SubscriptionItemCreateParams"),
    "subscription_item.retrieve": ("_subscription_item_retrieve_params", "SubscriptionItemRetrieveParams"),
    "subscription_item.update": ("_subscription_item_modify_params", "SubscriptionItemModifyParams"),
    "subscription_item.list": ("_subscription_item_list_params", "SubscriptionItemListParams"),
    "subscription_item.delete": ("_subscription_item_delete_params", "SubscriptionItemDeleteParams"),
    "invoiceitem.create": ("_invoice_item_create_params", "InvoiceItemCreateParams"),
    "invoiceitem.retrieve": ("_invoice_item_retrieve_params", "InvoiceItemRetrieveParams"),
    "invoiceitem.list": ("_invoice_item_list_params", "InvoiceItemListParams"),
    "invoiceitem.delete": ("_invoice_item_delete_params", "InvoiceItemDeleteParams"),
    "invoice.create": ("_invoice_create_params", "InvoiceCreateParams"),
    "invoice.retrieve": ("_invoice_retrieve_params", "InvoiceRetrieveParams"),
    "invoice.update": ("_invoice_modify_params", "InvoiceModifyParams"),
    "invoice.list": ("_invoice_list_params", "InvoiceListParams"),
    "invoice.delete": ("_invoice_delete_params", "InvoiceDeleteParams"),
    "invoice.finalize": ("_invoice_finalize_invoice_params", "InvoiceFinalizeInvoiceParams"),
    "invoice.pay": ("_invoice_pay_params", "InvoicePayParams"),
    "invoice.void": ("_invoice_void_invoice_params", "InvoiceVoidInvoiceParams"),
    "invoice.list_lines": ("_invoice_list_lines_params", "InvoiceListLinesParams"),
    "invoice.create_preview": ("_invoice_create_preview_params", "InvoiceCreatePreviewParams"),
    "billing.meter.create": ("billing._meter_create_params", "MeterCreateParams"),
    "billing.meter.retrieve": ("billing._meter_retrieve_params", "MeterRetrieveParams"),
    "billing.meter.update": ("billing._meter_modify_params", "MeterModifyParams"),
    "billing.meter.list": ("billing._meter_list_params", "MeterListParams"),
    "billing.meter.deactivate": ("billing._meter_deactivate_params", "MeterDeactivateParams"),
    "billing.meter.reactivate": ("billing._meter_reactivate_params", "MeterReactivateParams"),
    "billing.meter_event.create": ("billing._meter_event_create_params", "MeterEventCreateParams"),
    "billing.meter_event_adjustment.create": (
        "billing._meter_event_adjustment_create_params",
        "MeterEventAdjustmentCreateParams",
    ),
    "billing.meter_event_summary.list": (
        "billing._meter_list_event_summaries_params",
        "MeterListEventSummariesParams",
    ),
    "webhook_endpoint.create": ("_webhook_endpoint_create_params", "WebhookEndpointCreateParams"),
    "webhook_endpoint.retrieve": ("_webhook_endpoint_retrieve_params", "WebhookEndpointRetrieveParams"),
    "webhook_endpoint.update": ("_webhook_endpoint_modify_params", "WebhookEndpointModifyParams"),
    "webhook_endpoint.list": ("_webhook_endpoint_list_params", "WebhookEndpointListParams"),
    "webhook_endpoint.delete": ("_webhook_endpoint_delete_params", "WebhookEndpointDeleteParams"),
    "event.retrieve": ("_event_retrieve_params", "EventRetrieveParams"),
    "event.list": ("_event_list_params", "EventListParams"),
}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _typed_dicts(module) -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type) and typing_extensions.is_typeddict(obj)
    }


def _annotation_text(ann) -> str:
    if isinstance(ann, typing.ForwardRef):
        return ann.__forward_arg__
    return ann if isinstance(ann, str) else repr(ann)


def _schema_for(ann, classes: dict[str, type], depth: int):
    text = _annotation_text(ann)
    text = re.sub(r"ForwardRef\(|['\")]|typing(_extensions)?\.", "", text).strip()
    # Unwrap NotRequired[...] / Required[...]
    text = re.sub(r"^(NotRequired|Required)\[(.*)\]$", r"\2", text)
    names = [n for n in _IDENT.findall(text) if n in classes]
    if not names or depth > 8:
        if re.search(r"Dict\[str,", text):
            return {"*": None}
        return None
    inner = _class_schema(classes[names[0]], classes, depth + 1)
    before = text.split(names[0])[0]
    if before.endswith("List["):
        return {"[]": inner}
    if before.replace(" ", "").endswith("Dict[str,"):
        return {"*": inner}
    return inner


def _class_schema(cls: type, classes: dict[str, type], depth: int, skip: frozenset = frozenset()):
    out: dict = {}
    own = {}
    for base in reversed(cls.__mro__):
        own.update(getattr(base, "__annotations__", {}))
    for key, ann in own.items():
        if key in skip:
            continue
        out[key] = _schema_for(ann, classes, depth)
    required = sorted(k for k in getattr(cls, "__required_keys__", ()) if k not in skip)
    if required:
        out["!"] = required
    return out


def main() -> int:
    from stripe._request_options import RequestOptions

    skip = frozenset(getattr(RequestOptions, "__annotations__", {}))
    result = {}
    for endpoint, (modname, clsname) in ENDPOINTS.items():
        module = importlib.import_module(f"stripe.params.{modname}")
        classes = _typed_dicts(module)
        result[endpoint] = _class_schema(classes[clsname], classes, 0, skip)
    OUT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(result)} endpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
