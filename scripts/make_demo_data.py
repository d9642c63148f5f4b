"""Builds the bundled demo dataset (BEIR format) from the sentences below.

All text was written for taskrank. The corpus has two parts:

- a *general* part (news and everyday web topics) whose queries form the ``train`` split, used
  by the demo to train its tiny ranker;
- a *target domain*, marine biology, whose vocabulary differs (zooxanthellae, benthic, krill…),
  whose queries form the ``dev`` and ``test`` splits.

Each topic has a few fact sentences; each document joins three of them. A query asks about one
fact of one topic: a document holding that fact is relevant with grade 2, another document of
the same topic with grade 1. Queries are phrased partly in other words than the documents.

Run ``python scripts/make_demo_data.py`` to rebuild the files in ``src/taskrank/demo_data``
(deterministic). The script is not part of the package; tests/test_demo.py checks that the
bundled files are what it writes.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

# topic -> (title stem, facts, queries as (fact index, query text))
MARINE: dict[str, tuple[str, list[str], list[tuple[int, str]]]] = {
    "bleaching": (
        "Coral bleaching",
        [
            "Reef-building corals expel their symbiotic zooxanthellae when seawater stays unusually warm.",
            "Without the algae the coral tissue turns transparent and the white skeleton shows through.",
            "Bleached colonies can recover if temperatures fall within a few weeks.",
            "Repeated marine heatwaves leave too little time between events for reefs to recover.",
            "The zooxanthellae supply most of the coral's energy through photosynthesis.",
            "Degree heating weeks measure how much accumulated heat stress a reef has experienced.",
        ],
        [
            (0, "why do corals lose their algae in hot water"),
            (1, "what makes a reef look white"),
            (3, "can reefs survive heatwaves that come back every year"),
        ],
    ),
    "kelp": (
        "Kelp forests",
        [
            "Giant kelp grows up to half a metre a day in cold, nutrient-rich coastal water.",
            "Gas-filled bladders called pneumatocysts hold the kelp fronds up toward the light.",
            "Sea urchins graze kelp holdfasts and can turn a forest into an urchin barren.",
            "Sea otters eat urchins and so protect the kelp canopy.",
            "Kelp forests shelter rockfish, snails and juvenile fish among their stipes.",
            "Warm nutrient-poor water from marine heatwaves slows kelp growth.",
        ],
        [
            (2, "what destroys underwater seaweed forests"),
            (3, "how otters help seaweed"),
            (1, "how does kelp float upright"),
        ],
    ),
    "whales": (
        "Humpback whale migration",
        [
            "Humpbacks migrate thousands of kilometres between polar feeding and tropical breeding grounds.",
            "Males sing long, complex songs on the breeding grounds that change from year to year.",
            "Calves are born in warm shallow lagoons and gain weight on their mother's fat-rich milk.",
            "On the feeding grounds humpbacks blow bubble nets to trap schools of krill and herring.",
            "Satellite tags have tracked individual humpbacks across entire ocean basins.",
            "The whales barely feed during migration and live on stored blubber.",
        ],
        [
            (1, "why do male whales sing"),
            (3, "how do humpbacks catch their food with bubbles"),
            (0, "where do whales travel each year"),
        ],
    ),
    "plankton": (
        "Phytoplankton blooms",
        [
            "Phytoplankton blooms form when sunlight and upwelled nutrients meet in the surface layer.",
            "Diatoms build glassy silica shells and dominate spring blooms in temperate seas.",
            "Some dinoflagellates produce toxins that cause harmful algal blooms called red tides.",
            "Phytoplankton produce roughly half of the oxygen made by photosynthesis on Earth.",
            "Satellites estimate bloom size from the chlorophyll colour of the sea surface.",
            "When a bloom dies, sinking cells feed bacteria that can strip the water of oxygen.",
        ],
        [
            (2, "what causes a toxic red tide"),
            (3, "how much oxygen comes from tiny ocean plants"),
            (4, "measuring algae from space"),
        ],
    ),
    "vents": (
        "Hydrothermal vents",
        [
            "Hydrothermal vents release mineral-laden water heated by magma beneath the seafloor.",
            "Chemosynthetic bacteria at vents make food from hydrogen sulfide instead of sunlight.",
            "Giant tubeworms host sulfur bacteria in a special organ called the trophosome.",
            "Black smokers build chimneys of metal sulfides that can grow several metres a year.",
            "Vent communities live in total darkness at depths of two kilometres or more.",
            "Vent shrimp swarm around chimneys and sense the faint glow of hot water.",
        ],
        [
            (1, "life without sunlight on the deep sea floor"),
            (2, "how do giant worms get food at vents"),
            (3, "what are black smoker chimneys made of"),
        ],
    ),
    "turtles": (
        "Sea turtle nesting",
        [
            "Female sea turtles return to the beach where they hatched to lay their eggs.",
            "The sand temperature decides the sex of turtle hatchlings: warm nests produce females.",
            "Hatchlings crawl toward the brightest horizon, so beach lights lead them astray.",
            "Loggerhead turtles navigate by sensing the Earth's magnetic field.",
            "A nesting female digs a flask-shaped chamber and lays about a hundred eggs.",
            "Most hatchlings are eaten by crabs, birds and fish before they reach adulthood.",
        ],
        [
            (1, "does heat change whether baby turtles are male or female"),
            (2, "why artificial lights are bad for hatchlings"),
            (3, "how turtles find their way across the ocean"),
        ],
    ),
    "octopus": (
        "Octopus camouflage",
        [
            "Octopuses change colour within a fraction of a second using chromatophores in their skin.",
            "Muscles raise small skin papillae so an octopus can mimic the texture of rock or algae.",
            "Two thirds of an octopus's neurons lie in its arms rather than its brain.",
            "The mimic octopus impersonates venomous lionfish and sea snakes.",
            "Octopuses squirt ink that confuses predators and dulls their sense of smell.",
            "An octopus can squeeze through any gap larger than its hard beak.",
        ],
        [
            (0, "how does an octopus change colour so fast"),
            (2, "do octopus arms think for themselves"),
            (4, "why octopuses release ink"),
        ],
    ),
    "acidification": (
        "Ocean acidification",
        [
            "The ocean absorbs about a quarter of the carbon dioxide released by burning fossil fuels.",
            "Dissolved carbon dioxide forms carbonic acid and lowers seawater pH.",
            "Lower carbonate ion levels make it harder for shellfish to build calcium carbonate shells.",
            "Pteropods, tiny swimming snails, show dissolving shells in acidified water.",
            "Oyster hatcheries monitor seawater chemistry to protect their larvae.",
            "Surface ocean pH has fallen by about 0.1 units since the industrial revolution.",
        ],
        [
            (2, "why acidic seawater is bad for shells"),
            (0, "how much carbon does the sea take up"),
            (4, "oyster farms and changing water chemistry"),
        ],
    ),
    "mangroves": (
        "Mangrove forests",
        [
            "Mangroves grow in salty intertidal mud on tropical coasts.",
            "Prop roots and pneumatophores let mangroves breathe in waterlogged sediment.",
            "Mangrove forests store large amounts of blue carbon in their soils.",
            "Dense mangrove belts reduce the energy of storm surges and waves.",
            "Many reef fish spend their juvenile stage sheltered among mangrove roots.",
            "Shrimp farming has cleared large areas of mangrove forest.",
        ],
        [
            (3, "trees that protect coasts from storms"),
            (2, "carbon stored in coastal wetlands"),
            (1, "how do trees breathe in flooded mud"),
        ],
    ),
    "sharks": (
        "Shark senses",
        [
            "Sharks detect weak electric fields from prey with the ampullae of Lorenzini.",
            "The lateral line lets sharks feel pressure waves from struggling fish.",
            "Sharks can smell blood diluted to one part per million in seawater.",
            "Shark skin is covered in tooth-like denticles that reduce drag.",
            "Many sharks must keep swimming so that water flows over their gills.",
            "Sharks replace lost teeth continuously throughout their lives.",
        ],
        [
            (0, "how sharks sense electricity"),
            (3, "why is shark skin rough like sandpaper"),
            (4, "do sharks drown if they stop moving"),
        ],
    ),
    "jellyfish": (
        "Jellyfish life cycle",
        [
            "Jellyfish alternate between a fixed polyp stage and a free-swimming medusa stage.",
            "Stinging cells called nematocysts fire a tiny harpoon loaded with venom.",
            "The immortal jellyfish can revert from a medusa back to a polyp.",
            "Jellyfish blooms grow where overfishing removes their competitors.",
            "A jellyfish has no brain but a nerve net spread through its bell.",
            "Box jellyfish have eyes with lenses and venom that can kill a person.",
        ],
        [
            (1, "what makes a jellyfish sting"),
            (2, "a jellyfish that never dies"),
            (4, "can an animal without a brain swim"),
        ],
    ),
    "seagrass": (
        "Seagrass meadows",
        [
            "Seagrasses are flowering plants that live fully submerged in shallow coastal water.",
            "Seagrass meadows trap sediment and keep coastal water clear.",
            "Dugongs and green turtles graze on seagrass meadows.",
            "Seagrass pollen is carried between plants by water currents.",
            "Nutrient runoff causes algae to shade out seagrass.",
            "Seagrass roots lock away carbon in sediments for centuries.",
        ],
        [
            (2, "what do dugongs eat"),
            (4, "how fertiliser pollution harms underwater meadows"),
            (3, "how do underwater plants pollinate"),
        ],
    ),
    "salmon": (
        "Salmon runs",
        [
            "Pacific salmon hatch in rivers, grow at sea and return upstream to spawn.",
            "Returning salmon find their home stream by smell.",
            "Salmon carcasses carry marine nitrogen into riverside forests.",
            "Dams block salmon migration unless fish ladders are built.",
            "Young salmon called smolts adapt their gills from fresh to salt water.",
            "Bears catching salmon spread their remains through the forest.",
        ],
        [
            (1, "how fish find the river where they were born"),
            (3, "do dams stop fish migrating"),
            (4, "how salmon switch from river to sea water"),
        ],
    ),
    "krill": (
        "Antarctic krill",
        [
            "Antarctic krill are small crustaceans that swarm in dense schools in the Southern Ocean.",
            "Krill graze on algae growing on the underside of sea ice.",
            "Whales, seals, penguins and fish all depend on krill.",
            "Krill swarms migrate vertically each day, rising to feed at night.",
            "Shrinking winter sea ice reduces krill recruitment.",
            "A commercial fishery harvests krill for fish feed and oil supplements.",
        ],
        [
            (1, "what do krill eat under the ice"),
            (2, "animals that rely on krill"),
            (5, "fishing for krill oil"),
        ],
    ),
    "bycatch": (
        "Fisheries bycatch",
        [
            "Bycatch is marine life caught unintentionally by fishing gear.",
            "Turtle excluder devices let sea turtles escape from shrimp trawl nets.",
            "Longlines kill albatrosses that dive for baited hooks.",
            "Pingers on gillnets warn porpoises away with sound.",
            "Bottom trawling scrapes the seabed and damages deep corals and sponges.",
            "Observers on fishing vessels record bycatch for fisheries managers.",
        ],
        [
            (1, "devices that keep turtles out of fishing nets"),
            (2, "why seabirds die on fishing hooks"),
            (4, "damage from dragging nets along the bottom"),
        ],
    ),
    "tidepools": (
        "Rocky shore tide pools",
        [
            "Tide pool animals endure daily swings in temperature and salinity.",
            "Barnacles glue themselves head-first to rocks and filter food with feathery legs.",
            "Sea stars pry open mussels and digest them with an everted stomach.",
            "Zonation bands appear on rocky shores according to time spent out of water.",
            "Anemones close into blobs at low tide to keep from drying out.",
            "Limpets return to the same home scar on the rock after grazing.",
        ],
        [
            (2, "how starfish eat mussels"),
            (1, "how barnacles feed"),
            (3, "why rocky shores have bands of different animals"),
        ],
    ),
    "seabirds": (
        "Seabird foraging",
        [
            "Puffins carry several small fish crosswise in their bills back to the burrow.",
            "Albatrosses glide for hours using dynamic soaring over ocean swells.",
            "Gannets plunge-dive from thirty metres to catch fish underwater.",
            "Seabird colonies fertilise islands with guano rich in nitrogen.",
            "Many seabirds find food by smelling dimethyl sulfide released by plankton.",
            "Plastic fragments fill the stomachs of albatross chicks.",
        ],
        [
            (1, "how albatrosses fly without flapping"),
            (4, "birds that find fish by smell"),
            (2, "birds that dive into the sea from high up"),
        ],
    ),
    "spawning": (
        "Coral mass spawning",
        [
            "Many corals on a reef release eggs and sperm on the same few nights each year.",
            "Mass spawning is timed by water temperature, day length and the lunar cycle.",
            "Coral larvae drift for days before settling on hard substrate.",
            "Bundles of eggs and sperm float to the surface where fertilisation occurs.",
            "Reef restoration projects collect spawn to raise coral larvae in tanks.",
            "Slicks of coral spawn can be seen from boats after a spawning night.",
        ],
        [
            (1, "what tells corals when to reproduce"),
            (4, "growing baby corals to restore reefs"),
            (2, "where coral larvae settle"),
        ],
    ),
    "dolphins": (
        "Dolphin echolocation",
        [
            "Dolphins produce clicks and listen for echoes to locate prey.",
            "The melon, a fatty organ in the forehead, focuses dolphin clicks into a beam.",
            "Echoes are received through fat channels in the lower jaw.",
            "Bottlenose dolphins have individual signature whistles that work like names.",
            "Dolphins can detect fish buried under sand by echolocation.",
            "Navy sonar can disturb toothed whales and dolphins.",
        ],
        [
            (3, "do dolphins call each other by name"),
            (1, "what is the bump on a dolphin's head for"),
            (2, "how do dolphins hear echoes"),
        ],
    ),
    "deepfish": (
        "Deep-sea fish",
        [
            "Anglerfish lure prey with a glowing bacterial light on a modified fin ray.",
            "Many deep-sea fish produce bioluminescence to hunt, hide or signal.",
            "Counter-illumination hides a fish's silhouette against faint light from above.",
            "Male anglerfish fuse to females and live as permanent parasites.",
            "Deep-sea fish have watery muscles and weak skeletons to save energy.",
            "Barreleye fish look upward through a transparent head.",
        ],
        [
            (0, "fish with a glowing lure"),
            (3, "strange mating of anglerfish"),
            (5, "fish with a see-through head"),
        ],
    ),
}

GENERAL: dict[str, tuple[str, list[str], list[tuple[int, str]]]] = {
    "football": (
        "Football",
        [
            "The home side won the league match with a late penalty.",
            "The striker scored twice in the cup final on Saturday.",
            "The coach was sacked after five defeats in a row.",
            "Ticket prices for the stadium rose again this season.",
            "The transfer window closes at midnight on the last day of August.",
        ],
        [(1, "who scored in the cup final"), (2, "coach sacked after defeats"), (3, "stadium ticket prices")],
    ),
    "cooking": (
        "Cooking",
        [
            "Slow roasting keeps the lamb tender and juicy.",
            "Knead the bread dough for ten minutes until it is smooth.",
            "A pinch of salt brings out the sweetness of tomatoes.",
            "Rest the steak for five minutes before slicing it.",
            "Homemade pasta needs only flour and eggs.",
        ],
        [
            (1, "how long to knead bread dough"),
            (3, "resting steak before cutting"),
            (4, "making pasta at home"),
        ],
    ),
    "weather": (
        "Weather",
        [
            "Heavy rain is forecast for the north of the country tomorrow.",
            "A heat wave pushed city temperatures above forty degrees.",
            "Snow closed mountain roads overnight.",
            "Strong winds brought down power lines across the region.",
            "The spring was the driest on record for farmers.",
        ],
        [(0, "rain forecast for tomorrow"), (2, "snow closes roads"), (3, "wind damage to power lines")],
    ),
    "markets": (
        "Markets",
        [
            "Share prices fell sharply after the central bank raised interest rates.",
            "The company reported record profits for the third quarter.",
            "Oil prices climbed on fears of supply shortages.",
            "Investors moved money into government bonds.",
            "The currency weakened against the dollar.",
        ],
        [(0, "stocks fall after rate rise"), (1, "record quarterly profits"), (2, "why oil prices went up")],
    ),
    "travel": (
        "Travel",
        [
            "Cheap flights to southern Europe sell out quickly in summer.",
            "The old town is best explored on foot.",
            "Book the night train early to get a sleeping cabin.",
            "Travel insurance covers cancelled holidays.",
            "The hotel offers free breakfast and a rooftop pool.",
        ],
        [
            (2, "sleeping cabin on the night train"),
            (3, "insurance for a cancelled holiday"),
            (0, "cheap summer flights"),
        ],
    ),
    "music": (
        "Music",
        [
            "The band announced a world tour for next year.",
            "Her new album went straight to number one.",
            "The orchestra played the symphony to a full concert hall.",
            "Streaming services pay artists a fraction of a cent per play.",
            "The festival line-up includes three famous headliners.",
        ],
        [(0, "band world tour"), (3, "how much streaming pays musicians"), (4, "festival headliners")],
    ),
    "film": (
        "Film",
        [
            "The thriller topped the box office on its opening weekend.",
            "The director won the best picture award.",
            "The sequel was filmed in the desert over six months.",
            "Critics praised the lead actor's performance.",
            "Cinema attendance fell as more people watch films at home.",
        ],
        [
            (0, "box office opening weekend"),
            (1, "best picture award winner"),
            (4, "fewer people going to the cinema"),
        ],
    ),
    "elections": (
        "Elections",
        [
            "Voters go to the polls on Sunday in the general election.",
            "The opposition leader promised lower taxes.",
            "Turnout was the highest in twenty years.",
            "The new government formed a coalition with two smaller parties.",
            "Polls show a tight race between the two main candidates.",
        ],
        [(2, "election turnout"), (3, "coalition government formed"), (1, "promise of lower taxes")],
    ),
    "phones": (
        "Smartphones",
        [
            "The new phone has a larger battery and a better camera.",
            "A software update fixed the bug that drained the battery.",
            "Prices of flagship smartphones keep rising.",
            "The screen cracked after a short drop onto the pavement.",
            "Repair shops replace broken screens in an hour.",
        ],
        [
            (1, "update fixes battery drain"),
            (4, "replace a broken phone screen"),
            (0, "phone with a better camera"),
        ],
    ),
    "gardening": (
        "Gardening",
        [
            "Plant tulip bulbs in autumn for spring flowers.",
            "Water tomatoes at the base in the morning.",
            "Compost improves heavy clay soil.",
            "Prune roses in late winter before new growth starts.",
            "Slugs eat young lettuce leaves at night.",
        ],
        [(0, "when to plant tulip bulbs"), (3, "pruning roses"), (4, "slugs eating lettuce")],
    ),
    "housing": (
        "Housing",
        [
            "House prices rose for the tenth month in a row.",
            "Rents in the capital are now the highest in the country.",
            "First-time buyers struggle to save for a deposit.",
            "The council approved plans for a thousand new homes.",
            "Mortgage rates fell slightly this week.",
        ],
        [
            (1, "highest rents in the capital"),
            (2, "saving for a first home deposit"),
            (4, "mortgage rates this week"),
        ],
    ),
    "health": (
        "Everyday health",
        [
            "A daily walk of thirty minutes lowers blood pressure.",
            "Adults need seven to nine hours of sleep a night.",
            "Drinking water before meals can curb appetite.",
            "Too much screen time late at night disturbs sleep.",
            "Stretching after exercise eases sore muscles.",
        ],
        [
            (1, "how much sleep adults need"),
            (0, "walking and blood pressure"),
            (4, "stretching sore muscles"),
        ],
    ),
}

DOCS_PER_MARINE_TOPIC = 8
DOCS_PER_GENERAL_TOPIC = 6
DEV_PER_TOPIC = 1  # the first query of each marine topic is a dev query, the others test queries


def _documents(prefix: str, topics: dict, per_topic: int, rng: random.Random) -> tuple[list[dict], dict]:
    docs: list[dict] = []
    holders: dict[tuple[str, int], list[str]] = {}
    for topic, (title, facts, _) in topics.items():
        combos = list(itertools.combinations(range(len(facts)), 3))
        rng.shuffle(combos)
        for i, combo in enumerate(combos[:per_topic]):
            doc_id = f"{prefix}-{topic}-{i}"
            order = list(combo)
            rng.shuffle(order)
            docs.append(
                {"_id": doc_id, "title": f"{title} ({i + 1})", "text": " ".join(facts[j] for j in order)}
            )
            for j in combo:
                holders.setdefault((topic, j), []).append(doc_id)
    return docs, holders


def _queries(
    prefix: str, topics: dict, holders: dict
) -> tuple[list[dict], dict[str, list[tuple[str, str, int]]]]:
    queries: list[dict] = []
    qrels: dict[str, list[tuple[str, str, int]]] = {"train": [], "dev": [], "test": []}
    for topic, (_, _, asked) in topics.items():
        topic_docs = sorted({d for (t, _), ds in holders.items() if t == topic for d in ds})
        for n, (fact, text) in enumerate(asked):
            qid = f"{prefix}-{topic}-q{n}"
            queries.append({"_id": qid, "text": text})
            split = "train" if prefix == "gen" else ("dev" if n < DEV_PER_TOPIC else "test")
            exact = set(holders[(topic, fact)])
            for doc in topic_docs:
                qrels[split].append((qid, doc, 2 if doc in exact else 1))
    return queries, qrels


def build(out: Path) -> dict[str, int]:
    """Write corpus.jsonl, queries.jsonl and qrels/{train,dev,test}.tsv into ``out``."""
    rng = random.Random(20250513)
    marine_docs, marine_holders = _documents("mar", MARINE, DOCS_PER_MARINE_TOPIC, rng)
    general_docs, general_holders = _documents("gen", GENERAL, DOCS_PER_GENERAL_TOPIC, rng)
    marine_queries, marine_qrels = _queries("mar", MARINE, marine_holders)
    general_queries, general_qrels = _queries("gen", GENERAL, general_holders)
    docs = general_docs + marine_docs
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as handle:
        for query in general_queries + marine_queries:
            handle.write(json.dumps(query, ensure_ascii=False) + "\n")
    counts = {"documents": len(docs)}
    for split in ("train", "dev", "test"):
        rows = general_qrels[split] + marine_qrels[split]
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for qid, doc, grade in rows:
                handle.write(f"{qid}\t{doc}\t{grade}\n")
        counts[f"{split} queries"] = len({r[0] for r in rows})
    return counts


if __name__ == "__main__":
    import sys

    stats = build(Path(__file__).resolve().parents[1] / "src" / "taskrank" / "demo_data")
    sys.stdout.write(json.dumps(stats) + "\n")
