"""The airline's state: flights (with a status per date), users and reservations, shaped like tau2-bench's airline DB.

Field names and enum values are exactly tau2's, so tau2's db.json validates against `AirlineDB` and dumps back to
the same JSON. `generate_db(seed)` builds a fresh, realistic DB of the same shape for any seed.
"""

from __future__ import annotations

import math
import random
import string
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Cabin = Literal["basic_economy", "economy", "business"]
CABINS: tuple[Cabin, ...] = ("basic_economy", "economy", "business")
FlightType = Literal["one_way", "round_trip"]
Membership = Literal["regular", "silver", "gold"]
Insurance = Literal["yes", "no"]
FlightStatus = Literal["available", "landed", "cancelled", "delayed", "on time", "flying"]

# The fixed "now" of the airline world (EST), as in tau2.
NOW = datetime(2024, 5, 15, 15, 0, 0)
NOW_ISO = NOW.isoformat()  # "2024-05-15T15:00:00"
FIRST_DATE = datetime(2024, 5, 1)
N_DATES = 30  # flights are scheduled 2024-05-01 .. 2024-05-30


class _Model(BaseModel):
    # Unknown fields are errors: a DB that does not fit the model is reported rather than silently trimmed.
    model_config = ConfigDict(extra="forbid")


# --- flights -----------------------------------------------------------------------------------------------------


class FlightDateStatusAvailable(_Model):
    status: Literal["available"]
    available_seats: dict[Cabin, int]
    prices: dict[Cabin, int]


class FlightDateStatusLanded(_Model):
    status: Literal["landed"]
    actual_departure_time_est: str
    actual_arrival_time_est: str


class FlightDateStatusCancelled(_Model):
    status: Literal["cancelled"]


