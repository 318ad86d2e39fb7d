from __future__ import annotations

from celery import shared_task

from .services import resolution_windows_finalise


@shared_task(acks_late=True)
def resolution_windows_finalise_task() -> int:
    """Periodic: conversations whose inactivity window has elapsed become assumed resolutions."""
    return resolution_windows_finalise()
