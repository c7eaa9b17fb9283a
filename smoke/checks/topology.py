"""Topology checks: the cluster the strategies run on is the one the stack describes."""

from __future__ import annotations

from smoke.checks import CheckContext, check, expect


def _master(ctx: CheckContext) -> tuple[str, int]:
    return ctx.client.sentinel_master_address()


@check("topology", "one_master")
def one_master(ctx: CheckContext) -> str:
    host, port = _master(ctx)
    role = ctx.client.run(lambda r: r.execute_command("ROLE"), idempotent=True)
    expect(role[0] == "master", f"Sentinel names {host}:{port} but ROLE says {role[0]}")
    replicas = ctx.client.run(lambda r: r.info("replication"), idempotent=True)
    others = []
    for index in range(int(replicas.get("connected_slaves", 0))):
        entry = replicas[f"slave{index}"]
        with ctx.client.node(entry["ip"], int(entry["port"])) as node:
            others.append(node.execute_command("ROLE")[0])
    expect(all(r == "slave" for r in others), f"replicas of {host}:{port} report roles {others}")
    return f"master {host}:{port}; its {len(others)} replicas report role slave"


@check("topology", "replicas_linked")
def replicas_linked(ctx: CheckContext) -> str:
    info = ctx.client.run(lambda r: r.info("replication"), idempotent=True)
    count = int(info.get("connected_slaves", 0))
    states = [info[f"slave{i}"].get("state") for i in range(count)]
    expect(count >= ctx.replicas, f"{count} replicas connected, expected {ctx.replicas}")
    expect(all(s == "online" for s in states), f"replica states {states}")
    for i in range(count):
        entry = info[f"slave{i}"]
        with ctx.client.node(entry["ip"], int(entry["port"])) as node:
            link = node.info("replication").get("master_link_status")
        expect(link == "up", f"replica {entry['ip']}:{entry['port']} has master_link_status {link}")
    return f"{count} replicas online with master_link_status up"


@check("topology", "sentinels_agree")
def sentinels_agree(ctx: CheckContext) -> str:
    name = ctx.client.config.master_name
    answers = {}
    for sentinel in ctx.client.sentinels():
        kwargs = sentinel.connection_pool.connection_kwargs
        where = f"{kwargs['host']}:{kwargs['port']}"
        address = sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", name)
        answers[where] = ":".join(a.decode() if isinstance(a, bytes) else str(a) for a in address) if address else None
    expect(len(set(answers.values())) == 1 and None not in answers.values(), f"Sentinels disagree: {answers}")
    return f"{len(answers)} Sentinels name {next(iter(answers.values()))}"


@check("topology", "quorum_reachable")
def quorum_reachable(ctx: CheckContext) -> str:
    name = ctx.client.config.master_name
    sentinel = ctx.client.sentinels()[0]
    # Spelled as two words so redis-py returns the text instead of its True/False parse.
    reply = sentinel.execute_command("SENTINEL", "CKQUORUM", name)
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    expect(text.startswith("OK"), f"SENTINEL CKQUORUM {name}: {text}")
    state = sentinel.sentinel_master(name)
    others = int(state.get("num-other-sentinels", 0))
    return f"{text}; {others + 1} Sentinels known, quorum {state.get('quorum')}"
