"""Topology checks: the cluster the strategies run on is the one the stack describes, on every
data tier (the cache and the state tier)."""

from __future__ import annotations

import redis

from smoke.checks import CheckContext, check, expect
from smoke.strategies.client import SentinelClient, sentinel_address, sentinels_known


def _per_tier(ctx: CheckContext, one: object) -> str:
    assert callable(one)
    return "; ".join(f"{tier}: {one(client, replicas)}" for tier, client, replicas in ctx.tiers())


def _one_master(client: SentinelClient, replicas: int) -> str:
    host, port = client.sentinel_master_address()
    role = client.run(lambda r: r.execute_command("ROLE"), idempotent=True)
    expect(role[0] == "master", f"Sentinel names {host}:{port} but ROLE says {role[0]}")
    info = client.run(lambda r: r.info("replication"), idempotent=True)
    others = []
    for index in range(int(info.get("connected_slaves", 0))):
        entry = info[f"slave{index}"]
        with client.node(entry["ip"], int(entry["port"])) as node:
            others.append(node.execute_command("ROLE")[0])
    expect(all(r == "slave" for r in others), f"replicas of {host}:{port} report roles {others}")
    return f"master {host}:{port}; its {len(others)} replicas report role slave"


@check("topology", "one_master")
def one_master(ctx: CheckContext) -> str:
    return _per_tier(ctx, _one_master)


def _replicas_linked(client: SentinelClient, replicas: int) -> str:
    info = client.run(lambda r: r.info("replication"), idempotent=True)
    count = int(info.get("connected_slaves", 0))
    states = [info[f"slave{i}"].get("state") for i in range(count)]
    expect(count >= replicas, f"{count} replicas connected, expected {replicas}")
    expect(all(s == "online" for s in states), f"replica states {states}")
    for i in range(count):
        entry = info[f"slave{i}"]
        with client.node(entry["ip"], int(entry["port"])) as node:
            link = node.info("replication").get("master_link_status")
        expect(link == "up", f"replica {entry['ip']}:{entry['port']} has master_link_status {link}")
    return f"{count} replicas online with master_link_status up"


@check("topology", "replicas_linked")
def replicas_linked(ctx: CheckContext) -> str:
    return _per_tier(ctx, _replicas_linked)


def _sentinels_agree(client: SentinelClient, replicas: int) -> str:
    name = client.config.master_name
    answers = {}
    for sentinel in client.sentinels():
        kwargs = sentinel.connection_pool.connection_kwargs
        where = f"{kwargs['host']}:{kwargs['port']}"
        address = sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", name)
        answers[where] = ":".join(a.decode() if isinstance(a, bytes) else str(a) for a in address) if address else None
    expect(len(set(answers.values())) == 1 and None not in answers.values(), f"Sentinels disagree on {name}: {answers}")
    return f"{len(answers)} Sentinels name {next(iter(answers.values()))}"


@check("topology", "sentinels_agree")
def sentinels_agree(ctx: CheckContext) -> str:
    return _per_tier(ctx, _sentinels_agree)


def _client_lists_every_sentinel(client: SentinelClient, replicas: int) -> str:
    name = client.config.master_name
    listed = client.sentinels()
    known: dict[str, int] = {}
    for sentinel in listed:
        try:
            state = sentinel.sentinel_master(name)
        except redis.RedisError:  # sentinels_agree names it; what the others know still counts
            continue
        known[sentinel_address(sentinel)] = sentinels_known(state)
    expect(bool(known), f"none of the {len(listed)} Sentinels the client lists answered SENTINEL MASTER {name}")
    most = max(known.values())
    expect(
        most <= len(listed),
        f"the client lists {len(listed)} Sentinel address(es) for {name}, the Sentinels know {most} "
        f"({known}): list each Sentinel's own address; the confirmation fence counts a majority of all "
        f"{most} and cannot reach it through fewer",
    )
    return f"{len(listed)} Sentinels listed, as many as they know"


@check("topology", "client_lists_every_sentinel")
def client_lists_every_sentinel(ctx: CheckContext) -> str:
    return _per_tier(ctx, _client_lists_every_sentinel)


def _quorum_reachable(client: SentinelClient, replicas: int) -> str:
    name = client.config.master_name
    sentinel = client.sentinels()[0]
    # Spelled as two words so redis-py returns the text instead of its True/False parse.
    reply = sentinel.execute_command("SENTINEL", "CKQUORUM", name)
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    expect(text.startswith("OK"), f"SENTINEL CKQUORUM {name}: {text}")
    state = sentinel.sentinel_master(name)
    return f"{text}; {sentinels_known(state)} Sentinels known, quorum {state.get('quorum')}"


@check("topology", "quorum_reachable")
def quorum_reachable(ctx: CheckContext) -> str:
    return _per_tier(ctx, _quorum_reachable)
