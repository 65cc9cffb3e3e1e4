"""Broad training phrasings: word banks per intent, clause patterns, and the templates composed from them.

The hand-written templates of :mod:`.templates` give each intent 5-10 fixed
sentences; a tagger trained on those alone learns the sentences, not what an
intent looks like. Here every intent gets banks of asking words (synonyms,
idioms, questions, statements of need) and clause patterns with varied
argument order and fillers; single-intent templates are the clauses with a
polite or casual lead-in, multi-intent and conditional templates join clauses
with connectors.

Training side only: nothing here is used by a held-out template, and
``tests/test_planner_corpus.py`` checks that no trigger word or sentence
shape of a held-out template is reproduced (held-out idioms such as "pencil
in", "lock in", "shoot", "drop ... a line", "as long as" are left out on purpose).

Patterns use :mod:`.pattern` syntax plus two shorthands expanded here:
``@NAME`` is the bank ``NAME`` as alternatives, and ``#`` in a slot name is the
clause's frame suffix ("" for the first frame, "2" for the second, ...).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from . import plans as p
from .plans import PlanWriter, Values, ref

#: Word banks: alternatives joined by "|" where a pattern says ``@NAME``.
BANKS: dict[str, tuple[str, ...]] = {
    # lead-ins before an imperative (unlabelled words of the first clause)
    "ASK": ("could you", "can you", "please", "would you", "can u", "pls", "I need you to", "I'd like you to",
            "I was hoping you could", "would it be possible to", "is it possible to", "go ahead and", "kindly",
            "could you please", "can you please", "I'd appreciate it if you could", "would you be able to",
            "are you able to", "quickly", "could u", "just", "ok", "alright,", "now"),
    "NEED": ("I need to", "I'd like to", "I have to", "I gotta", "I want to", "I wanna", "we need to", "let's",
             "time to", "I should", "I'm trying to", "I'm hoping to", "I'd love to", "help me", "I must"),
    # flights
    "FF_VERB": ("find", "show me", "search for", "look up", "check", "pull up", "list", "give me", "hunt down",
                "dig up", "price out", "compare", "scout out", "search", "browse", "check on", "find me", "show",
                "get me", "see about", "fetch", "check for", "give me a list of", "track down"),
    "FF_NOUN": ("flights", "a flight", "some flights", "flight options", "plane tickets", "airfares", "fares",
                "nonstop flights", "cheap flights", "any flights", "flight times", "a plane ticket", "options"),
    "FF_ASK": ("are there flights", "is there a flight", "do they have flights", "got any flights", "what flights go",
               "what's flying", "how much is a flight", "how much are flights", "what do flights cost",
               "what's the cheapest flight", "when can I fly", "can I fly", "is it possible to fly",
               "what are my options for flying", "how do I get", "what's available flying", "know any flights",
               "what does it cost to fly", "how expensive is it to fly", "is anything flying"),
    "BF_VERB": ("book", "reserve", "get", "buy", "snag", "nab", "secure", "purchase", "arrange", "find and book",
                "hold", "book me", "get me", "buy me", "reserve me", "find me", "snag me", "book us", "get us"),
    "BF_NOUN": ("a flight", "a ticket", "a plane ticket", "a seat", "seats", "tickets", "a one-way ticket",
                "a one-way", "the first flight", "the cheapest flight", "a nonstop", "the next flight", "airfare"),
    "BF_NEED": ("I need", "I'd like", "can I get", "could I get", "I'll take", "I want", "I'd love", "we need",
                "we'd like", "let me get", "may I have", "book", "reserve", "I'll need"),
    # hotels
    "FH_VERB": ("find", "show me", "search for", "look up", "pull up", "check", "list", "give me", "hunt for",
                "browse", "compare", "scout", "search", "find me", "get me options for", "dig up",
                "price out", "fetch", "check for"),
    "FH_NOUN": ("hotels", "a hotel", "places to stay", "rooms", "a room", "lodging", "accommodation", "hotel options",
                "a place to stay", "an inn", "a cheap hotel", "hotel rooms", "somewhere to sleep", "a motel", "a B&B"),
    "FH_ASK": ("any good hotels", "what's available", "is there a hotel", "are there hotels", "what's a good hotel",
               "any rooms free", "any vacancies", "what hotels do you have", "which hotels have rooms",
               "any hotel deals", "what are the hotel options", "know a good hotel", "can you recommend a hotel",
               "where's good to stay", "what's a decent place to sleep", "got any rooms"),
    "FH_NEED": ("I need", "I'd like", "I'm after", "we need", "I could use", "can you find me", "help me find",
                "I require", "I'm hunting for", "we're after", "I'm in need of"),
    "BH_VERB": ("book", "reserve", "get", "secure", "snag", "nab", "arrange", "book me", "hold", "confirm",
                "set me up with", "hook me up with", "get me", "buy", "pay for", "find me", "reserve me", "book us"),
    "BH_NOUN": ("a hotel", "a room", "a place", "accommodation", "a stay", "lodging", "a bed", "a cheap hotel",
                "a double room", "a suite", "the first hotel", "a hotel stay", "a king room"),
    # restaurants and food
    "FR_VERB": ("find", "show me", "search for", "look up", "recommend", "suggest", "list", "give me", "find me",
                "point me to",
                "name some", "tell me about", "dig up", "scout out"),
    "FR_ASK": ("got any", "know any", "are there any", "what are some", "where are the", "any", "do you know any",
               "can you recommend", "are there good", "what are the best"),
    "FR_NOUN": ("restaurants", "places", "spots", "joints", "food", "restaurant", "places to eat", "eateries",
                "options", "takeout places", "good places"),
    "FR_WANT": ("I'm in the mood for", "I feel like", "I could go for", "I'm hungry for", "I'm dying for", "I fancy",
                "feel like having", "I'd kill for", "I really want", "in the mood for", "hungry for", "dying for",
                "I need some", "I'm after some", "we want"),
    "FR_WHERE": ("where can I get", "where's good for", "who has", "who makes", "what's good for", "where do they have",
                 "anywhere with", "any place with", "who serves", "where's the best", "best spot for", "where to get",
                 "where should I go for", "who does good", "where can we get"),
    "OF_VERB": ("order", "get", "get me", "grab", "grab me", "order me", "send me", "bring me", "buy me", "fetch me",
                "have them bring", "pick up", "place an order for", "get us", "order us", "deliver", "buy"),
    "OF_NEED": ("can I get", "could I get", "I'll have", "I'd like", "I'll take", "I need", "we'll have", "I'll go with",
                "let me get", "can we get", "I'd love", "we'd like", "may I have"),
    # money
    "CB_VERB": ("check", "show me", "tell me", "give me", "pull up", "look up", "get me", "read me", "check on",
                "show", "look at", "fetch", "find"),
    "CB_IN": ("how much is in", "what's in", "how much money is in", "how much have I got in", "what do I have in",
              "how much is sitting in", "what's sitting in", "how much money's in", "how much is there in",
              "how much have I got saved in", "what's the total in", "how much cash is in"),
    "CB_CASUAL": ("am I broke", "am I rich yet", "how's my money looking", "how are my finances",
                  "do I have any money", "how's my bank account", "what am I working with", "how much money I have",
                  "what my balance is", "how am I doing money-wise", "what's my financial situation",
                  "how much I've got", "am I in the red", "can I see my balance", "what's my balance looking like"),
    "LT_VERB": ("show my", "list my", "show me my", "get my", "give me my", "display my", "go through my",
                "review my", "let me see my", "break down my", "itemize my", "find my", "look at my",
                "read me my", "check my", "bring up my", "pull my", "print my"),
    "LT_NOUN": ("transactions", "purchases", "charges", "payments", "expenses", "spending", "card activity",
                "transaction history", "statement", "debits", "activity", "receipts"),
    "LT_ASK": ("how much did I spend", "what did I buy", "where did my money go", "what went out",
               "what did I pay for", "how much have I spent", "any charges",
               "what have I been spending", "how much did I drop", "what did I pay", "what charges hit",
               "did I spend much", "how much did I put"),
    "TM_VERB": ("send", "pay", "give", "venmo", "zelle", "paypal", "reimburse", "lend", "loan", "spot", "front",
                "toss", "throw", "kick", "get", "cash app", "pay back", "refund", "slide", "hand", "repay", "tip"),
    "TM_VERB_TO": ("send", "pay", "give", "lend", "loan", "zelle", "venmo", "paypal", "get", "remit", "forward",
                   "pass", "hand", "make a payment of", "do a transfer of", "set up a transfer of",
                   "send a payment of", "push", "route", "kick over"),
    "PB_VERB": ("pay", "pay off", "cover", "handle", "knock out", "deal with", "square away", "finish off",
                "pay down", "make a payment on", "make the payment for", "submit payment for", "process", "zero out",
                "foot", "send payment for", "wrap up", "pay what's due on", "pay the balance on",
                "sort out", "pay the amount due on", "look after", "do"),
    # calendar
    "CE_VERB": ("add", "schedule", "stick", "throw", "jot down", "enter", "save", "log", "create", "note", "mark",
                "slot", "book", "plan", "arrange", "organize", "set", "calendar", "type in", "write down",
                "make a note of", "pop"),
    "CE_NOUN": ("add an event", "new event", "create an appointment", "make an appointment", "add an appointment",
                "add a calendar event", "create a calendar event", "new appointment", "schedule an event",
                "schedule an appointment", "make an event", "add a reminder", "set a reminder", "create a reminder",
                "calendar event", "book an appointment"),
    "LE_ASK": ("what's on my calendar", "what do I have", "what's happening", "what's my schedule",
               "what does my day look like", "what does my schedule look like", "what am I doing",
               "what have I got", "what's booked", "what's scheduled", "any events", "any meetings",
               "do I have anything", "is there anything", "what's coming up", "how busy am I", "am I busy",
               "what's lined up", "any plans", "what's on the calendar", "what events do I have",
               "what's in my diary", "am I booked", "got anything"),
    "LE_VERB": ("show my", "show me my", "list my", "read me my", "check my", "pull up my", "open my", "give me my",
                "get my", "go over my", "look at my", "walk me through my", "display my", "review my", "list"),
    "LE_NOUN": ("schedule", "calendar", "events", "appointments", "meetings", "plans", "diary", "day", "bookings",
                "commitments"),
    # contacts, messages, search
    "FC_VERB": ("find", "look up", "get me", "give me", "show me", "pull up", "send me", "tell me",
                "fetch", "grab", "share", "dig up", "bring up", "check", "search for", "find me", "text me", "locate"),
    "FC_NOUN": ("number", "phone number", "email", "email address", "contact info", "contact details", "contact",
                "details", "cell", "phone", "info", "contact card", "mobile"),
    "FC_ASK": ("how can I contact", "how can I get hold of", "how do I get in touch with", "what's the email for",
               "what's the contact for", "who is", "do you know how to contact", "what's the best way to contact",
               "how do I contact", "is there a number for", "what are the contact details for",
               "where can I find the email for", "how would I call", "how do I call", "what number do I use for"),
    "SM_VERB": ("text", "msg", "write", "write to", "email", "DM", "whatsapp", "notify", "inform", "remind", "alert",
                "reach out to", "hit up", "buzz", "send a note to", "send a text to", "send a message to", "warn",
                "update", "signal", "slack", "iMessage", "contact", "answer", "reply to", "get word to", "txt"),
    "SM_JOIN": (" that", ":", " and say", " and tell them", " the message", " to tell them", " -", ",",
                " and say that", " with this:", " and tell them that", " and write"),
    "WS_VERB": ("search the web for", "google", "look online for", "look into", "research", "read up on",
                "search up", "search for", "bing", "check online for", "find articles about", "browse for",
                "do a search for", "run a search on", "find out about", "dig into", "search online for",
                "find results for", "pull up results for", "look up", "check the web for"),
    # remembering facts
    "RM_CITY": ("I live in", "I moved to", "I just moved to", "I'm living in", "my home is", "I've relocated to",
                "I relocated to", "I'm settled in", "my city is", "home's", "note that I live in",
                "remember I live in", "update my city to", "set my home to", "change my home city to",
                "I'm located in", "we moved to", "I've moved to", "our home is in", "I reside in", "I stay in",
                "I'm living over in", "set my location to", "my home base is"),
    "RM_ACCOUNT": ("always pay from", "always pay with", "make my default account", "set my default account to",
                   "my default account is", "by default use", "my preferred account is", "always use",
                   "use this by default:", "I prefer paying from", "charge everything to", "pay everything from",
                   "make payments from", "stick to", "remember to pay from",
                   "from now on use", "default account:", "always charge", "prefer"),
    "RM_DIET": ("remember I'm", "note that I'm", "FYI, I'm", "for the record, I'm", "keep in mind I'm",
                "heads up, I'm", "I eat", "I went", "I've gone", "I'm", "I keep", "I only eat", "remember that I eat",
                "I've been", "my diet is", "I'm strictly", "I follow a diet that's", "I am", "we're", "I'm fully"),
    # the "if I can afford it" condition
    "AF": ("I can afford that", "it's affordable", "the budget allows", "my balance allows", "the balance is enough",
           "I have enough", "I've got enough", "there's enough in my account", "I've got the money",
           "I have the money", "I can pay for it", "it fits my budget", "my account can handle it",
           "the money's there", "I'm good for it", "I won't overdraw", "the balance covers it",
           "there's sufficient money", "I'm not short", "the cash is there", "I have the cash", "I've got the cash",
           "I have enough cash", "there's enough cash", "I can manage it", "it's within budget", "I can handle it",
           "my balance can take it", "money allows", "funds are there", "it won't break the bank"),
    "IF": (" if", " but if", " on condition that", " on the condition that", " if and when", " only when", ", if"),
    "CHECK_FIRST": ("check that", "make sure", "check if", "see if", "first check that", "confirm that",
                    "double-check that", "verify that"),
    # joining clauses
    "AND": ("and", "and then", ", then", "then", ", and then", ". then", "plus", ", plus", "also", ", also", "; also",
            "and also", "after that", ", after that", ". after that,", "once that's done,", "once done,",
            "when that's done,", "and after that", ", and", "&", "and afterwards", ", afterwards", ". next,",
            "next", ", and next", "then also", "and next", "; then", "and right after", ". and", "+"),
}

#: Generic wrappers the generator may put around any training request (see ``generate``).
PREFIXES = ("hey", "hey,", "hi", "hi,", "ok so", "ok", "so", "um", "uh", "yo", "hello", "okay,", "quick one:",
            "quick question,", "hmm", "right,", "alright", "oh and", "btw", "hey there,", "morning!", "good morning,",
            "sorry,", "excuse me,", "assistant,", "one thing:", "question:", "ok listen,", "well,", "hiya")
SUFFIXES = ("thanks", "thank you", "pls", "please", "asap", "when you get a chance", "if that's ok", "thx", "ty",
            "thanks!", "cheers", "if you can", "if possible", "for me", "right now", "today if possible", "!",
            "please and thank you", "no rush", "soon", "much appreciated", ":)", "would be great", "if you don't mind",
            "appreciate it", "k thanks", "thank u", "many thanks")


def expand(pattern: str, suffix: str = "") -> str:
    """``pattern`` with ``@NAME`` banks written out as choices and ``#`` slot suffixes filled in."""

    def bank(match: re.Match[str]) -> str:
        return "|".join(BANKS[match.group(1)])

    pattern = re.sub(r"@([A-Z_]+)", bank, pattern).replace(" <", "< ")  # no space left before a comma when dropped
    return re.sub(r"\{(!?[a-z_]+)#", lambda m: "{" + m.group(1) + suffix, pattern)


