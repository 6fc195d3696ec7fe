"""date_understanding (BIG-Bench-Hard, spec C.2): a sentence or two fix a date relative to today;
which of six options is the date some offset away from today, in MM/DD/YYYY?

Generated questions chain relations from a shown date to today ('On 3/14/1987, Ana adopted a cat.
2 weeks after that, she moved to a new flat. Today is 3 months after the day she moved.'), then
ask for an offset from today. The solver applies the stored steps. For the original BBH questions
it parses the text: the options, the offset asked for, and the way the context fixes today (about
twenty phrasings: 'Yesterday was ...', 'It is their 5-year anniversary', 'the palindrome day of
2020', ...). Calendar arithmetic clamps to the end of the month ('a month ago' from 03/31 is the
last day of February), which is how BBH labels such cases.

Two BBH families carry labels that no reading of their text gives: '... married on Jan 2, 1958.
It is their 5-year anniversary today.' is labelled as if today were in 1961, and '2015 is coming
in 36 hours.' as if today were 12/29/2014. The solver keeps the plain reading there (1963,
12/30/2014) and so disagrees with those labels; the scorer, as always, follows the labels.
"""

import calendar
import random
import re
from datetime import date, datetime, timedelta

from symbench.bbh import ChoiceTask, normalise_text, option_list
from symbench.core import Sample

MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December")
_MONTH_NUMBERS = {name.lower(): i + 1 for i, name in enumerate(MONTH_NAMES)}
_MONTH_NUMBERS.update({name[:3].lower(): i + 1 for i, name in enumerate(MONTH_NAMES)})
_MONTH_NUMBERS.update({"sept": 9, "feburary": 2})  # BBH writes both
_MONTH = "|".join(sorted(_MONTH_NUMBERS, key=len, reverse=True))

_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
             "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12}
_NUMBER = r"(\d+|" + "|".join(_NUMBER_WORDS) + ")"

NUMERIC_DATE = r"(\d{1,2})/(\d{1,2})/(\d{4})"
NAMED_DATE = rf"\b({_MONTH})\.? (\d{{1,2}})(?:st|nd|rd|th)?,? (\d{{4}})"
ANY_DATE = rf"(?:{NUMERIC_DATE}|{NAMED_DATE})"


# ---- calendar arithmetic --------------------------------------------------------------------

def shift(day: date, unit: str, amount: int) -> date:
    """`day` moved by `amount` days, weeks, months or years; months and years clamp the day of
    the month to the month's length."""
    if unit == "days":
        return day + timedelta(days=amount)
    if unit == "weeks":
        return day + timedelta(weeks=amount)
    months = day.month - 1 + amount * (12 if unit == "years" else 1)
    year, month = day.year + months // 12, months % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def mmddyyyy(day: date) -> str:
    return f"{day.month:02d}/{day.day:02d}/{day.year:04d}"


def read_date(text: str) -> date | None:
    """A date written M/D/YYYY or 'Mon D, YYYY' (also 'May 9th, 2017', 'Sept. 1st, 2021')."""
    text = text.strip()
    if match := re.fullmatch(NUMERIC_DATE, text):
        month, day, year = map(int, match.groups())
    elif match := re.fullmatch(NAMED_DATE, text, re.I):
        month, day, year = _MONTH_NUMBERS[match.group(1).lower()], int(match.group(2)), int(match.group(3))
    elif match := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text):
        year, month, day = map(int, match.groups())
    else:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _count(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS[word.lower()]


# ---- reading an original BBH question -------------------------------------------------------

_ASKED = re.compile(r"What is the date (.+?) in MM/DD/YYYY\?")


def asked_offset(phrase: str) -> tuple[str, int]:
    """'tomorrow' -> ('days', 1); 'one week ago from today' -> ('weeks', -1); '24 hours later'
    -> ('days', 1)."""
    phrase = phrase.strip().lower()
    fixed = {"today": 0, "tomorrow": 1, "yesterday": -1, "the day before yesterday": -2,
             "the day after tomorrow": 2}
    if phrase in fixed:
        return "days", fixed[phrase]
    match = re.fullmatch(rf"{_NUMBER} (hour|day|week|month|year)s? "
                         r"(ago|before today|from today|later|after today)(?: from today)?", phrase)
    if match is None:
        raise NotImplementedError(f"offset {phrase!r} is not one we read")
    amount, unit = _count(match.group(1)), match.group(2)
    sign = -1 if match.group(3) in ("ago", "before today") else 1
    if unit == "hour":
        if amount % 24:
            raise NotImplementedError(f"offset {phrase!r} is not a whole number of days")
        amount, unit = amount // 24, "day"
    return unit + "s", sign * amount


def _dates_in(text: str) -> list[date]:
    found = []
    for match in re.finditer(ANY_DATE, text, re.I):
        day = read_date(match.group(0))
        if day is not None:
            found.append(day)
    return found


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))


