"""Where the shop's customers live: time zones, locales, names, phone numbers, email domains.

Names include accented letters on purpose (importers must keep UTF-8 intact); email
addresses use ASCII spellings and reserved example domains only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Market:
    zone: str
    locale: str
    weight: float
    phone_prefix: str
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]


_IT_FIRST = ("Giulia", "Marco", "Francesca", "Luca", "Chiara", "Alessandro", "Sara", "Nicolò")
_IT_LAST = ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci")
_DE_FIRST = ("Anna", "Lukas", "Lena", "Jonas", "Marie", "Felix", "Sophie", "Jürgen")
_DE_LAST = ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker")
_US_FIRST = ("Emily", "James", "Olivia", "Michael", "Ava", "William", "Mia", "Daniel")
_US_LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis")
_UK_FIRST = ("Oliver", "Amelia", "George", "Isla", "Harry", "Emily", "Jack", "Poppy")
_UK_LAST = ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "O'Brien")
_JP_FIRST = ("Yui", "Haruto", "Aoi", "Sota", "Hina", "Yuto", "Sakura", "Ren")
_JP_LAST = ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura")
_AU_FIRST = ("Charlotte", "Noah", "Matilda", "Jack", "Ruby", "Thomas", "Chloe", "Lachlan")
_AU_LAST = ("Smith", "Nguyen", "Kelly", "Ryan", "Walker", "Harris", "Thompson", "Martin")
_FR_FIRST = ("Léa", "Hugo", "Chloé", "Louis", "Manon", "Gabriel", "Inès", "Raphaël")
_FR_LAST = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Lefèvre")
_ES_FIRST = ("Lucía", "Hugo", "María", "Martín", "Paula", "Pablo", "Sofía", "Álvaro")
_ES_LAST = ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez", "Pérez")

MARKETS: tuple[Market, ...] = (
    Market("Europe/Rome", "it-IT", 0.26, "+39 3", _IT_FIRST, _IT_LAST),
    Market("Europe/Berlin", "de-DE", 0.16, "+49 15", _DE_FIRST, _DE_LAST),
    Market("America/New_York", "en-US", 0.14, "+1 212555", _US_FIRST, _US_LAST),
    Market("America/Los_Angeles", "en-US", 0.07, "+1 310555", _US_FIRST, _US_LAST),
    Market("Europe/London", "en-GB", 0.11, "+44 7700", _UK_FIRST, _UK_LAST),
    Market("Europe/Paris", "fr-FR", 0.10, "+33 6", _FR_FIRST, _FR_LAST),
    Market("Europe/Madrid", "es-ES", 0.07, "+34 6", _ES_FIRST, _ES_LAST),
    Market("Asia/Tokyo", "ja-JP", 0.05, "+81 90", _JP_FIRST, _JP_LAST),
    Market("Australia/Sydney", "en-AU", 0.04, "+61 4", _AU_FIRST, _AU_LAST),
)

EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example", "post.example")
PROXY_DOMAIN = "icloud.example"
"""Most privacy-proxy users (machine opens) have this domain, as Apple Mail users do."""

ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "newsletter", "referral", "marketplace")
ACQUISITION_WEIGHTS = (0.32, 0.24, 0.18, 0.10, 0.09, 0.07)

_ASCII = str.maketrans(
    {"à": "a", "á": "a", "è": "e", "é": "e", "ì": "i", "í": "i", "ò": "o", "ó": "o", "ù": "u",
     "ú": "u", "ü": "ue", "ö": "oe", "ä": "ae", "ß": "ss", "ç": "c", "ñ": "n", "ï": "i",
     "'": "", "Á": "A", "É": "E"}
)  # fmt: skip


def ascii_name(name: str) -> str:
    """A name spelt for an email address: lower case ASCII, no apostrophes."""
    return name.translate(_ASCII).lower()