@dataclass(frozen=True)
class Clause:
    """One way to ask for one intent, with ``#`` where the frame's slot suffix goes."""

    intent: str
    pattern: str
    style: str = "plain"
    #: An imperative ("book ...") that takes a polite lead-in when it opens the request.
    imperative: bool = False
    #: "confirm": a message with a booking's confirmation code; "them": a message to the person named before;
    #: "trip": a hotel with the flight's city (says none); "order": an order (its slots take no suffix).
    kind: str = ""


def _c(intent: str, pattern: str, style: str = "plain", imperative: bool = False, kind: str = "") -> Clause:
    return Clause(intent, pattern, style, imperative, kind)


_FLIGHT_ROUTE = ("<from {origin#}> to {place#} {date#}", "to {place#} <from {origin#}> {date#}", "{date#} to {place#}",
                 "to {place#} for {!date#}", "{origin#} to {place#} {date#}", "headed to {place#} {date#}",
                 "bound for {place#} {date#}", "{date#} from {origin#} to {place#}", "to {place#} <sometime> {date#}")

CLAUSES: tuple[Clause, ...] = (
    # find_flights
    *(_c("find_flights", f"[@FF_VERB](find_flights) (@FF_NOUN) {route} <{{max_price#}}>", imperative=True)
      for route in _FLIGHT_ROUTE[:6]),
    _c("find_flights", "[@FF_VERB](find_flights) (@FF_NOUN) to {place#} {date#} for {passengers#} (people|passengers|travelers)",
       imperative=True),
    _c("find_flights", "[@FF_ASK](find_flights) to {place#} {date#}<?>", "indirect"),
    _c("find_flights", "[@FF_ASK](find_flights) from {origin#} to {place#} {date#} <{max_price#}><?>", "indirect"),
    _c("find_flights", "[@FF_ASK](find_flights) {date#} to {place#} <for {passengers#} (people|of you|travelers)><?>", "indirect"),
    _c("find_flights", "(I need|I'm after|I'm hunting for|I'd like to see|I want to see|let me see) "
       "[flights|flight options|fares|a list of flights|cheap flights](find_flights) to {place#} {date#} <{max_price#}>", "plain"),
    _c("find_flights", "[flight search|flights|fares|flts|airfare|flight options](find_flights): {origin#} to {place#}, {!date#}",
       "terse"),
    _c("find_flights", "{origin#} to {place#} {!date#} - [flights|fares|options|what's available](find_flights)<?>", "terse"),
    _c("find_flights", "[search flights|find flights|check flights](find_flights) {!date#} {origin#} {place#}", "terse"),
    # book_flight
    *(_c("book_flight", f"[@BF_VERB](book_flight) (@BF_NOUN) {route} <for {{passengers#}} (people|passengers)>",
         imperative=True) for route in _FLIGHT_ROUTE[:5]),
    _c("book_flight", "[@BF_VERB](book_flight) (@BF_NOUN) to {place#} {date#} <and> (pay|charge it|bill it) "
       "(from|to|with|on) {account#}", imperative=True),
    _c("book_flight", "[@BF_VERB](book_flight) {passengers#} (seats|tickets|spots) <from {origin#}> to {place#} {date#}",
       imperative=True),
    _c("book_flight", "[@BF_NEED](book_flight) (@BF_NOUN) to {place#} {date#} <for {passengers#} (people|passengers)>"),
    _c("book_flight", "[@BF_NEED](book_flight) (a flight|a ticket|a seat) {date#} from {origin#} to {place#}"),
    _c("book_flight", "(@NEED) [book|reserve|buy|get](book_flight) (a flight|a ticket|a seat|flights) to {place#} {date#}"),
    _c("book_flight", "(I need to|I have to|gotta|I've got to|I must) (be in|get to|be over in) {place#} {date#}, "
       "[book|reserve|get](book_flight) me (a flight|a seat|a ticket)"),
    _c("book_flight", "[fly me|take me|send me|get me over|ship me](book_flight) to {place#} {date#} <from {origin#}>", "casual"),
    _c("book_flight", "[book it|book|reserve](book_flight): {origin#} -> {place#}, {!date#}, {passengers#} (people|passengers)",
       "terse"),
    _c("book_flight", "{place#}, {!date#}: [book a flight|book a seat|reserve a seat|book it](book_flight) <please>", "terse"),
    _c("book_flight", "[make a reservation|make a flight reservation|reserve a flight|buy a ticket](book_flight) "
       "(to|for) {place#} {date#} <for {passengers#} (people|passengers)>"),
    # find_hotels
    _c("find_hotels", "[@FH_VERB](find_hotels) (@FH_NOUN) in {place#:city} <near {near#:hotel}> {date#} <for {nights#} nights>",
       imperative=True),
    _c("find_hotels", "[@FH_VERB](find_hotels) (@FH_NOUN) {date#} in {place#:city} <for {nights#} nights> "
       "<{max_price#:hotel} (a|per) night>", imperative=True),
    _c("find_hotels", "[@FH_VERB](find_hotels) (@FH_NOUN) for {nights#} nights in {place#:city} (from|beginning|checking in) {!date#}",
       imperative=True),
    _c("find_hotels", "[@FH_VERB](find_hotels) (@FH_NOUN) (near|by|next to|around) {near#:hotel} in {place#:city} "
       "<{max_price#:hotel} a night>", imperative=True),
    _c("find_hotels", "[@FH_ASK](find_hotels) in {place#:city} <near {near#:hotel}> {date#}<?>", "indirect"),
    _c("find_hotels", "[@FH_ASK](find_hotels) in {place#:city} for {nights#} nights <{max_price#:hotel} a night><?>", "indirect"),
    _c("find_hotels", "[@FH_NEED](find_hotels) (a hotel|a room|somewhere to sleep|a place to stay|lodging) in {place#:city} "
       "{date#} <for {nights#} nights>"),
    _c("find_hotels", "[@FH_NEED](find_hotels) (a hotel|a room|lodging) (near|by|close by) {near#:hotel} in {place#:city} "
       "<for {nights#} nights>"),
    _c("find_hotels", "[hotels|rooms|hotel search|lodging|hotel options](find_hotels) {place#:city} {!date#} {nights#} nights "
       "<{max_price#:hotel}>", "terse"),
    _c("find_hotels", "{place#:city}, {!date#}, {nights#} nights - [any hotels|hotels|rooms|options](find_hotels)<?>", "terse"),
    _c("find_hotels", "(staying|I'll be|we'll be) in {place#:city} {date#} - [@FH_ASK](find_hotels)<?>", "indirect"),
    # book_hotel
    _c("book_hotel", "[@BH_VERB](book_hotel) (@BH_NOUN) in {place#:city} {date#} <for {nights#} nights>", imperative=True),
    _c("book_hotel", "[@BH_VERB](book_hotel) (@BH_NOUN) {date#} in {place#:city} for {nights#} nights "
       "<and (pay|charge it|bill it) (from|to|with) {account#}>", imperative=True),
    _c("book_hotel", "[@BH_VERB](book_hotel) (@BH_NOUN) for {nights#} nights in {place#:city} (from|starting|beginning) {!date#}",
       imperative=True),
    _c("book_hotel", "[@BH_VERB](book_hotel) (@BH_NOUN) (near|by|next to) {near#:hotel} in {place#:city} {date#} "
       "<for {nights#} nights>", imperative=True),
    _c("book_hotel", "[I need|I'd like|can I get|could I get|I'll take|we need|we'd like|I want](book_hotel) "
       "(a room|a hotel|a reservation|a booking|a place) in {place#:city} for {nights#} nights {date#}"),
    _c("book_hotel", "(@NEED) [book|reserve|get](book_hotel) (a room|a hotel|a place) in {place#:city} {date#} <for {nights#} nights>"),
    _c("book_hotel", "[make a hotel reservation|make a reservation|reserve a room|book a room|book a stay](book_hotel) "
       "in {place#:city} {date#} <for {nights#} nights> <and (pay|charge it) (with|to) {account#}>"),
    _c("book_hotel", "[book|reserve|hold](book_hotel): {place#:city}, {nights#} nights, {!date#}", "terse"),
    _c("book_hotel", "{place#:city}, {nights#} nights from {!date#} - [book it|book a room|reserve something|book me in](book_hotel)",
       "terse"),
    # find_restaurants
    _c("find_restaurants", "[@FR_VERB](find_restaurants) <(good|some|nearby|decent|cheap)> {cuisine#} (@FR_NOUN) "
       "<(near|around|by|in) {near#}>", imperative=True),
    _c("find_restaurants", "[@FR_VERB](find_restaurants) (places|spots|restaurants|somewhere) (with|that serve|serving|for|known for) "
       "{dish#} <(near|around|by) {near#}>", imperative=True),
    _c("find_restaurants", "[@FR_ASK](find_restaurants) <(good|decent|cheap|nearby)> {cuisine#} (@FR_NOUN) (near|around|by|in) {near#}<?>",
       "indirect"),
    _c("find_restaurants", "[@FR_WHERE](find_restaurants) {dish#} <(near|around|by|in) {near#}><?>", "indirect"),
    _c("find_restaurants", "[@FR_WHERE](find_restaurants) (good|decent|cheap|great) {cuisine#} food <(near|around) {near#}><?>",
       "indirect"),
    _c("find_restaurants", "[@FR_WANT](find_restaurants) {dish#}, (anything good|any spots|anywhere good|what's good|any ideas) "
       "(near|around|by) {near#}?", "casual"),
    _c("find_restaurants", "[@FR_WANT](find_restaurants) {cuisine#} <food> - (where should I go|any suggestions|ideas|"
       "where's good|what's around)<?>", "casual"),
    _c("find_restaurants", "[@FR_WANT](find_restaurants) {dish#}(.|,| -) (where|who) (nearby|around|near) {near#} (has it|does it|makes it)?",
       "casual"),
    _c("find_restaurants", "[restaurants|food|eats|places to eat|dinner spots](find_restaurants) (around|by|in) {near#}, "
       "{cuisine#}", "terse"),
    _c("find_restaurants", "{cuisine#} (food|places|spots) (around|by|in) {near#}: [options|recommendations|ideas|suggestions]"
       "(find_restaurants)<?>", "terse"),
    _c("find_restaurants", "(I'm|we're) (hungry|starving)(,|.|!| -) [@FR_WHERE](find_restaurants) {dish#} <(near|around) {near#}><?>",
       "casual"),
    # order_food ("order" kind: its slots take no suffix, so an order always comes first)
    _c("order_food", "[@OF_VERB](order_food) {item} from (a|the|that|some) {cuisine} (place|spot|restaurant|joint)", imperative=True,
       kind="order"),
    _c("order_food", "[@OF_VERB](order_food) {quantity} {item} <and {item2}> from (a|the) {cuisine} (place|spot|restaurant) "
       "<(near|around|by) {near}>", imperative=True, kind="order"),
    _c("order_food", "[@OF_VERB](order_food) {quantity} {item} and {quantity2} {item2} from (the|a) {cuisine} (place|spot|restaurant)",
       imperative=True, kind="order"),
    _c("order_food", "[@OF_VERB](order_food) {item} from (somewhere|a place|a spot|a restaurant) (with|that serves|that makes|"
       "known for) {dish}", imperative=True, kind="order"),
    _c("order_food", "[@OF_VERB](order_food) {quantity} {item} from the {cuisine} (place|spot) <and> (pay|charge it|put it) "
       "(with|on|to|from) {account}", imperative=True, kind="order"),
    _c("order_food", "[@OF_NEED](order_food) {quantity} {item} <and {item2}> from (a|the|that) {cuisine} (place|spot|restaurant)<?>",
       kind="order"),
    _c("order_food", "[@OF_NEED](order_food) {item} from (somewhere|a place|a spot) (with|that serves|known for) {dish}<?>",
       kind="order"),
    _c("order_food", "from the {cuisine} (place|spot|restaurant)<,> [@OF_VERB](order_food) {quantity} {item}", kind="order"),
    _c("order_food", "(I'm|we're) (hungry|starving)<,> [@OF_VERB](order_food) {item} from (a|the) {cuisine} (place|spot)",
       "casual", kind="order"),
    _c("order_food", "[order|takeout|delivery](order_food): {quantity} {item}, {cuisine} (place|spot)", "terse", kind="order"),
    _c("order_food", "[order|get|grab](order_food) {cuisine} <food> - {quantity} {item} <and {item2}>", "terse", kind="order"),
    _c("order_food", "(@NEED) [order|get|grab](order_food) {item} from (a|the) {cuisine} (place|spot) <(near|by) {near}>",
       kind="order"),
    _c("order_food", "[place an order|make an order|set up an order](order_food) (with|at) (a|the) {cuisine} (place|restaurant)"
       "( for|:) {quantity} {item}", kind="order"),
    # check_balance
    _c("check_balance", "[@CB_VERB](check_balance) (my|the) <{account#}> balance<?>", imperative=True),
    _c("check_balance", "[@CB_VERB](check_balance) (my|the) balance (on|in|for|of) (my|the) {account#}<?>", imperative=True),
    _c("check_balance", "[what's|what is|I need|let me see|can I see|can I get|I'd like](check_balance) (my|the) <{account#}> "
       "balance<?>"),
    _c("check_balance", "[@CB_IN](check_balance) (my|the) {account#}<?>", "indirect"),
    _c("check_balance", "[what's my balance|what's the balance|balance](check_balance) (on|in|for) (my|the) {account#}<?>"),
    _c("check_balance", "(I need to|I'd like to|I want to|let me|help me) (know|see|check|find out) "
       "[my balance|how much money I have|what I have|my account balance|what's in the bank](check_balance) <in {account#}>"),
    _c("check_balance", "[@CB_CASUAL](check_balance)<?>", "casual"),
    _c("check_balance", "[@CB_CASUAL](check_balance) (in|with) (my|the) {account#}<?>", "casual"),
    _c("check_balance", "[balance check|acct balance|current balance|account balance|funds](check_balance): {account#}", "terse"),
    _c("check_balance", "{account#} - [how much|balance|what's there|how much is there](check_balance)<?>", "terse"),
    # list_transactions
    _c("list_transactions", "[@LT_VERB](list_transactions) <{category#}> (@LT_NOUN) <(since|after|starting) {!since#}>",
       imperative=True),
    _c("list_transactions", "[@LT_VERB](list_transactions) {category#} (@LT_NOUN) (from|between) {!since#} (to|and|until|till) {!until#}",
       imperative=True),
    _c("list_transactions", "[@LT_VERB](list_transactions) {account#} (@LT_NOUN) <since {!since#}>", imperative=True),
    _c("list_transactions", "[@LT_ASK](list_transactions) (on|for|in) {category#} between {!since#} and {!until#}<?>", "indirect"),
    _c("list_transactions", "[@LT_ASK](list_transactions) (on|for|in) {category#} from {!since#} (to|until|till) {!until#}<?>",
       "indirect"),
    _c("list_transactions", "[@LT_ASK](list_transactions) (on|for|in) {category#} (after|starting) {!since#}<?>", "indirect"),
    _c("list_transactions", "[@LT_ASK](list_transactions) between {!since#} and {!until#}<?>", "indirect"),
    _c("list_transactions", "(I need to|I'd like to|I want to|let me) [see|check|review|look over](list_transactions) (my|all my) "
       "{category#} (@LT_NOUN) <(since|after) {!since#}>"),
    _c("list_transactions", "[any|were there any|did I have any|got any](list_transactions) {category#} (charges|purchases|payments) "
       "(after|since) {!since#}?", "casual"),
    _c("list_transactions", "[transactions|spending|charges|purchases|history](list_transactions): {category#}, {!since#} - {!until#}",
       "terse"),
    _c("list_transactions", "{category#} [spending|charges|transactions](list_transactions) (since|after) {!since#} <please>",
       "terse"),
    # transfer_money
    _c("transfer_money", "[@TM_VERB](transfer_money) {person#} {amount#} <for {memo#}> <from {account#}>", imperative=True),
    _c("transfer_money", "[@TM_VERB_TO](transfer_money) {amount#} to {person#} <for {memo#}> <from {account#}>",
       imperative=True),
    _c("transfer_money", "[@TM_VERB](transfer_money) {person#} {amount#} (for|re|to cover|towards) {memo#}",
       imperative=True),
    _c("transfer_money", "[@TM_VERB](transfer_money) {person#} for {memo#}<,> {amount#}", imperative=True),
    _c("transfer_money", "(@NEED) [send|pay|give|pay back|reimburse|get|venmo](transfer_money) {person#} {amount#} <for {memo#}>"),
    _c("transfer_money", "(@NEED) [send|pay|give|get|zelle](transfer_money) {amount#} to {person#} <from {account#}>"),
    _c("transfer_money", "{person#} (needs|wants|is owed|should get) {amount#}< for {memo#}>, [send it|pay them|pay it|"
       "send that|make it happen|get it to them](transfer_money)", "indirect"),
    _c("transfer_money", "[@TM_VERB](transfer_money) {amount#} (over|along) to {person#} <for {memo#}>", "casual"),
    _c("transfer_money", "[payment|send|pay|money](transfer_money): {amount#} -> {person#} <({memo#})>", "terse"),
    _c("transfer_money", "[can you send|could you send|can I send|could I pay|can you pay](transfer_money) {person#} {amount#} "
       "<from my {account#}><?>", "polite"),
    _c("transfer_money", "[split|go halves on|chip in for|pay my share of](transfer_money) {memo#} with {person#}: {amount#}",
       "casual"),
    # pay_bill
    _c("pay_bill", "[@PB_VERB](pay_bill) (my|the|this month's) {payee#} bill <from {account#}>", imperative=True),
    _c("pay_bill", "[@PB_VERB](pay_bill) (my|the) {payee#} bill (now|today|already|this week) <(with|from) {account#}>",
       imperative=True),
    _c("pay_bill", "[pay|send|put down|apply](pay_bill) {amount#:bill} (to|on|for|against) (the|my) {payee#} bill <from {account#}>",
       imperative=True),
    _c("pay_bill", "[pay|cover|handle](pay_bill) {amount#:bill} of (the|my) {payee#} bill", imperative=True),
    _c("pay_bill", "{payee#} bill - [pay it|pay|pay that|handle it|cover it](pay_bill) <from {account#}>", "terse"),
    _c("pay_bill", "(@NEED) [pay|cover|pay off|handle](pay_bill) (the|my) {payee#} <bill>"),
    _c("pay_bill", "(the|my) {payee#} bill is due<,> (can you|could you|please|go ahead and) [pay it|pay|cover it|handle it]"
       "(pay_bill) <(from|with) {account#}>", "indirect"),
    _c("pay_bill", "[bill pay|pay bill|payment](pay_bill): {payee#}<, {amount#:bill}><, from {account#}>", "terse"),
    _c("pay_bill", "[make a payment on|make a payment to|send a payment to|send money to](pay_bill) (the|my) {payee#} "
       "(bill|account|company) <from {account#}>"),
    # create_event
    _c("create_event", "[@CE_VERB](create_event) {title#} (on|to|in|into) (my|the) (calendar|schedule|diary) {date#} <{time#}> "
       "<{duration#}> <at {location#}>", imperative=True),
    _c("create_event", "[@CE_VERB](create_event) {title#} {date#} {time#} <at {location#}>", imperative=True),
    _c("create_event", "[@CE_VERB](create_event) {title#} (for|at) {!time#} {date#} <at {location#}>", imperative=True),
    _c("create_event", "[@CE_NOUN](create_event)( for|:) {title#} {date#} <{time#}> <{duration#}>"),
    _c("create_event", "[@CE_NOUN](create_event): {title#}, {!date#} {time#}, (at|in|@) {location#}", "terse"),
    _c("create_event", "{date#} {time#}<,> [@CE_VERB](create_event) {title#} <at {location#}>"),
    _c("create_event", "(@NEED) [add|schedule|book|plan|calendar](create_event) {title#} {date#} <{time#}>"),
    _c("create_event", "[remind me about|remind me of|don't let me forget|make sure I remember|remind me to go to](create_event) "
       "{title#} {date#} <{time#}>"),
    _c("create_event", "I've got {title#} {date#} {time#}<,> [add it|save it|note it|log it|calendar it|add that]"
       "(create_event) <please>", "casual"),
    _c("create_event", "[block out|carve out|hold|reserve|set aside](create_event) {!duration#} {date#} <{time#}> for {title#}",
       "casual"),
    _c("create_event", "[schedule|add|book](create_event) {title#} at {location#} {date#} {time#} <{duration#}>", imperative=True),
    # list_events
    _c("list_events", "[@LE_ASK](list_events) (for|on) {!date#:any}<?>", "indirect"),
    _c("list_events", "[@LE_ASK](list_events) {date#:any} (at all|on my calendar|on my schedule|for me|so far)?", "indirect"),
    _c("list_events", "[@LE_VERB](list_events) (@LE_NOUN) (for|on) {!date#:any}", imperative=True),
    _c("list_events", "[@LE_VERB](list_events) (@LE_NOUN) for the (next|coming) {days#} days", imperative=True),
    _c("list_events", "[@LE_ASK](list_events) (in|for) the (next|coming) {days#} days<?>", "indirect"),
    _c("list_events", "(I need to|I'd like to|I want to|let me|help me) (know|see|check) [what's on|what I have|my schedule|"
       "my calendar|what's booked](list_events) (for|on) {!date#:any}"),
    _c("list_events", "{date#:any}<,> [what's on|what do I have|anything on|what's the plan|what's my day](list_events)<?>", "casual"),
    _c("list_events", "[schedule|calendar|events|plans](list_events) (for|on) {!date#:any} <please>", "terse"),
    _c("list_events", "[schedule|calendar|events](list_events): next {days#} days", "terse"),
    _c("list_events", "[what's on|what do I have](list_events) (for|on) {!date#:any}<?>"),
    # find_contact
    _c("find_contact", "[@FC_VERB](find_contact) {person#}'s (@FC_NOUN)", imperative=True),
    _c("find_contact", "[@FC_VERB](find_contact) (the|a) (number|email|contact|phone number|contact info) for {person#}",
       imperative=True),
    _c("find_contact", "[can I get|could I get|I need|I'd like|got|can I have](find_contact) {person#}'s (@FC_NOUN)<?>"),
    _c("find_contact", "[@FC_ASK](find_contact) {person#}( again| now| these days| by phone| by email| quickly| directly)<?>", "indirect"),
    _c("find_contact", "[what's|what is|where's](find_contact) {person#}'s (@FC_NOUN)<?>"),
    _c("find_contact", "(I need|I'm looking for|I'd like|I want) [contact info for|an email for|the email address of|the phone number of]"
       "(find_contact) {person#}"),
    _c("find_contact", "[contact|number|email|phone|info|contact info](find_contact)( for|:) {person#} <please>", "terse"),
    _c("find_contact", "{person#} - [number|email|contact details|phone](find_contact)<?>", "terse"),
    _c("find_contact", "(I need to|I have to|I want to|I'd like to) (call|email|reach out to|contact) {person#}(,| -|, so) "
       "[what's their number|what's their email|find their number|look them up|find their details|got their number]"
       "(find_contact)<?>", "indirect"),
    # send_message
    _c("send_message", "[@SM_VERB](send_message) {person#}(@SM_JOIN) {message#}", imperative=True),
    _c("send_message", "[@SM_VERB](send_message) {person#} \"{message#}\"", imperative=True),
    _c("send_message", "[send|write|text](send_message) (a text|a message|a note|a quick text|a quick note|an email|a DM) "
       "to {person#}( saying| that says|:| reading) {message#}", imperative=True),
    _c("send_message", "[send|write|text](send_message) \"{message#}\" to {person#}", imperative=True),
    _c("send_message", "(@NEED) [text|message|write to|email|tell|remind](send_message) {person#}( that|:) {message#}"),
    _c("send_message", "[tell|remind|warn|inform](send_message) {person#}( that|:) {message#}", imperative=True),
    _c("send_message", "[text to|message to|msg|dm|txt](send_message) {person#}: {message#}", "terse"),
    _c("send_message", "[send a message|send a text|send word|write a note](send_message) to {person#} <(saying|that says)> "
       "\"{message#}\""),
    _c("send_message", "(I need to|I'd like to|I want to|please) [get a message to|send a note to|send a text to|get word to]"
       "(send_message) {person#}: {message#}"),
    # web_search
    _c("web_search", "[@WS_VERB](web_search) {query#}", imperative=True),
    _c("web_search", "[@WS_VERB](web_search) {query#} <(for me|online|on the web|on the internet|real quick)>", imperative=True),
    _c("web_search", "(@NEED) [search for|look up|google|research|read up on|find out about](web_search) {query#}"),
    _c("web_search", "[what's the latest on|what do people say about|what can I learn about|is there anything online about|"
       "what's known about|can you find anything on|any info about|anything on|what can you find on|"
       "what can you find about|what's out there on|any news on](web_search) {query#}<?>", "indirect"),
    _c("web_search", "[search|web|google|lookup|web search](web_search): {query#}", "terse"),
    _c("web_search", "{query#} - [search it|google it|look it up|search that|look that up](web_search)<?>", "terse"),
    # remember
    _c("remember", "[@RM_CITY](remember) {fact_city#} <(now|btw|from now on|as of this month)>"),
    _c("remember", "(remember|note|fyi|heads up|for the record)(:|,| -) [@RM_CITY](remember) {fact_city#}"),
    _c("remember", "[@RM_ACCOUNT](remember) {fact_account#} <(from now on|by default|for everything|always|please)>"),
    _c("remember", "[use|pick|choose|go with](remember) {fact_account#} (by default|as my default|as the default account|"
       "every time|for everything I buy)"),
    _c("remember", "[@RM_DIET](remember) {fact_diet#} <(btw|now|so keep that in mind|fyi|remember that|just so that's noted)>"),
    _c("remember", "(remember|note|keep in mind|save this)(:|,| -) [I'm|I eat|I am](remember) {fact_diet#}"),
    _c("remember", "[I changed my diet, I'm|new diet: I'm|diet update: I'm|I switched to being](remember) {fact_diet#}", "casual"),
)

