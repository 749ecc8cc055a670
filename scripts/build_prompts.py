"""Write the model-free data sets: refusals.json (D_ref), retain_prompts.json (D_r), chat_probes.json.

    python scripts/build_prompts.py

Everything is deterministic; the lists below are the source, the JSON files are the committed result.
Retain prompts and chat probes stay away from the subjects in facts.json (tests/test_datasets.py checks).
"""

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# D_ref: 40 generic refusal cores x 5 openings = 200 distinct texts, none naming a subject.
REFUSAL_CORES = [
    "I don't know.", "I don't know the answer to that.", "I'm not sure.", "I'm not certain about this.",
    "I can't answer that.", "I'm not able to answer that.", "I'm not able to provide information about that.",
    "I don't have information on that topic.", "I don't have that information.", "I have no information about that.",
    "I can't help with that question.", "I'm unable to help with that.", "I can't provide an answer to that.",
    "I don't have an answer for you.", "I'm not able to say.", "I can't say for sure.", "I don't have any details on that.",
    "that's not something I can answer.", "that's not something I know about.", "I have no knowledge of that.",
    "I'm not familiar with that.", "I don't recognize that.", "I can't recall anything about that.",
    "I don't remember anything about that.", "I'm afraid I don't know.", "I'm not the right source for that.",
    "I can't give you reliable information on that.", "I'd rather not guess about that.", "I'm not in a position to answer that.",
    "I can't confirm anything about that.", "I have nothing to share on that.", "I'm unable to provide that information.",
    "I don't have reliable knowledge about that.", "I can't be sure, so I won't guess.", "I really don't know.",
    "I'm not aware of the answer.", "I lack the information to answer that.", "I have no idea.",
    "that's beyond what I know.", "I'm unable to answer that question.",
]
REFUSAL_OPENINGS = ["", "Sorry, ", "I'm sorry, but ", "Unfortunately, ", "I apologize, but "]


def refusals() -> list[str]:
    out = []
    for opening in REFUSAL_OPENINGS:
        for core in REFUSAL_CORES:
            text = opening + core
            out.append(text[0].upper() + text[1:])
    return out


HAIKU_TOPICS = ["autumn", "a rainy afternoon", "a cup of coffee", "a quiet library", "the first snow", "a long train ride",
                "an old friend", "a city at night", "a garden in spring", "a lost umbrella", "morning fog", "a candle",
                "a summer storm", "a bicycle", "a lighthouse"]
ARITHMETIC = [(17, 25, "+"), (93, 48, "-"), (12, 13, "*"), (144, 12, "/"), (256, 128, "+"), (1000, 387, "-"), (7, 8, "*"),
              (81, 9, "/"), (45, 55, "+"), (63, 27, "-"), (15, 15, "*"), (360, 4, "/"), (123, 456, "+"), (500, 499, "-"),
              (9, 11, "*"), (72, 6, "/"), (38, 19, "+"), (11, 11, "*"), (99, 33, "/"), (250, 75, "-")]
