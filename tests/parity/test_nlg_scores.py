"""Parity: `dsee score` against the reference NLG scorers.

Writes a hypotheses file and four reference files (several references per
item, some items missing some, a blank line where one is missing) of
data-to-text-like sentences with varied case, punctuation, numbers, XML
entities, non-ASCII letters and odd whitespace, so that every tokenizer rule
matters, and hypotheses made from the references by dropping, repeating,
substituting and moving words (TER's shifts). Then:

  - native scores vs the libraries on the same tokens: BLEU and TER vs
    sacrebleu (cased and lower-cased), NIST vs nltk corpus_nist on sacrebleu's
    13a tokens, ROUGE-L and CIDEr-D vs pycocoevalcap Rouge and Cider on the
    lower-cased 13a tokens without PTB punctuation (core/train/nlg_scores.h).
    Tolerance 1e-6 (the issue asks 0.01 points for BLEU/TER, 1e-4 for
    ROUGE-L/CIDEr, 1e-3 for NIST): the computations are the same, and one
    token tokenized differently moves BLEU by more than 1e-6;
  - --official vs the libraries called here (PTBTokenizer for the
    pycocoevalcap metrics, METEOR included), and the tool each number names;
  - the error cases: exit status 1 and a message naming the file, line or
    metric and what to do.
"""
import json
import random
import shutil
import subprocess

import pytest
import sacrebleu
from nltk.translate.nist_score import corpus_nist
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from harness import check, check_close

ITEMS = 80
REF_FILES = 4
PTB_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                   "...", ";"}

WORDS = ["The", "Eagle", "is", "a", "coffee", "shop", "near", "Burger", "King", "in", "the", "city", "centre",
         "It", "serves", "French", "food", "and", "has", "high", "customer", "rating", "of", "5", "out", "5",
         "price", "range", "£20-25", "3.5", "1,000", "don't", "King's", "(near", "river)", "&amp;", "&quot;",
         "5-star", "e.g.", "Café", "ÉLAN", "Straße", "İstanbul", "naïve", "kid-friendly", "isn't", "AT", "Aromi",
         "riverside", "cheap", "Chinese", "family", "friendly", "not", "yes", "no", "50%", "#1", "x/y",
         "<skipped>", "well-known", "1990-2000", "U.S.", "$", "[sic]", "{a}", "c++", "@home", "~5", "100."]
PUNCT = [".", ",", "!", "?", ";", ":", " -", " --", "...", "'", "\"", ""]
SPACES = [" ", " ", " ", " ", "  ", "\t", "\u00a0", " \u2009"]


def sentence(rng, lo=4, hi=18):
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    if rng.random() < 0.5:
        words[0] = words[0].capitalize()
    text = ""
    for k, w in enumerate(words):
        text += (rng.choice(SPACES) if k else "") + w
        if rng.random() < 0.15:
            text += rng.choice(PUNCT)
    return text + rng.choice([".", ".", " .", "!", "", "  "])


