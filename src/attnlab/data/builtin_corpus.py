"""The built-in training corpus: synthetic children's stories from a small seeded grammar.

This text is synthetic. Templates write simple stories in the style of TinyStories (Eldan & Li 2023)
so that tiny character-level models can be trained offline; TinyStories is the real dataset and
is the better choice whenever it can be downloaded.

Each story introduces a named main character, a named friend, an object with a colour ("a red
kite") and a place, and refers back to them later ("Mia looked at her red kite"), so a model that
can attend to earlier text has something to find that a bigram model cannot.
"""

from __future__ import annotations

import random
import re

MIN_STORY_CHARS = 300
MAX_STORY_CHARS = 1500

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

GIRLS = (
    "Mia", "Lily", "Sara", "Emma", "Zoe", "Anna", "Lucy", "Ella", "Ruby", "Nora",
    "Maya", "Chloe", "Grace", "Ivy", "Rosa", "Hana", "Amara", "Priya", "Leila", "Kate",
)  # fmt: skip
BOYS = (
    "Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Finn", "Omar", "Theo", "Luca",
    "Noah", "Kai", "Hugo", "Ravi", "Felix", "Oscar", "Milo", "Jonah", "Eli", "Arlo",
)  # fmt: skip
NAMES = GIRLS + BOYS

_SHE = {"he": "she", "He": "She", "him": "her", "his": "her", "His": "Her", "child": "girl"}
_HE = {"he": "he", "He": "He", "him": "him", "his": "his", "His": "His", "child": "boy"}

COLOURS = (
    "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown",
    "black", "white", "gray", "gold", "silver", "bright red", "sky blue", "dark green",
)  # fmt: skip
QUALITIES = (
    "little", "big", "old", "new", "striped", "spotted", "shiny", "sparkly",
    "special", "lovely", "pretty", "fancy", "tiny", "funny",
)  # fmt: skip

# (noun, verb, verb -ing, where it is done, "hard" things break, "soft" things tear)
OBJECTS = (
    ("kite", "fly", "flying", "high above the trees", "soft"),
    ("ball", "bounce", "bouncing", "all over the yard", "hard"),
    ("boat", "sail", "sailing", "on the pond", "hard"),
    ("book", "read", "reading", "under a big tree", "soft"),
    ("drum", "play", "playing", "loud and fast", "hard"),
    ("teddy bear", "hug", "hugging", "tight at bedtime", "soft"),
    ("hat", "wear", "wearing", "on sunny days", "soft"),
    ("bike", "ride", "riding", "down the hill", "hard"),
    ("wagon", "pull", "pulling", "along the path", "hard"),
    ("train", "push", "pushing", "along its little track", "hard"),
    ("doll", "dress", "dressing", "in tiny clothes", "soft"),
    ("scarf", "wear", "wearing", "on cold days", "soft"),
    ("umbrella", "open", "opening", "when it rained", "hard"),
    ("bucket", "fill", "filling", "with sand and water", "hard"),
    ("shovel", "dig with", "digging with", "in the sand", "hard"),
    ("flute", "play", "playing", "for the birds", "hard"),
    ("whistle", "blow", "blowing", "as loud as a train", "hard"),
    ("truck", "push", "pushing", "through the mud", "hard"),
    ("car", "zoom", "zooming", "across the floor", "hard"),
    ("blanket", "carry", "carrying", "everywhere", "soft"),
    ("crown", "wear", "wearing", "to every party", "hard"),
    ("cape", "wear", "wearing", "while pretending to fly", "soft"),
    ("jump rope", "jump with", "jumping with", "all day long", "soft"),
    ("skateboard", "ride", "riding", "on the sidewalk", "hard"),
    ("sled", "ride", "riding", "down snowy hills", "hard"),
    ("lantern", "carry", "carrying", "in the dark", "hard"),
    ("notebook", "draw in", "drawing in", "every morning", "soft"),
    ("toy piano", "play", "playing", "every afternoon", "hard"),
    ("yo-yo", "spin", "spinning", "up and down", "hard"),
    ("guitar", "strum", "strumming", "by the window", "hard"),
    ("backpack", "carry", "carrying", "to school", "soft"),
    ("camera", "take pictures with", "taking pictures with", "all around town", "hard"),
    ("basket", "carry", "carrying", "to the market", "hard"),
    ("frisbee", "throw", "throwing", "across the field", "hard"),
    ("spinning top", "spin", "spinning", "on the kitchen floor", "hard"),
)

