"""The demo data set (API.md section 6), built the same way every time.

Everything is derived from one ``random.Random(20200401)`` and from fixed
dates, and every row id is ``demo_id(...)`` (a uuid5 over a fixed namespace),
so two runs on two fresh databases write identical rows. The whole data set is
written in one transaction with ``COPY`` (``copy_records_to_table``) over the
owner connection, which bypasses row-level security. When the owner is a
superuser and the tables carry no triggers of their own, the per-row
foreign-key checks are skipped for that transaction (``session_replication_role
= replica``, as ``pg_restore --disable-triggers`` does); CHECK, NOT NULL and
unique constraints still apply. 20,000 students (600,000 responses) load in
well under a minute.

Structure of each district (``students=None`` gives 2 schools x 3 classes x
22 students per district; larger ``students`` counts add classes of about 25
primary students and schools of up to 10 classes):

* ``admin@<slug>.example`` (DISTRICT_ADMIN);
* school N has ``principal<N>@<slug>.example`` (SCHOOL_ADMIN) and teachers
  ``teacher<M>@<slug>.example`` numbered across the district, about one per
  two classes; in every school class 1 is taught by the school's first
  teacher alone, class 2 by its second teacher alone, and class 3 by the
  second teacher with the first as co-teacher;
* students ``student<N>@<slug>.example`` are dealt round-robin over the
  district's classes, so ``student1`` is in class 1 of school 1 (taught by
  ``teacher1`` alone) and ``student2`` in class 2 of school 1 (taught by
  ``teacher2`` alone, and never given a second class);
* ``guardian1@<slug>.example`` is the guardian of ``student1`` only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.db import connect

SEED = 20200401
NAMESPACE = uuid.UUID("6f1c2a4e-3b0d-5e8f-9a7c-2d4b6e8f0a1c")

SCHOOL_YEAR_START = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
ROWS_CREATED_AT = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
ENROLLMENT_BEGIN = dt.date(2026, 8, 15)
ACTIVITY_WINDOW = dt.timedelta(weeks=8)
_YEAR_START_TS = SCHOOL_YEAR_START.timestamp()

DEFAULT_STUDENTS = 264  # 2 districts x 2 schools x 3 classes x 22 students
MIN_STUDENTS = 240  # 2 districts x 2 schools x 3 classes x 20 students
RESPONSES_PER_STUDENT = 30
PRIMARY_CLASS_SIZE = 25
MAX_CLASSES_PER_SCHOOL = 10
SECOND_CLASS_RATE = 0.15
SIBLING_RATE = 0.06
SECOND_GUARDIAN_RATE = 0.3
OPT_OUT_RATE = 0.05

SUBJECTS = ("Math", "Reading")
EVENT_KINDS = ("NAVIGATE", "VIEW", "CLICK", "TOUCH", "HOVER", "ANSWER")
NAVIGATE_TARGETS = ("/practice", "/assignments", "/progress")
TIMES = "\u00d7"  # the multiplication sign
LOCK_KEY = 7_202_004_010  # pg_advisory_xact_lock: one seeding at a time

Row = tuple[Any, ...]


_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes, usedforsecurity=False)
_VERSION_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_SET = (5 << 76) | (0x8000 << 48)
_new_object = object.__new__
_set_attribute = object.__setattr__


def demo_id(*parts: str) -> uuid.UUID:
    """The id of a demo row: uuid5 over a fixed namespace and ``"/".join(parts)``.

    Equal to ``uuid.uuid5(NAMESPACE, "/".join(parts))``, built without
    ``UUID.__init__``'s argument checks: a million ids are made per large seed.
    """
    digest = _NAMESPACE_SHA1.copy()
    digest.update("/".join(parts).encode())
    value = (int.from_bytes(digest.digest()[:16]) & _VERSION_CLEAR) | _VERSION_SET
    made: uuid.UUID = _new_object(uuid.UUID)
    _set_attribute(made, "int", value)
    _set_attribute(made, "is_safe", uuid.SafeUUID.unknown)
    return made


def _at(seconds: float) -> dt.datetime:
    """``SCHOOL_YEAR_START`` plus ``seconds``."""
    return dt.datetime.fromtimestamp(_YEAR_START_TS + seconds, dt.UTC)


@dataclass(frozen=True)
class SeedSummary:
    created: bool
    districts: int
    schools: int
    students: int
    staff: int
    guardians: int
    responses: int
    activity_events: int
    device_sessions: int
    seconds: float


# ------------------------------------------------------------------ fixed data

FIRST_NAMES: tuple[tuple[str, str | None], ...] = (
    ("Adaline", "Addie"),
    ("Amara", None),
    ("Anselm", None),
    ("Arlo", None),
    ("Beatrix", "Bea"),
    ("Cassius", "Cass"),
    ("Celeste", None),
    ("Dariel", None),
    ("Delphine", "Del"),
    ("Emeric", None),
    ("Esme", None),
    ("Fenna", None),
    ("Florian", None),
    ("Galen", None),
    ("Hollis", None),
    ("Ilse", None),
    ("Imani", None),
    ("Jovan", None),
    ("Kaia", None),
    ("Kenji", None),
    ("Leopold", "Leo"),
    ("Lucia", "Lucy"),
    ("Marisol", "Mari"),
    ("Matteo", None),
    ("Nadira", None),
    ("Niamh", None),
    ("Oren", None),
    ("Priya", None),
    ("Quentin", "Quinn"),
    ("Rafferty", "Raff"),
    ("Rosalind", "Roz"),
    ("Saoirse", None),
    ("Soren", None),
    ("Tamsin", None),
    ("Theodora", "Teddy"),
    ("Umberto", None),
    ("Valentina", "Val"),
    ("Wendell", None),
    ("Ximena", None),
    ("Yusuf", None),
    ("Zelda", None),
    ("Zubin", None),
)

LAST_NAMES = (
    "Alderbrook",
    "Birchwhistle",
    "Brightwater",
    "Cedarholm",
    "Clearbrook",
    "Copperleaf",
    "Driftwood",
    "Elmstead",
    "Fairbrook",
    "Fernhollow",
    "Foxglove",
    "Glenmoor",
    "Hollowell",
    "Ironbark",
    "Junipero",
    "Kestrelton",
    "Larkspur",
    "Maplethorne",
    "Meadowcroft",
    "Millbrook",
    "Northcote",
    "Oakhaven",
    "Pebblestone",
    "Quillfeather",
    "Ravensby",
    "Redfernley",
    "Rosewater",
    "Silverbirch",
    "Stonebridge",
    "Thistledown",
    "Underbough",
    "Valebrook",
    "Westerholm",
    "Willowmere",
    "Wrenfield",
    "Yarrowby",
)

PLACES = (
    "Cedar",
    "Harbor",
    "Maple",
    "Summit",
    "Willow",
    "Lakeside",
    "Granite",
    "Meadow",
    "Orchard",
    "Ridgeline",
    "Bayview",
    "Pinecrest",
    "Riverbend",
    "Sunridge",
    "Fox Hollow",
    "Clearwater",
)

ELEMENTARY_GRADES = ("4", "5")
MIDDLE_GRADES = ("6", "7", "8")

GENDERS = ("female", "male", "nonbinary")
GENDER_WEIGHTS = (49, 49, 2)

ETHNICITIES = (
    "Hispanic or Latino",
    "White",
    "Black or African American",
    "Asian",
    "American Indian or Alaska Native",
    "Native Hawaiian or Other Pacific Islander",
)
ETHNICITY_WEIGHTS = (28, 40, 15, 10, 4, 3)

RELATIONSHIPS = ("mother", "father", "guardian", "grandparent", "stepparent")
RELATIONSHIP_WEIGHTS = (45, 35, 10, 6, 4)

LEARNING_LEVELS = (
    (0.52, "Below grade level"),
    (0.64, "Approaching grade level"),
    (0.76, "On grade level"),
    (2.0, "Above grade level"),
)

USER_AGENTS = (
    "Mozilla/5.0 (X11; CrOS x86_64 15917.71.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/128.0.6613.137 Safari/537.36",
    "Mozilla/5.0 (X11; CrOS x86_64 16002.44.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/129.0.6668.90 Safari/537.36",
    "Mozilla/5.0 (X11; CrOS aarch64 16033.58.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.6723.116 Safari/537.36",
    "Mozilla/5.0 (X11; CrOS x86_64 16093.45.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.100 Safari/537.36",
)

VOCABULARY = (
    ("rapid", "fast"),
    ("enormous", "huge"),
    ("fragile", "delicate"),
    ("ancient", "old"),
    ("timid", "shy"),
    ("brilliant", "bright"),
    ("weary", "tired"),
    ("furious", "angry"),
    ("gleeful", "happy"),
    ("scarce", "rare"),
    ("vacant", "empty"),
    ("peculiar", "strange"),
    ("sturdy", "strong"),
    ("drowsy", "sleepy"),
    ("courteous", "polite"),
    ("damp", "wet"),
    ("generous", "giving"),
    ("cautious", "careful"),
    ("precise", "exact"),
    ("gloomy", "dark"),
)

MAIN_IDEA = (
    (
        "Bees visit flowers to collect nectar. As they move from flower to flower, they "
        "carry pollen that helps plants make seeds. What is the main idea?",
        "Bees help plants make seeds.",
        ("Bees are yellow and black.", "Flowers grow in spring.", "Nectar is sweet."),
    ),
    (
        "The town library added a maker space with 3D printers, sewing machines and robot "
        "kits. Now students visit after school to build projects. What is the main idea?",
        "The library's maker space draws students to build projects.",
        ("Robots are hard to build.", "Sewing machines are loud.", "School ends at three."),
    ),
    (
        "Sea otters wrap themselves in kelp so they do not drift away while they sleep. "
        "Sometimes they even hold paws. What is the main idea?",
        "Sea otters have ways to stay together and in place while sleeping.",
        ("Kelp is a kind of seaweed.", "Otters eat clams.", "The ocean is deep."),
    ),
    (
        "Long ago, people used the stars to find their way across the sea. Sailors learned "
        "which stars rose in the north and south. What is the main idea?",
        "Sailors used the stars to navigate.",
        ("Stars are very far away.", "The sea is salty.", "Ships have sails."),
    ),
    (
        "Recycling one aluminum can saves enough energy to run a television for three "
        "hours. Cans can be recycled again and again. What is the main idea?",
        "Recycling cans saves energy.",
        ("Televisions use electricity.", "Cans are made of metal.", "Three hours is long."),
    ),
    (
        "The school garden grows tomatoes, beans and squash. Students water the plants, "
        "pull weeds and share the harvest with the cafeteria. What is the main idea?",
        "Students care for a garden that feeds the school.",
        ("Tomatoes are red.", "Weeds grow fast.", "The cafeteria is large."),
    ),
)

INFERENCE = (
    (
        "Maya grabbed her umbrella and pulled on her boots before leaving. What can you infer about the weather?",
        "It is probably raining.",
        ("It is sunny and hot.", "It is nighttime.", "It is very windy and dry."),
    ),
    (
        "Jonah yawned, rubbed his eyes and rested his head on the desk. How does Jonah most likely feel?",
        "Tired",
        ("Excited", "Hungry", "Angry"),
    ),
    (
        "The crowd cheered and waved flags as the runners crossed the line. Where are they most likely?",
        "At a race",
        ("At a library", "In a classroom", "At a hospital"),
    ),
    (
        "Priya checked the oven, smelled the air and smiled. 'Just a few more minutes,' "
        "she said. What is Priya most likely doing?",
        "Baking something",
        ("Washing dishes", "Reading a book", "Planting seeds"),
    ),
    (
        "The leaves were orange and red, and a cool breeze blew them across the yard. What season is it most likely?",
        "Autumn",
        ("Summer", "Spring", "Winter"),
    ),
    (
        "Leo's dog wagged its tail and ran to the door as soon as Leo picked up the leash. What does the dog expect?",
        "To go for a walk",
        ("To eat dinner", "To take a bath", "To go to sleep"),
    ),
)

ASSESSMENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("math-a", "Math", ("multiplication", "fractions", "area")),
    ("math-b", "Math", ("fractions", "place-value", "multiplication")),
    ("math-c", "Math", ("area", "place-value", "fractions")),
    ("reading-a", "Reading", ("vocabulary", "main-idea", "inference")),
    ("reading-b", "Reading", ("main-idea", "vocabulary", "inference")),
    ("reading-c", "Reading", ("inference", "vocabulary", "main-idea")),
)
ASSESSMENT_TITLES = {
    "math-a": "Math Practice Set A: Operations and Fractions",
    "math-b": "Math Practice Set B: Number Sense",
    "math-c": "Math Practice Set C: Measurement",
    "reading-a": "Reading Practice Set A: Words and Ideas",
    "reading-b": "Reading Practice Set B: Finding the Main Idea",
    "reading-c": "Reading Practice Set C: Reading Between the Lines",
}
ITEMS_PER_ASSESSMENT = 10


# ------------------------------------------------------------ in-memory model


@dataclass
class _Item:
    id: uuid.UUID
    position: int
    key: str
    wrong: tuple[str, ...]
    feedback_right: str
    feedback_wrong: str


@dataclass
class _Assessment:
    id: uuid.UUID
    slug: str
    subject: str
    items: list[_Item] = field(default_factory=list)


@dataclass
class _Assignment:
    id: uuid.UUID
    due_at: dt.datetime
    assessment: _Assessment


@dataclass
class _Class:
    id: uuid.UUID
    school: _School
    index: int
    subject: str
    grade: str
    assignments: list[_Assignment] = field(default_factory=list)


@dataclass
class _School:
    id: uuid.UUID
    number: int
    classes: list[_Class] = field(default_factory=list)


@dataclass
class _Student:
    id: uuid.UUID
    number: int
    classes: list[_Class]
    ability: float
    last_active: dt.datetime


@dataclass
class _District:
    id: uuid.UUID
    slug: str
    name: str
    code: str
    index: int
    students: list[_Student] = field(default_factory=list)


@dataclass
class _Rows:
    districts: list[Row] = field(default_factory=list)
    platform_users: list[Row] = field(default_factory=list)
    schools: list[Row] = field(default_factory=list)
    users: list[Row] = field(default_factory=list)
    guardian_links: list[Row] = field(default_factory=list)
    classes: list[Row] = field(default_factory=list)
    class_teachers: list[Row] = field(default_factory=list)
    enrollments: list[Row] = field(default_factory=list)
    assessments: list[Row] = field(default_factory=list)
    items: list[Row] = field(default_factory=list)
    assignments: list[Row] = field(default_factory=list)
    activity_events: list[Row] = field(default_factory=list)
    device_sessions: list[Row] = field(default_factory=list)
    consents: list[Row] = field(default_factory=list)


USER_COLUMNS = (
    "district_id",
    "id",
    "role",
    "username",
    "sourced_id",
    "school_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "preferred_name",
    "grade_level",
    "student_number",
    "state_id",
    "gender",
    "birth_date",
    "ethnicity",
    "english_learner",
    "special_education",
    "economically_disadvantaged",
    "learning_level",
    "last_active_at",
    "created_at",
    "updated_at",
)

RESPONSE_COLUMNS = (
    "district_id",
    "id",
    "student_id",
    "item_id",
    "assignment_id",
    "answer",
    "correct",
    "score",
    "feedback",
    "time_spent_seconds",
    "submitted_at",
    "idempotency_key",
)

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "districts": ("id", "name", "sourced_id", "created_at"),
    "schools": ("district_id", "id", "name", "sourced_id"),
    "users": USER_COLUMNS,
    "guardian_links": ("district_id", "guardian_id", "student_id", "relationship"),
    "classes": ("district_id", "id", "school_id", "name", "subject", "grade_level", "sourced_id"),
    "class_teachers": ("district_id", "class_id", "teacher_id"),
    "enrollments": ("district_id", "class_id", "student_id", "begin_date", "end_date", "sourced_id"),
    "assignments": (
        "district_id",
        "id",
        "class_id",
        "assessment_id",
        "title",
        "due_at",
        "created_by",
        "created_at",
    ),
    "activity_events": (
        "district_id",
        "id",
        "student_id",
        "kind",
        "target",
        "occurred_at",
        "duration_ms",
        "session_key",
    ),
    "device_sessions": (
        "district_id",
        "id",
        "student_id",
        "session_key",
        "started_at",
        "ip_address",
        "user_agent",
        "browser",
        "operating_system",
        "device_type",
        "referrer",
    ),
    "consents": ("district_id", "student_id", "analytics_opt_out", "updated_at", "updated_by"),
}


def _person_row(
    district: uuid.UUID,
    user_id: uuid.UUID,
    role: str,
    username: str,
    sourced_id: str,
    school: uuid.UUID | None,
    first: str,
    last: str,
    phone: str | None = None,
) -> Row:
    return (
        district,
        user_id,
        role,
        username,
        sourced_id,
        school,
        first,
        last,
        username,
        phone,
        *([None] * 12),
        ROWS_CREATED_AT,
        ROWS_CREATED_AT,
    )


# ----------------------------------------------------------------- the builder


class _Builder:
    def __init__(self, total_students: int) -> None:
        self.rng = random.Random(SEED)
        self.rows = _Rows()
        self.assessments: list[_Assessment] = []
        self.by_subject: dict[str, list[_Assessment]] = {s: [] for s in SUBJECTS}
        self.practice_items: dict[str, list[tuple[_Assessment, _Item]]] = {s: [] for s in SUBJECTS}
        self.districts = [
            _District(demo_id("district", "northwind"), "northwind", "Northwind Unified", "NW", 0),
            _District(demo_id("district", "riverside"), "riverside", "Riverside Unified", "RS", 1),
        ]
        first = (total_students + 1) // 2
        self.sizes = (first, total_students - first)

    # -- names

    def _person(self) -> tuple[str, str | None, str]:
        first, nickname = self.rng.choice(FIRST_NAMES)
        return first, nickname, self.rng.choice(LAST_NAMES)

    # -- platform

    def platform(self) -> None:
        self.rows.platform_users = [
            (
                demo_id("platform", "analyst"),
                "ANALYST",
                "analyst@pledgeql.example",
                "Rowan",
                "Ledgerwood",
                "analyst@pledgeql.example",
            ),
            (
                demo_id("platform", "support"),
                "SUPPORT",
                "support@pledgeql.example",
                "Sasha",
                "Helmsworth",
                "support@pledgeql.example",
            ),
        ]
        counters = {"vocabulary": 0, "main-idea": 0, "inference": 0}
        for slug, subject, skills in ASSESSMENTS:
            assessment = _Assessment(demo_id("assessment", slug), slug, subject)
            self.assessments.append(assessment)
            self.by_subject[subject].append(assessment)
            self.rows.assessments.append((assessment.id, ASSESSMENT_TITLES[slug], subject))
            for position in range(1, ITEMS_PER_ASSESSMENT + 1):
                skill = skills[(position - 1) % len(skills)]
                prompt, key, wrong, explanation = self._item_content(skill, counters)
                choices = [key, *wrong]
                self.rng.shuffle(choices)
                item = _Item(
                    demo_id("item", slug, str(position)),
                    position,
                    key,
                    tuple(wrong),
                    f"Correct! {explanation}",
                    f"Not quite: the answer is {key}. {explanation}",
                )
                assessment.items.append(item)
                self.practice_items[subject].append((assessment, item))
                self.rows.items.append((item.id, assessment.id, position, prompt, choices, skill, key, explanation))

    def _item_content(self, skill: str, counters: dict[str, int]) -> tuple[str, str, list[str], str]:
        rng = self.rng
        if skill == "multiplication":
            a, b = rng.randint(3, 12), rng.randint(3, 12)
            answer = a * b
            wrong = _distinct(answer, (answer + a, answer - b, a * (b + 2), answer + 10))
            return (
                f"What is {a} {TIMES} {b}?",
                str(answer),
                [str(w) for w in wrong],
                f"{a} groups of {b} make {answer}.",
            )
        if skill == "fractions":
            d = rng.randint(5, 12)
            n1 = rng.randint(1, d // 2 - 1) if d >= 6 else 1
            n2 = rng.randint(1, d - n1 - 1)
            key = f"{n1 + n2}/{d}"
            options = (f"{n1 + n2}/{2 * d}", f"{n1 + n2 + 1}/{d}", f"{n1 * n2}/{d}", f"{n1}/{d}")
            return (
                f"What is {n1}/{d} + {n2}/{d}?",
                key,
                _distinct(key, options),
                f"Add the numerators and keep the denominator: {n1} + {n2} = {n1 + n2}, so the sum is {key}.",
            )
        if skill == "area":
            w, h = rng.randint(3, 15), rng.randint(2, 9)
            area = w * h
            wrong = _distinct(area, (2 * (w + h), w + h, area + w, area - h))
            return (
                f"A rectangle is {w} cm long and {h} cm wide. What is its area?",
                f"{area} square cm",
                [f"{v} square cm" for v in wrong],
                f"Area is length times width: {w} {TIMES} {h} = {area} square cm.",
            )
        if skill == "place-value":
            digits = rng.sample(range(1, 10), 4)
            number = int("".join(str(d) for d in digits))
            place = rng.randint(0, 3)
            digit = digits[3 - place]
            value = digit * 10**place
            wrong = _distinct(value, [digit * 10**p for p in range(5)])
            return (
                f"In the number {number}, what is the value of the digit {digit}?",
                str(value),
                [str(v) for v in wrong],
                f"The {digit} is in the {('ones', 'tens', 'hundreds', 'thousands')[place]} "
                f"place, so its value is {value}.",
            )
        if skill == "vocabulary":
            index = counters["vocabulary"] % len(VOCABULARY)
            counters["vocabulary"] += 1
            word, synonym = VOCABULARY[index]
            others = [s for w, s in VOCABULARY if w != word]
            return (
                f'Which word means almost the same as "{word}"?',
                synonym,
                rng.sample(others, 3),
                f'"{word.capitalize()}" and "{synonym}" have nearly the same meaning.',
            )
        bank = MAIN_IDEA if skill == "main-idea" else INFERENCE
        index = counters[skill] % len(bank)
        counters[skill] += 1
        prompt, key, wrong_texts = bank[index]
        explanation = (
            "The main idea is what the whole passage is mostly about."
            if skill == "main-idea"
            else "Use the clues in the text together with what you already know."
        )
        return prompt, key, list(wrong_texts), explanation

    # -- districts

    def district(self, d: _District, n_students: int) -> None:
        rows, slug = self.rows, d.slug
        rows.districts.append((d.id, d.name, slug, ROWS_CREATED_AT))
        first, _, last = self._person()
        rows.users.append(
            _person_row(
                d.id,
                demo_id("user", slug, "admin"),
                "DISTRICT_ADMIN",
                f"admin@{slug}.example",
                f"{slug}-staff-admin",
                None,
                first,
                last,
            )
        )

        n_classes = max(6, round(n_students / PRIMARY_CLASS_SIZE))
        n_schools = max(2, -(-n_classes // MAX_CLASSES_PER_SCHOOL))
        per_school = [n_classes // n_schools + (1 if s < n_classes % n_schools else 0) for s in range(n_schools)]
        classes: list[_Class] = []
        teacher_number = 0
        for s in range(n_schools):
            school = _School(demo_id("school", slug, str(s + 1)), s + 1)
            place = PLACES[(s + 5 * d.index) % len(PLACES)]
            suffix = f" {s // len(PLACES) + 1}" if s >= len(PLACES) else ""
            middle = s % 2 == 1
            name = f"{place}{suffix} {'Middle' if middle else 'Elementary'} School"
            rows.schools.append((d.id, school.id, name, f"{slug}-school-{s + 1}"))
            first, _, last = self._person()
            rows.users.append(
                _person_row(
                    d.id,
                    demo_id("user", slug, "principal", str(s + 1)),
                    "SCHOOL_ADMIN",
                    f"principal{s + 1}@{slug}.example",
                    f"{slug}-staff-principal-{s + 1}",
                    school.id,
                    first,
                    last,
                )
            )
            k = per_school[s]
            teachers: list[uuid.UUID] = []
            for _ in range((k + 2) // 2):
                teacher_number += 1
                teacher = demo_id("user", slug, "teacher", str(teacher_number))
                teachers.append(teacher)
                first, _, last = self._person()
                rows.users.append(
                    _person_row(
                        d.id,
                        teacher,
                        "TEACHER",
                        f"teacher{teacher_number}@{slug}.example",
                        f"{slug}-staff-teacher-{teacher_number}",
                        school.id,
                        first,
                        last,
                    )
                )
            grades = MIDDLE_GRADES if middle else ELEMENTARY_GRADES
            sections: dict[tuple[str, str], int] = {}
            for j in range(k):
                subject = SUBJECTS[j % 2]
                grade = grades[(j // 2) % len(grades)]
                section = sections.get((grade, subject), 0)
                sections[(grade, subject)] = section + 1
                cls = _Class(demo_id("class", slug, str(s + 1), str(j + 1)), school, j, subject, grade)
                school.classes.append(cls)
                classes.append(cls)
                rows.classes.append(
                    (
                        d.id,
                        cls.id,
                        school.id,
                        f"Grade {grade} {subject} {chr(ord('A') + section)}",
                        subject,
                        grade,
                        f"{slug}-class-{s + 1}-{j + 1}",
                    )
                )
                lead = teachers[(j + 1) // 2]
                class_teachers = [lead] if j != 2 else [lead, teachers[0]]
                for teacher in class_teachers:
                    rows.class_teachers.append((d.id, cls.id, teacher))
                pool = self.by_subject[subject]
                for a in range(2):
                    assessment = pool[(j + a) % len(pool)]
                    due = SCHOOL_YEAR_START + dt.timedelta(days=21 + 21 * a + (j + s) % 5, hours=23, minutes=59)
                    assignment = _Assignment(
                        demo_id("assignment", slug, str(s + 1), str(j + 1), str(a + 1)),
                        due,
                        assessment,
                    )
                    cls.assignments.append(assignment)
                    rows.assignments.append(
                        (
                            d.id,
                            assignment.id,
                            cls.id,
                            assessment.id,
                            f"Week {3 + 3 * a}: {ASSESSMENT_TITLES[assessment.slug]}",
                            due,
                            class_teachers[a % len(class_teachers)],
                            due - dt.timedelta(days=14),
                        )
                    )

        self._students(d, n_students, classes)

    def _students(self, d: _District, n_students: int, classes: Sequence[_Class]) -> None:
        rng, rows, slug = self.rng, self.rows, d.slug
        family: list[tuple[uuid.UUID, str]] = []
        family_last = ""
        guardian_number = 0
        window = int(ACTIVITY_WINDOW.total_seconds())
        for i in range(n_students):
            number = i + 1
            primary = classes[i % len(classes)]
            student_classes = [primary]
            if number != 2 and rng.random() < SECOND_CLASS_RATE:
                options = [
                    c for c in primary.school.classes if c.subject != primary.subject and c.grade == primary.grade
                ]
                if options:
                    student_classes.append(rng.choice(options))
            student_id = demo_id("user", slug, "student", str(number))
            ability = rng.uniform(0.4, 0.9)
            last_active = SCHOOL_YEAR_START + dt.timedelta(seconds=rng.randrange(48 * 86400, window - 3600))
            student = _Student(student_id, number, student_classes, ability, last_active)
            d.students.append(student)

            # family: usually new, sometimes a sibling of the previous student
            sibling = number > 2 and rng.random() < SIBLING_RATE
            first, nickname, last = self._person()
            if sibling:
                last = family_last
            else:
                family_last = last
                family = []
                for _ in range(2 if rng.random() < SECOND_GUARDIAN_RATE else 1):
                    guardian_number += 1
                    guardian = demo_id("user", slug, "guardian", str(guardian_number))
                    g_first, _, _ = self._person()
                    relationship = rng.choices(RELATIONSHIPS, RELATIONSHIP_WEIGHTS)[0]
                    family.append((guardian, relationship))
                    rows.users.append(
                        _person_row(
                            d.id,
                            guardian,
                            "GUARDIAN",
                            f"guardian{guardian_number}@{slug}.example",
                            f"{slug}-guardian-{guardian_number:06d}",
                            None,
                            g_first,
                            last,
                            phone=f"(541) 555-01{rng.randrange(100):02d}",
                        )
                    )
                    rows.guardian_links.append((d.id, guardian, student_id, relationship))
            if sibling:
                for guardian, relationship in family:
                    rows.guardian_links.append((d.id, guardian, student_id, relationship))

            grade = int(primary.grade)
            birth = dt.date(2026 - grade - 6, 9, 2) + dt.timedelta(days=rng.randrange(365))
            n_eth = 2 if rng.random() < 0.08 else 1
            ethnicity = sorted(set(rng.choices(ETHNICITIES, ETHNICITY_WEIGHTS, k=n_eth)))
            level = next(label for bound, label in LEARNING_LEVELS if ability < bound)
            rows.users.append(
                (
                    d.id,
                    student_id,
                    "STUDENT",
                    f"student{number}@{slug}.example",
                    f"{slug}-student-{number:06d}",
                    primary.school.id,
                    first,
                    last,
                    f"student{number}@{slug}.example",
                    None,
                    nickname if nickname and rng.random() < 0.4 else None,
                    primary.grade,
                    f"{d.code}-{number:06d}",
                    f"{d.index + 7}{number:09d}",
                    rng.choices(GENDERS, GENDER_WEIGHTS)[0],
                    birth,
                    ethnicity,
                    rng.random() < 0.12,
                    rng.random() < 0.13,
                    rng.random() < 0.4,
                    level,
                    last_active,
                    ROWS_CREATED_AT,
                    ROWS_CREATED_AT,
                )
            )
            for cls in student_classes:
                rows.enrollments.append(
                    (
                        d.id,
                        cls.id,
                        student_id,
                        ENROLLMENT_BEGIN,
                        None,
                        f"{slug}-enrollment-{number:06d}-{cls.school.number}-{cls.index + 1}",
                    )
                )
            opt_out = number > 2 and rng.random() < OPT_OUT_RATE
            rows.consents.append((d.id, student_id, opt_out, ROWS_CREATED_AT, None))
            self._sessions(d, student, primary.school.number)

    def _sessions(self, d: _District, student: _Student, school: int) -> None:
        rng, rows, slug = self.rng, self.rows, d.slug
        r = rng.random
        n_sessions = 1 + int(r() * 3)
        last_ms = int(student.last_active.timestamp() - _YEAR_START_TS) * 1000
        starts = sorted(int(r() * (last_ms - 86_400_000)) for _ in range(n_sessions - 1))
        ip = f"10.{d.index + 1}.{school % 256}.{2 + int(r() * 252)}"
        agent = USER_AGENTS[int(r() * len(USER_AGENTS))]
        sid = str(student.number)
        for s in range(n_sessions):
            session = str(s + 1)
            key = demo_id("session", slug, sid, session).hex
            events: list[tuple[str, str, int]] = [("SESSION_START", "/home", 0)]
            for _ in range(2 + int(r() * 3)):
                item = 1 + int(r() * ITEMS_PER_ASSESSMENT)
                kind = EVENT_KINDS[int(r() * len(EVENT_KINDS))]
                if kind == "NAVIGATE":
                    target = NAVIGATE_TARGETS[int(r() * len(NAVIGATE_TARGETS))]
                elif kind == "CLICK":
                    target = f"/practice/item/{item}#submit"
                elif kind == "TOUCH":
                    target = f"/practice/item/{item}#choice-{1 + int(r() * 4)}"
                elif kind == "HOVER":
                    target = f"/practice/item/{item}#hint"
                else:  # VIEW, ANSWER
                    target = f"/practice/item/{item}"
                events.append((kind, target, 400 + int(r() * 89_600)))
            total = sum(ms for _, _, ms in events) + 1000 + int(r() * 29_000)
            events.append(("SESSION_END", "/logout", total))
            start = last_ms - total if s == n_sessions - 1 else starts[s]
            started = _at(start / 1000)
            rows.device_sessions.append(
                (
                    d.id,
                    demo_id("device", slug, sid, session),
                    student.id,
                    key,
                    started,
                    ip,
                    agent,
                    "Chrome",
                    "ChromeOS",
                    "laptop",
                    (
                        "https://classroom.google.com/",
                        f"https://portal.{slug}.example/",
                        None,
                    )[int(r() * 3)],
                )
            )
            elapsed = 0
            for e, (kind, target, ms) in enumerate(events):
                rows.activity_events.append(
                    (
                        d.id,
                        demo_id("activity", slug, sid, session, str(e + 1)),
                        student.id,
                        kind,
                        target,
                        started if e == 0 else _at((start + (ms if kind == "SESSION_END" else elapsed)) / 1000),
                        ms if e > 0 else None,
                        key,
                    )
                )
                elapsed += ms

    # -- responses: generated while COPY consumes them

    def responses(self) -> Iterator[Row]:
        r = self.rng.random
        for d in self.districts:
            did, slug = d.id, d.slug
            for student in d.students:
                pairs = [
                    (assignment, item)
                    for cls in student.classes
                    for assignment in cls.assignments
                    for item in assignment.assessment.items
                ]
                n_assigned = min(len(pairs), RESPONSES_PER_STUDENT - 3)
                practice_pool = [item for cls in student.classes for _, item in self.practice_items[cls.subject]]
                practice_span = student.last_active.timestamp() - _YEAR_START_TS
                ability = student.ability
                student_id = student.id
                sid = str(student.number)
                for k in range(RESPONSES_PER_STUDENT):
                    if k < n_assigned:
                        assignment, item = pairs[k]
                        assignment_id: uuid.UUID | None = assignment.id
                        due = assignment.due_at.timestamp() - _YEAR_START_TS
                        submitted = _at(due - 3600 - int(r() * (9 * 86400 + 82800)))
                    else:
                        item = practice_pool[int(r() * len(practice_pool))]
                        assignment_id = None
                        submitted = _at(int(r() * practice_span))
                    if r() < ability:
                        answer, correct, score, feedback = item.key, True, 1.0, item.feedback_right
                    else:
                        answer = item.wrong[int(r() * len(item.wrong))]
                        correct, score, feedback = False, 0.0, item.feedback_wrong
                    yield (
                        did,
                        demo_id("response", slug, sid, str(k + 1)),
                        student_id,
                        item.id,
                        assignment_id,
                        answer,
                        correct,
                        score,
                        feedback,
                        8 + int(r() * 233),
                        submitted,
                        None,
                    )

    def build(self) -> None:
        self.platform()
        for d, size in zip(self.districts, self.sizes, strict=True):
            self.district(d, size)


def _distinct(answer: object, candidates: Sequence[object]) -> list[Any]:
    """Three distractors from ``candidates``: distinct, positive, not the answer."""
    out: list[Any] = []
    for c in candidates:
        if c != answer and c not in out and not (isinstance(c, int) and c <= 0):
            out.append(c)
        if len(out) == 3:
            return out
    raise ValueError(f"too few distractors for {answer!r}: {candidates!r}")


# ------------------------------------------------------------------ the writes


async def _counts(conn: Any, district_ids: list[uuid.UUID]) -> tuple[int, int, int, int, int, int, int, int]:
    row = await conn.fetchrow(
        """
        SELECT
          (SELECT count(*) FROM districts WHERE id = ANY($1::uuid[])),
          (SELECT count(*) FROM schools WHERE district_id = ANY($1::uuid[])),
          (SELECT count(*) FROM users WHERE district_id = ANY($1::uuid[]) AND role = 'STUDENT'),
          (SELECT count(*) FROM users WHERE district_id = ANY($1::uuid[])
             AND role IN ('DISTRICT_ADMIN', 'SCHOOL_ADMIN', 'TEACHER')),
          (SELECT count(*) FROM users WHERE district_id = ANY($1::uuid[]) AND role = 'GUARDIAN'),
          (SELECT count(*) FROM responses WHERE district_id = ANY($1::uuid[])),
          (SELECT count(*) FROM activity_events WHERE district_id = ANY($1::uuid[])),
          (SELECT count(*) FROM device_sessions WHERE district_id = ANY($1::uuid[]))
        """,
        district_ids,
    )
    a, b, c, d, e, f, g, h = (int(v) for v in row)
    return a, b, c, d, e, f, g, h


async def seed_demo(owner_url: str, students: int | None = None) -> SeedSummary:
    """Write the demo data set unless it is already there.

    ``students`` is the total over both districts (default 264). ``staff`` in the
    summary counts district staff (district admins, school admins, teachers), not
    the two platform users. Counts are those of the two demo districts.
    """
    total = DEFAULT_STUDENTS if students is None else students
    if total < MIN_STUDENTS:
        raise ValueError(f"the demo data set needs at least {MIN_STUDENTS} students, got {total}")
    started = time.perf_counter()
    district_ids = [demo_id("district", "northwind"), demo_id("district", "riverside")]
    conn = await connect(owner_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            # Nobody watches a seed: no live-activity notifications (migration 0011).
            await conn.execute("SET LOCAL pledgeql.live_events = 'off'")
            exists = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM districts WHERE id = $1)", district_ids[0])
            created = not exists
            if created:
                await _write(conn, total)
            counts = await _counts(conn, district_ids)
    finally:
        await conn.close()
    districts, schools, n_students, staff, guardians, responses, events, devices = counts
    return SeedSummary(
        created=created,
        districts=districts,
        schools=schools,
        students=n_students,
        staff=staff,
        guardians=guardians,
        responses=responses,
        activity_events=events,
        device_sessions=devices,
        seconds=time.perf_counter() - started,
    )


SKIP_FOREIGN_KEY_TRIGGERS = """
SELECT current_setting('is_superuser') = 'on'
   AND NOT EXISTS (
       SELECT 1 FROM pg_trigger
       WHERE NOT tgisinternal AND tgrelid = ANY ($1::text[]::regclass[])
   )
