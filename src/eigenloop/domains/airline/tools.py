"""The airline's 14 agent tools, with tau2-bench's names, arguments and effects.

Like tau2's, the tools check that ids exist, that flights can be booked and that payments add up, but they do
not enforce the policy (24-hour window, basic-economy restrictions, baggage allowances, confirmations): that is
the agent's job, and the grader sees it through the final state.

Every write tool checks everything before it changes anything, so a refused call leaves the state as it was.
Entities that are changed are reached by item access on their collection (`db.reservations[rid]`,
`db.users[uid]`, `db.flights[fn]`), never through an iteration over `.values()`, so that the collections can
become copy-on-write.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eigenloop.domains.airline.db import (
    AIRPORTS,
    NOW_ISO,
    AirlineDB,
    Cabin,
    Certificate,
    Flight,
    FlightDateStatus,
    FlightDateStatusAvailable,
    FlightType,
    GiftCard,
    Insurance,
    Passenger,
    Payment,
    Reservation,
    ReservationFlight,
    User,
)
from eigenloop.domains.base import ToolError, ToolKind, tool

# --- argument types ----------------------------------------------------------------------------------------------

UserId = Annotated[str, Field(description="The user's id, such as 'sara_doe_496'.", min_length=1, max_length=64)]
ReservationId = Annotated[str, Field(description="The reservation id, such as '8JX2WO'.", min_length=1, max_length=16)]
FlightNumber = Annotated[str, Field(description="The flight number, such as 'HAT001'.", min_length=1, max_length=16)]
Date = Annotated[
    str, Field(description="A date in the format 'YYYY-MM-DD', such as '2024-05-01'.", pattern=r"^\d{4}-\d{2}-\d{2}$")
]
Airport = Annotated[str, Field(description="A three-letter IATA airport code, such as 'SFO'.", pattern=r"^[A-Z]{3}$")]
PaymentId = Annotated[
    str,
    Field(
        description="A payment method id from the user's profile, such as 'credit_card_7815826', 'gift_card_7815826'"
        " or 'certificate_7815826'.",
        min_length=1,
        max_length=64,
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=100)]
Count = Annotated[int, Field(ge=0, le=100)]


class _Argument(BaseModel):
    # Nested argument objects are as strict as the top-level arguments: no coercion, no unknown keys.
    model_config = ConfigDict(extra="forbid", strict=True)


class FlightInfo(_Argument):
    flight_number: FlightNumber
    date: Date


class PassengerInfo(_Argument):
    first_name: Name
    last_name: Name
    dob: Annotated[str, Field(description="Date of birth, 'YYYY-MM-DD'.", pattern=r"^\d{4}-\d{2}-\d{2}$")]


class PaymentInfo(_Argument):
    payment_id: PaymentId
    amount: Annotated[int, Field(description="The amount in dollars to charge to this payment method.", ge=0)]


class AirportInfo(BaseModel):
    iata: str
    city: str


class DirectFlight(BaseModel):
    """A bookable flight on one date, as the search tools report it."""

    flight_number: str
    origin: str
    destination: str
    status: Literal["available"] = "available"
    scheduled_departure_time_est: str
    scheduled_arrival_time_est: str
    date: str | None = None
    available_seats: dict[Cabin, int]
    prices: dict[Cabin, int]


# --- lookups -----------------------------------------------------------------------------------------------------


def _user(db: AirlineDB, user_id: str) -> User:
    if user_id not in db.users:
        raise ToolError(f"User {user_id} not found")
    return db.users[user_id]


def _reservation(db: AirlineDB, reservation_id: str) -> Reservation:
    if reservation_id not in db.reservations:
        raise ToolError(f"Reservation {reservation_id} not found")
    return db.reservations[reservation_id]


def _flight(db: AirlineDB, flight_number: str) -> Flight:
    if flight_number not in db.flights:
        raise ToolError(f"Flight {flight_number} not found")
    return db.flights[flight_number]


def _flight_date(db: AirlineDB, flight_number: str, date: str) -> FlightDateStatus:
    flight = _flight(db, flight_number)
    if date not in flight.dates:
        raise ToolError(f"Flight {flight_number} not found on date {date}")
    return flight.dates[date]


def _bookable(db: AirlineDB, flight_number: str, date: str, cabin: Cabin, seats: int) -> FlightDateStatusAvailable:
    """The flight's availability on `date`, which must leave `seats` seats in `cabin`."""
    status = _flight_date(db, flight_number, date)
    if not isinstance(status, FlightDateStatusAvailable):
        raise ToolError(f"Flight {flight_number} not available on date {date}")
    if status.available_seats.get(cabin, 0) < seats:
        raise ToolError(f"Not enough seats on flight {flight_number}")
    return status