# (place, what it has)
PLACES = (
    ("park", "tall trees and a long slide"),
    ("beach", "soft sand and gentle waves"),
    ("garden", "bright flowers and buzzing bees"),
    ("forest", "tall pine trees and a small stream"),
    ("farm", "a red barn and lots of animals"),
    ("lake", "calm water and friendly ducks"),
    ("zoo", "lions, monkeys, and a big gray elephant"),
    ("playground", "swings and a big sandbox"),
    ("meadow", "tall grass and yellow flowers"),
    ("hill", "a big old oak tree at the top"),
    ("riverbank", "smooth stones and little fish"),
    ("pond", "green frogs and lily pads"),
    ("backyard", "a swing and a vegetable patch"),
    ("schoolyard", "a jungle gym and a hopscotch game"),
    ("orchard", "apple trees in long rows"),
    ("town square", "a fountain and a clock tower"),
    ("harbor", "fishing boats and noisy seagulls"),
    ("campsite", "tents and a crackling campfire"),
    ("island", "palm trees and white sand"),
    ("sunflower field", "sunflowers taller than a grown-up"),
    ("valley", "a winding river and green hills"),
    ("village green", "a duck pond and a wooden bench"),
)

FEARS = (
    "big barking dog", "dark cave", "tall slide", "wobbly old bridge", "deep pond",
    "noisy goose", "dark tunnel", "giant swing", "huge wave", "spooky old tree",
)  # fmt: skip
ANIMALS = (
    "dog", "puppy", "squirrel", "goat", "crow", "cat", "fox", "duck", "raccoon",
    "monkey", "goose", "rabbit", "parrot", "piglet", "pony",
)  # fmt: skip
# Too big for a plot where the object is thrown into a tree or carried off by an animal.
HEAVY = frozenset({"bike", "wagon", "skateboard", "sled", "toy piano", "guitar", "truck", "drum"})
PROJECTS = ("fort", "sandcastle", "tower of sticks", "birdhouse", "little bridge", "raft", "secret den")