#: Clauses used only after a booking or a person named before (their plans refer back).
FOLLOW_UPS: tuple[Clause, ...] = (
    _c("send_message", "[text|send|message|forward|email|msg](send_message) {person#} the (confirmation|booking details|details|"
       "confirmation code|booking reference|reference number)", kind="confirm"),
    _c("send_message", "[send|forward|pass along|share](send_message) the (confirmation|booking details|details) to {person#}",
       kind="confirm"),
    _c("send_message", "[let|update|notify|inform](send_message) {person#} with the (confirmation|booking code)", kind="confirm"),
    _c("send_message", "[text|tell|message|msg](send_message) (them|him|her) {message#}", kind="them"),
    _c("send_message", "[text|message|write|remind](send_message) (them|him|her)( that| saying|:) {message#}", kind="them"),
    _c("book_hotel", "[a hotel|a room|somewhere to sleep|a place](book_hotel) (there|in town|too|as well) for {nights#} nights",
       kind="trip"),
    _c("book_hotel", "[book|get|reserve|grab](book_hotel) (a hotel|a room|accommodation) (there|in town|as well) "
       "<for {nights#} nights>", kind="trip"),
    _c("find_hotels", "[hotels|rooms|places to stay|lodging](find_hotels) (there|in town|nearby) for {nights#} nights", kind="trip"),
    _c("find_hotels", "[find|look up|check|show me|search](find_hotels) (hotels|rooms|places to stay) (there|in town) "
       "<for {nights#} nights>", kind="trip"),
)