"""


async def _copy(conn: Any, table: str, rows: Any) -> None:
    await conn.copy_records_to_table(table, records=rows, columns=list(TABLE_COLUMNS[table]))


async def _write(conn: Any, total: int) -> None:
    builder = _Builder(total)
    builder.build()
    rows = builder.rows
    written = [*TABLE_COLUMNS, "responses", "platform_users", "assessments", "items"]
    if await conn.fetchval(SKIP_FOREIGN_KEY_TRIGGERS, written):
        # The rows reference each other consistently by construction, so the
        # per-row foreign-key checks can be skipped for this transaction, as
        # pg_restore --disable-triggers does: it takes a third off a large seed.
        # Only a superuser may, and only while the tables have no triggers of
        # their own (which replica mode would skip too); otherwise just slower.
        await conn.execute("SET LOCAL session_replication_role = replica")
    await conn.executemany(
        "INSERT INTO platform_users (id, role, username, first_name, last_name, email) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        rows.platform_users,
    )
    await conn.executemany(
        "INSERT INTO assessments (id, title, subject) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        rows.assessments,
    )
    await conn.executemany(
        "INSERT INTO items (id, assessment_id, position, prompt, choices, skill, answer_key, "
        "explanation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        rows.items,
    )
    await _copy(conn, "districts", rows.districts)
    await _copy(conn, "schools", rows.schools)
    await _copy(conn, "users", rows.users)
    await _copy(conn, "guardian_links", rows.guardian_links)
    await _copy(conn, "classes", rows.classes)
    await _copy(conn, "class_teachers", rows.class_teachers)
    await _copy(conn, "enrollments", rows.enrollments)
    await _copy(conn, "assignments", rows.assignments)
    await _copy(conn, "consents", rows.consents)
    await _copy(conn, "device_sessions", rows.device_sessions)
    await _copy(conn, "activity_events", rows.activity_events)
    await conn.copy_records_to_table("responses", records=builder.responses(), columns=list(RESPONSE_COLUMNS))
