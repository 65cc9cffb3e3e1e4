"""Fixed facts about the user's life: contacts, bank accounts, bills, calendar, recurring spending.

The user lives in San Francisco (Mission). Names here are the ones the
planner evals use ("send Maria 45 bucks", "pay Pat the rent", "text Linda"),
so each first name is unique; the relationship ("landlord") also finds a
contact. Bills are due shortly after the world's default clock (2027-03-01).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contact:
    id: str
    first_name: str
    last_name: str
    relationship: str
    phone: str
    email: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


CONTACTS: tuple[Contact, ...] = (
    Contact("maria-lopez", "Maria", "Lopez", "friend", "+1-415-555-0142", "maria.lopez@example.com"),
    Contact("sam-chen", "Sam", "Chen", "coworker", "+1-415-555-0178", "sam.chen@example.com"),
    Contact("pat-rivera", "Pat", "Rivera", "landlord", "+1-415-555-0110", "pat.rivera@example.com"),
    Contact("linda-park", "Linda", "Park", "sister", "+1-503-555-0163", "linda.park@example.com"),
    Contact("alex-kim", "Alex", "Kim", "roommate", "+1-415-555-0191", "alex.kim@example.com"),
    Contact("jordan-blake", "Jordan", "Blake", "friend", "+1-510-555-0127", "jordan.blake@example.com"),
    Contact("priya-patel", "Priya", "Patel", "manager", "+1-415-555-0155", "priya.patel@example.com"),
    Contact("emily-stone", "Emily", "Stone", "dentist", "+1-415-555-0104", "office@stonedental.example.com"),
    Contact("tom-becker", "Tom", "Becker", "neighbour", "+1-415-555-0186", "tom.becker@example.com"),
    # Added for the trained planner's corpus, which holds out a third of the contacts (and their
    # relationships) for its test split: each first name and relationship is again unique.
    Contact("diego-ramirez", "Diego", "Ramirez", "brother", "+1-213-555-0131", "diego.ramirez@example.com"),
    Contact("hannah-wright", "Hannah", "Wright", "cousin", "+1-206-555-0119", "hannah.wright@example.com"),
    Contact("omar-haddad", "Omar", "Haddad", "trainer", "+1-415-555-0173", "omar@missionfit.example.com"),
    Contact("ines-duarte", "Ines", "Duarte", "mom", "+1-619-555-0108", "ines.duarte@example.com"),
    Contact("kenji-watanabe", "Kenji", "Watanabe", "accountant", "+1-415-555-0147", "kenji@watanabe-cpa.example.com"),
    Contact("sofia-rossi", "Sofia", "Rossi", "babysitter", "+1-415-555-0162", "sofia.rossi@example.com"),
    Contact("marcus-lee", "Marcus", "Lee", "plumber", "+1-415-555-0195", "marcus@leeplumbing.example.com"),
    Contact("nina-kowalski", "Nina", "Kowalski", "aunt", "+1-312-555-0124", "nina.kowalski@example.com"),
    Contact("ravi-shah", "Ravi", "Shah", "doctor", "+1-415-555-0139", "dr.shah@example.com"),
    Contact("zoe-adams", "Zoe", "Adams", "tutor", "+1-510-555-0158", "zoe.adams@example.com"),
    Contact("felix-novak", "Felix", "Novak", "dad", "+1-619-555-0166", "felix.novak@example.com"),
    Contact("chloe-dubois", "Chloe", "Dubois", "coach", "+1-415-555-0181", "chloe.dubois@example.com"),
)

#: (id, name, masked number, balance in dollars on the world's first day).
ACCOUNTS: tuple[tuple[str, str, str, float], ...] = (
    ("checking", "Everyday Checking", "****4821", 3842.16),
    ("savings", "High-Yield Savings", "****9307", 12650.00),
)


@dataclass(frozen=True)
class Bill:
    #: The kind is the id: "pay my electricity bill" resolves by it.
    id: str
    payee: str
    #: Other words for the same payee (company, service).
    aliases: tuple[str, ...]
    account_number: str
    dollars: float
    due_date: str


BILLS: tuple[Bill, ...] = (
    Bill("electricity", "PG&E", ("pge", "pg&e", "electric", "power", "energy", "gas and electric"), "PGE-20581-4", 84.27, "2027-03-05"),
    Bill("internet", "Sonic Internet", ("sonic", "wifi", "broadband", "fiber"), "SON-77120", 60.00, "2027-03-08"),
    Bill("phone", "T-Mobile", ("t-mobile", "tmobile", "mobile", "cell", "cell phone", "wireless"), "TMO-5550199", 45.00, "2027-03-12"),
    Bill("water", "SF Public Utilities Commission", ("sfpuc", "water and sewer", "sewer"), "SFPUC-318802", 38.50, "2027-03-18"),
)

#: Calendar entries already there: (title, date, time or None for all-day, minutes, location).
EVENTS: tuple[tuple[str, str, str | None, int, str | None], ...] = (
    ("Team standup", "2027-03-01", "09:30", 15, "Video call"),
    ("1:1 with Priya", "2027-03-01", "14:00", 30, "Office"),
    ("Lunch with Sam", "2027-03-02", "12:00", 60, "Tartine, Mission"),
    ("Team standup", "2027-03-02", "09:30", 15, "Video call"),
    ("Dentist - Dr. Stone", "2027-03-04", "15:00", 45, "Stone Dental, 450 Sutter St"),
    ("Rent due", "2027-03-05", None, 0, None),
    ("Concert with Maria", "2027-03-06", "19:30", 180, "The Fillmore"),
    ("Linda's birthday dinner", "2027-03-10", "18:30", 120, "Trattoria Roma, Marina"),
    ("Gym with Jordan", "2027-03-03", "07:00", 60, "Mission Cliffs"),
    ("Quarterly planning", "2027-03-09", "10:00", 120, "Office"),
)

#: Messages already exchanged: (contact id, direction, text, sent_at).
MESSAGES: tuple[tuple[str, str, str, str], ...] = (
    ("maria-lopez", "in", "Got the concert tickets for Saturday! $45 each, pay me back whenever", "2027-02-27T18:04"),
    ("pat-rivera", "in", "Reminder: March rent of $2,400 is due by the 5th. Thanks!", "2027-02-28T10:15"),
    ("linda-park", "in", "Dinner on the 10th still on? I booked Trattoria Roma", "2027-02-28T20:41"),
)

#: Recurring spending the seeded history draws from: (category, merchants, low, high, times per week).
SPENDING: tuple[tuple[str, tuple[str, ...], float, float, float], ...] = (
    ("groceries", ("Safeway", "Trader Joe's", "Rainbow Grocery", "Bi-Rite Market"), 28.0, 140.0, 2.0),
    ("dining", ("Tartine Bakery", "La Taqueria Azul", "Thai Basil House", "Souvla", "Zuni Cafe"), 12.0, 68.0, 3.0),
    ("coffee", ("Ritual Coffee", "Blue Bottle", "Philz Coffee"), 4.25, 7.5, 4.0),
    ("transport", ("Uber", "Lyft", "Clipper Card reload", "BART"), 3.0, 38.0, 3.0),
    ("entertainment", ("AMC Metreon", "Alamo Drafthouse", "Eventbrite", "The Fillmore"), 12.0, 85.0, 1.0),
    ("shopping", ("Amazon", "Target", "REI", "Uniqlo"), 15.0, 160.0, 1.0),
    ("health", ("Walgreens", "CVS Pharmacy"), 8.0, 45.0, 0.5),
)

#: Monthly fixed items: (day of month, category, description, counterparty, dollars; + is income).
MONTHLY: tuple[tuple[int, str, str, str | None, float], ...] = (
    (1, "income", "Acme Robotics payroll", None, 3100.00),
    (15, "income", "Acme Robotics payroll", None, 3100.00),
    (1, "rent", "Rent - Pat Rivera", "pat-rivera", -2400.00),
    (3, "subscriptions", "Netflix", None, -15.49),
    (9, "subscriptions", "Spotify", None, -11.99),
    (5, "utilities", "PG&E bill payment", "electricity", -91.12),
    (8, "utilities", "Sonic Internet bill payment", "internet", -60.00),
    (12, "utilities", "T-Mobile bill payment", "phone", -45.00),
    (18, "utilities", "SFPUC water bill payment", "water", -36.75),
    (20, "fitness", "Mission Cliffs membership", None, -89.00),
)

#: First day of the seeded transaction history (two months before the clock starts).
HISTORY_START = "2027-01-01"
#: Savings gets a monthly transfer from checking on this day, and interest at month end.
SAVINGS_TRANSFER = (2, 500.00)
SAVINGS_APY = 0.042
