"""State assertions for airline tasks: fn(state, **arguments) -> value compared with the task's expected value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eigenloop.domains.airline.db import AirlineDB, Certificate
from eigenloop.domains.base import DomainState


def _db(state: DomainState) -> AirlineDB:
    db = state.db
    assert isinstance(db, AirlineDB)
    return db


def reservation_status(state: DomainState, reservation_id: str) -> str | None:
    """'cancelled', 'active', or None when the reservation does not exist."""
    reservation = _db(state).reservations.get(reservation_id)
    if reservation is None:
        return None
    return reservation.status or "active"


def reservation_cabin(state: DomainState, reservation_id: str) -> str | None:
    reservation = _db(state).reservations.get(reservation_id)
    return reservation.cabin if reservation else None


def reservation_flights(state: DomainState, reservation_id: str) -> list[list[str]] | None:
    """The itinerary as [[flight_number, date], ...]."""
    reservation = _db(state).reservations.get(reservation_id)
    return [[f.flight_number, f.date] for f in reservation.flights] if reservation else None


def reservation_baggages(state: DomainState, reservation_id: str) -> list[int] | None:
    """[total_baggages, nonfree_baggages]."""
    reservation = _db(state).reservations.get(reservation_id)
    return [reservation.total_baggages, reservation.nonfree_baggages] if reservation else None


def reservation_passengers(state: DomainState, reservation_id: str) -> list[list[str]] | None:
    """The passengers as [[first_name, last_name, dob], ...]."""
    reservation = _db(state).reservations.get(reservation_id)
    return [[p.first_name, p.last_name, p.dob] for p in reservation.passengers] if reservation else None


def user_certificate_total(state: DomainState, user_id: str) -> float | None:
    """The total value of the user's travel certificates (None for an unknown user)."""
    user = _db(state).users.get(user_id)
    if user is None:
        return None
    return sum(m.amount for m in user.payment_methods.values() if isinstance(m, Certificate))


def user_reservation_count(state: DomainState, user_id: str) -> int | None:
    user = _db(state).users.get(user_id)
    return len(user.reservations) if user else None


ASSERTIONS: dict[str, Callable[..., Any]] = {
    "reservation_status": reservation_status,
    "reservation_cabin": reservation_cabin,
    "reservation_flights": reservation_flights,
    "reservation_baggages": reservation_baggages,
    "reservation_passengers": reservation_passengers,
    "user_certificate_total": user_certificate_total,
    "user_reservation_count": user_reservation_count,
}