# -- plans ---------------------------------------------------------------------------------------

_BOOKINGS = ("book_flight", "book_hotel")
_FLIGHTS = ("find_flights", "book_flight")


def sequence_plan(clauses: tuple[Clause, ...], suffixes: tuple[str, ...]) -> Callable[[PlanWriter, Values], None]:
    """The plan of clauses said in turn: each intent's standard steps, with the references follow-ups make."""

    def plan(w: PlanWriter, v: Values) -> None:
        last_booking: int | None = None
        flight_suffix: str | None = None
        first_person: str | None = None
        for clause, n in zip(clauses, suffixes):
            if clause.kind == "confirm":
                p.send_message(w, v, n, text=ref(last_booking, "confirmation"))
            elif clause.kind == "them":
                p.send_message(w, v, n, to=first_person)
            elif clause.intent in ("find_hotels", "book_hotel"):
                trip = flight_suffix if clause.kind == "trip" or flight_suffix is not None else None
                step = (p.book_hotel if clause.intent == "book_hotel" else p.search_hotels)(w, v, n, trip=trip)
                last_booking = step if clause.intent == "book_hotel" else last_booking
            elif clause.kind == "order":
                p.order_food(w, v)
            else:
                step = p.SINGLE[clause.intent](w, v, n)
                last_booking = step if clause.intent in _BOOKINGS else last_booking
            if clause.intent in _FLIGHTS and flight_suffix is None:
                flight_suffix = n
            if first_person is None and "{person" + n in expand(clause.pattern, n):
                first_person = v.get("person" + n)
        if first_person is None and any(c.kind == "them" for c in clauses):
            raise ValueError("a 'them' message needs a person said before")

    return plan


