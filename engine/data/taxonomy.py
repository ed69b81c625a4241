"""Rule-based math taxonomy for tutoring data (seed 002's `tag_problem.py`): topic tags and a grade.

`topic_tags(text)` matches keyword and symbol rules per topic (fractions, percentages, area, equations, ...), in the
order of `TOPICS`. `infer_grade(text, tags)` takes the highest "typically taught from" grade among the tags, raised
for large numbers and lowered to 1 for small whole-number sums, clamped to 1..12; it returns a string, as the
seed's rows do (`"grade": "6"`). `tag_row` applies both to a row: tags already in the row are kept (new ones are
appended), a grade already in the row is kept unless a fixed grade is given. LLM tagging may come later.
"""

from __future__ import annotations

import re
from typing import Any, Optional

_WORD = r"(?<![a-z]){}(?![a-z])"


def _rx(*patterns: str) -> re.Pattern:
    return re.compile("|".join(patterns), re.IGNORECASE)


def _words(*words: str) -> str:
    return "|".join(_WORD.format(w) for w in words)


# topic -> (the grade it is typically taught from, rule)
TOPICS: dict[str, tuple[int, re.Pattern]] = {
    "counting": (1, _rx(_words("count", "counting", "how many are left", "tally"))),
    "addition": (1, _rx(_words("add", "adding", "addition", "sum", "plus", "total", "altogether", "in all",
                               "combined", "more than"), r"\d\s*\+\s*\d")),
    "subtraction": (1, _rx(_words("subtract", "subtracting", "subtraction", "minus", "difference", "left over",
                                  "remain", "remaining", "fewer", "less than", "take away", "gives away", "gave away", "are left",
                                  "is left", "were left"), r"\d\s*-\s*\d")),
    "place_value": (2, _rx(_words("place value", "tens", "hundreds", "thousands", "digit", "digits", "round",
                                  "rounding", "nearest ten", "nearest hundred"))),
    "money": (2, _rx(r"\$\s*\d", _words("dollar", "dollars", "cent", "cents", "price", "cost", "costs", "pay",
                                        "paid", "spend", "spent", "earn", "earns", "earned", "profit"))),
    "time": (2, _rx(_words("hour", "hours", "minute", "minutes", "o'clock", "am", "pm", "week", "weeks", "day",
                           "days", "month", "months", "year", "years", "schedule"))),
    "multiplication": (3, _rx(_words("multiply", "multiplying", "multiplication", "times", "product", "each",
                                     "per", "twice", "double", "triple", "groups of", "an hour", "a day", "a week", "a month"),
                           r"\d\s*[x×*]\s*\d")),
    "division": (3, _rx(_words("divide", "dividing", "division", "divided", "quotient", "remainder", "split",
                               "share", "shared", "equally", "half", "halves", "average"), r"\d\s*[÷/]\s*\d")),
    "measurement": (3, _rx(_words("length", "weight", "mass", "meter", "meters", "metre", "centimeter", "cm",
                                  "kilometer", "km", "inch", "inches", "foot", "feet", "yard", "mile", "miles",
                                  "gram", "grams", "kilogram", "kg", "pound", "pounds", "liter", "liters", "litre",
                                  "gallon", "gallons", "ounce", "ounces", "unit", "units"))),
    "fractions": (4, _rx(_words("fraction", "fractions", "numerator", "denominator", "half of", "third",
                                "thirds", "quarter", "quarters", "fourths", "fifths", "eighths", "mixed number"),
                         r"(?<![\d.])\d+\s*/\s*\d+(?![\d.])", r"\\frac")),
    "geometry": (4, _rx(_words("area", "perimeter", "angle", "angles", "triangle", "triangles", "rectangle",
                               "square", "circle", "radius", "diameter", "circumference", "polygon", "volume",
                               "cube", "cylinder", "sphere", "side", "sides", "parallel", "perpendicular",
                               "degrees", "shape", "shapes"))),
    "decimals": (5, _rx(_words("decimal", "decimals", "tenths", "hundredths"), r"(?<![\d.])\d*\.\d+")),
    "ratios": (6, _rx(_words("ratio", "ratios", "rate", "proportion", "proportional", "scale", "per hour",
                             "miles per", "unit rate"), r"\d+\s*:\s*\d+")),
    "percentages": (6, _rx(_words("percent", "percentage", "discount", "interest", "tax", "tip", "markup"),
                           r"\d\s*%")),
    "statistics": (6, _rx(_words("mean", "median", "range of", "average", "data set", "survey",
                                 "graph", "chart", "table"))),
    "negative_numbers": (6, _rx(_words("negative", "integer", "integers", "below zero", "temperature drop"),
                                r"(?<![\w)])-\d")),
    "probability": (7, _rx(_words("probability", "chance", "likely", "random", "at random", "coin", "dice",
                                  "die", "spinner", "odds", "outcome", "outcomes"))),
    "algebra": (7, _rx(_words("equation", "equations", "variable", "variables", "solve for", "expression",
                              "unknown", "inequality", "simplify", "linear", "slope", "function"),
                       r"(?<![a-z])[xyn]\s*[=+\-]|[=+\-]\s*\d*[xyn](?![a-z])|\d[xyn](?![a-z])")),
    "exponents": (8, _rx(_words("exponent", "exponents", "power", "powers", "squared", "cubed", "square root",
                                "scientific notation"), r"\^\s*\d", r"\\sqrt", r"\*\*\s*\d", r"[²³]")),
    "quadratics": (9, _rx(_words("quadratic", "parabola", "factor the", "polynomial", "polynomials"),
                          r"[xyn]\s*\^\s*2|[xyn]²")),
    "trigonometry": (10, _rx(_words("sine", "cosine", "tangent", "sin", "cos", "tan", "trigonometry",
                                    "hypotenuse"))),
    "calculus": (12, _rx(_words("derivative", "integral", "limit", "differentiate", "integrate"),
                         r"\\int", r"\\lim", r"d/dx")),
}

