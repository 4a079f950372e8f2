"""Scenario samplers: concrete entities of a state for which a goal is allowed (or deliberately not) by the policy.

Each sampler is fn(state, rng) -> Scenario | None; the dict key is the scenario's goal. `policy_rule` names the
rule of policy.md that decides the case. Samplers only read the state.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from eigenloop.domains.airline.db import (
    CABINS,
    FREE_BAGS,
    NOW,
    AirlineDB,
    Cabin,
    CreditCard,
    FlightDateStatusAvailable,
    GiftCard,
    Reservation,
    User,
    random_person,
)
from eigenloop.domains.base import DomainState, Scenario, ScenarioSampler

FLOWN = ("landed", "flying")
COVERED_REASONS = ("health", "weather")


def _db(state: DomainState) -> AirlineDB:
    db = state.db
    if not isinstance(db, AirlineDB):
        raise TypeError(f"airline samplers need an AirlineDB, got {type(db).__name__}")
    return db


def _statuses(db: AirlineDB, reservation: Reservation) -> list[str | None]:
    """Each segment's flight status on its date (None if the flight or date is unknown)."""
    found: list[str | None] = []
    for segment in reservation.flights:
        flight = db.flights.get(segment.flight_number)
        status = flight.dates.get(segment.date) if flight else None
        found.append(status.status if status else None)
    return found


def _flown(db: AirlineDB, reservation: Reservation) -> bool:
    return any(s in FLOWN for s in _statuses(db, reservation))


def _within_24h(reservation: Reservation) -> bool:
    created = datetime.fromisoformat(reservation.created_at)
    return NOW - timedelta(hours=24) <= created <= NOW


def _active(db: AirlineDB) -> list[Reservation]:
    """Reservations that are not cancelled and whose owner exists, in DB order."""
    return [r for r in db.reservations.values() if r.status is None and r.user_id in db.users]


def _payment_for(user: User, amount: float) -> str | None:
    """A credit card, or a gift card covering `amount`, from the user's profile (for changes to a reservation)."""
    cards = [m.id for m in user.payment_methods.values() if isinstance(m, CreditCard)]
    if cards:
        return cards[0]
    gifts = [m.id for m in user.payment_methods.values() if isinstance(m, GiftCard) and m.amount >= amount]
    return gifts[0] if gifts else None


def _base(reservation: Reservation) -> dict[str, str]:
    return {"user_id": reservation.user_id, "reservation_id": reservation.reservation_id}


def _eligible_for_compensation(db: AirlineDB, reservation: Reservation) -> bool:
    membership = db.users[reservation.user_id].membership
    return membership in ("silver", "gold") or reservation.insurance == "yes" or reservation.cabin == "business"


# --- cancellation ------------------------------------------------------------------------------------------------


