"""Bank tools: balances, transaction history, transfers to contacts, bill payments.

Every money move is a row in ``transactions`` plus a balance update, done by
:meth:`World.post` inside the step's idempotency transaction: insufficient
funds refuse the whole step, and a repeated step (same key) never pays twice.
"""

from __future__ import annotations

from typing import Any

from agentd.tools import ToolContext, ToolError, ToolSpec

from . import common as c
from .lookup import ACCOUNT_WORDS, normalize, resolve_account, resolve_bill, resolve_contact, stem
from .world import World

#: What people call a category -> the category the bank uses.
CATEGORY_WORDS = {
    "food": "dining", "restaurant": "dining", "eating out": "dining", "takeout": "dining", "delivery": "dining",
    "grocery": "groceries", "bill": "utilities", "utility": "utilities", "salary": "income", "paycheck": "income",
    "uber": "transport", "ride": "transport", "transportation": "transport", "flight": "travel", "hotel": "travel",
    "transfer": "transfers", "subscription": "subscriptions", "gym": "fitness", "pharmacy": "health",
}

ACCOUNT_CHOICE = {"type": "string", "enum": ["checking", "savings", "all"], "default": "all"}
TRANSACTION = c.obj(
    {
        "id": {"type": "integer"}, "posted_at": c.DATETIME, "account": c.ACCOUNT, "description": {"type": "string"},
        "amount": c.described(c.MONEY, "Negative for money out"), "category": {"type": "string"},
    },
    ("id", "posted_at", "account", "description", "amount", "category"),
)


def _balance(world: World, account: str) -> float:
    return c.dollars(world.scalar("SELECT balance_cents FROM accounts WHERE id = ?", account))


