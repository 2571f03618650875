"""Synthetic catalogs and users with learnable structure, for the demo, tests and zero-shot experiments.

Items carry realistic text (category path, brand, product noun, attributes, a short description) rendered the
paper's way by :func:`genrec.text.plain_text`. Users follow four behaviours a recommender can learn:

* **complementary transitions** - every item has a few complements (same brand first, in the complementary
  sub-category: shampoo -> conditioner aisle, tent -> sleeping gear), and the next purchase is often one of them;
* **category affinity** - each user prefers one or two top categories;
* **brand loyalty** - within a favourite category, a user mostly buys two favourite brands;
* **noise** - some purchases are uniform over the catalog.

Each ``platform`` has its own vocabulary (categories, nouns, brands, attributes), so a second platform is an unseen
domain for zero-shot demos. Everything is deterministic per ``(seed, platform)``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from genrec.text import plain_text

from .dataset import Dataset, Item


@dataclass(frozen=True)
class Platform:
    """Vocabulary of one synthetic platform."""

    name: str
    catalog: dict[str, dict[str, list[str]]]  # top category -> sub-category -> product nouns
    brands: dict[str, list[str]]  # top category -> brands
    qualities: list[str]  # title adjectives
    colors: list[str]
    sizes: list[str]
    uses: list[str]  # "for ..." phrases of the description


PLATFORMS: dict[str, Platform] = {
    "retail": Platform(
        name="Retail",
        catalog={
            "Beauty": {
                "Hair Care": ["Shampoo", "Conditioner", "Hair Mask", "Hair Oil"],
                "Skin Care": ["Moisturizer", "Cleanser", "Face Serum", "Sunscreen"],
                "Makeup": ["Lipstick", "Mascara", "Foundation", "Eyeliner"],
                "Nails": ["Nail Polish", "Top Coat", "Nail File", "Cuticle Oil"],
            },
            "Kitchen": {
                "Cookware": ["Frying Pan", "Saucepan", "Stock Pot", "Wok"],
                "Utensils": ["Spatula", "Whisk", "Ladle", "Tongs"],
                "Bakeware": ["Baking Sheet", "Muffin Tin", "Cake Pan", "Loaf Pan"],
                "Storage": ["Food Container", "Spice Jar", "Lunch Box", "Bread Bin"],
            },
            "Electronics": {
                "Phones": ["Smartphone", "Flip Phone", "Phone Case", "Screen Protector"],
                "Audio": ["Headphones", "Earbuds", "Bluetooth Speaker", "Soundbar"],
                "Chargers": ["Wall Charger", "Power Bank", "Wireless Charger", "Car Charger"],
                "Cables": ["USB-C Cable", "HDMI Cable", "Lightning Cable", "Audio Cable"],
            },
            "Toys": {
                "Building": ["Block Set", "Marble Run", "Magnetic Tiles", "Construction Kit"],
                "Puzzles": ["Jigsaw Puzzle", "Puzzle Cube", "Floor Puzzle", "Brain Teaser"],
                "Games": ["Board Game", "Card Game", "Dice Game", "Trivia Game"],
                "Outdoor Play": ["Kite", "Water Blaster", "Jump Rope", "Bubble Machine"],
            },
        },
        brands={
            "Beauty": ["Lumera", "Velvette", "Aurelle", "Bloomkin", "Silkara", "Dewline"],
            "Kitchen": ["Cookwell", "Pantrix", "Ferro", "Hearthly", "Saltbox", "Mixmaster"],
            "Electronics": ["Voltix", "Sonara", "Nexcell", "Brightwave", "Corelink", "Ampero"],
            "Toys": ["Playnest", "Brickle", "Tumbletot", "Gigglebox", "Wonderkit", "Puzzlo"],
        },
        qualities=["Classic", "Deluxe", "Compact", "Premium", "Everyday", "Professional", "Gentle", "Ultra"],
        colors=["Black", "White", "Rose", "Navy", "Silver", "Lavender", "Red", "Green"],
        sizes=["Small", "Medium", "Large", "Travel Size", "Family Size", "Twin Pack"],
        uses=["daily use", "gifting", "beginners", "busy mornings", "the whole family", "small spaces"],
    ),
    "outdoor": Platform(
        name="Outdoor",
        catalog={
            "Camping": {
                "Tents": ["Dome Tent", "Tunnel Tent", "Bivy Shelter", "Tarp"],
                "Sleeping": ["Sleeping Bag", "Sleeping Pad", "Camp Pillow", "Hammock"],
                "Camp Kitchen": ["Camp Stove", "Fuel Canister", "Mess Kit", "Water Filter"],
                "Lighting": ["Headlamp", "Lantern", "Flashlight", "String Lights"],
            },
            "Cycling": {
                "Bikes": ["Road Bike", "Mountain Bike", "Gravel Bike", "Folding Bike"],
                "Components": ["Chain", "Cassette", "Brake Pads", "Tire"],
                "Apparel": ["Jersey", "Bib Shorts", "Cycling Gloves", "Rain Jacket"],
                "Maintenance": ["Chain Lube", "Multi Tool", "Floor Pump", "Repair Kit"],
            },
            "Fishing": {
                "Rods": ["Spinning Rod", "Fly Rod", "Casting Rod", "Telescopic Rod"],
                "Reels": ["Spinning Reel", "Fly Reel", "Baitcaster", "Spincast Reel"],
                "Tackle": ["Lure Set", "Hook Assortment", "Sinkers", "Tackle Box"],
                "Lines": ["Braided Line", "Monofilament", "Fluorocarbon Leader", "Fly Line"],
            },
            "Climbing": {
                "Protection": ["Cam", "Nut Set", "Quickdraw", "Sling"],
                "Ropes": ["Dynamic Rope", "Static Rope", "Rope Bag", "Cordelette"],
                "Footwear": ["Climbing Shoes", "Approach Shoes", "Chalk Bag", "Liquid Chalk"],
                "Harnesses": ["Sport Harness", "Alpine Harness", "Belay Device", "Locking Carabiner"],
            },
        },
        brands={
            "Camping": ["Trailborn", "Pinecrest", "Northloft", "Emberline", "Summitra", "Wildmoor"],
            "Cycling": ["Velocita", "Spokewise", "Gearhaus", "Ridgeway", "Cadenza", "Pedalon"],
            "Fishing": ["Riverbend", "Castaway", "Troutline", "Deepwell", "Bayhook", "Lakeshore"],
            "Climbing": ["Cragstone", "Boulderly", "Ascendo", "Granitek", "Ropeworks", "Ledgeline"],
        },
        qualities=["Ultralight", "Rugged", "Waterproof", "Expedition", "Trail", "Alpine", "Packable", "Insulated"],
        colors=["Olive", "Orange", "Slate", "Sand", "Forest Green", "Glacier Blue", "Charcoal", "Rust"],
        sizes=["Solo", "2-Person", "Regular", "Long", "XL", "Kids"],
        uses=["backpacking", "weekend trips", "wet weather", "long rides", "cold nights", "river days"],
    ),
}

COMPLEMENTS_PER_ITEM = 3
MIN_SEQ_LEN, MAX_SEQ_LEN = 5, 20
P_COMPLEMENT, P_AFFINITY = 0.5, 0.3  # the remaining 0.2 is uniform noise
P_LOYAL = 0.7
COMPLEMENT_WEIGHTS = (0.6, 0.3, 0.1)


@dataclass
class _Product:
    key: str
    top: str
    sub: str
    brand: str
    fields: dict[str, Any]


def _article(word: str) -> str:
    return "An" if word[0].lower() in "aeiou" else "A"


def _make_catalog(rng: random.Random, spec: Platform, n_items: int, prefix: str) -> list[_Product]:
    products: list[_Product] = []
    titles: set[str] = set()
    tops = list(spec.catalog)
    for i in range(n_items):
        top = tops[i % len(tops)] if i < len(tops) else rng.choice(tops)
        sub = rng.choice(list(spec.catalog[top]))
        noun, brand = rng.choice(spec.catalog[top][sub]), rng.choice(spec.brands[top])
        for attempt in range(20):
            quality, color, size = rng.choice(spec.qualities), rng.choice(spec.colors), rng.choice(spec.sizes)
            title = f"{brand} {quality} {noun}, {color}, {size}"
            if title not in titles:
                break
        else:
            title = f"{title}, Series {i}"
        titles.add(title)
        fields = {
            "title": title,
            "brand": brand,
            "categories": [spec.name, top, sub],
            "attributes": {"color": color, "size": size},
            "price": f"${rng.randint(4, 120)}.{rng.choice(['00', '49', '99'])}",
            "description": f"{_article(quality)} {quality.lower()} {noun.lower()} by {brand} for {rng.choice(spec.uses)}.",
        }
        products.append(_Product(f"{prefix}i{i:05d}", top, sub, brand, fields))
    return products


def _complements(rng: random.Random, spec: Platform, products: list[_Product]) -> dict[str, list[str]]:
    """Each item's complements: items of the next sub-category of its top category, same brand first."""
    by_sub: dict[tuple[str, str], list[_Product]] = {}
    for p in products:
        by_sub.setdefault((p.top, p.sub), []).append(p)
    out: dict[str, list[str]] = {}
    for p in products:
        subs = list(spec.catalog[p.top])
        nxt = subs[(subs.index(p.sub) + 1) % len(subs)]
        pool = [q for q in by_sub.get((p.top, nxt), []) if q.key != p.key]
        if len(pool) < COMPLEMENTS_PER_ITEM:  # tiny catalogs: fall back to the whole top category
            pool += [q for q in products if q.top == p.top and q.key != p.key and q not in pool]
        rng.shuffle(pool)
        pool.sort(key=lambda q: q.brand != p.brand)  # stable: same brand first, random within
        out[p.key] = [q.key for q in pool[:COMPLEMENTS_PER_ITEM]]
    return out