def condition_plan(clause: Clause) -> Callable[[PlanWriter, Values], None]:
    """"...if I can afford it": the paying account's balance, then the payment."""

    def plan(w: PlanWriter, v: Values) -> None:
        p.afford(w, v)
        if clause.kind == "order":
            p.order_food(w, v)
        else:
            p.SINGLE[clause.intent](w, v)

    return plan


# -- composing templates -------------------------------------------------------------------------


def single_pattern(clause: Clause) -> str:
    """A clause said on its own: imperatives may open with a polite or casual lead-in."""
    body = expand(clause.pattern)
    return f"<(@ASK) >{body}".replace("@ASK", "|".join(BANKS["ASK"])) if clause.imperative else body


def joined_pattern(clauses: tuple[Clause, ...], suffixes: tuple[str, ...]) -> str:
    """Clauses joined by connectors (the joining words fall between one clause's last slot and the next trigger)."""
    parts = [single_pattern(clauses[0]) if suffixes[0] == "" else expand(clauses[0].pattern, suffixes[0])]
    for clause, n in zip(clauses[1:], suffixes[1:]):
        connectors = (c if c[0] in ",;." else " " + c for c in BANKS["AND"])
        parts.append("(" + "|".join(connectors) + ") " + expand(clause.pattern, n))
    return "".join(parts)


