"""Built-in airline tasks: for every goal in SAMPLERS, a few scenarios drawn from the seeded airline, each turned
into a complete task (user scenario, gold calls, checker, reference dialogue). Used by tests, the demo and benchmarks.

Each goal's scenarios are drawn with its own `random.Random(seed)` from `DOMAIN.initial_state(seed)`, so adding a
goal never changes another goal's tasks. A task's gold calls are the lookups a careful agent makes, then (when the
policy allows the goal) the writes, with the exact arguments the policy leads to; refusals have no write at all.
The reference dialogue executes the gold calls in an EnvSession, so its tool messages are the real results.
Checkers follow tau2's airline (final state times communicated facts) and add ACTION (the decisive lookups and writes
are required, the write a refusal must not make is forbidden) and state assertions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from eigenloop.contracts.v1 import common_pb2 as pb
from eigenloop.domains.airline import DOMAIN
from eigenloop.domains.airline.assertions import ASSERTIONS
from eigenloop.domains.airline.db import (
    CABINS,
    FREE_BAGS,
    NOW,
    RESERVED_RESERVATION_IDS,
    AirlineDB,
    Cabin,
    CreditCard,
    FlightDateStatusAvailable,
    GiftCard,
    Reservation,
    User,
    random_person,
)
from eigenloop.domains.airline.samplers import SAMPLERS
from eigenloop.domains.base import DomainState, Scenario
from eigenloop.env.session import EnvSession
from eigenloop.protocol import assistant_calls, text_message, tool_call, tool_message

PER_GOAL = 3  # tasks per goal, each on a different entity
MAX_DRAWS = 40  # sampler draws per goal before settling for fewer tasks
VARIETY_DRAWS = 6  # draws spent looking for a different policy rule (or flight status) before taking repeats

FLOWN = ("landed", "flying")
STATUS_WORDS = {
    "available": "it is available, not departed yet and open for booking",
    "on time": "it is on time and has not departed yet",
    "delayed": "it is delayed and has not departed yet",
    "flying": "it is flying: it has departed and not landed yet",
    "landed": "it has landed",
    "cancelled": "it was cancelled by the airline",
}
PERSONAS = (
    "Polite and brief; answers the agent's questions directly.",
    "In a hurry and a little impatient, but cooperative.",
    "Friendly and chatty, yet sticks to the facts of the trip.",
    "A careful traveller who wants every figure confirmed before agreeing.",
    "Calm and precise, and expects the same from the agent.",
)
UPSET = "Upset about the disruption and not shy about saying so, but stays civil."
# A cancellation reason as the user says it, and as their instructions put it.
REASON_SAID = {
    "change of plan": "my plans have changed",
    "airline cancelled flight": "the airline cancelled one of my flights",
    "health": "I'm ill and my doctor told me not to travel",
    "weather": "a severe storm is forecast and I don't want to travel in it",
}
REASON_GIVEN = {
    "change of plan": "your plans have changed",
    "airline cancelled flight": "the airline cancelled one of your flights",
    "health": "you are ill and your doctor told you not to travel",
    "weather": "a severe storm is forecast and you don't want to travel in it",
}


# --- small helpers -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Text:
    role: pb.Role.ValueType
    text: str


_Step = _Text | pb.ToolCall


def _user(text: str) -> _Text:
    return _Text(pb.ROLE_USER, text)


def _say(text: str) -> _Text:
    return _Text(pb.ROLE_ASSISTANT, text)


@dataclass
class _Draft:
    """A task before its dialogue is executed: what the user wants, the conversation plan and the checker's data."""

    scenario: Scenario
    description: str
    user: pb.UserScenario
    steps: list[_Step]
    required: list[pb.ActionMatch] = field(default_factory=list)
    forbidden: list[pb.ActionMatch] = field(default_factory=list)
    communicate: list[str] = field(default_factory=list)
    # (assertion function, its arguments, what it checks); the expected value is read off the gold state.
    assertions: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)


def _db(state: DomainState) -> AirlineDB:
    db = state.db
    if not isinstance(db, AirlineDB):
        raise TypeError(f"airline tasks need an AirlineDB, got {type(db).__name__}")
    return db


def _listed(call: pb.ToolCall, *keys: str) -> pb.ActionMatch:
    return pb.ActionMatch(call=call, match=pb.ARGUMENT_MATCH_LISTED, compare_args=list(keys))


def _name_only(call: pb.ToolCall) -> pb.ActionMatch:
    return pb.ActionMatch(call=call, match=pb.ARGUMENT_MATCH_NAME_ONLY)


def _get_user(user_id: str) -> pb.ToolCall:
    return tool_call("get_user_details", {"user_id": user_id})


def _get_reservation(reservation_id: str) -> pb.ToolCall:
    return tool_call("get_reservation_details", {"reservation_id": reservation_id})


def _flight_status_call(flight_number: str, date: str) -> pb.ToolCall:
    return tool_call("get_flight_status", {"flight_number": flight_number, "date": date})


def _day(date: str) -> str:
    """'May 16' for '2024-05-16'."""
    moment = datetime.strptime(date, "%Y-%m-%d")
    return f"{moment:%B} {moment.day}"


def _cabin(cabin: str) -> str:
    return cabin.replace("_", " ")


def _as_cabin(name: str) -> Cabin:
    for cabin in CABINS:
        if cabin == name:
            return cabin
    raise ValueError(f"unknown cabin {name!r}")


def _hhmm(clock: str) -> str:
    return clock[:5]


def _name(user: User) -> str:
    return f"{user.name.first_name} {user.name.last_name}"


def _who(user: User) -> str:
    return f"You are {_name(user)}. Your user id is {user.user_id}."


def _route(reservation: Reservation) -> str:
    trip = "round trip" if reservation.flight_type == "round_trip" else "one-way trip"
    return f"{trip} from {reservation.origin} to {reservation.destination}"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' if n != 1 else ''}"


def _passengers(n: int) -> str:
    return _count(n, "passenger")


def _status(db: AirlineDB, flight_number: str, date: str) -> str | None:
    flight = db.flights.get(flight_number)
    status = flight.dates.get(date) if flight else None
    return status.status if status else None


def _statuses(db: AirlineDB, reservation: Reservation) -> list[str | None]:
    return [_status(db, s.flight_number, s.date) for s in reservation.flights]


def _within_24h(reservation: Reservation) -> bool:
    created = datetime.fromisoformat(reservation.created_at)
    return NOW - timedelta(hours=24) <= created <= NOW


def _paid(reservation: Reservation) -> int:
    return sum(p.amount for p in reservation.payment_history)


def _payment_words(user: User, payment_id: str) -> str:
    method = user.payment_methods[payment_id]
    if isinstance(method, CreditCard):
        return f"your {method.brand} credit card ending in {method.last_four}"
    if isinstance(method, GiftCard):
        return f"your gift card {payment_id}"
    return f"your travel certificate {payment_id}"


def _change_payment(user: User, amount: int) -> str | None:
    """A credit card, or a gift card covering `amount`: what may pay for a change to a reservation."""
    for method in user.payment_methods.values():
        if isinstance(method, CreditCard):
            return method.id
    for method in user.payment_methods.values():
        if isinstance(method, GiftCard) and method.amount >= amount:
            return method.id
    return None