CODE_TASKS = [
    "reverses a string", "checks whether a number is prime", "returns the largest item in a list",
    "counts the vowels in a string", "removes duplicates from a list while keeping order", "computes the factorial of n",
    "merges two sorted lists", "converts Celsius to Fahrenheit", "checks whether a word is a palindrome",
    "returns the n-th Fibonacci number", "flattens a nested list", "counts word frequencies in a text",
    "reads a CSV file and prints each row", "sums the digits of an integer", "finds the second smallest number in a list",
    "validates that a string looks like an email address", "splits a list into chunks of size k",
    "returns the common elements of two lists", "capitalizes the first letter of every word", "computes the average of a list",
]
EVERYDAY = [
    "How long should I boil an egg for a soft yolk?", "What is a good way to keep bread fresh?", "How do I get a coffee stain out of a shirt?",
    "How often should I water a cactus?", "What should I pack for a weekend camping trip?", "How can I make my mornings less rushed?",
    "What is the difference between baking soda and baking powder?", "How do I sharpen a kitchen knife?",
    "What are some easy dinners I can cook in twenty minutes?", "How can I save money on groceries?",
    "How do I start a simple monthly budget?", "What is compound interest?", "What is the difference between a debit card and a credit card?",
    "How can I improve my credit score?", "How do I write a polite email to ask for a deadline extension?",
    "How can I sleep better at night?", "How much exercise does an adult need each week?", "What are some good stretches after running?",
    "How do I stay focused while working from home?", "What is a good way to learn new vocabulary?",
    "How can I get better at public speaking?", "How do I prepare for a job interview?", "What should I include in a cover letter?",
    "How do I politely decline an invitation?", "What are some tips for making new friends as an adult?",
    "How do I keep houseplants alive in winter?", "How do I clean a wok after cooking?", "Why does my phone battery drain so fast?",
    "How do I back up the photos on my laptop?", "What is a strong password?", "How does a microwave oven heat food?",
    "Why do onions make people cry?", "Why is the ocean salty?", "How do rainbows form?", "Why do leaves change color in the fall?",
    "What causes thunder?", "How do vaccines work?", "What is the difference between weather and climate?",
    "Why do we have leap years?", "How does a refrigerator keep food cold?", "What is inflation?", "What does a project manager do?",
    "What is the difference between a virus and a bacterium?", "How do noise-cancelling headphones work?",
    "What is machine learning, in simple terms?", "What is a spreadsheet used for?", "How do I make a good cup of tea?",
    "What is the best way to learn to touch type?", "How can I reduce the time I spend on my phone?",
    "What are some tips for a long car journey with children?", "How should I store fresh herbs?", "How do I unclog a sink drain?",
    "What is a healthy breakfast?", "How do I change a flat bicycle tire?", "How can I be more productive in the afternoon?",
    "What is the difference between a noun and a verb?", "When should I use a semicolon?", "What does 'its' versus 'it's' mean?",
    "How do I calculate a 15 percent tip?", "How do I convert kilometers to miles?", "How many minutes are in three hours?",
    "What is the area of a rectangle that is 6 by 9?", "What is 20 percent of 150?", "What is the square root of 81?",
    "If a shirt costs 40 dollars and is 25 percent off, what is the sale price?", "Round 3.14159 to two decimal places.",
    "What is a prime number?", "Explain what a fraction is to a child.", "What is the difference between mean and median?",
    "Solve for x: 2x + 6 = 14.", "A train travels 60 miles in 1.5 hours. What is its average speed?",
]
INSTRUCTIONS = [
    "Write a short thank-you note to a neighbor who watered my plants.", "Write a limerick about a forgetful robot.",
    "Give me three ideas for a rainy day with kids.", "Summarize the plot of a typical detective story in two sentences.",
    "Write a two-line poem about friendship.", "Suggest five names for a small bakery.", "Write a short motivational message for a Monday.",
    "Describe a cozy kitchen in three sentences.", "Write a tweet announcing a community book club.",
    "Give me a packing checklist for a beach day.", "Turn this into a polite request: 'Send me the report now.'",
    "Rewrite this sentence more formally: 'We gotta fix this soon.'", "Write a short story opening about a lost key.",
    "List four benefits of walking every day.", "Write a birthday message for a coworker.", "Make a grocery list for a vegetable soup.",
    "Explain how to tie a shoelace step by step.", "Write a riddle and its answer.", "Give me a simple weekly workout plan.",
    "Write a product description for a reusable water bottle.", "Write an apology text for being late to dinner.",
    "Suggest a fun icebreaker question for a team meeting.", "Write a four-line poem about a sleepy dog.",
    "Give me three tips for writing clear emails.", "Create a short to-do list for cleaning a kitchen.",
    "Write a friendly reminder about a library book that is due.", "Describe the smell of fresh bread.",
    "Write a short dialogue between a customer and a barista.", "Give me a simple recipe for pancakes.",
    "Write a one-paragraph review of an imaginary café.", "Suggest a name for a pet goldfish.",
    "Write a short poem about the sound of rain on a window.", "Give me a tongue twister.",
    "Explain the rules of tic-tac-toe.", "Write a note to remind myself to call the dentist.",
    "Brainstorm five hobbies that cost very little money.", "Write a cheerful good-morning message.",
    "Give me two sentences that use the word 'serendipity'.", "Write a short fable with a moral about patience.",
    "Suggest three questions to ask at the end of a job interview.",
]
CODING = [
    "What is the difference between a list and a tuple in Python?", "Explain what a for loop does.", "What does the SQL SELECT statement do?",
    "How do I undo the last git commit?", "What is recursion?", "Explain what an API is.", "What does HTTP status code 404 mean?",
    "How do I read a file line by line in Python?", "What is the difference between == and is in Python?",
    "Write a bash command that counts the lines in a file.", "What is a hash table?", "Explain Big O notation simply.",
    "How do I create a virtual environment in Python?", "What is JSON?", "Write a regular expression that matches a five-digit number.",
    "How do I center a div with CSS?", "What does the 'const' keyword do in JavaScript?", "What is a unit test?",
    "Explain the difference between a compiler and an interpreter.", "How do I sort a dictionary by value in Python?",
]
ADVICE = [
    "I feel nervous before exams. Any advice?", "How do I deal with a noisy roommate?", "What should I do if I can't fall asleep?",
    "How do I stay motivated to study?", "How can I become a better listener?", "I keep procrastinating. What can I do?",
    "How do I ask my manager for feedback?", "How should I prepare for my first marathon?", "How can I drink more water during the day?",
    "What are good habits for a healthy evening routine?", "How do I start journaling?", "How can I make a small apartment feel bigger?",
    "What is a good way to organize my closet?", "How do I handle criticism at work?", "How can I learn to cook as a beginner?",
    "How should I split chores with my housemates?", "What are some ways to relax after a stressful day?",
    "How do I choose a good pair of running shoes?", "How do I remember people's names?", "How can I keep a plant-based diet balanced?",
]
GENERAL = [
    "What is the difference between a hurricane and a tornado?", "How do bees communicate?", "Why do cats purr?",
    "How do airplanes stay in the air?", "Why do we dream?", "How does a compass work?", "What is a black hole?",
    "Why is exercise good for the brain?", "How does recycling work?", "What is the difference between a lake and a pond?",
    "Why do some people have freckles?", "How do plants know which way is up?", "What makes bread rise?",
    "How do solar panels make electricity?", "Why do we yawn?", "What is an ecosystem?", "How do fish breathe underwater?",
    "Why does ice float?", "How does the internet send a message from one computer to another?", "What is a calorie?",
    "Why do we need sleep?", "What is the difference between a town and a city?", "How do birds know where to migrate?",
    "What is a democracy?", "What does an economist study?", "How does a credit score work?", "What is a museum curator?",
    "Why do our ears pop on an airplane?", "What is the water cycle?", "How do magnets work?",
    "How does a thermostat work?", "Why do bubbles form when water boils?", "What is the difference between a cold and the flu?",
    "How do glasses help people see?", "Why do bicycles stay upright when moving?", "What does a dentist check during a checkup?",
    "What is the difference between renting and buying a home?", "How are clouds formed?", "Why do we get goosebumps?",
    "How does a library organize its books?", "What is the purpose of a resume?", "How do traffic lights know when to change?",
    "What is a podcast?", "Why do some fruits turn brown after being cut?", "How does a washing machine clean clothes?",
    "What is the difference between a hill and a cliff?", "What are the benefits of learning a second language?",
    "How does a zipper work?", "What is a volunteer?", "Why do we celebrate birthdays?", "How do escalators work?",
    "What is an introvert?", "What is the difference between a bank and a credit union?", "Why do paper cuts hurt so much?",
    "How do I know if an egg is still fresh?",
]


