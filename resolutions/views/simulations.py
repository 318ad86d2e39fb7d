"""Admin pages for price simulations (issue 12, DESIGN §3.2): the simulations kept, a form that starts one
(the form's key making a double submit one simulation), and its result: progress while the task runs
(htmx polling that stops when it is done), then the totals, the accounts largest movers first and a chart
of the largest movers. The figures are computed by resolutions/services/simulation.py; these pages only
call it and read its rows."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect

from accounts.models import PricePlanVersion
from accounts.pages import (
    IdempotentForm,
    VersionChoice,
    admin_page,
    form_errors_apply,
    page_number,
    refused_status,
    render_page,
)

from ..models import PriceSimulation
from ..services.simulation import (
    DEFAULT_PERIODS,
    MAX_PERIODS,
    MIN_PERIODS,
    price_simulation_rows,
    price_simulation_start,
    simulation_terms,
)

PAGE_SIZE = 50
CHART_MOVERS = 10


def _versions():
    return PricePlanVersion.objects.select_related("plan").order_by("plan__name", "-number")


class SimulationForm(IdempotentForm):
    version = VersionChoice(
        queryset=PricePlanVersion.objects.none(), label="Version to simulate",
        error_messages={"required": "Choose the version to simulate.",
                        "invalid_choice": "Choose one of the versions listed."},
    )  # fmt: skip
    periods = forms.IntegerField(
        min_value=MIN_PERIODS, max_value=MAX_PERIODS, initial=DEFAULT_PERIODS,
        label=f"Past billing periods per account ({MIN_PERIODS} to {MAX_PERIODS})",
        error_messages={"required": "Say how many past billing periods to re-price.",
                        "invalid": "Give a whole number of billing periods.",
                        "min_value": f"At least {MIN_PERIODS} billing period.",
                        "max_value": f"At most {MAX_PERIODS} billing periods."},
    )  # fmt: skip
    filter_version = VersionChoice(
        queryset=PricePlanVersion.objects.none(), required=False, empty_label="Every account",
        label="Only accounts now on (optional)",
        error_messages={"invalid_choice": "Choose one of the versions listed."},
    )  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = _versions()
        self.fields["filter_version"].queryset = _versions().exclude(status=PricePlanVersion.Status.DRAFT)


@admin_page
def price_simulation_list(request):
    simulations = PriceSimulation.objects.select_related("version__plan", "filter_version__plan", "created_by")
    page = Paginator(simulations.order_by("-created_at", "-pk"), PAGE_SIZE).get_page(
        page_number(request.GET.get("page"))
    )
    return render_page(request, "portal/pricing/simulations.html", {"page": page})


@admin_page
def price_simulation_new(request):
    if request.method != "POST":
        initial = {}
        version = request.GET.get("version", "")
        if version.isascii() and version.isdecimal() and len(version) < 12:
            initial["version"] = _versions().filter(pk=int(version)).first()
        return render_page(request, "portal/pricing/simulation_new.html", {"form": SimulationForm(initial=initial)})
    form = SimulationForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            simulation, _ = price_simulation_start(
                version=data["version"], periods=data["periods"], filter_version=data.get("filter_version"),
                actor=request.user, idempotency_key=data["idempotency_key"],
            )  # fmt: skip
        except ValidationError as exc:
            form_errors_apply(form, exc)
        else:
            return redirect("staff-price-simulation", simulation_id=simulation.pk)
    return render_page(
        request, "portal/pricing/simulation_new.html", {"form": form}, status=refused_status(request, 400)
    )


def _chart(rows: list, currency: str) -> dict | None:
    """A horizontal bar per account (its difference), bars left of the zero line for savings and right of it
    for increases, scaled to the largest movement shown."""
    if not rows:
        return None
    width, label_width, value_width, bar_height, gap = 720, 200, 80, 22, 8  # value_width: room for "-$1,234.56"
    half = (width - label_width) // 2 - value_width
    zero = label_width + value_width + half
    largest = max(abs(r.difference_minor) for r in rows) or 1
    bars = []
    for i, row in enumerate(rows):
        length = round(half * abs(row.difference_minor) / largest) if row.difference_minor else 0
        length = max(length, 1) if row.difference_minor else 0
        x = zero if row.difference_minor >= 0 else zero - length
        bars.append({"row": row, "x": x, "y": i * (bar_height + gap), "width": length, "height": bar_height,
                     "up": row.difference_minor > 0, "label_y": i * (bar_height + gap) + bar_height // 2})  # fmt: skip
    return {"bars": bars, "width": width, "height": len(rows) * (bar_height + gap), "zero": zero,
            "label_width": label_width, "currency": currency}  # fmt: skip


@admin_page
def price_simulation_detail(request, simulation_id: int):
    simulation = get_object_or_404(
        PriceSimulation.objects.select_related("version__plan", "filter_version__plan", "created_by"), pk=simulation_id
    )
    finished = simulation.status in (PriceSimulation.Status.DONE, PriceSimulation.Status.FAILED)
    context = {"simulation": simulation, "finished": finished, "terms": simulation_terms(simulation.terms)}
    if simulation.status == PriceSimulation.Status.DONE:
        shown_version = request.GET.get("plan_version", "")
        version_id = int(shown_version) if shown_version.isascii() and shown_version.isdecimal() and len(
            shown_version) < 12 else None  # fmt: skip
        versions = (
            PricePlanVersion.objects.filter(pk__in=simulation.rows.values("plan_version_id"))
            .select_related("plan")
            .order_by("plan__name", "number")
        )
        rows = price_simulation_rows(simulation=simulation, plan_version_id=version_id)
        page = Paginator(rows, PAGE_SIZE).get_page(page_number(request.GET.get("page")))
        movers = list(rows[:CHART_MOVERS])
        context |= {
            "page": page, "versions": versions, "plan_version": version_id, "rows_total": page.paginator.count,
            "plan_version_text": "" if version_id is None else str(version_id),
            "chart": _chart([r for r in movers if r.difference_minor], simulation.currency),
        }  # fmt: skip
    return render_page(
        request, "portal/pricing/simulation.html", context, partial="portal/pricing/_simulation_status.html"
    )
