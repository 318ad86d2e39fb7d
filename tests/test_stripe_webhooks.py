"""Stripe webhooks through dj-stripe: signature first, duplicates harmless, order never rolls state back."""

import json
import time

import pytest
import stripe  # tests sign payloads the way Stripe does
from djstripe.models import Customer, Event, WebhookEventTrigger

from accounts.models import BillingMeter
from accounts.services.stripe_catalog import billing_meter_ensure
from accounts.services.stripe_webhooks import stripe_webhook_endpoint_ensure
from billing_portal import stripe_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(stripe_emulator):
    return stripe_webhook_endpoint_ensure(base_url="http://testserver")


def sign(payload: str, secret: str, at: int | None = None) -> str:
    at = at or int(time.time())
    return f"t={at},v1={stripe.WebhookSignature._compute_signature(f'{at}.{payload}', secret)}"


def deliver(client, endpoint, event: dict, *, signature: str | None = "sign"):
    payload = json.dumps(event)
    headers = {}
    if signature == "sign":
        headers["HTTP_STRIPE_SIGNATURE"] = sign(payload, endpoint.secret)
    elif signature is not None:
        headers["HTTP_STRIPE_SIGNATURE"] = signature
    return client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json", **headers
    )


def stripe_events(type_):
    events = stripe_client.call(
        "events", lambda c, o: c.v1.events.list(params={"type": type_, "limit": 100}), idempotency_key=None
    )
    return [e.to_dict() for e in events.data]  # newest first


def new_customer(name="Umbrella"):
    return stripe_client.call(
        "c", lambda c, o: c.v1.customers.create(params={"name": name}, options=o), idempotency_key=f"t:{name}"
    )


def customer_mirrored_wait(emulator, customer_id: str) -> None:
    """Until the emulator has delivered its webhooks and the live server has mirrored the customer (or 10 s)."""
    assert emulator.webhooks.wait_idle(timeout=20)
    deadline = time.monotonic() + 10
    while not Customer.objects.filter(id=customer_id).exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_endpoint_is_registered_in_stripe_with_its_secret(endpoint):
    remote = stripe_client.call("we", lambda c, o: c.v1.webhook_endpoints.retrieve(endpoint.id), idempotency_key=None)
    assert remote.url == f"http://testserver/stripe/webhook/{endpoint.djstripe_uuid}/"
    assert "invoice.*" in remote.enabled_events and endpoint.secret.startswith("whsec_")
    assert stripe_webhook_endpoint_ensure(base_url="http://testserver").pk == endpoint.pk  # idempotent


def test_a_signed_event_is_stored_and_synced(client, endpoint):
    customer = new_customer()
    (event,) = stripe_events("customer.created")
    response = deliver(client, endpoint, event)
    assert response.status_code == 200
    assert Event.objects.filter(id=event["id"]).exists()
    assert Customer.objects.get(id=customer.id).name == "Umbrella"


@pytest.mark.parametrize("signature", [None, "t=1,v1=deadbeef", "garbage"])
def test_missing_or_wrong_signature_gets_400_and_stores_nothing(client, endpoint, signature):
    new_customer()
    (event,) = stripe_events("customer.created")
    response = deliver(client, endpoint, event, signature=signature)
    assert response.status_code == 400
    assert WebhookEventTrigger.objects.count() == 0 and Event.objects.count() == 0 and Customer.objects.count() == 0


@pytest.mark.parametrize("seconds_off", [+301, +86400 * 90, -301])
def test_a_signature_dated_outside_the_tolerance_either_way_gets_400_and_stores_nothing(client, endpoint, seconds_off):
    # correctly signed with the endpoint's secret, only dated too far ahead (a replay kept for later) or behind
    assert endpoint.djstripe_tolerance == 300
    new_customer()
    (event,) = stripe_events("customer.created")
    response = deliver(
        client, endpoint, event, signature=sign(json.dumps(event), endpoint.secret, int(time.time()) + seconds_off)
    )
    assert response.status_code == 400
    assert WebhookEventTrigger.objects.count() == 0 and Event.objects.count() == 0 and Customer.objects.count() == 0


@pytest.mark.parametrize("seconds_off", [+240, -240])
def test_a_signature_dated_within_the_tolerance_is_accepted(client, endpoint, seconds_off):
    customer = new_customer()
    (event,) = stripe_events("customer.created")
    response = deliver(
        client, endpoint, event, signature=sign(json.dumps(event), endpoint.secret, int(time.time()) + seconds_off)
    )
    assert response.status_code == 200  # clocks a little apart (either way) are no reason to lose an event
    assert Customer.objects.filter(id=customer.id).exists()


