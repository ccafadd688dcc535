"""Writes the shipped corpus (corpus.txt) and generator prompts (prompts.txt) beside this file.

The text is original and made up: short encyclopedia-style paragraphs about invented towns, rivers, animals,
people and events, plus plain descriptions of everyday objects and simple science. It stands in for the Wikipedia
articles the paper's generator rephrases, small enough to pretrain a tiny generator on in seconds.

Deterministic: a fixed seed, no third-party code. Re-run with `python dpg/data/make_corpus.py` after editing and
commit both outputs; `dpg.training.models` reads only the .txt files (and hashes them into its pretraining cache key).
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261123
N_PARAGRAPHS = 540
N_PROMPTS = 200

# ---------------------------------------------------------------------------------------------------------------
# Building blocks. Names are invented from syllables so no real place or person is described.
# ---------------------------------------------------------------------------------------------------------------
ONSETS = ["Al", "Bar", "Cor", "Dun", "El", "Fen", "Gal", "Har", "Ist", "Kel", "Lor", "Mar", "Nor", "Os", "Pel",
          "Quen", "Ros", "Sel", "Tor", "Ul", "Var", "Wen", "Yar", "Zel", "Bran", "Cal", "Dor", "Ash", "Mel", "Tam"]
CODAS = ["ford", "mere", "holm", "wick", "dale", "by", "stead", "haven", "ton", "bury", "mouth", "field", "moor",
         "gate", "brook", "well", "ridge", "ness", "port", "wood"]
RIVER_ROOTS = ["Ael", "Brin", "Cass", "Dorv", "Essel", "Fara", "Glen", "Hadra", "Ilse", "Jorin", "Kessa", "Lum",
               "Mira", "Nesh", "Orla", "Pent", "Rava", "Sula", "Tiva", "Wyre"]
RANGES = ["Grey", "Hollow", "Iron", "Silver", "Thorn", "Winter", "Amber", "High", "Broken", "Pale"]
SEAS = ["Northern Sea", "Bay of Ostra", "Gulf of Pell", "Western Ocean", "Inner Sea", "Sound of Marrow"]
REGIONS = ["the northern lowlands", "the eastern hills", "the southern coast", "the western plateau",
           "the central valley", "the lake district", "the river delta", "the high moors"]
FIRST = ["Ada", "Bram", "Clara", "Dov", "Edda", "Finn", "Greta", "Hal", "Ines", "Jonah", "Kara", "Leif", "Mina",
         "Nils", "Olga", "Pavel", "Rosa", "Sven", "Tilda", "Ulric", "Vera", "Wim", "Yuna", "Otto", "Lena", "Arno"]
LAST = ["Ashdown", "Brenner", "Corvin", "Dallow", "Esker", "Fallon", "Grimsby", "Holt", "Ives", "Jessop",
        "Kettle", "Lindqvist", "Marsh", "Norrell", "Orme", "Pryor", "Quill", "Rooke", "Stroud", "Tennant"]

UPLANDS = ["the eastern hills", "the western plateau", "the high moors", "the far north", "the border country"]
CROPS = ["wheat", "apples", "plums", "barley", "beans", "pears", "hops", "cherries"]
PRODUCTS = ["cheese", "wool", "apples", "pottery", "honey", "smoked fish", "rope", "glassware", "cider", "linen",
            "barley", "salt", "timber", "leather boots", "clocks", "woven baskets", "plums", "paper"]
FEATURES = ["stone bridge", "covered market", "old watermill", "lighthouse", "clock tower", "town library",
            "harbour wall", "public gardens", "bell tower", "narrow lanes", "painted houses", "winter fair"]
INDUSTRIES = ["farming", "fishing", "trade", "forestry", "weaving", "boat building", "mining", "tourism",
              "brewing", "printing"]
TOWN_ADJS = ["quiet", "busy", "hilly", "windy", "old", "pleasant", "crowded", "remote", "colourful", "sleepy"]
FOUNDERS = ["a group of fishermen", "travelling merchants", "farmers from the valley", "a company of monks",
            "settlers from the coast", "miners looking for silver", "a family of weavers", "shepherds"]
BUILDINGS = ["grain store", "chapel", "toll house", "guild hall", "stone well", "inn", "customs house", "mill"]

ANIMAL_COLOURS = ["spotted", "grey", "golden", "striped", "pale", "red", "dusky", "crested", "long-tailed",
                  "black-winged", "marsh", "mountain"]
ANIMAL_BASES = [("finch", "bird"), ("vole", "rodent"), ("heron", "wading bird"), ("newt", "amphibian"),
                ("hare", "mammal"), ("beetle", "insect"), ("trout", "fish"), ("lizard", "reptile"),
                ("owl", "bird"), ("shrew", "mammal"), ("moth", "insect"), ("toad", "amphibian"),
                ("otter", "mammal"), ("plover", "bird"), ("carp", "fish"), ("deer", "mammal")]
HABITATS = ["reed beds", "pine forests", "rocky shores", "wet meadows", "mountain streams", "dry grasslands",
            "old orchards", "sand dunes", "peat bogs", "river banks"]
WATER_HABITATS = ["mountain streams", "clear lakes", "slow rivers", "mill ponds", "flooded gravel pits"]
FOODS = ["seeds", "small insects", "snails", "berries", "worms", "water plants", "grass", "small fish", "roots",
         "fallen fruit"]
TIMES = ["at dawn", "at dusk", "at night", "during the warmest hours of the day", "in the early morning",
         "after heavy rain"]
SIZES = ["small", "medium-sized", "tiny", "large", "slender", "stout"]

# (object, plural, description, use, material, older material)
OBJECTS = [
    ("kettle", "kettles", "a covered pot with a spout", "boiling water", "steel", "copper"),
    ("umbrella", "umbrellas", "a folding canopy on a central stick", "keeping off rain", "nylon", "oiled silk"),
    ("spoon", "spoons", "a small shallow bowl on a handle", "eating and stirring", "stainless steel", "horn"),
    ("lamp", "lamps", "a device that gives off light", "lighting rooms after dark", "metal and glass", "brass"),
    ("chair", "chairs", "a seat with a back for one person", "sitting at tables", "wood", "woven rush"),
    ("bicycle", "bicycles", "a light vehicle with two wheels", "travelling short distances", "aluminium",
     "iron"),
    ("broom", "brooms", "a bundle of stiff fibres on a long handle", "sweeping floors", "plastic bristles",
     "twigs"),
    ("clock", "clocks", "an instrument that shows the time", "keeping appointments", "plastic", "brass"),
    ("basket", "baskets", "an open container with a handle", "carrying food and goods", "willow", "straw"),
    ("pencil", "pencils", "a thin stick of graphite in a wooden case", "writing and drawing", "cedar wood",
     "lead"),
    ("ladder", "ladders", "a frame with a series of steps", "reaching high places", "aluminium", "wood"),
    ("teapot", "teapots", "a round pot with a lid and a spout", "brewing tea", "porcelain", "clay"),
    ("button", "buttons", "a small disc sewn onto clothing", "fastening coats and shirts", "plastic", "bone"),
    ("bucket", "buckets", "an open round container with a handle", "carrying water", "plastic", "wooden staves"),
    ("mirror", "mirrors", "a smooth surface that reflects light", "seeing one's own face", "glass",
     "polished bronze"),
    ("needle", "needles", "a thin pointed rod with an eye at one end", "sewing cloth", "steel", "bone"),
    ("candle", "candles", "a stick of wax around a wick", "giving light", "paraffin wax", "tallow"),
    ("shoe", "shoes", "a covering for the foot", "walking on rough ground", "leather and rubber", "wood"),
    ("blanket", "blankets", "a large piece of soft cloth", "keeping warm in bed", "cotton", "wool"),
    ("key", "keys", "a small shaped piece of metal", "opening locks", "brass", "iron"),
    ("map", "maps", "a flat drawing of an area seen from above", "finding the way", "paper", "parchment"),
    ("oven", "ovens", "an enclosed box that is heated", "baking bread", "steel", "brick"),
    ("rope", "ropes", "a length of twisted fibres", "tying and lifting loads", "nylon", "hemp"),
    ("wheelbarrow", "wheelbarrows", "a small cart with one wheel and two handles", "moving soil and stones",
     "steel", "wood"),
]

# Simple science, written in our own words. Each item is one sentence.
SCIENCE = [
    "Water boils at about one hundred degrees Celsius at sea level, and at a lower temperature on high mountains.",
    "Ice floats on water because it is less dense than the liquid it forms from.",
    "Plants use sunlight, water and carbon dioxide to make sugar, and they release oxygen as they do so.",
    "Sound travels faster through water than through air, and faster still through solid rock.",
    "The Moon has no light of its own; it shines by reflecting light from the Sun.",
    "A magnet has two poles, and like poles push each other away while unlike poles pull together.",
    "Metals such as copper and silver conduct heat and electricity well.",
    "Rust forms when iron reacts slowly with oxygen and water.",
    "Light from the Sun takes a little over eight minutes to reach the Earth.",
    "The heart of a resting adult beats roughly sixty to eighty times a minute.",
    "Salt water freezes at a lower temperature than fresh water.",
    "Clouds are made of tiny drops of water or small crystals of ice that hang in the air.",
    "A lever lets a small force lift a heavy load by moving through a longer distance.",
    "Most of the air we breathe is nitrogen; only about a fifth of it is oxygen.",
    "Seeds need water, air and a suitable temperature before they begin to grow.",
    "The Earth turns once on its axis each day, which gives us day and night.",
    "A rainbow appears when sunlight is bent and split into colours by drops of rain.",
    "Bees carry pollen from flower to flower, which helps many plants to make seeds.",
    "Thunder is the sound made by air that is heated suddenly by a flash of lightning.",
    "Warm air rises because it is lighter than the cooler air around it.",
    "A thermometer measures temperature, and a barometer measures the pressure of the air.",
    "Sugar dissolves faster in hot water than in cold water.",
    "The seasons change because the Earth is tilted as it travels around the Sun.",
    "Fossils are the preserved remains or traces of living things from long ago.",
    "Glass is made by melting sand with other minerals at a very high temperature.",
    "A prism splits white light into a band of colours called a spectrum.",
    "Bats find their way in the dark by listening to the echoes of their own calls.",
    "Sound cannot travel through empty space, because there is nothing there to carry it.",
    "Friction is the force that slows down surfaces that rub against each other.",
    "Volcanoes form where melted rock from deep inside the Earth reaches the surface.",
    "A simple electric circuit needs a source of power, a wire and a closed path.",
    "The tides rise and fall mainly because of the pull of the Moon.",
    "Leaves look green because they reflect green light and absorb most other colours.",
    "Steam is water that has been heated until it turns into a gas.",
    "Wood floats because it contains many small spaces filled with air.",
    "Earthworms improve soil by mixing it and leaving small tunnels for air and water.",
    "A compass needle points north because it lines up with the magnetic field of the Earth.",
    "Snow forms when water vapour freezes directly into crystals high in the clouds.",
    "Insects have six legs, and their bodies are divided into three parts.",
    "Birds have hollow bones, which makes them light enough to fly.",
    "Copper wire is used in houses because it carries electric current with little loss.",
    "Dew forms on cool mornings when water vapour in the air condenses on grass.",
    "A lens can bend light so that distant things look larger or closer.",
    "Yeast makes bread rise by producing small bubbles of gas in the dough.",
    "Deserts can be very cold at night because dry air holds little heat.",
    "Oil and water do not mix, and the oil usually floats on top.",
    "The Sun is a star, and it is much closer to us than any other star.",
    "Most fish breathe by taking oxygen from water that passes over their gills.",
    "A pulley changes the direction of a pulling force and can make lifting easier.",
    "Iron is attracted to a magnet, but aluminium and copper are not.",
]

SCIENCE_FOLLOWUPS = [
    "This simple fact is often shown in school experiments.",
    "People noticed this long before they could explain it.",
    "It is one of the first things taught in many science lessons.",
    "The same idea explains several everyday events.",
    "Careful measurements have confirmed it many times.",
    "It can be observed at home with very simple equipment.",
]

PROFESSIONS = ["painter", "engineer", "botanist", "sailor", "teacher", "clockmaker", "mapmaker", "poet",
               "astronomer", "builder", "doctor", "baker", "musician", "printer", "gardener"]
WORKS = {
    "painter": "quiet pictures of harbours and fields", "engineer": "a new kind of lock gate for canals",
    "botanist": "a careful study of mosses", "sailor": "a long voyage along the southern coast",
    "teacher": "a school that was open to every child", "clockmaker": "a clock that ran for a year without winding",
    "mapmaker": "the first accurate map of the eastern hills", "poet": "short poems about the seasons",
    "astronomer": "patient records of the night sky", "builder": "a bridge that still carries traffic",
    "doctor": "a clinic for farm workers", "baker": "a dark rye bread that is still sold today",
    "musician": "songs written for the river festivals", "printer": "cheap books that many families could buy",
    "gardener": "a public garden planted with herbs",
}
EVENTS = ["a great flood", "a hard winter", "a long drought", "a fire in the market",
          "a storm that wrecked the harbour",
          "a quarrel over fishing rights", "an outbreak of fever", "the arrival of the railway"]
STRUCTURES = ["a stone bridge", "a sea wall", "a canal", "a new road", "a school", "a hospital", "a covered market",
              "a water tower"]
GOODS = ["salt", "wool", "wine", "timber", "grain", "tobacco", "sugar", "iron"]


def an(phrase: str) -> str:
    """The phrase with its indefinite article: "an old town", "a busy town"."""
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


class Writer:
    """Draws names and sentences from one seeded random stream."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.towns = sorted({o + c for o in ONSETS for c in CODAS})
        self.r.shuffle(self.towns)
        self.rivers = [root for root in RIVER_ROOTS]

    def pick(self, xs):
        return self.r.choice(xs)

    def some(self, options, lo, hi):
        """A random subset of the follow-up sentences, kept in their written order so the paragraph reads on."""
        keep = sorted(self.r.sample(range(len(options)), self.r.randint(lo, hi)))
        return [options[i] for i in keep]

    def town(self):
        return self.pick(self.towns[:160])  # a limited cast, so towns recur across paragraphs like in an encyclopedia

    def year(self, lo=1200, hi=1950):
        return self.r.randint(lo, hi)

    def person(self):
        return f"{self.pick(FIRST)} {self.pick(LAST)}"

    # -- one function per kind of article; each returns (paragraph, topic) ---------------------------------------
    def town_article(self):
        t, river = self.town(), self.pick(self.rivers)
        s = [f"{t} is {an(self.pick(TOWN_ADJS))} town on the {self.pick(['north', 'south', 'east', 'west'])} bank "
             f"of the river {river}."]
        options = [
            f"It is known for its {self.pick(PRODUCTS)} and for its {self.pick(FEATURES)}.",
            f"About {self.r.randint(2, 90) * 100} people live there, and many of them work in {self.pick(INDUSTRIES)}.",
            f"The town was founded in {self.year()} by {self.pick(FOUNDERS)}.",
            f"The old {self.pick(BUILDINGS)} near the market square is the oldest building in {t}.",
            f"A market is held every {self.pick(['Monday', 'Wednesday', 'Friday', 'Saturday'])}, when farmers "
            f"come in from {self.pick(REGIONS)}.",
            f"In summer the town holds a festival in honour of its {self.pick(PRODUCTS)}.",
        ]
        s += self.some(options, 1, 3)
        return " ".join(s), t

    def river_article(self):
        river = self.pick(self.rivers)
        s = [f"The river {river} rises in the {self.pick(RANGES)} Mountains and flows "
             f"{self.pick(['north', 'south', 'east', 'west', 'north-east', 'south-west'])} for about "
             f"{self.r.randint(4, 60) * 10} kilometres before it reaches the {self.pick(SEAS)}."]
        options = [
            f"Its largest tributary joins it just below {self.town()}.",
            f"Small boats can travel up it as far as {self.town()}.",
            f"The valley of the {river} is wide and fertile, and its farms are known for their {self.pick(CROPS)}.",
            f"In spring the {river} often floods the meadows near {self.town()}.",
            f"The water is clear and cold, and {self.pick(['trout', 'otters', 'herons', 'kingfishers'])} "
            f"are common along its banks.",
        ]
        s += self.some(options, 1, 2)
        return " ".join(s), f"the river {river}"

    def mountain_article(self):
        rng = self.pick(RANGES)
        s = [f"The {rng} Mountains are a range of {self.pick(['steep', 'rounded', 'rocky', 'forested'])} peaks "
             f"in {self.pick(UPLANDS)}."]
        options = [
            f"The highest summit rises to about {self.r.randint(12, 48) * 100} metres above the sea.",
            f"Snow covers the upper slopes from {self.pick(['October', 'November', 'December'])} until "
            f"{self.pick(['April', 'May', 'June'])}.",
            f"A narrow pass leads across the range to {self.town()}.",
            f"The lower slopes are covered in {self.pick(['pine', 'beech', 'birch', 'oak'])} woods.",
            "Shepherds still drive their flocks up to the high pastures each summer.",
        ]
        s += self.some(options, 1, 3)
        return " ".join(s), f"the {rng} Mountains"

    def animal_article(self):
        colour, (base, cls) = self.pick(ANIMAL_COLOURS), self.pick(ANIMAL_BASES)
        name = f"{colour} {base}"
        habitat = self.pick(WATER_HABITATS if cls == "fish" else HABITATS)
        s = [f"The {name} is {an(self.pick(SIZES))} {cls} found in the {habitat} of {self.pick(REGIONS)}."]
        options = [
            f"It feeds mainly on {self.pick(FOODS)} and is most active {self.pick(TIMES)}.",
            f"Adults are about {self.r.randint(3, 60)} centimetres long.",
            f"The {base} lives alone for most of the year and meets others only in {self.pick(['spring', 'autumn'])}.",
            f"Its numbers have fallen as the {habitat} it depends on have been drained or cleared.",
            f"Young {base}s leave their parents after {self.r.randint(2, 12)} weeks.",
            f"Local people once believed that seeing a {name} brought good luck.",
        ]
        s += self.some(options, 1, 3)
        return " ".join(s), f"the {name}"

    def object_article(self):
        obj, plural, desc, use, mat, old = self.pick(OBJECTS)
        s = [f"{an(obj).capitalize()} is {desc}, used for {use}."]
        options = [
            f"Most {plural} today are made of {mat}, although older ones were often made of {old}.",
            f"{plural.capitalize()} have been used in homes for hundreds of years.",
            f"A good {obj} can last for many years if it is looked after.",
            f"In {self.town()} there is a small museum with a collection of old {plural}.",
            f"The shape of the {obj} has changed little over time.",
        ]
        s += self.some(options, 1, 3)
        return " ".join(s), f"the {obj}"

    def science_article(self):
        fact = self.pick(SCIENCE)
        s = [fact]
        if self.r.random() < 0.6:
            s.append(self.pick(SCIENCE_FOLLOWUPS))
        return " ".join(s), None

    def person_article(self):
        name, prof = self.person(), self.pick(PROFESSIONS)
        born = self.year(1500, 1900)
        s = [f"{name} ({born} to {born + self.r.randint(35, 90)}) was a {prof} from {self.town()}."]
        options = [
            f"{name.split()[0]} is remembered mostly for {WORKS[prof]}.",
            f"As a young person {name.split()[0]} worked for a {self.pick(PROFESSIONS)} in {self.town()}.",
            f"Several of {name.split()[0]}'s letters are kept in the town library.",
            f"A street in {self.town()} is named after {name.split()[0]}.",
        ]
        s += self.some(options, 1, 3)
        return " ".join(s), name

    def history_article(self):
        t, y = self.town(), self.year()
        s = [f"In {y}, the council of {t} agreed to build {self.pick(STRUCTURES)}."]
        options = [
            f"The work took {self.r.randint(2, 15)} years and was paid for by a tax on {self.pick(GOODS)}.",
            f"The decision followed {self.pick(EVENTS)} in {y - self.r.randint(1, 5)}.",
            f"Not everyone agreed, and some merchants moved to {self.town()} in protest.",
            f"When it was finished, people came from {self.pick(REGIONS)} to see it.",
            f"It was repaired in {y + self.r.randint(30, 200)} and is still in use.",
        ]
        s += self.some(options, 1, 3)
        return " ".join(s), f"the history of {t}"


