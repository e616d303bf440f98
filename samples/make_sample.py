"""Builds samples/documents.jsonl from fact tables written for foveal (no outside text)."""
import json, random
random.seed(7)
docs = []
def add(cat, i, title, text, ts):
    docs.append({"_id": f"{cat[:5]}-{i:03d}", "title": title, "text": text,
                 "metadata": {"category": cat, "source": "foveal-sample"}, "timestamp": ts})

planets = [
 ("Mercury", "the smallest planet and the closest to the Sun", "88 days", "no moons", "a thin exosphere and extreme temperature swings between day and night"),
 ("Venus", "the hottest planet, hotter even than Mercury", "225 days", "no moons", "a thick carbon dioxide atmosphere that traps heat in a runaway greenhouse effect"),
 ("Earth", "the only world known to host life", "365.25 days", "one moon", "liquid water oceans covering about seventy percent of its surface"),
 ("Mars", "the red planet, coloured by iron oxide dust", "687 days", "two small moons, Phobos and Deimos", "the tallest volcano in the solar system, Olympus Mons"),
 ("Jupiter", "the largest planet, a gas giant", "about 12 years", "dozens of moons including Ganymede, the largest moon of all", "the Great Red Spot, a storm larger than Earth"),
 ("Saturn", "a gas giant famous for its bright rings of ice", "about 29 years", "many moons including Titan, which has a thick atmosphere", "a density lower than that of water"),
 ("Uranus", "an ice giant tipped on its side", "about 84 years", "27 known moons", "an axial tilt of nearly 98 degrees that gives extreme seasons"),
 ("Neptune", "the most distant planet, an ice giant", "about 165 years", "16 known moons including Triton, which orbits backwards", "the fastest winds measured in the solar system"),
]
for i, (name, what, year, moons, feature) in enumerate(planets):
    add("astronomy", i, name, f"{name} is {what}. It takes {year} to orbit the Sun and has {moons}. It is known for {feature}.", f"2024-0{1+i%9}-1{i}T09:00:00Z")
astro = [
 ("Why the Moon causes tides", "The gravity of the Moon pulls on the oceans. Water bulges toward the Moon on one side of Earth and away from it on the other, so most coasts see two high tides and two low tides each day. When the Sun and Moon line up, at new and full moon, the tides are larger and are called spring tides."),
 ("Solar eclipses", "A solar eclipse happens when the Moon passes between the Sun and Earth and casts its shadow on Earth. In a total eclipse the bright disk of the Sun is hidden and its faint outer atmosphere, the corona, becomes visible."),
 ("Light-years", "A light-year is a distance, not a time: the distance light travels in one year, about 9.46 trillion kilometres. The nearest star beyond the Sun, Proxima Centauri, is a little over four light-years away."),
 ("Black holes", "A black hole is a region where gravity is so strong that nothing, not even light, can escape once it crosses the event horizon. Stellar black holes form when very massive stars collapse at the end of their lives."),
 ("Comets", "Comets are lumps of ice and dust from the outer solar system. When one approaches the Sun, its ice turns to gas and forms a glowing coma and tails that always point away from the Sun."),
 ("Seasons on Earth", "Seasons are caused by the tilt of Earth's axis, about 23.4 degrees, not by the distance to the Sun. The hemisphere tilted toward the Sun gets longer days and more direct sunlight, which makes summer."),
 ("The Milky Way", "The Milky Way is a barred spiral galaxy containing hundreds of billions of stars. The Sun sits in one of its spiral arms, roughly 26,000 light-years from the centre, where a supermassive black hole called Sagittarius A* lies."),
 ("Meteor showers", "Meteor showers happen when Earth passes through the trail of dust left behind by a comet. The grains burn up high in the atmosphere and appear as shooting stars that seem to come from one point in the sky."),
]
for i, (t, x) in enumerate(astro):
    add("astronomy", 10 + i, t, x, f"2024-03-{10+i}T12:00:00Z")

