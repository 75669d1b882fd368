"""The reference NLG scorers behind `dsee score --official` (docs/scoring.md).

Reads the files as `dsee score` does (HYPS one hypothesis per line; each REFS
file one reference per line aligned with HYPS, a blank line where that item
has no reference of that index; lines end at '\\n', a '\\r' before it is
dropped) and prints one JSON object on standard output:

  {"scores": {metric: value}, "tools": {metric: "which tool, version, settings"}}

  bleu     sacrebleu BLEU (13a, exp smoothing; lower-cased unless --case-sensitive), 0-100
  ter      sacrebleu TER (default tercom settings; case-insensitive unless --case-sensitive), 0-100
  nist     nltk corpus_nist (n=5) on sacrebleu's 13a tokens (lower-cased unless --case-sensitive)
  meteor   pycocoevalcap Meteor (METEOR 1.5 jar, needs Java), 0-1
  rouge_l  pycocoevalcap Rouge, 0-1
  cider    pycocoevalcap Cider (CIDEr-D), raw

METEOR, ROUGE-L and CIDEr are computed on the text pycocoevalcap's
PTBTokenizer (Stanford CoreNLP, Java) makes of each line, as COCOEvalCap and
the E2E challenge scorer do. Missing references are left out (None to
sacrebleu's API; absent from the other scorers' lists).

Usage: python launch/score_official.py --hyp HYPS --refs REFS... --metrics bleu,ter,...
"""
import argparse
import contextlib
import importlib.metadata
import json
import sys

METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider", "ter")


def read_lines(path):
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_items(hyp_path, ref_paths):
    """(hypotheses, reference streams with None for a missing reference)."""
    hyps = read_lines(hyp_path)
    streams = []
    for path in ref_paths:
        refs = read_lines(path)
        if len(refs) != len(hyps):
            sys.exit(f"score_official: {path} has {len(refs)} lines but {hyp_path} has {len(hyps)}")
        streams.append([ref if ref.strip() else None for ref in refs])
    for k in range(len(hyps)):
        if all(stream[k] is None for stream in streams):
            sys.exit(f"score_official: item {k + 1} (line {k + 1} of {hyp_path}) has no reference")
    return hyps, streams


def ptb_tokenized(hyps, streams):
    """COCOEvalCap's input: {item: [PTB-tokenized references]}, {item: [PTB-tokenized hypothesis]}."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    gts = {k: [{"caption": s[k]} for s in streams if s[k] is not None] for k in range(len(hyps))}
    res = {k: [{"caption": h}] for k, h in enumerate(hyps)}
    tokenizer = PTBTokenizer()
    return tokenizer.tokenize(gts), tokenizer.tokenize(res)


def score(hyps, streams, metrics, case_sensitive):
    scores, tools = {}, {}
    if "bleu" in metrics or "ter" in metrics:
        import sacrebleu
        if "bleu" in metrics:
            bleu = sacrebleu.metrics.BLEU(lowercase=not case_sensitive)
            scores["bleu"] = bleu.corpus_score(hyps, streams).score
            tools["bleu"] = f"sacrebleu {sacrebleu.__version__} BLEU {bleu.get_signature()}"
        if "ter" in metrics:
            ter = sacrebleu.metrics.TER(case_sensitive=case_sensitive)
            scores["ter"] = ter.corpus_score(hyps, streams).score
            tools["ter"] = f"sacrebleu {sacrebleu.__version__} TER {ter.get_signature()}"
    if "nist" in metrics:
        import nltk
        from nltk.translate.nist_score import corpus_nist
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
        tokenize = Tokenizer13a()

        def tokens(text):
            return tokenize((text if case_sensitive else text.lower()).rstrip()).split()
        refs = [[tokens(s[k]) for s in streams if s[k] is not None] for k in range(len(hyps))]
        scores["nist"] = corpus_nist(refs, [tokens(h) for h in hyps], n=5)
        tools["nist"] = (f"nltk {nltk.__version__} corpus_nist n=5 on sacrebleu 13a tokens, "
                         f"{'cased' if case_sensitive else 'lower-cased'}")
    coco = [m for m in ("meteor", "rouge_l", "cider") if m in metrics]
    if coco:
        version = importlib.metadata.version("pycocoevalcap")
        gts, res = ptb_tokenized(hyps, streams)
        for metric in coco:
            if metric == "meteor":
                from pycocoevalcap.meteor.meteor import Meteor
                scorer, name = Meteor(), "Meteor (METEOR 1.5)"
            elif metric == "rouge_l":
                from pycocoevalcap.rouge.rouge import Rouge
                scorer, name = Rouge(), "Rouge"
            else:
                from pycocoevalcap.cider.cider import Cider
                scorer, name = Cider(), "Cider (CIDEr-D)"
            scores[metric] = float(scorer.compute_score(gts, res)[0])
            tools[metric] = f"pycocoevalcap {version} {name} on PTBTokenizer tokens"
    return scores, tools


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hyp", required=True)
    parser.add_argument("--refs", nargs="+", required=True)
    parser.add_argument("--metrics", default=",".join(METRICS))
    parser.add_argument("--case-sensitive", action="store_true")
    args = parser.parse_args()
    metrics = [m for m in args.metrics.split(",") if m]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        sys.exit(f"score_official: unknown metrics {unknown}; the metrics are {','.join(METRICS)}")
    hyps, streams = read_items(args.hyp, args.refs)
    # The scorers' own prints (pycocoevalcap's) go to standard error: standard output is the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        scores, tools = score(hyps, streams, metrics, args.case_sensitive)
    json.dump({"scores": scores, "tools": tools}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
