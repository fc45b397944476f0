"""A demo catalog: a few thousand plausible products, generated from word lists.

The same seed gives the same catalog, byte for byte, so the demo's search and recommendation
answers are reproducible. Nothing is downloaded and no dataset is copied: titles, descriptions,
brands, attributes and prices are composed from the small vocabularies below.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

#: category path -> (product nouns, price range in cents, attributes it draws from)
_CATEGORIES: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[int, int], tuple[str, ...]]] = {
    ("Home", "Kitchen", "Cookware"): (
        ("Frying Pan", "Saucepan", "Dutch Oven", "Wok", "Stockpot", "Grill Pan"),
        (1500, 22000),
        ("material", "diameter_cm", "induction", "dishwasher_safe"),
    ),
    ("Home", "Kitchen", "Knives"): (
        ("Chef's Knife", "Paring Knife", "Bread Knife", "Santoku Knife", "Knife Block Set"),
        (900, 35000),
        ("material", "blade_cm", "dishwasher_safe"),
    ),
    ("Home", "Kitchen", "Coffee & Tea"): (
        ("French Press", "Pour-Over Kettle", "Burr Grinder", "Espresso Cups", "Teapot"),
        (1200, 18000),
        ("material", "capacity_ml", "color"),
    ),
    ("Home", "Furniture", "Living Room"): (
        ("Armchair", "Coffee Table", "Bookshelf", "Floor Lamp", "Side Table", "Sofa"),
        (4900, 129000),
        ("material", "color", "width_cm"),
    ),
    ("Home", "Furniture", "Bedroom"): (
        ("Bed Frame", "Nightstand", "Dresser", "Wardrobe", "Mirror"),
        (5900, 149000),
        ("material", "color", "width_cm"),
    ),
    ("Home", "Bedding"): (
        ("Duvet Cover", "Pillowcase Set", "Fitted Sheet", "Throw Blanket", "Quilt"),
        (1900, 16000),
        ("material", "color", "size"),
    ),
    ("Electronics", "Audio", "Headphones"): (
        ("Over-Ear Headphones", "Wireless Earbuds", "Studio Monitors Headphones", "Sport Earbuds"),
        (2900, 39900),
        ("color", "wireless", "battery_h", "noise_cancelling"),
    ),
    ("Electronics", "Audio", "Speakers"): (
        ("Bluetooth Speaker", "Soundbar", "Bookshelf Speakers", "Smart Speaker"),
        (3900, 79900),
        ("color", "wireless", "power_w"),
    ),
    ("Electronics", "Computers", "Accessories"): (
        ("Mechanical Keyboard", "Wireless Mouse", "USB-C Hub", "Laptop Stand", "Webcam"),
        (1500, 24900),
        ("color", "wireless", "compatible_with"),
    ),
    ("Electronics", "Phones", "Accessories"): (
        ("Phone Case", "Screen Protector", "Wireless Charger", "Car Mount", "Power Bank"),
        (900, 8900),
        ("color", "compatible_with"),
    ),
    ("Sports", "Running", "Shoes"): (
        ("Road Running Shoe", "Trail Running Shoe", "Racing Flat", "Stability Shoe"),
        (5900, 22000),
        ("color", "size", "drop_mm", "weight_g"),
    ),
    ("Sports", "Running", "Apparel"): (
        ("Running Shorts", "Running Tights", "Technical Tee", "Wind Jacket", "Running Socks"),
        (1200, 14900),
        ("color", "size", "material"),
    ),
    ("Sports", "Cycling"): (
        ("Cycling Helmet", "Bike Light Set", "Water Bottle Cage", "Saddle Bag", "Cycling Gloves"),
        (1500, 19900),
        ("color", "size", "weight_g"),
    ),
    ("Sports", "Outdoor", "Camping"): (
        ("Tent", "Sleeping Bag", "Camping Stove", "Headlamp", "Trekking Poles", "Backpack"),
        (1900, 49900),
        ("color", "weight_g", "capacity_l", "waterproof"),
    ),
    ("Fashion", "Women", "Clothing"): (
        ("Linen Dress", "Wool Sweater", "Denim Jacket", "Silk Blouse", "Trench Coat"),
        (2900, 29900),
        ("color", "size", "material"),
    ),
    ("Fashion", "Men", "Clothing"): (
        ("Oxford Shirt", "Chino Trousers", "Merino Cardigan", "Rain Jacket", "Polo Shirt"),
        (2500, 27900),
        ("color", "size", "material"),
    ),
    ("Fashion", "Accessories"): (
        ("Leather Belt", "Wool Scarf", "Canvas Tote", "Sunglasses", "Wallet", "Watch"),
        (1500, 39900),
        ("color", "material"),
    ),
    ("Beauty", "Skincare"): (
        ("Face Cream", "Cleansing Gel", "Serum", "Sunscreen SPF 50", "Lip Balm"),
        (600, 8900),
        ("volume_ml", "skin_type", "vegan"),
    ),
    ("Toys", "Building Sets"): (
        ("Building Block Set", "Marble Run", "Wooden Train Set", "Construction Kit"),
        (1500, 19900),
        ("age_min", "pieces", "material"),
    ),
    ("Books", "Cooking"): (
        ("Cookbook", "Baking Handbook", "Fermentation Guide", "Vegetarian Kitchen"),
        (1200, 5900),
        ("pages", "language", "hardcover"),
    ),
}

_BRANDS = (
    "Northwind", "Alder & Co", "Brightline", "Fjellmark", "Oakhurst", "Vantera", "Lumen",
    "Kestrel", "Marlow", "Solvik", "Tidewater", "Ardent", "Copperleaf", "Halvard", "Norrøn",
    "Pellucid", "Quarry", "Redfern", "Silvan", "Umbra Works", "Wrenfield", "Yarrow", "Zephyr",
    "Bramble", "Corvid", "Drummond", "Elmstead", "Foxglove", "Granite Peak", "Hollis",
)  # fmt: skip
_QUALITIES = (
    "Classic", "Essential", "Pro", "Ultralight", "Everyday", "Premium", "Compact", "Heritage",
    "Signature", "Performance", "Studio", "Urban", "Expedition", "Soft-Touch", "Eco",
)  # fmt: skip
_COLORS = (
    "black", "white", "navy", "forest green", "charcoal", "sand", "terracotta", "sky blue",
    "burgundy", "olive", "graphite", "ivory",
)  # fmt: skip
_MATERIALS = (
    "stainless steel", "cast iron", "oak", "walnut", "cotton", "linen", "merino wool",
    "recycled polyester", "leather", "bamboo", "ceramic", "aluminium", "glass",
)  # fmt: skip
_SIZES = ("XS", "S", "M", "L", "XL", "38", "40", "42", "44", "46")
_DEVICES = ("iPhone 15", "Pixel 8", "Galaxy S24", "USB-C laptops", "MacBook", "Windows PCs")
_BENEFITS = (
    "built to last for years of daily use",
    "easy to clean and quick to dry",
    "designed with input from professionals",
    "light enough to take anywhere",
    "backed by a two-year warranty",
    "made in a factory powered by renewable energy",
    "tested in real conditions before release",
    "with a minimalist look that fits any space",
    "comfortable from the first use",
    "packaged without single-use plastic",
)
_OPENERS = (
    "The {quality} {noun} from {brand} is",
    "Meet the {noun} by {brand}:",
    "{brand}'s {quality} {noun} is",
    "A {color} {noun}",
)


def _attribute(name: str, rng: random.Random) -> Any:
    choices: dict[str, Any] = {
        "material": lambda: rng.choice(_MATERIALS),
        "color": lambda: rng.choice(_COLORS),
        "size": lambda: rng.choice(_SIZES),
        "compatible_with": lambda: sorted(rng.sample(_DEVICES, rng.randint(1, 3))),
        "language": lambda: rng.choice(("en", "de", "fr", "es", "it")),
        "skin_type": lambda: rng.choice(("dry", "oily", "combination", "sensitive", "all")),
    }
    if name in choices:
        return choices[name]()
    if name in ("induction", "dishwasher_safe", "wireless", "noise_cancelling", "waterproof",
                "vegan", "hardcover"):  # fmt: skip
        return rng.random() < 0.5
    ranges = {
        "diameter_cm": (16, 32), "blade_cm": (8, 26), "capacity_ml": (250, 1700),
        "width_cm": (40, 240), "battery_h": (6, 60), "power_w": (10, 300), "drop_mm": (0, 12),
        "weight_g": (80, 2400), "capacity_l": (10, 80), "volume_ml": (15, 250),
        "age_min": (3, 14), "pieces": (40, 1500), "pages": (96, 480),
    }  # fmt: skip
    low, high = ranges.get(name, (1, 100))
    return rng.randint(low, high)


def _price(low: int, high: int, rng: random.Random) -> int:
    # Shop prices end in .99 or .49, skewed towards the cheaper end of the range.
    euros = int(low / 100 + (high - low) / 100 * rng.random() ** 2)
    return euros * 100 + rng.choice((99, 49, 99, 95))


def products(count: int = 3000, seed: int = 7) -> Iterator[dict[str, Any]]:
    """``count`` products as import lines (``POST /v1/catalog/import``), deterministic."""
    rng = random.Random(seed)  # noqa: S311 - demo data, reproducible on purpose
    categories = sorted(_CATEGORIES)
    for n in range(count):
        path = categories[rng.randrange(len(categories))]
        nouns, (low, high), attribute_names = _CATEGORIES[path]
        noun, brand, quality = rng.choice(nouns), rng.choice(_BRANDS), rng.choice(_QUALITIES)
        attributes = {name: _attribute(name, rng) for name in attribute_names}
        color = attributes.get("color") or rng.choice(_COLORS)
        title = f"{brand} {quality} {noun}"
        if "color" in attributes:
            title += f", {str(color).title()}"
        if "material" in attributes:
            title += f" ({attributes['material']})"
        opener = rng.choice(_OPENERS).format(quality=quality, noun=noun, brand=brand, color=color)
        benefits = rng.sample(_BENEFITS, 2)
        description = (
            f"{opener} {benefits[0]}, {benefits[1]}. "
            + (f"Made of {attributes['material']}. " if "material" in attributes else "")
            + f"Part of our {path[-1].lower()} range."
        )
        sku = f"{''.join(w[0] for w in path)}-{n + 1:05d}"
        yield {
            "id": sku,
            "title": title,
            "description": description,
            "brand": brand,
            "category": list(path),
            "attributes": attributes,
            "price": {"amount": _price(low, high, rng), "currency": "EUR"},
            "availability": rng.choices(
                ("in_stock", "out_of_stock", "preorder", "discontinued"), (85, 8, 4, 3)
            )[0],
            "images": [f"https://images.modelport-demo.invalid/{sku}/{i}.jpg" for i in range(2)],
        }
