"""Realistic DICT entries and the bulk fill the memory and growth benchmarks load them with.

Memory per entry depends on the payload: a sample with short, identical fields would flatter
every layout. So each entry gets a key of one of the five DICT key types with a value shaped like
the real thing (an 11-digit CPF, a 14-digit CNPJ, a +55 phone, an e-mail address, a UUID EVP),
an account at one of the large ISPBs with branch, number and account type, an owner name and
tax id, and two timestamps, drawn from a seeded RNG so two runs load the same data.

The fill is pipelined (``batch`` writes per round trip): one write per round trip would make the
1M-key growth step take minutes. Our layout is written by the entry cache's own scripts with the
same keys and arguments as :meth:`smoke.strategies.entries.EntryCache.write`: its reservation
step on the markers' tier (the state tier since issue 13; by default the same node, as an
``EntryCache`` without ``markers``), then its store step (entry in layout ``E1`` + pointer) on the
cache tier; the memory and growth benchmarks load the cache tier's half alone, and the memory
benchmark the markers' half alone (:func:`fill_markers`); the seed's layout is the seed's two
``SETEX`` of the full JSON document (TSP-003 §3.1, ``SetByID`` + ``SetByKey``). The
test suite checks that a bulk-filled entry is stored on the cache tier exactly as
``EntryCache.write`` stores it.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis

from smoke.strategies.entries import _RESERVE as ENTRY_RESERVE_SCRIPT  # the strategy's own scripts, not copies
from smoke.strategies.entries import _WRITE as ENTRY_WRITE_SCRIPT
from smoke.strategies.entries import ID_KEY, KEY_TYPES, POINTER_KEY, Account, Entry, EntryCache, Owner

# Large Brazilian ISPBs (Banco do Brasil, Itaú, Caixa, Bradesco, Santander, Nubank, Inter).
ISPBS = ("00000000", "60701190", "00360305", "60746948", "90400888", "18236120", "00416968")
ACCOUNT_TYPES = ("CACC", "SVGS", "SLRY", "TRAN")
FIRST_NAMES = ("Maria", "José", "Ana", "João", "Francisca", "Antônio", "Adriana", "Carlos", "Juliana", "Luiz")
MIDDLE_NAMES = ("Aparecida", "Carlos", "Cristina", "Eduardo", "Fernanda", "Henrique", "Lúcia", "Roberto")
LAST_NAMES = ("da Silva", "dos Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima")
DOMAINS = ("gmail.com", "hotmail.com", "yahoo.com.br", "outlook.com", "uol.com.br", "empresa.com.br")
COMPANY_SUFFIXES = ("Comércio de Alimentos Ltda", "Serviços Digitais S.A.", "Transportes ME", "Tecnologia Ltda")


def _digits(rng: random.Random, n: int) -> str:
    return f"{rng.randrange(10**n):0{n}d}"


def _stamp(rng: random.Random, year: int) -> str:
    return (
        f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
    )


def realistic_entry(rng: random.Random, n: int) -> Entry:
    """Entry number ``n`` of a dataset: key types in turn, everything else drawn from ``rng``."""
    key_type = KEY_TYPES[n % len(KEY_TYPES)]
    first, middle, last = rng.choice(FIRST_NAMES), rng.choice(MIDDLE_NAMES), rng.choice(LAST_NAMES)
    person = f"{first} {middle} {last}"
    if key_type == "CNPJ":
        owner = Owner(f"{last.split()[-1]} {rng.choice(COMPANY_SUFFIXES)}", _digits(rng, 14), "LEGAL_PERSON")
        key_value = owner.tax_id
    else:
        owner = Owner(person, _digits(rng, 11))
        key_value = {
            "CPF": owner.tax_id,
            "PHONE": f"+55{rng.randint(11, 99)}9{_digits(rng, 8)}",
            "EMAIL": f"{first.lower()}.{last.split()[-1].lower()}{n}@{rng.choice(DOMAINS)}",
            "EVP": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        }[key_type]
    account = Account(
        rng.choice(ISPBS),
        _digits(rng, 4),
        f"{_digits(rng, rng.randint(6, 10))}-{_digits(rng, 1)}",
        rng.choice(ACCOUNT_TYPES),
    )
    return Entry(
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        key_type=key_type,
        key_value=key_value,
        account=account,
        owner=owner,
        version=rng.randint(1, 20),
        created_at=_stamp(rng, 2023),
        updated_at=_stamp(rng, 2025),
    )


def entries(seed: int, start: int, count: int) -> Iterator[Entry]:
    """Entries ``start`` .. ``start + count - 1`` drawn from one RNG seeded with (seed, start):
    the same arguments give the same data."""
    rng = random.Random(f"{seed}:{start}")
    for n in range(start, start + count):
        yield realistic_entry(rng, n)


def entry_json(entry: Entry) -> str:
    """``entry.to_json()`` (the DICT document the seed caches), byte for byte, without
    ``dataclasses.asdict``'s deep copy (which costs more than the rest of a bulk write); the test
    suite holds the two equal."""
    a, o = entry.account, entry.owner
    document = {
        "id": entry.id,
        "key_type": entry.key_type,
        "key_value": entry.key_value,
        "account": {"ispb": a.ispb, "branch": a.branch, "number": a.number, "type": a.type},
        "owner": {"name": o.name, "tax_id": o.tax_id, "type": o.type},
        "version": entry.version,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def fill_parallel(
    write: Callable[[list[Entry]], object], source: Iterator[Entry], batch: int = 1000, threads: int = 2
) -> int:
    """Feed ``source`` to ``write`` in batches from ``threads`` threads; returns the entries
    written. While one thread waits for its pipeline's replies (the GIL released), another
    builds the next batch, which roughly halves a bulk load on two cores."""
    lock = threading.Lock()
    written = [0]
    failures: list[BaseException] = []

    def worker() -> None:
        while not failures:
            with lock:
                chunk = list(itertools.islice(source, batch))
            if not chunk:
                return
            try:
                write(chunk)
            except BaseException as exc:
                failures.append(exc)
                return
            with lock:
                written[0] += len(chunk)

    workers = [threading.Thread(target=worker, name=f"fill-{i}") for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if failures:
        raise failures[0]
    return written[0]


def fill_our_layout(
    master: redis.Redis,
    cache: EntryCache,
    batch: list[Entry],
    markers: redis.Redis | None = None,
    *,
    cache_tier_only: bool = False,
) -> list[str]:
    """Write ``batch`` as ``EntryCache.write`` does, pipelined: the reservations on ``markers``
    (the markers' tier; ``None``: ``master`` itself, as an ``EntryCache`` without ``markers``),
    then on ``master`` (the cache tier) the store of each reserved entry (entry + pointer).
    ``cache_tier_only``: no reservations, only the layout the cache tier holds, which the memory
    and growth benchmarks measure (a bulk load of fresh entries has no order to keep). Returns
    each write's outcome (``stored`` unless the data was already there, ``stale`` if its
    reservation was refused)."""
    outcomes = {entry.id: "stored" for entry in batch}
    if not cache_tier_only:
        reserved = fill_markers(master if markers is None else markers, cache, batch)
        outcomes.update({e.id: "stale" for e, ok in zip(batch, reserved, strict=True) if ok != "ok"})
    prefix = cache.prefix + POINTER_KEY
    todo = [entry for entry in batch if outcomes[entry.id] == "stored"]
    calls = [
        (
            [cache.id_key(entry.id), cache.pointer_key(entry.key_type, entry.key_value)],
            [entry.id, entry.to_value(), entry.version, cache.ttl_ms, prefix],
        )
        for entry in todo
    ]
    outcomes.update(zip((e.id for e in todo), _pipelined(master, ENTRY_WRITE_SCRIPT, calls), strict=True))
    return [outcomes[entry.id] for entry in batch]


def fill_markers(node: redis.Redis, cache: EntryCache, batch: list[Entry]) -> list[str]:
    """The reservation step of ``EntryCache.write`` for each entry of ``batch``, pipelined on
    ``node`` (the markers' tier): the version marker a write-through leaves. Each outcome
    (``ok``, or ``stale`` for a version below the marker's floor)."""
    epoch_ttl_ms = max(cache.marker_ttl_ms, cache.lease_ms)
    calls: list[tuple[list[str], list[object]]] = [
        ([cache.marker_key(entry.id), cache.negative_epoch_key()], [entry.version, cache.marker_ttl_ms, epoch_ttl_ms])
        for entry in batch
    ]
    return _pipelined(node, ENTRY_RESERVE_SCRIPT, calls)


def _pipelined(node: redis.Redis, script: Any, calls: list[tuple[list[str], list[object]]]) -> list[str]:
    """Run ``script`` once per (keys, args) in one pipeline on ``node``; each reply's outcome."""
    if not calls:
        return []
    pipe = node.pipeline(transaction=False)
    for keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    try:
        replies = pipe.execute()
    except redis.exceptions.NoScriptError:
        node.script_load(script.source)
        return _pipelined(node, script, calls)
    return [_text(reply[1]) for reply in replies]


def fill_seed_layout(master: redis.Redis, prefix: str, batch: list[Entry], ttl_s: int = 300) -> None:
    """Write ``batch`` as the seed does: the full JSON under the id key and under the key key.

    ``SET ... EX`` stores exactly what the seed's ``SETEX`` does, and the application ACL user
    (the one the benchmark runs as) has ``SET`` only.
    """
    pipe = master.pipeline(transaction=False)
    for entry in batch:
        data = entry_json(entry)
        pipe.execute_command("SET", f"{prefix}{ID_KEY}{entry.id}", data, "EX", ttl_s)
        pipe.execute_command("SET", f"{prefix}{POINTER_KEY}{entry.key_type}:{entry.key_value}", data, "EX", ttl_s)
    pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