cooking = [
 ("Why onions make you cry", "Cutting an onion breaks its cells and releases enzymes that turn sulfur compounds into a volatile gas, syn-propanethial-S-oxide. When the gas reaches your eyes it forms an irritant, and tears flow to wash it away. Chilling the onion or using a sharp knife reduces the effect."),
 ("How yeast makes bread rise", "Yeast ferments the sugars in dough and releases carbon dioxide. Kneading builds a network of gluten that traps the gas, so the dough expands. Baking sets the structure and drives off the alcohol that fermentation also produced."),
 ("The Maillard reaction", "Browning on seared meat, toast and roasted coffee comes from the Maillard reaction between amino acids and reducing sugars at high temperature. It creates hundreds of flavour compounds and works best on a dry surface."),
 ("Cooking rice on the stove", "Rinse the rice to remove surface starch, add about one and a half parts water for white long-grain rice, bring to a boil, then cover and simmer on low heat for fifteen minutes. Let it rest covered for five minutes before fluffing it with a fork."),
 ("Emulsions and mayonnaise", "Mayonnaise is an emulsion of oil droplets in egg yolk and lemon juice or vinegar. Lecithin in the yolk surrounds each droplet and stops them from merging. Adding the oil slowly at first keeps the emulsion from breaking."),
 ("Why pasta water is salted", "Salting the cooking water seasons pasta from the inside as it absorbs water. It does not noticeably raise the boiling point at kitchen amounts; the point is flavour."),
 ("Caramelising sugar", "Heating sugar above about 160 degrees Celsius breaks it down into hundreds of compounds that taste nutty and slightly bitter and turn the syrup amber. A few degrees too far and the caramel burns."),
 ("Sourdough starters", "A sourdough starter is a culture of wild yeast and lactic acid bacteria kept alive with regular feedings of flour and water. The bacteria make the bread tangy, and the yeast makes it rise more slowly than commercial yeast."),
 ("Resting meat after cooking", "Letting a roast rest for ten minutes allows the temperature to even out and the muscle fibres to relax, so less juice runs out when it is carved. The centre keeps cooking a few degrees while it rests."),
 ("Making a roux", "A roux is flour cooked in an equal weight of fat. It thickens sauces such as béchamel and gumbo. The longer it cooks, the darker and nuttier it becomes, but the less thickening power it has."),
 ("Pickling vegetables", "Quick pickles are vegetables covered in a hot brine of vinegar, water, salt and sugar and kept in the fridge. Fermented pickles instead rely on salt and lactic acid bacteria to sour the vegetables over days or weeks."),
 ("Whipping egg whites", "Beating egg whites unfolds their proteins, which then trap air bubbles in a foam. A clean bowl matters because even a trace of fat from the yolk stops the foam from forming. A little cream of tartar stabilises it."),
]
for i, (t, x) in enumerate(cooking):
    add("cooking", i, t, x, f"2025-02-{10+i}T08:30:00Z")

computing = [
 ("Python list comprehensions", "A list comprehension builds a new list from an iterable in one expression, for example [x * x for x in range(10) if x % 2 == 0] gives the squares of even numbers. It is usually clearer and faster than appending in a loop."),
 ("What a hash table is", "A hash table stores key and value pairs in an array. A hash function turns each key into an index, so lookups, inserts and deletes take constant time on average. Collisions are handled by chaining or open addressing."),
 ("Binary search", "Binary search finds an item in a sorted array by comparing it with the middle element and discarding half of the remaining range each step. It needs at most about log2(n) comparisons: twenty for a million items."),
 ("Git branches", "A Git branch is a movable pointer to a commit. Creating one is cheap, so developers make a branch for each feature and merge or rebase it onto the main line when it is ready."),
 ("HTTP status codes", "HTTP responses carry a three-digit status: 2xx means success, 3xx a redirect, 4xx a client error such as 404 Not Found or 422 Unprocessable Content, and 5xx a server error such as 500 Internal Server Error."),
 ("Garbage collection", "Garbage collection frees memory that a program can no longer reach. CPython counts references to each object and frees it when the count drops to zero, and a cycle detector cleans up groups of objects that only refer to each other."),
 ("SQL joins", "An inner join returns rows that match in both tables; a left join keeps every row of the left table and fills in nulls where the right table has no match. Indexes on the joined columns keep large joins fast."),
 ("Big O notation", "Big O notation describes how the running time or memory of an algorithm grows with the size of its input. Sorting by comparison needs O(n log n) time in the worst case, while scanning a list is O(n)."),
 ("Unicode and UTF-8", "UTF-8 encodes every Unicode character in one to four bytes and keeps plain ASCII unchanged. Text such as café, naïve, 東京 or an emoji like 🎉 all fit, which is why UTF-8 became the default encoding of the web."),
 ("Inverted indexes", "Search engines use an inverted index: for every term, a list of the documents that contain it. Ranking functions such as BM25 then score documents by how often query terms occur, weighted by how rare each term is."),
 ("Vector embeddings", "A text embedding model maps a sentence to a vector of numbers so that texts with similar meaning end up close together. Nearest-neighbour search over these vectors finds paraphrases that share no words with the query."),
 ("Unit tests", "A unit test checks one small piece of code in isolation against expected behaviour. Good tests fail when the behaviour breaks, run quickly, and do not depend on the order in which they run."),
]
for i, (t, x) in enumerate(computing):
    add("computing", i, t, x, f"2025-05-{10+i}T14:00:00Z")