def _palindrome_day(year: int) -> date:
    day = date(year, 1, 1)
    while day.year == year:
        if (digits := day.strftime("%m%d%Y")) == digits[::-1]:
            return day
        day += timedelta(days=1)
    raise ValueError(f"{year} has no palindrome day")


_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_WEDDINGS = {"silver": 25, "ruby": 40, "golden": 50, "diamond": 60}


def _named_day(context: str) -> date | None:
    """Today given as a named day of a year: Christmas Eve, the last day of 1899, the first
    Monday of 2019, the palindrome day of 2020, US Thanksgiving, quarter ends, ..."""
    c = context
    if m := re.search(r"Christmas Eve of (\d{4})", c):
        return date(int(m.group(1)), 12, 24)
    if m := re.search(r"today is the (\w+) (" + "|".join(_WEEKDAYS) + r") of (\d{4})", c, re.I):
        weekday, nth = _WEEKDAYS[m.group(2).lower()], _ORDINALS[m.group(1).lower()]
        return _nth_weekday(int(m.group(3)), 1, weekday, nth)
    if m := re.search(r"Thanksgiving of (\d{4})", c):
        return _nth_weekday(int(m.group(1)), 11, 3, 4)  # the fourth Thursday of November
    if m := re.search(r"palindrome day of (\d{4})", c):
        return _palindrome_day(int(m.group(1)))
    if m := re.search(r"last day of the (\w+) quarter of (\d{4})", c):
        return shift(date(int(m.group(2)), 3 * _ORDINALS[m.group(1)], 1), "months", 1) - timedelta(days=1)
    if m := re.search(r"the (\w+) day of the (\w+) month of (\d{4})", c):
        return date(int(m.group(3)), _ORDINALS[m.group(2)], _ORDINALS[m.group(1)])
    if m := re.search(rf"last day of ({_MONTH})\.? (\d{{4}})", c, re.I):
        year, month = int(m.group(2)), _MONTH_NUMBERS[m.group(1).lower()]
        return date(year, month, calendar.monthrange(year, month)[1])
    if m := re.search(r"(?:today|this) is the (first|last) day of (\d{4})", c, re.I):
        return date(int(m.group(2)), 1, 1) if m.group(1) == "first" else date(int(m.group(2)), 12, 31)
    return None


def _event_then_today(context: str) -> date | None:
    """Today as an event's date plus a stated span: anniversaries, birthdays, monthly visits,
    eggs eaten one a day, days passed since, a postponement."""
    c = context
    if m := re.search(rf"born on the last day of ({_MONTH}) in (\d{{4}})\. "
                      r"Today is (?:her|his) (\d+)-year-old birthday", c, re.I):
        year, month = int(m.group(2)) + int(m.group(3)), _MONTH_NUMBERS[m.group(1).lower()]
        return date(year, month, calendar.monthrange(year, month)[1])
    if m := re.search(r"on the (\d+)\w\w of each month starting from the (\w+) of (\d{4})\. "
                      r"It is (?:her|his) (\d+)\w\w visit", c):
        first = date(int(m.group(3)), _MONTH_NUMBERS[m.group(2).lower()], int(m.group(1)))
        return shift(first, "months", int(m.group(4)) - 1)
    if m := re.search(rf"job in (\d{{4}})\. Today is (?:her|his) (\d+)-year work anniversary\."
                      rf".*?on ({_MONTH}) (\d+), (?:her|his) (\w+) day at work", c, re.I):
        that_day = date(int(m.group(1)), _MONTH_NUMBERS[m.group(3).lower()], int(m.group(4)))
        started = that_day - timedelta(days=_ORDINALS[m.group(5)] - 1)
        return shift(started, "years", int(m.group(2)))
    dates = _dates_in(c)
    if not dates:
        return None
    if m := re.search(r"(\d+)-year anniversary|(" + "|".join(_WEDDINGS) + r") wedding anniversary", c):
        return shift(dates[0], "years", int(m.group(1)) if m.group(1) else _WEDDINGS[m.group(2)])
    if m := re.search(r"bought (\d+) eggs\. (?:She|He) ate one per day\. Today (?:she|he) ran out", c):
        return dates[0] + timedelta(days=int(m.group(1)))
    if m := re.search(rf"{_NUMBER} days have passed since then", c):
        return dates[0] + timedelta(days=_count(m.group(1)))
    if m := re.search(rf"delayed by {_NUMBER} days? to today", c):
        return dates[0] + timedelta(days=_count(m.group(1)))
    if m := re.search(rf"which is {_NUMBER} days? away from now", c):
        return dates[0] - timedelta(days=_count(m.group(1)))
    return None