def _any_payment(user: User) -> str:
    return _change_payment(user, 0) or next(iter(user.payment_methods), "credit_card_0000000")


def _times(db: AirlineDB, flight_number: str, date: str) -> tuple[datetime, datetime]:
    flight = db.flights[flight_number]
    day = datetime.strptime(date, "%Y-%m-%d")

    def at(clock: str) -> datetime:
        hours, minutes = clock[:5].split(":")
        return day + timedelta(hours=int(hours), minutes=int(minutes), days=1 if clock.endswith("+1") else 0)

    return at(flight.scheduled_departure_time_est), at(flight.scheduled_arrival_time_est)


def _connects(db: AirlineDB, legs: list[dict[str, str]]) -> bool:
    """Every segment departs after the previous one arrives."""
    return all(
        _times(db, a["flight_number"], a["date"])[1] <= _times(db, b["flight_number"], b["date"])[0]
        for a, b in pairwise(legs)
    )


def _itinerary(reservation: Reservation) -> list[dict[str, str]]:
    return [{"flight_number": s.flight_number, "date": s.date} for s in reservation.flights]


def _people(reservation: Reservation) -> list[dict[str, str]]:
    return [{"first_name": p.first_name, "last_name": p.last_name, "dob": p.dob} for p in reservation.passengers]


def _scenario_user(
    user: User, instruction: str, reason: str, known: str, unknown: str, persona: str
) -> pb.UserScenario:
    return pb.UserScenario(
        instruction=instruction,
        persona=persona,
        known_info=f"{_who(user)}\n{known}".strip(),
        unknown_info=unknown,
        reason_for_call=reason,
    )


def _mine(payment: str) -> str:
    """A payment method as the user names it: 'my visa credit card ...'."""
    return payment.replace("your ", "my ", 1)


def _money(amount: int) -> str:
    return f"${amount}"


def _settle(difference: int, payment: str) -> str:
    if difference > 0:
        return f"the fare difference of {_money(difference)} will be charged to {payment}"
    if difference < 0:
        return f"the fare difference of {_money(-difference)} will be refunded to {payment}"
    return "there is no fare difference to pay"


def _figure(amount: int) -> list[str]:
    """A money figure worth checking that the agent told the user (tiny ones would match any text)."""
    return [str(abs(amount))] if abs(amount) >= 10 else []


# --- cancellation ------------------------------------------------------------------------------------------------


def _cancel_why(db: AirlineDB, reservation: Reservation, rule: str, reason: str) -> tuple[str, list[pb.ToolCall]]:
    """Why the policy allows the cancellation, and the extra lookups that establish it."""
    if rule == "cancel.airline_cancelled_flight":
        segment = next(
            s for s in reservation.flights if _status(db, s.flight_number, s.date) == "cancelled"
        )  # the sampler picked it for this
        why = f"flight {segment.flight_number} on {_day(segment.date)} was cancelled by the airline"
        return why, [_flight_status_call(segment.flight_number, segment.date)]
    if rule == "cancel.booked_within_24h":
        return f"it was booked less than 24 hours ago ({reservation.created_at})", []
    if rule == "cancel.business_cabin":
        return "it is in the business cabin", []
    return f"it has travel insurance, which covers cancelling for {reason} reasons", []


