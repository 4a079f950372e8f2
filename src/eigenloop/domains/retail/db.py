"""The retail store's state: a product catalogue with variants, users with payment methods, and orders.

Field names, id formats and enum values follow tau2-bench's retail DB so that its `db.json` validates against
these models and dumps back unchanged (apart from the optional order fields, which dump as null, as in tau2).
`generate_db` builds a fresh, seeded store of a similar shape from the vocabulary below.
"""

from __future__ import annotations

import itertools
import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

OrderStatus = Literal[
    "pending",
    "processed",
    "delivered",
    "cancelled",
    "pending (item modified)",
    "exchange requested",
    "return requested",
]
CancelReason = Literal["no longer needed", "ordered by mistake"]
CANCEL_REASONS: tuple[CancelReason, ...] = ("no longer needed", "ordered by mistake")
TransactionType = Literal["payment", "refund"]
CardBrand = Literal["visa", "mastercard"]


class _Model(BaseModel):
    # Unknown keys are errors: the models must describe the data exactly.
    model_config = ConfigDict(extra="forbid")


class Address(_Model):
    address1: str
    address2: str
    city: str
    country: str
    state: str
    zip: str


class UserName(_Model):
    first_name: str
    last_name: str


class CreditCard(_Model):
    source: Literal["credit_card"]
    id: str
    brand: CardBrand
    last_four: str


class Paypal(_Model):
    source: Literal["paypal"]
    id: str


class GiftCard(_Model):
    source: Literal["gift_card"]
    id: str
    balance: float


PaymentMethod = Annotated[CreditCard | Paypal | GiftCard, Field(discriminator="source")]


class User(_Model):
    user_id: str
    name: UserName
    address: Address
    email: str
    payment_methods: dict[str, PaymentMethod]
    orders: list[str]


class Variant(_Model):
    item_id: str
    options: dict[str, str]
    available: bool
    price: float


class Product(_Model):
    name: str
    product_id: str
    variants: dict[str, Variant]


class OrderItem(_Model):
    name: str
    product_id: str
    item_id: str
    price: float
    options: dict[str, str]


class Fulfillment(_Model):
    tracking_id: list[str]
    item_ids: list[str]


class PaymentTransaction(_Model):
    transaction_type: TransactionType
    amount: float
    payment_method_id: str


class Order(_Model):
    order_id: str
    user_id: str
    address: Address
    items: list[OrderItem]
    status: OrderStatus
    fulfillments: list[Fulfillment]
    payment_history: list[PaymentTransaction]
    # Set only by tools; absent from tau2's file, null in dumps.
    cancel_reason: CancelReason | None = None
    exchange_items: list[str] | None = None
    exchange_new_items: list[str] | None = None
    exchange_payment_method_id: str | None = None
    exchange_price_difference: float | None = None
    return_items: list[str] | None = None
    return_payment_method_id: str | None = None


OPTIONAL_ORDER_FIELDS = (
    "cancel_reason",
    "exchange_items",
    "exchange_new_items",
    "exchange_payment_method_id",
    "exchange_price_difference",
    "return_items",
    "return_payment_method_id",
)


class RetailDB(_Model):
    products: dict[str, Product]
    users: dict[str, User]
    orders: dict[str, Order]


# ---------------------------------------------------------------------------------------------------------------
# Seeded generator