def get_balance(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Current balances of checking, savings or both."""
    which = args.get("account", "all")
    rows = world.rows("SELECT * FROM accounts ORDER BY id")
    if which != "all":
        rows = [r for r in rows if r["id"] == which]
    accounts = [
        {"account": r["id"], "name": r["name"], "number": r["number_masked"], "balance": c.dollars(r["balance_cents"])}
        for r in rows
    ]
    return {"accounts": accounts, "total": c.dollars(sum(r["balance_cents"] for r in rows)), "as_of": world.meta("now")}


def _category(world: World, name: str) -> str:
    seen = {r["category"] for r in world.rows("SELECT DISTINCT category FROM transactions")}
    known = sorted(seen | set(CATEGORY_WORDS.values()))
    key = normalize(name)
    for candidate in (key, stem(key)):
        if candidate in known:
            return candidate
        if candidate in CATEGORY_WORDS:
            return CATEGORY_WORDS[candidate]
    for category in known:
        if stem(category) == stem(key):
            return category
    raise ToolError(f"unknown category {name!r}; categories: {', '.join(known)}")


def list_transactions(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Transactions newest first, filtered by category and date range (inclusive)."""
    where, params = ["1 = 1"], []
    if args.get("category"):
        where.append("category = ?")
        params.append(_category(world, args["category"]))
    since = c.parse_date(args["since"], "since") if args.get("since") else None
    until = c.parse_date(args["until"], "until") if args.get("until") else None
    if since and until and since > until:
        raise ToolError(f"since {since} is after until {until}")
    if since:
        where.append("posted_at >= ?")
        params.append(since.isoformat())
    if until:
        where.append("posted_at < ?")
        params.append(c.plus_days(until, 1).isoformat())
    if args.get("account", "all") != "all":
        where.append("account_id = ?")
        params.append(args["account"])
    rows = world.rows(f"SELECT * FROM transactions WHERE {' AND '.join(where)} ORDER BY posted_at DESC, id DESC", *params)
    limit = args.get("limit", 50)
    return {
        "transactions": [
            {"id": r["id"], "posted_at": r["posted_at"], "account": r["account_id"], "description": r["description"],
             "amount": c.dollars(r["amount_cents"]), "category": r["category"]}
            for r in rows[:limit]
        ],
        "count": len(rows),
        "total": c.dollars(sum(r["amount_cents"] for r in rows)),
    }


def transfer_money(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Send money to a contact (or move it between the user's own accounts), once per plan step."""

    def apply() -> dict[str, Any]:
        amount = c.to_cents(args["amount"])
        source = resolve_account(args.get("from_account"))
        memo = args.get("memo")
        own = ACCOUNT_WORDS.get(normalize(args["to"]).removeprefix("my ").removesuffix(" account").strip())
        if own is not None:
            if own == source:
                raise ToolError(f"cannot transfer from {source} to itself")
            names = {"checking": "Everyday Checking", "savings": "High-Yield Savings"}
            transaction = world.post(source, -amount, f"Transfer to {names[own]}" + (f": {memo}" if memo else ""), "transfers", own)
            world.post(own, amount, f"Transfer from {names[source]}" + (f": {memo}" if memo else ""), "transfers", source)
            recipient = {"name": names[own], "contact_id": None}
        else:
            contact = resolve_contact(world, args["to"])
            transaction = world.post(
                source, -amount, f"Transfer to {contact['name']}" + (f": {memo}" if memo else ""), "transfers", contact["id"]
            )
            recipient = {"name": contact["name"], "contact_id": contact["id"]}
        return {
            "transfer_id": f"TX{transaction:06d}", "to": recipient, "amount": c.dollars(amount), "from_account": source,
            "memo": memo or "", "posted_at": world.meta("now"), "balance_after": _balance(world, source),
        }

    return world.once("transfer_money", context.idempotency_key, args, apply)


def pay_bill(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Pay a bill (by default the full amount due) from an account, once per plan step."""

    def apply() -> dict[str, Any]:
        bill = resolve_bill(world, args["payee"])
        if bill["status"] == "paid" or bill["amount_due_cents"] == 0:
            raise ToolError(f"the {bill['id']} bill ({bill['payee']}) is already paid; nothing is due")
        amount = c.to_cents(args["amount"]) if "amount" in args else bill["amount_due_cents"]
        if amount > bill["amount_due_cents"]:
            raise ToolError(
                f"${amount / 100:,.2f} is more than the ${bill['amount_due_cents'] / 100:,.2f} due to {bill['payee']}"
            )
        source = resolve_account(args.get("from_account"))
        transaction = world.post(source, -amount, f"{bill['payee']} bill payment", "utilities", bill["id"])
        remaining = bill["amount_due_cents"] - amount
        status = "paid" if remaining == 0 else "due"
        payment_id = world.next_id("bill_payments", "BP")
        world.db.execute(
            "INSERT INTO bill_payments VALUES (?, ?, ?, ?, ?, ?)",
            (payment_id, bill["id"], amount, source, transaction, world.meta("now")),
        )
        world.db.execute("UPDATE bills SET amount_due_cents = ?, status = ? WHERE id = ?", (remaining, status, bill["id"]))
        return {
            "payment_id": payment_id, "bill": bill["id"], "payee": bill["payee"], "account_number": bill["account_number"],
            "amount": c.dollars(amount), "remaining_due": c.dollars(remaining), "status": status,
            "due_date": bill["due_date"], "from_account": source, "balance_after": _balance(world, source),
        }

    return world.once("pay_bill", context.idempotency_key, args, apply)


def tools() -> list[ToolSpec]:
    return [
        c.make_tool(
            get_balance, name="get_balance", read_only=True, credential_scopes=("bank",),
            description="Current balance of the user's checking account, savings account, or both ('all').",
            parameters=c.obj({"account": c.described(ACCOUNT_CHOICE, "checking, savings or all (default)")}),
            result=c.obj({
                "accounts": c.array(c.obj({
                    "account": c.ACCOUNT, "name": {"type": "string"}, "number": {"type": "string"}, "balance": c.MONEY,
                }, ("account", "name", "number", "balance"))),
                "total": c.MONEY, "as_of": c.DATETIME,
            }, ("accounts", "total", "as_of")),
        ),
        c.make_tool(
            list_transactions, name="list_transactions", read_only=True, credential_scopes=("bank",),
            description="The user's bank transactions, newest first, optionally by category (dining, groceries, "
            "utilities, transport, rent, income, travel...) and date range; with their count and total.",
            parameters=c.obj({
                "category": c.described(c.TEXT, "Spending category, e.g. 'dining' or 'groceries'"),
                "since": c.described(c.DATE, "First day, inclusive"),
                "until": c.described(c.DATE, "Last day, inclusive"),
                "account": c.described(ACCOUNT_CHOICE, "checking, savings or all (default)"),
                "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50, "description": "Most rows to list"},
            }),
            result=c.obj({
                "transactions": c.array(TRANSACTION), "count": {"type": "integer", "description": "All matches, listed or not"},
                "total": c.described(c.MONEY, "Sum of all matches; negative is net spending"),
            }, ("transactions", "count", "total")),
        ),
        c.make_tool(
            transfer_money, name="transfer_money", needs_approval=True, idempotent=True, credential_scopes=("bank",),
            description="Send money to one of the user's contacts (by name, e.g. 'Maria') or move it between the "
            "user's own accounts ('savings'). Moves money.",
            parameters=c.obj({
                "to": c.described(c.TEXT, "Contact name (first or full) or 'checking'/'savings'"),
                "amount": c.AMOUNT,
                "from_account": c.described(c.ACCOUNT, "Account the money leaves; default checking"),
                "memo": c.described(c.TEXT, "What it is for, shown to the recipient"),
            }, ("to", "amount")),
            result=c.obj({
                "transfer_id": c.ID,
                "to": c.obj({"name": {"type": "string"}, "contact_id": {"type": ["string", "null"]}}, ("name", "contact_id")),
                "amount": c.MONEY, "from_account": c.ACCOUNT, "memo": {"type": "string"}, "posted_at": c.DATETIME,
                "balance_after": c.MONEY,
            }, ("transfer_id", "to", "amount", "from_account", "memo", "posted_at", "balance_after")),
        ),
        c.make_tool(
            pay_bill, name="pay_bill", needs_approval=True, idempotent=True, credential_scopes=("bank",),
            description="Pay one of the user's bills (electricity, internet, phone, water; or the company's name) "
            "from an account; pays the full amount due unless an amount is given. Moves money.",
            parameters=c.obj({
                "payee": c.described(c.TEXT, "The bill or company, e.g. 'electricity' or 'PG&E'"),
                "amount": c.described(c.AMOUNT, "Dollars to pay; default the full amount due"),
                "from_account": c.described(c.ACCOUNT, "Account that pays; default checking"),
            }, ("payee",)),
            result=c.obj({
                "payment_id": c.ID, "bill": {"type": "string"}, "payee": {"type": "string"},
                "account_number": {"type": "string"}, "amount": c.MONEY, "remaining_due": c.MONEY,
                "status": {"type": "string", "enum": ["paid", "due"]}, "due_date": c.DATE, "from_account": c.ACCOUNT,
                "balance_after": c.MONEY,
            }, ("payment_id", "bill", "payee", "account_number", "amount", "remaining_due", "status", "due_date",
                "from_account", "balance_after")),
        ),
    ]
