#!/usr/bin/env python3
"""Trains llmgate's prompt-injection classifier (`make train-guard`).

Logistic regression over hashed features of the normalised text, exported as
i8 weights to src/core/guard/guard_model.bin (format: see classifier.rs).

Reproducible: fixed seed, deterministic split (FNV-1a 32 of the record id,
mod 5 == 0 is held out and never trained on), pinned dependencies
(scripts/requirements-guard.txt).

The features are not re-implemented here: the Rust code that the filter runs
prints them (`cargo run --release --example guard_report -- --features`), so
normalisation, tokenisation and hashing cannot drift between training and
serving.

Training data (licence checked per source and per record):
- trained on: deepset, Lakera Gandalf and Mosscap, JailbreakBench benign
  (Apache-2.0 copy in Parapet), CyberSecEval (MIT), LLM Guard test cases
  (MIT), NotInject (MIT), XSTest safe prompts (CC-BY-4.0), awesome-chatgpt-
  prompts (CC0), and our own benign set tests/data/guard/benign_extra.jsonl;
- evaluation only: ProtectAI validation (licence not stated in the copy),
  Alpaca seed tasks (CC-BY-NC-4.0);
- never trained on: `harmful_plain` rows (out of scope for an injection
  detector) and every held-out row.

Usage: python scripts/train_guard.py [--corpus ../shared/corpus] [--out src/core/guard/guard_model.bin]
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

SEED = 20240601
BITS = 17
DIM = 1 << BITS
# Target false-positive rate on out-of-fold benign training texts; the
# exported bias puts this operating point at probability 0.5.
TARGET_FPR = 0.006

EVAL_ONLY = ("protectai_validation", "alpaca_seed_tasks")


def fnv1a32(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def heldout(rec_id: str) -> bool:
    return fnv1a32(rec_id) % 5 == 0


def load(corpus, extra):
    recs = []
    for sub in ("injection", "benign"):
        d = os.path.join(corpus, sub)
        for name in sorted(os.listdir(d)):
            if not name.endswith(".jsonl"):
                continue
            with open(os.path.join(d, name), encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        r = json.loads(line)
                        r["_file"] = name[: -len(".jsonl")]
                        recs.append(r)
    with open(extra, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r["_file"] = "benign_extra"
                recs.append(r)
    return recs


def trainable(r) -> bool:
    if r["label"] not in ("attack", "benign"):
        return False  # harmful_plain: out of scope
    if r["_file"].startswith(EVAL_ONLY):
        return False
    lic = r.get("license", "")
    if "NC" in lic:
        return False
    return not heldout(r["id"])


def features(root, texts):
    """Feature indices per text, from the Rust code."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.jsonl")
        out = os.path.join(tmp, "out.txt")
        with open(inp, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        cmd = ["cargo", "run", "--quiet", "--release", "--example", "guard_report", "--", "--features", inp, out]
        subprocess.run(cmd, cwd=root, check=True)
        with open(out, encoding="utf-8") as f:
            rows = [[int(x) for x in line.split()] for line in f]
    if len(rows) != len(texts):
        sys.exit(f"feature dump returned {len(rows)} rows for {len(texts)} texts")
    return rows


def matrix(rows):
    data, ind, ptr = [], [], [0]
    for r in rows:
        # binary features: each distinct feature once (as the Rust side)
        r = sorted(set(r))
        n = len(r)
        v = 1.0 / math.sqrt(n) if n else 0.0
        ind.extend(r)
        data.extend([v] * n)
        ptr.append(len(ind))
    m = sp.csr_matrix((np.array(data, dtype=np.float64), np.array(ind, dtype=np.int64), np.array(ptr)), shape=(len(rows), DIM))
    m.sum_duplicates()
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="../shared/corpus")
    ap.add_argument("--extra", default="tests/data/guard/benign_extra.jsonl")
    ap.add_argument("--out", default="src/core/guard/guard_model.bin")
    ap.add_argument("--C", type=float, default=16.0)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    recs = load(args.corpus, args.extra)
    train = [r for r in recs if trainable(r)]
    print(f"{len(recs)} records, {len(train)} used for training", file=sys.stderr)
    y = np.array([1 if r["label"] == "attack" else 0 for r in train])
    # our own benign texts count more: they are the only non-English and
    # informal benign examples (see the corpus README's known artifacts)
    w = np.array([3.0 if r["_file"] == "benign_extra" else 1.0 for r in train])
    X = matrix(features(root, [r["text"] for r in train]))

    def fit(Xa, ya, wa):
        clf = LogisticRegression(C=args.C, class_weight="balanced", max_iter=3000, solver="liblinear", random_state=SEED)
        clf.fit(Xa, ya, sample_weight=wa)
        return clf

    # out-of-fold scores choose the operating point
    oof = np.zeros(len(train))
    skf = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    for tr, te in skf.split(np.zeros(len(y)), y):
        clf = fit(X[tr], y[tr], w[tr])
        oof[te] = clf.decision_function(X[te])
    neg = np.sort(oof[y == 0])
    k = int(math.floor(len(neg) * (1.0 - TARGET_FPR)))
    thr = float(neg[min(k, len(neg) - 1)]) + 1e-6
    tpr = float(np.mean(oof[y == 1] > thr))
    fpr = float(np.mean(oof[y == 0] > thr))
    print(f"out-of-fold: threshold logit {thr:.3f}: detection {tpr:.3f}, FPR {fpr:.4f}", file=sys.stderr)

    clf = fit(X, y, w)
    coef = clf.coef_.ravel()
    bias = float(clf.intercept_[0]) - thr
    scale = float(np.max(np.abs(coef))) / 127.0 or 1.0
    q = np.clip(np.round(coef / scale), -127, 127).astype(np.int8)
    blob = b"LGC1" + bytes([BITS, 0, 0, 0]) + struct.pack("<ff", scale, bias) + q.tobytes()
    out = os.path.join(root, args.out) if not os.path.isabs(args.out) else args.out
    with open(out, "wb") as f:
        f.write(blob)
    print(f"wrote {out}: {len(blob)} bytes, {int(np.count_nonzero(q))} non-zero weights", file=sys.stderr)


if __name__ == "__main__":
    main()