# name -> (price range in dollars, option name -> possible values)
CATALOGUE: dict[str, tuple[tuple[int, int], dict[str, list[str]]]] = {
    "Rain Jacket": (
        (60, 180),
        {"size": ["S", "M", "L", "XL"], "color": ["navy", "olive", "yellow", "black"], "hood": ["fixed", "detachable"]},
    ),
    "Denim Jeans": (
        (40, 120),
        {"waist": ["28", "30", "32", "34", "36"], "fit": ["slim", "straight", "relaxed"], "wash": ["light", "dark"]},
    ),
    "Wool Sweater": (
        (50, 160),
        {"size": ["S", "M", "L", "XL"], "color": ["grey", "cream", "burgundy"], "neck": ["crew", "turtle"]},
    ),
    "Trail Sneakers": (
        (70, 190),
        {"size": ["7", "8", "9", "10", "11", "12"], "color": ["blue", "grey", "orange"], "width": ["regular", "wide"]},
    ),
    "Canvas Tote": (
        (20, 60),
        {"color": ["natural", "black", "red"], "size": ["small", "large"], "closure": ["open", "zip"]},
    ),
    "Travel Duffel": (
        (70, 220),
        {
            "capacity": ["30L", "45L", "60L"],
            "color": ["black", "tan", "green"],
            "material": ["nylon", "canvas", "leather"],
        },
    ),
    "Desk Chair": (
        (120, 650),
        {
            "material": ["mesh", "fabric", "leather"],
            "color": ["black", "grey", "white"],
            "lumbar support": ["yes", "no"],
        },
    ),
    "Standing Desk": (
        (300, 1200),
        {"width": ["48 inch", "60 inch", "72 inch"], "top": ["oak", "walnut", "white"], "motor": ["single", "dual"]},
    ),
    "Floor Lamp": (
        (40, 250),
        {"color": ["brass", "black", "white"], "bulb": ["LED", "halogen"], "dimmable": ["yes", "no"]},
    ),
    "Area Rug": (
        (80, 700),
        {
            "size": ["4x6", "5x8", "8x10"],
            "pattern": ["solid", "striped", "geometric"],
            "material": ["wool", "cotton", "jute"],
        },
    ),
    "Bed Sheets": (
        (35, 200),
        {
            "size": ["twin", "queen", "king"],
            "color": ["white", "sage", "charcoal"],
            "fabric": ["percale", "sateen", "linen"],
        },
    ),
    "Chef Knife": (
        (30, 300),
        {
            "blade length": ["6 inch", "8 inch", "10 inch"],
            "steel": ["German", "Japanese"],
            "handle": ["wood", "composite"],
        },
    ),
    "Cast Iron Skillet": (
        (25, 120),
        {"diameter": ["8 inch", "10 inch", "12 inch"], "finish": ["pre-seasoned", "enamel"]},
    ),
    "Blender": (
        (40, 450),
        {"power": ["600W", "1000W", "1500W"], "jar": ["glass", "plastic"], "color": ["black", "silver", "red"]},
    ),
    "Coffee Grinder": (
        (25, 350),
        {"type": ["blade", "burr"], "capacity": ["small", "large"], "color": ["black", "white", "steel"]},
    ),
    "Toaster": (
        (25, 180),
        {"slots": ["2", "4"], "color": ["silver", "black", "cream"], "features": ["bagel mode", "defrost", "none"]},
    ),
    "Rice Cooker": ((30, 260), {"capacity": ["3 cups", "5 cups", "10 cups"], "type": ["basic", "fuzzy logic"]}),
    "Smart Speaker": (
        (40, 300),
        {"color": ["charcoal", "chalk", "blue"], "assistant": ["Alexa", "Google"], "size": ["mini", "standard"]},
    ),
    "Noise Cancelling Headphones": (
        (90, 450),
        {"color": ["black", "silver", "blue"], "connection": ["wireless", "wired"], "fit": ["over-ear", "on-ear"]},
    ),
    "Fitness Tracker": (
        (40, 250),
        {"color": ["black", "pink", "teal"], "band": ["silicone", "fabric"], "GPS": ["yes", "no"]},
    ),
    "Monitor": (
        (130, 1100),
        {"size": ["24 inch", "27 inch", "32 inch"], "resolution": ["1080p", "1440p", "4K"], "panel": ["IPS", "VA"]},
    ),
    "Webcam": ((30, 200), {"resolution": ["720p", "1080p", "4K"], "microphone": ["mono", "stereo"]}),
    "External SSD": (
        (60, 400),
        {"capacity": ["500GB", "1TB", "2TB", "4TB"], "interface": ["USB-C", "Thunderbolt"], "color": ["grey", "blue"]},
    ),
    "Wireless Keyboard": (
        (30, 200),
        {
            "layout": ["full", "tenkeyless", "compact"],
            "color": ["white", "black"],
            "keys": ["membrane", "low-profile mechanical"],
        },
    ),
    "Drone": (
        (200, 1600),
        {"camera": ["2.7K", "4K", "6K"], "range": ["2 km", "6 km", "10 km"], "color": ["grey", "white"]},
    ),
    "Electric Scooter": (
        (300, 1300),
        {"range": ["15 miles", "25 miles", "40 miles"], "color": ["black", "white"], "foldable": ["yes", "no"]},
    ),
    "Tent": (
        (80, 600),
        {
            "capacity": ["2-person", "4-person", "6-person"],
            "season": ["3-season", "4-season"],
            "color": ["green", "orange"],
        },
    ),
    "Sleeping Bag": (
        (40, 320),
        {"temperature rating": ["0F", "20F", "40F"], "fill": ["down", "synthetic"], "length": ["regular", "long"]},
    ),
    "Camping Stove": ((30, 180), {"burners": ["1", "2"], "fuel": ["propane", "butane"], "color": ["green", "grey"]}),
    "Kayak Paddle": (
        (50, 300),
        {
            "length": ["220 cm", "230 cm", "240 cm"],
            "shaft": ["aluminum", "carbon"],
            "color": ["red", "yellow", "black"],
        },
    ),
    "Board Game": (
        (20, 90),
        {"theme": ["space", "farming", "mystery"], "players": ["2-4", "2-6"], "edition": ["standard", "deluxe"]},
    ),
    "Acoustic Guitar": (
        (150, 1500),
        {"body": ["dreadnought", "concert", "parlor"], "top": ["spruce", "cedar"], "finish": ["natural", "sunburst"]},
    ),
    "Watercolor Set": ((15, 120), {"colors": ["12", "24", "48"], "grade": ["student", "artist"]}),
    "Plant Pot": (
        (15, 90),
        {
            "diameter": ["6 inch", "10 inch", "14 inch"],
            "material": ["ceramic", "terracotta", "plastic"],
            "color": ["white", "black", "green"],
        },
    ),
    "Cordless Drill": (
        (60, 350),
        {"voltage": ["12V", "18V", "20V"], "battery": ["1 battery", "2 batteries"], "kit": ["bare", "with bits"]},
    ),
    "Robot Vacuum": ((180, 1100), {"navigation": ["gyro", "lidar"], "mop": ["yes", "no"], "color": ["black", "white"]}),
}

