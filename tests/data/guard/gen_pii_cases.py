# PII look-alike cases for the detectors: 400 hard negatives (numbers shaped
# like phone numbers, payment cards, US SSNs or IBANs that are not valid
# ones) and 400 valid values, each in a short sentence, some next to a
# context word. Generated (fixed seed), no external source.
# Usage: python3 tests/data/guard/gen_pii_cases.py > tests/data/guard/pii_cases.jsonl
import json
import random

R = random.Random(20261130)


def digits(n):
    return "".join(R.choice("0123456789") for _ in range(n))


def luhn_digit(body):
    s = 0
    for k, c in enumerate(reversed(body)):
        v = int(c)
        if k % 2 == 0:
            v *= 2
            if v > 9:
                v -= 9
        s += v
    return str((10 - s % 10) % 10)


def card(prefix, length):
    body = prefix + digits(length - len(prefix) - 1)
    return body + luhn_digit(body)


def group4(n, sep=" "):
    return sep.join(n[i:i + 4] for i in range(0, len(n), 4))


def iban(cc, bban):
    rearr = bban + cc + "00"
    num = "".join(str(int(c, 36)) for c in rearr)
    return f"{cc}{98 - int(num) % 97:02d}{bban}"


def upper(n):
    return "".join(R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n))


IBAN_FORMATS = {  # country: bban generator (lengths per the IBAN registry)
    "DE": lambda: digits(18), "GB": lambda: upper(4) + digits(14), "FR": lambda: digits(10) + upper(1) + digits(12),
    "ES": lambda: digits(20), "IT": lambda: upper(1) + digits(22), "NL": lambda: upper(4) + digits(10),
    "BE": lambda: digits(12), "CH": lambda: digits(17), "AT": lambda: digits(16), "PL": lambda: digits(24),
    "SE": lambda: digits(20), "IE": lambda: upper(4) + digits(14), "PT": lambda: digits(21), "DK": lambda: digits(14),
    "NO": lambda: digits(11), "FI": lambda: digits(14),
}

NANP_AREAS = ["201", "212", "305", "312", "415", "503", "617", "646", "702", "713", "805", "917", "905", "416", "604", "780"]
PHONE_CTX = ["Call me on {}.", "My phone number is {}", "Tel: {}", "You can reach the office at {} after 9am.", "mobile {} (evenings)"]
PLAIN = ["Reference {} in the ledger.", "The value was {} according to the report.", "See item {} below.", "{}", "Batch {} passed QA."]
CARD_CTX = ["Card number: {}", "Please charge my credit card {} for the order.", "Visa {} exp 09/27"]
SSN_CTX = ["SSN: {}", "My social security number is {}.", "SSN {} on file"]
IBAN_CTX = ["IBAN: {}", "Please transfer the amount to {}.", "Bank account (IBAN) {}"]


def sentence(value, ctx, ctx_share=0.5):
    t = R.choice(ctx) if R.random() < ctx_share else R.choice(PLAIN)
    return t.format(value)


def neg_phone(k):
    kind = k % 10
    if kind == 0:   # NANP, area code starting with 0 or 1
        return f"{R.choice('01')}{digits(2)}-{R.randint(200, 999)}-{digits(4)}"
    if kind == 1:
        return f"({R.choice('01')}{digits(2)}) {R.randint(200, 999)}-{digits(4)}"
    if kind == 2:   # N11 service code as area code
        return f"{R.randint(2, 9)}11-{R.randint(200, 999)}-{digits(4)}"
    if kind == 3:   # +1 with too few / too many digits
        return f"+1 {R.choice(NANP_AREAS)} {R.randint(200, 999)} {digits(R.choice([2, 3, 5, 6]))}"
    if kind == 4:   # +44 with a wrong length
        return f"+44 20 {digits(3)} {digits(R.choice([2, 6]))}"
    if kind == 5:   # unassigned country code
        return f"+{R.choice(['0', '28', '83', '89'])}{R.randint(1, 9)} {digits(3)} {digits(4)}"
    if kind == 6:   # +49 / +33 too long
        return f"+33 {R.randint(1, 9)} {digits(2)} {digits(2)} {digits(2)} {digits(2)} {digits(2)}"
    if kind == 7:   # 1 + invalid area code
        return f"1-{R.choice('01')}{digits(2)}-{R.randint(200, 999)}-{digits(4)}"
    if kind == 8:   # NANP area code 0xx with dots
        return f"0{digits(2)}.{R.randint(200, 999)}.{digits(4)}"
    return f"+1-{R.choice('01')}{digits(2)}-{R.randint(200, 999)}-{digits(4)}"