def _check_update_payment(user: User, payment_id: str, amount: int) -> None:
    """tau2's payment rule for changes to a reservation: no certificates, and a gift card must cover the amount."""
    if payment_id not in user.payment_methods:
        raise ToolError("Payment method not found")
    method = user.payment_methods[payment_id]
    if isinstance(method, Certificate):
        raise ToolError("Certificate cannot be used to update reservation")
    if isinstance(method, GiftCard) and method.amount < amount:
        raise ToolError("Gift card balance is not enough")


def _apply_update_payment(db: AirlineDB, user_id: str, reservation_id: str, payment_id: str, amount: int) -> None:
    """Debit (or, for a negative amount, credit) a gift card and record the payment; call after the checks."""
    user = db.users[user_id]
    method = user.payment_methods[payment_id]
    if isinstance(method, GiftCard):
        method.amount -= amount
    if amount != 0:
        db.reservations[reservation_id].payment_history.append(Payment(payment_id=payment_id, amount=amount))


# --- read tools --------------------------------------------------------------------------------------------------


@tool(kind=ToolKind.READ)
def get_user_details(db: AirlineDB, user_id: UserId) -> User:
    """Get the details of a user: name, address, email, date of birth, membership level, payment methods
    (with gift card and certificate balances), saved passengers and reservation ids."""
    return _user(db, user_id)


@tool(kind=ToolKind.READ)
def get_reservation_details(db: AirlineDB, reservation_id: ReservationId) -> Reservation:
    """Get the details of a reservation: owner, trip type, cabin, flights with the price paid per passenger,
    passengers, payment history, creation time, baggage, insurance and status."""
    return _reservation(db, reservation_id)


@tool(kind=ToolKind.READ)
def get_flight_status(db: AirlineDB, flight_number: FlightNumber, date: Date) -> str:
    """Get the status of a flight on a date: 'available', 'on time', 'delayed', 'flying', 'landed' or 'cancelled'."""
    return _flight_date(db, flight_number, date).status


@tool(kind=ToolKind.READ)
def list_all_airports(db: AirlineDB) -> list[AirportInfo]:
    """List every airport the airline serves, with its IATA code and city."""
    return [AirportInfo(iata=code, city=city) for code, city, _, _ in AIRPORTS]


def _available_from(db: AirlineDB, origin: str, destination: str | None, date: str) -> list[DirectFlight]:
    found = []
    for flight in db.flights.values():  # read only
        if flight.origin != origin or (destination is not None and flight.destination != destination):
            continue
        status = flight.dates.get(date)
        if isinstance(status, FlightDateStatusAvailable):
            found.append(
                DirectFlight(
                    flight_number=flight.flight_number,
                    origin=flight.origin,
                    destination=flight.destination,
                    scheduled_departure_time_est=flight.scheduled_departure_time_est,
                    scheduled_arrival_time_est=flight.scheduled_arrival_time_est,
                    available_seats=dict(status.available_seats),
                    prices=dict(status.prices),
                )
            )
    return found