FIRST_NAMES = [
    "Amara",
    "Bruno",
    "Carmen",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonah",
    "Keiko",
    "Lucas",
    "Maya",
    "Nikhil",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Samir",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Ximena",
    "Yusra",
    "Zane",
    "Aiko",
    "Bilal",
    "Chloe",
    "Diego",
    "Esme",
    "Felix",
    "Greta",
    "Hassan",
    "Iris",
    "Jamal",
    "Kira",
    "Leo",
]
LAST_NAMES = [
    "Abbott",
    "Baptiste",
    "Chowdhury",
    "Dubois",
    "Eriksen",
    "Fontaine",
    "Gallo",
    "Horvat",
    "Ibarra",
    "Jovanovic",
    "Kowalski",
    "Lindqvist",
    "Mensah",
    "Nakamura",
    "Oyelaran",
    "Petrov",
    "Quintero",
    "Rahman",
    "Sorensen",
    "Tanaka",
    "Ueda",
    "Varga",
    "Whitfield",
    "Xu",
    "Yilmaz",
    "Zielinski",
]
STREETS = [
    "Harbor Street",
    "Willow Lane",
    "Granite Avenue",
    "Orchard Road",
    "Meadow Court",
    "Summit Drive",
    "Bayview Road",
    "Foxglove Way",
    "Juniper Street",
    "Quarry Lane",
    "Lantern Avenue",
    "Mill Street",
]
CITIES = [  # (city, state, first three digits of its zip codes)
    ("Portland", "OR", "972"),
    ("Austin", "TX", "787"),
    ("Columbus", "OH", "432"),
    ("Raleigh", "NC", "276"),
    ("Madison", "WI", "537"),
    ("Boise", "ID", "837"),
    ("Tucson", "AZ", "857"),
    ("Omaha", "NE", "681"),
    ("Albany", "NY", "122"),
    ("Richmond", "VA", "232"),
    ("Tampa", "FL", "336"),
    ("Spokane", "WA", "992"),
]
STATUS_WEIGHTS: list[tuple[OrderStatus, int]] = [
    ("pending", 42),
    ("delivered", 37),
    ("processed", 11),
    ("cancelled", 10),
]


def _digits(rng: random.Random, n: int, used: set[str]) -> str:
    while True:
        value = str(rng.randint(10 ** (n - 1), 10**n - 1))
        if value not in used:
            used.add(value)
            return value


def _price(rng: random.Random, low: int, high: int) -> float:
    return round(rng.uniform(low, high), 2)


def _products(rng: random.Random, used: set[str]) -> dict[str, Product]:
    products: dict[str, Product] = {}
    for name, ((low, high), dims) in CATALOGUE.items():
        product_id = _digits(rng, 10, used)
        combos = list(itertools.product(*dims.values()))
        rng.shuffle(combos)
        count = min(len(combos), rng.randint(5, 20))
        variants: dict[str, Variant] = {}
        for i, combo in enumerate(combos[:count]):
            item_id = _digits(rng, 10, used)
            variants[item_id] = Variant(
                item_id=item_id,
                options=dict(zip(dims, combo, strict=True)),
                # the first two variants are always available, so every product offers a real choice
                available=i < 2 or rng.random() < 0.6,
                price=_price(rng, low, high),
            )
        products[product_id] = Product(name=name, product_id=product_id, variants=variants)
    return products