def neg_card(k):
    kind = k % 5
    if kind == 0:   # Luhn fails
        n = card(R.choice(["4", "51", "55", "37", "6011"]), 16 if k % 2 else 15)
        n = n[:-1] + str((int(n[-1]) + R.randint(1, 9)) % 10)
    elif kind == 1:  # Luhn valid, no issuer starts with 7, 8, 9 or 0
        n = card(R.choice("7890"), 16)
    elif kind == 2:  # Visa-like with a wrong length (14, 17, 18)
        n = card("4", R.choice([14, 17, 18]))
    elif kind == 3:  # Amex prefix with 16 digits
        n = card(R.choice(["34", "37"]), 16)
    else:           # Mastercard range 56-58 is Maestro; 59 is not a card range of 16; use 1 not 1800
        n = card("1" + R.choice("2345679"), 16)
    if len(n) == 16 and R.random() < 0.5:
        return group4(n, R.choice([" ", "-"]))
    return n


def neg_ssn(k):
    kind = k % 6
    g = f"{R.randint(1, 99):02d}"
    s = f"{R.randint(1, 9999):04d}"
    if kind == 0:
        return f"000-{g}-{s}"
    if kind == 1:
        return f"666-{g}-{s}"
    if kind == 2:
        return f"9{digits(2)}-{g}-{s}"
    if kind == 3:
        return f"{R.randint(1, 665):03d}-00-{s}"
    if kind == 4:
        return f"{R.randint(1, 665):03d}-{g}-0000"
    return f"{R.randint(1, 665):03d} {g} 0000"


def neg_iban(k):
    cc = R.choice(sorted(IBAN_FORMATS))
    v = iban(cc, IBAN_FORMATS[cc]())
    kind = k % 4
    if kind == 0:    # check digits off by one
        cd = (int(v[2:4]) % 97) + 1
        v = f"{v[:2]}{cd:02d}{v[4:]}"
    elif kind == 1:  # a BBAN digit changed
        i = R.randint(8, len(v) - 1)
        c = v[i]
        v = v[:i] + (str((int(c) + 1) % 10) if c.isdigit() else ("A" if c != "A" else "B")) + v[i + 1:]
    elif kind == 2:  # valid checksum, wrong length for the country
        bban = IBAN_FORMATS[cc]()
        bban = bban[:-2] if R.random() < 0.5 else bban + digits(2)
        v = iban(cc, bban)
    else:            # valid checksum, not a country
        v = iban(R.choice(["XX", "QQ", "ZZ", "AA", "UU"]), digits(18))
    if R.random() < 0.4:
        v = " ".join(v[i:i + 4] for i in range(0, len(v), 4))
    return v


def pos_phone(k):
    kind = k % 8
    a = R.choice(NANP_AREAS)
    if kind == 0:
        return f"{a}-{R.randint(200, 999)}-{digits(4)}"
    if kind == 1:
        return f"({a}) {R.randint(200, 999)}-{digits(4)}"
    if kind == 2:
        return f"+1 {a} {R.randint(200, 999)} {digits(4)}"
    if kind == 3:
        return f"+44 7{digits(3)} {digits(6)}"
    if kind == 4:
        return f"+49 30 {digits(8)}"
    if kind == 5:
        return f"0{R.randint(1, 9)} {digits(2)} {digits(2)} {digits(2)} {digits(2)}"
    if kind == 6:
        return f"+33 {R.randint(1, 9)} {digits(2)} {digits(2)} {digits(2)} {digits(2)}"
    return f"07{digits(3)} {digits(3)} {digits(3)}"


def pos_card(k):
    p, l = R.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3530", 16), ("36", 14)])
    n = card(p, l)
    return group4(n, R.choice([" ", "-"])) if l == 16 and k % 2 else n


def pos_ssn(k):
    a = R.randint(1, 899)
    while a == 666:
        a = R.randint(1, 899)
    return f"{a:03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"


def pos_iban(k):
    cc = R.choice(sorted(IBAN_FORMATS))
    v = iban(cc, IBAN_FORMATS[cc]())
    return " ".join(v[i:i + 4] for i in range(0, len(v), 4)) if k % 2 else v


out = []
for ent, neg, pos, ctx in [("phone", neg_phone, pos_phone, PHONE_CTX), ("credit_card", neg_card, pos_card, CARD_CTX),
                           ("us_ssn", neg_ssn, pos_ssn, SSN_CTX), ("iban", neg_iban, pos_iban, IBAN_CTX)]:
    for k in range(100):
        out.append({"id": f"pii-neg-{ent}-{k:03d}", "entity": ent, "label": "invalid", "text": sentence(neg(k), ctx)})
    for k in range(100):
        out.append({"id": f"pii-pos-{ent}-{k:03d}", "entity": ent, "label": "valid", "text": sentence(pos(k), ctx)})
for r in out:
    print(json.dumps(r, ensure_ascii=False))