history = [
 ("The printing press", "Around 1440 Johannes Gutenberg developed a printing press with movable metal type in Mainz. Books became far cheaper to make, which helped spread literacy, the Reformation and the scientific revolution."),
 ("The fall of the Berlin Wall", "The Berlin Wall, which had divided East and West Berlin since 1961, was opened on 9 November 1989. Germany was reunified less than a year later, on 3 October 1990."),
 ("The first Moon landing", "On 20 July 1969 the Apollo 11 lunar module landed on the Moon. Neil Armstrong and Buzz Aldrin walked on the surface while Michael Collins orbited above in the command module."),
 ("The Great Wall of China", "The Great Wall is a series of fortifications built over many centuries, most of the surviving brick sections during the Ming dynasty. It was meant to protect against raids from the northern steppe."),
 ("The Magna Carta", "The Magna Carta was sealed by King John of England in 1215. It limited the king's power and became a symbol of the principle that rulers are bound by law."),
 ("The Roman aqueducts", "Roman engineers built aqueducts that carried water over long distances using a gentle, steady downhill slope. Some, like the Pont du Gard in southern France, still stand today."),
 ("The Industrial Revolution", "Beginning in Britain in the late eighteenth century, the Industrial Revolution moved production from workshops to factories powered by water and then steam. Textile mills and railways transformed work and cities."),
 ("The Silk Road", "The Silk Road was a network of trade routes linking China with Central Asia, the Middle East and Europe. Silk, spices, paper and ideas such as religions and inventions travelled along it for more than a thousand years."),
]
for i, (t, x) in enumerate(history):
    add("history", i, t, x, f"2024-11-{10+i}T10:00:00Z")

biology = [
 ("How vaccines work", "A vaccine trains the immune system by showing it a harmless piece or weakened form of a pathogen. Memory cells then recognise the real pathogen quickly and fight it off before it causes serious illness."),
 ("Photosynthesis", "Plants capture light energy with chlorophyll and use it to turn carbon dioxide and water into sugar, releasing oxygen. The process happens in chloroplasts, mostly in the leaves."),
 ("Why we need sleep", "During sleep the brain consolidates memories and clears waste products. Adults who regularly sleep less than seven hours have a higher risk of weakened immunity, weight gain and poor concentration."),
 ("DNA", "DNA is a double helix of two strands whose bases pair A with T and C with G. The sequence of bases encodes the instructions for building proteins, and it is copied each time a cell divides."),
 ("Antibiotic resistance", "Bacteria that survive a course of antibiotics can pass on the genes that helped them survive. Overuse and unfinished courses of antibiotics speed up the spread of resistant strains."),
 ("How bees communicate", "Honey bees perform a waggle dance to tell their hive mates where flowers are. The angle of the dance shows the direction relative to the Sun and its length shows the distance."),
 ("The human heart", "The heart has four chambers. The right side pumps blood to the lungs to pick up oxygen, and the left side pumps oxygen-rich blood to the rest of the body. At rest it beats about sixty to a hundred times a minute."),
 ("Why leaves change colour", "In autumn trees stop making chlorophyll, and the green fades to reveal yellow and orange pigments that were there all along. Red colours come from new pigments made in the leaf as sugars build up."),
]
for i, (t, x) in enumerate(biology):
    add("biology", i, t, x, f"2025-09-{10+i}T07:00:00Z")

geography = [
 ("The Nile", "The Nile flows north through eleven countries to the Mediterranean Sea and is often named the longest river in the world at about 6,650 kilometres. Its two main branches, the White Nile and the Blue Nile, meet at Khartoum."),
 ("Mount Everest", "Mount Everest, on the border of Nepal and China, is the highest mountain above sea level at 8,849 metres. The first confirmed ascent was by Edmund Hillary and Tenzing Norgay in 1953."),
 ("The Sahara", "The Sahara is the largest hot desert in the world, covering much of North Africa. Only a small part of it is sand dunes; most of it is rocky plateau and gravel plains."),
 ("The Amazon rainforest", "The Amazon rainforest spreads across nine countries and holds a huge share of the world's species. Its trees recycle moisture into rain and store vast amounts of carbon."),
 ("Iceland's volcanoes", "Iceland sits on the Mid-Atlantic Ridge where two tectonic plates pull apart, so magma rises easily and the island has many active volcanoes. Geothermal heat warms most homes in the country."),
 ("The Dead Sea", "The Dead Sea, between Jordan and Israel, lies more than 400 metres below sea level. Its water is so salty that swimmers float easily and almost nothing lives in it."),
]
for i, (t, x) in enumerate(geography):
    add("geography", i, t, x, f"2025-06-{10+i}T11:00:00Z")