def _relative_day(context: str) -> date | None:
    """Today one step from a stated date: yesterday, tomorrow, the day before yesterday, a
    week ago, ten years ago, day-first notation, two people disagreeing."""
    c = context
    if "day before the month" in c and (m := re.search(rf"today is {NUMERIC_DATE}", c)):
        day, month, year = map(int, m.groups())
        return date(year, month, day)
    if m := re.search(rf"(\w+) thinks today is ({NUMERIC_DATE}), but (\w+) thinks today is "
                      rf"({NUMERIC_DATE})\. (\w+) is correct", c):
        return read_date(m.group(2) if m.group(11) == m.group(1) else m.group(7))
    if (m := re.search(rf"today is in fact ({_MONTH})\.? (\d+)", c, re.I)) and _dates_in(c):
        return date(_dates_in(c)[0].year, _MONTH_NUMBERS[m.group(1).lower()], int(m.group(2)))
    if m := re.search(rf"The day before yesterday was ({ANY_DATE})", c, re.I):
        return read_date(m.group(1)) + timedelta(days=2)
    if m := re.search(rf"Yesterday(?: was|,) ({ANY_DATE})", c, re.I):
        return read_date(m.group(1)) + timedelta(days=1)
    if m := re.search(rf"tomorrow(?: is|,| \(\w+,) ({ANY_DATE})", c, re.I):
        return read_date(m.group(1)) - timedelta(days=1)
    if m := re.search(rf"({ANY_DATE})[^.]*? {_NUMBER} (day|week|month|year)s? ago", c, re.I):
        return shift(read_date(m.group(1)), m.group(9).lower() + "s", _count(m.group(8)))
    if m := re.search(r"(\d{4}) is coming in (\d+) hours", c):
        return (datetime(int(m.group(1)), 1, 1) - timedelta(hours=int(m.group(2)))).date()
    return None


def _stated_today(context: str) -> date | None:
    """Today stated outright: 'Today is Sep 9, 1909', 'It is 4/19/1969 today', '3:02 pm of
    5/4/2004', or a month/day with the year elsewhere ('Today is 9/7. ... NFL 2003')."""
    if m := re.search(r"Today is (\d{1,2})/(\d{1,2})(?![\d/])", context):
        year = re.search(r"\b(1[5-9]\d\d|20\d\d)\b", context)
        if year:
            return date(int(year.group(1)), int(m.group(1)), int(m.group(2)))
    dates = _dates_in(context)
    if len(dates) == 1 and re.search(r"\btoday\b|current", context, re.I):
        return dates[0]
    return None


def today_from_context(context: str) -> date:
    """The date the context calls today. Raises NotImplementedError for wording we do not read."""
    for reader in (_named_day, _event_then_today, _relative_day, _stated_today):
        day = reader(context)
        if day is not None:
            return day
    raise NotImplementedError(f"cannot tell which day is today from: {context!r}")


def solve_bbh_date(text: str, options: dict[str, str]) -> str:
    """The option letter, as '(X)', for an original BBH date question."""
    asked = _ASKED.search(text)
    if asked is None:
        raise NotImplementedError("no 'What is the date ... in MM/DD/YYYY?' question found")
    target = shift(today_from_context(text[:asked.start()]), *asked_offset(asked.group(1)))
    return pick_option(options, target)


def pick_option(options: dict[str, str], target: date) -> str:
    """The option showing `target`. BBH's Thanksgiving items print the right month and day with
    a wrong year; when no option shows the date itself, the nearest option with the same month
    and day is the labelled one."""
    dates = {letter: read_date(text) for letter, text in options.items()}
    exact = [letter for letter, day in dates.items() if day == target]
    if exact:
        return f"({exact[0]})"
    same_day = [letter for letter, day in dates.items()
                if day is not None and (day.month, day.day) == (target.month, target.day)]
    if not same_day:
        raise ValueError(f"{mmddyyyy(target)} is not among the options")
    return f"({min(same_day, key=lambda letter: abs((dates[letter] - target).days))})"


