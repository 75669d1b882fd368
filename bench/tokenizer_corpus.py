"""Lines of hard text for tokenizers: every pre-tokenizer rule (prose, accents
and combining marks, CJK, emoji and other astral characters, control
characters, tabs and runs of spaces, numbers, contractions, very long words,
punctuation of many scripts, special tokens written in the text). The
tokenizer parity test (tests/parity/test_tokenizers.py) compares dsee with
the Hugging Face tokenizers on them; bench/tokenize times both on them.

  make_line(rng)   one line, drawn from `rng` (random.Random)
"""

WORDS = ("the quick brown fox jumps over a lazy dog while researchers fine tune sparse models on "
         "twelve tasks and report accuracy Paris London Berlin naïve café résumé façade Ångström "
         "coöperate Ünïcödé Straße İstanbul ǅemal ΑΘΗΝΑ Ελληνικά Москва привет עברית العربية हिन्दी "
         "ภาษาไทย Tiếng Việt e\u0301te\u0301 o\u0308\u0323 a\u0328\u0301 ").split(" ")
CJK = ["日本語の文章です", "中文句子很长", "한국어 문장", "漢字", "𠀀𠀁𪜀", "カタカナ", "豈更"]
EMOJI = ["😀", "👍🏽", "🧑\u200d💻", "🇫🇷", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "🥰", "🫨", "\U0001F9D1"]
CONTROL = ["\x01", "\x7f", "\u200b", "\u00ad", "\ufeff", "\x0b", "\x0c", "\x1f", "\u0085", "\ue000", "\u0378",
           "\r", "\x00", "\ufffd"]
SPACES = ["\t", "  ", "   ", " \t ", "\u00a0", "\u3000", "\u2003", "\u2028", "\u202f", "\t\t"]
NUMBERS = ["12,345.67", "2024", "½", "٣٤", "Ⅻ", "3rd", "1e-4", "007", "৩"]
CONTRACTIONS = ["don't", "I'll", "they're", "we've", "she'd", "I'm", "It's", "IT'S", "o'clock", "'tis",
                "rock 'n' roll", "’s", "y'all"]
PUNCT = ["「引用」", "、", "。", "，", "！", "？", "؟", "،", "¡Hola!", "¿Qué?", "«guillemets»", "—", "–", "…",
         "‘single’", "“double”", "·", "$100", "a+b=c", "<tag>", "[x]", "{y}", "|", "~", "^", "`", "@user", "#tag",
         "50%", "&amp;", "\\", "/", "*", "::", "?!", "...", "--", "¶", "§", "†"]
SPECIAL = ["[SEP]", "[CLS]", "[MASK]", "<s>", "</s>", "<mask>", "<pad>", "<|endoftext|>", "[sep]", "< s>"]


def long_word(rng):
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzé") for _ in range(rng.randint(101, 180)))


def make_line(rng):
    # (weight, what to draw): mostly words, the rest spread over the hard cases.
    kinds = [(45, lambda: rng.choice(WORDS)), (7, lambda: rng.choice(CJK)), (6, lambda: rng.choice(EMOJI)),
             (5, lambda: rng.choice(CONTROL)), (7, lambda: rng.choice(NUMBERS)),
             (7, lambda: rng.choice(CONTRACTIONS)), (11, lambda: rng.choice(PUNCT)), (2, lambda: long_word(rng)),
             (2, lambda: rng.choice(SPECIAL)), (8, lambda: rng.choice(SPACES))]
    parts = []
    for _ in range(rng.randint(0, 24)):
        draw = rng.choices([k[1] for k in kinds], weights=[k[0] for k in kinds])[0]
        parts.append(draw())
        parts.append(rng.choice([" ", " ", " ", "", "  ", "\t"]))
    line = "".join(parts)
    return line.lstrip("\r") if rng.random() < 0.9 else line.strip()