# Tags that say little on their own: a problem only about money or time keeps a low grade.
_CONTEXT_TAGS = frozenset({"money", "time", "measurement", "counting"})
_NUMBER = re.compile(r"(?<![\d.])\d[\d,]*(?:\.\d+)?")


def topic_tags(text: str) -> list[str]:
    """Topics whose rules match `text`, in `TOPICS` order."""
    if not text:
        return []
    return [topic for topic, (_, rule) in TOPICS.items() if rule.search(text)]


def _largest_number(text: str) -> float:
    best = 0.0
    for match in _NUMBER.findall(text):
        try:
            best = max(best, float(match.replace(",", "")))
        except ValueError:
            continue
    return best


def infer_grade(text: str, tags: Optional[list[str]] = None) -> str:
    """A school grade 1..12 for a problem, as a string."""
    tags = topic_tags(text) if tags is None else tags
    grades = [TOPICS[t][0] for t in tags if t in TOPICS]
    grade = max(grades) if grades else 3
    largest = _largest_number(text)
    if set(tags) <= {"addition", "subtraction", "counting"} and largest <= 20:
        grade = 1
    elif grade <= 3 and largest >= 1000:
        grade = max(grade, 4)
    elif grade <= 2 and largest >= 100:
        grade = 3
    return str(max(1, min(12, grade)))


def _text(row: dict) -> str:
    for key in ("question", "prompt", "instruction"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def tag_row(row: dict, grade: Optional[Any] = None) -> dict:
    """`topic_tags` and `grade` for a row (from its question, else prompt or instruction)."""
    text = _text(row)
    found = topic_tags(text)
    existing = row.get("topic_tags")
    tags = list(dict.fromkeys([*(existing or []), *found])) if isinstance(existing, list) else found
    if grade is not None:
        row["grade"] = str(grade)
    elif row.get("grade") in (None, ""):
        row["grade"] = infer_grade(text, found)
    row["topic_tags"] = tags
    return row
