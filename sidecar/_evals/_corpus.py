# Long lines hold whole sentences of data, easier to review unbroken.
# ruff: noqa: E501
"""Hand-written material for the task set generator (``_generate``): texts, labels, answers.

Kept apart from the builders so that a reviewer can read the data on its own. Nothing here is
random; ``_generate`` combines it deterministically.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CHATS",
    "CODE_TASKS",
    "COLOURS",
    "CONTACTS",
    "DAYS",
    "EVENTS",
    "FILLER",
    "HEADLINES",
    "INTENTS",
    "INVOICES",
    "NEEDLES",
    "ORDERS",
    "PATIENTS",
    "PEOPLE",
    "REVIEWS",
    "REWRITES",
    "SITES",
    "STORIES",
    "TEAMS",
    "THINGS",
    "TICKETS",
    "TOOL_CALLS",
]

# (review, sentiment)
REVIEWS = [
    ("The blender is quiet, powerful and easy to clean. Best purchase this year!", "positive"),
    ("It stopped charging after two days and support never replied.", "negative"),
    ("The jacket arrived on Tuesday. It is blue and fits as described.", "neutral"),
    (
        "Absolutely love these headphones, the sound is rich and the battery lasts forever.",
        "positive",
    ),
    ("The hotel room smelled of smoke and the staff were rude at check-in.", "negative"),
    ("The package contains two cables and a short manual.", "neutral"),
    ("Terrible app: it crashes every time I open the camera.", "negative"),
    ("Great value for the price, and delivery was faster than promised.", "positive"),
]

# (headline, topic) with topics sports, politics, business, technology, health
HEADLINES = [
    ("Midfielder signs three-year deal after a record-breaking season", "sports"),
    ("Chipmaker unveils a processor that halves power use in laptops", "technology"),
    ("Parliament passes the budget after a late-night vote", "politics"),
    ("Clinics report fewer flu cases as vaccination rates climb", "health"),
]

# (customer message, intent) with intents refund, cancel, upgrade, question
INTENTS = [
    ("I was charged twice for my order, please send my money back.", "refund"),
    ("Please stop my subscription at the end of this month.", "cancel"),
    ("I'd like to move to the premium plan with more storage.", "upgrade"),
    ("Do your boots come in half sizes?", "question"),
]

# Support tickets with personal data: (ticket, urgency low/medium/high)
TICKETS = [
    (
        "From: Maria Gonzalez <maria.gonzalez@example.com>, phone +34 612 555 019. "
        "Our whole clinic cannot log in to the scheduling system and patients are waiting.",
        "high",
    ),
    (
        "From: Tom Becker <t.becker@example.org>. Could you update the billing address on "
        "my account (12 Elm Street, Springfield) when you have a moment?",
        "low",
    ),
    (
        "From: Aisha Khan <aisha.k@example.net>, account 4417. Exports have been slow since "
        "yesterday; they finish, but take about ten minutes.",
        "medium",
    ),
    (
        "From: Lee Min-jun <minjun.lee@example.com>. Payroll for 40 staff failed to run today "
        "and salaries are due tomorrow morning.",
        "high",
    ),
]

# (invoice text, vendor, total, currency)
INVOICES = [
    (
        "INVOICE 2291 from Northwind Traders. Items: 4 lamps. Amount due: 312.50 EUR.",
        "Northwind Traders",
        312.5,
        "EUR",
    ),
    (
        "Bill from Blue Harbor Shipping for freight services. Total payable USD 1,450.00.",
        "Blue Harbor Shipping",
        1450.0,
        "USD",
    ),
    (
        "Receipt - Greenleaf Stationery - pens and paper - total 89.90 GBP, paid by card.",
        "Greenleaf Stationery",
        89.9,
        "GBP",
    ),
    (
        "Invoice no. 77 issued by Atlas Cloud Hosting. Monthly plan. Please pay 240 CHF.",
        "Atlas Cloud Hosting",
        240.0,
        "CHF",
    ),
]

# (signature block, name, email, phone)
CONTACTS = [
    (
        "Best regards,\nPriya Natarajan\nHead of Procurement, Orbit Labs\npriya@orbitlabs.example\n+44 20 7946 0321",
        "Priya Natarajan",
        "priya@orbitlabs.example",
        "+44 20 7946 0321",
    ),
    (
        "Cheers, Daniel Okafor | Sales | daniel.okafor@sunmill.example | tel. +1 415 555 0142",
        "Daniel Okafor",
        "daniel.okafor@sunmill.example",
        "+1 415 555 0142",
    ),
    (
        "-- \nSofia Rossi, Studio Verde\nmail: sofia@studioverde.example  mobile: +39 347 555 2290",
        "Sofia Rossi",
        "sofia@studioverde.example",
        "+39 347 555 2290",
    ),
    (
        "Kind regards\nKenji Watanabe (Operations)\nkenji.w@harborline.example / +81 3 5555 0198",
        "Kenji Watanabe",
        "kenji.w@harborline.example",
        "+81 3 5555 0198",
    ),
]

# (message, order id, item count, city)
ORDERS = [
    ("Hi, order A-5521 with 3 items still hasn't reached me in Porto.", "A-5521", 3, "Porto"),
    (
        "My order B-0098 (2 items) was delivered to the wrong address in Leeds.",
        "B-0098",
        2,
        "Leeds",
    ),
    (
        "Order C-7310, 5 items, shipped to Denver, arrived with one item broken.",
        "C-7310",
        5,
        "Denver",
    ),
    ("Can you check order D-1204? It has 1 item and should go to Nairobi.", "D-1204", 1, "Nairobi"),
]

# (announcement, event, month, city)
EVENTS = [
    (
        "Join us for the Spring Robotics Fair this April in Utrecht, with workshops for all ages.",
        "Spring Robotics Fair",
        "April",
        "Utrecht",
    ),
    (
        "The Northern Jazz Weekend returns to Bergen in August with twelve bands.",
        "Northern Jazz Weekend",
        "August",
        "Bergen",
    ),
    (
        "Save the date: Open Data Day comes to Montreal this March.",
        "Open Data Day",
        "March",
        "Montreal",
    ),
    (
        "The Coastal Food Market opens in Valencia in June, every Saturday morning.",
        "Coastal Food Market",
        "June",
        "Valencia",
    ),
]

# Patient and employee records (personal data): (record, name, date of birth, department/ward)
PATIENTS = [
    (
        "Intake note: Patient Elena Petrova, born 1984-03-12, admitted to Ward 5 with a fractured wrist.",
        "Elena Petrova",
        "1984-03-12",
        "Ward 5",
    ),
    (
        "Intake: Mr. Samuel Adeyemi, DOB 1957-11-02, transferred to Cardiology for observation.",
        "Samuel Adeyemi",
        "1957-11-02",
        "Cardiology",
    ),
    (
        "Employee record: Hannah Schmidt, date of birth 1990-07-25, joins the Finance department on Monday.",
        "Hannah Schmidt",
        "1990-07-25",
        "Finance",
    ),
    (
        "HR file: Carlos Mendes, born 1979-01-30, moves to the Logistics department next month.",
        "Carlos Mendes",
        "1979-01-30",
        "Logistics",
    ),
]

# News stories for summaries: (entity, key sentence, supporting sentences)
STORIES = [
    (
        "Harbor City",
        "Harbor City council approved a plan to replace its diesel ferries with electric ones by 2030.",
        [
            "The vote passed eleven to four after a long debate.",
            "The first two ferries will be ordered next spring.",
            "Residents had asked for quieter boats for years.",
            "The port authority will add chargers at both piers.",
            "Ticket prices will stay the same during the change.",
        ],
    ),
    (
        "Maplewood Library",
        "Maplewood Library will stay open until midnight during exam season after a student petition.",
        [
            "More than two thousand students signed the petition.",
            "Extra staff will be hired for the late shifts.",
            "The cafe on the ground floor will also stay open.",
            "The trial runs for six weeks.",
            "Security guards will patrol the reading rooms at night.",
        ],
    ),
    (
        "Orion Bikes",
        "Orion Bikes recalled eight thousand e-bikes because a faulty battery latch can open while riding.",
        [
            "No injuries have been reported so far.",
            "Owners can get a free replacement latch at any dealer.",
            "The recall covers models sold since last May.",
            "The company stopped sales of the model for two weeks.",
            "A software update will warn riders if the latch is loose.",
        ],
    ),
    (
        "Lake Vesna",
        "Scientists found that Lake Vesna is clearer than at any time in forty years thanks to a farm runoff ban.",
        [
            "Algae blooms have almost disappeared.",
            "Fish numbers have doubled since the ban began.",
            "Farmers now use buffer strips of grass along streams.",
            "Tourism to the lake rose by a third.",
            "The study will continue for another five years.",
        ],
    ),
    (
        "Redwood Bakery",
        "Redwood Bakery began giving its unsold bread to three shelters every evening.",
        [
            "The bakery used to throw away about forty loaves a day.",
            "Volunteers collect the bread at closing time.",
            "Other shops on the street plan to join.",
            "The owner started the scheme after a customer suggestion.",
            "The shelters serve about two hundred people each night.",
        ],
    ),
    (
        "Tidewater Rail",
        "Tidewater Rail will run trains every ten minutes on its coastal line from next month.",
        [
            "Trains now run every twenty minutes.",
            "Four new trains have been delivered for the change.",
            "Late evening services will also be added.",
            "Fares will not rise this year.",
            "The operator expects thirty percent more riders.",
        ],
    ),
    (
        "Kestrel School",
        "Kestrel School replaced its paper textbooks with shared tablets for all pupils.",
        [
            "Each class has a charging cart for the tablets.",
            "Teachers were trained over the summer.",
            "Parents can borrow a tablet for home study.",
            "Printed copies remain available on request.",
            "The school expects to save money within three years.",
        ],
    ),
    (
        "Sunfield Farms",
        "Sunfield Farms installed solar panels that now cover all the power its dairy uses.",
        [
            "The panels sit on the roofs of six barns.",
            "Surplus power is sold to the local grid.",
            "A battery stores energy for the early milking.",
            "The project took nine months.",
            "Neighbouring farms have asked for advice.",
        ],
    ),
    (
        "Pine Ridge Park",
        "Pine Ridge Park closed its northern trails for the winter to protect nesting eagles.",
        [
            "Rangers counted four eagle nests this year.",
            "The southern trails stay open.",
            "Visitors who enter closed areas can be fined.",
            "The trails reopen in early April.",
            "A webcam lets people watch one of the nests.",
        ],
    ),
    (
        "Copperline Telecom",
        "Copperline Telecom will bring fibre internet to forty rural villages by the end of next year.",
        [
            "Work starts in the valley villages in spring.",
            "Households will not pay for the connection.",
            "The project is funded partly by a regional grant.",
            "Speeds will be up to one gigabit.",
            "Old copper lines will be switched off afterwards.",
        ],
    ),
]

# (instruction, source, reference, checker regex)
REWRITES = [
    (
        "Rewrite this message in a formal tone:",
        "hey, can u send me the report by tmrw? thx",
        "Could you please send me the report by tomorrow? Thank you.",
        r"(?is)^(?!.*\b(?:u|tmrw|thx|hey)\b).*\breport\b.*\btomorrow\b",
    ),
    (
        "Fix the grammar and spelling:",
        "Their going too the store tomorow.",
        "They're going to the store tomorrow.",
        r"(?i)\bthey(?:'re| are) going to the store tomorrow\b",
    ),
    (
        "Translate into French:",
        "Good morning, how are you?",
        "Bonjour, comment allez-vous ?",
        r"(?i)\bbonjour\b",
    ),
    (
        "Rephrase this more politely:",
        "Send me the invoice now.",
        "Could you please send me the invoice when you have a moment?",
        r"(?i)\bplease\b.*\binvoice\b|\binvoice\b.*\bplease\b",
    ),
    (
        "Make this sentence more concise:",
        "In my personal opinion, I think that we should probably consider the option of postponing the meeting until a later date.",
        "We should postpone the meeting.",
        r"(?is)^(?=.*\bpostpone)(?!.{90,}).+$",
    ),
    (
        "Translate into Spanish:",
        "Thank you very much for your help.",
        "Muchas gracias por tu ayuda.",
        r"(?i)\bgracias\b",
    ),
    (
        "Fix the grammar:",
        "She don't like apples.",
        "She doesn't like apples.",
        r"(?i)\bshe (?:doesn't|does not) like apples\b",
    ),
    (
        "Rewrite in plain English for a child:",
        "Precipitation is anticipated during the afternoon hours.",
        "It will probably rain this afternoon.",
        r"(?i)\brain",
    ),
    (
        "Paraphrase this sentence:",
        "The meeting was cancelled because the manager was ill.",
        "Because the manager was sick, the meeting was called off.",
        r"(?i)(?=.*\bmeeting\b)(?=.*\bmanager\b)(?!.*The meeting was cancelled because the manager was ill)",
    ),
    (
        "Translate into German:",
        "Where is the train station?",
        "Wo ist der Bahnhof?",
        r"(?i)\bbahnhof\b",
    ),
    (
        "Rewrite this in the passive voice:",
        "The committee approved the new policy.",
        "The new policy was approved by the committee.",
        r"(?i)\bpolicy was approved by the committee\b",
    ),
    (
        "Correct the spelling:",
        "I recieved the pakage yesturday.",
        "I received the package yesterday.",
        r"(?i)\breceived the package yesterday\b",
    ),
    (
        "Reword this to sound more friendly:",
        "Your request has been denied.",
        "Sorry, we weren't able to approve your request this time.",
        r"(?i)\b(?:sorry|unfortunately|afraid)\b",
    ),
    (
        "Rewrite this headline in title case:",
        "new bridge opens to traffic in riverside",
        "New Bridge Opens to Traffic in Riverside",
        r"New Bridge Opens to Traffic in Riverside",
    ),
    (
        "Rewrite in the first person:",
        "He forgot his keys at the office.",
        "I forgot my keys at the office.",
        r"(?i)\bI forgot my keys\b",
    ),
    (
        "Translate into Italian:",
        "The museum opens at nine.",
        "Il museo apre alle nove.",
        r"(?i)\bmuseo\b",
    ),
    (
        "Make this more formal:",
        "We gotta fix this bug asap.",
        "We must fix this defect as soon as possible.",
        r"(?i)^(?!.*\b(?:gotta|asap)\b).*\bas soon as possible\b",
    ),
    (
        "Shorten to at most eight words:",
        "Due to unforeseen circumstances, the store will be closed for the whole day tomorrow.",
        "The store is closed all day tomorrow.",
        r"(?is)^\W*(?:\w+\W+){0,7}\w+\W*$",
    ),
    (
        "Rewrite as a question:",
        "The train leaves at six.",
        "Does the train leave at six?",
        r"\?\s*$",
    ),
    (
        "Proofread this sentence:",
        "Its a beatiful day in the nieghborhood.",
        "It's a beautiful day in the neighborhood.",
        r"(?i)\bit's a beautiful day in the neighbou?rhood\b",
    ),
]

# Open chat: lists of (role, text) turns ending with the user's.
CHATS = [
    [("user", "Hi! Can you suggest a name for my new grey kitten?")],
    [("user", "What are some fun things to do in Lisbon on a rainy day?")],
    [("user", "I'm feeling a bit nervous about my job interview tomorrow. Any tips?")],
    [("user", "Tell me an interesting fact about octopuses.")],
    [("user", "What should I cook tonight with eggs, spinach and some cheese?")],
    [("user", "Recommend a few novels for someone who loved The Martian.")],
    [("user", "How do I keep my basil plant alive indoors?")],
    [
        ("user", "Hello"),
        ("assistant", "Hi there! How can I help you today?"),
        ("user", "Just wanted to chat. How's your day going?"),
    ],
    [("user", "What's the difference between a latte and a flat white?")],
    [("user", "Give me a fun idea for a team-building afternoon.")],
    [("user", "I want to start running. How should I begin?")],
    [("user", "Can you tell me a short joke about penguins?")],
    [("user", "What are good questions to ask on a first date?")],
    [("user", "Any ideas for a birthday gift for my dad who likes gardening?")],
    [
        ("user", "We're planning a road trip in Scotland."),
        ("assistant", "Sounds lovely! How many days do you have?"),
        ("user", "About a week. Where should we go?"),
    ],
    [("user", "Why do cats purr?")],
    [("user", "What's a good way to learn to play the guitar as an adult?")],
    [("user", "Describe a cozy autumn evening in a few sentences.")],
    [("user", "Is it better to read in the morning or before bed?")],
    [("user", "What board games are good for four players?")],
]

# Tool calls: (user message, tool name, arguments)
TOOL_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "What's the weather like in Lisbon right now, in celsius?",
        "get_weather",
        {"city": "Lisbon", "unit": "celsius"},
    ),
    (
        "Is it cold in Chicago today? Give me fahrenheit.",
        "get_weather",
        {"city": "Chicago", "unit": "fahrenheit"},
    ),
    (
        "Check the weather in Osaka for me (celsius).",
        "get_weather",
        {"city": "Osaka", "unit": "celsius"},
    ),
    (
        "Do I need an umbrella in Dublin? Use celsius.",
        "get_weather",
        {"city": "Dublin", "unit": "celsius"},
    ),
    (
        "Find flights from Madrid to Athens on 2026-12-03.",
        "search_flights",
        {"origin": "Madrid", "destination": "Athens", "date": "2026-12-03"},
    ),
    (
        "I need to fly from Toronto to Vancouver on 2026-11-20.",
        "search_flights",
        {"origin": "Toronto", "destination": "Vancouver", "date": "2026-11-20"},
    ),
    (
        "Any flights Oslo to Rome on 2027-01-15?",
        "search_flights",
        {"origin": "Oslo", "destination": "Rome", "date": "2027-01-15"},
    ),
    (
        "Look up flights from Cairo to Nairobi for 2026-12-24.",
        "search_flights",
        {"origin": "Cairo", "destination": "Nairobi", "date": "2026-12-24"},
    ),
    (
        "How much is 250 US dollars in euros?",
        "convert_currency",
        {"amount": 250, "source": "USD", "target": "EUR"},
    ),
    (
        "Convert 1200 yen to pounds.",
        "convert_currency",
        {"amount": 1200, "source": "JPY", "target": "GBP"},
    ),
    (
        "What do 80 Swiss francs come to in US dollars?",
        "convert_currency",
        {"amount": 80, "source": "CHF", "target": "USD"},
    ),
    (
        "Please convert 45.5 euros into Canadian dollars.",
        "convert_currency",
        {"amount": 45.5, "source": "EUR", "target": "CAD"},
    ),
    ("Where is my order A-5521?", "lookup_order", {"order_id": "A-5521"}),
    ("Can you check the status of order Z-0042?", "lookup_order", {"order_id": "Z-0042"}),
    ("Track order K-7781 please.", "lookup_order", {"order_id": "K-7781"}),
    ("Has order M-1009 shipped yet?", "lookup_order", {"order_id": "M-1009"}),
    (
        "Put 'Dentist' in my calendar on 2026-12-01 at 09:30.",
        "create_event",
        {"title": "Dentist", "date": "2026-12-01", "time": "09:30"},
    ),
    (
        "Schedule 'Team retro' for 2026-11-27 at 15:00.",
        "create_event",
        {"title": "Team retro", "date": "2026-11-27", "time": "15:00"},
    ),
    (
        "Add a calendar entry 'Call mum' on 2026-12-05 at 18:00.",
        "create_event",
        {"title": "Call mum", "date": "2026-12-05", "time": "18:00"},
    ),
    (
        "Book 'Gym' into my calendar for 2026-11-30 at 07:00.",
        "create_event",
        {"title": "Gym", "date": "2026-11-30", "time": "07:00"},
    ),
]

# Python tasks: (signature and spec, reference implementation, tests)
CODE_TASKS = [
    (
        "is_palindrome(s: str) -> bool that tells whether s reads the same backwards, ignoring case and any character that is not a letter or digit",
        "def is_palindrome(s: str) -> bool:\n    kept = [c.lower() for c in s if c.isalnum()]\n    return kept == kept[::-1]\n",
        "assert is_palindrome('A man, a plan, a canal: Panama')\nassert not is_palindrome('hello')\nassert is_palindrome('')",
    ),
    (
        "fizzbuzz(n: int) -> list[str] that returns the FizzBuzz sequence from 1 to n ('Fizz' for multiples of 3, 'Buzz' for 5, 'FizzBuzz' for both, else the number)",
        "def fizzbuzz(n: int) -> list[str]:\n    out = []\n    for i in range(1, n + 1):\n        word = ('Fizz' if i % 3 == 0 else '') + ('Buzz' if i % 5 == 0 else '')\n        out.append(word or str(i))\n    return out\n",
        "assert fizzbuzz(5) == ['1', '2', 'Fizz', '4', 'Buzz']\nassert fizzbuzz(15)[-1] == 'FizzBuzz'\nassert fizzbuzz(0) == []",
    ),
    (
        "word_count(text: str) -> dict[str, int] that counts each lower-cased word (split on whitespace)",
        "def word_count(text: str) -> dict[str, int]:\n    counts: dict[str, int] = {}\n    for word in text.lower().split():\n        counts[word] = counts.get(word, 0) + 1\n    return counts\n",
        "assert word_count('a b A') == {'a': 2, 'b': 1}\nassert word_count('') == {}",
    ),
    (
        "flatten(items: list) -> list that flattens arbitrarily nested lists",
        "def flatten(items: list) -> list:\n    out = []\n    for item in items:\n        if isinstance(item, list):\n            out.extend(flatten(item))\n        else:\n            out.append(item)\n    return out\n",
        "assert flatten([1, [2, [3, [4]]], 5]) == [1, 2, 3, 4, 5]\nassert flatten([]) == []",
    ),
    (
        "merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]] that merges overlapping closed intervals and returns them sorted",
        "def merge_intervals(intervals):\n    merged = []\n    for start, end in sorted(intervals):\n        if merged and start <= merged[-1][1]:\n            merged[-1] = (merged[-1][0], max(merged[-1][1], end))\n        else:\n            merged.append((start, end))\n    return merged\n",
        "assert merge_intervals([(1, 3), (2, 6), (8, 10)]) == [(1, 6), (8, 10)]\nassert merge_intervals([(5, 6), (1, 2)]) == [(1, 2), (5, 6)]",
    ),
    (
        "roman_to_int(s: str) -> int that converts a Roman numeral to an integer",
        "def roman_to_int(s: str) -> int:\n    values = {'I': 1, 'V': 5, 'X': 10, 'L': 50, 'C': 100, 'D': 500, 'M': 1000}\n    total = 0\n    for i, c in enumerate(s):\n        v = values[c]\n        if i + 1 < len(s) and values[s[i + 1]] > v:\n            total -= v\n        else:\n            total += v\n    return total\n",
        "assert roman_to_int('MCMXCIV') == 1994\nassert roman_to_int('III') == 3\nassert roman_to_int('XLII') == 42",
    ),
    (
        "is_prime(n: int) -> bool",
        "def is_prime(n: int) -> bool:\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n    return True\n",
        "assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]",
    ),
    (
        "reverse_words(s: str) -> str that reverses the order of the words, separated by single spaces",
        "def reverse_words(s: str) -> str:\n    return ' '.join(reversed(s.split()))\n",
        "assert reverse_words('the quick  brown fox') == 'fox brown quick the'\nassert reverse_words('') == ''",
    ),
    (
        "chunk(items: list, size: int) -> list[list] that splits items into consecutive chunks of size (the last may be shorter)",
        "def chunk(items: list, size: int) -> list[list]:\n    return [items[i:i + size] for i in range(0, len(items), size)]\n",
        "assert chunk([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]\nassert chunk([], 3) == []",
    ),
    (
        "binary_search(items: list[int], target: int) -> int that returns the index of target in the sorted list, or -1",
        "def binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n        if items[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1\n",
        "assert binary_search([1, 3, 5, 7, 9], 7) == 3\nassert binary_search([1, 3, 5], 4) == -1\nassert binary_search([], 1) == -1",
    ),
    (
        "camel_to_snake(name: str) -> str that converts camelCase or PascalCase to snake_case",
        "import re\n\ndef camel_to_snake(name: str) -> str:\n    return re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()\n",
        "assert camel_to_snake('parseHttpRequest') == 'parse_http_request'\nassert camel_to_snake('UserId') == 'user_id'",
    ),
    (
        "running_sum(values: list[int]) -> list[int] that returns the cumulative sums",
        "def running_sum(values):\n    out, total = [], 0\n    for v in values:\n        total += v\n        out.append(total)\n    return out\n",
        "assert running_sum([1, 2, 3, 4]) == [1, 3, 6, 10]\nassert running_sum([]) == []",
    ),
    (
        "most_common_char(s: str) -> str that returns the most frequent character (the earliest one on a tie)",
        "def most_common_char(s: str) -> str:\n    best = ''\n    for c in s:\n        if best == '' or s.count(c) > s.count(best):\n            best = c\n    return best\n",
        "assert most_common_char('abracadabra') == 'a'\nassert most_common_char('xyyzz') == 'y'",
    ),
    (
        "dedupe(items: list) -> list that removes duplicates and keeps the first occurrence order",
        "def dedupe(items: list) -> list:\n    seen = set()\n    out = []\n    for item in items:\n        if item not in seen:\n            seen.add(item)\n            out.append(item)\n    return out\n",
        "assert dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]\nassert dedupe([]) == []",
    ),
    (
        "gcd(a: int, b: int) -> int, the greatest common divisor of two non-negative integers",
        "def gcd(a: int, b: int) -> int:\n    while b:\n        a, b = b, a % b\n    return a\n",
        "assert gcd(12, 18) == 6\nassert gcd(7, 0) == 7\nassert gcd(0, 0) == 0",
    ),
]

# Long documents (long-context items): sentence templates without any task's cue words.
SITES = ["Alder", "Birch", "Cedar", "Dunmore", "Elmstead", "Fairview", "Glenrock", "Hollis"]
TEAMS = ["facilities", "catering", "transport", "reception", "grounds", "archive", "print"]
THINGS = ["boiler", "loading dock", "staff canteen", "bicycle shed", "meeting rooms", "lifts",
           "visitor car park", "roof garden", "mail room", "east stairwell"]  # fmt: skip
PEOPLE = ["Ines Moreau", "Piotr Nowak", "Ruth Adler", "Omar Haddad", "Freya Lind", "Tariq Aziz",
           "Nadia Petrescu", "Luca Bianchi", "Mei Tanaka", "Oskar Berg"]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
COLOURS = ["green", "grey", "white", "pale blue", "yellow", "dark red"]
FILLER = [
    "The {team} team at the {site} site looked over the {thing} on {day} and found it in good order.",
    "{person} noted that the {thing} at {site} had been repainted {colour} the week before.",
    "On {day} the {site} site received new signs for the {thing}, which the {team} team put up.",
    "Visitors to {site} were asked to use the {thing} entrance while the {team} team worked nearby.",
    "{person} from the {team} team thanked everyone at {site} for keeping the {thing} tidy.",
    "The {thing} at the {site} site will be cleaned every {day} from now on, {person} said.",
    "A short walk round the {site} site on {day} showed the {thing} was busy but calm.",
    "The {team} team ordered {colour} curtains for the {thing} at {site} after a request from {person}.",
]  # fmt: skip
NEEDLES = [
    ("The access code for the {site} archive room is {code}.",
     "According to the document above, what is the access code for the {site} archive room? Reply with the code only."),
    ("The budget owner for the {site} refit is {person}.",
     "Based on the document above, who is the budget owner for the {site} refit? Reply with the name only."),
    ("The spare keys for the {site} site are kept in locker {code}.",
     "According to the text above, in which locker are the spare keys for the {site} site kept? Reply with the locker number only."),
]  # fmt: skip
