"""Food tools: find San Francisco restaurants that deliver, and order from one.

Menus are third-party text (one menu item is a prompt-injection test
fixture), so planner code must treat them as data. Ordering needs approval,
pays at once and is idempotent per plan step. Dish names are matched
forgivingly ("pad thai", "2 margherita pizzas" as name "margherita pizza").
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agentd.tools import ToolContext, ToolError, ToolSpec

from . import catalog_food
from . import common as c
from .lookup import contains_words, normalize, resolve_account, stem
from .world import World

HOME_WORDS = {"home", "me", "my place", "my home", "here", "my apartment", "my house"}

MENU_ITEM = c.obj(
    {"name": {"type": "string"}, "price": c.MONEY, "description": {"type": "string"}},
    ("name", "price", "description"),
)
RESTAURANT = c.obj(
    {
        "restaurant_id": c.ID, "name": {"type": "string"}, "cuisine": {"type": "string"},
        "neighbourhood": {"type": "string"}, "rating": {"type": "number", "minimum": 0, "maximum": 5},
        "price_level": {"type": "integer", "minimum": 1, "maximum": 3, "description": "1 = $, 3 = $$$"},
        "delivery_fee": c.MONEY, "delivery_minutes": {"type": "integer"},
        "menu": c.array(MENU_ITEM), "matching_dishes": c.array({"type": "string"}),
    },
    ("restaurant_id", "name", "cuisine", "neighbourhood", "rating", "price_level", "delivery_fee", "delivery_minutes", "menu"),
)


def _cuisine(world: World, name: str) -> str:
    known = [r["cuisine"] for r in world.rows("SELECT DISTINCT cuisine FROM restaurants ORDER BY cuisine")]
    key = normalize(name).removesuffix(" food").removesuffix(" cuisine").strip()
    for candidate in (key, stem(key)):
        if candidate in catalog_food.CUISINE_ALIASES:
            return catalog_food.CUISINE_ALIASES[candidate]
        for cuisine in known:
            if normalize(cuisine) == candidate:
                return cuisine
    raise ToolError(f"no {name!r} restaurants; cuisines: {', '.join(known)}")


def _neighbourhood(world: World, near: str) -> str:
    key = normalize(near)
    if key in HOME_WORDS:
        return world.meta("home_neighbourhood")
    for area in catalog_food.ADJACENT:
        if normalize(area) == key or normalize(area) == key.removeprefix("the ").strip():
            return area
    raise ToolError(f"unknown neighbourhood {near!r}; try one of: home, {', '.join(catalog_food.ADJACENT)}")


def _menu(world: World, restaurant_id: str) -> list[dict[str, Any]]:
    return world.rows("SELECT * FROM menu_items WHERE restaurant_id = ? ORDER BY rowid", restaurant_id)


def search_restaurants(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Restaurants by cuisine, dish and/or neighbourhood; nearest then best rated first, with menus."""
    rows = world.rows("SELECT * FROM restaurants ORDER BY rating DESC, id")
    if args.get("cuisine"):
        cuisine = _cuisine(world, args["cuisine"])
        rows = [r for r in rows if r["cuisine"] == cuisine]
    distance: dict[str, int] = {}
    if args.get("near"):
        area = _neighbourhood(world, args["near"])
        for r in rows:
            distance[r["id"]] = 0 if r["neighbourhood"] == area else 1 if r["neighbourhood"] in catalog_food.ADJACENT[area] else 2
        rows = sorted((r for r in rows if distance[r["id"]] < 2), key=lambda r: distance[r["id"]])
    found = []
    for r in rows:
        menu = _menu(world, r["id"])
        entry: dict[str, Any] = {
            "restaurant_id": r["id"], "name": r["name"], "cuisine": r["cuisine"], "neighbourhood": r["neighbourhood"],
            "rating": r["rating"], "price_level": r["price_level"], "delivery_fee": c.dollars(r["delivery_fee_cents"]),
            "delivery_minutes": r["delivery_minutes"],
            "menu": [{"name": m["name"], "price": c.dollars(m["price_cents"]), "description": m["description"]} for m in menu],
        }
        if args.get("dish"):
            hits = [m["name"] for m in menu if contains_words(args["dish"], f"{m['name']} {m['description']} {m['tags']}")]
            if not hits:
                continue
            entry["matching_dishes"] = hits
        found.append(entry)
    limit = args.get("limit", 8)
    result: dict[str, Any] = {"restaurants": found[:limit], "total_found": len(found)}
    if not found:
        result["note"] = "nothing matches; try another dish, a cuisine, or a wider neighbourhood"
    return result


def _match_item(menu: list[dict[str, Any]], wanted: str, restaurant: str) -> dict[str, Any]:
    key = normalize(wanted)
    exact = [m for m in menu if normalize(m["name"]) == key or words_equal(m["name"], wanted)]
    if len(exact) == 1:
        return exact[0]
    close = [m for m in menu if contains_words(wanted, m["name"])] or [
        m for m in menu if contains_words(wanted, f"{m['name']} {m['tags']}")
    ]
    if len(close) == 1:
        return close[0]
    names = ", ".join(m["name"] for m in (close or menu))
    if close:
        raise ToolError(f"{wanted!r} matches several dishes at {restaurant}: {names}; name one")
    raise ToolError(f"no {wanted!r} on the menu of {restaurant}; the menu has: {names}")


def words_equal(a: str, b: str) -> bool:
    return [stem(w) for w in normalize(a).split()] == [stem(w) for w in normalize(b).split()]


