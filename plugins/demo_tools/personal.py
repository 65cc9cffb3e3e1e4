"""Personal tools: the calendar, the address book, and text messages to contacts.

``create_event`` and ``send_message`` change the world; they honour the
step's idempotency key like the money tools (a resumed run does not text
Maria twice) even though only ``send_message`` needs approval.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from agentd.tools import ToolContext, ToolError, ToolSpec

from . import common as c
from .lookup import find_contacts, resolve_contact
from .world import World

EVENT = c.obj(
    {
        "event_id": {"type": "integer"}, "title": {"type": "string"}, "date": c.DATE,
        "time": {"anyOf": [c.TIME, {"type": "null"}], "description": "Start time; null for an all-day event"},
        "duration_minutes": {"type": "integer", "minimum": 0}, "location": {"type": ["string", "null"]},
    },
    ("event_id", "title", "date", "time", "duration_minutes", "location"),
)
CONTACT = c.obj(
    {
        "contact_id": c.ID, "name": {"type": "string"}, "relationship": {"type": "string"},
        "phone": {"type": "string"}, "email": {"type": "string"},
    },
    ("contact_id", "name", "relationship", "phone", "email"),
)


def _event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": row["id"], "title": row["title"], "date": row["date"], "time": row["time"],
        "duration_minutes": row["duration_minutes"], "location": row["location"],
    }


def _span(row: dict[str, Any]) -> tuple[datetime, datetime] | None:
    if row["time"] is None:
        return None
    start = datetime.fromisoformat(f"{row['date']}T{row['time']}")
    return start, start + timedelta(minutes=row["duration_minutes"])


def create_event(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Add a calendar event today or later; overlapping timed events are reported, not refused."""

    def apply() -> dict[str, Any]:
        day = c.future_date(world, args["date"], "date", horizon=False)
        time = args.get("time")
        if time and day == world.today() and datetime.fromisoformat(f"{day}T{time}") < world.now():
            raise ToolError(f"{day} {time} has already passed (it is {world.now():%H:%M})")
        duration = args.get("duration_minutes", 60 if time else 0)
        cursor = world.db.execute(
            "INSERT INTO events (title, date, time, duration_minutes, location, created_by) VALUES (?, ?, ?, ?, ?, 'agent')",
            (args["title"], day.isoformat(), time, duration, args.get("location")),
        )
        created = world.row("SELECT * FROM events WHERE id = ?", cursor.lastrowid)
        span = _span(created)
        conflicts = []
        if span is not None:
            for other in world.rows("SELECT * FROM events WHERE date = ? AND id != ? ORDER BY time", day.isoformat(), created["id"]):
                theirs = _span(other)
                if theirs is not None and theirs[0] < span[1] and span[0] < theirs[1]:
                    conflicts.append(_event(other))
        return {"event": _event(created), "conflicts": conflicts}

    return world.once("create_event", context.idempotency_key, args, apply)


def list_events(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Events from a day (default today) for some days, in time order (all-day events first)."""
    day = c.parse_date(args["date"], "date") if args.get("date") else world.today()
    days = args.get("days", 1)
    rows = world.rows(
        "SELECT * FROM events WHERE date >= ? AND date < ? ORDER BY date, time IS NOT NULL, time, id",
        day.isoformat(), c.plus_days(day, days).isoformat(),
    )
    return {"date": day.isoformat(), "days": days, "events": [_event(r) for r in rows]}


def _contact(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("name", "relationship", "phone", "email")} | {"contact_id": row["id"]}


def find_contact(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Contacts matching a name, first name, last name or relationship ('landlord')."""
    found = find_contacts(world, args["name"])
    if not found:
        known = ", ".join(r["name"] for r in world.rows("SELECT name FROM contacts ORDER BY name"))
        raise ToolError(f"no contact matches {args['name']!r}; contacts: {known}")
    return {"contacts": [_contact(r) for r in found]}


def send_message(world: World, args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    """Text a contact, once per plan step."""

    def apply() -> dict[str, Any]:
        contact = resolve_contact(world, args["to"])
        sent_at = world.meta("now")
        cursor = world.db.execute(
            "INSERT INTO messages (contact_id, direction, text, sent_at) VALUES (?, 'out', ?, ?)",
            (contact["id"], args["text"], sent_at),
        )
        return {"message_id": int(cursor.lastrowid), "to": _contact(contact), "text": args["text"], "sent_at": sent_at}

    return world.once("send_message", context.idempotency_key, args, apply)


def tools() -> list[ToolSpec]:
    return [
        c.make_tool(
            create_event, name="create_event", idempotent=True,
            description="Add an event to the user's calendar on a date (today or later), optionally at a time and "
            "for some minutes; reports events it overlaps.",
            parameters=c.obj({
                "title": c.described(c.TEXT, "What the event is"),
                "date": c.described(c.DATE, "Day of the event, YYYY-MM-DD"),
                "time": c.described(c.TIME, "Start time HH:MM; omit for an all-day event"),
                "duration_minutes": {"type": "integer", "minimum": 0, "maximum": 1440,
                                     "description": "Length; default 60 for a timed event, 0 for all-day"},
                "location": c.described(c.TEXT, "Where"),
            }, ("title", "date")),
            result=c.obj({"event": EVENT, "conflicts": c.array(EVENT)}, ("event", "conflicts")),
        ),
        c.make_tool(
            list_events, name="list_events", read_only=True,
            description="The user's calendar events on a date (default today), or over several days from it.",
            parameters=c.obj({
                "date": c.described(c.DATE, "First day, YYYY-MM-DD; default today"),
                "days": {"type": "integer", "minimum": 1, "maximum": 62, "default": 1, "description": "How many days"},
            }),
            result=c.obj({"date": c.DATE, "days": {"type": "integer"}, "events": c.array(EVENT)}, ("date", "days", "events")),
        ),
        c.make_tool(
            find_contact, name="find_contact", read_only=True,
            description="Look up the user's contacts by name, first name, last name or relationship (e.g. "
            "'Maria', 'Sam Chen', 'landlord'), with phone and email.",
            parameters=c.obj({"name": c.described(c.TEXT, "Who to look for")}, ("name",)),
            result=c.obj({"contacts": c.array(CONTACT, minItems=1)}, ("contacts",)),
        ),
        c.make_tool(
            send_message, name="send_message", needs_approval=True, idempotent=True,
            description="Send a text message to one of the user's contacts (by name). Sends on the user's behalf.",
            parameters=c.obj({
                "to": c.described(c.TEXT, "Contact name, first or full"),
                "text": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "The message"},
            }, ("to", "text")),
            result=c.obj({
                "message_id": {"type": "integer"}, "to": CONTACT, "text": {"type": "string"}, "sent_at": c.DATETIME,
            }, ("message_id", "to", "text", "sent_at")),
        ),
    ]