def synthesize(n_users: int, n_items: int, seed: int = 0, platform: str = "retail") -> Dataset:
    """A dataset of ``n_users`` users over ``n_items`` items; the same arguments always give the same data."""
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r} (one of {', '.join(PLATFORMS)})")
    if n_items < MIN_SEQ_LEN or n_users < 1:
        raise ValueError(f"need at least 1 user and {MIN_SEQ_LEN} items (got {n_users} users, {n_items} items)")
    spec = PLATFORMS[platform]
    rng = random.Random(f"{platform}:{seed}")
    prefix = platform[:3]
    products = _make_catalog(rng, spec, n_items, prefix)
    complements = _complements(rng, spec, products)
    by_top: dict[str, list[_Product]] = {}
    by_brand: dict[tuple[str, str], list[_Product]] = {}
    for p in products:
        by_top.setdefault(p.top, []).append(p)
        by_brand.setdefault((p.top, p.brand), []).append(p)
    tops = list(by_top)

    users: dict[str, list[str]] = {}
    for u in range(n_users):
        favourite_tops = rng.sample(tops, k=min(len(tops), rng.choice([1, 1, 2])))
        loyal = {t: [b for b in rng.sample(spec.brands[t], k=2) if (t, b) in by_brand] for t in favourite_tops}
        length = min(n_items, MIN_SEQ_LEN + min(int(rng.expovariate(1 / 4)), MAX_SEQ_LEN - MIN_SEQ_LEN))

        def affine() -> str:
            top = rng.choice(favourite_tops)
            if loyal[top] and rng.random() < P_LOYAL:
                return rng.choice(by_brand[(top, rng.choice(loyal[top]))]).key
            return rng.choice(by_top[top]).key

        seq: list[str] = [affine()]
        seen = {seq[0]}
        while len(seq) < length:
            for _ in range(10):
                r = rng.random()
                if r < P_COMPLEMENT and complements[seq[-1]]:
                    cands = complements[seq[-1]]
                    key = rng.choices(cands, weights=COMPLEMENT_WEIGHTS[: len(cands)])[0]
                elif r < P_COMPLEMENT + P_AFFINITY:
                    key = affine()
                else:
                    key = rng.choice(products).key
                if key not in seen:
                    break
            else:
                key = rng.choice([p.key for p in products if p.key not in seen])
            seq.append(key)
            seen.add(key)
        users[f"{prefix}u{u:05d}"] = seq

    items = {p.key: Item(p.key, plain_text(p.fields), p.fields) for p in products}
    return Dataset(items=items, users=users, name=f"synth-{platform}")