music = [
 ("How a guitar makes sound", "A plucked string vibrates at a frequency set by its length, tension and mass. The hollow body of an acoustic guitar amplifies the vibration, while an electric guitar uses magnetic pickups and an amplifier."),
 ("The twelve-tone scale", "Western music divides the octave into twelve semitones. In equal temperament each semitone raises the frequency by the twelfth root of two, so every key sounds equally in tune."),
 ("Johann Sebastian Bach", "Bach was a German composer of the Baroque era who lived from 1685 to 1750. His works include the Brandenburg Concertos, the Well-Tempered Clavier and the Mass in B minor."),
 ("What tempo means", "Tempo is the speed of a piece of music, usually given in beats per minute. Italian terms such as largo, andante and allegro describe slow, walking and fast speeds."),
]
for i, (t, x) in enumerate(music):
    add("music", i, t, x, f"2025-04-{10+i}T16:00:00Z")

sports = [
 ("The offside rule in football", "A football player is offside if, when the ball is played to them, they are in the opponent's half and nearer to the goal line than both the ball and the second-last defender. Being offside is only penalised if the player takes part in play."),
 ("The marathon distance", "A marathon is 42.195 kilometres long. The odd distance was fixed after the 1908 London Olympics, where the course ran from Windsor Castle to the stadium."),
 ("Tennis scoring", "Tennis points go love, 15, 30, 40 and game. At 40-40, called deuce, a player must win two points in a row. Six games win a set, with a tie-break at six games all in most events."),
 ("Why curveballs curve", "Spin on a thrown ball makes air flow faster on one side than the other, creating a sideways force called the Magnus effect. Pitchers, footballers and table tennis players all use it to bend the ball."),
]
for i, (t, x) in enumerate(sports):
    add("sports", i, t, x, f"2025-07-{10+i}T18:00:00Z")

energy = [
 ("How solar panels work", "Solar panels are made of silicon cells in which light knocks electrons loose and creates a direct current. An inverter turns it into the alternating current used by homes and the grid."),
 ("Heat pumps", "A heat pump moves heat instead of making it. In winter it draws warmth from outdoor air or the ground and pumps it indoors, delivering three or four units of heat for each unit of electricity it uses."),
 ("Wind turbines", "A wind turbine's blades turn a shaft connected to a generator. The power in wind grows with the cube of its speed, so a site with twice the wind speed can yield eight times the energy."),
 ("The greenhouse effect", "Gases such as carbon dioxide and methane let sunlight through but absorb the infrared heat the Earth gives off, warming the lower atmosphere. Burning fossil fuels has raised carbon dioxide levels by about half since pre-industrial times."),
 ("Battery storage", "Lithium-ion batteries store energy by moving lithium ions between two electrodes. Large battery banks store surplus solar power in the day and release it to the grid in the evening."),
]
for i, (t, x) in enumerate(energy):
    add("energy", i, t, x, f"2025-10-{10+i}T13:00:00Z")

# Fictional local news from the city of Larkport, dated.
news = [
 ("2024-02-03", "Larkport council approves new tram line", "The Larkport city council voted 9 to 4 to fund a tram line linking the harbour district with the university campus. Construction is planned to start next spring."),
 ("2024-03-18", "Harbour Bridge closed for repairs", "The Harbour Bridge in Larkport will close to cars for twelve weeks while engineers replace corroded cables. Buses will detour over the Mill Street crossing, and ferries will run every fifteen minutes."),
 ("2024-06-14", "Harbour Bridge reopens ahead of schedule", "Larkport's Harbour Bridge reopened to traffic on Friday, two weeks earlier than planned. The city said the cable replacement came in under budget."),
 ("2024-08-02", "Heatwave brings record temperature to Larkport", "Larkport recorded 38.4 degrees Celsius on Thursday, the highest temperature since records began. The city opened cooling centres in libraries and extended public pool hours."),
 ("2024-10-21", "Storm Agnes floods Larkport's lower town", "Heavy rain from Storm Agnes flooded streets in Larkport's lower town overnight. Around 200 homes lost power and the Mill Street underpass was closed."),
 ("2025-01-15", "Brightwave Robotics opens Larkport factory", "Local company Brightwave Robotics opened a factory in the Larkport east docks that will build warehouse robots. The company expects to hire 300 workers over two years."),
 ("2025-04-09", "Tram line construction begins", "Work on Larkport's harbour-to-campus tram line began this week. Traffic on Quay Road is reduced to one lane until the autumn."),
 ("2025-07-30", "Larkport water restrictions lifted", "After weeks of rain refilled the Greywater reservoir, Larkport lifted its ban on garden hoses. Officials still urged residents to save water."),
 ("2025-11-12", "Brightwave Robotics announces layoffs", "Brightwave Robotics said it will cut 80 jobs at its Larkport factory after a drop in orders, less than a year after the plant opened."),
 ("2026-03-02", "First trams run on the harbour line", "The first passenger trams ran on Larkport's new harbour-to-campus line on Monday. The trip takes eleven minutes and trams run every six minutes at peak times."),
 ("2026-06-20", "Larkport hosts regional sailing regatta", "More than 150 boats raced in the regional sailing regatta off Larkport harbour this weekend. A crew from the Larkport Yacht Club won the keelboat class."),
 ("2026-09-05", "Harbour Bridge to get a cycle lane", "The Larkport council agreed to add a protected cycle lane to the Harbour Bridge. Work will take place at night so that the bridge stays open."),
 ("2026-11-20", "Larkport council budget freezes bus fares", "Larkport's budget for next year freezes bus and tram fares and adds two night bus routes, the council announced."),
]
for i, (date, t, x) in enumerate(news):
    add("news", i, t, x, f"{date}T09:00:00Z")

