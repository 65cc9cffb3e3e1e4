"""The words the corpus fills templates with, split into a train half and a held-out test half.

Entities come from the sandbox world (every city, cuisine, dish, contact and
bill named here exists there, so an executed plan succeeds); free text
(memos, titles, messages, queries) comes from fixed pools. Roughly a third of
each list is held out: a test request uses only held-out words, a training
request never contains one (``tests/test_planner_corpus.py`` checks that on
the generated text, whole words, case-insensitively).

Words both halves must share — the home city (San Francisco), "home",
generic hotel landmarks ("the airport"), the two account names — are not
vocabulary and appear in :data:`SHARED` lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from agentd.plugins.demo_tools import catalog_food

T = TypeVar("T")


@dataclass(frozen=True)
class Split(Generic[T]):
    """One vocabulary list: what training requests may use, and what only test requests use."""

    train: tuple[T, ...]
    test: tuple[T, ...]

    def of(self, split: str) -> tuple[T, ...]:
        return self.train if split == "train" else self.test


@dataclass(frozen=True)
class CityWords:
    """A world city (its id) and the names people use for it (name, alias, airport code)."""

    city_id: str
    names: tuple[str, ...]
    #: Landmarks or neighbourhoods of the city's hotels that no other city has.
    landmarks: tuple[str, ...] = ()


# -- places ---------------------------------------------------------------------------------

#: How people name home (San Francisco) as an origin; shared by both halves.
HOME_NAMES = ("SF", "San Francisco", "SFO", "San Fran")
HOME_CITY_ID = "san_francisco"

CITIES: Split[CityWords] = Split(
    train=(
        CityWords("los_angeles", ("Los Angeles", "LA", "LAX"), ("Santa Monica", "Hollywood", "Venice")),
        CityWords("denver", ("Denver", "DEN"), ("Union Station", "Cherry Creek", "RiNo")),
        CityWords("austin", ("Austin", "AUS"), ("South Congress", "Zilker Park", "Rainey Street")),
        CityWords("new_york", ("New York", "NYC", "New York City", "JFK"), ("Times Square", "Central Park", "SoHo")),
        CityWords("honolulu", ("Honolulu", "Hawaii", "HNL"), ("Waikiki", "Diamond Head")),
        CityWords("tokyo", ("Tokyo", "HND"), ("Shinjuku", "Shibuya", "Ginza")),
        CityWords("london", ("London", "LHR"), ("Covent Garden", "Kensington", "Shoreditch")),
        CityWords("paris", ("Paris", "CDG"), ("Montmartre", "Le Marais", "Eiffel Tower")),
        CityWords("rome", ("Rome", "FCO"), ("Trastevere", "Colosseum", "Vatican")),
    ),
    test=(
        CityWords("seattle", ("Seattle", "SEA"), ("Pike Place Market", "Capitol Hill", "Space Needle")),
        CityWords("chicago", ("Chicago", "Chi-town", "ORD"), ("Wicker Park", "Millennium Park", "Wrigley Field")),
        CityWords("boston", ("Boston", "BOS"), ("Back Bay", "Beacon Hill", "Harvard")),
        CityWords("miami", ("Miami", "MIA"), ("South Beach", "Brickell", "Little Havana")),
        CityWords("lisbon", ("Lisbon", "Lisboa", "LIS"), ("Alfama", "Bairro Alto", "Belem")),
    ),
)

#: Hotel landmarks every city has (not vocabulary: both halves use them).
SHARED_HOTEL_NEAR = ("the airport", "downtown")

#: San Francisco neighbourhoods a restaurant search may be "near" ("home" is shared).
NEIGHBOURHOODS: Split[str] = Split(
    train=("the Mission", "SoMa", "Castro", "Chinatown", "North Beach", "the Marina", "Japantown", "Hayes Valley", "Richmond"),
    test=("the Sunset", "Noe Valley", "Bernal Heights", "Nob Hill", "the Financial District"),
)
HOME_WORDS = ("home", "me", "my place")

# -- food -----------------------------------------------------------------------------------

#: Cuisine words and the world cuisine they mean.
CUISINES: Split[tuple[str, str]] = Split(
    train=(("Thai", "Thai"), ("Italian", "Italian"), ("Japanese", "Japanese"), ("Mexican", "Mexican"),
           ("Indian", "Indian"), ("Chinese", "Chinese"), ("BBQ", "Barbecue"), ("barbecue", "Barbecue")),
    test=(("Korean", "Korean"), ("Mediterranean", "Mediterranean"), ("Middle Eastern", "Mediterranean"),
          ("Vietnamese", "Vietnamese"), ("Lebanese", "Mediterranean")),
)

#: Dish words a restaurant search goes by ("a pizza place", "somewhere with ramen").
DISH_WORDS: Split[str] = Split(
    train=("pizza", "ramen", "sushi", "tacos", "burritos", "pad thai", "dumplings", "brisket", "naan", "quesadillas",
           "pasta", "biryani", "ribs", "fried rice", "tikka masala", "noodles", "enchiladas", "risotto"),
    test=("pho", "banh mi", "bibimbap", "falafel", "shawarma", "kebab", "hummus", "bulgogi", "kimchi", "japchae"),
)

#: Cuisines whose menu dishes are test vocabulary (all the others' dishes are training vocabulary).
TEST_DISH_CUISINES = ("Korean", "Mediterranean", "Vietnamese")

# -- people and money -----------------------------------------------------------------------


@dataclass(frozen=True)
class PersonWords:
    """A contact: the words that name them (first name, full name) and their relationship."""

    first: str
    full: str
    relationship: str


PEOPLE: Split[PersonWords] = Split(
    train=(
        PersonWords("Maria", "Maria Lopez", "friend"), PersonWords("Sam", "Sam Chen", "coworker"),
        PersonWords("Pat", "Pat Rivera", "landlord"), PersonWords("Alex", "Alex Kim", "roommate"),
        PersonWords("Jordan", "Jordan Blake", "friend"), PersonWords("Priya", "Priya Patel", "manager"),
        PersonWords("Tom", "Tom Becker", "neighbour"), PersonWords("Diego", "Diego Ramirez", "brother"),
        PersonWords("Hannah", "Hannah Wright", "cousin"), PersonWords("Omar", "Omar Haddad", "trainer"),
        PersonWords("Kenji", "Kenji Watanabe", "accountant"), PersonWords("Marcus", "Marcus Lee", "plumber"),
        PersonWords("Zoe", "Zoe Adams", "tutor"), PersonWords("Chloe", "Chloe Dubois", "coach"),
    ),
    test=(
        PersonWords("Linda", "Linda Park", "sister"), PersonWords("Emily", "Emily Stone", "dentist"),
        PersonWords("Ines", "Ines Duarte", "mom"), PersonWords("Sofia", "Sofia Rossi", "babysitter"),
        PersonWords("Nina", "Nina Kowalski", "aunt"), PersonWords("Ravi", "Ravi Shah", "doctor"),
        PersonWords("Felix", "Felix Novak", "dad"),
    ),
)
#: "friend" names two contacts, so it never stands for one.
AMBIGUOUS_RELATIONSHIPS = ("friend",)


@dataclass(frozen=True)
class PayeeWords:
    """A bill (its world id) and a word that names it ("power" for electricity)."""

    bill_id: str
    word: str


PAYEES: Split[PayeeWords] = Split(
    train=(PayeeWords("electricity", "electricity"), PayeeWords("electricity", "PG&E"), PayeeWords("electricity", "power"),
           PayeeWords("internet", "internet"), PayeeWords("internet", "wifi"), PayeeWords("internet", "Sonic"),
           PayeeWords("phone", "phone"), PayeeWords("phone", "T-Mobile")),
    test=(PayeeWords("water", "water"), PayeeWords("water", "SFPUC"), PayeeWords("water", "sewer"),
          PayeeWords("electricity", "energy"), PayeeWords("internet", "broadband"), PayeeWords("phone", "cell phone"),
          PayeeWords("phone", "wireless")),
)
#: What each bill has due on the world's first day: a partial payment stays under it.
BILL_DUE = {"electricity": 84.27, "internet": 60.00, "phone": 45.00, "water": 38.50}

#: How people name the two accounts: (words, account). Account names are shared vocabulary.
ACCOUNTS: Split[tuple[str, str]] = Split(
    train=(("savings", "savings"), ("checking", "checking"), ("savings account", "savings"), ("checking account", "checking")),
    test=(("high-yield savings", "savings"), ("main account", "checking"), ("everyday checking", "checking")),
)

#: Spending categories as list_transactions understands them.
CATEGORIES: Split[str] = Split(
    train=("dining", "groceries", "coffee", "transport", "rent", "subscriptions", "eating out", "takeout", "uber"),
    test=("entertainment", "shopping", "health", "fitness", "utilities", "pharmacy"),
)

# -- free text ------------------------------------------------------------------------------

MEMOS: Split[str] = Split(
    train=("the concert tix", "dinner last night", "pizza night", "the cabin deposit", "gas money", "birthday gift",
           "brunch", "book club", "parking", "the movie tickets", "half the groceries", "the taxi", "the Airbnb",
           "poker night", "the flowers", "lunch on Friday"),
    test=("ski trip", "wedding present", "the baseball tickets", "karaoke night", "the moving truck",
          "bowling", "the camping gear", "secret santa"),
)

TITLES: Split[str] = Split(
    train=("team lunch", "haircut", "yoga", "coffee with Maria", "project review", "dinner with Sam", "call mom",
           "pick up dry cleaning", "piano lesson", "budget meeting", "date night", "car service", "vet appointment",
           "sprint planning", "interview prep", "Alex's party"),
    test=("guitar practice", "parent teacher conference", "board game night", "eye exam", "climbing session",
          "tax appointment", "farmers market trip", "quarterly offsite"),
)
# "call mom" uses a held-out relationship word; keep training titles free of it.
TITLES = Split(tuple(t for t in TITLES.train if t != "call mom"), TITLES.test)

LOCATIONS: Split[str] = Split(
    train=("the office", "Blue Bottle", "city hall", "the library", "Dolores Park", "the gym", "Room 4B",
           "the studio", "Tartine"),
    test=("the community center", "Golden Gate Park", "the ferry building", "Pier 39", "the rec center"),
)

MESSAGES: Split[str] = Split(
    train=("I'm running late", "see you at 8", "call me when you land", "can you grab milk on the way home",
           "happy birthday!", "the keys are under the mat", "dinner is at 7", "thanks for yesterday",
           "are we still on for tonight?", "I'll be there in 10 minutes", "don't forget the tickets",
           "let's reschedule to next week", "just landed", "feed the cat please"),
    test=("the package arrived", "meet me by the fountain", "I left my charger at your place",
          "good luck on the exam", "running ten minutes behind", "the game starts at six", "bring an umbrella"),
)

QUERIES: Split[str] = Split(
    train=("weather in Denver this weekend", "checked bag fees", "jet lag tips", "SXSW schedule",
           "cherry blossom forecast Tokyo", "Broadway shows in March", "PG&E rate changes", "REAL ID requirements",
           "how to avoid payment scams", "best ramen recipe", "Muni service changes", "things to do in London",
           "Japan entry requirements", "restaurant week picks"),
    test=("ETIAS requirements for Portugal", "how long is security at SFO", "bank transfer limits",
          "using cards abroad", "Schengen visa rules", "best time to visit Portugal", "how to spot a phishing text"),
)

FACT_CITIES: Split[str] = Split(
    train=("Oakland", "Los Angeles", "Denver", "Austin", "New York"),
    test=("Seattle", "Chicago", "Boston"),
)
DIETS: Split[str] = Split(train=("vegetarian", "vegan", "kosher"), test=("gluten-free", "pescatarian", "halal"))


def _menu_items(test: bool) -> tuple[str, ...]:
    return tuple(dish.name.lower() for cuisine, dishes in catalog_food.DISHES.items()
                 if (cuisine in TEST_DISH_CUISINES) == test for dish in dishes)


#: Menu dishes an order names ("2 pad thai"), lower-cased; split by cuisine.
ITEMS: Split[str] = Split(train=_menu_items(False), test=_menu_items(True))


def held_out_strings() -> list[str]:
    """Every held-out word or phrase a training request must not contain (for the split test)."""
    found: list[str] = []
    for city in CITIES.test:
        found += [*city.names, *city.landmarks]
    found += [*NEIGHBOURHOODS.test, *(word for word, _ in CUISINES.test), *DISH_WORDS.test, *ITEMS.test]
    for person in PEOPLE.test:
        found += [person.first, person.full, person.relationship]
    found += [p.word for p in PAYEES.test] + [words for words, _ in ACCOUNTS.test]
    for pool in (CATEGORIES, MEMOS, TITLES, LOCATIONS, MESSAGES, QUERIES, FACT_CITIES, DIETS):
        found += list(pool.test)
    return found