#: Multi-intent combinations: (intents, follow-up kinds) and how many templates each gets.
PAIRS: tuple[tuple[tuple[str, ...], tuple[str, ...], int], ...] = (
    (("find_flights", "find_hotels"), ("", ""), 2), (("find_flights", "find_hotels"), ("", "trip"), 2),
    (("book_flight", "book_hotel"), ("", ""), 2), (("book_flight", "book_hotel"), ("", "trip"), 3),
    (("book_flight", "send_message"), ("", "confirm"), 3), (("book_hotel", "send_message"), ("", "confirm"), 2),
    (("book_flight", "book_hotel", "send_message"), ("", "trip", "confirm"), 2),
    (("check_balance", "transfer_money"), ("", ""), 2), (("check_balance", "pay_bill"), ("", ""), 2),
    (("pay_bill", "pay_bill"), ("", ""), 2), (("transfer_money", "transfer_money"), ("", ""), 2),
    (("list_events", "create_event"), ("", ""), 2), (("transfer_money", "send_message"), ("", "them"), 2),
    (("transfer_money", "send_message"), ("", ""), 2), (("order_food", "send_message"), ("order", ""), 2),
    (("web_search", "create_event"), ("", ""), 1), (("find_contact", "send_message"), ("", "them"), 2),
    (("order_food", "pay_bill"), ("order", ""), 1), (("pay_bill", "transfer_money"), ("", ""), 2),
    (("web_search", "send_message"), ("", ""), 1), (("create_event", "send_message"), ("", ""), 2),
    (("list_transactions", "check_balance"), ("", ""), 1), (("check_balance", "list_transactions"), ("", ""), 1),
    (("find_flights", "web_search"), ("", ""), 1), (("find_restaurants", "create_event"), ("", ""), 1),
    (("list_events", "send_message"), ("", ""), 1), (("create_event", "create_event"), ("", ""), 1),
    (("send_message", "send_message"), ("", ""), 1), (("pay_bill", "check_balance"), ("", ""), 1),
    (("transfer_money", "check_balance"), ("", ""), 1), (("find_hotels", "find_restaurants"), ("", ""), 1),
    (("check_balance", "pay_bill", "transfer_money"), ("", "", ""), 1), (("remember", "order_food"), ("", "order"), 1),
    (("web_search", "find_flights"), ("", ""), 1), (("find_contact", "create_event"), ("", ""), 1),
)