# Long documents, several paragraphs, beyond a 256-token window.
long_texts = [
 ("A short history of timekeeping", [
  "People first measured time by watching the sky. The daily path of the Sun, the phases of the Moon and the rising of particular stars gave calendars to farmers and priests long before anyone built a machine to count hours.",
  "Sundials divided daylight into parts, but they failed at night and on cloudy days. Water clocks, in which water dripped at a steady rate from one vessel into another, worked in any weather and were used in Egypt, Babylon, Greece and China.",
  "Mechanical clocks appeared in European towers in the late thirteenth century. They used a falling weight and an escapement, a device that releases the gear train in small regular steps. They were not very accurate and often had only an hour hand.",
  "In 1656 Christiaan Huygens built the first pendulum clock. Because a pendulum swings with a nearly constant period, clocks suddenly became accurate to within a minute a day, and later to seconds.",
  "Finding longitude at sea required carrying accurate time on a moving ship. John Harrison's marine chronometers of the eighteenth century solved the problem and made ocean navigation far safer.",
  "Quartz clocks, which count the vibrations of a crystal driven by an electric current, arrived in the twentieth century and made cheap accurate watches possible. Atomic clocks, which count transitions in caesium atoms, now define the second itself and keep satellite navigation systems in step."]),
 ("How the immune system defends the body", [
  "The immune system has two broad layers. The innate system responds within minutes to anything that looks foreign, using barriers like skin, chemical signals that cause inflammation, and white blood cells that swallow invaders.",
  "The adaptive system is slower the first time but remarkably precise. B cells make antibodies that lock onto particular shapes on a pathogen, and T cells either help coordinate the response or kill infected cells directly.",
  "After an infection is cleared, some of these cells become memory cells. They persist for years and can mount a fast, strong response if the same pathogen returns, which is why many diseases are caught only once.",
  "Vaccines exploit memory by presenting a harmless part of a pathogen, such as a protein from its surface, so that memory forms without the risk of the disease.",
  "Sometimes the system misfires. In allergies it attacks harmless substances such as pollen; in autoimmune diseases such as type 1 diabetes it attacks the body's own tissues.",
  "Sleep, a varied diet and regular exercise all support normal immune function, while chronic stress and lack of sleep are linked to weaker responses to infection and to vaccines."]),
 ("Understanding search engines", [
  "A search engine has two jobs: build an index ahead of time, and answer queries quickly from it. Crawling or ingesting collects the documents; analysis splits text into terms, lower-cases them, removes very common words and reduces words to a stem.",
  "The classic data structure is the inverted index, which maps each term to the list of documents containing it together with counts and positions. Scoring functions such as BM25 reward documents that contain the query terms often, especially rare terms, and penalise very long documents slightly.",
  "Lexical matching fails when the query and the document use different words for the same idea. Dense retrieval addresses this by encoding queries and documents into vectors with a neural network so that related meanings sit close together, and approximate nearest-neighbour indexes find the closest vectors quickly.",
  "Hybrid search combines both lists. Reciprocal rank fusion adds up one over a constant plus the rank from each list; linear fusion adds normalised scores. Either way, documents found by both methods tend to rise to the top.",
  "Long documents are usually split into passages before encoding because transformer encoders have a limited window. The score of the best passage can stand for the whole document, an approach called MaxP.",
  "Finally, a reranker, often a cross-encoder that reads the query and a document together, reorders the top candidates. It is slower per document but more accurate, so it only sees a short list."]),
 ("The water cycle in detail", [
  "Water is constantly moving between the oceans, the air and the land. The Sun heats the surface of seas and lakes, and water evaporates into the air as vapour. Plants add more vapour by transpiration through their leaves.",
  "As moist air rises it cools, and the vapour condenses on tiny particles of dust or salt to form cloud droplets. When droplets collide and grow heavy enough, they fall as rain, or as snow and hail when the air is cold.",
  "Some precipitation runs off the surface into streams and rivers, which carry it back to the sea. Some soaks into the ground and recharges aquifers, where it may stay for thousands of years before it emerges in springs or is pumped from wells.",
  "Snow and ice store water for long periods too. Mountain snowpacks melt in spring and feed rivers through the dry summer, which is why warmer winters with less snow can cause water shortages months later.",
  "Climate change is intensifying the cycle. Warmer air holds about seven percent more water vapour for each degree Celsius, which makes heavy downpours heavier while dry regions can become drier."]),
 ("Larkport tram project: a year in review", [
  "When the Larkport council approved the harbour-to-campus tram line in February 2024, supporters promised cleaner air and shorter commutes, while critics worried about cost overruns and years of roadworks on Quay Road.",
  "Construction began in April 2025. Crews first moved water and power lines away from the route, then laid track in sections so that one lane of Quay Road could stay open. Shop owners on the street reported fewer customers during the summer.",
  "The project faced a setback in the autumn when Storm Agnes style flooding returned to the lower town and the depot site had to be raised by half a metre. The city says this added about four percent to the budget.",
  "Testing of the first vehicles started in January 2026 at night. Drivers trained on the route for eight weeks before passenger service began on 2 March 2026.",
  "In its first months the line carried around 9,000 passengers a day, more than the forecast. The council is now studying an extension from the campus to the eastern suburbs and a link to the railway station.",
  "Critics point out that bus routes along the harbour were cut when the trams started, forcing some older residents to walk further to a stop. The council says it will review the bus network next year."]),
]
for i, (t, paras) in enumerate(long_texts):
    add("longread", i, t, "\n\n".join(paras), f"2026-0{1+i}-15T10:00:00Z")