def _next_day(date: str) -> str:
    # tau2 builds the next day as f"2024-05-{day + 1}" (no zero padding, no month rollover); bookable dates in
    # its DB and in generated ones are 2024-05-16..30, where both give the same string.
    try:
        return (datetime.strptime(date, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")
    except ValueError:
        return date


@tool(kind=ToolKind.READ)
def search_direct_flight(db: AirlineDB, origin: Airport, destination: Airport, date: Date) -> list[DirectFlight]:
    """Search for direct flights between two airports on a date. Only flights that can still be booked that day
    are listed, with their seats left and prices per cabin."""
    return _available_from(db, origin, destination, date)


@tool(kind=ToolKind.READ)
def search_onestop_flight(db: AirlineDB, origin: Airport, destination: Airport, date: Date) -> list[list[DirectFlight]]:
    """Search for one-stop connections between two airports, departing on a date. Each result is a pair
    [first leg, second leg]; the second leg leaves after the first one lands (the next day if the first
    arrives after midnight). Both legs carry their date."""
    results = []
    for leg1 in _available_from(db, origin, None, date):
        leg2_date = _next_day(date) if "+1" in leg1.scheduled_arrival_time_est else date
        for leg2 in _available_from(db, leg1.destination, destination, leg2_date):
            # Times compare as strings, as in tau2.
            if leg2.scheduled_departure_time_est >= leg1.scheduled_arrival_time_est:
                results.append([leg1.model_copy(update={"date": date}), leg2.model_copy(update={"date": leg2_date})])
    return results


# --- generic tools -----------------------------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        result: int | float = _UNARY[type(node.op)](_evaluate(node.operand))
        return result
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e12):
            raise ToolError("Exponent too large")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex):  # e.g. (-8) ** 0.5
            raise ToolError("Result is not a real number")
        return result
    raise ToolError("Invalid expression: only numbers, + - * / ** // and parentheses are allowed")


@tool(kind=ToolKind.GENERIC)
def calculate(
    db: AirlineDB,
    expression: Annotated[
        str,
        Field(
            description="An arithmetic expression such as '2 * (350 - 122)': digits, + - * / ( ) . and spaces.",
            max_length=1000,
        ),
    ],
) -> str:
    """Calculate the result of an arithmetic expression; the result is rounded to 2 decimals."""
    if not all(char in "0123456789+-*/(). " for char in expression):
        raise ToolError("Invalid characters in expression")
    # tau2 hands the expression to eval(); here it is parsed and only arithmetic is evaluated.
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ToolError(f"Invalid expression: {expression}") from None
    try:
        value = _evaluate(tree)
        return str(round(float(value), 2))
    except ZeroDivisionError:
        raise ToolError("Division by zero") from None
    except RecursionError:
        raise ToolError(f"Invalid expression: {expression}") from None
    except OverflowError:
        raise ToolError("Result is too large") from None


@tool(kind=ToolKind.GENERIC)
def transfer_to_human_agents(
    db: AirlineDB,
    summary: Annotated[str, Field(description="A summary of the user's issue for the human agent.", max_length=4000)],
) -> str:
    """Transfer the user to a human agent, with a summary of the issue. Only transfer if the user explicitly asks
    for a human agent, or if the request cannot be handled with the available tools and the policy."""
    return "Transfer successful"


# --- write tools -------------------------------------------------------------------------------------------------