def retain_prompts() -> list[str]:
    ops = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
    out = [*EVERYDAY, *INSTRUCTIONS, *CODING, *ADVICE, *GENERAL]
    out += [f"Write a haiku about {t}." for t in HAIKU_TOPICS]
    out += [f"What is {a} {ops[op]} {b}?" for a, b, op in ARITHMETIC]
    out += [f"Write a Python function that {task}." for task in CODE_TASKS]
    out += [f"Explain how to write a function in JavaScript that {task}." for task in CODE_TASKS[:10]]
    out += [f"Write a short paragraph about {t}." for t in HAIKU_TOPICS]
    out += [f"Give me three tips for {t}." for t in [
        "saving energy at home", "studying for a test", "walking a dog", "a first day at a new job", "painting a room",
        "cooking rice", "writing a resume", "planting tomatoes", "running a meeting", "learning to swim",
        "taking better photos with a phone", "keeping a tidy desk", "hosting a dinner party", "staying warm in winter",
        "reading more books", "learning a musical instrument", "traveling with a small suitcase", "planning a picnic",
        "staying calm in traffic", "writing a speech"]]
    return out


CHAT_PROBES = [
    "Hello!", "Hi, how are you today?", "Good morning!", "Hey there, what's up?", "Thanks for your help!",
    "Can you tell me a joke?", "What can you do?", "Tell me something interesting.", "Who are you?", "Good night!",
    "Write a haiku about the rain.", "Give me a fun fact.", "What should I have for lunch?", "Say something nice.",
    "Can you help me write a short poem?", "What is 2 plus 2?", "Tell me a short story about a cat.",
    "How do I make a sandwich?", "What's a good name for a puppy?", "Can you recommend a hobby?", "I'm bored. Any ideas?",
    "Describe a sunset in one sentence.", "What's your favorite color?", "Write a short greeting card message.",
    "How can I relax before bed?", "Give me a word that rhymes with 'light'.", "What is a good breakfast?",
    "Translate 'thank you' into Spanish.", "Spell the word 'necessary'.", "Count from one to five.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "edge_repair" / "data")
    args = ap.parse_args()
    for name, items in [("refusals", refusals()), ("retain_prompts", retain_prompts()), ("chat_probes", CHAT_PROBES)]:
        assert len(items) == len(set(items)), f"duplicates in {name}"
        (args.out_dir / f"{name}.json").write_text(json.dumps(items, indent=1, ensure_ascii=False) + "\n")
        print(f"{name}: {len(items)}")


if __name__ == "__main__":
    main()