def _address(rng: random.Random) -> Address:
    city, state, prefix = rng.choice(CITIES)
    return Address(
        address1=f"{rng.randint(10, 999)} {rng.choice(STREETS)}",
        address2=f"Suite {rng.randint(100, 999)}" if rng.random() < 0.7 else f"Apt {rng.randint(1, 40)}",
        city=city,
        country="USA",
        state=state,
        zip=f"{prefix}{rng.randint(0, 99):02d}",
    )


def _payment_methods(rng: random.Random, used: set[str]) -> dict[str, PaymentMethod]:
    methods: dict[str, PaymentMethod] = {}
    kinds = ["credit_card", "paypal", "gift_card"]
    for kind in rng.sample(kinds, rng.choice([1, 1, 1, 2, 2, 3])):
        for _ in range(2 if kind == "credit_card" and rng.random() < 0.15 else 1):
            pid = f"{kind}_{_digits(rng, 7, used)}"
            method: PaymentMethod
            if kind == "credit_card":
                method = CreditCard(
                    source="credit_card",
                    id=pid,
                    brand=rng.choice(["visa", "mastercard"]),
                    last_four=f"{rng.randint(0, 9999):04d}",
                )
            elif kind == "paypal":
                method = Paypal(source="paypal", id=pid)
            else:
                method = GiftCard(source="gift_card", id=pid, balance=float(rng.randint(0, 100)))
            methods[pid] = method
    return methods


def generate_db(seed: int = 0, n_users: int = 300) -> RetailDB:
    """A seeded store: the catalogue above with 5-20 variants per product, `n_users` users with 1-3 payment
    methods and 0-5 orders each (about 2 on average), orders in tau2's starting statuses."""
    if not 0 <= n_users <= 2000:
        raise ValueError(f"n_users must be between 0 and 2000, got {n_users}")
    rng = random.Random(seed)
    used: set[str] = set()  # every numeric id drawn so far, so ids never collide
    products = _products(rng, used)
    catalogue = list(products.values())
    users: dict[str, User] = {}
    orders: dict[str, Order] = {}
    name_zips: set[tuple[str, str, str]] = set()
    statuses = [s for s, _ in STATUS_WEIGHTS]
    weights = [w for _, w in STATUS_WEIGHTS]
    while len(users) < n_users:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        address = _address(rng)
        if (first, last, address.zip) in name_zips:  # name + zip identifies a user
            continue
        name_zips.add((first, last, address.zip))
        user_id = f"{first.lower()}_{last.lower()}_{_digits(rng, 4, used)}"
        methods = _payment_methods(rng, used)
        order_ids: list[str] = []
        for _ in range(rng.choice([0, 1, 1, 2, 2, 2, 3, 3, 4, 5])):
            order_id = f"#W{_digits(rng, 7, used)}"
            items = []
            for _ in range(rng.randint(1, 5)):
                product = rng.choice(catalogue)
                variant = rng.choice(list(product.variants.values()))
                items.append(
                    OrderItem(
                        name=product.name,
                        product_id=product.product_id,
                        item_id=variant.item_id,
                        price=variant.price,
                        options=dict(variant.options),
                    )
                )
            status = rng.choices(statuses, weights)[0]
            payer = rng.choice(list(methods))
            total = round(sum(item.price for item in items), 2)
            history = [PaymentTransaction(transaction_type="payment", amount=total, payment_method_id=payer)]
            if status == "cancelled":
                history.append(PaymentTransaction(transaction_type="refund", amount=total, payment_method_id=payer))
            fulfillments = (
                []
                if status == "pending"
                else [Fulfillment(tracking_id=[_digits(rng, 12, used)], item_ids=[item.item_id for item in items])]
            )
            orders[order_id] = Order(
                order_id=order_id,
                user_id=user_id,
                address=address.model_copy() if rng.random() < 0.85 else _address(rng),
                items=items,
                status=status,
                fulfillments=fulfillments,
                payment_history=history,
            )
            order_ids.append(order_id)
        users[user_id] = User(
            user_id=user_id,
            name=UserName(first_name=first, last_name=last),
            address=address,
            email=f"{first.lower()}.{last.lower()}{_digits(rng, 4, used)}@example.com",
            payment_methods=methods,
            orders=order_ids,
        )
    return RetailDB(products=products, users=users, orders=orders)
