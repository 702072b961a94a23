#!/usr/bin/env python3
"""Differential fuzzer: the Rust core (crdtsync._native) against the Python reference.

Theory of operation
-------------------
Every input is generated deterministically from ``(seed, index)`` and fed to
both implementations; ANY disagreement fails the run:

``update`` inputs (v1 update bytes, checked under one of several limit sets)
    ``_yupdate.parse_update`` vs ``_native.parse_update`` (and
    ``_native.check_update``): the same accept/refuse, the same error class
    (MalformedUpdateError / UpdateLimitError), and when accepted the same
    ``ParsedUpdate`` field by field, in the same order; the native
    ``encode()`` gives back the input. An accepted input then takes the
    columnar round trip on both sides: ``compact_encode`` byte-identical,
    ``compact_decode`` of it giving back the input on both.
``compact`` inputs (hostile compact-format bytes)
    ``_columnar.compact_decode`` vs ``_native.compact_decode``: the same
    outcome, class and output bytes. Inputs are compact encodings of valid
    updates, re-framed as stored / zstd / LZMA (layout 1) or column by column
    with a codec each (layout 2), mutated at the byte level, at
    the column level (one column mutated, the framing kept consistent so the
    decoder goes deep), at the header, and crafted key-repeat bombs.
``zstd`` inputs
    ``encoding._unzstd`` vs ``_native.zstd_unframe``.

Sources of updates: random pycrdt editing sessions and the structured
mutations of ``scripts/fuzz_updates.py`` (imported, not copied), prefixes of
the editing traces in ``../shared/traces``, the crasher fixtures of
``tests/fixtures/crashers`` and ``../shared/corpus``, random bytes and
truncations. The full traces themselves are checked once at start.

Usage::

    scripts/fuzz_differential.py --count 1000000 --workers 2 --seed 1

Inputs that disagree are written to ``--out`` (``<kind>-<seed>-<index>.bin``
plus a ``.txt`` saying how they disagree); the exit status is 1 if any did.
``run_range`` is what tests/test_native_differential.py calls in-process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "scripts")):
    if p not in sys.path:
        sys.path.insert(0, p)

from fuzz_updates import (  # noqa: E402 - after the sys.path set-up
    _INTERESTING,
    Sample,
    _varuint,
    build_corpus,
    mutate_bytes,
    mutate_struct,
)

from crdtsync.errors import InvalidUpdateError  # noqa: E402
from crdtsync.format import columnar as col  # noqa: E402
from crdtsync.format import yupdate as y  # noqa: E402
from crdtsync.format.accel import to_parsed_update  # noqa: E402
from crdtsync.format.envelope import _unzstd  # noqa: E402

CRASHERS = REPO / "tests" / "fixtures" / "crashers"
SHARED = REPO.parent / "shared"
TRACES = ("automerge-paper", "seph-blog1", "friendsforever_flat")

#: Limit sets an update input is checked under (each tighter than the default
#: in every field, so an input one accepts is one the default accepts).
LIMIT_SETS: tuple[y.UpdateLimits, ...] = (
    y.DEFAULT_LIMITS,
    y.DEFAULT_LIMITS,
    y.UpdateLimits(
        max_update_bytes=4096,
        max_structs=60,
        max_clients=3,
        max_any_depth=3,
        max_string_bytes=40,
        max_key_bytes=6,
        max_delete_ranges=12,
        max_any_values=30,
        max_clock=500,
    ),
    y.UpdateLimits(max_any_depth=2, max_key_bytes=1, max_clock=100_000, max_any_values=4),
    y.UpdateLimits(max_update_bytes=300, max_structs=8, max_clients=1, max_delete_ranges=2),
)


def native() -> Any:
    """The extension module (imported directly: the comparison needs both paths)."""
    from crdtsync import _native  # type: ignore[attr-defined]

    return _native


# --------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------


@dataclass
class Seeds:
    """Everything inputs are made from (built once per process)."""

    corpus: list[Sample]
    extra: list[bytes]  # crashers, shared corpus, trace prefixes
    compact_cache: dict[int, bytes] = field(default_factory=dict)


def _trace_prefix_updates(names: Sequence[str], lengths: Sequence[int]) -> list[bytes]:
    """v1 updates of the first transactions of each trace (replayed through pycrdt)."""
    import pycrdt

    out: list[bytes] = []
    for name in names:
        path = SHARED / "traces" / f"{name}.json.gz"
        if not path.exists():
            continue
        trace = json.loads(gzip.decompress(path.read_bytes()))
        for n in lengths:
            doc = pycrdt.Doc(client_id=2**52 + 12345)
            text = doc.get("text", type=pycrdt.Text)
            text.insert(0, trace.get("startContent", ""))
            content = str(text)
            for txn in trace["txns"][:n]:
                for pos, ndel, ins in txn["patches"]:
                    # positions are code points: convert through the Python string
                    b = len(content[:pos].encode())
                    if ndel:
                        nb = len(content[pos : pos + ndel].encode())
                        del text[b : b + nb]
                    if ins:
                        text.insert(b, ins)
                    content = content[:pos] + ins + content[pos + ndel :]
            out.append(doc.get_update())
    return out


def build_seeds(seed: int, sessions: int = 40) -> Seeds:
    """Valid samples and fixtures for ``seed`` (deterministic)."""
    corpus = build_corpus(seed, sessions)
    extra: list[bytes] = []
    for p in sorted(CRASHERS.glob("*.bin")) + sorted(CRASHERS.glob("*.prior")):
        extra.append(p.read_bytes())
    for p in sorted((SHARED / "corpus").glob("*.bin")):
        extra.append(p.read_bytes())
    extra.extend(_trace_prefix_updates(TRACES, (5, 60, 400)))
    return Seeds(corpus, extra)


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

_COMPACT_COLUMNS = 11


def _split_block(block: bytes) -> list[bytes] | None:
    """The columns of a column block (None if it is not one)."""
    try:
        pos = 0
        n, pos = y._read_varuint(block, pos, 32, "n")
        cols = []
        for _ in range(n):
            ln, pos = y._read_varuint(block, pos, 64, "len")
            cols.append(block[pos : pos + ln])
            pos += ln
        return cols
    except InvalidUpdateError:
        return None


def _join_block(cols: Sequence[bytes]) -> bytes:
    return _varuint(len(cols)) + b"".join(_varuint(len(c)) + c for c in cols)


def _frame(rng: random.Random, block: bytes) -> bytes:
    """Wraps a column block in the compact header with a random codec."""
    size = len(block)
    if rng.random() < 0.1:
        size = max(0, size + rng.choice([-1, 1, 2, 1000, 2**20, 2**40]))
    if rng.random() < 0.35:
        cols = _split_block(block)
        if cols is not None and len(cols) == _COMPACT_COLUMNS:
            return _frame_per_column(rng, cols, size)
    r = rng.random()
    if r < 0.6:
        return bytes((1, 0)) + _varuint(size) + block
    if r < 0.85:
        return bytes((1, 2)) + _varuint(size) + zstandard.ZstdCompressor(level=1).compress(block)
    dict_log = rng.choice([12, 12, 16, 26])
    filters = col._lzma_filters(dict_log)
    payload = lzma.compress(block, format=lzma.FORMAT_RAW, filters=filters)
    return bytes((1, 1 | dict_log << 2)) + _varuint(size) + payload


def _frame_per_column(rng: random.Random, cols: Sequence[bytes], size: int) -> bytes:
    """Layout 2: each column with its own random codec (lengths sometimes wrong)."""
    out = bytearray((2,)) + _varuint(size)
    for c in cols:
        r = rng.random()
        if r < 0.4:
            codec, packed = 0, c
        elif r < 0.7:
            codec, packed = 2, zstandard.ZstdCompressor(level=1).compress(c)
        else:
            dict_log = rng.choice([12, 12, 16, 26])
            filters = col._lzma_filters(dict_log)
            codec, packed = (
                1 | dict_log << 2,
                lzma.compress(c, format=lzma.FORMAT_RAW, filters=filters),
            )
        n = len(c)
        if rng.random() < 0.03:
            n = max(0, n + rng.choice([-1, 1, 2**20]))
        out += bytes((codec,)) + _varuint(n) + _varuint(len(packed)) + packed
    if rng.random() < 0.03:
        out += b"\x00"
    return bytes(out)


def _compact_of(seeds: Seeds, i: int) -> bytes | None:
    """Cached ``compact_encode`` of corpus sample ``i`` (None if it does not parse)."""
    if i not in seeds.compact_cache:
        try:
            seeds.compact_cache[i] = col.compact_encode(seeds.corpus[i].update)
        except InvalidUpdateError:
            seeds.compact_cache[i] = b""
    return seeds.compact_cache[i] or None


def _block_of(compact: bytes) -> bytes:
    """The column block inside a compact encoding made by compact_encode."""
    if compact[0] == col.VERSION_PER_COLUMN:
        head = col._Col(compact, "header")
        head.pos = 1
        size = head.uint(64)
        return col._decompress_columns(head, size)
    codec = compact[1]
    size, pos = y._read_varuint(compact, 2, 64, "size")
    payload = compact[pos:]
    if codec & 3 == 0:
        return payload
    if codec & 3 == 2:
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=size)
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=col._lzma_filters(codec >> 2))
    return dec.decompress(payload)


def _bomb(rng: random.Random) -> bytes:
    """A column block whose items all name one long root key (the output balloons)."""
    key = ("k" * rng.choice([1, 7, 100, 5000, 65536])).encode()
    # (at most ~72 MB of output: the Python reference really allocates it)
    n = rng.choice([1, 10, 100, 1100])
    cols: list[bytes] = [b""] * _COMPACT_COLUMNS
    cols[0] = _varuint(rng.choice([1, 2**32, 2**53]))  # clients
    cols[1] = _varuint(1) + _varuint(0) + _varuint(n) + _varuint(0)  # one block of n structs
    cols[2] = bytes((rng.choice([4, 4, 4, 8, 1]),)) * n  # info: String (or Any, Deleted)
    cols[5] = b"\x01\x00" * n  # parent: root key 0
    cols[6] = _varuint(len(key)) + key
    kind = cols[2][0]
    if kind == 4:
        cols[7] = b"\x01" * n
        cols[8] = b"x" * n
    elif kind == 8:
        cols[9] = b"\x01\x7e" * n
    else:
        cols[7] = b"\x01" * n
    cols[10] = _varuint(0)
    if rng.random() < 0.3:  # and a fault somewhere after the balloon
        i = rng.randrange(_COMPACT_COLUMNS)
        cols[i] = cols[i] + b"\x00"
    return _join_block(cols)


def make_input(seeds: Seeds, seed: int, index: int) -> tuple[str, bytes, int]:
    """Input number ``index``: (kind, bytes, limit set index)."""
    rng = random.Random(f"diff:{seed}:{index}")
    corpus = seeds.corpus
    si = rng.randrange(len(corpus))
    sample = corpus[si]
    other = rng.choice(corpus).update
    limits_i = rng.randrange(len(LIMIT_SETS))
    r = rng.random()
    if r < 0.04:
        return "update", rng.randbytes(rng.randint(0, 64)), limits_i
    if r < 0.08:
        cut = rng.randrange(max(1, len(sample.update)))
        return "update", sample.update[:cut], limits_i
    if r < 0.13:
        return "update", sample.update, limits_i
    if r < 0.19:
        data = rng.choice(seeds.extra)
        if rng.random() < 0.7:
            data = mutate_bytes(rng, data, other)
        return "update", data, limits_i
    if r < 0.45:
        return "update", mutate_bytes(rng, sample.update, other), limits_i
    if r < 0.72:
        for _ in range(3):
            out = mutate_struct(rng, sample.update, sample.prior)
            if out is not None:
                if rng.random() < 0.15:
                    out = mutate_bytes(rng, out, other)
                return "update", out, limits_i
        return "update", mutate_bytes(rng, sample.update, other), limits_i
    if r < 0.97:
        return "compact", _compact_input(rng, seeds, si), limits_i
    return "zstd", _zstd_input(rng, sample.update), limits_i


def _compact_input(rng: random.Random, seeds: Seeds, si: int) -> bytes:
    compact = _compact_of(seeds, si)
    if compact is None or rng.random() < 0.08:
        return _frame(rng, _bomb(rng))
    r = rng.random()
    if r < 0.1:
        return compact
    if r < 0.25:  # the real bytes, mutated (header, codec, compressed stream)
        return mutate_bytes(rng, compact, b"")
    block = _block_of(compact)
    if r < 0.45:
        return _frame(rng, mutate_bytes(rng, block, b""))
    cols = _split_block(block)
    assert cols is not None
    assert len(cols) == _COMPACT_COLUMNS
    for _ in range(rng.choice([1, 1, 2])):
        i = rng.randrange(_COMPACT_COLUMNS)
        if rng.random() < 0.2 and cols[i]:
            # a varuint somewhere replaced by an interesting value
            j = rng.randrange(len(cols[i]))
            cols[i] = cols[i][:j] + _varuint(rng.choice(_INTERESTING)) + cols[i][j + 1 :]
        else:
            cols[i] = mutate_bytes(rng, cols[i], cols[rng.randrange(_COMPACT_COLUMNS)])
    return _frame(rng, _join_block(cols))


def _zstd_input(rng: random.Random, data: bytes) -> bytes:
    frame = zstandard.ZstdCompressor(
        level=rng.choice([1, 3]), write_content_size=rng.random() < 0.9
    ).compress(data)
    r = rng.random()
    if r < 0.2:
        return frame
    if r < 0.3:  # a skippable frame, maybe followed by the real one
        skip = (0x184D2A50 + rng.randrange(16)).to_bytes(4, "little")
        body = rng.randbytes(rng.randint(0, 8))
        return (
            skip + len(body).to_bytes(4, "little") + body + (frame if rng.random() < 0.5 else b"")
        )
    if r < 0.4:
        return frame + frame
    return mutate_bytes(rng, frame, b"")


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------

Outcome = tuple[str, Any]


def outcome(fn: Callable[[], Any]) -> Outcome:
    """("ok", value) or (error class name, message); other exceptions are marked."""
    try:
        return "ok", fn()
    except InvalidUpdateError as exc:
        return type(exc).__name__, str(exc)
    except Exception as exc:  # a bug on either side: reported as a disagreement
        return f"unexpected {type(exc).__name__}", repr(exc)


def _same(py: Outcome, nat: Outcome) -> bool:
    return py[0] == nat[0]


def check_update(nat: Any, data: bytes, limits: y.UpdateLimits) -> tuple[str, str | None]:
    """Compares the two parsers on ``data``; returns (outcome class, problem or None)."""
    py = outcome(lambda: y.parse_update(data, limits))
    nu = outcome(lambda: nat.parse_update(data, limits))
    if not _same(py, nu):
        return py[0], f"parse: python {py[0]} ({py[1]!r:.300}) vs native {nu[0]} ({nu[1]!r:.300})"
    nc = outcome(lambda: nat.check_update(data, limits))
    if nc[0] != py[0]:
        return py[0], f"check_update: python {py[0]} vs native {nc[0]} ({nc[1]!r:.300})"
    if py[0] != "ok":
        return py[0], None
    pp: y.ParsedUpdate = py[1]
    np = to_parsed_update(nu[1])
    if list(pp.clients.items()) != list(np.clients.items()):
        return "ok", "parse: the structs differ"
    if list(pp.delete_set.items()) != list(np.delete_set.items()):
        return "ok", "parse: the delete sets differ"
    if nu[1].encode() != data:
        return "ok", "native encode() is not the input"
    if y.encode_update(np) != data:
        return "ok", "python encode_update of the native parse is not the input"
    # Columnar round trip (compact_encode parses under the default limits).
    pe = outcome(lambda: col.compact_encode(data))
    ne = outcome(lambda: nat.compact_encode(data, y.DEFAULT_LIMITS))
    if pe[0] != ne[0]:
        return "ok", f"compact_encode: python {pe[0]} vs native {ne[0]} ({ne[1]!r:.300})"
    if pe[0] != "ok":
        return "ok", None
    if pe[1] != ne[1]:
        return "ok", "compact_encode: different bytes"
    for name, fn in (
        ("python", lambda: col.compact_decode(pe[1], limits)),
        ("native", lambda: nat.compact_decode(pe[1], limits)),
    ):
        back = outcome(fn)
        if back[0] == "ok" and back[1] != data:
            return "ok", f"compact round trip ({name}): different bytes"
        if back[0] not in ("ok", "UpdateLimitError"):
            return "ok", f"compact round trip ({name}): {back[0]} {back[1]!r:.300}"
    return "ok", None


def check_compact(nat: Any, data: bytes, limits: y.UpdateLimits) -> tuple[str, str | None]:
    """Compares the two compact decoders on ``data``."""
    py = outcome(lambda: col.compact_decode(data, limits))
    nu = outcome(lambda: nat.compact_decode(data, limits))
    if not _same(py, nu):
        return py[0], (
            f"compact_decode: python {py[0]} ({py[1]!r:.300}) vs native {nu[0]} ({nu[1]!r:.300})"
        )
    if py[0] == "ok" and py[1] != nu[1]:
        return "ok", "compact_decode: different bytes"
    return py[0], None


def check_zstd(nat: Any, data: bytes, limits: y.UpdateLimits) -> tuple[str, str | None]:
    """Compares the two bounded zstd unframers on ``data``."""
    limit = limits.max_update_bytes
    py = outcome(lambda: _unzstd(data, limit))
    nu = outcome(lambda: nat.zstd_unframe(data, limit))
    if not _same(py, nu):
        return py[0], (
            f"unzstd: python {py[0]} ({py[1]!r:.300}) vs native {nu[0]} ({nu[1]!r:.300})"
        )
    if py[0] == "ok" and py[1] != nu[1]:
        return "ok", "unzstd: different bytes"
    return py[0], None


CHECKS = {"update": check_update, "compact": check_compact, "zstd": check_zstd}


@dataclass
class Result:
    """What a range of inputs gave."""

    count: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[int, str, str]] = field(default_factory=list)  # (index, kind, what)


_SEEDS: dict[int, Seeds] = {}


def seeds_for(seed: int) -> Seeds:
    """The seeds of ``seed``, built once per process."""
    if seed not in _SEEDS:
        _SEEDS[seed] = build_seeds(seed)
    return _SEEDS[seed]


def run_range(seed: int, start: int, stop: int) -> Result:
    """Checks inputs ``[start, stop)`` of ``seed``."""
    nat = native()
    seeds = seeds_for(seed)
    res = Result()
    for index in range(start, stop):
        kind, data, li = make_input(seeds, seed, index)
        got, problem = CHECKS[kind](nat, data, LIMIT_SETS[li])
        res.count += 1
        res.outcomes[f"{kind}:{got}"] += 1
        if problem is not None:
            res.problems.append((index, kind, problem))
    return res


def check_full_traces() -> list[str]:
    """The full editing traces: parse, round trips and compact codec agree."""
    problems = []
    nat = native()
    for name in TRACES:
        path = SHARED / "traces" / f"{name}.json.gz"
        if not path.exists():
            continue
        (data,) = _trace_prefix_updates([name], [10**9])
        _, problem = check_update(nat, data, y.DEFAULT_LIMITS)
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def _save(out: Path, seed: int, index: int, kind: str, problem: str) -> Path:
    seeds = seeds_for(seed)
    _, data, li = make_input(seeds, seed, index)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}-{seed}-{index}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(f"{problem}\nlimits: {LIMIT_SETS[li]}\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first input index")
    ap.add_argument("--chunk", type=int, default=2_000, help="inputs per task")
    ap.add_argument("--out", type=Path, default=Path("fuzz-differential-failures"))
    ap.add_argument("--skip-traces", action="store_true", help="skip the full-trace check")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    problems: list[tuple[int, str, str]] = []
    if not args.skip_traces:
        for p in check_full_traces():
            print("DISAGREEMENT (full trace):", p, flush=True)
            problems.append((-1, "trace", p))
        print(f"full traces checked in {time.monotonic() - t0:.1f}s", flush=True)
    total = Counter[str]()
    done = 0
    stop = args.start + args.count
    ranges = [(s, min(s + args.chunk, stop)) for s in range(args.start, stop, args.chunk)]
    t1 = time.monotonic()
    last = t1
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_range, args.seed, a, b) for a, b in ranges]
        for fut in as_completed(futures):
            res = fut.result()
            done += res.count
            total.update(res.outcomes)
            for index, kind, problem in res.problems:
                path = _save(args.out, args.seed, index, kind, problem)
                print(f"DISAGREEMENT #{index} ({kind}): {problem} -> {path}", flush=True)
                problems.append((index, kind, problem))
            now = time.monotonic()
            if now - last > 30 or done == args.count:
                last = now
                rate = done / (now - t1)
                print(
                    f"{done:,}/{args.count:,} inputs, {len(problems)} disagreements, {rate:,.0f}/s",
                    flush=True,
                )
    elapsed = time.monotonic() - t0
    print(f"\n{done:,} inputs (seed {args.seed}) in {elapsed:,.0f}s, {len(problems)} disagreements")
    for key, n in sorted(total.items()):
        print(f"  {key:40} {n:>10,}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