# Unusual content
add("misc", 0, "Prime numbers below one hundred", "The primes below 100 are 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89 and 97. There are 25 of them.", "2025-01-01T00:00:00Z")
add("misc", 1, "A shell one-liner to count lines", "To count the lines of every Python file in a project, run: find . -name '*.py' | xargs wc -l | sort -n. The last line shows the total.", "2025-01-02T00:00:00Z")
add("misc", 2, "Café culture in Paris and Tokyo", "Paris cafés put chairs facing the street so customers can watch passers-by; in Tokyo (東京), kissaten serve hand-drip coffee in quiet rooms. Both cities love a good croissant ☕.", "2025-01-03T00:00:00Z")


# --- more: elements, countries, languages (table-driven) ---
elements = [
 (1,"Hydrogen","H","the lightest element and the most abundant in the universe; it fuels the stars by fusing into helium"),
 (2,"Helium","He","a noble gas that does not react; it lifts balloons and cools the magnets of MRI scanners as a liquid"),
 (3,"Lithium","Li","the lightest metal; it is the key ingredient of rechargeable lithium-ion batteries"),
 (6,"Carbon","C","the basis of organic chemistry; it forms diamond, graphite and graphene"),
 (7,"Nitrogen","N","about 78 percent of the air we breathe; plants need it as fertiliser"),
 (8,"Oxygen","O","about 21 percent of the air; animals use it to release energy from food"),
 (10,"Neon","Ne","a noble gas that glows red-orange in advertising signs"),
 (11,"Sodium","Na","a soft, reactive metal; with chlorine it forms table salt"),
 (12,"Magnesium","Mg","a light metal used in alloys; it sits at the centre of the chlorophyll molecule"),
 (13,"Aluminium","Al","the most abundant metal in Earth's crust; light and resistant to corrosion"),
 (14,"Silicon","Si","a semiconductor at the heart of computer chips and solar cells"),
 (17,"Chlorine","Cl","a yellow-green gas used to disinfect drinking water and swimming pools"),
 (20,"Calcium","Ca","a metal that makes up bones, teeth and limestone"),
 (26,"Iron","Fe","the main ingredient of steel; it carries oxygen in blood as part of haemoglobin"),
 (29,"Copper","Cu","an excellent conductor of electricity used in wiring; it turns green as it weathers"),
 (30,"Zinc","Zn","a metal used to galvanise steel against rust"),
 (47,"Silver","Ag","the best electrical conductor of all metals"),
 (50,"Tin","Sn","a soft metal once used for cans; mixed with copper it makes bronze"),
 (74,"Tungsten","W","the metal with the highest melting point, used in old light bulb filaments"),
 (78,"Platinum","Pt","a precious metal used in catalytic converters"),
 (79,"Gold","Au","a dense, unreactive precious metal that does not tarnish"),
 (80,"Mercury","Hg","the only metal that is liquid at room temperature"),
 (82,"Lead","Pb","a heavy, soft metal that is toxic and was removed from petrol and paint"),
 (92,"Uranium","U","a radioactive metal used as fuel in nuclear reactors"),
]
for i, (num, name, sym, what) in enumerate(elements):
    add("chemistry", i, f"{name} ({sym})", f"{name}, chemical symbol {sym}, has atomic number {num}. It is {what}.", f"2025-03-{1+i%28:02d}T09:00:00Z")