def build(seed: int = SEED) -> tuple[list[str], list[str]]:
    w = Writer(seed)
    kinds = [w.town_article, w.river_article, w.mountain_article, w.animal_article, w.object_article,
             w.science_article, w.person_article, w.history_article]
    weights = [4, 2, 1, 4, 3, 2, 3, 3]
    paragraphs, topics, seen = [], [], set()
    while len(paragraphs) < N_PARAGRAPHS:
        text, topic = w.r.choices(kinds, weights)[0]()
        if text in seen:
            continue
        seen.add(text)
        paragraphs.append(text)
        if topic is not None and topic not in topics:
            topics.append(topic)

    # Prompts in two styles: rephrase a corpus passage (the paper's set-up: rephrase a Wikipedia article) or write
    # about a topic. A passage is a whole short paragraph, or else its first sentence, so it reads on its own.
    passages = [p if len(p) <= 185 else p.split(". ")[0] + "." for p in paragraphs]
    passages = [p for p in dict.fromkeys(passages) if len(p) <= 185]
    w.r.shuffle(passages)
    prompts = [f"Rephrase: {p}" for p in passages[: N_PROMPTS * 3 // 5]]
    prompts += [f"Write about {t}:" for t in w.r.sample(topics, N_PROMPTS - len(prompts))]
    w.r.shuffle(prompts)
    return paragraphs, prompts


def main() -> None:
    paragraphs, prompts = build()
    (HERE / "corpus.txt").write_text("\n".join(paragraphs) + "\n", encoding="utf-8")
    (HERE / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    print(f"corpus.txt: {len(paragraphs)} paragraphs; prompts.txt: {len(prompts)} prompts")


if __name__ == "__main__":
    main()