def test_a_signature_made_with_another_secret_is_refused(client, endpoint):
    new_customer()
    (event,) = stripe_events("customer.created")
    payload = json.dumps(event)
    response = client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/", data=payload, content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(payload, "whsec_someone_else"),
    )  # fmt: skip
    assert response.status_code == 400 and Event.objects.count() == 0


def test_the_same_event_twice_is_harmless(client, endpoint):
    new_customer()
    (event,) = stripe_events("customer.created")
    assert deliver(client, endpoint, event).status_code == 200
    assert deliver(client, endpoint, event).status_code == 200
    assert Event.objects.filter(id=event["id"]).count() == 1 and Customer.objects.count() == 1


def test_events_out_of_order_do_not_roll_state_back(client, endpoint):
    customer = new_customer()
    for name in ["Umbrella Two", "Umbrella Three"]:
        stripe_client.call(
            "u", lambda c, o, n=name: c.v1.customers.update(customer.id, params={"name": n}, options=o),
            idempotency_key=f"t:update:{name}",
        )  # fmt: skip
    newest, older = stripe_events("customer.updated")
    assert newest["data"]["object"]["name"] == "Umbrella Three"
    deliver(client, endpoint, newest)
    deliver(client, endpoint, older)  # late delivery of the earlier change
    assert Customer.objects.get(id=customer.id).name == "Umbrella Three"


def meter_event(meter_stripe_id, type_, status, created):
    return {
        "id": f"evt_meter_{type_}_{created}", "object": "event", "type": type_, "created": created,
        "livemode": False, "api_version": "2026-08-26.dahlia", "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": {"id": meter_stripe_id, "object": "billing.meter", "status": status,
                            "event_name": "fin_resolution"}},
    }  # fmt: skip


def test_billing_meter_events_arrive_through_post_process_and_newest_wins(client, endpoint):
    meter = billing_meter_ensure()
    deliver(client, endpoint, meter_event(meter.stripe_id, "billing.meter.deactivated", "inactive", 2000))
    assert BillingMeter.objects.get().status == "inactive"
    deliver(client, endpoint, meter_event(meter.stripe_id, "billing.meter.updated", "active", 1000))  # older
    assert BillingMeter.objects.get().status == "inactive"
    deliver(client, endpoint, meter_event(meter.stripe_id, "billing.meter.reactivated", "active", 3000))
    assert BillingMeter.objects.get().status == "active"


def test_meter_error_reports_are_kept_for_admins(client, endpoint):
    meter = billing_meter_ensure()
    event = meter_event(meter.stripe_id, "billing.meter.error_report_triggered", None, 5000)
    event["data"]["object"] = {
        "object": "billing.meter_event_summary_error_report", "meter": meter.stripe_id,
        "reason": {"error_count": 3, "error_types": [{"code": "meter_event_customer_not_found"}]},
    }  # fmt: skip
    assert deliver(client, endpoint, event).status_code == 200
    report = BillingMeter.objects.get().last_error_report
    assert report["reason"]["error_count"] == 3


@pytest.mark.django_db(transaction=True)
def test_emulator_delivers_signed_webhooks_over_http_even_duplicated(stripe_emulator, live_server):
    stripe_webhook_endpoint_ensure(base_url=live_server.url)
    stripe_emulator.webhooks.configure({"duplicate": True})
    customer = new_customer("Wayne Enterprises")
    customer_mirrored_wait(stripe_emulator, customer.id)
    assert Customer.objects.get(id=customer.id).name == "Wayne Enterprises"
    created = Event.objects.filter(type="customer.created")
    assert created.count() == 1
    deliveries = [d for d in stripe_emulator.webhooks.public_log() if d["event"] == created.get().id]
    assert len(deliveries) == 2 and all(d["status"] == 200 for d in deliveries)


@pytest.mark.django_db(transaction=True)
def test_the_emulator_signs_with_the_wall_time_while_its_clock_is_months_ahead(stripe_emulator, live_server):
    # Tests move the emulator's clock (like a Stripe test clock); its webhooks, like Stripe's, are still signed
    # with the real time, so the portal's check against time.time() accepts them.
    stripe_webhook_endpoint_ensure(base_url=live_server.url)
    stripe_emulator.set_time(int(time.time()) + 120 * 86400)
    customer = new_customer("Stark Industries")
    customer_mirrored_wait(stripe_emulator, customer.id)
    assert Customer.objects.get(id=customer.id).name == "Stark Industries"
    deliveries = [d for d in stripe_emulator.webhooks.public_log() if d["event"].startswith("evt_")]
    assert deliveries and all(d["status"] == 200 for d in deliveries)