def cancel_reservation(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates: list[tuple[Reservation, str, str]] = []
    for r in _active(db):
        if _flown(db, r):
            continue
        if _within_24h(r):
            candidates.append((r, "cancel.booked_within_24h", "change of plan"))
        if "cancelled" in _statuses(db, r):
            candidates.append((r, "cancel.airline_cancelled_flight", "airline cancelled flight"))
        if r.cabin == "business":
            candidates.append((r, "cancel.business_cabin", "change of plan"))
        if r.insurance == "yes":
            candidates.append((r, "cancel.insurance_covered_reason", rng.choice(COVERED_REASONS)))
    if not candidates:
        return None
    r, rule, reason = rng.choice(candidates)
    return Scenario("cancel_reservation", {**_base(r), "reason": reason}, True, rule)


def cancel_reservation_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates: list[tuple[Reservation, str, str]] = []
    for r in _active(db):
        if _flown(db, r):
            candidates.append((r, "cancel.already_flown", "change of plan"))
        elif not _within_24h(r) and "cancelled" not in _statuses(db, r) and r.cabin != "business":
            # Without insurance no reason helps; with insurance, a change of plan is not covered.
            candidates.append((r, "cancel.not_eligible", "change of plan"))
    if not candidates:
        return None
    r, rule, reason = rng.choice(candidates)
    notes = (
        "a segment has been flown: the agent cannot cancel and should transfer"
        if rule == "cancel.already_flown"
        else ""
    )
    return Scenario("cancel_reservation_not_allowed", {**_base(r), "reason": reason}, False, rule, notes)


# --- flight and cabin changes ------------------------------------------------------------------------------------


def _alternatives(db: AirlineDB, reservation: Reservation) -> list[tuple[int, str]]:
    """(segment index, other flight number) pairs: same route and date, bookable in the cabin for every passenger."""
    found = []
    for index, segment in enumerate(reservation.flights):
        for flight in db.flights.values():
            if (
                flight.flight_number != segment.flight_number
                and flight.origin == segment.origin
                and flight.destination == segment.destination
            ):
                status = flight.dates.get(segment.date)
                if isinstance(status, FlightDateStatusAvailable) and status.available_seats.get(
                    reservation.cabin, 0
                ) >= len(reservation.passengers):
                    found.append((index, flight.flight_number))
    return found


def _change_flight(state: DomainState, rng: random.Random, basic: bool) -> Scenario | None:
    db = _db(state)
    pool = [r for r in _active(db) if (r.cabin == "basic_economy") == basic and not _flown(db, r)]
    rng.shuffle(pool)
    for r in pool[:60]:
        options = _alternatives(db, r)
        if not options:
            continue
        index, new_flight = rng.choice(options)
        old = r.flights[index]
        status = db.flights[new_flight].dates[old.date]
        assert isinstance(status, FlightDateStatusAvailable)
        difference = (status.prices[r.cabin] - old.price) * len(r.passengers)
        payment_id = _payment_for(db.users[r.user_id], difference)
        if payment_id is None:
            continue
        entities = {
            **_base(r),
            "cabin": r.cabin,
            "segment_index": str(index),
            "old_flight_number": old.flight_number,
            "new_flight_number": new_flight,
            "date": old.date,
            "payment_id": payment_id,
            "price_difference": str(difference),
        }
        if basic:
            return Scenario("change_flight_not_allowed", entities, False, "modify.basic_economy_no_flight_change")
        return Scenario("change_flight", entities, True, "modify.change_flights_same_route")
    return None


def change_flight(state: DomainState, rng: random.Random) -> Scenario | None:
    return _change_flight(state, rng, basic=False)


def change_flight_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    return _change_flight(state, rng, basic=True)


def change_cabin(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates: list[tuple[Reservation, Cabin, int]] = []
    for r in _active(db):
        if _flown(db, r):
            continue
        for cabin in CABINS:
            if cabin == r.cabin:
                continue
            new_total = 0
            for segment in r.flights:
                status = (
                    db.flights[segment.flight_number].dates.get(segment.date)
                    if segment.flight_number in db.flights
                    else None
                )
                if not isinstance(status, FlightDateStatusAvailable) or status.available_seats.get(cabin, 0) < len(
                    r.passengers
                ):
                    break
                new_total += status.prices[cabin]
            else:
                candidates.append((r, cabin, (new_total - sum(s.price for s in r.flights)) * len(r.passengers)))
    rng.shuffle(candidates)
    for r, cabin, difference in candidates:
        payment_id = _payment_for(db.users[r.user_id], difference)
        if payment_id is not None:
            entities = {**_base(r), "new_cabin": cabin, "payment_id": payment_id, "price_difference": str(difference)}
            return Scenario("change_cabin", entities, True, "modify.change_cabin_all_segments")
    return None


def change_cabin_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [r for r in _active(db) if _flown(db, r)]
    if not candidates:
        return None
    r = rng.choice(candidates)
    new_cabin = rng.choice([c for c in CABINS if c != r.cabin])
    return Scenario("change_cabin_not_allowed", {**_base(r), "new_cabin": new_cabin}, False, "modify.cabin_after_flown")


# --- baggage, insurance, passengers --------------------------------------------------------------------------------


def add_baggage(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    pool = [r for r in _active(db) if not _flown(db, r)]
    rng.shuffle(pool)
    for r in pool[:60]:
        user = db.users[r.user_id]
        extra = rng.randint(1, 2)
        total = r.total_baggages + extra
        free = FREE_BAGS[user.membership][r.cabin] * len(r.passengers)
        nonfree = max(r.nonfree_baggages, total - free, 0)
        charge = 50 * (nonfree - r.nonfree_baggages)
        payment_id = _payment_for(user, charge)
        if payment_id is None:
            continue
        entities = {
            **_base(r),
            "membership": user.membership,
            "total_baggages": str(total),
            "nonfree_baggages": str(nonfree),
            "payment_id": payment_id,
            "charge": str(charge),
        }
        return Scenario("add_baggage", entities, True, "baggage.add_with_membership_allowance")
    return None


def remove_baggage_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [r for r in _active(db) if r.total_baggages > 0 and not _flown(db, r)]
    if not candidates:
        return None
    r = rng.choice(candidates)
    entities = {**_base(r), "total_baggages": str(r.total_baggages - 1)}
    return Scenario("remove_baggage_not_allowed", entities, False, "baggage.no_removal")


def add_insurance_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [r for r in _active(db) if r.insurance == "no" and not _flown(db, r)]
    if not candidates:
        return None
    r = rng.choice(candidates)
    return Scenario("add_insurance_not_allowed", _base(r), False, "insurance.no_adding_after_booking")


def update_passengers(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [r for r in _active(db) if not _flown(db, r)]
    if not candidates:
        return None
    r = rng.choice(candidates)
    index = rng.randrange(len(r.passengers))
    old = r.passengers[index]
    new = random_person(rng)
    entities = {
        **_base(r),
        "passenger_index": str(index),
        "old_first_name": old.first_name,
        "old_last_name": old.last_name,
        "new_first_name": new["first_name"],
        "new_last_name": new["last_name"],
        "new_dob": new["dob"],
    }
    return Scenario("update_passengers", entities, True, "passengers.modify_keeping_count")


def change_passenger_count_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [r for r in _active(db) if not _flown(db, r) and len(r.passengers) < 5]
    if not candidates:
        return None
    r = rng.choice(candidates)
    new = random_person(rng)
    entities = {
        **_base(r),
        "new_first_name": new["first_name"],
        "new_last_name": new["last_name"],
        "new_dob": new["dob"],
    }
    return Scenario("change_passenger_count_not_allowed", entities, False, "passengers.count_cannot_change")


# --- booking -----------------------------------------------------------------------------------------------------


def _booking(state: DomainState, rng: random.Random, n_passengers: int) -> tuple[User, str, str, Cabin, int] | None:
    """A user and a direct flight, date and cabin with `n_passengers` seats left, and the fare for all of them."""
    db = _db(state)
    users = [u for u in db.users.values() if any(isinstance(m, CreditCard) for m in u.payment_methods.values())]
    flights = list(db.flights.values())
    if not users or not flights:
        return None
    for _ in range(50):
        flight = rng.choice(flights)
        dates = [d for d, s in flight.dates.items() if isinstance(s, FlightDateStatusAvailable)]
        if not dates:
            continue
        date = rng.choice(dates)
        status = flight.dates[date]
        assert isinstance(status, FlightDateStatusAvailable)
        cabins = [c for c in CABINS if status.available_seats.get(c, 0) >= min(n_passengers, 5)]
        if cabins:
            cabin = rng.choice(cabins)
            return rng.choice(users), flight.flight_number, date, cabin, status.prices[cabin] * n_passengers
    return None


def book_reservation(state: DomainState, rng: random.Random) -> Scenario | None:
    n_passengers = rng.choice([1, 1, 2])
    found = _booking(state, rng, n_passengers)
    if found is None:
        return None
    user, flight_number, date, cabin, total = found
    flight = _db(state).flights[flight_number]
    card = next(m.id for m in user.payment_methods.values() if isinstance(m, CreditCard))
    entities = {
        "user_id": user.user_id,
        "origin": flight.origin,
        "destination": flight.destination,
        "flight_type": "one_way",
        "flight_number": flight_number,
        "date": date,
        "cabin": cabin,
        "passengers": str(n_passengers),
        "insurance": "no",
        "total_baggages": "0",
        "payment_id": card,
        "total_price": str(total),
    }
    return Scenario("book_reservation", entities, True, "book.collect_details_and_pay_from_profile")


def book_too_many_passengers_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    found = _booking(state, rng, 6)
    if found is None:
        return None
    user, flight_number, date, cabin, _ = found
    flight = _db(state).flights[flight_number]
    entities = {
        "user_id": user.user_id,
        "origin": flight.origin,
        "destination": flight.destination,
        "flight_number": flight_number,
        "date": date,
        "cabin": cabin,
        "passengers": "6",
    }
    return Scenario("book_too_many_passengers_not_allowed", entities, False, "book.at_most_five_passengers")


# --- information and compensation ----------------------------------------------------------------------------------


def flight_status(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    flights = list(db.flights.values())
    if not flights:
        return None
    flight = rng.choice(flights)
    if not flight.dates:
        return None
    date = rng.choice(list(flight.dates))
    entities = {"flight_number": flight.flight_number, "date": date, "status": flight.dates[date].status}
    return Scenario("flight_status", entities, True, "info.flight_status_from_tools")


def _disrupted(db: AirlineDB, kind: str) -> list[Reservation]:
    return [r for r in db.reservations.values() if r.user_id in db.users and kind in _statuses(db, r)]


def compensation_cancelled_flight(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [r for r in _disrupted(db, "cancelled") if _eligible_for_compensation(db, r)]
    if not candidates:
        return None
    r = rng.choice(candidates)
    entities = {**_base(r), "certificate_amount": str(100 * len(r.passengers))}
    return Scenario(
        "compensation_cancelled_flight", entities, True, "compensation.cancelled_flight_100_per_passenger",
        "only when the user complains and asks for compensation; confirm the facts first",
    )  # fmt: skip


def compensation_delayed_flight(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [r for r in _disrupted(db, "delayed") if r.status is None and _eligible_for_compensation(db, r)]
    if not candidates:
        return None
    r = rng.choice(candidates)
    entities = {**_base(r), "certificate_amount": str(50 * len(r.passengers))}
    return Scenario(
        "compensation_delayed_flight", entities, True, "compensation.delayed_flight_50_per_passenger",
        "only after the user asks for compensation and the reservation has been changed or cancelled",
    )  # fmt: skip


def compensation_not_allowed(state: DomainState, rng: random.Random) -> Scenario | None:
    db = _db(state)
    candidates = [
        r for r in _disrupted(db, "cancelled") + _disrupted(db, "delayed") if not _eligible_for_compensation(db, r)
    ]
    if not candidates:
        return None
    r = rng.choice(candidates)
    return Scenario(
        "compensation_not_allowed", _base(r), False, "compensation.regular_uninsured_economy_not_eligible",
        "regular member, no insurance, (basic) economy: no certificate even though a flight was disrupted",
    )  # fmt: skip


SAMPLERS: dict[str, ScenarioSampler] = {
    "cancel_reservation": cancel_reservation,
    "cancel_reservation_not_allowed": cancel_reservation_not_allowed,
    "change_flight": change_flight,
    "change_flight_not_allowed": change_flight_not_allowed,
    "change_cabin": change_cabin,
    "change_cabin_not_allowed": change_cabin_not_allowed,
    "add_baggage": add_baggage,
    "remove_baggage_not_allowed": remove_baggage_not_allowed,
    "add_insurance_not_allowed": add_insurance_not_allowed,
    "update_passengers": update_passengers,
    "change_passenger_count_not_allowed": change_passenger_count_not_allowed,
    "book_reservation": book_reservation,
    "book_too_many_passengers_not_allowed": book_too_many_passengers_not_allowed,
    "flight_status": flight_status,
    "compensation_cancelled_flight": compensation_cancelled_flight,
    "compensation_delayed_flight": compensation_delayed_flight,
    "compensation_not_allowed": compensation_not_allowed,
}