countries = [
 ("France","Paris","euro","the Eiffel Tower and a long tradition of cheese and wine"),
 ("Germany","Berlin","euro","its car industry and a federal system of sixteen states"),
 ("Italy","Rome","euro","the ruins of ancient Rome and Renaissance art in Florence"),
 ("Spain","Madrid","euro","flamenco and the unfinished Sagrada Família in Barcelona"),
 ("Portugal","Lisbon","euro","its age of exploration and the Douro valley vineyards"),
 ("Japan","Tokyo","yen","bullet trains, cherry blossom and a chain of volcanic islands"),
 ("China","Beijing","renminbi","the Great Wall and the largest population for most of modern history"),
 ("India","New Delhi","rupee","the Taj Mahal and more than twenty official languages"),
 ("Brazil","Brasília","real","most of the Amazon rainforest and its carnival in Rio de Janeiro"),
 ("Argentina","Buenos Aires","peso","tango and the Patagonian glaciers"),
 ("Canada","Ottawa","Canadian dollar","the second-largest land area and two official languages, English and French"),
 ("Mexico","Mexico City","peso","Maya and Aztec ruins and a capital built on a former lake"),
 ("Egypt","Cairo","Egyptian pound","the pyramids of Giza and the Nile valley"),
 ("Kenya","Nairobi","Kenyan shilling","wildlife reserves such as the Maasai Mara and its long-distance runners"),
 ("Australia","Canberra","Australian dollar","the Great Barrier Reef and unique marsupials such as kangaroos"),
 ("New Zealand","Wellington","New Zealand dollar","fjords, geysers and the Māori culture"),
 ("Norway","Oslo","Norwegian krone","deep fjords and the midnight sun in the far north"),
 ("Sweden","Stockholm","Swedish krona","a capital spread across fourteen islands"),
 ("Finland","Helsinki","euro","thousands of lakes and the sauna"),
 ("Iceland","Reykjavík","Icelandic króna","volcanoes, glaciers and geothermal pools"),
 ("South Korea","Seoul","won","its electronics industry and the Hangul alphabet"),
 ("Peru","Lima","sol","Machu Picchu, the Inca citadel high in the Andes"),
 ("Morocco","Rabat","dirham","the markets of Marrakesh and the Atlas mountains"),
 ("Greece","Athens","euro","the Acropolis and the birth of democracy"),
 ("Switzerland","Bern","Swiss franc","the Alps, four national languages and precise watchmaking"),
]
for i, (c, cap, cur, known) in enumerate(countries):
    add("geography", 10 + i, c, f"{c}'s capital is {cap} and its currency is the {cur}. It is known for {known}.", f"2025-06-{1+i%28:02d}T11:00:00Z")

languages = [
 ("Python","1991","Guido van Rossum","readable syntax with significant indentation; popular for data science and scripting"),
 ("C","1972","Dennis Ritchie","manual memory management; the language of the Unix kernel and many operating systems"),
 ("Java","1995","James Gosling","running on the Java Virtual Machine so that compiled code works on any platform"),
 ("JavaScript","1995","Brendan Eich","running in every web browser; with Node.js it also runs on servers"),
 ("Rust","2015","Graydon Hoare and Mozilla","memory safety without a garbage collector, enforced by its borrow checker"),
 ("Go","2009","Robert Griesemer, Rob Pike and Ken Thompson at Google","fast compilation and goroutines for concurrency"),
 ("SQL","1974","Donald Chamberlin and Raymond Boyce","querying relational databases with declarative statements"),
 ("Haskell","1990","a committee of researchers","pure functional programming with lazy evaluation"),
 ("Fortran","1957","John Backus at IBM","numerical computing; it is still used in weather and climate models"),
 ("Lisp","1958","John McCarthy","code written as lists, which makes programs easy to transform with macros"),
 ("Ruby","1995","Yukihiro Matsumoto","programmer happiness; the Rails web framework made it popular"),
 ("TypeScript","2012","Microsoft","adding static types to JavaScript"),
]
for i, (lang, year, who, known) in enumerate(languages):
    add("computing", 20 + i, f"The {lang} programming language", f"{lang} first appeared in {year}, created by {who}. It is known for {known}.", f"2025-05-{1+i%28:02d}T14:00:00Z")

