"""Generate the shipped image probe set and the small visual question-answering task.

Every image is a 64 x 64 RGB PNG rendered with PIL: either one to four identical shapes (circle,
square or triangle, in one of six colours, placed in the cells of a 2 x 2 grid), or one coloured
digit. A lone shape sits on one side of the image (left, right, top or bottom). Backgrounds are
light and vary a little. Each image gets a caption and questions whose answers the image fixes:

* shapes: ``How many shapes are there?`` (``1``..``4``), ``What colour are the shapes?``,
  ``What shape are they?``, and for a lone shape ``Where is the shape?`` (side);
* digits: ``What digit is shown?`` (``0``..``9``) and ``What colour is the digit?``.

Run from the repository root::

    python data/make_images.py    # writes data/images/, image_probe.jsonl, image_task_*.jsonl

Outputs (paths inside the JSONL files are relative to the JSONL file):

``images/img-NNNN.png``
    240 images.
``image_probe.jsonl``
    ``{"id", "image", "text"}`` per image; ``text`` is the caption.
``image_task_train.jsonl`` / ``image_task_eval.jsonl``
    ``{"id", "image", "prompt", "answer"}``; the eval questions are about the last 40 images,
    which no training question shows. The prompt has no image placeholder; the model's processor
    adds it (:func:`repspace.models.processors.image_prompt`).

The output is deterministic (fixed seed, no dependence on hash randomisation).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SEED = 20261123
N_IMAGES = 240
N_EVAL_IMAGES = 40
SIZE = 64
DATA_DIR = Path(__file__).resolve().parent
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
           "yellow": (230, 200, 30), "purple": (140, 60, 180), "orange": (240, 130, 30)}
SHAPES = ("circle", "square", "triangle")
NUMBERS = ("one", "two", "three", "four")
SIDES = {"left": (4, 20), "right": (36, 20), "top": (20, 4), "bottom": (20, 36)}
CELLS = ((4, 4), (36, 4), (4, 36), (36, 36))
SHAPE_SIZE = 24


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, corner: tuple[int, int],
               colour: tuple[int, int, int]) -> None:
    """Draw ``shape`` filling the ``SHAPE_SIZE`` square whose top-left corner is ``corner``."""
    x, y = corner
    box = (x, y, x + SHAPE_SIZE - 1, y + SHAPE_SIZE - 1)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle((x + 2, y + 2, x + SHAPE_SIZE - 3, y + SHAPE_SIZE - 3), fill=colour)
    else:
        draw.polygon([(x + SHAPE_SIZE // 2, y), (x, y + SHAPE_SIZE - 1),
                      (x + SHAPE_SIZE - 1, y + SHAPE_SIZE - 1)], fill=colour)


def shapes_scene(rng: random.Random) -> tuple[Image.Image, str, list[tuple[str, str]]]:
    """One to four identical shapes: the image, its caption and its (question, answer) pairs."""
    count = rng.randint(1, 4)
    shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
    image = Image.new("RGB", (SIZE, SIZE), tuple(rng.randint(235, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    questions = [("How many shapes are there?", str(count)),
                 ("What colour are the shapes?", colour), ("What shape are they?", shape)]
    if count == 1:
        side = rng.choice(sorted(SIDES))
        draw_shape(draw, shape, SIDES[side], COLOURS[colour])
        caption = f"a {colour} {shape} on the {side}"
        questions.append(("Where is the shape?", side))
    else:
        for corner in rng.sample(CELLS, count):
            draw_shape(draw, shape, corner, COLOURS[colour])
        caption = f"{NUMBERS[count - 1]} {colour} {shape}s"
    return image, caption, questions


def digit_scene(rng: random.Random, font: ImageFont.FreeTypeFont) -> tuple[
        Image.Image, str, list[tuple[str, str]]]:
    """One coloured digit: the image, its caption and its (question, answer) pairs."""
    digit, colour = str(rng.randint(0, 9)), rng.choice(sorted(COLOURS))
    image = Image.new("RGB", (SIZE, SIZE), tuple(rng.randint(235, 255) for _ in range(3)))
    ImageDraw.Draw(image).text((SIZE // 2 + rng.randint(-6, 6), SIZE // 2 + rng.randint(-6, 6)),
                               digit, fill=COLOURS[colour], font=font, anchor="mm")
    return image, f"the digit {digit} in {colour}", [
        ("What digit is shown?", digit), ("What colour is the digit?", colour)]


def main() -> None:
    """Write the images and the three JSONL files into ``data/``."""
    rng = random.Random(SEED)
    font = ImageFont.load_default(size=44)
    folder = DATA_DIR / "images"
    folder.mkdir(exist_ok=True)
    probe, train, evaluation = [], [], []
    for i in range(N_IMAGES):
        scene = digit_scene(rng, font) if i % 4 == 3 else shapes_scene(rng)
        image, caption, questions = scene
        name = f"img-{i:04d}"
        image.save(folder / f"{name}.png", optimize=True)
        relative = f"images/{name}.png"
        probe.append({"id": name, "image": relative, "text": caption})
        rows = evaluation if i >= N_IMAGES - N_EVAL_IMAGES else train
        for question, answer in questions:
            split = "eval" if rows is evaluation else "train"
            rows.append({"id": f"{split}-{len(rows):04d}", "image": relative,
                         "prompt": question, "answer": answer})
    for file, rows in (("image_probe.jsonl", probe), ("image_task_train.jsonl", train),
                       ("image_task_eval.jsonl", evaluation)):
        (DATA_DIR / file).write_text("".join(json.dumps(r) + "\n" for r in rows),
                                     encoding="utf-8")
    print(f"{len(probe)} images, {len(train)} training and {len(evaluation)} eval questions")


if __name__ == "__main__":
    main()
