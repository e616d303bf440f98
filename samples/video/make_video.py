"""Builds the synthetic "video" fixture: items.jsonl (6 videos as 8-d frame vectors with captions) and pairs.jsonl
(60 text/video training pairs for ``foveal train xpool --pairs``). No video model runs here: each of the 8 dimensions
stands for a concept, a frame is the sum of the concepts on screen plus a little noise, and a text vector is the sum
of one or two concepts of its video plus noise (what a CLIP-like text tower would give for "a dog on a beach").

    python samples/video/make_video.py      # seeded: rewrites the same files
"""
import json
import random
from pathlib import Path

CONCEPTS = ["dog", "cat", "beach", "snow", "car", "city", "night", "music"]
VIDEOS = [
    ("v-dog-beach", "Dog runs on the beach", [["dog"], ["dog", "beach"], ["beach"], ["beach"]]),
    ("v-cat-snow", "Cat in the snow", [["cat"], ["cat", "snow"], ["snow"]]),
    ("v-city-night", "City traffic at night", [["car", "city"], ["city", "night"], ["car", "night"], ["night"]]),
    ("v-concert", "Concert in the city", [["music"], ["music", "city"], ["city"]]),
    ("v-pets", "Dog and cat play", [["dog"], ["cat"], ["dog", "cat"]]),
    ("v-snowy-beach", "Snow on the beach", [["snow"], ["beach", "snow"], ["beach"]]),
]
HERE = Path(__file__).resolve().parent
rng = random.Random(11)


def vector(concepts, noise=0.05):
    return [round((1.0 if c in concepts else 0.0) + rng.gauss(0, noise), 3) for c in CONCEPTS]


with open(HERE / "items.jsonl", "w", encoding="utf-8") as out:
    for vid, caption, scenes in VIDEOS:
        out.write(json.dumps({"_id": vid, "title": caption, "vectors": [vector(s) for s in scenes],
                              "metadata": {"kind": "synthetic-video"}}) + "\n")
with open(HERE / "pairs.jsonl", "w", encoding="utf-8") as out:
    for vid, caption, scenes in VIDEOS:
        frames = [vector(s) for s in scenes]
        seen = sorted({c for s in scenes for c in s})
        for _ in range(10):
            words = rng.sample(seen, k=min(len(seen), rng.choice([1, 2])))
            out.write(json.dumps({"item": vid, "vector": vector(words, 0.1), "vectors": frames}) + "\n")
