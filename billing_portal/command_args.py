"""Argument types shared by the operator commands: bad input becomes argparse's one-line error."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import clock


def whole_number(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {number}")
        return number

    return parse


instant = clock.instant_argument  # an ISO 8601 instant with its timezone, in range (clock.parse_instant)
errors_on_one_line = clock.errors_on_one_line