# ---- generation -----------------------------------------------------------------------------

PEOPLE = (("Ana", "she"), ("Bruno", "he"), ("Chidi", "he"), ("Dalia", "she"), ("Emeka", "he"),
          ("Farah", "she"), ("Goran", "he"), ("Helga", "she"), ("Ivo", "he"), ("Jun", "he"),
          ("Keiko", "she"), ("Luca", "he"), ("Mireille", "she"), ("Nuno", "he"), ("Olga", "she"))
EVENTS = (("adopted a cat", "adopted the cat"), ("moved to a new flat", "moved"),
          ("started a pottery class", "started the class"), ("planted a cherry tree", "planted the tree"),
          ("signed a lease", "signed the lease"), ("ran a marathon", "ran the marathon"),
          ("opened a bakery", "opened the bakery"), ("bought a bicycle", "bought the bicycle"),
          ("passed a driving test", "passed the test"), ("came back from a trip", "came back"),
          ("painted the kitchen", "painted the kitchen"), ("joined a choir", "joined the choir"))
DISTRACTIONS = ("{other}'s dentist appointment is {n} days after today.",
                "{other} wrongly believes that today is {wrong}.",
                "{other} {event} on {wrong}.")

# Amounts a relation or question may use, per unit.
_AMOUNTS = {"days": (1, 40), "weeks": (1, 6), "months": (1, 11), "years": (1, 30)}


def render_date(day: date, style: str) -> str:
    month = MONTH_NAMES[day.month - 1]
    suffix = "th" if 10 <= day.day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day.day % 10, "th")
    return {"numeric": f"{day.month}/{day.day}/{day.year}", "padded": mmddyyyy(day),
            "short": f"{month[:3]} {day.day}, {day.year}", "long": f"{month} {day.day}, {day.year}",
            "ordinal": f"the {day.day}{suffix} of {month}, {day.year}",
            "day_first": f"{day.day:02d}/{day.month:02d}/{day.year} "
                         "(written day first, as in most of Europe)",
            }[style]


def _span(unit: str, amount: int) -> str:
    return f"{amount} {unit[:-1] if amount == 1 else unit}"


def _asked_phrase(unit: str, amount: int) -> str:
    if amount == 0:
        return "today"
    if unit == "days" and abs(amount) == 1:
        return "tomorrow" if amount > 0 else "yesterday"
    return f"{_span(unit, abs(amount))} {'after' if amount > 0 else 'before'} today"