@tool(kind=ToolKind.WRITE)
def book_reservation(
    db: AirlineDB,
    user_id: UserId,
    origin: Airport,
    destination: Airport,
    flight_type: FlightType,
    cabin: Cabin,
    flights: Annotated[
        list[FlightInfo],
        Field(
            description="Every flight segment of the trip, in order, each with its flight number and date.",
            min_length=1,
        ),
    ],
    passengers: Annotated[
        list[PassengerInfo],
        Field(description="Every passenger, with first name, last name and date of birth.", min_length=1),
    ],
    payment_methods: Annotated[
        list[PaymentInfo],
        Field(
            description="The payment methods from the user's profile and the amount charged to each; they must add up"
            " to the total price."
        ),
    ],
    total_baggages: Annotated[Count, Field(description="The total number of checked bags.")],
    nonfree_baggages: Annotated[Count, Field(description="The number of checked bags that are paid for ($50 each).")],
    insurance: Annotated[Insurance, Field(description="Whether to buy travel insurance ($30 per passenger).")],
) -> Reservation:
    """Book a reservation. The total price is the sum of the flights' current prices in the cabin times the number
    of passengers, plus $30 per passenger for insurance and $50 per non-free bag."""
    # tau2 hands out these three ids in turn, so every booking is deterministic already.
    reservation_id = next((rid for rid in ("HATHAT", "HATHAU", "HATHAV") if rid not in db.reservations), None)
    if reservation_id is None:
        raise ToolError("Too many reservations")
    user = _user(db, user_id)
    n_passengers = len(passengers)

    # Check every segment. Unlike tau2, a flight listed twice must have seats for both bookings.
    seats_needed: dict[tuple[str, str], int] = {}
    segments: list[ReservationFlight] = []
    total_price = 0
    for info in flights:
        key = (info.flight_number, info.date)
        seats_needed[key] = seats_needed.get(key, 0) + n_passengers
        status = _bookable(db, info.flight_number, info.date, cabin, seats_needed[key])
        flight = db.flights[info.flight_number]
        price = status.prices[cabin]
        segments.append(
            ReservationFlight(
                flight_number=info.flight_number,
                origin=flight.origin,
                destination=flight.destination,
                date=info.date,
                price=price,
            )
        )
        total_price += price * n_passengers
    if insurance == "yes":
        total_price += 30 * n_passengers
    total_price += 50 * nonfree_baggages

    # Check the payments. Unlike tau2, a method listed twice must cover the sum of its amounts.
    charged: dict[str, int] = {}
    for payment in payment_methods:
        if payment.payment_id not in user.payment_methods:
            raise ToolError(f"Payment method {payment.payment_id} not found")
        charged[payment.payment_id] = charged.get(payment.payment_id, 0) + payment.amount
        method = user.payment_methods[payment.payment_id]
        if isinstance(method, GiftCard | Certificate) and method.amount < charged[payment.payment_id]:
            raise ToolError(f"Not enough balance in payment method {payment.payment_id}")
    total_payment = sum(p.amount for p in payment_methods)
    if total_payment != total_price:
        raise ToolError(f"Payment amount does not add up, total price is {total_price}, but paid {total_payment}")

    # Every check passed: apply.
    owner = db.users[user_id]
    for payment_id, amount in charged.items():
        method = owner.payment_methods[payment_id]
        if isinstance(method, GiftCard):
            method.amount -= amount
        elif isinstance(method, Certificate):
            del owner.payment_methods[payment_id]  # a certificate is used up whatever is left on it
    for (flight_number, date), seats in seats_needed.items():
        booked = db.flights[flight_number].dates[date]
        assert isinstance(booked, FlightDateStatusAvailable)
        booked.available_seats[cabin] -= seats
    reservation = Reservation(
        reservation_id=reservation_id,
        user_id=user_id,
        origin=origin,
        destination=destination,
        flight_type=flight_type,
        cabin=cabin,
        flights=segments,
        passengers=[Passenger(**p.model_dump()) for p in passengers],
        payment_history=[Payment(payment_id=p.payment_id, amount=p.amount) for p in payment_methods],
        created_at=NOW_ISO,
        total_baggages=total_baggages,
        nonfree_baggages=nonfree_baggages,
        insurance=insurance,
    )
    db.reservations[reservation_id] = reservation
    owner.reservations.append(reservation_id)
    return db.reservations[reservation_id]


@tool(kind=ToolKind.WRITE)
def cancel_reservation(db: AirlineDB, reservation_id: ReservationId) -> Reservation:
    """Cancel a whole reservation: every payment is refunded to its original payment method."""
    _reservation(db, reservation_id)
    reservation = db.reservations[reservation_id]
    # As in tau2: every payment entry (refunds included) gets a negating entry; seats and balances stay as they are.
    refunds = [Payment(payment_id=p.payment_id, amount=-p.amount) for p in reservation.payment_history]
    reservation.payment_history.extend(refunds)
    reservation.status = "cancelled"
    return reservation


@tool(kind=ToolKind.WRITE)
def update_reservation_baggages(
    db: AirlineDB,
    reservation_id: ReservationId,
    total_baggages: Annotated[Count, Field(description="The new total number of checked bags.")],
    nonfree_baggages: Annotated[Count, Field(description="The new number of paid checked bags ($50 each).")],
    payment_id: PaymentId,
) -> Reservation:
    """Update the checked bags of a reservation. Each additional non-free bag costs $50, charged to the given
    payment method (a credit card or gift card from the user's profile)."""
    current = _reservation(db, reservation_id)
    user = _user(db, current.user_id)
    charge = 50 * max(0, nonfree_baggages - current.nonfree_baggages)
    _check_update_payment(user, payment_id, charge)

    _apply_update_payment(db, current.user_id, reservation_id, payment_id, charge)
    reservation = db.reservations[reservation_id]
    reservation.total_baggages = total_baggages
    reservation.nonfree_baggages = nonfree_baggages
    return reservation