# Words drawn afresh for every sentence that uses them; "{hide2}" draws from "hide" too.
POOLS: dict[str, tuple[str, ...]] = {
    "trait": ("kind", "curious", "brave", "shy", "cheerful", "clever", "playful", "gentle",
              "funny", "happy", "friendly", "busy", "quiet", "lively"),
    "age": ("three", "four", "five", "six", "seven"),
    "home": ("house", "cottage", "blue house", "white house", "house with a red door",
             "flat above a bakery"),
    "town": ("town", "village", "town by the sea", "village near the hills", "town with many trees"),
    "relative": ("grandma", "grandpa", "aunt", "uncle", "big sister", "big brother"),
    "daytime": ("morning", "sunny morning", "bright afternoon", "warm day", "windy day",
                "sunny day", "cool morning", "quiet afternoon", "spring day"),
    "sky": ("blue", "bright and clear", "full of fluffy clouds", "pink and orange"),
    "nice": ("nice", "cool", "pretty", "great", "lovely", "wonderful"),
    "happy": ("happy", "glad", "excited", "cheerful", "joyful"),
    "sad": ("sad", "upset", "worried", "unhappy", "gloomy"),
    "hide": ("bench", "bush", "tree", "rock", "slide", "log", "table", "fence", "wooden box",
             "big stone"),
    "side": ("look at a butterfly", "pick some flowers", "watch the ducks", "get a drink of water",
             "chase a bubble", "look at the clouds", "say hello to a puppy", "climb a little hill"),
    "activity": ("played tag", "sang silly songs", "looked for bugs", "jumped in the leaves",
                 "counted the clouds", "played hide and seek", "built a little fort",
                 "raced to the big tree", "shared a snack", "drew pictures in the dirt",
                 "rolled down the grass"),
    "indoor": ("built a fort with pillows", "drew pictures", "drank warm milk", "read a story",
               "played a board game", "made paper boats", "baked cookies"),
    "snack": ("apple slices", "cookies", "crackers", "grapes", "carrots", "berries", "cheese"),
    "flowers": ("daisies", "tulips", "sunflowers", "wild roses", "bluebells", "buttercups"),
    "picnic": ("sandwiches and juice", "apples and cheese", "warm muffins", "cookies and milk",
               "berries and bread"),
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Templates. A paragraph is a tuple of slots; a slot is a tuple of alternative sentences, one of
# which is picked ("" means the slot may be left out).
# ---------------------------------------------------------------------------------------------

OPENING = (
    (
        "Once upon a time, there was a {trait} little {child} named {name}.",
        "Once upon a time, there was a {child} called {name}.",
        "There once was a {trait} {child} named {name}. {He} was {age} years old.",
        "{name} was a {trait} {child} who lived in a small {home}.",
        "In a little {town}, there lived a {trait} {child} named {name}.",
        "{name} was {age} years old, and {he} loved to play outside.",
        "Once there was a {child} named {name} who was very {trait}.",
    ),
    (
        "{name} had {a_obj}. {He} loved it more than anything.",
        "{His} favorite toy was {a_obj}.",
        "{His} {relative} gave {him} {a_obj} for {his} birthday.",
        "{name} had {a_obj} that {he} took everywhere.",
        "Every day, {name} played with {his} {obj}.",
    ),
    (
        "{He} liked to {verb} it {where}.",
        "{name} liked {ving} it {where} best of all.",
        "",
    ),
    (
        "One {daytime}, {name} took {his} {obj} to the {place}.",
        "One day, {name} and {his} {parent} went to the {place}. {He} brought {his} {obj}.",
        "One {daytime}, {name} went to the {place} with {his} {obj}.",
        "{name} wanted to {verb} {his} {noun} at the {place}, so {he} went there after breakfast.",
    ),
    (
        "The {place} had {feature}.",
        "{name} loved the {place} because it had {feature}.",
        "The sun was warm, and the sky was {sky}.",
        "",
    ),
)

MEET_GREET = (
    (
        "At the {place}, {name} saw {his} friend {friend}.",
        "There {name} met a {fchild} named {friend}.",
        "Soon {his} best friend {friend} came to the {place} too.",
        "{name} saw {friend} by the {hide}. {friend} was {his} best friend.",
    ),
    (
        '"Hi, {name}!" said {friend}. "What a {nice} {noun}!"',
        '{friend} waved. "Hello, {name}! Can I play with you?" {fhe} asked.',
        '"Hello, {friend}!" said {name}. "Look at my {obj}!"',
        "{friend} smiled at {name} and ran over to say hello.",
    ),
)

MEET_PLAY = (
    (
        "{name} and {friend} took turns {ving} the {obj}.",
        "The two friends {activity}.",
        "{name} showed {friend} how to {verb} the {noun}.",
        "They played together all morning.",
        "",
    ),
    (
        "They laughed and had lots of fun.",
        "{friend} thought the {obj} was the best toy ever.",
        "",
    ),
)

# Each plot: how the friend is met, the problem, the talk about it, the fix, and morals.
PLOTS: dict[str, dict[str, tuple]] = {
    "lost": {
        "problem": (
            (
                "After a while, {name} put {his} {obj} down on the grass and ran off to {side}.",
                "{name} put the {noun} next to the {hide} and went to {side}.",
                "Then {name} left {his} {obj} by the {hide} to {side}.",
            ),
            (
                "When {he} came back, the {noun} was gone!",
                "When {name} came back, {his} {obj} was not there.",
                "But when {he} turned around, the {noun} was gone.",
            ),
            (
                "{name} looked behind the {hide} and under the {hide2}, but {he} could not find it.",
                "{He} looked everywhere, but the {noun} was nowhere to be seen.",
            ),
            ("{name} felt {sad}.", "{name} sat down and began to cry.", ""),
        ),
        "talk": (
            (
                '{friend} saw {name} and asked, "What is wrong, {name}?"',
                '"Why are you {sad}, {name}?" asked {friend}.',
                '{friend} ran over. "{name}, what happened?" {fhe} asked.',
            ),
            (
                '"I lost my {obj}," said {name}.',
                '"My {obj} is gone!" cried {name}. "I can\'t find it anywhere."',
                '"I can\'t find my {noun}," said {name} sadly.',
            ),
            (
                '"Don\'t worry," said {friend}. "I will help you look."',
                '"Let\'s look for it together," said {friend}.',
                '{friend} gave {name} a hug. "We will find it," {fhe} said.',
            ),
        ),
        "fix": (
            (
                "{name} and {friend} looked all over the {place}.",
                "The two friends searched the whole {place}.",
                "They looked near the {hide} and behind the {hide2}.",
            ),
            (
                "At last, {friend} saw something {colour} under the {hide}. It was the {noun}!",
                "At last, {friend} found the {obj} under the {hide}.",
                "Then {name} saw something {colour} behind the {hide}. It was {his} {noun}!",
            ),
            ('"Here it is!" shouted {friend}.', '"I found it!" said {friend}.', ""),
            (
                '{name} hugged {his} {obj} and said, "Thank you, {friend}!"',
                '{name} was so {happy}. "Thank you for helping me, {friend}," {he} said.',
                "{name} held {his} {obj} tight and smiled at {friend}.",
            ),
        ),
        "moral": (
            "good friends help each other",
            "it is important to keep your things safe",
            "a friend can make a hard day better",
        ),
    },
    "stuck": {
        "problem": (
            (
                "{name} threw the {noun} up high to see how far it would go.",
                "{name} tossed {his} {obj} up into the air.",
                "Suddenly, a big gust of wind came.",
            ),
            (
                "Oh no! The {obj} got stuck in a tall tree.",
                "The wind blew the {noun} into the top of a tall tree.",
                "The {obj} landed on a high branch and got stuck.",
            ),
            (
                "{name} jumped and jumped, but {he} could not reach it.",
                "{name} tried to reach it, but {he} was too small.",
                "{He} stood on {his} toes, but the branch was too high.",
            ),
        ),
        "talk": (
            ('"Help! My {noun} is stuck!" called {name}.', '"Oh no, my {obj}!" cried {name}.'),
            (
                '{friend} came running. "I have an idea," {fhe} said.',
                '{friend} looked up at the tree. "Let\'s get it down together," {fhe} said.',
                '"Don\'t be {sad}, {name}," said {friend}. "We can get it."',
            ),
            ('"How?" asked {name}.', '"Really?" asked {name}.', ""),
        ),
        "fix": (
            (
                "{friend} ran to get a long stick.",
                "{friend} asked {fhis} {relative} for a ladder.",
                "{friend} helped {name} climb onto a big rock.",
                "{name} and {friend} shook the tree as hard as they could.",
            ),
            ("They tried and tried.", "It was hard work, but they did not give up.", ""),
            (
                "At last, the {obj} fell down into the soft grass.",
                "Soon the {noun} came down, and {name} caught it.",
                "Then the {obj} dropped down, right into {name}'s hands.",
            ),
            (
                '"We did it!" shouted {name} and {friend}.',
                '{name} smiled. "Thank you, {friend}! You are a good friend."',
                "{name} and {friend} cheered and danced around the tree.",
            ),
        ),
        "moral": (
            "working together makes hard things easy",
            "you should never give up",
            "friends are there to help you",
        ),
    },
    "broken": {
        "problem": (
            (
                "{name} ran fast with {his} {obj}.",
                "{name} was busy {ving} {his} {obj}.",
                "{name} was playing with {his} {obj} near the {hide}.",
            ),
            (
                "Then {he} tripped on a rock and fell down.",
                "Suddenly, the {noun} slipped and fell.",
                "Then {he} dropped it on the hard ground.",
            ),
            ("The {noun} {broke}!", "When {name} picked it up, {he} saw that the {noun} was {broken}."),
            ("{name} felt very {sad}.", "Tears rolled down {name}'s face.", ""),
        ),
        "talk": (
            ('"My {obj} is {broken}!" cried {name}.', '"Oh no," said {name}. "Now I can\'t {verb} it."'),
            (
                '{friend} sat down next to {him}. "Maybe we can fix it," {fhe} said.',
                '"My {relative} is good at fixing things," said {friend}.',
                '"Don\'t cry, {name}," said {friend}. "I know what to do."',
            ),
            ('"Do you think so?" asked {name}.', ""),
        ),
        "fix": (
            ("{name} and {friend} took the {noun} home.", "They carried the {obj} back home carefully."),
            (
                "{name}'s {parent} helped them {mend}.",
                "Together they {mended}.",
                "{friend} helped {name} {mend}.",
            ),
            (
                "Soon the {obj} was as good as new.",
                "The {noun} was not perfect, but it worked again.",
                "When they were done, the {noun} looked almost new.",
            ),
            (
                '{name} was so {happy}. "Thank you, {friend}!" {he} said.',
                '{name} hugged {friend}. "You are the best," {he} said.',
            ),
        ),
        "moral": ("broken things can often be fixed with a little help", "it is good to be careful"),
    },
    "share": {
        "meet": MEET_GREET,
        "problem": (
            (
                '{friend} looked at the {obj}. "Can I {verb} it too?" {fhe} asked.',
                "{friend} wanted to play with the {obj} too.",
            ),
            (
                "But {name} did not want to share.",
                '{name} held the {noun} tight. "No, it is mine," {he} said.',
            ),
            ("{friend} felt {sad} and walked away.", "{friend} looked {sad} and sat down alone by the {hide}."),
            ("{name} played alone, but it was not much fun.", "Soon {name} did not feel very good.", ""),
        ),
        "talk": (
            ("{name} thought about {friend}.", "{name} looked at {his} {obj} and then at {friend}."),
            (
                '{He} walked over to {friend}. "I am sorry," {he} said. "Do you want to {verb} my {noun}?"',
                '"{friend}, I am sorry," said {name}. "We can share my {obj}."',
            ),
            ('{friend} smiled a big smile. "Yes, please!" {fhe} said.', '"Thank you, {name}!" said {friend}.'),
        ),
        "fix": (
            ("They took turns {ving} the {obj}.", "{name} and {friend} took turns with the {noun}."),
            (
                "Playing together was much more fun than playing alone.",
                "They laughed and played until the sun went down.",
                "",
            ),
            ("{name} felt warm and {happy} inside.", "{name} was glad {he} had shared."),
        ),
        "moral": (
            "sharing makes everyone happy",
            "it is more fun to play together",
            "being kind is better than being selfish",
        ),
    },
    "scared": {
        "problem": (
            ("Near the {hide}, {name} saw a {fear}.", "At the {place}, there was a {fear}."),
            ("{name} was scared of the {fear}.", "The {fear} made {name} feel scared."),
            (
                "{He} hid behind a tree and held {his} {obj} tight.",
                "{His} legs shook, and {he} held on to {his} {obj}.",
            ),
        ),
        "talk": (
            ("{friend} saw that {name} was scared.", "{friend} came and stood next to {name}."),
            ('"Are you okay, {name}?" {fhe} asked.', '"What is wrong?" asked {friend}.'),
            ('"I am scared of the {fear}," said {name} quietly.', '"The {fear} is too scary," said {name}.'),
            (
                '"I will stay with you," said {friend}. "We can be brave together."',
                '"Hold my hand," said {friend}. "You are braver than you think."',
            ),
        ),
        "fix": (
            ("{name} took a deep breath.", "{name} held {friend}'s hand."),
            ("Step by step, they went closer to the {fear}.", "Together they walked up to the {fear}."),
            ("It was not so scary after all.", "The {fear} was not scary at all. It was fun!"),
            (
                '{name} laughed. "I was brave!" {he} said.',
                "{name} felt proud. {He} was not scared of the {fear} anymore.",
            ),
        ),
        "moral": ("being brave is easier with a friend", "things are often less scary than they look"),
    },
    "rain": {
        "problem": (
            ("Suddenly, big dark clouds filled the sky.", "Then the sky turned gray."),
            ("Drip, drop! It started to rain.", "Soon big drops of rain began to fall."),
            (
                "{name} held {his} {obj} close to keep it dry.",
                "{name} and {friend} ran under a tree with the {obj}.",
            ),
            ("{name} was {sad}. {He} wanted to keep playing.", ""),
        ),
        "talk": (
            ('"Now we can\'t play," said {name} sadly.', '"The rain ruined our day," said {name}.'),
            (
                '"We can still have fun," said {friend}. "Let\'s go inside and play."',
                '{friend} smiled. "Let\'s go to my house. We can play there."',
            ),
            ('"Okay," said {name}.', ""),
        ),
        "fix": (
            ("They ran to {friend}'s house.", "The two friends ran home, splashing in the puddles."),
            ("Inside, they {indoor}.", "They {indoor} while the rain fell outside."),
            ("{name} kept {his} {obj} safe and dry.", "{name} put {his} {obj} on the table to dry.", ""),
            ("Soon the rain stopped, and a rainbow came out.", "After a while, the sun came out again."),
            ('"Look!" said {name}. "Now we can go back to the {place}!"', ""),
        ),
        "moral": ("a rainy day can be fun too", "you can have fun anywhere with a good friend"),
    },
    "animal": {
        "problem": (
            ("Suddenly, a {animal} ran out from behind the {hide}.", "Just then, a little {animal} came by."),
            ("It grabbed the {obj} and ran away!", "The {animal} took the {noun} and ran off with it!"),
            ('"Hey, come back!" shouted {name}.', '"Stop! That is my {noun}!" cried {name}.'),
        ),
        "talk": (
            (
                "{name} and {friend} ran after the {animal}.",
                "{friend} and {name} chased the {animal} across the {place}.",
            ),
            ('"It is too fast!" said {name}.', '"Where did it go?" asked {name}.'),
            (
                '"I have an idea," said {friend}. "Maybe the {animal} is hungry."',
                '"Wait," said {friend}. "Maybe it just wants to play."',
            ),
        ),
        "fix": (
            ("{friend} held out some {snack}.", "{name} sat down quietly and waited."),
            ("The {animal} came back slowly.", "After a while, the {animal} walked back to them."),
            ("It dropped the {obj} at {name}'s feet.", "It put the {noun} down and looked at them."),
            (
                "{name} laughed and patted the {animal}.",
                '{name} picked up {his} {obj}. "Thank you, little {animal}," {he} said.',
            ),
            ("From then on, the {animal} came to play with them every day.", ""),
        ),
        "moral": ("being calm and kind works better than being angry", "animals can be friends too"),
    },
    "new friend": {
        "meet": (
            (
                "At the {place}, {name} saw a {fchild} sitting alone on a bench.",
                "Near the {hide}, {name} saw a {fchild} who looked {sad}.",
            ),
            (
                '{name} walked over. "Hi, I am {name}. What is your name?" {he} asked.',
                '"Hello," said {name}. "My name is {name}. What is yours?"',
            ),
            (
                '"I am {friend}," said the {fchild}. "I am new here."',
                '"My name is {friend}," the {fchild} said softly. "We just moved here."',
            ),
        ),
        "problem": (
            ("{friend} did not know anyone in town.", "{friend} had no friends to play with yet."),
            ("{fHe} missed {fhis} old home.", "{fHe} felt shy and a little lonely.", ""),
        ),
        "talk": (
            (
                '"Do you want to play with my {obj}?" asked {name}.',
                '"You can play with me," said {name}. "I have {a_obj}."',
            ),
            ('{friend}\'s eyes lit up. "Really?" {fhe} asked.', '{friend} smiled. "Yes, please!"'),
            ('"Of course," said {name}.', ""),
        ),
        "fix": (
            (
                "{name} showed {friend} how to {verb} the {noun}.",
                "{name} and {friend} took turns {ving} the {obj}.",
            ),
            ("Then they {activity}.", "Later, they {activity}."),
            ("{friend} was not lonely anymore.", "{friend} laughed and laughed."),
            ('When it was time to go home, {friend} said, "Thank you, {name}. You are my first friend here."', ""),
        ),
        "moral": ("a kind word can make a new friend", "everyone needs a friend"),
    },
    "gift": {
        "problem": (
            ("Tomorrow was {Parent}'s birthday.", "It was almost {Parent}'s birthday."),
            (
                "{name} wanted to give {Parent} a special present.",
                "{name} wanted to make {Parent} happy, but {he} had no present.",
            ),
            ("{He} did not have any money to buy one.", "{He} did not know what to give."),
        ),
        "talk": (
            (
                '"What should I give {Parent}?" {name} asked {friend}.',
                '{name} told {friend} about the birthday. "I have no present," {he} said.',
            ),
            (
                '{friend} thought for a moment. "Let\'s make something," {fhe} said.',
                '"We can pick flowers and make a card," said {friend}.',
            ),
            ('"That is a great idea!" said {name}.', ""),
        ),
        "fix": (
            ("They picked {flowers} at the {place}.", "The two friends gathered {flowers} and pretty leaves."),
            (
                "{name} drew a picture of {his} {obj} on a card.",
                '{name} wrote "Happy Birthday" on a card with {a_colour} crayon.',
            ),
            (
                "The next day, {name} gave the flowers and the card to {Parent}.",
                "In the morning, {name} gave {Parent} the present.",
            ),
            (
                '{Parent} smiled and gave {name} a big hug. "This is the best present ever," {phe} said.',
                "{Parent} put the flowers in a vase and hung the card on the wall.",
            ),
        ),
        "moral": ("the best gifts come from the heart", "a present you make yourself is very special"),
    },
    "build": {
        "problem": (
            ("{name} and {friend} wanted to build a {project}.", "The two friends decided to build a {project}."),
            ("They worked hard all morning.", "They found sticks, stones, and leaves."),
            ("But the {project} kept falling down.", "Then the wind blew, and the {project} fell over."),
            ("{name} felt {sad}.", '{friend} kicked a stone. "This is too hard," {fhe} said.'),
        ),
        "talk": (
            (
                '"Let\'s not give up," said {name}.',
                '"We can try again," said {name}. "This time we can make it stronger."',
            ),
            ('"How?" asked {friend}.', '"Okay," said {friend}. "Let\'s try one more time."'),
            (
                '"We can put big rocks at the bottom," said {name}.',
                '"Let\'s work slowly and carefully," said {name}.',
                "",
            ),
        ),
        "fix": (
            ("This time they built the {project} slowly and carefully.", "They tried again, one piece at a time."),
            ("At last, the {project} stood tall and strong.", "Soon the {project} was done, and it did not fall."),
            ("{name} put {his} {obj} on top of the {project}.", "{name} put {his} {obj} inside the {project}."),
            ('"It is perfect!" said {friend}.', "The two friends cheered."),
        ),
        "moral": ("if you keep trying, you can do hard things", "teamwork makes big jobs easier"),
    },
}

_LIGHT_PLOTS = tuple(sorted(PLOTS))
_HEAVY_PLOTS = tuple(p for p in _LIGHT_PLOTS if p not in ("stuck", "animal"))

PICNIC = (
    (
        "Later, {name}'s {parent} brought {picnic} for everyone.",
        "At noon, {friend}'s {relative} came with {picnic}.",
    ),
    ("They sat on the grass and ate together.", "Everyone ate and talked and laughed.", ""),
)

ENDING = (
    (
        "That night, {name} told {his} {parent} all about the {place}.",
        "When {name} got home, {he} told {Parent} about {his} day with {friend}.",
        "That evening, {name} and {friend} walked home together.",
    ),
    (
        "{name} learned that {moral}.",
        "That day, {name} learned that {moral}.",
        '{Parent} smiled and said, "{Moral}."',
    ),
    (
        "The next day, {name} and {friend} went back to the {place} to play with the {obj} again.",
        "After that, {name} and {friend} went to the {place} together every week.",
        "From that day on, {name} and {friend} were best friends.",
        "",
    ),
    (
        "At bedtime, {name} put {his} {obj} next to {his} bed and fell asleep with a smile.",
        "{name} smiled. It was the best day ever.",
        "And {name} always kept {his} {obj} close.",
        "",
    ),
)


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


def _a(phrase: str) -> str:
    """The phrase with its indefinite article: "a red kite", "an orange kite"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


class _Fill(dict):
    """Story words for one sentence; a missing key draws a fresh word from POOLS."""

    def __init__(self, words: dict[str, str], rng: random.Random) -> None:
        super().__init__(words)
        self.rng = rng

    def __missing__(self, key: str) -> str:
        base = key.rstrip("0123456789")
        used = {v for k, v in self.items() if k.rstrip("0123456789") == base}
        value = self.rng.choice(POOLS[base])
        while value in used:  # "behind the bench and under the rock", not "... the bench" twice
            value = self.rng.choice(POOLS[base])
        self[key] = value
        return value


def _cast(rng: random.Random) -> dict[str, str]:
    """The fixed words of one story: who, with what, where, and what went wrong."""
    girl = rng.random() < 0.5
    name = rng.choice(GIRLS if girl else BOYS)
    friend_girl = rng.random() < 0.5
    friend = name
    while friend == name:
        friend = rng.choice(GIRLS if friend_girl else BOYS)
    noun, verb, ving, where, kind = rng.choice(OBJECTS)
    colour = rng.choice(COLOURS)
    adjective = f"{rng.choice(QUALITIES)} {colour}" if rng.random() < 0.5 else colour
    place, feature = rng.choice(PLACES)
    mom = rng.random() < 0.5
    words = {
        "name": name,
        "friend": friend,
        "noun": noun,
        "obj": f"{adjective} {noun}",
        "a_obj": _a(f"{adjective} {noun}"),
        "colour": colour,
        "a_colour": _a(colour),
        "verb": verb,
        "ving": ving,
        "where": where,
        "broke": "broke" if kind == "hard" else "tore",
        "broken": "broken" if kind == "hard" else "torn",
        "mend": "glue the pieces back together" if kind == "hard" else "sew up the hole",
        "mended": "glued the pieces back together" if kind == "hard" else "sewed up the hole",
        "place": place,
        "feature": feature,
        "parent": "mom" if mom else "dad",
        "Parent": "Mom" if mom else "Dad",
        "phe": "she" if mom else "he",
        "fear": rng.choice(FEARS),
        "animal": rng.choice(ANIMALS),
        "project": rng.choice(PROJECTS),
    }
    words.update(_SHE if girl else _HE)
    words.update({"f" + k: v for k, v in (_SHE if friend_girl else _HE).items()})
    return words


def _paragraph(slots: tuple[tuple[str, ...], ...], words: dict[str, str], rng: random.Random) -> str:
    sentences = (rng.choice(slot) for slot in slots)
    return " ".join(s.format_map(_Fill(words, rng)) for s in sentences if s)


def _count(word: str, text: str) -> int:
    return len(re.findall(rf"\b{re.escape(word)}\b", text))


def _story(rng: random.Random) -> tuple[str, dict[str, str]]:
    """One story and its fixed words (name, friend, obj, place, ...), drawn from rng.

    Drafts are redrawn until the story is 300-1500 characters long and names its main character
    at least 3 times and its friend, object and place at least twice each.
    """
    while True:
        words = _cast(rng)
        plots = _LIGHT_PLOTS if words["noun"] not in HEAVY else _HEAVY_PLOTS
        plot = PLOTS[rng.choice(plots)]
        moral = rng.choice(plot["moral"])
        words["moral"] = moral
        words["Moral"] = moral[0].upper() + moral[1:]
        parts = [
            OPENING,
            plot.get("meet", MEET_GREET + MEET_PLAY),
            *([PICNIC] if rng.random() < 0.25 else []),
            plot["problem"],
            plot["talk"],
            plot["fix"],
            ENDING,
        ]
        text = "\n".join(_paragraph(slots, words, rng) for slots in parts)
        if (
            MIN_STORY_CHARS <= len(text) <= MAX_STORY_CHARS
            and _count(words["name"], text) >= 3
            and _count(words["friend"], text) >= 2
            and text.count(words["obj"]) >= 2
            and text.count(words["place"]) >= 2
        ):
            return text, words


def builtin_stories(seed: int = 0, n_chars: int = 1_300_000) -> list[str]:
    """Stories (no separators), deterministic for a seed, totalling at least n_chars characters."""
    rng = random.Random(seed)
    stories: list[str] = []
    total = 0
    while total < n_chars:
        text, _ = _story(rng)
        stories.append(text)
        total += len(text)
    return stories