# Larkport almanac: dated local items (2022-2026) written for foveal from the tables below, so the page's date
# filters, the time-aware stages and "what happened when" questions have something to work on.
places = ["the harbour", "Mill Street", "the old tram depot", "Gull Point", "the covered market", "Fenwick Park",
          "the east quay", "St Brannoc's hill", "the river walk", "the lighthouse"]
events = [
 ("council", "Council approves {what} at {place}", "Larkport town council voted {votes} in favour of {what} at {place}. Work is planned to start in {month} and the cost, {cost}, comes from the harbour fund.",
  ["new cycle lanes", "a rebuilt sea wall", "longer library hours", "a second ferry berth", "solar panels on the school roof", "a food market every Saturday"]),
 ("weather", "Storm {name} brings {what} to {place}", "Storm {name} reached Larkport overnight with {what}. Crews cleared {place} by mid-morning and the ferry ran again after a {hours}-hour pause.",
  ["gusts of 110 km/h", "a record tide", "heavy rain and flooding", "hail and thunder", "snow for the first time in six years"]),
 ("transit", "Tram line {line} {what}", "Tram line {line} {what}. The service between the station and {place} now runs every {minutes} minutes, the transit office said.",
  ["reopens after track repairs", "gets new low-floor cars", "extends to the new housing estate", "adds late-night runs on Fridays", "switches to contactless tickets"]),
 ("festival", "{what} draws crowds to {place}", "The {what} filled {place} this weekend. Organisers counted about {crowd} visitors, and the lantern parade closed the event at dusk.",
  ["lantern festival", "oyster and seaweed fair", "folk music weekend", "kite day", "harbour regatta", "book swap and poetry night"]),
 ("sport", "Larkport Gulls {result} against {rival}", "The Larkport Gulls {result} against {rival} in front of {crowd} supporters. The coach praised the defence and said the squad would rest before the next match in {month}.",
  ["win 3-1", "draw 2-2", "lose 0-1", "win on penalties", "win 2-0"]),
 ("science", "Larkport school students {what}", "Students at Larkport secondary school {what}. Their teacher said the project at {place} taught them more about measurement than any textbook.",
  ["measure the tides for a year", "build a weather station", "count seabirds on the cliffs", "map air quality with cheap sensors", "restore an old lighthouse lens"]),
]
names = ["Ada", "Brannoc", "Cormac", "Delia", "Eira", "Fergus", "Gwen", "Hal"]
rivals = ["Port Ellis", "Saltmarsh Rovers", "Kilbride Town", "the Harbour Lions", "Westcombe"]
months = ["March", "April", "June", "September", "October", "November"]
random_state = random.Random(11)
n = 0
for year in range(2022, 2027):
    for kind, title_t, text_t, options in events:
        for k in range(5):
            what = options[(k + year) % len(options)]
            values = dict(what=what, place=places[(k * 3 + year) % len(places)], votes=f"{random_state.randint(7, 12)} to {random_state.randint(1, 5)}",
                          month=months[(k + year) % len(months)], cost=f"{random_state.randint(2, 90) * 10_000:,} euros",
                          name=names[(k + year) % len(names)], hours=random_state.randint(3, 20), line=(k + year) % 4 + 1,
                          minutes=random_state.choice([6, 8, 10, 12, 15]), crowd=f"{random_state.randint(2, 40) * 250:,}",
                          result=what, rival=rivals[(k + year) % len(rivals)])
            title = title_t.format(**values)
            text = text_t.format(**values)
            when = f"{year}-{(k * 2 + (kind.__len__() % 2)) % 12 + 1:02d}-{(k * 5 + year) % 27 + 1:02d}T10:00:00Z"
            docs.append({"_id": f"lark-{n:03d}", "title": title, "text": text,
                         "metadata": {"category": "larkport", "kind": kind, "year": year, "source": "foveal-sample"},
                         "timestamp": when})
            n += 1

with open(__import__("pathlib").Path(__file__).with_name("documents.jsonl"), "w", encoding="utf-8") as f:
    for d in docs:
        f.write(json.dumps(d, ensure_ascii=False) + "\n")
print("total", len(docs), len({d['_id'] for d in docs}))