@tool(kind=ToolKind.WRITE)
def update_reservation_flights(
    db: AirlineDB,
    reservation_id: ReservationId,
    cabin: Cabin,
    flights: Annotated[
        list[FlightInfo],
        Field(
            description="The whole new itinerary, every segment in order, including the ones that do not change.",
            min_length=1,
        ),
    ],
    payment_id: PaymentId,
) -> Reservation:
    """Update the flights and/or the cabin of a reservation. Segments kept unchanged in the same cabin keep the
    price paid; any other segment is priced at its current price. The price difference for all passengers is
    charged to, or refunded to, the given payment method (a credit card or gift card from the user's profile)."""
    current = _reservation(db, reservation_id)
    user = _user(db, current.user_id)
    n_passengers = len(current.passengers)
    segments: list[ReservationFlight] = []
    for info in flights:
        kept = next(
            (
                f
                for f in current.flights
                if f.flight_number == info.flight_number and f.date == info.date and cabin == current.cabin
            ),
            None,
        )
        if kept is not None:
            segments.append(kept.model_copy())
            continue
        # As in tau2, seats are checked but not taken (nor are the old segment's seats given back).
        status = _bookable(db, info.flight_number, info.date, cabin, n_passengers)
        flight = db.flights[info.flight_number]
        segments.append(
            ReservationFlight(
                flight_number=info.flight_number,
                origin=flight.origin,
                destination=flight.destination,
                date=info.date,
                price=status.prices[cabin],
            )
        )
    difference = (sum(s.price for s in segments) - sum(f.price for f in current.flights)) * n_passengers
    _check_update_payment(user, payment_id, difference)

    _apply_update_payment(db, current.user_id, reservation_id, payment_id, difference)
    reservation = db.reservations[reservation_id]
    reservation.flights = segments
    reservation.cabin = cabin
    return reservation


@tool(kind=ToolKind.WRITE)
def update_reservation_passengers(
    db: AirlineDB,
    reservation_id: ReservationId,
    passengers: Annotated[
        list[PassengerInfo],
        Field(description="The full new passenger list; it must have as many passengers as the reservation."),
    ],
) -> Reservation:
    """Update the passenger information of a reservation. The number of passengers cannot change."""
    current = _reservation(db, reservation_id)
    if len(passengers) != len(current.passengers):
        raise ToolError("Number of passengers does not match")
    reservation = db.reservations[reservation_id]
    reservation.passengers = [Passenger(**p.model_dump()) for p in passengers]
    return reservation


@tool(kind=ToolKind.WRITE)
def send_certificate(
    db: AirlineDB,
    user_id: UserId,
    amount: Annotated[int, Field(description="The certificate's value in dollars.", ge=0, le=100_000)],
) -> str:
    """Send a travel certificate of the given amount to a user, e.g. as a gesture of goodwill."""
    user = _user(db, user_id)
    # tau2 uses these three fixed ids in turn: deterministic already.
    payment_id = next(
        (
            c
            for c in ("certificate_3221322", "certificate_3221323", "certificate_3221324")
            if c not in user.payment_methods
        ),
        None,
    )
    if payment_id is None:
        raise ToolError("Too many certificates")
    db.users[user_id].payment_methods[payment_id] = Certificate(source="certificate", id=payment_id, amount=amount)
    return f"Certificate {payment_id} added to user {user_id} with amount {amount}."


TOOLS: list[Any] = [
    book_reservation,
    calculate,
    cancel_reservation,
    get_reservation_details,
    get_user_details,
    list_all_airports,
    search_direct_flight,
    search_onestop_flight,
    send_certificate,
    transfer_to_human_agents,
    update_reservation_baggages,
    update_reservation_flights,
    update_reservation_passengers,
    get_flight_status,
]
