"""Throughput of the server's block write pipeline: chunk, hash, compress, encrypt.

Run by hand from the repository root:

    python -m bench.pipeline [--size-mib 256]

Each stage runs alone, then the whole pipeline (FastCDC chunking, then BlockService.put_plain
into a store that discards, so the disk is not measured), once in one thread and once spread
over two. Two threads only help where the C code releases the GIL, so the ratio of the two
columns says which stages do. Data is random (like media: incompressible) and text-like (log
lines, compressing about 3:1).
"""

import argparse
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backend.blocks import BlockService, compress_if_worthwhile
from backend.blockstore.base import BlockNotFound, BlockStore
from backend.protocol.chunking import iter_chunks
from backend.protocol.hashing import block_hash

MIB = 1024 * 1024
TEXT_TILE = 16 * MIB  # unique text, then repeated: too far apart for any block to see it
Stage = Callable[[Sequence], object]


class DiscardStore(BlockStore):
    """A block store that keeps nothing."""

    def put(self, key: str, data: bytes) -> None:
        pass

    def get(self, key: str) -> bytes:
        raise BlockNotFound(key)

    def delete(self, key: str) -> None:
        pass

    def exists(self, key: str) -> bool:
        return False

    def keys(self) -> Iterator[str]:
        return iter(())


def text_like(size: int, seed: int = 7) -> bytes:
    """Log-like lines over a small vocabulary."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(4000)]
    levels = ["INFO", "DEBUG", "WARN", "ERROR"]
    lines: list[str] = []
    length = 0
    while length < min(size, TEXT_TILE):
        stamp = f"10:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 10**6):06d}"
        text = " ".join(rng.choices(words, k=rng.randint(4, 14)))
        line = f"2026-11-26T{stamp} {rng.choice(levels)} req={rng.getrandbits(32):08x} {text}\n"
        lines.append(line)
        length += len(line)
    tile = "".join(lines).encode()[:TEXT_TILE]
    return (tile * (size // len(tile) + 1))[:size]


def run(stage: Stage, parts: Sequence[Sequence], threads: int, repeat: int = 5) -> float:
    """Best seconds of a few runs applying stage to every part, in turn or in parallel.

    The best run is the one least disturbed by page faults and other processes.
    """
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeat):
            start = time.perf_counter()
            list(pool.map(stage, parts))
            best = min(best, time.perf_counter() - start)
    return best


def chunk_stages(service: BlockService) -> dict[str, Stage]:
    """Stages over buffers: each gets a list of memoryviews."""

    def chunk(buffers: Sequence) -> None:
        for buffer in buffers:
            for _ in iter_chunks(buffer):
                pass

    def pipeline(buffers: Sequence) -> None:
        for buffer in buffers:
            for found in iter_chunks(buffer):
                service.put_plain(found.data)

    return {"fastcdc chunking": chunk, "whole pipeline": pipeline}


class Sample(NamedTuple):
    """One block as each stage needs it: plaintext, name, and the frame a client would send."""

    data: bytes
    hash: str
    wire: bytes


def block_stages(service: BlockService) -> dict[str, Stage]:
    """Stages over blocks: each gets a list of Samples."""
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)

    def zstd(level: int) -> Stage:
        def compress(samples: Sequence[Sample]) -> None:
            compressor = zstandard.ZstdCompressor(level=level)
            for sample in samples:
                compressor.compress(sample.data)

        return compress

    def each(step: Callable[[Sample], object]) -> Stage:
        def stage(samples: Sequence[Sample]) -> None:
            for sample in samples:
                step(sample)  # results are dropped at once, as the server drops them

        return stage

    return {
        "blake3": each(lambda s: block_hash(s.data)),
        "zstd level 1": zstd(1),
        "zstd level 3": zstd(3),
        "zstd as stored (probe)": each(lambda s: compress_if_worthwhile(s.data)),
        "aes-256-gcm": each(lambda s: aead.encrypt(nonce, s.data, None)),
        "put_plain": each(lambda s: service.put_plain(s.data)),
        "put_wire (client frame)": each(lambda s: service.put_wire(s.hash, s.wire)),
    }


def halves(items: Sequence) -> list[Sequence]:
    middle = len(items) // 2
    return [items[:middle], items[middle:]]


def measure(data: bytes) -> dict[str, tuple[float, float]]:
    """MB/s of every stage over data: {stage: (one thread, two threads)}."""
    service = BlockService(DiscardStore(), os.urandom(32))
    megabytes = len(data) / 1e6
    buffer_parts = [[part] for part in halves(memoryview(data))]
    compressor = zstandard.ZstdCompressor(level=1)
    blocks = [found.data for found in iter_chunks(data)]
    samples = [Sample(b, block_hash(b), compressor.compress(b)) for b in blocks]
    block_parts = halves(samples)
    results: dict[str, tuple[float, float]] = {}
    for stages, parts in (
        (chunk_stages(service), buffer_parts),
        (block_stages(service), block_parts),
    ):
        for name, stage in stages.items():
            one, two = run(stage, parts, 1), run(stage, parts, 2)
            results[name] = (megabytes / one, megabytes / two)
    stored = sum(service.put_plain(block).stored_size for block in blocks)
    print(f"  {len(blocks)} blocks, stored at {stored / len(data):.1%} of the plaintext size")
    return results


def print_table(columns: dict[str, dict[str, tuple[float, float]]]) -> None:
    names = list(next(iter(columns.values())))
    header = "".join(f"{kind + ' 1T':>14}{kind + ' 2T':>14}" for kind in columns)
    print(f"\n{'MB/s':<26}{header}")
    for name in names:
        cells = "".join(
            f"{columns[kind][name][0]:>14.0f}{columns[kind][name][1]:>14.0f}" for kind in columns
        )
        print(f"{name:<26}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="data per kind (MiB)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    columns: dict[str, dict[str, tuple[float, float]]] = {}
    for kind, make in (("random", os.urandom), ("text", text_like)):
        print(f"{kind}: {args.size_mib} MiB")
        columns[kind] = measure(make(size))
    print_table(columns)


if __name__ == "__main__":
    main()