class DateUnderstanding(ChoiceTask):
    """Which option is the date some offset from today, when the context fixes today through
    a chain of relations from a shown date?

    Levels: 1 = today shown outright, offsets in days; 2 = one relation in days or weeks;
    3 = one relation in any unit (months and years too) plus a distracting sentence; 4 = two
    chained relations; 5 = three chained relations, the shown date possibly written day first.
    Knobs: `links` (relations between the shown date and today), `units`, `distraction`,
    `day_first`."""

    id = "date_understanding"
    file_stem = "date_understanding"
    levels = (1, 2, 3, 4, 5)
    default_level = 3

    def knobs(self, level: int) -> dict:
        units = ("days",) if level == 1 else ("days", "weeks") if level == 2 else tuple(_AMOUNTS)
        return {"links": (0, 1, 1, 2, 3)[level - 1], "units": units, "distraction": level >= 3,
                "day_first": level == 5}

    def same_option(self, answer_text: str, option_text: str) -> bool:
        answer_day, option_day = read_date(answer_text), read_date(option_text)
        if answer_day is not None and option_day is not None:
            return answer_day == option_day
        return normalise_text(answer_text) == normalise_text(option_text)

    def make_sample(self, rng: random.Random, level: int, index: int, links: int = 1,
                    units: tuple = ("days",), distraction: bool = False, day_first: bool = False) -> Sample:
        while True:
            anchor = date(rng.randint(1900, 2030), rng.randint(1, 12), rng.randint(1, 28))
            steps = [(unit, rng.choice((-1, 1)) * rng.randint(*_AMOUNTS[unit]))
                     for unit in (rng.choice(units) for _ in range(links))]
            asked_unit = rng.choice(units)
            asked = (asked_unit, rng.choice((-1, 0, 1)) * rng.randint(*_AMOUNTS[asked_unit]))
            days = [anchor]
            for unit, amount in steps + [asked]:
                days.append(shift(days[-1], unit, amount))
            # Month and year steps from a day past the 28th would need the clamping convention.
            if all(day.day <= 28 for day, (unit, _) in zip(days, steps + [asked])
                   if unit in ("months", "years")):
                break
        person, pronoun = rng.choice(PEOPLE)
        context = self._context(rng, anchor, steps, person, pronoun, day_first)
        if distraction:
            other = rng.choice([name for name, _ in PEOPLE if name != person])
            wrong = render_date(shift(days[links], "days", rng.choice((-3, -2, -1, 1, 2, 3))), "padded")
            # First or last, so that no 'that' or pronoun of the chain refers to it.
            context.insert(rng.choice((0, len(context))), rng.choice(DISTRACTIONS).format(
                other=other, n=rng.randint(2, 20), wrong=wrong, event=rng.choice(EVENTS)[0]))
        options, block = option_list(self._option_texts(rng, days[links], days[-1], asked, anchor))
        question = (" ".join(context) + f" What is the date {_asked_phrase(*asked)}, written MM/DD/YYYY?\n"
                    f"{block}\nPick the correct option and end your reply with its letter in triple "
                    "angle brackets, for example <<<(B)>>>.")
        meta = {"anchor": anchor.isoformat(), "steps": [list(step) for step in steps],
                "asked": list(asked), "options": options}
        sample = Sample(task=self.id, id="", question=question, answer=None, complexity=level, meta=meta)
        sample.answer = self.solve(sample)
        return sample

    @staticmethod
    def _context(rng, anchor, steps, person, pronoun, day_first) -> list[str]:
        """Sentences leading from the shown date to today, one per step."""
        shown = render_date(anchor, "day_first" if day_first and rng.random() < 0.5 else
                            rng.choice(("numeric", "padded", "short", "long", "ordinal")))
        if not steps:
            return [rng.choice((f"Today is {shown}.", f"It is {shown} today.",
                                f"The calendar shows today's date: {shown}."))]
        if len(steps) == 1 and steps[0][0] == "days" and abs(steps[0][1]) <= 2 and rng.random() < 0.5:
            return [{1: f"Yesterday was {shown}.", 2: f"The day before yesterday was {shown}.",
                     -1: f"Tomorrow will be {shown}.",
                     -2: f"The day after tomorrow will be {shown}."}[steps[0][1]]]
        events = rng.sample(EVENTS, len(steps))
        sentences = [f"On {shown}, {person} {events[0][0]}."]
        for (unit, amount), (event, _) in zip(steps[:-1], events[1:]):
            sentences.append(f"{_span(unit, abs(amount)).capitalize()} {'after' if amount > 0 else 'before'} "
                             f"that, {pronoun} {event}.")
        unit, amount = steps[-1]
        sentences.append(f"Today is {_span(unit, abs(amount))} {'after' if amount > 0 else 'before'} "
                         f"the day {pronoun} {events[-1][1]}.")
        return sentences

    @staticmethod
    def _option_texts(rng, today, target, asked, anchor) -> list[str]:
        """The target and five wrong dates: near misses a slip in the arithmetic produces."""
        slips = [shift(target, "days", d) for d in (-1, 1, -7, 7)]
        slips += [shift(target, unit, d) for unit in ("months", "years") for d in (-1, 1) if target.day <= 28]
        slips += [shift(today, asked[0], -asked[1]), today, shift(anchor, *asked),
                  shift(target, "years", rng.choice((-1, 1)) * rng.randint(10, 80))]
        if target.day <= 12 and target.day != target.month:
            slips.append(date(target.year, target.day, target.month))
        wrong = sorted({mmddyyyy(day) for day in slips} - {mmddyyyy(target)})
        texts = rng.sample(wrong, 5) + [mmddyyyy(target)]
        rng.shuffle(texts)
        return texts

    def solve(self, sample: Sample) -> str:
        meta = sample.meta
        if "bbh_input" in meta:
            return solve_bbh_date(meta["bbh_input"], meta["options"])
        day = date.fromisoformat(meta["anchor"])
        for unit, amount in meta["steps"] + [meta["asked"]]:
            day = shift(day, unit, amount)
        return pick_option(meta["options"], day)


TASKS = [DateUnderstanding()]