class FlightDateStatusDelayed(_Model):
    status: Literal["delayed"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


class FlightDateStatusOnTime(_Model):
    status: Literal["on time"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


class FlightDateStatusFlying(_Model):
    status: Literal["flying"]
    actual_departure_time_est: str
    estimated_arrival_time_est: str


FlightDateStatus = Annotated[
    FlightDateStatusAvailable
    | FlightDateStatusLanded
    | FlightDateStatusCancelled
    | FlightDateStatusDelayed
    | FlightDateStatusOnTime
    | FlightDateStatusFlying,
    Field(discriminator="status"),
]


class Flight(_Model):
    flight_number: str
    origin: str
    destination: str
    scheduled_departure_time_est: str  # "HH:MM:SS"
    scheduled_arrival_time_est: str  # "HH:MM:SS", with a "+1" suffix when it lands the next day
    dates: dict[str, FlightDateStatus]


# --- users -------------------------------------------------------------------------------------------------------


class Name(_Model):
    first_name: str
    last_name: str


class Address(_Model):
    address1: str
    address2: str | None = None
    city: str
    country: str
    state: str
    zip: str


class Passenger(_Model):
    first_name: str
    last_name: str
    dob: str  # "YYYY-MM-DD"


class CreditCard(_Model):
    source: Literal["credit_card"]
    id: str
    brand: str
    last_four: str


class GiftCard(_Model):
    source: Literal["gift_card"]
    id: str
    amount: float


class Certificate(_Model):
    source: Literal["certificate"]
    id: str
    amount: float


PaymentMethod = Annotated[CreditCard | GiftCard | Certificate, Field(discriminator="source")]


class User(_Model):
    user_id: str
    name: Name
    address: Address
    email: str
    dob: str
    payment_methods: dict[str, PaymentMethod]
    saved_passengers: list[Passenger]
    membership: Membership
    reservations: list[str]


# --- reservations ------------------------------------------------------------------------------------------------


class ReservationFlight(_Model):
    flight_number: str
    origin: str
    destination: str
    date: str
    price: int


class Payment(_Model):
    payment_id: str
    amount: int  # refunds are negative


class Reservation(_Model):
    reservation_id: str
    user_id: str
    origin: str
    destination: str
    flight_type: FlightType
    cabin: Cabin
    flights: list[ReservationFlight]
    passengers: list[Passenger]
    payment_history: list[Payment]
    created_at: str  # "YYYY-MM-DDTHH:MM:SS" (EST)
    total_baggages: int
    nonfree_baggages: int
    insurance: Insurance
    # tau2's db.json omits the key for active reservations; leaving None out of dumps keeps the round trip exact.
    status: Literal["cancelled"] | None = Field(default=None, exclude_if=lambda v: v is None)


class AirlineDB(_Model):
    flights: dict[str, Flight]
    users: dict[str, User]
    reservations: dict[str, Reservation]


# --- the seeded generator ----------------------------------------------------------------------------------------

# (IATA, city, latitude, longitude): the same 20 airports as tau2's list_all_airports.
AIRPORTS: list[tuple[str, str, float, float]] = [
    ("SFO", "San Francisco", 37.6, -122.4),
    ("JFK", "New York", 40.6, -73.8),
    ("LAX", "Los Angeles", 33.9, -118.4),
    ("ORD", "Chicago", 42.0, -87.9),
    ("DFW", "Dallas", 32.9, -97.0),
    ("DEN", "Denver", 39.9, -104.7),
    ("SEA", "Seattle", 47.4, -122.3),
    ("ATL", "Atlanta", 33.6, -84.4),
    ("MIA", "Miami", 25.8, -80.3),
    ("BOS", "Boston", 42.4, -71.0),
    ("PHX", "Phoenix", 33.4, -112.0),
    ("IAH", "Houston", 30.0, -95.3),
    ("LAS", "Las Vegas", 36.1, -115.2),
    ("MCO", "Orlando", 28.4, -81.3),
    ("EWR", "Newark", 40.7, -74.2),
    ("CLT", "Charlotte", 35.2, -80.9),
    ("MSP", "Minneapolis", 44.9, -93.2),
    ("DTW", "Detroit", 42.2, -83.4),
    ("PHL", "Philadelphia", 39.9, -75.2),
    ("LGA", "New York", 40.8, -73.9),
]

FIRST_NAMES = [
    "Mia", "Noah", "Olivia", "Liam", "Emma", "Ethan", "Ava", "Lucas", "Sofia", "Mason", "Isabella", "Yusuf",
    "Amelia", "James", "Harper", "Omar", "Chen", "Raj", "Fatima", "Aarav", "Mei", "Juan", "Anya", "Ivan",
    "Sophia", "Mohamed", "Lei", "Yara", "Daiki", "Evelyn", "Lucas", "Ahmed", "Priya", "Sara", "Mateo", "Nora",
]  # fmt: skip
LAST_NAMES = [
    "Li", "Smith", "Garcia", "Kim", "Brown", "Rossi", "Silva", "Sanchez", "Martin", "Jackson", "Wilson", "Ahmed",
    "Muller", "Davis", "Hernandez", "Lopez", "Nguyen", "Patel", "Khan", "Ito", "Santos", "Moore", "Taylor", "Kovacs",
    "Thomas", "Anderson", "Gonzalez", "Johnson", "Lee", "Wang", "Sato", "Ali", "Novak", "Costa", "Berg", "Jensen",
]  # fmt: skip
STREETS = [
    "Sunset Drive", "Main Street", "Oak Avenue", "Pine Lane", "Maple Drive", "Cedar Street", "Elm Avenue",
    "Lakeview Road", "Hillcrest Drive", "River Road", "Park Avenue", "Willow Lane", "Chestnut Street", "Broadway",
    "Highland Avenue",
]  # fmt: skip
CITIES = [
    ("Austin", "TX", "787"), ("Denver", "CO", "802"), ("Seattle", "WA", "981"), ("Chicago", "IL", "606"),
    ("Phoenix", "AZ", "850"), ("Boston", "MA", "021"), ("Miami", "FL", "331"), ("Atlanta", "GA", "303"),
    ("San Francisco", "CA", "941"), ("New York", "NY", "100"), ("Houston", "TX", "770"), ("Philadelphia", "PA", "191"),
    ("Charlotte", "NC", "282"), ("Detroit", "MI", "482"), ("Minneapolis", "MN", "554"), ("Las Vegas", "NV", "891"),
]  # fmt: skip

PRICE_RANGES: dict[Cabin, tuple[int, int]] = {"basic_economy": (50, 100), "economy": (100, 200), "business": (200, 500)}
# Free checked bags per passenger, by the booking user's membership and the cabin (the policy's table).
FREE_BAGS: dict[Membership, dict[Cabin, int]] = {
    "regular": {"basic_economy": 0, "economy": 1, "business": 2},
    "silver": {"basic_economy": 1, "economy": 2, "business": 3},
    "gold": {"basic_economy": 2, "economy": 3, "business": 4},
}
# Ids the tools hand out themselves (book_reservation, send_certificate): the generator never uses them.
RESERVED_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV")
RESERVED_CERTIFICATE_IDS = ("certificate_3221322", "certificate_3221323", "certificate_3221324")


DATES = [(FIRST_DATE + timedelta(days=day)).strftime("%Y-%m-%d") for day in range(N_DATES)]


def date_str(day: int) -> str:
    """'2024-05-DD' for day index 0..29."""
    return DATES[day]


def _clock(minutes: int) -> str:
    """'HH:MM:SS' for minutes after midnight, with '+1' when it falls on the next day."""
    day, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return text + ("+1" if day else "")


def _at(day: int, minutes: int) -> datetime:
    return FIRST_DATE + timedelta(days=day, minutes=minutes)


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


def _duration_minutes(a: tuple[str, str, float, float], b: tuple[str, str, float, float]) -> int:
    distance = math.hypot(a[2] - b[2], (a[3] - b[3]) * 0.8)  # degrees, roughly
    hours = max(1.0, round((0.6 + distance / 7.5) * 2) / 2)
    return int(hours * 60)


def _date_status(rng: random.Random, day: int, dep: int, dur: int) -> dict[str, Any]:
    """One date's status, judged against NOW: past flights landed (or were cancelled), today's are in progress."""
    scheduled_dep = _at(day, dep)
    if scheduled_dep.date() > NOW.date():
        return {
            "status": "available",
            "available_seats": {c: rng.randint(0, 20) for c in CABINS},
            "prices": {c: rng.randint(*PRICE_RANGES[c]) for c in CABINS},
        }
    dep_shift = rng.randint(-30, 30)
    arr_shift = dep_shift + rng.randint(-20, 20)
    actual_dep = scheduled_dep + timedelta(minutes=dep_shift)
    actual_arr = scheduled_dep + timedelta(minutes=dur + arr_shift)
    if actual_arr <= NOW:
        if rng.random() < 0.08:
            return {"status": "cancelled"}
        return {
            "status": "landed",
            "actual_departure_time_est": _iso(actual_dep),
            "actual_arrival_time_est": _iso(actual_arr),
        }
    if actual_dep <= NOW:
        return {
            "status": "flying",
            "actual_departure_time_est": _iso(actual_dep),
            "estimated_arrival_time_est": _iso(actual_arr),
        }
    if rng.random() < 0.4:
        delay = timedelta(minutes=rng.choice([45, 60, 90, 120, 180, 240]))
        return {
            "status": "delayed",
            "estimated_departure_time_est": _iso(scheduled_dep + delay),
            "estimated_arrival_time_est": _iso(scheduled_dep + timedelta(minutes=dur) + delay),
        }
    return {
        "status": "on time",
        "estimated_departure_time_est": _iso(scheduled_dep),
        "estimated_arrival_time_est": _iso(scheduled_dep + timedelta(minutes=dur)),
    }


def _gen_flights(rng: random.Random, n_flights: int) -> list[dict[str, Any]]:
    n_airports = len(AIRPORTS)
    pairs = [(i, j) for i in range(n_airports) for j in range(i + 1, n_airports)]
    rng.shuffle(pairs)
    # Both directions of every chosen pair are served, so round trips exist; busy routes get several flights.
    routes: list[tuple[int, int]] = []
    for i, j in pairs[: max(1, n_flights * 11 // 60)]:
        routes += [(i, j), (j, i)]
    assigned = routes[:n_flights] + [rng.choice(routes) for _ in range(max(0, n_flights - len(routes)))]
    rng.shuffle(assigned)
    flights = []
    for k, (i, j) in enumerate(assigned):
        origin, dest = AIRPORTS[i], AIRPORTS[j]
        dep = rng.randint(0, 23) * 60
        dur = _duration_minutes(origin, dest)
        flights.append(
            {
                "flight_number": f"HAT{k + 1:03d}",
                "origin": origin[0],
                "destination": dest[0],
                "scheduled_departure_time_est": _clock(dep),
                "scheduled_arrival_time_est": _clock(dep + dur),
                "dates": {date_str(day): _date_status(rng, day, dep, dur) for day in range(N_DATES)},
            }
        )
    return flights


def random_person(rng: random.Random) -> dict[str, str]:
    dob = datetime(1950, 1, 1) + timedelta(days=rng.randint(0, 55 * 365))
    return {"first_name": rng.choice(FIRST_NAMES), "last_name": rng.choice(LAST_NAMES), "dob": dob.strftime("%Y-%m-%d")}


def _gen_users(rng: random.Random, n_users: int) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    taken_users: set[str] = set()
    taken_payments: set[str] = set(RESERVED_CERTIFICATE_IDS)

    def payment_id(source: str) -> str:
        while True:
            candidate = f"{source}_{rng.randint(1_000_000, 9_999_999)}"
            if candidate not in taken_payments:
                taken_payments.add(candidate)
                return candidate

    for _ in range(n_users):
        person = random_person(rng)
        first, last = person["first_name"], person["last_name"]
        while True:
            user_id = f"{first.lower()}_{last.lower()}_{rng.randint(1000, 9999)}"
            if user_id not in taken_users:
                taken_users.add(user_id)
                break
        methods: dict[str, dict[str, Any]] = {}
        for _ in range(rng.choices([1, 2, 3, 4, 5], weights=[16, 30, 25, 18, 11])[0]):
            source = rng.choices(["credit_card", "gift_card", "certificate"], weights=[35, 35, 30])[0]
            pid = payment_id(source)
            if source == "credit_card":
                methods[pid] = {
                    "source": "credit_card",
                    "id": pid,
                    "brand": rng.choice(["visa", "mastercard"]),
                    "last_four": f"{rng.randint(0, 9999):04d}",
                }
            elif source == "gift_card":
                methods[pid] = {"source": "gift_card", "id": pid, "amount": float(rng.randint(0, 300))}
            else:
                methods[pid] = {"source": "certificate", "id": pid, "amount": float(rng.choice([100, 150, 250, 500]))}
        city, state, zip_prefix = rng.choice(CITIES)
        users.append(
            {
                "user_id": user_id,
                "name": {"first_name": first, "last_name": last},
                "address": {
                    "address1": f"{rng.randint(100, 999)} {rng.choice(STREETS)}",
                    "address2": f"Suite {rng.randint(100, 999)}",
                    "city": city,
                    "country": "USA",
                    "state": state,
                    "zip": f"{zip_prefix}{rng.randint(0, 99):02d}",
                },
                "email": f"{first.lower()}.{last.lower()}{rng.randint(1000, 9999)}@example.com",
                "dob": person["dob"],
                "payment_methods": methods,
                "saved_passengers": [random_person(rng) for _ in range(rng.choice([0, 1, 1, 2]))],
                "membership": rng.choices(["regular", "silver", "gold"], weights=[30, 36, 34])[0],
                "reservations": [],
            }
        )
    return users


class _Network:
    """Flights indexed for itinerary building during generation."""

    def __init__(self, flights: list[dict[str, Any]]) -> None:
        self.by_origin: dict[str, list[dict[str, Any]]] = {}
        for flight in flights:
            self.by_origin.setdefault(flight["origin"], []).append(flight)

    def direct(self, origin: str, destination: str) -> list[dict[str, Any]]:
        return [f for f in self.by_origin.get(origin, []) if f["destination"] == destination]

    def connection(
        self, rng: random.Random, origin: str, day: int, avoid: str
    ) -> list[tuple[dict[str, Any], int]] | None:
        """A random two-leg trip from `origin` on `day` that does not end where it started (or at `avoid`)."""
        firsts = self.by_origin.get(origin, [])
        for leg1 in rng.sample(firsts, min(4, len(firsts))):
            arrival = leg1["scheduled_arrival_time_est"]
            day2 = day + 1 if "+1" in arrival else day
            seconds = [
                f
                for f in self.by_origin.get(leg1["destination"], [])
                if f["destination"] not in (origin, avoid) and f["scheduled_departure_time_est"] >= arrival
            ]
            if seconds and day2 < N_DATES:
                return [(leg1, day), (rng.choice(seconds), day2)]
        return None

    def connection_to(
        self, rng: random.Random, origin: str, destination: str, day: int
    ) -> list[tuple[dict[str, Any], int]] | None:
        for leg1 in self.by_origin.get(origin, []):
            arrival = leg1["scheduled_arrival_time_est"]
            day2 = day + 1 if "+1" in arrival else day
            for leg2 in self.direct(leg1["destination"], destination):
                if leg2["scheduled_departure_time_est"] >= arrival and day2 < N_DATES:
                    return [(leg1, day), (leg2, day2)]
        return None


def _leg_price(rng: random.Random, flight: dict[str, Any], day: int, cabin: Cabin) -> int:
    status = flight["dates"][date_str(day)]
    if status["status"] == "available":
        # The fare paid at booking time drifts a little from today's price.
        low, high = PRICE_RANGES[cabin]
        return int(min(high, max(low, status["prices"][cabin] + rng.randint(-15, 15))))
    return rng.randint(*PRICE_RANGES[cabin])


def _reservation_id(rng: random.Random, taken: set[str]) -> str:
    alphabet = string.ascii_uppercase + string.digits
    while True:
        candidate = "".join(rng.choice(alphabet) for _ in range(6))
        if candidate not in taken and candidate not in RESERVED_RESERVATION_IDS:
            taken.add(candidate)
            return candidate


def _gen_reservation(
    rng: random.Random, net: _Network, user: dict[str, Any], reservation_id: str
) -> dict[str, Any] | None:
    origin = rng.choice(sorted(net.by_origin))
    flight_type: FlightType = "round_trip" if rng.random() < 0.48 else "one_way"
    day = rng.choices([rng.randint(0, 14), rng.randint(15, N_DATES - 1)], weights=[35, 65])[0]
    if rng.random() < 0.55:
        first = rng.choice(net.by_origin[origin])
        outbound = [(first, day)]
        destination = first["destination"]
    else:
        legs = net.connection(rng, origin, day, avoid=origin)
        if legs is None:
            return None
        outbound, destination = legs, legs[-1][0]["destination"]
    itinerary = list(outbound)
    if flight_type == "round_trip":
        back_day = outbound[-1][1] + rng.randint(1, 5)
        if back_day >= N_DATES:
            flight_type = "one_way"
        else:
            directs = net.direct(destination, origin)
            back = [(rng.choice(directs), back_day)] if directs and rng.random() < 0.7 else None
            back = back or net.connection_to(rng, destination, origin, back_day)
            if back is None:
                flight_type = "one_way"
            else:
                itinerary += back
    cabin: Cabin = rng.choice(CABINS)
    membership: Membership = user["membership"]
    n_passengers = rng.choices([1, 2, 3, 4], weights=[46, 33, 16, 5])[0]
    passengers = [random_person(rng) for _ in range(n_passengers)]
    if rng.random() < 0.8:
        passengers[0] = {
            "first_name": user["name"]["first_name"],
            "last_name": user["name"]["last_name"],
            "dob": user["dob"],
        }
    for i, saved in enumerate(user["saved_passengers"][: n_passengers - 1]):
        if rng.random() < 0.5:
            passengers[i + 1] = dict(saved)
    flights = [
        {
            "flight_number": f["flight_number"],
            "origin": f["origin"],
            "destination": f["destination"],
            "date": date_str(d),
            "price": _leg_price(rng, f, d, cabin),
        }
        for f, d in itinerary
    ]
    insurance: Insurance = "yes" if rng.random() < 0.5 else "no"
    free = FREE_BAGS[membership][cabin] * n_passengers
    total_bags = rng.choices([0, 1, 2, 3, free + 1], weights=[50, 22, 14, 6, 8])[0]
    nonfree = max(0, total_bags - free)
    total = (
        sum(f["price"] for f in flights) * n_passengers
        + (30 * n_passengers if insurance == "yes" else 0)
        + 50 * nonfree
    )
    # Booked at some point before the first departure (and before now); a few within the last 24 hours.
    first_flight, first_day = itinerary[0]
    hours, minutes = first_flight["scheduled_departure_time_est"].split(":")[:2]
    latest = min(_at(first_day, int(hours) * 60 + int(minutes)), NOW)
    day_ago = NOW - timedelta(days=1)
    if latest > day_ago + timedelta(minutes=2) and rng.random() < 0.04:
        created = day_ago + timedelta(seconds=rng.randint(60, int((latest - day_ago).total_seconds()) - 60))
    else:
        earliest = datetime(2024, 4, 30)
        span = max(60, int((latest - earliest).total_seconds()) - 60)
        created = earliest + timedelta(seconds=rng.randint(0, span))
    payable = [m for m in user["payment_methods"].values() if m["source"] != "certificate"]
    payment_id = rng.choice(payable)["id"] if payable else f"credit_card_{rng.randint(1_000_000, 9_999_999)}"
    reservation: dict[str, Any] = {
        "reservation_id": reservation_id,
        "user_id": user["user_id"],
        "origin": origin,
        "destination": destination,
        "flight_type": flight_type,
        "cabin": cabin,
        "flights": flights,
        "passengers": passengers,
        "payment_history": [{"payment_id": payment_id, "amount": total}],
        "created_at": _iso(created),
        "total_baggages": total_bags,
        "nonfree_baggages": nonfree,
        "insurance": insurance,
    }
    if rng.random() < 0.03:
        reservation["status"] = "cancelled"
        reservation["payment_history"].append({"payment_id": payment_id, "amount": -total})
    return reservation


def generate_db(seed: int = 0, n_flights: int = 300, n_users: int = 500, n_reservations: int = 2000) -> AirlineDB:
    """A seeded airline of tau2's shape and size: May 2024 flights judged against the fixed now, users, bookings."""
    rng = random.Random(seed)
    flights = _gen_flights(rng, n_flights)
    users = _gen_users(rng, n_users)
    net = _Network(flights)
    reservations: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    # Some users travel a lot, some never: a skewed choice of owner.
    cum_weights: list[float] = []
    for _ in users:
        cum_weights.append((cum_weights[-1] if cum_weights else 0.0) + rng.choice([0, 1, 2, 3, 5, 8]) + 0.1)
    attempts = 0
    while len(reservations) < n_reservations and users and attempts < n_reservations * 3:
        attempts += 1
        user = rng.choices(users, cum_weights=cum_weights)[0]
        reservation_id = _reservation_id(rng, taken)
        reservation = _gen_reservation(rng, net, user, reservation_id)
        if reservation is None:
            continue
        reservations[reservation_id] = reservation
        user["reservations"].append(reservation_id)
    return AirlineDB.model_validate(
        {
            "flights": {f["flight_number"]: f for f in flights},
            "users": {u["user_id"]: u for u in users},
            "reservations": reservations,
        }
    )