def perturb(rng, text):
    words = text.split()
    for _ in range(rng.randint(0, 4)):
        op = rng.random()
        if not words:
            break
        k = rng.randrange(len(words))
        if op < 0.25:
            del words[k]
        elif op < 0.5:
            words[k] = rng.choice(WORDS)
        elif op < 0.7:
            words.insert(k, words[k])
        else:  # move a block: TER's shifts
            n = rng.randint(1, 3)
            block, words = words[k:k + n], words[:k] + words[k + n:]
            at = rng.randint(0, len(words))
            words = words[:at] + block + words[at:]
    out = " ".join(words)
    return out.upper() if rng.random() < 0.1 else out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(hypotheses, reference streams with None where missing, hyp path, ref paths)."""
    rng = random.Random(17)
    streams = [[] for _ in range(REF_FILES)]
    hyps = []
    for k in range(ITEMS):
        refs = [sentence(rng) for _ in range(REF_FILES)]
        present = rng.sample(range(REF_FILES), rng.randint(1, REF_FILES))
        for r in range(REF_FILES):
            streams[r].append(refs[r] if r in present else None)
        if k == 3:
            hyps.append("")  # an empty hypothesis
        elif k == 5:
            hyps.append(refs[present[0]])  # an exact match
        else:
            hyps.append(perturb(rng, refs[rng.choice(present)]))
    folder = tmp_path_factory.mktemp("scores")
    hyp_path = folder / "hyps.txt"
    hyp_path.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    ref_paths = []
    for r, stream in enumerate(streams):
        path = folder / f"refs{r}.txt"
        path.write_text("".join((s or "") + "\n" for s in stream), encoding="utf-8")
        ref_paths.append(str(path))
    return hyps, streams, str(hyp_path), ref_paths


def dsee_score(dsee, args):
    r = subprocess.run([dsee, "score", "--json"] + args, capture_output=True, text=True)
    check(f"dsee score {' '.join(args[-3:])} exits 0", r.returncode == 0, f"{r.returncode}: {r.stderr}")
    return json.loads(r.stdout)


def present_refs(streams, k):
    return [s[k] for s in streams if s[k] is not None]


def tokens_13a(text, lowercase):
    return Tokenizer13a()((text.lower() if lowercase else text).rstrip()).split()


def coco_text(text):
    return " ".join(t for t in tokens_13a(text, True) if t not in PTB_PUNCTUATION)


@pytest.mark.parametrize("case_sensitive", [False, True], ids=["lowercased", "cased"])
def test_native_scores_match_references(dsee, corpus, case_sensitive):
    hyps, streams, hyp_path, ref_paths = corpus
    args = ["--hyp", hyp_path, "--refs"] + ref_paths + (["--case-sensitive"] if case_sensitive else [])
    got = dsee_score(dsee, args)
    check("items and references counted", got["items"] == ITEMS and
          got["references"] == sum(s is not None for stream in streams for s in stream), str(got))
    scores = got["scores"]

    bleu = sacrebleu.metrics.BLEU(lowercase=not case_sensitive).corpus_score(hyps, streams)
    check_close("BLEU vs sacrebleu", scores["bleu"], bleu.score, abs=1e-6, reference="sacrebleu")
    check("BLEU is neither 0 nor 100 (the corpus tests something)", 5 < bleu.score < 95, f"{bleu.score}")
    ter = sacrebleu.metrics.TER(case_sensitive=case_sensitive).corpus_score(hyps, streams)
    check_close("TER vs sacrebleu", scores["ter"], ter.score, abs=1e-6, reference="sacrebleu")

    lower = not case_sensitive
    nist = corpus_nist([[tokens_13a(r, lower) for r in present_refs(streams, k)] for k in range(ITEMS)],
                       [tokens_13a(h, lower) for h in hyps], n=5)
    check_close("NIST vs nltk corpus_nist", scores["nist"], nist, abs=1e-6, reference="nltk")

    gts = {k: [coco_text(r) for r in present_refs(streams, k)] for k in range(ITEMS)}
    res = {k: [coco_text(h)] for k, h in enumerate(hyps)}
    rouge = Rouge().compute_score(gts, res)[0]
    check_close("ROUGE-L vs pycocoevalcap Rouge", scores["rouge_l"], rouge, abs=1e-6, reference="pycocoevalcap")
    cider = Cider().compute_score(gts, res)[0]
    check_close("CIDEr-D vs pycocoevalcap Cider", scores["cider"], cider, abs=1e-6, reference="pycocoevalcap")
    for metric, tool in got["tools"].items():
        check(f"{metric} says it is dsee's native scorer", tool.startswith("dsee native"), tool)


def test_text_output_one_line_per_metric(dsee, corpus):
    _, _, hyp_path, ref_paths = corpus
    r = subprocess.run([dsee, "score", "--hyp", hyp_path, "--metrics", "ter,bleu", "--refs"] + ref_paths,
                       capture_output=True, text=True)
    check("exits 0", r.returncode == 0, r.stderr)
    names = [line.split()[0] for line in r.stdout.splitlines()]
    check("one line per metric, in dsee's order", names == ["bleu", "ter"], r.stdout)
    expected = dsee_score(dsee, ["--hyp", hyp_path, "--metrics", "bleu,ter", "--refs"] + ref_paths)["scores"]
    for line in r.stdout.splitlines():
        name, value = line.split()[:2]
        check_close(f"text {name} equals the JSON one", float(value), expected[name], abs=5e-5)


def test_official_matches_libraries(dsee, corpus):
    if shutil.which("java") is None:
        pytest.skip("no java on PATH: METEOR and the PTB tokenizer need a JRE (launch/setup installs "
                    "default-jre-headless)")
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    hyps, streams, hyp_path, ref_paths = corpus
    got = dsee_score(dsee, ["--official", "--hyp", hyp_path, "--refs"] + ref_paths)
    scores, tools = got["scores"], got["tools"]
    check("every metric scored, METEOR included", sorted(scores) == sorted(
        ["bleu", "nist", "meteor", "rouge_l", "cider", "ter"]), str(scores))

    check_close("official BLEU", scores["bleu"], sacrebleu.metrics.BLEU(lowercase=True).corpus_score(
        hyps, streams).score, abs=1e-9, reference="sacrebleu")
    check_close("official TER", scores["ter"], sacrebleu.metrics.TER().corpus_score(hyps, streams).score,
                abs=1e-9, reference="sacrebleu")
    nist = corpus_nist([[tokens_13a(r, True) for r in present_refs(streams, k)] for k in range(ITEMS)],
                       [tokens_13a(h, True) for h in hyps], n=5)
    check_close("official NIST", scores["nist"], nist, abs=1e-9, reference="nltk")

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": r} for r in present_refs(streams, k)] for k in range(ITEMS)})
    res = tokenizer.tokenize({k: [{"caption": h}] for k, h in enumerate(hyps)})
    check_close("official ROUGE-L", scores["rouge_l"], Rouge().compute_score(gts, res)[0], abs=1e-9,
                reference="pycocoevalcap")
    check_close("official CIDEr", scores["cider"], Cider().compute_score(gts, res)[0], abs=1e-9,
                reference="pycocoevalcap")
    check_close("official METEOR", scores["meteor"], Meteor().compute_score(gts, res)[0], abs=1e-9,
                reference="pycocoevalcap")
    for metric, library in [("bleu", "sacrebleu"), ("ter", "sacrebleu"), ("nist", "nltk"),
                            ("meteor", "pycocoevalcap"), ("rouge_l", "pycocoevalcap"), ("cider", "pycocoevalcap")]:
        check(f"{metric} names {library}", tools[metric].startswith(library), tools[metric])

    native = dsee_score(dsee, ["--hyp", hyp_path, "--refs"] + ref_paths)["scores"]
    for metric in ["bleu", "ter", "nist"]:
        check_close(f"native {metric} equals official", native[metric], scores[metric], abs=1e-6)


def run_failing(dsee, args):
    r = subprocess.run([dsee, "score"] + args, capture_output=True, text=True)
    return r.returncode, r.stderr


def test_errors(dsee, corpus, tmp_path):
    _, _, hyp_path, ref_paths = corpus
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    code, err = run_failing(dsee, ["--hyp", hyp_path, "--refs", ref_paths[0], str(short)])
    check("line-count mismatch: exit 1 naming both files and counts",
          code == 1 and str(short) in err and hyp_path in err and "1 lines" in err and f"has {ITEMS}" in err, err)

    hyp3 = tmp_path / "h3.txt"
    hyp3.write_text("a\nb\nc\n", encoding="utf-8")
    r1, r2 = tmp_path / "r1.txt", tmp_path / "r2.txt"
    r1.write_text("a\n\nc\n", encoding="utf-8")
    r2.write_text("a\n \nc\n", encoding="utf-8")
    code, err = run_failing(dsee, ["--hyp", str(hyp3), "--refs", str(r1), str(r2)])
    check("an item without references: exit 1 naming the item and line", code == 1 and "item 2 (line 2" in err
          and "no reference" in err, err)

    code, err = run_failing(dsee, ["--hyp", str(hyp3), "--refs", str(r1), "--metrics", "bleu,chrf"])
    check("unknown metric: exit 1 naming it and listing the metrics", code == 1 and "'chrf'" in err
          and "bleu,nist,meteor,rouge_l,cider,ter" in err, err)

    code, err = run_failing(dsee, ["--hyp", str(hyp3), "--refs", str(r1), "--metrics", "meteor"])
    check("METEOR without --official: exit 1 saying to add --official", code == 1 and "--official" in err, err)

    missing = str(tmp_path / "nope.txt")
    code, err = run_failing(dsee, ["--hyp", missing, "--refs", str(r1)])
    check("missing --hyp file: exit 1 naming it", code == 1 and missing in err and "--hyp" in err, err)
    code, err = run_failing(dsee, ["--hyp", str(hyp3), "--refs", str(r1), missing])
    check("missing --refs file: exit 1 naming it", code == 1 and missing in err and "--refs" in err, err)

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("a\nb\ncaf\xe9\n".encode("latin-1"))
    code, err = run_failing(dsee, ["--hyp", str(latin1), "--refs", str(r1)])
    check("a file that is not UTF-8: exit 1 naming file and line", code == 1 and str(latin1) in err
          and "line 3" in err and "UTF-8" in err, err)

    code, err = run_failing(dsee, ["--refs", str(r1)])
    check("no --hyp: usage error, exit 2", code == 2 and "--hyp" in err, err)
