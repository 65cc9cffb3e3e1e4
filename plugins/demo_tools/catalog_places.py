"""Fixed facts about places: cities with their airports and aliases, flight routes, hotels.

Hand-written rather than generated so a test (or a planner eval) can name a
real-sounding hotel or route and rely on it existing; only schedules' prices
and seat counts come from the seeded RNG (:mod:`.seed`). Each city's UTC
offset is a fixed number for March (daylight-saving changes are ignored: a
sandbox needs consistent arrival times, not an airline's timetable).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    id: str
    name: str
    country: str
    #: IATA codes; the first is the main airport flights use.
    airports: tuple[str, ...]
    #: Other names people use ("NYC", "Hawaii"); matched case-insensitively with the name, id and codes.
    aliases: tuple[str, ...]
    utc_offset: int
    latitude: float
    longitude: float


HOME_CITY = "san_francisco"

CITIES: tuple[City, ...] = (
    City("san_francisco", "San Francisco", "United States", ("SFO", "OAK"), ("SF", "San Fran", "Frisco", "Bay Area"), -8, 37.62, -122.38),
    City("los_angeles", "Los Angeles", "United States", ("LAX", "BUR"), ("LA", "L.A."), -8, 33.94, -118.41),
    City("seattle", "Seattle", "United States", ("SEA",), (), -8, 47.45, -122.31),
    City("denver", "Denver", "United States", ("DEN",), (), -7, 39.86, -104.67),
    City("austin", "Austin", "United States", ("AUS",), (), -6, 30.19, -97.67),
    City("chicago", "Chicago", "United States", ("ORD", "MDW"), ("Chi-town", "CHI"), -6, 41.97, -87.91),
    City("boston", "Boston", "United States", ("BOS",), (), -5, 42.36, -71.01),
    City("new_york", "New York", "United States", ("JFK", "LGA", "EWR"), ("NYC", "New York City", "NY", "Manhattan"), -5, 40.64, -73.78),
    City("miami", "Miami", "United States", ("MIA",), (), -5, 25.79, -80.29),
    City("honolulu", "Honolulu", "United States", ("HNL",), ("Hawaii", "Oahu"), -10, 21.32, -157.92),
    City("tokyo", "Tokyo", "Japan", ("HND", "NRT"), ("TYO",), 9, 35.55, 139.78),
    City("london", "London", "United Kingdom", ("LHR", "LGW"), ("LON",), 0, 51.47, -0.45),
    City("paris", "Paris", "France", ("CDG", "ORY"), ("PAR",), 1, 49.01, 2.55),
    City("rome", "Rome", "Italy", ("FCO",), ("ROM", "Roma"), 1, 41.80, 12.25),
    City("lisbon", "Lisbon", "Portugal", ("LIS",), ("Lisboa",), 0, 38.77, -9.13),
)

#: Undirected routes and how many flights a day fly each way. San Francisco (home) connects everywhere.
ROUTES: tuple[tuple[str, str, int], ...] = (
    ("san_francisco", "los_angeles", 8), ("san_francisco", "seattle", 6), ("san_francisco", "denver", 5),
    ("san_francisco", "austin", 4), ("san_francisco", "chicago", 5), ("san_francisco", "boston", 4),
    ("san_francisco", "new_york", 6), ("san_francisco", "miami", 3), ("san_francisco", "honolulu", 4),
    ("san_francisco", "tokyo", 2), ("san_francisco", "london", 2), ("san_francisco", "paris", 1),
    ("san_francisco", "rome", 1), ("san_francisco", "lisbon", 1),
    ("los_angeles", "seattle", 3), ("los_angeles", "new_york", 5), ("los_angeles", "honolulu", 3),
    ("los_angeles", "denver", 3), ("los_angeles", "chicago", 3), ("los_angeles", "tokyo", 2),
    ("los_angeles", "austin", 2), ("los_angeles", "miami", 2), ("los_angeles", "london", 1),
    ("new_york", "boston", 6), ("new_york", "miami", 5), ("new_york", "chicago", 5), ("new_york", "denver", 3),
    ("new_york", "austin", 3), ("new_york", "london", 4), ("new_york", "paris", 2), ("new_york", "rome", 1),
    ("new_york", "lisbon", 1), ("chicago", "denver", 3), ("chicago", "boston", 3), ("chicago", "miami", 2),
    ("chicago", "austin", 2), ("chicago", "london", 1), ("seattle", "denver", 2), ("seattle", "honolulu", 2),
    ("seattle", "tokyo", 1), ("seattle", "chicago", 2), ("denver", "austin", 2), ("miami", "austin", 1),
    ("boston", "london", 1), ("boston", "miami", 2), ("london", "paris", 4), ("london", "rome", 3),
    ("london", "lisbon", 3), ("paris", "rome", 3), ("paris", "lisbon", 2), ("rome", "lisbon", 1),
    ("tokyo", "honolulu", 1),
)

#: Airlines by code; which may fly a route depends on whether it is domestic (US) or international.
AIRLINES: dict[str, str] = {
    "UA": "United", "AS": "Alaska", "DL": "Delta", "AA": "American", "WN": "Southwest", "B6": "JetBlue",
    "HA": "Hawaiian", "JL": "Japan Airlines", "NH": "ANA", "BA": "British Airways", "AF": "Air France",
    "AZ": "ITA Airways", "TP": "TAP Air Portugal", "VS": "Virgin Atlantic",
}
DOMESTIC_AIRLINES = ("UA", "AS", "DL", "AA", "WN", "B6")
#: Carriers that fly to a city besides the US majors (Hawaii gets Hawaiian, Tokyo gets JAL/ANA...).
HOME_CARRIERS: dict[str, tuple[str, ...]] = {
    "honolulu": ("HA", "UA", "AS"), "tokyo": ("JL", "NH", "UA"), "london": ("BA", "VS", "UA", "AA"),
    "paris": ("AF", "DL", "UA"), "rome": ("AZ", "DL"), "lisbon": ("TP", "UA"),
}


@dataclass(frozen=True)
class Hotel:
    city_id: str
    name: str
    neighbourhood: str
    #: Nearby places a user may say ("near the airport", "close to the convention center").
    landmarks: tuple[str, ...]
    stars: int
    nightly_dollars: int


HOTELS: tuple[Hotel, ...] = (
    Hotel("san_francisco", "The Union Square Grand", "Union Square", ("downtown", "cable cars", "Moscone Center"), 4, 289),
    Hotel("san_francisco", "Fog City Inn", "Fisherman's Wharf", ("Pier 39", "waterfront", "Alcatraz ferry"), 3, 199),
    Hotel("san_francisco", "Mission Dolores Hotel", "Mission", ("Dolores Park", "Valencia Street"), 3, 179),
    Hotel("san_francisco", "Embarcadero Bay Hotel", "Financial District", ("Ferry Building", "downtown", "waterfront"), 5, 419),
    Hotel("san_francisco", "SFO Airport Suites", "Millbrae", ("airport", "SFO"), 3, 149),
    Hotel("los_angeles", "Santa Monica Shores", "Santa Monica", ("beach", "pier", "Third Street Promenade"), 4, 329),
    Hotel("los_angeles", "Hollywood Palms Hotel", "Hollywood", ("Walk of Fame", "Hollywood Bowl"), 3, 209),
    Hotel("los_angeles", "Downtown LA Loft Hotel", "Downtown", ("Crypto.com Arena", "convention center", "downtown"), 4, 239),
    Hotel("los_angeles", "Venice Beach Hostel & Rooms", "Venice", ("beach", "boardwalk"), 2, 119),
    Hotel("los_angeles", "LAX Gateway Hotel", "Westchester", ("airport", "LAX"), 3, 159),
    Hotel("seattle", "Pike Place Hotel", "Downtown", ("Pike Place Market", "waterfront", "downtown"), 4, 259),
    Hotel("seattle", "Capitol Hill Guesthouse", "Capitol Hill", ("Cal Anderson Park", "nightlife"), 3, 169),
    Hotel("seattle", "Space Needle View Inn", "Queen Anne", ("Space Needle", "Seattle Center"), 3, 189),
    Hotel("seattle", "Sea-Tac Airport Hotel", "SeaTac", ("airport", "SEA"), 3, 139),
    Hotel("seattle", "Ballard Harbor Hotel", "Ballard", ("Ballard Locks", "breweries"), 4, 219),
    Hotel("denver", "The LoDo Denver", "LoDo", ("Union Station", "Coors Field", "downtown"), 4, 229),
    Hotel("denver", "Mile High Inn", "Capitol Hill", ("State Capitol", "Civic Center Park"), 3, 149),
    Hotel("denver", "RiNo Art Hotel", "RiNo", ("River North Art District", "breweries"), 4, 199),
    Hotel("denver", "Denver Airport Marriott", "Gateway Park", ("airport", "DEN"), 3, 139),
    Hotel("denver", "Cherry Creek Suites", "Cherry Creek", ("shopping", "Cherry Creek Mall"), 4, 209),
    Hotel("austin", "Congress Avenue Hotel", "Downtown", ("State Capitol", "convention center", "downtown"), 4, 249),
    Hotel("austin", "South Congress Motor Lodge", "South Congress", ("SoCo", "live music"), 3, 179),
    Hotel("austin", "Rainey Street Inn", "Rainey Street", ("nightlife", "Lady Bird Lake"), 3, 169),
    Hotel("austin", "Zilker Park Retreat", "Zilker", ("Barton Springs", "Zilker Park"), 4, 219),
    Hotel("austin", "Austin Airport Inn", "Southeast", ("airport", "AUS"), 2, 109),
    Hotel("chicago", "Magnificent Mile Hotel", "River North", ("Michigan Avenue", "downtown", "Navy Pier"), 4, 259),
    Hotel("chicago", "The Loop Tower", "The Loop", ("Millennium Park", "The Bean", "downtown"), 5, 349),
    Hotel("chicago", "Wicker Park Inn", "Wicker Park", ("nightlife", "The 606"), 3, 159),
    Hotel("chicago", "Wrigleyville Guesthouse", "Lakeview", ("Wrigley Field",), 3, 149),
    Hotel("chicago", "O'Hare Airport Hotel", "Rosemont", ("airport", "ORD"), 3, 129),
    Hotel("boston", "Back Bay Grand", "Back Bay", ("Copley Square", "Newbury Street"), 4, 299),
    Hotel("boston", "Beacon Hill Inn", "Beacon Hill", ("Boston Common", "State House"), 3, 229),
    Hotel("boston", "Seaport Harbor Hotel", "Seaport", ("waterfront", "convention center"), 4, 279),
    Hotel("boston", "Cambridge Square Hotel", "Cambridge", ("Harvard", "MIT"), 3, 209),
    Hotel("boston", "Logan Airport Inn", "East Boston", ("airport", "BOS"), 3, 159),
    Hotel("new_york", "Times Square Tower Hotel", "Midtown", ("Times Square", "Broadway", "theatres"), 4, 329),
    Hotel("new_york", "Central Park View", "Upper West Side", ("Central Park", "Museum of Natural History"), 5, 459),
    Hotel("new_york", "SoHo Loft Hotel", "SoHo", ("shopping", "Little Italy"), 4, 359),
    Hotel("new_york", "Brooklyn Bridge Inn", "Brooklyn", ("DUMBO", "Brooklyn Bridge"), 3, 219),
    Hotel("new_york", "JFK Airport Lodge", "Queens", ("airport", "JFK"), 2, 149),
    Hotel("miami", "South Beach Oceanfront", "South Beach", ("beach", "Ocean Drive", "Art Deco district"), 4, 309),
    Hotel("miami", "Brickell Bay Hotel", "Brickell", ("downtown", "Bayfront Park"), 4, 239),
    Hotel("miami", "Little Havana Casa", "Little Havana", ("Calle Ocho",), 3, 139),
    Hotel("miami", "Wynwood Walls Inn", "Wynwood", ("Wynwood Walls", "galleries"), 3, 169),
    Hotel("miami", "Miami Airport Hotel", "Doral", ("airport", "MIA"), 3, 129),
    Hotel("honolulu", "Waikiki Beach Resort", "Waikiki", ("beach", "Diamond Head"), 4, 349),
    Hotel("honolulu", "Aloha Tower Hotel", "Downtown", ("harbor", "downtown", "Chinatown"), 3, 199),
    Hotel("honolulu", "Diamond Head Inn", "Kapahulu", ("Diamond Head", "beach"), 3, 229),
    Hotel("honolulu", "Ko Olina Lagoon Resort", "Ko Olina", ("beach", "lagoons"), 5, 529),
    Hotel("honolulu", "Honolulu Airport Hotel", "Airport", ("airport", "HNL", "Pearl Harbor"), 2, 159),
    Hotel("tokyo", "Shinjuku Sky Hotel", "Shinjuku", ("Shinjuku Station", "Golden Gai"), 4, 219),
    Hotel("tokyo", "Shibuya Crossing Inn", "Shibuya", ("Shibuya Crossing", "Harajuku"), 3, 169),
    Hotel("tokyo", "Ginza Imperial", "Ginza", ("shopping", "Tokyo Station", "Imperial Palace"), 5, 399),
    Hotel("tokyo", "Asakusa Ryokan", "Asakusa", ("Senso-ji", "Skytree"), 3, 139),
    Hotel("tokyo", "Haneda Airport Hotel", "Ota", ("airport", "HND"), 3, 129),
    Hotel("london", "Covent Garden Hotel", "Covent Garden", ("West End", "theatres", "Trafalgar Square"), 4, 319),
    Hotel("london", "South Bank Rooms", "South Bank", ("London Eye", "Tate Modern", "Thames"), 3, 229),
    Hotel("london", "Kensington Park Hotel", "Kensington", ("Hyde Park", "museums"), 4, 279),
    Hotel("london", "Shoreditch House Hotel", "Shoreditch", ("nightlife", "Brick Lane"), 3, 189),
    Hotel("london", "Heathrow Airport Hotel", "Hillingdon", ("airport", "LHR"), 3, 149),
    Hotel("paris", "Hotel du Louvre Rivoli", "1st arrondissement", ("Louvre", "Tuileries", "Seine"), 4, 339),
    Hotel("paris", "Le Marais Boutique", "Le Marais", ("Place des Vosges", "Centre Pompidou"), 4, 269),
    Hotel("paris", "Montmartre Artists Inn", "Montmartre", ("Sacre-Coeur", "Moulin Rouge"), 3, 179),
    Hotel("paris", "Eiffel Tower View Hotel", "7th arrondissement", ("Eiffel Tower", "Champ de Mars"), 4, 309),
    Hotel("paris", "CDG Airport Hotel", "Roissy", ("airport", "CDG"), 3, 139),
    Hotel("rome", "Hotel Colosseo", "Monti", ("Colosseum", "Roman Forum"), 4, 249),
    Hotel("rome", "Trastevere Rooms", "Trastevere", ("nightlife", "Tiber"), 3, 159),
    Hotel("rome", "Spanish Steps Suites", "Tridente", ("Spanish Steps", "Trevi Fountain", "shopping"), 5, 429),
    Hotel("rome", "Vatican View Hotel", "Prati", ("Vatican", "St. Peter's"), 3, 189),
    Hotel("rome", "Fiumicino Airport Hotel", "Fiumicino", ("airport", "FCO"), 2, 119),
    Hotel("lisbon", "Alfama Heritage Hotel", "Alfama", ("Sao Jorge Castle", "fado", "tram 28"), 4, 199),
    Hotel("lisbon", "Bairro Alto Inn", "Bairro Alto", ("nightlife", "viewpoints"), 3, 139),
    Hotel("lisbon", "Belem Riverside Hotel", "Belem", ("Belem Tower", "Jeronimos Monastery", "river"), 4, 179),
    Hotel("lisbon", "Baixa Chiado Suites", "Baixa", ("downtown", "Praca do Comercio"), 4, 219),
    Hotel("lisbon", "Lisbon Airport Hotel", "Olivais", ("airport", "LIS"), 3, 109),
)
