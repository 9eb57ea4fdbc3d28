"""Fixed vocabularies for the built-in generators (kept apart so the generators read as logic)."""

COUNTRY_CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
    ("Russia", "Moscow"), ("China", "Beijing"), ("Egypt", "Cairo"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Poland", "Warsaw"),
    ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Thailand", "Bangkok"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("India", "New Delhi"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Cuba", "Havana"), ("Chile", "Santiago"), ("Colombia", "Bogota"),
    ("Venezuela", "Caracas"), ("Turkey", "Ankara"), ("Ukraine", "Kyiv"), ("Vietnam", "Hanoi"),
    ("Indonesia", "Jakarta"), ("Philippines", "Manila"), ("South Korea", "Seoul"), ("North Korea", "Pyongyang"),
    ("Afghanistan", "Kabul"), ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Nepal", "Kathmandu"),
    ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Jordan", "Amman"), ("Israel", "Jerusalem"),
    ("Saudi Arabia", "Riyadh"), ("Qatar", "Doha"), ("Morocco", "Rabat"), ("Algeria", "Algiers"),
    ("Tunisia", "Tunis"), ("Libya", "Tripoli"), ("Ethiopia", "Addis Ababa"), ("Nigeria", "Abuja"),
    ("Ghana", "Accra"), ("Senegal", "Dakar"), ("Uganda", "Kampala"), ("Zimbabwe", "Harare"),
    ("Czech Republic", "Prague"), ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Slovakia", "Bratislava"), ("Switzerland", "Bern"), ("Iceland", "Reykjavik"),
    ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"), ("Belarus", "Minsk"),
    ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"), ("Azerbaijan", "Baku"), ("Kazakhstan", "Astana"),
    ("Mongolia", "Ulaanbaatar"), ("Malaysia", "Kuala Lumpur"), ("Singapore", "Singapore"),
    ("New Zealand", "Wellington"), ("Brazil", "Brasilia"), ("Uruguay", "Montevideo"),
    ("Paraguay", "Asuncion"), ("Bolivia", "La Paz"), ("Ecuador", "Quito"), ("Panama", "Panama City"),
    ("Jamaica", "Kingston"), ("Sudan", "Khartoum"), ("Somalia", "Mogadishu"), ("Tanzania", "Dodoma"),
    ("United Kingdom", "London"), ("United States", "Washington"), ("Sri Lanka", "Colombo"),
    ("Myanmar", "Naypyidaw"), ("Cambodia", "Phnom Penh"), ("Laos", "Vientiane"),
)

MALE_NAMES = ("John", "James", "Michael", "David", "Robert", "William", "Richard", "Thomas", "Charles",
              "Daniel", "Matthew", "Mark", "Paul", "Steven", "Andrew", "Kevin", "Brian", "George", "Edward",
              "Peter", "Jack", "Ryan", "Eric", "Adam", "Sam", "Tom", "Luke", "Evan", "Henry", "Frank")
FEMALE_NAMES = ("Mary", "Jennifer", "Linda", "Sarah", "Susan", "Jessica", "Karen", "Nancy", "Lisa", "Betty",
                "Emily", "Anna", "Laura", "Rachel", "Amy", "Kate", "Helen", "Alice", "Emma", "Julia", "Grace",
                "Rose", "Lucy", "Ruth", "Jane", "Claire", "Diana", "Maria", "Sophie", "Olivia")

PLACES = ("store", "park", "school", "office", "beach", "market", "library", "station", "garden", "hospital",
          "restaurant", "museum")
OBJECTS = ("bottle of milk", "book", "drink", "ring", "letter", "basket", "kiss", "snack", "necklace",
           "computer", "ball", "flower")

NOUNS = ("apple", "river", "house", "table", "window", "garden", "pencil", "mountain", "doctor", "teacher",
         "bridge", "candle", "forest", "bottle", "letter", "castle", "engine", "planet", "island", "jacket",
         "rabbit", "violin", "wallet", "carpet", "ladder", "mirror", "pillow", "rocket", "saddle", "tunnel",
         "market", "farmer", "silver", "guitar", "basket", "camera", "dragon", "kitten", "lemon", "monkey")

POSITIVE_ADJ = ("great", "wonderful", "excellent", "amazing", "brilliant", "delightful", "fantastic", "superb",
                "charming", "beautiful", "good", "lovely", "enjoyable", "moving", "funny", "clever")
NEGATIVE_ADJ = ("terrible", "awful", "boring", "horrible", "dreadful", "dull", "bad", "poor", "weak", "painful",
                "tedious", "ugly", "lousy", "messy", "stupid", "annoying")
REVIEW_SUBJECTS = ("movie", "film", "acting", "plot", "story", "script", "soundtrack", "ending", "cast",
                   "direction")

CODE_WORDS = ("files", "obj", "state", "size", "shape", "option", "data", "path", "name", "value", "key",
              "index", "count", "mode", "text", "node", "item", "config", "target", "source", "model", "user",
              "token", "level", "limit", "buffer", "result", "query", "image", "layer")
DOC_WORDS = ("performance", "analysis", "pattern", "design", "control", "memory", "network", "format",
             "system", "process", "update", "default", "number", "field", "method", "record")

REFUSAL = " I'm sorry, but I can't help with that."