def _cancel_reservation(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid, reason = sc.entities["reservation_id"], sc.entities["reason"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    why, checks = _cancel_why(db, r, sc.policy_rule, reason)
    cancel = tool_call("cancel_reservation", {"reservation_id": rid})
    refund = _paid(r)
    said, given = REASON_SAID.get(reason, reason), REASON_GIVEN.get(reason, reason)
    return _Draft(
        scenario=sc,
        description=f"Cancel reservation {rid}: allowed because {why} ({sc.policy_rule}).",
        user=_scenario_user(
            user,
            instruction=(
                f"You want to cancel your reservation {rid} ({_route(r)}) because {given}. You expect a full refund. "
                "Confirm when the agent describes the cancellation."
            ),
            reason=f"Cancel reservation {rid}: {reason}.",
            known=f"Your reservation id is {rid}.",
            unknown="You do not remember exactly when you booked it.",
            persona=persona,
        ),
        steps=[
            _user(f"Hi, this is {_name(user)}, user id {user.user_id}. I need to cancel reservation {rid}: {said}."),
            _get_user(user.user_id),
            _get_reservation(rid),
            *checks,
            _say(
                f"Reservation {rid} ({_route(r)}, {_cabin(r.cabin)}) can be cancelled because {why}. I will cancel "
                f"the whole reservation and refund {_money(refund)} to the original payment method. Shall I proceed?"
            ),
            _user("Yes, please go ahead."),
            cancel,
            _say(
                f"Reservation {rid} is now cancelled. The refund of {_money(refund)} will reach your original "
                "payment method in 5 to 7 business days."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id"), _listed(cancel, "reservation_id")],
        assertions=[("reservation_status", {"reservation_id": rid}, "the reservation is cancelled")],
    )


def _cancel_reservation_not_allowed(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid, reason = sc.entities["reservation_id"], sc.entities["reason"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    cancel = tool_call("cancel_reservation", {"reservation_id": rid})
    said, given = REASON_SAID.get(reason, reason), REASON_GIVEN.get(reason, reason)
    opener = _user(f"Hello, I'm {_name(user)} ({user.user_id}). Please cancel my reservation {rid}; {said}.")
    common: dict[str, Any] = {
        "forbidden": [_listed(cancel, "reservation_id")],
        "assertions": [("reservation_status", {"reservation_id": rid}, "the reservation is still active")],
    }
    if sc.policy_rule == "cancel.already_flown":
        segment = next(s for s in r.flights if _status(db, s.flight_number, s.date) in FLOWN)
        status = _status(db, segment.flight_number, segment.date) or ""
        transfer = tool_call(
            "transfer_to_human_agents",
            {
                "summary": f"User {user.user_id} wants to cancel reservation {rid} ({reason}), but flight "
                f"{segment.flight_number} on {segment.date} has already departed ({status}).",
            },
        )
        return _Draft(
            scenario=sc,
            description=(
                f"Reservation {rid} is partly flown ({segment.flight_number} is {status}): the agent cannot cancel "
                f"it and transfers to a human agent ({sc.policy_rule})."
            ),
            user=_scenario_user(
                user,
                instruction=(
                    f"You want to cancel your reservation {rid} ({_route(r)}) because {given}. If the agent cannot "
                    "cancel it, accept being transferred to a human agent."
                ),
                reason=f"Cancel reservation {rid}: {reason}.",
                known=f"Your reservation id is {rid}.",
                unknown="",
                persona=persona,
            ),
            steps=[
                opener,
                _get_user(user.user_id),
                _get_reservation(rid),
                _flight_status_call(segment.flight_number, segment.date),
                _say(
                    f"Flight {segment.flight_number} on {_day(segment.date)}, part of reservation {rid}, has already "
                    f"departed (its status is {status}), so I cannot cancel this reservation myself. I can transfer "
                    "you to a human agent who can look at it. Would you like that?"
                ),
                _user("Yes, please transfer me."),
                transfer,
                _say(
                    f"A human agent will take over, as flight {segment.flight_number} is {status}. YOU ARE BEING "
                    "TRANSFERRED TO A HUMAN AGENT. PLEASE HOLD ON."
                ),
            ],
            required=[
                _listed(_get_reservation(rid), "reservation_id"),
                _name_only(tool_call("transfer_to_human_agents")),
            ],
            communicate=[status],
            **common,
        )
    why = [f"it was booked on {_day(r.created_at[:10])}, more than 24 hours ago", f"it is in {_cabin(r.cabin)}"]
    why.append(
        "its travel insurance covers only health or weather reasons"
        if r.insurance == "yes"
        else "it has no travel insurance"
    )
    return _Draft(
        scenario=sc,
        description=(
            f"Reservation {rid} cannot be cancelled for '{reason}': booked over 24 hours ago, not business, no "
            f"airline cancellation, and no insurance that covers the reason ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"You want to cancel your reservation {rid} ({_route(r)}) because {given}, with a full refund. "
                "If the agent says it cannot be cancelled, ask once whether there is any exception; if not, you "
                "keep the reservation and end the call."
            ),
            reason=f"Cancel reservation {rid}: {reason}.",
            known=f"Your reservation id is {rid}.",
            unknown="You do not know the airline's cancellation rules.",
            persona=persona,
        ),
        steps=[
            opener,
            _get_user(user.user_id),
            _get_reservation(rid),
            _say(
                f"I'm sorry, but I can't cancel reservation {rid}: {'; '.join(why)}, and none of its flights was "
                "cancelled by the airline. A reservation can be cancelled only within 24 hours of booking, after an "
                "airline cancellation, in business, or with insurance for a health or weather reason."
            ),
            _user("Is there really no exception?"),
            _say(
                "I'm afraid not: the rule applies to every reservation booked more than 24 hours ago that does not "
                "meet one of those conditions, so the reservation stays as it is."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id")],
        communicate=["24 hours"],
        **common,
    )


# --- flights and cabin -------------------------------------------------------------------------------------------


def _change_flight(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    e = sc.entities
    rid, index, new = e["reservation_id"], int(e["segment_index"]), e["new_flight_number"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    old = r.flights[index]
    flights = _itinerary(r)
    flights[index] = {"flight_number": new, "date": old.date}
    if not _connects(db, flights):
        return None  # the new flight would break a connection: not a change a traveller asks for
    difference, payment_id = int(e["price_difference"]), e["payment_id"]
    payment = _payment_words(user, payment_id)
    new_flight = db.flights[new]
    keep = " and keep your other flights as they are" if len(r.flights) > 1 else ""
    update = tool_call(
        "update_reservation_flights",
        {"reservation_id": rid, "cabin": r.cabin, "flights": flights, "payment_id": payment_id},
    )
    return _Draft(
        scenario=sc,
        description=(
            f"Change {old.flight_number} to {new} on {old.date} in {_cabin(r.cabin)} reservation {rid}, keeping the "
            f"other segments; the fare difference is {difference} ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"In your reservation {rid} you are booked on flight {old.flight_number} from {old.origin} to "
                f"{old.destination} on {_day(old.date)}. You want to switch to flight {new}, which leaves at "
                f"{_hhmm(new_flight.scheduled_departure_time_est)} the same day, and keep everything else. Settle any "
                f"fare difference with {payment}."
            ),
            reason=f"Move one flight of reservation {rid} to {new}.",
            known=f"Your reservation id is {rid}. The flight you want is {new} on {old.date}.",
            unknown="You do not know the current fare of the new flight.",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hi, I'm {user.user_id}. On reservation {rid} I'd like to move from flight {old.flight_number} on "
                f"{_day(old.date)} to flight {new} the same day."
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            tool_call("search_direct_flight", {"origin": old.origin, "destination": old.destination, "date": old.date}),
            _say(
                f"Flight {new} from {old.origin} to {old.destination} on {_day(old.date)} has seats in "
                f"{_cabin(r.cabin)}. I would replace {old.flight_number} with {new}{keep}. For "
                f"{_passengers(len(r.passengers))}, {_settle(difference, 'the payment method you choose')}. Which "
                "payment method should I use, and shall I make the change?"
            ),
            _user(f"Please use {_mine(payment)}. Yes, go ahead."),
            update,
            _say(
                f"Done: reservation {rid} now has flight {new} on {_day(old.date)}, and {_settle(difference, payment)}."
            ),
        ],
        required=[
            _listed(_get_reservation(rid), "reservation_id"),
            _listed(update, "reservation_id", "cabin", "flights"),
        ],
        communicate=_figure(difference),
        assertions=[("reservation_flights", {"reservation_id": rid}, "the new itinerary is in place")],
    )


def _change_flight_not_allowed(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    e = sc.entities
    rid, index, new = e["reservation_id"], int(e["segment_index"]), e["new_flight_number"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    old = r.flights[index]
    flights = _itinerary(r)
    flights[index] = {"flight_number": new, "date": old.date}
    update = tool_call(
        "update_reservation_flights",
        {"reservation_id": rid, "cabin": r.cabin, "flights": flights, "payment_id": e["payment_id"]},
    )
    return _Draft(
        scenario=sc,
        description=f"Reservation {rid} is basic economy: its flights cannot be changed ({sc.policy_rule}).",
        user=_scenario_user(
            user,
            instruction=(
                f"You want to move from flight {old.flight_number} on {_day(old.date)} to flight {new} the same day "
                f"in your reservation {rid}. If the agent says it is not possible, accept it and end the call; you "
                "do not want to cancel."
            ),
            reason=f"Change a flight of reservation {rid}.",
            known=f"Your reservation id is {rid}. The flight you want is {new} on {old.date}.",
            unknown="You do not remember which cabin you booked.",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hi, I'm {_name(user)}, user id {user.user_id}. Can you switch my flight {old.flight_number} on "
                f"{_day(old.date)} to {new}? The reservation is {rid}."
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            _say(
                f"I'm sorry, reservation {rid} is in basic economy, and basic economy flights cannot be changed, so I "
                f"can't move you to flight {new}."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id")],
        forbidden=[_listed(update, "reservation_id")],
        communicate=["basic economy"],
        assertions=[("reservation_flights", {"reservation_id": rid}, "the itinerary is unchanged")],
    )


def _change_cabin(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    e = sc.entities
    rid, cabin, payment_id, difference = (
        e["reservation_id"],
        e["new_cabin"],
        e["payment_id"],
        int(e["price_difference"]),
    )
    r = db.reservations[rid]
    user = db.users[r.user_id]
    payment = _payment_words(user, payment_id)
    searches: list[pb.ToolCall] = []
    for s in r.flights:
        search = tool_call("search_direct_flight", {"origin": s.origin, "destination": s.destination, "date": s.date})
        if search not in searches:
            searches.append(search)
    update = tool_call(
        "update_reservation_flights",
        {"reservation_id": rid, "cabin": cabin, "flights": _itinerary(r), "payment_id": payment_id},
    )
    direction = "upgrade" if difference > 0 else "change"
    return _Draft(
        scenario=sc,
        description=(
            f"Change reservation {rid} from {_cabin(r.cabin)} to {_cabin(cabin)} on every segment, priced at today's "
            f"fares; the difference is {difference} ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"You want to {direction} your reservation {rid} ({_route(r)}) from {_cabin(r.cabin)} to "
                f"{_cabin(cabin)} on all its flights, keeping the same flights. Settle the price difference with "
                f"{payment}. Agree once the agent tells you the amount."
            ),
            reason=f"Change the cabin of reservation {rid} to {_cabin(cabin)}.",
            known=f"Your reservation id is {rid}.",
            unknown="You do not know today's fares.",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hello, user id {user.user_id} here. I'd like to change reservation {rid} to {_cabin(cabin)} for "
                "all flights, please."
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            *searches,
            _say(
                f"Moving reservation {rid} to {_cabin(cabin)} on {_count(len(r.flights), 'flight')} for "
                f"{_passengers(len(r.passengers))} at today's fares: {_settle(difference, 'your payment method')}. "
                "Which payment method should I use, and shall I go ahead?"
            ),
            _user(f"Use {_mine(payment)}, and yes, please do it."),
            update,
            _say(f"All set: reservation {rid} is now in {_cabin(cabin)}, and {_settle(difference, payment)}."),
        ],
        required=[
            _listed(_get_reservation(rid), "reservation_id"),
            _listed(update, "reservation_id", "cabin", "flights"),
        ],
        communicate=_figure(difference),
        assertions=[("reservation_cabin", {"reservation_id": rid}, f"the cabin is {cabin}")],
    )


def _change_cabin_not_allowed(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid, cabin = sc.entities["reservation_id"], sc.entities["new_cabin"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    segment = next(s for s in r.flights if _status(db, s.flight_number, s.date) in FLOWN)
    status = _status(db, segment.flight_number, segment.date) or ""
    update = tool_call(
        "update_reservation_flights",
        {"reservation_id": rid, "cabin": cabin, "flights": _itinerary(r), "payment_id": _any_payment(user)},
    )
    return _Draft(
        scenario=sc,
        description=(
            f"Reservation {rid} has a flown segment ({segment.flight_number} is {status}): its cabin can no longer "
            f"be changed ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"You want to change the cabin of your reservation {rid} ({_route(r)}) to {_cabin(cabin)} for the "
                "rest of the trip. If the agent says it is not possible, accept it and end the call."
            ),
            reason=f"Change the cabin of reservation {rid}.",
            known=f"Your reservation id is {rid}.",
            unknown="",
            persona=persona,
        ),
        steps=[
            _user(f"Hi, {user.user_id} here. Could you change my reservation {rid} to {_cabin(cabin)}?"),
            _get_user(user.user_id),
            _get_reservation(rid),
            _flight_status_call(segment.flight_number, segment.date),
            _say(
                f"Flight {segment.flight_number} on {_day(segment.date)} in reservation {rid} has already departed "
                f"(status: {status}). Once any flight of a reservation has been flown, its cabin can no longer be "
                "changed, so I can't move it to "
                f"{_cabin(cabin)}."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id")],
        forbidden=[_listed(update, "reservation_id")],
        communicate=[status],
        assertions=[("reservation_cabin", {"reservation_id": rid}, "the cabin is unchanged")],
    )


# --- baggage, insurance, passengers --------------------------------------------------------------------------------


def _add_baggage(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    e = sc.entities
    rid, total, nonfree, payment_id, charge = (
        e["reservation_id"],
        int(e["total_baggages"]),
        int(e["nonfree_baggages"]),
        e["payment_id"],
        int(e["charge"]),
    )
    r = db.reservations[rid]
    user = db.users[r.user_id]
    extra = total - r.total_baggages
    free = FREE_BAGS[user.membership][r.cabin] * len(r.passengers)
    payment = _payment_words(user, payment_id)
    update = tool_call(
        "update_reservation_baggages",
        {"reservation_id": rid, "total_baggages": total, "nonfree_baggages": nonfree, "payment_id": payment_id},
    )
    paid = nonfree - r.nonfree_baggages
    adding = _count(extra, "checked bag")
    cost = (
        f"{_count(paid, 'new bag')} {'is' if paid == 1 else 'are'} beyond the allowance, so {_money(charge)} will be "
        f"charged to {payment}"
        if charge
        else "all of them are within your free allowance, so there is nothing to pay"
    )
    return _Draft(
        scenario=sc,
        description=(
            f"Add {_count(extra, 'checked bag')} to reservation {rid}: a {user.membership} member in "
            f"{_cabin(r.cabin)} with {_passengers(len(r.passengers))} has {free} free; the charge is {charge} "
            f"({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"You want to add {adding} to your reservation {rid}, for {total} in total. Pay any bag fee with "
                f"{payment}."
            ),
            reason=f"Add checked bags to reservation {rid}.",
            known=f"Your reservation id is {rid}. You currently have {_count(r.total_baggages, 'checked bag')} on it.",
            unknown="You do not know how many checked bags are free for you.",
            persona=persona,
        ),
        steps=[
            _user(f"Hi, this is {_name(user)} ({user.user_id}). I need to add {adding} to reservation {rid}."),
            _get_user(user.user_id),
            _get_reservation(rid),
            _say(
                f"As a {user.membership} member in {_cabin(r.cabin)} with {_passengers(len(r.passengers))}, you have "
                f"{_count(free, 'free checked bag')}. Going from {r.total_baggages} to {total} bags, {cost}. Shall I "
                "update the reservation?"
            ),
            _user(f"Yes please{', use ' + _mine(payment) if charge else ''}."),
            update,
            _say(
                f"Done: reservation {rid} now has {_count(total, 'checked bag')}, {nonfree} of them paid"
                + (f"; {_money(charge)} was charged to {payment}." if charge else ", at no extra cost.")
            ),
        ],
        required=[
            _listed(_get_reservation(rid), "reservation_id"),
            _listed(update, "reservation_id", "total_baggages", "nonfree_baggages"),
        ],
        communicate=_figure(charge),
        assertions=[("reservation_baggages", {"reservation_id": rid}, f"{total} bags, {nonfree} paid")],
    )


def _remove_baggage_not_allowed(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid, wanted = sc.entities["reservation_id"], int(sc.entities["total_baggages"])
    r = db.reservations[rid]
    user = db.users[r.user_id]
    update = tool_call(
        "update_reservation_baggages",
        {
            "reservation_id": rid,
            "total_baggages": wanted,
            "nonfree_baggages": min(r.nonfree_baggages, wanted),
            "payment_id": _any_payment(user),
        },
    )
    return _Draft(
        scenario=sc,
        description=f"Reservation {rid} has {_count(r.total_baggages, 'bag')}: none can be removed ({sc.policy_rule}).",
        user=_scenario_user(
            user,
            instruction=(
                f"You packed lighter than planned and want to go from {r.total_baggages} to "
                f"{_count(wanted, 'checked bag')} on reservation {rid}, getting back any bag fee. If the agent says "
                "bags cannot be removed, accept it and end the call."
            ),
            reason=f"Remove a checked bag from reservation {rid}.",
            known=f"Your reservation id is {rid}.",
            unknown="",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hello, I'm {user.user_id}. I'd like to drop one of the checked bags on reservation {rid}, so I have "
                f"{wanted}."
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            _say(
                f"I'm sorry: checked bags can be added to a reservation but cannot be removed, so reservation {rid} "
                f"keeps its {_count(r.total_baggages, 'checked bag')}."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id")],
        forbidden=[_listed(update, "reservation_id")],
        communicate=["be removed"],
        assertions=[("reservation_baggages", {"reservation_id": rid}, "the bags are unchanged")],
    )


def _add_insurance_not_allowed(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid = sc.entities["reservation_id"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    cancel = tool_call("cancel_reservation", {"reservation_id": rid})
    return _Draft(
        scenario=sc,
        description=(
            f"Reservation {rid} has no insurance, and insurance cannot be added after booking; nor may the agent "
            f"cancel and rebook to add it ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"You want to add travel insurance to your reservation {rid} ({_route(r)}). If the agent says it is "
                "not possible, accept it; you do not want to cancel the trip."
            ),
            reason=f"Add travel insurance to reservation {rid}.",
            known=f"Your reservation id is {rid}.",
            unknown="",
            persona=persona,
        ),
        steps=[
            _user(f"Hi, {_name(user)} here, user id {user.user_id}. Can I add travel insurance to reservation {rid}?"),
            _get_user(user.user_id),
            _get_reservation(rid),
            _say(
                f"Reservation {rid} was booked without travel insurance, and insurance can only be bought at booking "
                "time: it cannot be added to an existing reservation."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id")],
        forbidden=[_listed(cancel, "reservation_id"), _name_only(tool_call("book_reservation"))],
        communicate=["be added"],
        assertions=[("reservation_status", {"reservation_id": rid}, "the reservation is still active")],
    )


def _update_passengers(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    e = sc.entities
    rid, index = e["reservation_id"], int(e["passenger_index"])
    r = db.reservations[rid]
    user = db.users[r.user_id]
    new = {"first_name": e["new_first_name"], "last_name": e["new_last_name"], "dob": e["new_dob"]}
    passengers = _people(r)
    passengers[index] = new
    old = f"{e['old_first_name']} {e['old_last_name']}"
    replacement = f"{new['first_name']} {new['last_name']}"
    update = tool_call("update_reservation_passengers", {"reservation_id": rid, "passengers": passengers})
    others = "; the other passengers stay as they are" if len(passengers) > 1 else ""
    return _Draft(
        scenario=sc,
        description=(
            f"Replace passenger {old} with {replacement} on reservation {rid}, keeping the others and the count "
            f"({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"{old} can no longer travel on your reservation {rid}; {replacement} (born {new['dob']}) will fly "
                f"instead. You want the passenger details changed{others}."
            ),
            reason=f"Change a passenger on reservation {rid}.",
            known=(f"Your reservation id is {rid}. The new passenger is {replacement}, date of birth {new['dob']}."),
            unknown="",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hi, I'm {user.user_id}. On reservation {rid}, {old} can't come, so {replacement}, born "
                f"{new['dob']}, will fly instead. Can you update that?"
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            _say(
                f"I will replace {old} with {replacement} (date of birth {new['dob']}) on reservation {rid}{others}. "
                "Shall I proceed?"
            ),
            _user("Yes, thank you."),
            update,
            _say(f"Done: {replacement} is now a passenger on reservation {rid} in place of {old}."),
        ],
        required=[
            _listed(_get_reservation(rid), "reservation_id"),
            _listed(update, "reservation_id", "passengers"),
        ],
        assertions=[("reservation_passengers", {"reservation_id": rid}, f"{replacement} replaced {old}")],
    )


def _change_passenger_count_not_allowed(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    e = sc.entities
    rid = e["reservation_id"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    new = {"first_name": e["new_first_name"], "last_name": e["new_last_name"], "dob": e["new_dob"]}
    update = tool_call("update_reservation_passengers", {"reservation_id": rid, "passengers": [*_people(r), new]})
    extra = f"{new['first_name']} {new['last_name']}"
    return _Draft(
        scenario=sc,
        description=(
            f"Adding {extra} to reservation {rid} would change its number of passengers, which is never allowed "
            f"({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"You want to add {extra} (born {new['dob']}) as an extra passenger on your reservation {rid}, so "
                "they travel with the others. If the agent says it is not possible, accept it and end the call."
            ),
            reason=f"Add a passenger to reservation {rid}.",
            known=f"Your reservation id is {rid}. The extra passenger is {extra}, date of birth {new['dob']}.",
            unknown="",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hello, {user.user_id} here. Please add {extra}, born {new['dob']}, to my reservation {rid}; they're "
                "joining us."
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            _say(
                f"I'm sorry, but the number of passengers on a reservation cannot be changed. Reservation {rid} keeps "
                f"its {_passengers(len(r.passengers))}; I can only correct the names or dates of birth of those."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id")],
        forbidden=[_listed(update, "reservation_id")],
        communicate=["number of passengers"],
        assertions=[("reservation_passengers", {"reservation_id": rid}, "the passengers are unchanged")],
    )


# --- booking -----------------------------------------------------------------------------------------------------


def _travellers(user: User, n: int, rng: random.Random) -> list[dict[str, str]]:
    people = [{"first_name": user.name.first_name, "last_name": user.name.last_name, "dob": user.dob}]
    for saved in user.saved_passengers:
        if len(people) < n:
            people.append({"first_name": saved.first_name, "last_name": saved.last_name, "dob": saved.dob})
    while len(people) < n:
        people.append(random_person(rng))
    return people


def _who_flies(people: list[dict[str, str]]) -> str:
    return "; ".join(f"{p['first_name']} {p['last_name']}, born {p['dob']}" for p in people)


def _book_reservation(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    e = sc.entities
    user = db.users[e["user_id"]]
    flight_number, date, cabin, payment_id = e["flight_number"], e["date"], _as_cabin(e["cabin"]), e["payment_id"]
    n, total = int(e["passengers"]), int(e["total_price"])
    status = db.flights[flight_number].dates[date]
    if not isinstance(status, FlightDateStatusAvailable):
        return None
    new_id = next((rid for rid in RESERVED_RESERVATION_IDS if rid not in db.reservations), None)
    if new_id is None:
        return None
    people = _travellers(user, n, rng)
    payment = _payment_words(user, payment_id)
    book = tool_call(
        "book_reservation",
        {
            "user_id": user.user_id,
            "origin": e["origin"],
            "destination": e["destination"],
            "flight_type": "one_way",
            "cabin": cabin,
            "flights": [{"flight_number": flight_number, "date": date}],
            "passengers": people,
            "payment_methods": [{"payment_id": payment_id, "amount": total}],
            "total_baggages": 0,
            "nonfree_baggages": 0,
            "insurance": "no",
        },
    )
    departs = _hhmm(db.flights[flight_number].scheduled_departure_time_est)
    return _Draft(
        scenario=sc,
        description=(
            f"Book {flight_number} {e['origin']}->{e['destination']} on {date} in {_cabin(cabin)} for "
            f"{_passengers(n)}, no bags, no insurance, {total} on a credit card ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"You want to book a one-way trip from {e['origin']} to {e['destination']} on {_day(date)} on flight "
                f"{flight_number} (departing {departs}) in {_cabin(cabin)} for {_passengers(n)}: {_who_flies(people)}. "
                f"You want no checked bags and no travel insurance, and you pay with {payment}."
            ),
            reason=f"Book a flight from {e['origin']} to {e['destination']} on {date}.",
            known=f"The passengers: {_who_flies(people)}.",
            unknown="You do not know the fare.",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hi, I'm {_name(user)}, user id {user.user_id}. I want to book flight {flight_number} from "
                f"{e['origin']} to {e['destination']} on {_day(date)}, one way, {_cabin(cabin)}, for "
                f"{_passengers(n)}: {_who_flies(people)}."
            ),
            _get_user(user.user_id),
            tool_call("search_direct_flight", {"origin": e["origin"], "destination": e["destination"], "date": date}),
            _say(
                f"Flight {flight_number} on {_day(date)} has {_cabin(cabin)} seats at {_money(status.prices[cabin])} "
                f"per passenger, {_money(total)} in total for {_passengers(n)}. Would you like any checked bags or "
                "travel insurance ($30 per passenger), and how would you like to pay?"
            ),
            _user(f"No bags and no insurance. Please charge {_mine(payment)}."),
            _say(
                f"To confirm: one-way {e['origin']} to {e['destination']}, flight {flight_number} on {_day(date)}, "
                f"{_cabin(cabin)}, {_who_flies(people)}; no bags, no insurance; {_money(total)} charged to {payment}. "
                "Shall I book it?"
            ),
            _user("Yes, book it."),
            book,
            _say(f"Your reservation {new_id} is booked, and {_money(total)} was charged to {payment}."),
        ],
        required=[
            _listed(book, "user_id", "flights", "cabin", "passengers", "insurance", "total_baggages"),
        ],
        communicate=_figure(total),
        assertions=[("user_reservation_count", {"user_id": user.user_id}, "one new reservation")],
    )


def _book_too_many_passengers_not_allowed(
    db: AirlineDB, sc: Scenario, persona: str, rng: random.Random
) -> _Draft | None:
    e = sc.entities
    user = db.users[e["user_id"]]
    flight_number, date, cabin, n = e["flight_number"], e["date"], _as_cabin(e["cabin"]), int(e["passengers"])
    status = db.flights[flight_number].dates[date]
    card = next((m.id for m in user.payment_methods.values() if isinstance(m, CreditCard)), None)
    if not isinstance(status, FlightDateStatusAvailable) or card is None:
        return None
    people = _travellers(user, n, rng)
    book = tool_call(
        "book_reservation",
        {
            "user_id": user.user_id,
            "origin": e["origin"],
            "destination": e["destination"],
            "flight_type": "one_way",
            "cabin": cabin,
            "flights": [{"flight_number": flight_number, "date": date}],
            "passengers": people,
            "payment_methods": [{"payment_id": card, "amount": status.prices[cabin] * n}],
            "total_baggages": 0,
            "nonfree_baggages": 0,
            "insurance": "no",
        },
    )
    return _Draft(
        scenario=sc,
        description=f"A reservation for {n} passengers exceeds the limit of five ({sc.policy_rule}).",
        user=_scenario_user(
            user,
            instruction=(
                f"You want to book flight {flight_number} from {e['origin']} to {e['destination']} on {_day(date)} in "
                f"{_cabin(cabin)} for your group of {n}, all on one reservation: {_who_flies(people)}. You do not "
                "want to split the group into separate bookings; if the agent says one reservation cannot hold "
                "everyone, end the call."
            ),
            reason=f"Book a group trip for {n} people.",
            known=f"The passengers: {_who_flies(people)}.",
            unknown="",
            persona=persona,
        ),
        steps=[
            _user(
                f"Hi, I'm {user.user_id}. I'd like one booking for {n} people on flight {flight_number} from "
                f"{e['origin']} to {e['destination']} on {_day(date)}, {_cabin(cabin)}."
            ),
            _get_user(user.user_id),
            _say(
                f"I'm sorry, but a reservation can have at most five passengers, so I can't book all {n} of you on "
                "one reservation."
            ),
        ],
        forbidden=[_name_only(book)],
        communicate=["five"],
        assertions=[("user_reservation_count", {"user_id": user.user_id}, "no new reservation")],
    )


# --- information and compensation ----------------------------------------------------------------------------------


def _flight_status(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    flight_number, date, status = sc.entities["flight_number"], sc.entities["date"], sc.entities["status"]
    flight = db.flights[flight_number]
    check = _flight_status_call(flight_number, date)
    return _Draft(
        scenario=sc,
        description=f"Report the status of {flight_number} on {date}: '{status}' ({sc.policy_rule}).",
        user=pb.UserScenario(
            instruction=(
                f"You want to know the status of flight {flight_number} from {flight.origin} to {flight.destination} "
                f"on {_day(date)}. Once you know it, thank the agent and end the call."
            ),
            persona=persona,
            known_info=f"The flight number is {flight_number} and the date is {date}.",
            unknown_info="You have no user id or reservation to give.",
            reason_for_call=f"Status of flight {flight_number} on {date}.",
        ),
        steps=[
            _user(f"Hi, what's the status of flight {flight_number} on {_day(date)}?"),
            check,
            _say(
                f"Flight {flight_number} from {flight.origin} to {flight.destination} on {_day(date)}: "
                f"{STATUS_WORDS.get(status, status)}."
            ),
        ],
        required=[_listed(check, "flight_number", "date")],
        communicate=[status],
    )


def _eligibility(db: AirlineDB, reservation: Reservation) -> str:
    user = db.users[reservation.user_id]
    if user.membership in ("silver", "gold"):
        return f"you are a {user.membership} member"
    if reservation.insurance == "yes":
        return "your reservation has travel insurance"
    return "you are flying business"


def _compensation_cancelled_flight(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid, amount = sc.entities["reservation_id"], int(sc.entities["certificate_amount"])
    r = db.reservations[rid]
    user = db.users[r.user_id]
    segment = next(s for s in r.flights if _status(db, s.flight_number, s.date) == "cancelled")
    certificate = tool_call("send_certificate", {"user_id": user.user_id, "amount": amount})
    return _Draft(
        scenario=sc,
        description=(
            f"Flight {segment.flight_number} of reservation {rid} was cancelled and the user is eligible: a "
            f"certificate of {amount} (100 x {len(r.passengers)} passengers) ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"Your flight {segment.flight_number} on {_day(segment.date)} (reservation {rid}) was cancelled by "
                "the airline and it ruined your plans. Complain and ask for compensation; accept a travel "
                "certificate if offered."
            ),
            reason=f"Compensation for the cancelled flight {segment.flight_number}.",
            known=f"Your reservation id is {rid}. The cancelled flight was {segment.flight_number} on {segment.date}.",
            unknown="You do not know what compensation you are entitled to.",
            persona=UPSET,
        ),
        steps=[
            _user(
                f"I'm {_name(user)}, user id {user.user_id}. Flight {segment.flight_number} on {_day(segment.date)} "
                f"on my reservation {rid} was cancelled and it wrecked my plans. I want compensation."
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            _flight_status_call(segment.flight_number, segment.date),
            _say(
                f"I'm sorry about that. I've confirmed that flight {segment.flight_number} on {_day(segment.date)} "
                f"was cancelled. Since {_eligibility(db, r)}, I can offer a travel certificate of {_money(amount)} "
                f"($100 for each of the {_passengers(len(r.passengers))}). Shall I send it to your account?"
            ),
            _user("Yes, please."),
            certificate,
            _say(f"A travel certificate of {_money(amount)} has been added to your account."),
        ],
        required=[
            _listed(_get_reservation(rid), "reservation_id"),
            _listed(certificate, "user_id", "amount"),
        ],
        communicate=_figure(amount),
        assertions=[("user_certificate_total", {"user_id": user.user_id}, f"a certificate of {amount} was added")],
    )


def _delayed_change(db: AirlineDB, r: Reservation, index: int) -> tuple[list[dict[str, str]], str, int] | None:
    """Move the delayed first segment to a same-route flight the next day: (itinerary, payment, difference)."""
    if r.cabin == "basic_economy" or index != 0:
        return None
    segment = r.flights[index]
    next_day = (datetime.strptime(segment.date, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")
    user = db.users[r.user_id]
    for flight in db.flights.values():
        if flight.origin != segment.origin or flight.destination != segment.destination:
            continue
        status = flight.dates.get(next_day)
        if not isinstance(status, FlightDateStatusAvailable) or status.available_seats[r.cabin] < len(r.passengers):
            continue
        flights = _itinerary(r)
        flights[index] = {"flight_number": flight.flight_number, "date": next_day}
        if not _connects(db, flights):
            continue
        difference = (status.prices[r.cabin] - segment.price) * len(r.passengers)
        payment_id = _change_payment(user, difference)
        if payment_id is not None:
            return flights, payment_id, difference
    return None


def _compensation_delayed_flight(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid, amount = sc.entities["reservation_id"], int(sc.entities["certificate_amount"])
    r = db.reservations[rid]
    user = db.users[r.user_id]
    statuses = _statuses(db, r)
    index = statuses.index("delayed")
    segment = r.flights[index]
    flown = any(s in FLOWN for s in statuses)
    cancellable = not flown and (_within_24h(r) or "cancelled" in statuses or r.cabin == "business")
    certificate = tool_call("send_certificate", {"user_id": user.user_id, "amount": amount})
    opener = (
        f"Hello, I'm {_name(user)}, user id {user.user_id}. My flight {segment.flight_number} today on reservation "
        f"{rid} is delayed"
    )
    checks: list[_Step] = [
        _get_user(user.user_id),
        _get_reservation(rid),
        _flight_status_call(segment.flight_number, segment.date),
    ]
    offer = (
        f"Because your flight was delayed and {_eligibility(db, r)}, I can also send you a travel certificate of "
        f"{_money(amount)} ($50 for each of the {_passengers(len(r.passengers))}). Would you like it?"
    )
    if cancellable:
        action = tool_call("cancel_reservation", {"reservation_id": rid})
        if r.cabin == "business":
            why = "it is in business"
        elif _within_24h(r):
            why = "it was booked less than 24 hours ago"
        else:
            why = "one of its flights was cancelled by the airline"
        wish = "cancel the whole reservation"
        plan: list[_Step] = [
            _user(f"{opener}, and I don't want to travel anymore. Cancel it, and I expect compensation."),
            *checks,
            _say(
                f"Flight {segment.flight_number} is indeed delayed. Reservation {rid} can be cancelled because {why}: "
                f"I will cancel it and refund {_money(_paid(r))} to the original payment method. Shall I proceed?"
            ),
            _user("Yes, cancel it."),
            action,
            _say(f"Reservation {rid} is cancelled. {offer}"),
        ]
        done = ("reservation_status", {"reservation_id": rid}, "the reservation is cancelled")
        required = [_listed(action, "reservation_id")]
    else:
        change = _delayed_change(db, r, index)
        if change is None:
            return None
        flights, payment_id, difference = change
        new = flights[index]
        payment = _payment_words(user, payment_id)
        action = tool_call(
            "update_reservation_flights",
            {"reservation_id": rid, "cabin": r.cabin, "flights": flights, "payment_id": payment_id},
        )
        tomorrow = f"{new['flight_number']} tomorrow ({_day(new['date'])})"
        keep = ", keeping your other flights" if len(flights) > 1 else ""
        wish = f"move to flight {tomorrow}, paying any difference with {payment}"
        plan = [
            _user(
                f"{opener}. I'd rather fly tomorrow on flight {new['flight_number']} instead, and I want compensation."
            ),
            *checks,
            tool_call(
                "search_direct_flight",
                {"origin": segment.origin, "destination": segment.destination, "date": new["date"]},
            ),
            _say(
                f"Flight {segment.flight_number} is indeed delayed. I can move you to flight {new['flight_number']} "
                f"on {_day(new['date'])} in {_cabin(r.cabin)}{keep}; "
                f"{_settle(difference, 'your payment method')}. Which payment method should I use, and shall I go "
                "ahead?"
            ),
            _user(f"Use {_mine(payment)}. Yes, please."),
            action,
            _say(f"Done: you are now on flight {new['flight_number']} on {_day(new['date'])}. {offer}"),
        ]
        done = ("reservation_flights", {"reservation_id": rid}, "the delayed flight was replaced")
        required = [_listed(action, "reservation_id", "flights")]
    return _Draft(
        scenario=sc,
        description=(
            f"Flight {segment.flight_number} of reservation {rid} is delayed; after the user's change ({wish}), the "
            f"eligible user gets a certificate of {amount} (50 x {len(r.passengers)} passengers) ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"Your flight {segment.flight_number} today (reservation {rid}) is delayed. Because of it you want to "
                f"{wish}. You also want compensation for the delay; accept a travel certificate if offered."
            ),
            reason=f"Delayed flight {segment.flight_number}: change of plans and compensation.",
            known=f"Your reservation id is {rid}. The delayed flight is {segment.flight_number} on {segment.date}.",
            unknown="You do not know what compensation you are entitled to.",
            persona=UPSET,
        ),
        steps=[
            *plan,
            _user("Yes, I'll take the certificate."),
            certificate,
            _say(f"A travel certificate of {_money(amount)} has been added to your account."),
        ],
        required=[
            _listed(_get_reservation(rid), "reservation_id"),
            *required,
            _listed(certificate, "user_id", "amount"),
        ],
        communicate=_figure(amount),
        assertions=[
            done,
            ("user_certificate_total", {"user_id": user.user_id}, f"a certificate of {amount} was added"),
        ],
    )


def _compensation_not_allowed(db: AirlineDB, sc: Scenario, persona: str, rng: random.Random) -> _Draft | None:
    rid = sc.entities["reservation_id"]
    r = db.reservations[rid]
    user = db.users[r.user_id]
    segment = next(s for s in r.flights if _status(db, s.flight_number, s.date) in ("cancelled", "delayed"))
    status = _status(db, segment.flight_number, segment.date) or ""
    amount = (100 if status == "cancelled" else 50) * len(r.passengers)
    certificate = tool_call("send_certificate", {"user_id": user.user_id, "amount": amount})
    return _Draft(
        scenario=sc,
        description=(
            f"Flight {segment.flight_number} of reservation {rid} was {status}, but a regular member without "
            f"insurance in {_cabin(r.cabin)} gets no compensation ({sc.policy_rule})."
        ),
        user=_scenario_user(
            user,
            instruction=(
                f"Your flight {segment.flight_number} on {_day(segment.date)} (reservation {rid}) was {status}. You "
                "are annoyed and ask for compensation. If the agent explains you are not eligible, insist once, then "
                "accept it and end the call."
            ),
            reason=f"Compensation for the {status} flight {segment.flight_number}.",
            known=f"Your reservation id is {rid}. The flight was {segment.flight_number} on {segment.date}.",
            unknown="You do not know the compensation rules.",
            persona=UPSET,
        ),
        steps=[
            _user(
                f"This is {user.user_id}. My flight {segment.flight_number} on {_day(segment.date)}, reservation "
                f"{rid}, was {status}. I want compensation for this."
            ),
            _get_user(user.user_id),
            _get_reservation(rid),
            _flight_status_call(segment.flight_number, segment.date),
            _say(
                f"I'm sorry for the trouble; flight {segment.flight_number} on {_day(segment.date)} was indeed "
                f"{status}. However, compensation is only available to silver or gold members, travellers with "
                f"insurance, or business passengers, and you are a regular member with no insurance in "
                f"{_cabin(r.cabin)}. So I cannot offer a certificate."
            ),
            _user("That's not fair. Can't you make an exception?"),
            _say(
                "I understand your frustration, but I can't make an exception: as a regular member without "
                "insurance in this cabin you are not eligible for compensation."
            ),
        ],
        required=[_listed(_get_reservation(rid), "reservation_id")],
        forbidden=[_listed(certificate, "user_id")],
        communicate=["regular"],
        assertions=[("user_certificate_total", {"user_id": user.user_id}, "no certificate was added")],
    )


_Builder = Callable[[AirlineDB, Scenario, str, random.Random], _Draft | None]

BUILDERS: dict[str, _Builder] = {
    "cancel_reservation": _cancel_reservation,
    "cancel_reservation_not_allowed": _cancel_reservation_not_allowed,
    "change_flight": _change_flight,
    "change_flight_not_allowed": _change_flight_not_allowed,
    "change_cabin": _change_cabin,
    "change_cabin_not_allowed": _change_cabin_not_allowed,
    "add_baggage": _add_baggage,
    "remove_baggage_not_allowed": _remove_baggage_not_allowed,
    "add_insurance_not_allowed": _add_insurance_not_allowed,
    "update_passengers": _update_passengers,
    "change_passenger_count_not_allowed": _change_passenger_count_not_allowed,
    "book_reservation": _book_reservation,
    "book_too_many_passengers_not_allowed": _book_too_many_passengers_not_allowed,
    "flight_status": _flight_status,
    "compensation_cancelled_flight": _compensation_cancelled_flight,
    "compensation_delayed_flight": _compensation_delayed_flight,
    "compensation_not_allowed": _compensation_not_allowed,
}


# --- assembly ----------------------------------------------------------------------------------------------------


def _entity(sc: Scenario) -> str:
    """What two tasks of a goal must not share."""
    e = sc.entities
    if "reservation_id" in e:
        return e["reservation_id"]
    if sc.goal == "flight_status":
        return f"{e['flight_number']}/{e['date']}"
    return e["user_id"]


def _variety(sc: Scenario) -> str:
    """What makes two tasks of a goal test different things: the deciding rule, or the status to report."""
    return sc.entities["status"] if sc.goal == "flight_status" else sc.policy_rule


def _task(draft: _Draft, task_id: str, seed: int) -> pb.Task | None:
    """Execute the dialogue's calls in an EnvSession; None when a gold call fails (the draft is unusable)."""
    session = EnvSession(DOMAIN, seed=seed)
    messages: list[pb.Message] = []
    gold: list[pb.ToolCall] = []
    for step in draft.steps:
        if isinstance(step, _Text):
            messages.append(text_message(step.role, step.text))
            continue
        call = pb.ToolCall()
        call.CopyFrom(step)
        call.id = f"call_{len(gold)}"
        result = session.call(call)
        if result.error:
            return None
        messages += [assistant_calls(call), tool_message(result)]
        gold.append(step)
    final = messages[-1].content.lower().replace(",", "") if messages[-1].role == pb.ROLE_ASSISTANT else ""
    if not final or any(info.lower() not in final for info in draft.communicate):
        return None  # the dialogue must end with the assistant telling the user what the checker requires
    assertions = [
        pb.StateAssertion(
            side=pb.TOOL_SIDE_AGENT,
            function=function,
            arguments_json=json.dumps(arguments),
            expected_json=json.dumps(ASSERTIONS[function](session.state, **arguments)),
            description=description,
        )
        for function, arguments, description in draft.assertions
    ]
    checker = pb.Checker(
        gold_actions=gold,
        required_actions=draft.required,
        forbidden_actions=draft.forbidden,
        communicate_info=draft.communicate,
        assertions=assertions,
    )
    # tau2's airline basis is DB x COMMUNICATE; ACTION and ASSERTION join wherever the checker has data for them.
    checker.reward_basis.append(pb.REWARD_COMPONENT_STATE)
    if checker.required_actions or checker.forbidden_actions:
        checker.reward_basis.append(pb.REWARD_COMPONENT_ACTION)
    if checker.communicate_info:
        checker.reward_basis.append(pb.REWARD_COMPONENT_COMMUNICATE)
    if checker.assertions:
        checker.reward_basis.append(pb.REWARD_COMPONENT_ASSERTION)
    return pb.Task(
        id=task_id,
        domain=DOMAIN.name,
        description=draft.description,
        user=draft.user,
        reference_dialogue=messages,
        checker=checker,
        provenance=pb.Provenance(source="builtin", seed=seed, backend="procedural"),
    )


def _goal_tasks(goal: str, state: DomainState, seed: int) -> list[pb.Task]:
    sampler, build = SAMPLERS[goal], BUILDERS[goal]
    db = _db(state)
    rng = random.Random(seed)
    seen: set[str] = set()
    fresh: list[_Draft] = []  # a rule (or status) not covered yet
    repeats: list[_Draft] = []
    for draw in range(MAX_DRAWS):
        if len(fresh) >= PER_GOAL or (draw >= VARIETY_DRAWS and len(fresh) + len(repeats) >= PER_GOAL):
            break
        scenario = sampler(state, rng)
        if scenario is None:
            break
        if _entity(scenario) in seen:
            continue
        seen.add(_entity(scenario))
        draft = build(db, scenario, rng.choice(PERSONAS), rng)
        if draft is None:
            continue
        covered = {_variety(d.scenario) for d in fresh}
        (repeats if _variety(scenario) in covered else fresh).append(draft)
    tasks: list[pb.Task] = []
    for draft in fresh + repeats:
        task = _task(draft, f"airline-{goal}-{len(tasks) + 1}", seed)
        if task is not None:
            tasks.append(task)
        if len(tasks) == PER_GOAL:
            break
    return tasks


def sample_tasks(seed: int = 0) -> list[pb.Task]:
    """Up to PER_GOAL tasks for every goal in SAMPLERS, grounded in the airline generated for `seed`."""
    # The seeded initial state (DOMAIN.initial_state(seed)), as the private copy a session starts from: the
    # samplers only read it, and the sessions that execute the dialogues share its base.
    state = EnvSession(DOMAIN, seed=seed).state
    return [task for goal in SAMPLERS if goal in BUILDERS for task in _goal_tasks(goal, state, seed)]
