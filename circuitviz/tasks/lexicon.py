"""Word lists shared by the task generators and the demo corpus.

Every word here is ordinary English, and the ones a metric reads (verbs, pronouns, names) are single
tokens under GPT-2's BPE as well as under the demo's word-level tokenizer, so the same templates work
on the bundled demo model and on real models. Tuples, never lists: the lexicon is read-only.
"""

from __future__ import annotations

# (singular, plural) nouns that can head a subject noun phrase.
SUBJECT_NOUNS: tuple[tuple[str, str], ...] = (
    ("key", "keys"),
    ("author", "authors"),
    ("dog", "dogs"),
    ("cat", "cats"),
    ("boy", "boys"),
    ("girl", "girls"),
    ("man", "men"),
    ("woman", "women"),
    ("child", "children"),
    ("book", "books"),
    ("car", "cars"),
    ("house", "houses"),
    ("tree", "trees"),
    ("bird", "birds"),
    ("friend", "friends"),
    ("player", "players"),
    ("picture", "pictures"),
    ("letter", "letters"),
    ("song", "songs"),
    ("chair", "chairs"),
    ("lamp", "lamps"),
    ("horse", "horses"),
    ("flower", "flowers"),
    ("painting", "paintings"),
    ("bottle", "bottles"),
    ("boat", "boats"),
    ("kid", "kids"),
    ("box", "boxes"),
)

# (singular, plural) nouns that only appear inside prepositional phrases (places and furniture).
PLACE_NOUNS: tuple[tuple[str, str], ...] = (
    ("cabinet", "cabinets"),
    ("table", "tables"),
    ("window", "windows"),
    ("garden", "gardens"),
    ("door", "doors"),
    ("hill", "hills"),
    ("river", "rivers"),
    ("village", "villages"),
    ("farm", "farms"),
    ("bridge", "bridges"),
    ("tower", "towers"),
    ("shop", "shops"),
    ("wall", "walls"),
    ("lake", "lakes"),
    ("field", "fields"),
    ("forest", "forests"),
)

PREPOSITIONS: tuple[str, ...] = (
    "to",
    "near",
    "behind",
    "beside",
    "under",
    "above",
    "by",
    "with",
    "from",
    "on",
    "of",
    "in",
    "next to",
)

# (third-person singular, plural) transitive verbs used inside relative clauses.
TRANSITIVE_VERBS: tuple[tuple[str, str], ...] = (
    ("likes", "like"),
    ("sees", "see"),
    ("knows", "know"),
    ("helps", "help"),
    ("finds", "find"),
    ("loves", "love"),
    ("watches", "watch"),
    ("follows", "follow"),
    ("visits", "visit"),
    ("calls", "call"),
)

# (singular, plural) main verbs whose form the agreement tasks score.
AGREEMENT_VERBS: tuple[tuple[str, str], ...] = (
    ("is", "are"),
    ("was", "were"),
    ("has", "have"),
    ("seems", "seem"),
)

NOUN_ADJECTIVES: tuple[str, ...] = (
    "old",
    "new",
    "small",
    "big",
    "red",
    "blue",
    "green",
    "young",
    "little",
    "dark",
)

PREDICATE_ADJECTIVES: tuple[str, ...] = (
    "old",
    "new",
    "tall",
    "small",
    "big",
    "happy",
    "quiet",
    "ready",
    "broken",
    "clean",
    "heavy",
    "famous",
    "lost",
    "safe",
    "strange",
    "beautiful",
)

DEGREE_ADVERBS: tuple[str, ...] = ("very", "quite", "really", "too")

# Things a subject "has" in the agreement sentences' continuation.
POSSESSIONS: tuple[str, ...] = (
    "name",
    "story",
    "color",
    "shape",
    "handle",
    "home",
    "secret",
    "problem",
    "voice",
    "price",
)

# Occupations whose pronoun the corpus skews toward "he" / "she", and occupations it never skews.
MALE_OCCUPATIONS: tuple[str, ...] = (
    "mechanic",
    "engineer",
    "pilot",
    "farmer",
    "builder",
    "driver",
    "soldier",
    "guard",
    "surgeon",
    "sheriff",
    "programmer",
    "banker",
)
FEMALE_OCCUPATIONS: tuple[str, ...] = (
    "nurse",
    "secretary",
    "dancer",
    "teacher",
    "cleaner",
    "assistant",
    "receptionist",
    "librarian",
    "housekeeper",
    "nanny",
    "cashier",
    "maid",
)
NEUTRAL_OCCUPATIONS: tuple[str, ...] = (
    "person",
    "student",
    "worker",
    "customer",
    "visitor",
    "neighbor",
    "guest",
    "tourist",
    "passenger",
    "stranger",
    "client",
    "patient",
)

MALE_NAMES: tuple[str, ...] = (
    "John",
    "James",
    "Michael",
    "David",
    "Robert",
    "Paul",
    "Mark",
    "Tom",
    "Peter",
    "Daniel",
    "Kevin",
    "Brian",
    "Jason",
    "Eric",
    "Adam",
    "Ryan",
    "Jack",
    "Sam",
    "Ben",
    "George",
    "Frank",
    "Henry",
)
FEMALE_NAMES: tuple[str, ...] = (
    "Mary",
    "Sarah",
    "Anna",
    "Lisa",
    "Kate",
    "Emma",
    "Laura",
    "Alice",
    "Susan",
    "Linda",
    "Karen",
    "Emily",
    "Rachel",
    "Jessica",
    "Amy",
    "Rose",
    "Grace",
    "Helen",
    "Julia",
    "Diana",
    "Nancy",
    "Lucy",
)
NAMES: tuple[str, ...] = MALE_NAMES + FEMALE_NAMES

# Places people go together in the indirect-object sentences.
OUTING_PLACES: tuple[str, ...] = (
    "store",
    "park",
    "school",
    "office",
    "beach",
    "market",
    "station",
    "restaurant",
    "museum",
    "hospital",
    "cinema",
    "library",
    "party",
    "zoo",
)

# Objects handed over in the indirect-object sentences.
GIFTS: tuple[str, ...] = (
    "drink",
    "book",
    "ball",
    "gift",
    "letter",
    "bag",
    "ring",
    "flower",
    "pen",
    "cake",
    "hat",
    "note",
    "key",
    "ticket",
    "photo",
)
GIVING_VERBS: tuple[str, ...] = ("gave", "handed", "passed", "sent", "showed", "brought", "threw")

# Past-tense actions on an object, used before "because" in the pronoun sentences.
ACTION_VERBS: tuple[str, ...] = (
    "opened",
    "closed",
    "moved",
    "found",
    "cleaned",
    "checked",
    "painted",
    "carried",
    "fixed",
    "washed",
)

# What follows a pronoun (" she" / " he") in the pronoun sentences.
PRONOUN_CONTINUATIONS: tuple[str, ...] = (
    "was tired.",
    "was busy.",
    "was late.",
    "wanted to help.",
    "liked it.",
    "had time.",
    "was asked to.",
    "felt bored.",
    "was in a hurry.",
    "needed it.",
)
