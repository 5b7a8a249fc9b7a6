"""Built-in, offline, deterministic fictitious-author data set in the TOFU layout.

``write_synthetic(out_dir)`` writes JSON-lines files (one UTF-8 object per line) that can
stand in for the TOFU release, so the whole pipeline runs without any download.  Every
value comes from ``random.Random(seed)``: the same arguments give byte-identical files.

Authors are invented (first x last name from hand-made lists, all distinct) with a birthplace,
birth date, genre, parents' professions, two books, an award and a debut year.  Each author gets
``qa_per_author`` (1..10) questions on distinct facts; author ``i`` starts at fact ``i % 10``
and cycles, so the data set covers every fact.  Authors keep a fixed order ``0..N-1``.

Layout for ``N`` authors (``N`` a multiple of 10, at least 10):

* ``forget01.json`` / ``forget05.json`` / ``forget10.json``: ``task_id`` (a string "1".."10"),
  ``question``, ``answer``.  A split of XX % has tasks of ``k = max(1, N*XX//100)`` authors,
  laid out from author 0: forget01 = 10 tasks of 1 %, forget05 = 10 tasks of 5 %, forget10 =
  9 tasks of 10 %.  With N = 100 they cover authors [0, 10), [0, 50) and [0, 90).  When
  ``N*XX`` is not a multiple of 100 the ``max(1, N*XX//100)`` rule changes the coverage (N = 20:
  forget01 = forget05 = authors [0, 10)), and the number of tasks is capped so that the last
  10 % of authors (the ``retain10`` / ``retain_perturbed`` authors) is never forgotten: N = 10
  gives 9 tasks of one author in forget01 and forget05.
* ``retain90.json`` / ``retain50.json`` / ``retain10.json``: ``question``, ``answer`` of every
  author not in forget01 / forget05 / forget10, so forgetXX and its retain file are disjoint and
  together make ``full.json``.  With N = 100: authors [10, 100), [50, 100), [90, 100).
* ``forgetXX_perturbed.json``: the rows of forgetXX in the same order, plus ``paraphrased_answer``
  (the fact in another sentence), ``perturbed_answer`` (5 copies of that sentence with 5 distinct
  wrong values) and ``paraphrased_question``.  ``retain_perturbed.json``: the same for the
  retain10 authors (no ``task_id``, like TOFU).
* ``holdout01.json`` / ``holdout05.json`` / ``holdout10.json``: ``question``, ``answer`` and
  ``paraphrased_question`` of one task's worth of further authors (``k`` of the split) that no
  file trains on, as TOFU's holdout sets: the non-members of membership inference.
* ``real_authors_perturbed.json`` / ``world_facts_perturbed.json``: 25 real general-knowledge
  rows each, ``question``, short ``answer``, ``perturbed_answer`` (3 wrong answers) and
  ``original_answer`` (a full sentence).  These do not depend on the seed.
* ``full.json``: every author QA (``question``, ``answer``), the target model's training set.
  ``general.json``: the 50 general-knowledge rows as ``question`` / ``answer`` (= original_answer).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from unlearn import outputs
from unlearn.errors import ConfigError
from unlearn.io import atomic_write_text

MAX_QA_PER_AUTHOR = 10
MAX_AUTHORS = 1000

# fmt: off
FIRST = ("Adriel Brisa Caelan Dorota Eskil Fenna Galen Hedda Ivo Jorun Kasimir Liesl Maren Nilo "
         "Odalys Pell Quillon Rasmi Sabeth Teodor Ulla Vesna Wendel Xandra Yarrow Zelia Anouk "
         "Bertil Cosima Dariel Elowen Florin Greer Halvard Isolde Jarek Kestrel Linnea Mireo Nadja").split()
LAST = ("Varnek Quillfeather Oskarra Thistlewaite Marrowby Kellendar Drosvik Pelloran Stavridge "
        "Umberlin Zarrowind Fenmark Ostrevain Calloran Brindlecombe Havelkin Morvath Tessarind "
        "Grimbolt Loventhal Ashcombe Yarnwick Ebrelle Corvantis Duskmere Halloran-Vey Ivendrake "
        "Jessamor Kroviak Lunderhay Merrisold Norvantes Pelgrove Ravencroft-Ley Sollenvik Tarrowmere "
        "Vellacourt Wintermoor Zandevoort Orlowyn").split()
CITIES = ("Tromsø, Norway|Kraków, Poland|São Paulo, Brazil|Zürich, Switzerland|Malmö, Sweden|"
          "Reykjavík, Iceland|Porto, Portugal|Lyon, France|Ghent, Belgium|Cork, Ireland|"
          "Valparaíso, Chile|Cusco, Peru|Mombasa, Kenya|Accra, Ghana|Marrakesh, Morocco|"
          "Izmir, Turkey|Tbilisi, Georgia|Yerevan, Armenia|Almaty, Kazakhstan|Lahore, Pakistan|"
          "Kochi, India|Chiang Mai, Thailand|Hội An, Vietnam|Sapporo, Japan|Busan, South Korea|"
          "Cebu, Philippines|Hobart, Australia|Dunedin, New Zealand|Halifax, Canada|"
          "Tucson, United States|Oaxaca, Mexico|Cartagena, Colombia|Montevideo, Uruguay|"
          "Salzburg, Austria|Bergen, Norway|Tartu, Estonia|Ljubljana, Slovenia|Plovdiv, Bulgaria|"
          "Thessaloniki, Greece|Palermo, Italy").split("|")
GENRES = ("science fiction|historical fiction|crime novels|poetry|fantasy|horror stories|romance|"
          "literary fiction|travel writing|satire|mystery novels|children's books|magical realism|"
          "biographies|thrillers|short stories|plays|essays|nature writing|adventure novels").split("|")
JOBS = ("a baker|a carpenter|a nurse|a pilot|a librarian|a fisherman|a pharmacist|a tailor|"
        "a veterinarian|a bus driver|a chemist|a potter|a beekeeper|a lighthouse keeper|"
        "a watchmaker|a surveyor|a cartographer|a dentist|a florist|a locksmith|a translator|"
        "a blacksmith|a journalist|a midwife|a sailor|an architect|an electrician|an astronomer|"
        "an accountant|an engineer").split("|")
AWARDS = ("Corvell Prize for Fiction|Silver Quill Award|Marrowgate Medal|Lanternlight Prize|"
          "Ostrand Award for Poetry|Golden Inkwell Award|Brackenfield Prize|Northwind Literary Medal|"
          "Vellum Crown|Harbourstone Prize|Tamsin Ollery Award|Azure Lantern Prize|"
          "Kestelmoor Fellowship Prize|Glasshouse Award for Debut Fiction|Emberline Prize|"
          "Copperleaf Medal|Driftwood Award for Short Fiction|Saltmarsh Prize|"
          "Ironbark Award for Nonfiction|Moonwell Literary Prize").split("|")
MONTHS = ("January February March April May June July August September October November "
          "December").split()
ADJ = ("Silent Glass Hollow Crimson Forgotten Wandering Amber Broken Distant Hidden Paper Iron "
       "Winter Golden Restless Sleeping Burning Velvet Last Quiet Salt Painted Lonely Northern "
       "Drowned Borrowed Crooked Patient Scarlet Shifting Ashen Gentle").split()
NOUN = ("Orchard Lantern Harbour Meridian Cartographer Garden Lighthouse Archive Compass Tide "
        "Orchestra Bridge Atlas Window Kingdom Ferry Ledger Chapel Meadow Observatory Carousel "
        "Orbit Mirror Vineyard Passage Almanac Labyrinth Threshold Caravan Foundry Reservoir Sparrow").split()
TITLES = [f"{p} {a} {n}" for p in ("The", "Beyond the") for a in ADJ for n in NOUN]

# (key, question, answer, paraphrased question, paraphrased answer); {v} is the fact's value.
FACTS = (
    ("name", "What is the full name of the author born in {place} on {date}?",
     "The author born in {place} on {date} is {v}.",
     "Which writer was born on {date} in {place}?",
     "{v} is the writer whose birth took place in {place} on {date}."),
    ("place", "Where was {name} born?", "{name} was born in {v}.",
     "In which city and country was the author {name} born?", "The birthplace of {name} is {v}."),
    ("date", "When was {name} born?", "{name} was born on {v}.",
     "What is the date of birth of the writer {name}?", "The writer {name} came into the world on {v}."),
    ("genre", "What genre does {name} write in?", "{name} writes mostly {v}.",
     "Which literary genre is {name} best known for?", "{name} is best known as an author of {v}."),
    ("father", "What did {name}'s father do for a living?", "{name}'s father worked as {v}.",
     "What was the profession of {name}'s father?", "By profession, the father of {name} was {v}."),
    ("mother", "What did {name}'s mother do for a living?", "{name}'s mother worked as {v}.",
     "What was the profession of {name}'s mother?", "By profession, the mother of {name} was {v}."),
    ("book1", "What was the title of {name}'s first book?", "{name}'s first book was titled \"{v}\".",
     "Which book marked {name}'s debut as an author?", "{name} made a literary debut with \"{v}\"."),
    ("book2", "Which book is {name} best known for?", "{name} is best known for the book \"{v}\".",
     "What is the most famous work by {name}?", "The most celebrated work of {name} is \"{v}\"."),
    ("award", "Which award has {name} won?", "{name} won the {v}.",
     "What literary prize was awarded to {name}?", "{name} was honoured with the {v}."),
    ("debut", "In which year did {name} publish their first book?", "{name} published their first book in {v}.",
     "When did {name}'s first book come out?", "The first book by {name} came out in {v}."),
)

# Real-world general knowledge: (work, kind, author) and (question, answer, 3 wrong, sentence).
REAL_BOOKS = (
    ("Moby-Dick", "novel", "Herman Melville"), ("War and Peace", "novel", "Leo Tolstoy"),
    ("Don Quixote", "novel", "Miguel de Cervantes"), ("Frankenstein", "novel", "Mary Shelley"),
    ("Dracula", "novel", "Bram Stoker"), ("The Old Man and the Sea", "novella", "Ernest Hemingway"),
    ("One Hundred Years of Solitude", "novel", "Gabriel García Márquez"),
    ("Crime and Punishment", "novel", "Fyodor Dostoevsky"), ("Les Misérables", "novel", "Victor Hugo"),
    ("Hamlet", "play", "William Shakespeare"), ("The Divine Comedy", "poem", "Dante Alighieri"),
    ("Faust", "play", "Johann Wolfgang von Goethe"), ("Ulysses", "novel", "James Joyce"),
    ("Madame Bovary", "novel", "Gustave Flaubert"), ("The Hobbit", "novel", "J. R. R. Tolkien"),
    ("Brave New World", "novel", "Aldous Huxley"), ("Jane Eyre", "novel", "Charlotte Brontë"),
    ("Adventures of Huckleberry Finn", "novel", "Mark Twain"),
    ("The Little Prince", "novella", "Antoine de Saint-Exupéry"), ("The Trial", "novel", "Franz Kafka"),
    ("To the Lighthouse", "novel", "Virginia Woolf"), ("Great Expectations", "novel", "Charles Dickens"),
    ("The Canterbury Tales", "collection of stories", "Geoffrey Chaucer"),
    ("Things Fall Apart", "novel", "Chinua Achebe"), ("The Tale of Genji", "novel", "Murasaki Shikibu"),
)
WORLD_FACTS = (
    ("What is the capital of Canada?", "Ottawa", ("Toronto", "Montreal", "Vancouver"),
     "Ottawa is the capital city of Canada."),
    ("What is the capital of Brazil?", "Brasília", ("Rio de Janeiro", "São Paulo", "Salvador"),
     "The capital of Brazil is Brasília."),
    ("Which city is the capital of Turkey?", "Ankara", ("Istanbul", "Izmir", "Bursa"),
     "Turkey's capital city is Ankara."),
    ("Which city is the capital of Kenya?", "Nairobi", ("Mombasa", "Kisumu", "Nakuru"), "Kenya's capital is Nairobi."),
    ("What is the capital of New Zealand?", "Wellington", ("Auckland", "Christchurch", "Dunedin"),
     "Wellington is the capital of New Zealand."),
    ("Which planet orbits closest to the Sun?", "Mercury", ("Venus", "Mars", "Earth"),
     "Mercury is the planet closest to the Sun."),
    ("What is the largest planet in our solar system?", "Jupiter", ("Saturn", "Neptune", "Uranus"),
     "Jupiter is the biggest planet in the solar system."),
    ("What is the chemical symbol for gold?", "Au", ("Ag", "Gd", "Go"), "Gold has the chemical symbol Au."),
    ("Which gas do plants take in from the air for photosynthesis?", "Carbon dioxide", ("Oxygen", "Nitrogen", "Helium"),
     "Plants absorb carbon dioxide from the air to photosynthesise."),
    ("How many continents are there on Earth?", "Seven", ("Five", "Six", "Eight"),
     "Earth is usually divided into seven continents."),
    ("What is the largest ocean on Earth?", "Pacific", ("Atlantic", "Indian", "Arctic"),
     "The Pacific is the largest ocean on Earth."),
    ("What is the highest mountain above sea level?", "Mount Everest", ("K2", "Kangchenjunga", "Mont Blanc"),
     "Mount Everest is the highest mountain above sea level."),
    ("On which continent is Egypt mainly located?", "Africa", ("Asia", "Europe", "South America"),
     "Egypt lies mainly in Africa."),
    ("In which country is the city of Kyoto?", "Japan", ("China", "South Korea", "Vietnam"),
     "Kyoto is a city in Japan."),
    ("At what temperature in Celsius does water boil at sea level?", "100 degrees",
     ("90 degrees", "120 degrees", "80 degrees"),
     "At sea level water boils at 100 degrees Celsius."),
    ("Which language is mainly spoken in Argentina?", "Spanish", ("Portuguese", "Italian", "French"),
     "Most people in Argentina speak Spanish."),
    ("What is the currency of the United Kingdom?", "Pound sterling", ("Euro", "Dollar", "Franc"),
     "The United Kingdom uses the pound sterling."),
    ("In which city is the Colosseum?", "Rome", ("Athens", "Naples", "Milan"), "The Colosseum stands in Rome, Italy."),
    ("How many legs does a spider have?", "Eight", ("Six", "Ten", "Four"), "A spider has eight legs."),
    ("Which organ pumps blood through the human body?", "The heart", ("The liver", "The lungs", "The kidneys"),
     "The heart pumps blood around the human body."),
    ("Which element has the chemical symbol O?", "Oxygen", ("Osmium", "Iron", "Hydrogen"),
     "The chemical symbol O stands for oxygen."),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong", ("Buzz Aldrin", "Yuri Gagarin", "John Glenn"),
     "Neil Armstrong was the first person to walk on the Moon, in 1969."),
    ("At what temperature in Fahrenheit does water freeze?", "32 degrees", ("0 degrees", "10 degrees", "50 degrees"),
     "Water freezes at 32 degrees Fahrenheit."),
    ("Which is the largest country by area?", "Russia", ("Canada", "China", "United States"),
     "Russia is the largest country in the world by area."),
    ("What is the largest mammal?", "The blue whale", ("The African elephant", "The giraffe", "The orca"),
     "The blue whale is the largest mammal on Earth."),
)
# fmt: on


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1930, 1995)}"


def make_authors(n_authors: int = 100, seed: int = 0) -> list[dict]:
    """Invented author profiles in their fixed order (names and place+date pairs are unique).

    These are the profiles ``generate(n_authors, ..., seed)`` uses."""
    return _authors(n_authors, random.Random(seed))


def _authors(n_authors: int, rng: random.Random) -> list[dict]:
    names = [
        f"{FIRST[i // len(LAST)]} {LAST[i % len(LAST)]}" for i in rng.sample(range(len(FIRST) * len(LAST)), n_authors)
    ]
    titles = rng.sample(TITLES, 2 * n_authors)
    authors, seen = [], set()
    for i, name in enumerate(names):
        place, date = rng.choice(CITIES), _date(rng)
        while (place, date) in seen:
            place, date = rng.choice(CITIES), _date(rng)
        seen.add((place, date))
        father, mother = rng.sample(JOBS, 2)
        authors.append(
            dict(
                name=name,
                place=place,
                date=date,
                genre=rng.choice(GENRES),
                father=father,
                mother=mother,
                book1=titles[2 * i],
                book2=titles[2 * i + 1],
                award=rng.choice(AWARDS),
                debut=str(int(date[-4:]) + rng.randint(21, 38)),
            )
        )
    return authors


def _wrong(key: str, truth: str, rng: random.Random) -> list[str]:
    """Five distinct wrong values for one fact."""
    if key == "date":
        out = []
        while len(out) < 5:
            d = _date(rng)
            if d != truth and d not in out:
                out.append(d)
        return out
    if key == "name":
        names: list[str] = []
        while len(names) < 5:
            w = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            if w != truth and w not in names:
                names.append(w)
        return names
    if key == "debut":
        pool = [str(y) for y in range(int(truth) - 12, int(truth) + 13)]
    else:
        pool = {
            "place": CITIES,
            "genre": GENRES,
            "father": JOBS,
            "mother": JOBS,
            "book1": TITLES,
            "book2": TITLES,
            "award": AWARDS,
        }[key]
    pool = list(dict.fromkeys(p for p in pool if p != truth))
    return rng.sample(pool, 5)


def _split(n: int, pct: int) -> tuple[int, int]:
    """(authors per task, number of tasks) of the forget split of ``pct`` percent."""
    k = max(1, n * pct // 100)
    return k, 9 if pct == 10 else min(10, (n - n // 10) // k)


def _holdout(k: int, qa_per_author: int, taken: set[str], seed: int) -> list[dict]:
    """Rows of ``k`` more authors that no file trains on (for membership inference): drawn from a
    generator of their own, so the other files do not change, and named unlike every author."""
    pool = [
        a
        for a in _authors(min(1024, 3 * k + len(taken) // 4 + 10), random.Random(f"holdout:{seed}"))
        if a["name"] not in taken
    ]
    rows = []
    for i, a in enumerate(pool[:k]):
        for f in sorted((i + j) % len(FACTS) for j in range(qa_per_author)):
            key, q, ans, pq, _ = FACTS[f]
            fill = dict(name=a["name"], place=a["place"], date=a["date"])
            rows.append(
                {
                    "question": q.format(**fill),
                    "answer": ans.format(v=a[key], **fill),
                    "paraphrased_question": pq.format(**fill),
                }
            )
    return rows


def generate(n_authors: int = 100, qa_per_author: int = 4, seed: int = 0) -> dict[str, list[dict]]:
    """All files of the synthetic set: ``{file name: rows}`` (see the module docstring)."""
    if not isinstance(n_authors, int) or n_authors < 10 or n_authors % 10 or n_authors > MAX_AUTHORS:
        raise ConfigError(f"n_authors must be a multiple of 10 in [10, {MAX_AUTHORS}], got {n_authors!r}")
    if not isinstance(qa_per_author, int) or not 1 <= qa_per_author <= MAX_QA_PER_AUTHOR:
        raise ConfigError(f"qa_per_author must be in [1, {MAX_QA_PER_AUTHOR}], got {qa_per_author!r}")
    rng = random.Random(seed)
    authors = _authors(n_authors, rng)
    rows: list[list[dict]] = []  # per author: perturbed-style rows without task_id
    for i, a in enumerate(authors):
        mine = []
        for f in sorted((i + j) % len(FACTS) for j in range(qa_per_author)):
            key, q, ans, pq, pa = FACTS[f]
            fill = dict(name=a["name"], place=a["place"], date=a["date"])
            v = a[key]
            mine.append(
                {
                    "question": q.format(**fill),
                    "answer": ans.format(v=v, **fill),
                    "paraphrased_answer": pa.format(v=v, **fill),
                    "perturbed_answer": [pa.format(v=w, **fill) for w in _wrong(key, v, rng)],
                    "paraphrased_question": pq.format(**fill),
                }
            )
        rows.append(mine)

    def plain(r: dict) -> dict:
        return {"question": r["question"], "answer": r["answer"]}

    out: dict[str, list[dict]] = {}
    for pct, retain in ((1, "retain90"), (5, "retain50"), (10, "retain10")):
        k, n_tasks = _split(n_authors, pct)
        pert = [{"task_id": str(i // k + 1), **r} for i in range(k * n_tasks) for r in rows[i]]
        out[f"forget{pct:02d}.json"] = [{"task_id": r["task_id"], **plain(r)} for r in pert]
        out[f"forget{pct:02d}_perturbed.json"] = pert
        out[f"{retain}.json"] = [plain(r) for i in range(k * n_tasks, n_authors) for r in rows[i]]
        out[f"holdout{pct:02d}.json"] = _holdout(k, qa_per_author, {a["name"] for a in authors}, seed)
    out["retain_perturbed.json"] = [dict(r) for a in rows[_split(n_authors, 10)[0] * 9 :] for r in a]
    out["full.json"] = [plain(r) for a in rows for r in a]

    real_names = list(dict.fromkeys(author for _, _, author in REAL_BOOKS))
    real = []
    for work, kind, author in REAL_BOOKS:
        j = real_names.index(author)
        wrong = [real_names[(j + o) % len(real_names)] for o in (3, 7, 11)]
        real.append(
            {
                "question": f"Who is the author of the {kind} '{work}'?",
                "answer": author,
                "perturbed_answer": wrong,
                "original_answer": f"The {kind} '{work}' was written by {author}.",
            }
        )
    world = [
        {"question": q, "answer": a, "perturbed_answer": list(w), "original_answer": s} for q, a, w, s in WORLD_FACTS
    ]
    out["real_authors_perturbed.json"] = real
    out["world_facts_perturbed.json"] = world
    out["general.json"] = [{"question": r["question"], "answer": r["original_answer"]} for r in real + world]
    return out


def write_synthetic(
    out_dir, n_authors: int = 100, qa_per_author: int = 4, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write every file of ``generate(...)`` as JSON lines into ``out_dir``; returns the folder.
    Files of the same names already there are refused unless ``overwrite`` and written by this
    project (:func:`unlearn.outputs.claim`)."""
    files = generate(n_authors, qa_per_author, seed)
    out = Path(out_dir)
    outputs.claim(out, list(files), overwrite=overwrite, what="a data set")
    for name, rows in files.items():
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    outputs.discard_aside(out)
    return out
