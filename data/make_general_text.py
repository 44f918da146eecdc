"""Build ``data/general_text.txt``: held-out general English passages, one per line.

The file serves two purposes in the decoder study: the language-model loss on general text (a
forgetting measure) and general-text representation probes (a per-sample token matrix needs
enough tokens, so every passage has at least ``MIN_WORDS`` words, hence at least as many SmolLM2
tokens: its byte-level BPE never merges across a space).

Two sources, both written for the project:

* ``ENCYCLOPAEDIC``: short encyclopaedic paragraphs on everyday science, nature, history and
  technology, written by hand for this file;
* the everyday sentences of ``data/probe_general.txt``, grouped by topic (keyword lists in
  ``TOPICS``; a sentence goes to the topic with the most keyword hits, ties to the first listed,
  no hit to ``everyday``) and, within a topic, joined in a seeded random order into passages of
  at least ``MIN_WORDS`` words (a short remainder is appended to the topic's last passage).

All passages are then shuffled with the same seed, so any prefix of the file mixes both sources.
Standard library only, deterministic (no hash-ordered iteration). Run from the repository root::

    python data/make_general_text.py    # writes data/general_text.txt
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

SEED = 20261201
MIN_WORDS = 40
DATA_DIR = Path(__file__).resolve().parent

# topic name -> keywords (whole words; a trailing plural "s" is allowed)
TOPICS: tuple[tuple[str, str], ...] = (
    (
        "food",
        "cook bread dinner breakfast lunch kitchen recipe soup cake fruit vegetable coffee "
        "tea eat meal restaurant bake baker chef salad rice pizza sugar salt apple cheese food",
    ),
    (
        "weather",
        "rain snow sun wind storm weather cloud winter summer spring autumn cold hot "
        "temperature sky fog frost season umbrella thunder",
    ),
    (
        "nature",
        "tree garden flower forest river sea mountain bird dog cat animal plant lake "
        "beach field bee horse fish insect elephant parrot leaves grass farm",
    ),
    (
        "family",
        "mother father grandmother grandfather parents brother sister daughter son "
        "family baby children wedding uncle aunt cousin husband wife partner grandparents",
    ),
    (
        "work",
        "work office job manager meeting colleague boss company project deadline email "
        "shift salary client interview budget career employees",
    ),
    (
        "school",
        "school teacher student exam class lesson homework university professor learn "
        "study library book read history math studies",
    ),
    (
        "travel",
        "train bus car flight airport plane trip travel hotel road drive ticket station "
        "ferry bicycle bike journey holiday suitcase traffic map",
    ),
    (
        "health",
        "doctor hospital medicine sleep health exercise nurse fever pain illness body "
        "heart teeth vaccine walk run water tired hands",
    ),
    (
        "technology",
        "phone computer internet app online screen software camera password laptop "
        "video digital robot battery electric website smartphone",
    ),
    (
        "arts",
        "music song guitar piano band concert orchestra paint film movie cinema theater "
        "theatre dance photo art novel poem sing instrument knit",
    ),
    (
        "money",
        "money shop price buy pay bank cost store market supermarket sale cash bill rent "
        "cheap expensive",
    ),
    (
        "home",
        "house home room apartment bed sofa towel clean laundry furniture door window "
        "garage neighbor neighbour roof bathroom shower lease flat key wall",
    ),
    (
        "town",
        "city street town village neighborhood park downtown festival residents square "
        "bridge building local community",
    ),
    (
        "feelings",
        "felt feel happy sad sorry proud worried angry afraid nervous love laugh cry "
        "smile friend thank apology secret lonely excited",
    ),
    (
        "sport",
        "game team match football soccer tennis swim race goal player coach gym score "
        "ball marathon",
    ),
)

ENCYCLOPAEDIC: tuple[str, ...] = (
    "The water cycle describes how water moves around the planet. Heat from the sun evaporates "
    "water from oceans, lakes and soil, and the vapor rises until it cools and condenses into "
    "clouds. When the droplets grow heavy enough they fall as rain or snow, and rivers and "
    "groundwater slowly carry the water back to the sea.",
    "A volcano forms where molten rock from deep inside the Earth reaches the surface. Some "
    "volcanoes erupt quietly, sending rivers of lava down their slopes, while others explode "
    "violently and throw ash high into the sky. Over thousands of years, layers of cooled lava "
    "and ash can build mountains that are several kilometers tall.",
    "Honeybees live in colonies that can contain tens of thousands of insects. A single queen "
    "lays the eggs, worker bees collect nectar and pollen, and drones exist mainly to mate with "
    "new queens. Workers share the location of good flowers with a waggle dance, a pattern of "
    "movements that tells the others both direction and distance.",
    "The Moon takes about twenty-seven days to travel once around the Earth. Because it turns on "
    "its axis in the same amount of time, the same side always faces us. The changing shapes we "
    "see, from a thin crescent to a full disc, depend on how much of the sunlit half is turned "
    "towards the Earth.",
    "Plants make their own food through photosynthesis. Inside their leaves, a green pigment "
    "called chlorophyll captures the energy of sunlight, which the plant uses to turn water and "
    "carbon dioxide into sugar. Oxygen is released as a by-product, and nearly all of the oxygen "
    "animals breathe was produced in this way.",
    "The printing press with movable metal type spread across Europe in the fifteenth century. "
    "Before it, books were copied by hand and were rare and expensive. Printing made it possible "
    "to produce hundreds of identical copies quickly, which helped new ideas travel faster and "
    "encouraged many more people to learn to read.",
    "Bread is made by mixing flour, water, salt and yeast into a dough. The yeast feeds on sugars "
    "in the flour and releases carbon dioxide, which forms tiny bubbles that make the dough rise. "
    "Kneading develops gluten, a stretchy network of proteins that traps the gas, and baking "
    "sets the structure and browns the crust.",
    "Tides are the regular rise and fall of the sea along the coast. They are caused mainly by "
    "the pull of the Moon's gravity, with a smaller effect from the Sun. Most coastlines see two "
    "high tides and two low tides every day, and the difference between them is largest around "
    "the full moon and the new moon.",
    "A rainbow appears when sunlight shines through raindrops while the sun is behind the viewer. "
    "Each drop bends the light as it enters, reflects it from the back and bends it again as it "
    "leaves, and because each color bends by a slightly different amount, white light spreads "
    "into a band running from red to violet.",
    "Coral reefs are built by tiny animals called polyps, which produce hard skeletons of "
    "limestone. Over centuries these skeletons pile up into huge structures that shelter a "
    "great variety of fish, crabs and other sea creatures. Reefs need clear, warm and shallow "
    "water, and they are easily harmed when the sea becomes too hot.",
    "Deserts are places that receive very little rain, usually less than twenty-five "
    "centimeters a year. Not all deserts are hot; some of the largest are cold and covered in "
    "ice. Desert plants often store water in thick stems or have long roots, and many desert "
    "animals stay in burrows during the day and come out at night.",
    "The human heart is a muscle about the size of a fist. It beats around seventy times a "
    "minute at rest, pumping blood through a network of arteries, veins and tiny capillaries. "
    "The right side sends blood to the lungs to pick up oxygen, and the left side pushes the "
    "oxygen-rich blood out to the rest of the body.",
    "Sleep is not simply a time when the brain switches off. During the night it passes through "
    "several cycles of light sleep, deep sleep and dreaming sleep. Deep sleep helps the body "
    "repair itself, while dreaming sleep seems to play a part in memory, which is why a good "
    "night's rest often makes it easier to learn.",
    "Public libraries lend books, music and films to anyone who joins, usually for free. Many "
    "also offer quiet study rooms, computers with internet access, reading groups for children "
    "and classes for adults. For people without a computer at home, the local library is often "
    "the easiest place to fill in forms or look for work.",
    "The first steam railways carried coal from mines to nearby rivers and ports. Within a few "
    "decades, passenger trains linked cities that had once been days apart by horse and cart. "
    "Railways changed the way people lived, since fresh food, letters and newspapers could now "
    "travel across a whole country overnight.",
    "Chess is a game for two players on a board of sixty-four squares. Each player starts with "
    "sixteen pieces, including a king, a queen, two rooks, two bishops, two knights and eight "
    "pawns. The aim is to trap the opponent's king so that it cannot escape, a position known as "
    "checkmate.",
    "Tea is made from the leaves of a shrub that grows in warm, wet climates. Green tea and black "
    "tea come from the same plant; the difference lies in how the leaves are treated after "
    "picking. For black tea the leaves are left to react with the air, which darkens them and "
    "gives a stronger taste.",
    "Glass is made by heating sand, soda and lime until they melt into a thick liquid. While it "
    "is still hot, the glass can be blown into bottles, pressed into moulds or floated on a bath "
    "of molten tin to make flat windows. As it cools, it becomes hard and clear without forming "
    "crystals.",
    "Paper was first made from plant fibers soaked in water and pressed into thin sheets. Today "
    "most paper comes from wood pulp, although old paper is increasingly recycled. The fibers "
    "are mixed with water, spread over a fine mesh, drained, pressed between rollers and dried "
    "into long continuous rolls.",
    "Mechanical clocks use a steady repeating motion to measure time. In a pendulum clock, a "
    "swinging weight releases the gears one tooth at a time, and each swing takes almost exactly "
    "the same time. Modern quartz watches work in a similar way, but they count the vibrations of "
    "a tiny crystal instead.",
    "A magnetic compass has a needle that lines up with the Earth's magnetic field, so one end "
    "always points roughly north. Sailors used compasses for centuries to find their way when "
    "clouds hid the sun and stars. Because the magnetic pole is not at the geographic pole, "
    "careful navigators correct their readings.",
    "Lighthouses were built on rocky coasts and harbor entrances to warn ships of danger at "
    "night. Each one has its own pattern of flashes, so that sailors can tell which light they "
    "are looking at. Most lighthouses are now automatic, but some keepers' cottages have become "
    "museums or holiday homes.",
    "Suspension bridges hang their roadway from thick steel cables stretched between tall "
    "towers. The cables are anchored firmly in the ground at each end, and they carry the weight "
    "of the deck to the towers and the anchors. This design allows bridges to cross wide rivers "
    "and straits with very few supports.",
    "Owls are birds of prey that hunt mostly at night. Their large eyes face forward, giving them "
    "good depth perception, and they can turn their heads a long way to look behind them. Soft "
    "edges on their feathers let them fly almost silently, so that mice and voles do not hear "
    "them coming.",
    "Whales are mammals, not fish. They breathe air through a blowhole on top of their heads, "
    "give birth to live young and feed them with milk. The largest of them, the blue whale, "
    "feeds almost entirely on tiny shrimp-like animals called krill, which it filters from the "
    "water through plates in its mouth.",
    "Penguins are birds that cannot fly, but they are superb swimmers. Their wings have become "
    "stiff flippers, and their dense feathers and a layer of fat keep them warm in icy water. "
    "Emperor penguins breed during the Antarctic winter, and the fathers keep the eggs warm on "
    "their feet for about two months.",
    "Ants live in organised colonies in which different workers have different jobs. Some "
    "gather food, some care for the young and others defend the nest. When an ant finds food, it "
    "leaves a chemical trail on the way home, and other ants follow the trail and strengthen it "
    "until the food is gone.",
    "Forests cover nearly a third of the land on Earth. Trees take in carbon dioxide as they "
    "grow and store the carbon in their wood, roots and the soil around them. Forests also "
    "shelter a large share of the world's plants and animals, and they help to keep rivers clean "
    "by holding the soil in place.",
    "Glaciers are rivers of ice that form where more snow falls in winter than melts in summer. "
    "The snow is slowly pressed into dense ice, which creeps downhill under its own weight. As "
    "glaciers move, they scrape the rock beneath them and carve deep valleys with steep sides "
    "and flat floors.",
    "Earthquakes happen when huge slabs of the Earth's crust, called plates, suddenly slip past "
    "each other. The energy released travels through the ground as waves that can shake "
    "buildings and cause landslides. Scientists measure earthquakes with instruments called "
    "seismometers, which record how strongly the ground moves.",
    "A thunderstorm forms when warm, moist air rises quickly into colder air above. The rising "
    "air builds a tall cloud in which ice and water droplets collide and separate electric "
    "charges. Lightning is a giant spark between these charges, and thunder is the sound of the "
    "air expanding as it is suddenly heated.",
    "The seasons change because the Earth's axis is tilted. As the planet travels around the "
    "sun, first one half and then the other leans towards it. The half leaning towards the sun "
    "has longer days and stronger sunlight, which brings summer, while the other half has its "
    "winter at the same time.",
    "The solar system contains the sun, eight planets and countless smaller bodies such as "
    "moons, asteroids and comets. The four inner planets are small and rocky, while the four "
    "outer ones are giants made mostly of gas and ice. Everything moves in the same direction "
    "around the sun, held in place by its gravity.",
    "Stars are huge balls of hot gas that shine because of nuclear reactions in their cores. "
    "There, hydrogen is squeezed so hard that it fuses into helium and releases energy. A star "
    "like the sun can shine steadily for billions of years, while much heavier stars burn "
    "through their fuel far more quickly.",
    "A telescope collects much more light than the human eye can, which makes faint objects "
    "visible. Some telescopes use lenses to bend the light, and others use curved mirrors to "
    "focus it. Large observatories are often built on high mountains, where the air is thin, "
    "dry and far from the glow of city lights.",
    "Electricity is the flow of tiny charged particles called electrons through a conductor such "
    "as a copper wire. A battery or a generator pushes the electrons around a circuit, and along "
    "the way their energy can light a lamp, turn a motor or heat a kettle. Rubber and plastic "
    "block the flow and are used as insulation.",
    "Magnets attract iron and a few other metals, and every magnet has a north pole and a south "
    "pole. Opposite poles pull towards each other, while like poles push apart. An electric "
    "current flowing through a coil of wire also creates a magnetic field, an idea that is used "
    "in motors, loudspeakers and doorbells.",
    "Recycling turns used materials into new products. Glass and metal can be melted down and "
    "reused many times without losing quality, while paper fibers become a little shorter each "
    "time. Sorting waste carefully at home matters, because a few dirty or wrong items can spoil "
    "a whole load of recycling.",
    "Composting turns kitchen scraps and garden waste into rich soil. Worms, fungi and bacteria "
    "break down vegetable peelings, leaves and grass cuttings, especially when the heap is kept "
    "moist and turned now and then. After several months the result is a dark, crumbly material "
    "that gardeners spread around their plants.",
    "Cheese is made by curdling milk, separating the solid curds from the liquid whey and then "
    "pressing, salting and storing the curds. The type of milk, the bacteria used and the length "
    "of ageing all change the flavor. A fresh cheese may be ready in a day, while some hard "
    "cheeses are aged for several years.",
    "Chocolate comes from the seeds of the cacao tree, which grows in hot, rainy regions near the "
    "equator. The seeds are fermented, dried and roasted, then ground into a thick paste. Sugar, "
    "cocoa butter and sometimes milk are added, and the mixture is stirred for hours to make it "
    "smooth.",
    "Pasta is made from wheat flour and water, and sometimes eggs. The dough is rolled flat and "
    "cut, or pushed through shaped metal plates to make tubes, spirals and shells. Dried pasta "
    "keeps for a long time, which made it a useful food for long sea voyages and for storing "
    "through the winter.",
    "Museums collect, care for and display objects of artistic, historical or scientific "
    "interest. Behind the public galleries, experts clean and repair old paintings, record where "
    "each object came from and store thousands of items that are not on show. Many museums also "
    "run workshops and school visits.",
    "An orchestra is a large group of musicians playing together, usually led by a conductor. "
    "The players are arranged in sections: strings at the front, woodwind and brass behind them "
    "and percussion at the back. The conductor sets the speed, balances the sections and shapes "
    "how loud or soft each passage should be.",
    "Jazz grew up in the early twentieth century in the cities of the southern United States. It "
    "mixed blues, marching band music and ragtime, and it gave musicians room to improvise, "
    "making up new melodies on the spot. Over the following decades it spread around the world "
    "and split into many different styles.",
    "Photography began with cameras that needed long exposures, so people had to sit perfectly "
    "still for minutes at a time. Later, film made it possible to take pictures in a fraction of "
    "a second. Digital cameras replaced film with a light-sensitive chip, and today most "
    "photographs are taken with phones.",
    "Early radio broadcasts carried news, music and plays into homes for the first time. "
    "Families gathered around a single set in the evening, and popular programs could reach "
    "millions of listeners at once. Radio is still widely used today, especially in cars and in "
    "places where other media are hard to reach.",
    "The internet is a worldwide network of computers that exchange data using shared rules. "
    "Information is split into small packets, each of which can take a different route before "
    "being put back together at its destination. The web, with its linked pages, is only one of "
    "the many services that run on the internet.",
    "A strong password is long, hard to guess and used for only one account. Security experts "
    "often suggest a phrase of several unrelated words, which is easier to remember than a short "
    "string of random symbols. Turning on a second check, such as a code sent to a phone, adds "
    "another layer of protection.",
    "Wind turbines turn the movement of air into electricity. The wind pushes the long blades "
    "around, and the rotating shaft drives a generator inside the housing at the top of the "
    "tower. Turbines are often grouped together in wind farms, on open hills or out at sea, "
    "where the wind is strong and steady.",
    "Solar panels are made of cells that turn sunlight directly into electricity. When light "
    "strikes the cell, it frees electrons in a thin layer of silicon, and the electrons flow "
    "through wires as a current. Panels work best when they face the sun, but they still "
    "produce some power on cloudy days.",
    "Canals are artificial waterways built for boats or for moving water to fields. Where the "
    "land rises or falls, locks lift and lower boats from one level to another. Before "
    "railways, canals were the cheapest way to carry heavy goods such as coal and stone across "
    "the countryside.",
    "Castles were built in the Middle Ages as fortified homes for nobles and as bases for "
    "soldiers. Thick stone walls, towers, narrow windows and a moat made them hard to attack. "
    "Over time, better cannons made castle walls less useful, and many were turned into "
    "comfortable houses or left to fall into ruin.",
    "The Roman roads were built to move armies quickly across the empire. Engineers laid layers "
    "of stone and gravel, with a curved surface so that rain ran off to the sides. Many roads "
    "ran in long straight lines, and some modern roads in Europe still follow the routes they "
    "marked out two thousand years ago.",
    "The Silk Road was a network of trade routes linking China with Central Asia, the Middle "
    "East and Europe. Merchants carried silk, spices, paper and precious metals along it, often "
    "passing goods from one trader to the next. Ideas, religions and inventions traveled along "
    "the same routes.",
    "Wool comes from the fleece of sheep, which is usually sheared once a year in spring. The "
    "wool is washed to remove grease and dirt, combed so that the fibers lie in the same "
    "direction and then spun into yarn. Woollen clothes stay warm even when they are damp, which "
    "makes them popular with walkers.",
    "Cotton grows as a soft, fluffy ball of fibers around the seeds of the cotton plant. After "
    "picking, the fibers are separated from the seeds, cleaned and spun into thread. Cotton "
    "cloth is cool and absorbs moisture well, so it is widely used for shirts, towels and "
    "bedsheets.",
    "A bicycle turns the push of the rider's legs into forward motion through pedals, a chain "
    "and gears. Low gears make it easier to climb hills, while high gears let the rider go "
    "faster on flat roads. Because it needs no fuel and takes little space, the bicycle is one of "
    "the most efficient ways to travel.",
    "Swimming works almost every muscle in the body while the water supports its weight. This "
    "makes it a good form of exercise for people with sore joints or those recovering from an "
    "injury. Learning to swim is also an important safety skill, and many schools teach it from "
    "an early age.",
    "Washing hands with soap and water is one of the simplest ways to stop illnesses from "
    "spreading. Soap breaks up the oily layer that holds many germs to the skin, and rinsing "
    "carries them away. Doctors recommend scrubbing for about twenty seconds, including between "
    "the fingers and under the nails.",
    "Teeth are covered by enamel, the hardest substance in the human body. Bacteria in the mouth "
    "feed on sugar and produce acids that slowly wear the enamel away and cause holes. Brushing "
    "twice a day, cleaning between the teeth and eating fewer sugary snacks all help to keep "
    "teeth healthy.",
    "The human eye works a little like a camera. Light enters through the clear cornea and the "
    "pupil, and the lens focuses it onto the retina at the back of the eye. Cells in the retina "
    "turn the light into signals that travel along the optic nerve to the brain, which builds "
    "them into the images we see.",
    "The adult human skeleton has about two hundred bones. Bones give the body its shape, "
    "protect organs such as the brain and the heart and work with muscles to let us move. They "
    "are living tissue, constantly rebuilt throughout life, and they need calcium and exercise "
    "to stay strong.",
    "The immune system defends the body against germs. White blood cells patrol the blood and "
    "tissues, recognize invaders and destroy them. After an infection, some of these cells "
    "remember the germ, so that the body can respond much faster the next time, which is the "
    "idea behind vaccination.",
    "Writing began about five thousand years ago, when people started using marks to keep "
    "records of goods and taxes. Early systems used pictures for whole words, and over time "
    "some scripts came to use signs for sounds. An alphabet uses a small set of letters, each "
    "standing roughly for one sound.",
    "Calendars help people keep track of days, months and years. Many are based on the movement "
    "of the Earth around the sun, while others follow the phases of the Moon. Because a year is "
    "not a whole number of days, most calendars add an extra day now and then, as in a leap "
    "year.",
    "Money makes trade easier than swapping goods directly. Early forms included shells, salt "
    "and pieces of metal, followed by stamped coins and later paper notes. Today most money "
    "exists only as numbers in bank accounts, moved from one account to another by cards, "
    "transfers and phone apps.",
    "Weather forecasts are based on measurements from weather stations, balloons, ships and "
    "satellites. Powerful computers use these readings to calculate how the air is likely to "
    "move over the coming days. Forecasts are quite reliable a day or two ahead but become less "
    "certain the further they look.",
    "Clouds are made of countless tiny water droplets or ice crystals floating in the air. Thin, "
    "wispy clouds high in the sky are made of ice, while low, grey sheets often bring drizzle. "
    "Towering clouds with dark bases can grow into thunderstorms on hot summer afternoons.",
    "Fog is simply a cloud that touches the ground. It often forms on calm, clear nights, when "
    "the ground loses heat and cools the air just above it until water vapor condenses. Fog "
    "usually clears in the morning as the sun warms the air, but in some valleys it can last "
    "for days.",
    "Soil is a mixture of tiny rock particles, dead plant material, water, air and a huge number "
    "of living things. It forms very slowly as rock is broken down by weather and roots. Healthy "
    "soil holds water and nutrients for plants, and it can take hundreds of years to form just a "
    "few centimeters.",
    "Earthworms spend their lives tunnelling through the soil. As they move, they swallow soil "
    "and dead leaves and leave behind rich droppings that feed plants. Their tunnels let air and "
    "water reach the roots, which is why gardeners are usually pleased to find plenty of worms "
    "when they dig.",
    "Mushrooms are the fruiting parts of fungi, most of which live hidden underground or inside "
    "rotting wood as a web of fine threads. Fungi break down dead material and return nutrients "
    "to the soil. Some mushrooms are delicious, but others are deadly, so people should never "
    "eat wild ones they cannot identify.",
    "Bats are the only mammals that can truly fly. Their wings are made of thin skin stretched "
    "between long finger bones. Many bats find their way in the dark by making high-pitched "
    "calls and listening for the echoes, which tell them where insects and obstacles are.",
    "Frogs begin life as eggs laid in water. The eggs hatch into tadpoles, which breathe with "
    "gills and swim with their tails. Over several weeks the tadpoles grow legs, lose their "
    "tails and develop lungs, until they are ready to climb out of the water as small frogs.",
    "A butterfly goes through four stages in its life: egg, caterpillar, pupa and adult. The "
    "caterpillar spends most of its time eating and growing. Inside the pupa, its body is "
    "rebuilt completely, and the adult butterfly finally emerges with wings that must dry "
    "before it can fly.",
    "Rivers begin as small streams in hills and mountains, fed by rain, melting snow or springs. "
    "As they flow downhill they join together and grow wider, carrying sand and mud with them. "
    "Near the sea, many rivers slow down and drop this material, building up flat land called a "
    "delta.",
    "Marathon runners cover a little more than forty-two kilometers. The distance is said to "
    "recall a legend about a messenger who ran from the town of Marathon to Athens. Training for "
    "a marathon usually takes several months of gradually longer runs, along with rest days to "
    "let the body recover.",
    "The Olympic Games bring together athletes from around the world every four years. The "
    "modern games began at the end of the nineteenth century, inspired by the ancient games "
    "held in Greece. Winter sports such as skiing and skating have their own games, held two "
    "years after the summer ones.",
    "Rice is the main food for more than half of the world's people. It usually grows in flooded "
    "fields called paddies, where the water keeps weeds down. After harvest, the grains are "
    "dried and the husks removed, and brown rice keeps its outer layer while white rice is "
    "polished.",
    "Coffee is brewed from the roasted seeds of a small tree that grows in the tropics. The "
    "seeds, often called beans, are picked inside red fruits, dried and then roasted, which "
    "brings out their flavor and color. Light roasts taste brighter, while dark roasts are more "
    "bitter and smoky.",
    "Maps show the features of a place from above, shrunk to fit a page or a screen. A scale bar "
    "tells how distances on the map compare with real distances, and symbols stand for roads, "
    "rivers, forests and buildings. Contour lines join points of equal height, so that hills "
    "and valleys can be read from a flat sheet.",
    "Trains powered by electricity draw current from overhead wires or from a third rail beside "
    "the track. Electric trains are quiet, accelerate quickly and produce no smoke where they "
    "run. High-speed lines use smooth curves and special tracks, allowing trains to travel at "
    "hundreds of kilometers an hour.",
    "Learning a second language is easier when it becomes part of daily life. Short, regular "
    "practice tends to work better than long sessions once a week. Listening to songs, reading "
    "simple stories and speaking with others, even with mistakes, all help the new words and "
    "patterns to stick.",
    "Gardening can be done almost anywhere, from large plots to small pots on a balcony. Most "
    "vegetables need plenty of sunlight, regular watering and soil rich in organic matter. "
    "Herbs such as mint, parsley and basil are good plants for beginners, since they grow "
    "quickly and can be picked again and again.",
    "Batteries store energy in chemical form and release it as electricity when they are "
    "connected to a circuit. Rechargeable batteries can reverse the chemical reaction when "
    "current is pushed back into them. They power phones, laptops and electric cars, and their "
    "capacity slowly falls with age.",
)

_SPACE_RE = re.compile(r"\s+")


def topic_of(sentence: str) -> str:
    """The topic with the most keyword hits (whole words, plural ``s`` allowed), else everyday."""
    words = re.findall(r"[a-z]+", sentence.lower())
    best, best_hits = "everyday", 0
    for name, keywords in TOPICS:
        keys = keywords.split()
        hits = sum(w in keys or (w.endswith("s") and w[:-1] in keys) for w in words)
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def pack(sentences: list[str], min_words: int = MIN_WORDS) -> list[str]:
    """Join sentences in order into passages of at least ``min_words`` words."""
    passages: list[list[str]] = []
    current: list[str] = []
    for s in sentences:
        current.append(s)
        if sum(len(x.split()) for x in current) >= min_words:
            passages.append(current)
            current = []
    if current:
        if passages:
            passages[-1].extend(current)
        else:
            passages.append(current)
    return [" ".join(p) for p in passages]


def generate(probe_path: Path, seed: int = SEED) -> list[str]:
    """All passages, shuffled: the hand-written paragraphs and the grouped probe sentences."""
    rng = random.Random(seed)
    lines = [_SPACE_RE.sub(" ", s).strip() for s in probe_path.read_text("utf-8").splitlines()]
    sentences = [s for s in lines if s]
    groups: dict[str, list[str]] = {name: [] for name, _ in TOPICS}
    groups["everyday"] = []
    for s in sentences:
        groups[topic_of(s)].append(s)
    passages = [_SPACE_RE.sub(" ", p).strip() for p in ENCYCLOPAEDIC]
    for name in [*(n for n, _ in TOPICS), "everyday"]:
        group = groups[name]
        rng.shuffle(group)
        passages.extend(pack(group))
    rng.shuffle(passages)
    if len(set(passages)) != len(passages):
        raise SystemExit("duplicate passages")
    short = [p for p in passages if len(p.split()) < MIN_WORDS]
    if short:
        raise SystemExit(f"{len(short)} passages have fewer than {MIN_WORDS} words")
    return passages


def main() -> None:
    """Command-line entry point: write the passages, one per line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", type=Path, default=DATA_DIR / "probe_general.txt")
    parser.add_argument("--out", type=Path, default=DATA_DIR / "general_text.txt")
    args = parser.parse_args()
    passages = generate(args.probe)
    args.out.write_text("".join(p + "\n" for p in passages), encoding="utf-8")
    words = [len(p.split()) for p in passages]
    print(
        f"{len(passages)} passages ({len(ENCYCLOPAEDIC)} encyclopaedic), words per passage "
        f"min {min(words)} mean {sum(words) / len(words):.1f} max {max(words)}"
    )


if __name__ == "__main__":
    main()