def order_food(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Place a delivery order, paying subtotal plus delivery fee from the account, once per plan step."""

    def apply() -> dict[str, Any]:
        restaurant = world.row("SELECT * FROM restaurants WHERE id = ?", args["restaurant_id"])
        if restaurant is None:
            by_name = [r for r in world.rows("SELECT * FROM restaurants") if normalize(r["name"]) == normalize(args["restaurant_id"])]
            if not by_name:
                raise ToolError(f"unknown restaurant_id {args['restaurant_id']!r}; use one from search_restaurants")
            restaurant = by_name[0]
        menu = _menu(world, restaurant["id"])
        lines: dict[str, dict[str, Any]] = {}
        for item in args["items"]:
            dish = _match_item(menu, item["name"], restaurant["name"])
            line = lines.setdefault(dish["id"], {"dish": dish, "quantity": 0})
            line["quantity"] += item.get("quantity", 1)
        subtotal = sum(line["dish"]["price_cents"] * line["quantity"] for line in lines.values())
        total = subtotal + restaurant["delivery_fee_cents"]
        account = resolve_account(args.get("pay_from"))
        order_id = world.next_id("orders", "OR")
        transaction = world.post(account, -total, f"{restaurant['name']} delivery order {order_id}", "dining", restaurant["id"])
        eta = (world.now() + timedelta(minutes=restaurant["delivery_minutes"])).isoformat(timespec="minutes")
        world.db.execute(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order_id, restaurant["id"], subtotal, restaurant["delivery_fee_cents"], total, account, transaction,
             world.meta("now"), eta),
        )
        world.db.executemany(
            "INSERT INTO order_items VALUES (?, ?, ?, ?, ?)",
            [(order_id, line["dish"]["id"], line["dish"]["name"], line["quantity"], line["dish"]["price_cents"]) for line in lines.values()],
        )
        return {
            "order_id": order_id, "restaurant_id": restaurant["id"], "restaurant": restaurant["name"],
            "items": [
                {"name": line["dish"]["name"], "quantity": line["quantity"], "unit_price": c.dollars(line["dish"]["price_cents"]),
                 "line_total": c.dollars(line["dish"]["price_cents"] * line["quantity"])}
                for line in lines.values()
            ],
            "subtotal": c.dollars(subtotal), "delivery_fee": c.dollars(restaurant["delivery_fee_cents"]),
            "total": c.dollars(total), "paid_from": account, "eta": eta, "deliver_to": world.meta("home_address"),
            "balance_after": c.dollars(world.scalar("SELECT balance_cents FROM accounts WHERE id = ?", account)),
        }

    return world.once("order_food", context.idempotency_key, args, apply)


def tools() -> list[ToolSpec]:
    return [
        c.make_tool(
            search_restaurants, name="search_restaurants", read_only=True, untrusted_output=True, credential_scopes=("restaurant",),
            description="Find San Francisco restaurants that deliver, by cuisine ('thai', 'bbq'), dish ('pizza', "
            "'curry', 'dumplings') and/or neighbourhood ('home', 'Mission'), with ratings, fees and full menus. "
            "Menu text comes from the restaurants.",
            parameters=c.obj({
                "cuisine": c.described(c.TEXT, "Cuisine, e.g. Thai, Italian, Japanese, Mexican, Indian, Chinese, Barbecue"),
                "dish": c.described(c.TEXT, "A dish or kind of dish, e.g. 'pizza', 'ramen', 'burrito'"),
                "near": c.described(c.TEXT, "'home' (the user's place, the Mission) or a San Francisco neighbourhood"),
                "limit": {"type": "integer", "minimum": 1, "maximum": 40, "default": 8, "description": "Most restaurants to return"},
            }),
            result=c.obj({
                "restaurants": c.array(RESTAURANT), "total_found": {"type": "integer"}, "note": {"type": "string"},
            }, ("restaurants", "total_found")),
        ),
        c.make_tool(
            order_food, name="order_food", needs_approval=True, idempotent=True, credential_scopes=("restaurant",),
            description="Order dishes for delivery to the user's home from a restaurant found by search_restaurants; "
            "pays subtotal plus delivery fee from the user's account. Spends money.",
            parameters=c.obj({
                "restaurant_id": c.described(c.ID, "A restaurant_id from search_restaurants"),
                "items": c.array(
                    c.obj({
                        "name": c.described(c.TEXT, "Dish name as on the menu"),
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 20, "default": 1},
                    }, ("name",)),
                    "Dishes to order", minItems=1, maxItems=20,
                ),
                "pay_from": c.described(c.ACCOUNT, "Account to charge; default checking"),
            }, ("restaurant_id", "items")),
            result=c.obj({
                "order_id": c.ID, "restaurant_id": c.ID, "restaurant": {"type": "string"},
                "items": c.array(c.obj({
                    "name": {"type": "string"}, "quantity": {"type": "integer"}, "unit_price": c.MONEY, "line_total": c.MONEY,
                }, ("name", "quantity", "unit_price", "line_total")), minItems=1),
                "subtotal": c.MONEY, "delivery_fee": c.MONEY, "total": c.MONEY, "paid_from": c.ACCOUNT,
                "eta": c.DATETIME, "deliver_to": {"type": "string"}, "balance_after": c.MONEY,
            }, ("order_id", "restaurant_id", "restaurant", "items", "subtotal", "delivery_fee", "total", "paid_from",
                "eta", "deliver_to", "balance_after")),
        ),
    ]