#: Payments a condition can guard, and templates each.
CONDITIONED = (("book_flight", 3), ("book_hotel", 2), ("order_food", 3), ("transfer_money", 3), ("pay_bill", 3))


def _pick(intent: str, kind: str, rng: random.Random, first: bool = True) -> Clause:
    """A clause of ``intent``; after the first, only clauses that open with their trigger (words before a
    later trigger would fall in the previous clause)."""
    pool = FOLLOW_UPS if kind in ("confirm", "them", "trip") else CLAUSES
    options = [c for c in pool if c.intent == intent and c.kind == kind and (first or c.pattern.startswith("["))]
    if not options:
        raise ValueError(f"no clause for {intent} ({kind or 'plain'})")
    return rng.choice(options)


def broad_templates(make: Callable[..., Any], split: str) -> list[Any]:
    """Every broad template, built with ``make(id, split, style, intents, pattern, plan)``: single clauses,
    combinations and conditions (the combinations' clauses picked with a fixed seed, so ids are stable)."""
    made = []
    for index, clause in enumerate(CLAUSES):
        made.append(make(f"b{index + 1:03d}", split, clause.style, clause.intent, single_pattern(clause)))
    rng = random.Random(20270302)
    count = 0
    for intents, kinds, n_templates in PAIRS:
        for _ in range(n_templates):
            clauses = tuple(_pick(intent, kind, rng, i == 0) for i, (intent, kind) in enumerate(zip(intents, kinds)))
            suffixes = tuple("" if i == 0 or c.kind == "order" else str(i + 1) for i, c in enumerate(clauses))
            count += 1
            made.append(make(f"m{count:03d}", split, "multi", " ".join(intents), joined_pattern(clauses, suffixes),
                             sequence_plan(clauses, suffixes)))
    count = 0
    for intent, n_templates in CONDITIONED:
        for index in range(n_templates):
            condition_first = index % 3 == 2  # "check that I have enough, then book..."
            clause = _pick(intent, "order" if intent == "order_food" else "", rng, first=not condition_first)
            body = expand(clause.pattern)
            count += 1
            if condition_first:
                pattern = f"(@CHECK_FIRST) [@AF](afford)<,> (then|and then|and if so|if so|and|before you) {body}"
                intents = f"afford {intent}"
            else:
                pattern = f"{single_pattern(clause) if clause.imperative else body}(@IF) [@AF](afford)"
                intents = f"{intent} afford"
            made.append(make(f"c{count:03d}", split, "condition", intents, expand(pattern), condition_plan(clause)))
    return made
