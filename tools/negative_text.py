"""Text for synthesized negatives: running sentences and words that sound like the keywords, never the keywords.

Everything here is written for this project (no third-party text). :func:`utterances` draws, from a seeded
generator, a mix of

* **running text**: sentences from templates whose slots take everyday words and the sound-alike words, so a
  near word is heard *inside* speech;
* **isolated near words**: one sound-alike word said on its own (a sentence of one word), as a user says a
  command.

Every utterance passes :func:`keyword_tokens`; one holding a keyword token is dropped (and counted), so no
keyword is ever synthesized, whatever the word lists become.
"""
from __future__ import annotations

import random
import re
from typing import Iterator

KEYWORDS = frozenset({"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"})

# words that sound like a keyword (rhymes, keyword-initial words, homophones of a keyword's sound)
SOUND_ALIKES: dict[str, tuple[str, ...]] = {
    "yes": ("yet", "yesterday", "yell", "chess", "less", "mess", "guess", "bless", "says", "dress", "yesteryear"),
    "no": ("know", "now", "snow", "note", "nose", "known", "noble", "knot", "gnome", "nor", "new", "nope", "noah"),
    "up": ("pup", "cup", "upper", "upon", "uptown", "hop", "cop", "puppy", "upset", "upward", "sup", "pop"),
    "down": ("town", "gown", "downtown", "clown", "brown", "noun", "dawn", "drown", "sound", "downhill", "crown"),
    "left": ("lift", "laughed", "theft", "lefty", "loft", "deft", "lest", "leftover", "lefts", "lent", "cleft"),
    "right": ("write", "light", "bright", "rite", "night", "white", "ride", "rice", "wright", "fight", "ripe",
              "kite", "writer", "rights", "rightly", "alright", "frighten"),
    "on": ("an", "own", "in", "gone", "john", "honor", "onion", "one", "ontario", "ron", "don", "upon"),
    "off": ("of", "often", "cough", "scoff", "office", "offer", "awful", "oft", "officer", "soft", "loft"),
    "stop": ("stopped", "shop", "top", "stock", "stomp", "stoop", "stab", "stopper", "stops", "drop", "stoppage"),
    "go": ("going", "goat", "low", "though", "ghost", "grow", "goal", "gold", "toe", "dough", "ago", "ego",
           "goes", "gopher", "golf", "glow"),
}
DIGITS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero", "ten", "twenty")

SUBJECTS = ("my sister", "the writer", "our neighbour", "the officer", "a tall man", "the children", "my uncle",
            "the teacher", "the old clown", "everyone here", "the driver", "a small puppy", "the baker", "grandma")
VERBS = ("wrote", "bought", "painted", "carried", "found", "lost", "sold", "cooked", "cleaned", "visited",
         "noticed", "borrowed", "fixed", "ordered", "mentioned", "dropped", "delivered", "washed")
OBJECTS = ("a white kite", "the brown gown", "some rice", "a cup of tea", "the gold coin", "a bright lamp",
           "the letter", "an onion", "the goat", "the office key", "a soft pillow", "the chess set", "the note",
           "a ripe melon", "the crown", "eight apples", "the stock report", "a new dress", "the top shelf")
PLACES = ("in town", "at the shop", "near the loft", "in the kitchen", "at the office", "downtown", "uptown",
          "by the river", "in the garden", "at school", "in the attic", "at the station", "in ontario")
TIMES = ("yesterday", "tonight", "last week", "at night", "every morning", "often", "at eight", "long ago",
         "this afternoon", "before dawn", "later", "now and then")
TEMPLATES = (
    "{s} {v} {o} {p} {t}.",
    "I know {s} {v} {o} {t}.",
    "{t}, {s} {v} {o} {p}.",
    "Did {s} say the {w} was {w2}?",
    "Please write the word {w} in the note.",
    "I guess the {w} is known {p}.",
    "We often talk about the {w} and the {w2}.",
    "It is eight o'clock and the light is bright.",
    "{s} said {w}, then {w2}, then {w3}.",
    "Now we know {s} {v} {o}.",
    "The {w} was going to the {w2} {t}.",
    "Of course, {s} is going {p} {t}.",
    "Call {d} {d2} {d3} {d4} after {t}.",
    "Turn the page to {d} and read it aloud.",
)


def keyword_tokens(text: str) -> list[str]:
    """The keyword tokens in ``text`` (lower-cased words; "downtown" is not "down", "it's" is "it's")."""
    return [t for t in re.findall(r"[a-z']+", text.lower()) if t.strip("'") in KEYWORDS]


def _near_words() -> list[str]:
    return sorted({w for ws in SOUND_ALIKES.values() for w in ws})


def _sentence(rng: random.Random, near: list[str]) -> str:
    slots = {"s": rng.choice(SUBJECTS), "v": rng.choice(VERBS), "o": rng.choice(OBJECTS), "p": rng.choice(PLACES),
             "t": rng.choice(TIMES), "w": rng.choice(near), "w2": rng.choice(near), "w3": rng.choice(near),
             "d": rng.choice(DIGITS), "d2": rng.choice(DIGITS), "d3": rng.choice(DIGITS), "d4": rng.choice(DIGITS)}
    text = rng.choice(TEMPLATES).format(**slots)
    return text[0].upper() + text[1:]


def utterances(seed: int, isolated_share: float = 0.4) -> Iterator[str]:
    """Endless utterances: running sentences and (``isolated_share`` of them) one near word on its own."""
    rng = random.Random(seed)
    near = _near_words() + list(DIGITS)
    while True:
        text = rng.choice(near).capitalize() + "." if rng.random() < isolated_share else _sentence(rng, near)
        if not keyword_tokens(text):
            yield text


CONSONANTS = ("b", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh", "t", "v", "w", "y", "z")
# vowels spelled so no syllable is a keyword's sound ("go", "no", "on", "up" all need an o or u sound; "ee"/"oo"
# and "ai" keep synthesizers from reading a syllable as a letter name)
VOWELS = ("a", "e", "ee", "i", "oo", "ai", "ah", "eh")
LETTERS = tuple("abcdefghijklmnpqrstuvwxyz")       # letter names; "o" left out (spoken "oh", as in "no", "go")


def syllables(seed: int) -> Iterator[str]:
    """Endless utterances of one to four letter names or consonant-vowel syllables, as a child's letters game
    or a spelling voice says them: short isolated sounds near the length of a keyword, never a keyword."""
    rng = random.Random(seed)
    while True:
        items = [rng.choice(LETTERS).upper() if rng.random() < 0.35 else rng.choice(CONSONANTS) + rng.choice(VOWELS)
                 for _ in range(rng.randint(1, 4))]
        text = ". ".join(i[0].upper() + i[1:] for i in items) + "."
        if not keyword_tokens(text):
            yield text


TEXTS = {"speech": utterances, "syllables": syllables}     # a sources table's "text" field -> its generator


def check_word_lists() -> list[str]:
    """Keyword tokens that slipped into the word lists (empty when the lists are clean)."""
    pools = [*SOUND_ALIKES.values(), DIGITS, SUBJECTS, VERBS, OBJECTS, PLACES, TIMES, TEMPLATES]
    return sorted({t for pool in pools for item in pool for t in keyword_tokens(item)})
